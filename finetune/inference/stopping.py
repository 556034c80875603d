"""Stop each completion of a batch as soon as a per-prompt rule says its text is done.

A base model rarely ends a FIM middle with EOS: without this, every row of every batch runs to `max_new_tokens`
although truncation keeps only the first line or block. The rule sees the decoded text of its row (a text-only
function, so this module knows nothing of languages); a row it stops is padded by `generate` from then on, and the
batch ends when every row is done.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from transformers import StoppingCriteria, StoppingCriteriaList

if TYPE_CHECKING:
    import torch

StopRule = Callable[[str], bool]


class RowStop(StoppingCriteria):
    """A transformers stopping criterion with one rule per row (None: the row ends only at a stop token)."""

    def __init__(
        self, rules: Sequence[StopRule | None], prompt_width: int, decode: Callable[[list[int]], str], stop_ids: set[int]
    ) -> None:
        self.rules = list(rules)
        self.prompt_width = prompt_width
        self.decode = decode
        self.stop_ids = stop_ids
        self.done = [False] * len(self.rules)
        self.kept: list[int | None] = [None] * len(self.rules)  # new tokens of a row its rule stopped

    def as_list(self) -> StoppingCriteriaList:
        return StoppingCriteriaList([self])

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        import torch

        for row, rule in enumerate(self.rules):
            if self.done[row] or rule is None:
                continue
            new = input_ids[row, self.prompt_width :].tolist()
            if new and new[-1] in self.stop_ids:
                self.done[row] = True  # ended by a stop token: generate's own criterion ends it
            elif rule(self.decode(new)):
                self.done[row] = True
                self.kept[row] = len(new)
        return torch.tensor(self.done, dtype=torch.bool, device=input_ids.device)
