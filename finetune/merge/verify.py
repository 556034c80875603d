"""Prove a merge: the result's logits against base + adapter(s) applied by PEFT, on a few code prompts.

Both sides compute in float32, one model in memory at a time, so the difference measures the merge (and the
output dtype's rounding), not the arithmetic of the comparison.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from finetune.data.tokenize.families import FAMILIES, detect_family
from finetune.errors import UserError

# Default tolerance, relative to the largest |logit| of the reference (rounding errors grow with the values):
# fp32 only reorders additions; fp16/bf16 round every merged weight (unit roundoff 2^-11 / 2^-8).
RELATIVE_TOLERANCE = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}

_CODE_PROMPTS = (
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
    "import os\nimport sys\n\n\nclass Config:\n    def __init__(self, path):\n        self.path = path\n",
    "for (int i = 0; i < n; ++i) {\n    total += values[i];\n}\nreturn total;",
)
_MAX_TOKENS = 128


@dataclass
class VerifyResult:
    max_abs_diff: float
    max_abs_logit: float
    tolerance: float
    prompts: int
    tokens: int
    reference: str
    seconds: float

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.tolerance

    def line(self) -> str:
        verdict = "ok" if self.passed else "FAILED"
        return (
            f"verify: max |logit diff| {self.max_abs_diff:.3g} vs {self.reference} over {self.prompts} prompts "
            f"({self.tokens} tokens, logits up to {self.max_abs_logit:.3g}), tolerance {self.tolerance:.3g}: {verdict}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "passed": self.passed}


def prompt_ids(tokenizer) -> list[list[int]]:
    """A few code snippets, plus a FIM prompt in the tokenizer's family format (exercises added FIM tokens)."""
    texts = list(_CODE_PROMPTS)
    try:
        family = FAMILIES[detect_family(tokenizer)]
        texts.append(f"{family.prefix}def add(a, b):\n    {family.suffix}\n    return result\n{family.middle}")
    except UserError:
        pass
    rows = [tokenizer(text, add_special_tokens=True)["input_ids"][:_MAX_TOKENS] for text in texts]
    return [row for row in rows if row]


@torch.inference_mode()
def compute_logits(model, prompts: list[list[int]]) -> list[torch.Tensor]:
    device = next(model.parameters()).device
    return [model(input_ids=torch.tensor([ids], device=device)).logits[0].float().cpu() for ids in prompts]


def _collect() -> None:
    """Free a dropped model now (PEFT wrappers hold reference cycles), so two models never share memory."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def verify(
    load_reference: Callable[[], Any],
    load_result: Callable[[], Any],
    prompts: list[list[int]],
    tolerance: float | None,
    relative: float,
    reference: str,
) -> VerifyResult:
    """Logits of the reference, then of the result (each loaded, run and freed in turn); their max abs difference.

    `tolerance` None: `relative` times the largest |logit| of the reference (at least 1).
    """
    start = time.perf_counter()
    _collect()
    model = load_reference()
    expected = compute_logits(model, prompts)
    del model
    _collect()
    model = load_result()
    actual = compute_logits(model, prompts)
    del model
    _collect()
    diff = max(float((a - e).abs().max()) for a, e in zip(actual, expected, strict=True))
    scale = max(float(e.abs().max()) for e in expected)
    return VerifyResult(
        max_abs_diff=diff,
        max_abs_logit=scale,
        tolerance=tolerance if tolerance is not None else relative * max(1.0, scale),
        prompts=len(prompts),
        tokens=sum(len(p) for p in prompts),
        reference=reference,
        seconds=time.perf_counter() - start,
    )
