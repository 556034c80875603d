"""Command-line value types and the parser class every `finetune` command uses.

A bad option value must be rejected while the arguments are parsed, before any model, tokenizer or data loads and
before anything is written, with one line that names the option, the value and what would be accepted. argparse
already does this for `type=` callables that raise `ArgumentTypeError`; these are the callables, and `Parser` makes
argparse's own complaint one line (no usage block) with a pointer to `--help`.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

T = TypeVar("T")
MAX_SEED = 2**32 - 1  # numpy and torch reject larger (and negative) seeds


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr and exit status 2, like every other user error."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"error: {self.prog}: {message} (see `{self.prog} --help`)\n")
        sys.exit(2)


def _number(text: str, kind: type) -> float | int:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _bounded(kind: type, accept: Callable[[float], bool], wording: str) -> Callable[[str], Any]:
    """An argparse type: a finite number of `kind` that `accept` takes, else '... must be {wording}'."""

    def parse(text: str):
        value = _number(text, kind)
        if not accept(value):
            raise argparse.ArgumentTypeError(f"{text!r} must be {wording}")
        return kind(value)

    return parse


positive_int = _bounded(int, lambda v: v > 0, "a whole number above 0")
nonnegative_int = _bounded(int, lambda v: v >= 0, "a whole number, 0 or more")
seed = _bounded(int, lambda v: 0 <= v <= MAX_SEED, f"a seed from 0 to {MAX_SEED}")
positive_float = _bounded(float, lambda v: v > 0, "a number above 0")
nonnegative_float = _bounded(float, lambda v: v >= 0, "a number, 0 or more")
fraction = _bounded(float, lambda v: 0 <= v <= 1, "a number from 0 to 1")  # a probability or share


def open_fraction(text: str) -> float:
    """A share that must keep something: above 0, at most 1 (nucleus mass, kept density)."""
    value = fraction(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be above 0 (and at most 1)")
    return value


def output_file(text: str) -> str:
    """A file path to write: not an existing directory, and not under a file."""
    path = Path(text).expanduser()
    if not text.strip():
        raise argparse.ArgumentTypeError("the output path is empty: give a file path")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory: give a file path, e.g. {path / 'out.jsonl'}")
    blocker = next((p for p in path.parents if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise argparse.ArgumentTypeError(f"cannot write {text}: {blocker} is a file, not a folder")
    return text


def existing_path(text: str) -> str:
    """An input that must exist (a file or a folder)."""
    if not Path(text).expanduser().exists():
        raise argparse.ArgumentTypeError(f"{text} not found: check the path")
    return text


def existing_dir(text: str) -> str:
    path = Path(text).expanduser()
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text} not found: check the path")
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file: give a directory")
    return text


def existing_file(text: str) -> str:
    """An input file; '-' (standard input) passes."""
    path = Path(text).expanduser()
    if text == "-":
        return text
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text} not found: check the path")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory: give a file")
    return text


def output_dir(text: str) -> str:
    """A folder path to write: not an existing file, and not under a file (whether it may be replaced is the
    command's own check, which knows about --force)."""
    path = Path(text).expanduser()
    if not text.strip():
        raise argparse.ArgumentTypeError("the output path is empty: give a folder path")
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file: give a folder path")
    blocker = next((p for p in path.parents if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise argparse.ArgumentTypeError(f"cannot write {text}: {blocker} is a file, not a folder")
    return text


_SIZE = re.compile(r"^\d+(\.\d+)?\s*([KMGT]B)?$", re.IGNORECASE)  # the units huggingface_hub parses


def byte_size(text: str) -> str:
    """A size such as 5GB, 500MB or a number of bytes, as `save_pretrained(max_shard_size=...)` takes it.

    Checked here because transformers parses it only after the whole merge has run.
    """
    if not _SIZE.match(text.strip()) or float(re.sub(r"[^\d.]", "", text) or 0) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size: write e.g. 5GB, 500MB or 2000000 (bytes)")
    return text.strip() if not text.strip().isdigit() else int(text)


def options_from(args: argparse.Namespace, cls: type[T]) -> T:
    """The typed options dataclass `cls` filled from the parsed arguments of the same names."""
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})  # type: ignore[arg-type]
