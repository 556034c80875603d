"""Which files and records are held out for evaluation: a hash of the key decides, not a random draw.

A hash keeps every item's side stable when other files are added or removed, and the same rule for repository
files and instruction records means one seed describes the whole split. Files are stratified by language: a
repository where most files are Python would otherwise often hold out no code of its other languages (or no
code at all), and a held-out FIM evaluation over it would measure little.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

# A language with at least this many files always has one held out: with fewer, holding one out would take most of
# what training sees of that language.
MIN_FILES_PER_LANGUAGE = 3


def holdout_score(key: str, seed: int) -> float:
    """A stable number in [0, 1) for `key`; keys under the fraction are held out, the lowest ones first."""
    digest = hashlib.sha256(f"{seed}:{key}".encode("utf-8", errors="surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def held_out_records(keys: Sequence[str], fraction: float, seed: int) -> list[bool]:
    """Held-out membership of one source's records: by hash, but at least one held out and one kept (of two or more).

    Without the floor a small instruction file (a dozen records at eval_split 0.25) holds out nothing about one
    time in thirty, and the run silently has no evaluation set.
    """
    return held_out_files(keys, [""] * len(keys), fraction, seed)


def held_out_files(paths: Sequence[str], languages: Sequence[str], fraction: float, seed: int) -> list[bool]:
    """Held-out membership of each file, stratified by language (all False when `fraction` <= 0).

    Each file is held out by its own hash; a language with `MIN_FILES_PER_LANGUAGE` files or more and none held
    out gives up its lowest-scoring file, and so does the whole set when nothing is held out. Only a file of the
    same language can change which file that is, so adding or removing other files moves nothing. One file always
    stays for training.
    """
    if fraction <= 0 or len(paths) < 2:
        return [False] * len(paths)
    scores = [holdout_score(path, seed) for path in paths]
    held = [score < fraction for score in scores]
    by_language: dict[str, list[int]] = {}
    for index, language in enumerate(languages):
        by_language.setdefault(language, []).append(index)
    for indices in by_language.values():
        if len(indices) >= MIN_FILES_PER_LANGUAGE and not any(held[i] for i in indices):
            held[min(indices, key=scores.__getitem__)] = True
    if not any(held):
        held[min(range(len(paths)), key=scores.__getitem__)] = True
    if all(held):
        held[max(range(len(paths)), key=scores.__getitem__)] = False
    return held
