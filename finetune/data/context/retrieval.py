"""BM25 retrieval of snippets of *other* files of a repository, by the identifiers around a FIM gap, the way a
completion plugin picks cross-file context at serving time.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import chain

import bm25s
import numpy as np

from finetune.data.types import Document

_IDENTIFIER = re.compile(r"[^\W\d]\w*")
_WORD_PART = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+")


def split_identifier(identifier: str) -> list[str]:
    """Lower-case search terms of one identifier: its camelCase/snake_case parts, plus the whole name, so
    `getUserName` matches `user_name` and, more strongly, itself. Terms under two characters are noise."""
    if identifier.isalpha() and identifier.islower():  # the common case, and the hot path when indexing
        return [identifier] if len(identifier) > 1 else []
    chunks = identifier.split("_")
    parts = [p.lower() for chunk in chunks for p in (_WORD_PART.findall(chunk) if chunk.isascii() else [chunk])]
    terms = [p for p in parts if len(p) > 1]
    whole = identifier.lower()
    if len(whole) > 1 and whole not in terms:
        terms.append(whole)
    return terms


@dataclass(frozen=True)
class Snippet:
    """A run of lines from one repository file; `start_line` is 0-based, `score` the BM25 score for the query."""

    path: str
    text: str
    score: float
    start_line: int = 0


class _TermIds(dict):
    """identifier -> its term ids, growing the vocabulary on first sight (a dict so the lookup stays in C)."""

    def __init__(self, vocab: dict[str, int]) -> None:
        super().__init__()
        self.vocab = vocab

    def __missing__(self, identifier: str) -> list[int]:
        ids = [self.vocab.setdefault(term, len(self.vocab)) for term in split_identifier(identifier)]
        self[identifier] = ids
        return ids


class RepoRetriever:
    """BM25 over code snippets of one repository: windows of `window` lines every `stride` lines per file.

    Terms are identifiers (keywords included) split on camelCase/snake_case. Overlapping windows keep a relevant
    block whole somewhere; `retrieve` never returns two overlapping windows of the same file. Each file is
    tokenized once, in blocks of gcd(window, stride) lines that the windows share.
    """

    def __init__(self, docs: Sequence[Document], window: int = 30, stride: int = 15) -> None:
        if window < 1 or not 1 <= stride <= window:
            raise ValueError(f"need window >= stride >= 1, got window={window}, stride={stride}")
        self._vocab: dict[str, int] = {}
        self._term_ids = _TermIds(self._vocab)
        self._snippets: list[tuple[int, int, int]] = []  # (doc index, first line, end line)
        self._lines: list[list[str]] = []
        self._paths: list[str] = []
        self._ranges: dict[str, list[tuple[int, int]]] = defaultdict(list)  # path -> snippet index ranges
        corpus: list[list[int]] = []
        for doc in docs:
            corpus.extend(self._add_document(doc, window, stride))
        self._bm25 = bm25s.BM25(csc_backend="scipy")
        if corpus:
            self._bm25.index((corpus, dict(self._vocab)), show_progress=False)

    def __len__(self) -> int:
        return len(self._snippets)

    def _ids(self, text: str) -> list[int]:
        """Term ids of `text` for indexing (new terms join the vocabulary)."""
        return list(chain.from_iterable(map(self._term_ids.__getitem__, _IDENTIFIER.findall(text))))

    def _query_ids(self, text: str) -> list[int]:
        """Distinct known term ids of a query, in first-seen order; terms the repository lacks cannot score."""
        terms = (t for identifier in _IDENTIFIER.findall(text) for t in split_identifier(identifier))
        return list(dict.fromkeys(self._vocab[t] for t in terms if t in self._vocab))

    def _add_document(self, doc: Document, window: int, stride: int) -> Iterator[list[int]]:
        """Index one file's windows; yields the term ids of each window that has any."""
        doc_index = len(self._paths)
        self._paths.append(doc.path)
        lines = doc.text.splitlines(keepends=True)
        self._lines.append(lines)
        block = math.gcd(window, stride)
        block_ids = [self._ids("".join(lines[i : i + block])) for i in range(0, len(lines), block)]
        first = len(self._snippets)
        for start in range(0, len(lines), stride):
            end = min(start + window, len(lines))
            ids = list(chain.from_iterable(block_ids[start // block : -(-end // block)]))
            if ids:
                self._snippets.append((doc_index, start, end))
                yield ids
            if end == len(lines):
                break
        if len(self._snippets) > first:
            self._ranges[doc.path].append((first, len(self._snippets)))

    def retrieve(self, query: str, exclude_path: str, k: int) -> list[Snippet]:
        """The `k` best-scoring snippets for `query` from files other than `exclude_path`, best first.

        Ties go to the earlier snippet (input file order, then line), so results are deterministic; snippets that
        share no term with the query are never returned.
        """
        terms = self._query_ids(query)
        if k <= 0 or not terms or not self._snippets:
            return []
        scores = np.asarray(self._bm25.get_scores_from_ids(terms), dtype=np.float64)
        for first, end in self._ranges.get(exclude_path, ()):
            scores[first:end] = 0.0
        candidates = np.flatnonzero(scores > 0)
        shortlist = _best(candidates, scores, 4 * k + 16)  # room for windows skipped as overlapping
        picked = self._pick(shortlist, scores, k)
        if len(picked) < k and len(shortlist) < len(candidates):
            picked = self._pick(_best(candidates, scores, len(candidates)), scores, k)
        return picked

    def _pick(self, ranked: np.ndarray, scores: np.ndarray, k: int) -> list[Snippet]:
        """The first `k` of `ranked` that do not overlap a snippet already picked from the same file."""
        picked: list[Snippet] = []
        taken: dict[int, list[tuple[int, int]]] = defaultdict(list)
        for index in ranked.tolist():
            doc_index, start, end = self._snippets[index]
            if any(start < e and s < end for s, e in taken[doc_index]):
                continue
            taken[doc_index].append((start, end))
            text = "".join(self._lines[doc_index][start:end])
            picked.append(Snippet(self._paths[doc_index], text, float(scores[index]), start))
            if len(picked) == k:
                break
        return picked


def _best(candidates: np.ndarray, scores: np.ndarray, limit: int) -> np.ndarray:
    """At least the `limit` best of `candidates` (all ties at the cut kept), by score, then earlier index.

    Partitioning first keeps a query fast when most snippets share some term with it; keeping the ties makes the
    result independent of how the partition breaks them.
    """
    if len(candidates) > limit:
        cut = len(candidates) - limit
        threshold = np.partition(scores[candidates], cut)[cut]
        candidates = candidates[scores[candidates] >= threshold]
    return candidates[np.lexsort((candidates, -scores[candidates]))]
