"""Which files and records are held out for evaluation: a hash of the key decides, not a random draw.

A hash keeps every item's side stable when other files are added or removed, and the same rule for repository
files and instruction records means one seed describes the whole split.
"""

from __future__ import annotations

import hashlib


def is_held_out(key: str, fraction: float, seed: int) -> bool:
    """Deterministic held-out membership of `key` (a path, or a source and record id) at `fraction`."""
    digest = hashlib.sha256(f"{seed}:{key}".encode("utf-8", errors="surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction
