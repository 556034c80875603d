"""An output directory written under a temporary name next to it and renamed into place only when complete.

A crash or Ctrl-C leaves the previous contents (or nothing) at the final path, never half a model.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from finetune.errors import UserError


class AtomicDir:
    """`check()` refuses to clobber, `begin()` makes the temporary directory, `commit()` renames it into place."""

    def __init__(self, final: str | Path, force: bool = False, option: str = "--out"):
        self.final = Path(final).expanduser()
        self.force = force
        self.option = option
        self.temp: Path | None = None

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
        self.final.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.temp = Path(tempfile.mkdtemp(prefix=f".{self.final.name}.", suffix=".partial", dir=self.final.parent))
        except OSError as exc:
            raise UserError(
                f"cannot write {self.option} {self.final} ({exc.strerror}): choose a writable path"
            ) from None
        umask = os.umask(0)
        os.umask(umask)
        self.temp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the output is an ordinary directory
        return self.temp

    def commit(self) -> Path:
        """Two renames: the old directory moves aside, the finished one takes its place, the old one is deleted."""
        assert self.temp is not None, "begin() first"
        old = None
        if self.final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{self.final.name}.", suffix=".old", dir=self.final.parent))
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
