"""`finetune data scan PATH`: what the scrubber would replace in a repository or an instruction file, never the value.

A repository folder is read exactly as training reads it (same walk, same skipped files); an instruction file
(.jsonl, .json, .parquet) is read record by record and every string in every record is checked, whatever its field.
Each hit is printed as `where:line: kind  masked line`; file names that hold a secret are shown scrubbed.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from finetune.cli import args as types
from finetune.errors import UserError

if TYPE_CHECKING:
    from finetune.data.ingest.scrub import Scrubber

INSTRUCTION_SUFFIXES = (".jsonl", ".json", ".parquet")


def add_scan_parser(data_sub) -> None:
    """Register `data scan` under `finetune data`."""
    scan = data_sub.add_parser(
        "scan", help="list the secrets that would be scrubbed (file:line and kind, never the value)"
    )
    scan.add_argument(
        "path", type=types.existing_path, help="repository folder, or an instruction file (.jsonl, .json, .parquet)"
    )
    scan.add_argument("--check", action="store_true", help="exit with status 1 when anything is found (for CI hooks)")
    scan.set_defaults(func=cmd_data_scan)


def cmd_data_scan(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console(highlight=False, soft_wrap=True)
    start = time.perf_counter()
    from finetune.data.ingest.scan import scan_text  # detect-secrets loads only when scanning
    from finetune.data.ingest.scrub import Scrubber

    scrubber = Scrubber()  # shows file names that hold a secret scrubbed
    kinds: Counter[str] = Counter()
    items, size = 0, 0
    with console.status("reading ...") as status:  # a spinner on a terminal, nothing in a log
        for where, text, name in _texts(Path(args.path), scrubber):
            if text is None:  # a file whose name holds a secret (counted from the scrubber's report below)
                console.print(f"{where}: secret in the file name (shown scrubbed)", markup=False)
                continue
            items += 1
            size += len(text.encode("utf-8"))
            status.update(f"scanned {items} texts ({size / 1e6:.1f} MB)")
            for flag in scan_text(text, name, where):
                kinds[flag.kind] += 1
                console.print(flag.text(), markup=False)
    for kind, count in scrubber.report.by_kind.items():  # secrets in file names
        kinds["path:" + kind] += count
    seconds = time.perf_counter() - start
    what = "files" if Path(args.path).is_dir() else "texts"
    if kinds:
        summary = ", ".join(f"{k} {v}" for k, v in kinds.most_common())
        console.print(f"found {sum(kinds.values())} secrets in {items} {what} ({size / 1e6:.2f} MB, {seconds:.1f} s): "
                      f"{summary}", markup=False)
    else:
        console.print(f"no secrets found in {items} {what} ({size / 1e6:.2f} MB, {seconds:.1f} s)")
    return 1 if kinds and args.check else 0


def _texts(path: Path, scrubber: Scrubber) -> Iterator[tuple[str, str | None, str]]:
    """(where, text, file name for the rules) for every text the scan checks; text None: a secret in a file name."""
    if path.is_dir():
        from finetune.data.ingest.walk import walk_repository

        documents, _ = walk_repository(path)
        for doc in documents:
            shown = scrubber.path(doc.path)
            if shown != doc.path:
                yield shown, None, doc.path
            yield shown, doc.text, doc.path
        return
    if path.suffix.lower() in INSTRUCTION_SUFFIXES:
        records = _records(path)
        if records is not None:
            for locator, field, text in records:
                yield f"{scrubber.path(path.name)}:{locator}:{scrubber.path(field)}", text, ""
            return
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text: scan a repository folder or an instruction file") from None
    yield scrubber.path(path.name), text, path.name


def _records(path: Path) -> list[tuple[str, str, str]] | None:
    """(locator, field, string) for every string in every record; None for a .json file that holds no records."""
    from finetune.data.sft.records import RecordProblem, read_records

    found = []
    try:
        for locator, record in read_records(path):
            if not isinstance(record, RecordProblem):
                found += [(locator, field, text) for field, text in _strings(record, "")]
    except UserError:
        if path.suffix.lower() == ".json":
            return None  # a configuration file, not instruction data: scanned as text
        raise
    return found


def _strings(value: Any, field: str) -> Iterator[tuple[str, str]]:
    """Every string inside a record, with its field path (`messages[2].content`)."""
    if isinstance(value, str):
        yield field or "value", value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{field}.{key}" if field else str(key))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _strings(item, f"{field}[{index}]")

