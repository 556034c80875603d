"""Byte counts of folders and their human-readable form, for summaries and listings."""

from __future__ import annotations

from pathlib import Path


def directory_bytes(directory: Path) -> int:
    """Total size of the files under `directory`."""
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def human_bytes(size: float) -> str:
    """`size` in B, KB, MB or GB (powers of 1024), one decimal above bytes."""
    if size < 1024:
        return f"{size:.0f} B"
    for unit in ("KB", "MB"):
        size /= 1024
        if size < 1024:
            return f"{size:.1f} {unit}"
    return f"{size / 1024:.1f} GB"
