"""`finetune cache list|prune`: see what the prepared-data cache holds and reclaim its space.

Every change of data settings, tokenizer or input files makes a new entry and leaves the old one behind, so the
cache only grows. An entry's report.json is touched each time `train` reuses it: its mtime is the last use.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from finetune.cli import args as types
from finetune.errors import UserError
from finetune.io import directory_bytes, human_bytes


@dataclass
class CacheEntry:
    path: Path
    bytes: int
    last_used: float  # seconds since the epoch
    tokens: int | None  # training tokens; None: an incomplete entry (an interrupted `prepare`)


def scan(cache_dir: Path) -> list[CacheEntry]:
    """Every entry under `cache_dir`, least recently used first."""
    if not cache_dir.is_dir():
        return []
    entries = []
    for path in cache_dir.iterdir():
        if not path.is_dir():
            continue
        report = path / "report.json"
        tokens = None
        if report.is_file() and not path.name.startswith("."):
            tokens = int(json.loads(report.read_text(encoding="utf-8")).get("samples", {}).get("tokens", 0))
        last_used = (report if report.is_file() else path).stat().st_mtime
        entries.append(CacheEntry(path, directory_bytes(path), last_used, tokens))
    return sorted(entries, key=lambda e: e.last_used)


def prune(cache_dir: Path, older_than_days: float | None, everything: bool) -> list[CacheEntry]:
    """Delete entries unused for `older_than_days` (all with `everything`); returns them.

    Incomplete entries age by their folder's mtime like the others, so a `prepare` still writing is left alone.
    """
    cutoff = time.time() - (older_than_days or 0) * 86400
    doomed = [e for e in scan(cache_dir) if everything or e.last_used < cutoff]
    for entry in doomed:
        shutil.rmtree(entry.path, ignore_errors=True)
    return doomed


def _count(entries: list[CacheEntry]) -> str:
    return f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}"


def cmd_cache(args: argparse.Namespace) -> int:
    from finetune.data.cache import default_cache_dir  # datasets loads only when a cache command runs

    cache_dir = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    if cache_dir.exists() and not cache_dir.is_dir():
        raise UserError(f"--cache-dir {cache_dir} is a file: give the cache folder")
    if args.cache_command == "list":
        entries = scan(cache_dir)
        for e in entries:
            age = (time.time() - e.last_used) / 86400
            what = f"{e.tokens:,} train tokens" if e.tokens is not None else "incomplete"
            print(f"{e.path.name}  {human_bytes(e.bytes):>9}  last used {age:5.1f} days ago  {what}")
        print(f"{_count(entries)}, {human_bytes(sum(e.bytes for e in entries))} in {cache_dir}")
        return 0
    if args.older_than is None and not args.all:
        raise UserError("cache prune needs --older-than DAYS or --all: say which entries to delete")
    if args.older_than is not None and args.older_than < 0:
        raise UserError(f"--older-than {args.older_than:g} is negative: give the age in days (0 or more)")
    removed = prune(cache_dir, args.older_than, args.all)
    print(f"removed {_count(removed)}, {human_bytes(sum(e.bytes for e in removed))}, from {cache_dir}")
    return 0


def add_cache_parser(sub) -> None:
    """Register `finetune cache list|prune`."""
    cache = sub.add_parser("cache", help="list or prune the prepared-data cache that `prepare` and `train` fill")
    actions = cache.add_subparsers(dest="cache_command", metavar="ACTION", required=True)
    for name, text in [("list", "entries with size, last use and tokens"), ("prune", "delete entries")]:
        action = actions.add_parser(name, help=text)
        action.add_argument("--cache-dir", help="the cache folder (default: $FINETUNE_CACHE or ~/.cache/finetune/prepared)")
        if name == "prune":
            action.add_argument("--older-than", type=types.nonnegative_float, metavar="DAYS", help="entries not used for DAYS days")
            action.add_argument("--all", action="store_true", help="every entry")
        action.set_defaults(func=cmd_cache)
