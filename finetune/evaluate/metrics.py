"""Exact match and edit similarity of completions, per category and overall.

Both compare the texts with surrounding whitespace stripped: a trailing newline or the indentation the prompt
already carries is not a different completion. Edit similarity is rapidfuzz's normalized InDel similarity
(`fuzz.ratio / 100`), the measure CrossCodeEval and aiXcoder's evaluation report. The middle loss, when the
eval computed it, is averaged per item (each item's mean over its tokens), so every item weighs the same as in the
other two.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from rapidfuzz import fuzz


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when the completion is the reference (surrounding whitespace ignored), else 0.0."""
    return float(prediction.strip() == reference.strip())


def edit_similarity(prediction: str, reference: str) -> float:
    """1 - normalized InDel distance, in [0, 1]; two empty strings are identical (1.0)."""
    return fuzz.ratio(prediction.strip(), reference.strip()) / 100.0


@dataclass(frozen=True)
class Score:
    """Mean scores over `n` items; `middle_loss` (nats/token, lower is better) over the items that have one."""

    n: int
    exact_match: float
    edit_similarity: float
    middle_loss: float | None = None

    def to_dict(self) -> dict[str, float | int | None]:
        scores: dict[str, float | int | None] = {
            "n": self.n,
            "exact_match": self.exact_match,
            "edit_similarity": self.edit_similarity,
        }
        if self.middle_loss is not None:
            scores["middle_loss"] = self.middle_loss
        return scores


def score(pairs: Iterable[tuple[str, str]], losses: Iterable[float | None] = ()) -> Score:
    """Mean exact match and edit similarity over (prediction, reference) pairs (zeros for no pairs), and the mean of
    the `losses` that are not None (`finetune.inference.likelihood`), None when there are none."""
    em = es = 0.0
    n = 0
    for prediction, reference in pairs:
        em += exact_match(prediction, reference)
        es += edit_similarity(prediction, reference)
        n += 1
    known = [loss for loss in losses if loss is not None]
    return Score(n, em / n if n else 0.0, es / n if n else 0.0, sum(known) / len(known) if known else None)


def score_by_category(rows: Iterable[tuple]) -> dict[str, Score]:
    """Scores per category and under "overall", from (category, prediction, reference[, middle loss]) rows."""
    groups: dict[str, list[tuple[str, str]]] = defaultdict(list)
    losses: dict[str, list[float | None]] = defaultdict(list)
    for category, prediction, reference, *loss in rows:
        for group in (category, "overall"):
            groups[group].append((prediction, reference))
            losses[group].append(loss[0] if loss else None)
    return {category: score(pairs, losses[category]) for category, pairs in groups.items()}
