"""Benchmark decontamination: drop training records that contain a benchmark item, by word n-gram overlap.

A record is contaminated when, for some benchmark item, at least `threshold` of the item's word n-grams also occur
in the record (all its turns). Measuring against the *item's* n-grams finds a HumanEval prompt pasted into a long
instruction with a long answer; measuring against the record's would dilute it. Words are `\\w+` runs, lower-cased,
so reformatting (indentation, quotes, line breaks) does not hide a copy. An item shorter than `n` words is one n-gram
of all its words.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path

from finetune.errors import UserError

_WORD = re.compile(r"\w+")


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    """The set of lower-cased word n-grams of `text` (one shorter gram when it has fewer than `n` words)."""
    words = _WORD.findall(text.lower())
    if len(words) < n:
        return {tuple(words)} if words else set()
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def read_benchmark(path: str | Path, field: str = "prompt") -> list[str]:
    """Benchmark items: `field` of each record of a JSONL/JSON file (HumanEval, MBPP ...), or a text file whole."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"benchmark file {path} not found: check data.sft.decontaminate.benchmarks")
    text = file.read_text(encoding="utf-8")
    if file.suffix.lower() not in (".jsonl", ".json"):
        return [text]
    try:
        records = json.loads(text) if file.suffix.lower() == ".json" else None
    except json.JSONDecodeError:
        records = None
    if records is None:
        records = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                raise UserError(f"benchmark file {path} line {number} is not valid JSON: fix or remove it") from None
    items = [r[field] for r in records if isinstance(r, dict) and isinstance(r.get(field), str)]
    if not items:
        raise UserError(f"benchmark file {path}: no record has a text field {field!r}; set data.sft.decontaminate.field")
    return items


class Decontaminator:
    """Answers "does this text contain a benchmark item?" for many texts, with an n-gram -> items index."""

    def __init__(self, items: Iterable[str], n: int = 10, threshold: float = 0.5) -> None:
        if n < 1 or not 0 < threshold <= 1:
            raise UserError("decontamination needs ngram >= 1 and 0 < threshold <= 1")
        self.n = n
        self.threshold = threshold
        self._sizes: list[int] = []
        self._index: dict[tuple[str, ...], list[int]] = defaultdict(list)
        for item in items:
            grams = ngrams(item, n)
            if not grams:
                continue
            for gram in grams:
                self._index[gram].append(len(self._sizes))
            self._sizes.append(len(grams))

    @classmethod
    def from_files(cls, paths: Iterable[str], field: str = "prompt", n: int = 10, threshold: float = 0.5):
        return cls([item for path in paths for item in read_benchmark(path, field)], n, threshold)

    def __len__(self) -> int:
        return len(self._sizes)

    def overlap(self, text: str) -> float:
        """The largest fraction of any one benchmark item's n-grams found in `text`."""
        hits: Counter[int] = Counter()
        for gram in ngrams(text, self.n):
            for item in self._index.get(gram, ()):
                hits[item] += 1
        return max((count / self._sizes[item] for item, count in hits.items()), default=0.0)

    def contaminated(self, text: str) -> bool:
        return self.overlap(text) >= self.threshold
