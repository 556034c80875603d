"""Exact match and edit similarity of completions, per category and overall.

Both compare the texts with surrounding whitespace stripped: a trailing newline or the indentation the prompt
already carries is not a different completion. Edit similarity is rapidfuzz's normalized InDel similarity
(`fuzz.ratio / 100`), the measure CrossCodeEval and aiXcoder's evaluation report.
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
    """Mean scores over `n` items."""

    n: int
    exact_match: float
    edit_similarity: float

    def to_dict(self) -> dict[str, float | int]:
        return {"n": self.n, "exact_match": self.exact_match, "edit_similarity": self.edit_similarity}


def score(pairs: Iterable[tuple[str, str]]) -> Score:
    """Mean exact match and edit similarity over (prediction, reference) pairs; zeros for no pairs."""
    em = es = 0.0
    n = 0
    for prediction, reference in pairs:
        em += exact_match(prediction, reference)
        es += edit_similarity(prediction, reference)
        n += 1
    return Score(n, em / n if n else 0.0, es / n if n else 0.0)


def score_by_category(rows: Iterable[tuple[str, str, str]]) -> dict[str, Score]:
    """Scores per category and under "overall", from (category, prediction, reference) rows."""
    groups: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for category, prediction, reference in rows:
        groups[category].append((prediction, reference))
        groups["overall"].append((prediction, reference))
    return {category: score(pairs) for category, pairs in groups.items()}
