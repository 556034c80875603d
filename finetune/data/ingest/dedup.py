"""Drop duplicate and near-duplicate documents, keeping the first of each group in the given order.

Repositories copy files around (vendored snippets, `v1/` and `v2/` of one module, generated variants). A model
trained on ten copies of a file memorises it and overweights it; a near-copy teaches nothing new either. Exact
copies go by SHA-256 of the text; near copies by MinHash over token n-grams with an LSH index (datasketch), so the
cost grows linearly with the number of documents rather than with its square.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections.abc import Sequence

import numpy as np
from datasketch import LeanMinHash, MinHash, MinHashLSH

from finetune.data.types import Document

# A token is a run of word characters or one punctuation character: formatting (spaces, line breaks) never
# changes the shingles, renaming one identifier changes only the n-grams around it.
_TOKEN = re.compile(r"\w+|[^\w\s]")
_MASK32 = np.uint64(0xFFFFFFFF)
_MIX = np.uint64(0x9E3779B1)  # an odd 32-bit multiplier (the golden ratio) to combine token hashes into an n-gram hash
_BATCH = 65_536  # shingles per MinHash update, so a 1 MB file never builds a (shingles x num_perm) matrix at once


def exact_dedup(docs: Sequence[Document]) -> tuple[list[Document], int]:
    """`docs` without repeated texts (the first copy stays, order kept), and how many were removed."""
    seen: set[bytes] = set()
    kept: list[Document] = []
    for doc in docs:
        digest = hashlib.sha256(doc.text.encode("utf-8", errors="surrogatepass")).digest()
        if digest not in seen:
            seen.add(digest)
            kept.append(doc)
    return kept, len(docs) - len(kept)


def near_dedup(
    docs: Sequence[Document],
    threshold: float = 0.85,
    num_perm: int = 128,
    ngram: int = 5,
    seed: int = 1,
) -> tuple[list[Document], int]:
    """`docs` without near-duplicates (estimated Jaccard similarity of token `ngram`s >= `threshold`).

    Documents are taken in order; one is dropped when it is similar to a document already kept, so the first of
    each group stays. Deterministic: the same documents, in the same order, with the same settings, keep the same
    ones (hashes are CRC32 and seeded permutations, not Python's per-process `hash`).
    """
    _check_settings(threshold, num_perm, ngram)
    index = MinHashLSH(threshold=threshold, num_perm=num_perm)
    permutations = MinHash(num_perm=num_perm, seed=seed).permutations
    kept: list[Document] = []
    sketches: list[LeanMinHash] = []
    for doc in docs:
        sketch = minhash(doc.text, num_perm=num_perm, ngram=ngram, seed=seed, permutations=permutations)
        if any(sketches[key].jaccard(sketch) >= threshold for key in index.query(sketch)):
            continue
        index.insert(len(kept), sketch, check_duplication=False)
        kept.append(doc)
        sketches.append(sketch)
    return kept, len(docs) - len(kept)


def minhash(
    text: str,
    *,
    num_perm: int = 128,
    ngram: int = 5,
    seed: int = 1,
    permutations: np.ndarray | None = None,
) -> LeanMinHash:
    """The MinHash of `text`'s token n-gram set; `permutations` (from a MinHash of the same seed) saves recomputing."""
    sketch = MinHash(num_perm=num_perm, seed=seed, hashfunc=int, permutations=permutations, scheme="affine32")
    shingles = shingle_hashes(text, ngram).tolist()
    for start in range(0, len(shingles), _BATCH):
        sketch.update_batch(shingles[start : start + _BATCH])
    return LeanMinHash(sketch)


def shingle_hashes(text: str, ngram: int = 5) -> np.ndarray:
    """The distinct 32-bit hashes of `text`'s token n-grams (a text shorter than `ngram` tokens is one shingle)."""
    tokens = _token_hashes(text)
    if len(tokens) == 0:
        return np.array([zlib.crc32(text.encode("utf-8", errors="surrogatepass"))], dtype=np.uint64)
    width = min(ngram, len(tokens))
    count = len(tokens) - width + 1
    hashes = np.zeros(count, dtype=np.uint64)
    for offset in range(width):  # polynomial rolling combination, vectorised over all n-grams at once
        hashes = (hashes * _MIX + tokens[offset : offset + count]) & _MASK32
    return np.unique(hashes)


def _token_hashes(text: str) -> np.ndarray:
    """CRC32 of each token (each distinct token hashed once), as uint64 for overflow-free arithmetic."""
    tokens = _TOKEN.findall(text)
    table = {token: zlib.crc32(token.encode("utf-8", errors="surrogatepass")) for token in set(tokens)}
    return np.fromiter(map(table.__getitem__, tokens), dtype=np.uint64, count=len(tokens))


def _check_settings(threshold: float, num_perm: int, ngram: int) -> None:
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if num_perm < 2:
        raise ValueError(f"num_perm must be at least 2, got {num_perm}")
    if ngram < 1:
        raise ValueError(f"ngram must be at least 1, got {ngram}")
