"""Outputs written under a temporary name next to them and renamed into place only when complete; sizes of folders.

A crash or Ctrl-C leaves the previous contents (or nothing) at the final path, never half a model. A kill -9 cannot
clean up after itself, so every temporary name carries its owner (`.NAME.<pid>@<host>.<random>.partial|tmp|old`):
the next command writing to the same place removes the ones whose owner is dead (`sweep_stale`), and never touches
one whose owner is alive or runs on another host.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from finetune.errors import UserError

_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:63] or "host"
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)@(?P<host>[A-Za-z0-9-]+)\.[A-Za-z0-9_]+\.(?P<kind>partial|tmp|old)$")


def temp_prefix(final: Path) -> str:
    """The start of a temporary name for `final` that says which process owns it (for mkdtemp/mkstemp)."""
    return f".{final.name}.{os.getpid()}@{_HOST}."


def make_temp_dir(final: Path, kind: str = "partial") -> Path:
    """An empty directory next to `final`, named after its owner, with ordinary permissions (mkdtemp's are 0700)."""
    temp = Path(tempfile.mkdtemp(prefix=temp_prefix(final), suffix=f".{kind}", dir=final.parent))
    umask = os.umask(0)
    os.umask(umask)
    temp.chmod(0o777 & ~umask)
    return temp


def make_temp_file(final: Path) -> tuple[int, Path]:
    """An open file descriptor and path next to `final`, named after its owner."""
    fd, name = tempfile.mkstemp(prefix=temp_prefix(final), suffix=".tmp", dir=final.parent)
    return fd, Path(name)


@contextmanager
def atomic_file(path: Path, mode: str = "w") -> Iterator[IO[Any]]:
    """A handle on a temporary file next to `path`, renamed onto `path` only when the block ends without error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = make_temp_file(path)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as handle:
            yield handle
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> Path:
    """Write `text` to `path` through a temporary file in the same folder and a rename."""
    with atomic_file(path) as handle:
        handle.write(text)
    return path


def write_json_atomic(path: Path, data: Any) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def write_jsonl_atomic(path: Path, records: Iterable[Any]) -> int:
    """Write one JSON line per record to `path` atomically; returns how many were written."""
    count = 0
    with atomic_file(path) as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists here (a reused id counts as alive: the safe mistake)."""
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale(folder: Path, names: Iterable[str] | None = None) -> list[str]:
    """Remove temporary paths in `folder` left by killed processes of this host; one line per path for the report.

    Only paths named by `temp_prefix` count, only for the given output `names` (all when None), and only when the
    owner is dead. A stale `.old` whose output is missing is the previous output, moved aside by a replacement that
    was killed between its two renames: it is put back rather than deleted.
    """
    wanted = None if names is None else set(names)
    lines: list[str] = []
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return lines
    for path in entries:
        match = _TEMP.match(path.name)
        if match is None or (wanted is not None and match["name"] not in wanted):
            continue
        if match["host"] != _HOST or pid_alive(int(match["pid"])):
            continue
        final = folder / match["name"]
        kind = "folder" if path.is_dir() else "file"
        try:
            if match["kind"] == "old" and not final.exists():
                path.rename(final)
                lines.append(f"restored {final} from an interrupted replacement (process {match['pid']} was killed)")
                continue
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
        except FileNotFoundError:  # another command swept it first
            continue
        except OSError as exc:
            lines.append(f"could not remove stale temporary {kind} {path} ({exc.strerror}): delete it by hand")
            continue
        lines.append(f"removed a stale temporary {kind} from a killed run (process {match['pid']}): {path}")
    return lines


class AtomicDir:
    """`check()` refuses to clobber, `begin()` sweeps killed runs' leftovers and makes the temporary directory,
    `commit()` renames it into place."""

    def __init__(self, final: str | Path, force: bool = False, option: str = "--out"):
        self.final = Path(final).expanduser()
        self.force = force
        self.option = option
        self.temp: Path | None = None
        self.swept: list[str] = []  # what begin() cleaned up after killed runs, for the summary

    def check(self, protected: Sequence[Path] = ()) -> None:
        """No side effects: fail before any work when the output path is taken or would destroy an input."""
        final = self.final.resolve()
        for path in protected:
            source = path.resolve()
            if final == source or source.is_relative_to(final):
                raise UserError(
                    f"{self.option} {self.final} would overwrite the input {path}: choose another {self.option}"
                )
        if self.final.exists() and not self.final.is_dir():
            raise UserError(f"{self.option} {self.final} is a file: choose a directory path")
        if self.final.is_dir() and any(self.final.iterdir()) and not self.force:
            raise UserError(
                f"{self.option} {self.final} already exists and is not empty: choose another {self.option}, "
                "or pass --force to replace it"
            )
        blocker = next((p for p in self.final.parents if p.exists()), None)
        if blocker is not None and not blocker.is_dir():
            raise UserError(f"cannot write {self.option} {self.final}: {blocker} is a file")

    def begin(self) -> Path:
        self.check()
        try:
            self.final.parent.mkdir(parents=True, exist_ok=True)
            self.swept = sweep_stale(self.final.parent, [self.final.name])
            if self.swept:
                self.check()  # a previous output put back by the sweep is protected like any other
            self.temp = make_temp_dir(self.final)
        except OSError as exc:
            raise UserError(
                f"cannot write {self.option} {self.final} ({exc.strerror}): choose a writable path"
            ) from None
        return self.temp

    def commit(self) -> Path:
        """Two renames: the old directory moves aside, the finished one takes its place, the old one is deleted."""
        assert self.temp is not None, "begin() first"
        old = None
        if self.final.exists():
            old = make_temp_dir(self.final, "old")
            old.rmdir()
            self.final.rename(old)
        self.temp.rename(self.final)
        self.temp = None
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.final

    def abort(self) -> None:
        if self.temp is not None:
            shutil.rmtree(self.temp, ignore_errors=True)
            self.temp = None



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
