"""The output directory of a run: written under `<output_dir>.partial` and renamed when complete.

A crashed or interrupted run leaves only the `.partial` directory (with its checkpoints, so `resume=true` can
continue it); `output_dir` itself only ever holds a finished run.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from finetune.errors import UserError

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def last_checkpoint(directory: Path) -> Path | None:
    """The checkpoint with the highest step in `directory`, if any."""
    if not directory.is_dir():
        return None
    steps = [(int(m.group(1)), p) for p in directory.iterdir() if p.is_dir() and (m := _CHECKPOINT.match(p.name))]
    return max(steps)[1] if steps else None


class RunDir:
    """Paths and life cycle of one run's output directory."""

    def __init__(self, output_dir: str | Path):
        self.final = Path(output_dir)
        self.partial = self.final.with_name(self.final.name + ".partial")

    def check(self, *, overwrite: bool, resume: bool) -> None:
        """Refuse to clobber another run; no side effects, so every process may call it before any work."""
        if self.final.exists() and not self.final.is_dir():
            raise UserError(f"output_dir {self.final} is a file: choose a directory path for output_dir")
        if self._final_taken() and not (overwrite or resume):
            raise UserError(
                f"output_dir {self.final} already holds a run: set overwrite=true to replace it, "
                "resume=true to continue it, or choose another output_dir"
            )
        if self.partial.exists() and not (overwrite or resume):
            raise UserError(
                f"found an unfinished run in {self.partial}: set resume=true to continue it or overwrite=true to start over"
            )
        blocker = next((p for p in (self.final, *self.final.parents) if p.exists()), None)
        if blocker is not None and not blocker.is_dir():
            raise UserError(f"cannot write output_dir {self.final}: {blocker} is a file; choose another output_dir")

    def prepare(self, *, overwrite: bool, resume: bool) -> Path | None:
        """Create the working directory; return the checkpoint to resume from, if any (main process only)."""
        self.check(overwrite=overwrite, resume=resume)
        if overwrite and self.partial.exists():
            shutil.rmtree(self.partial)
        if resume and self._final_taken() and not self.partial.exists():
            self.final.rename(self.partial)
        try:
            self.partial.mkdir(parents=True, exist_ok=True)
            probe = self.partial / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            raise UserError(
                f"cannot write output_dir {self.final} ({exc.strerror}): choose a writable output_dir"
            ) from None
        return last_checkpoint(self.partial) if resume else None

    def discard_if_empty(self) -> None:
        """Remove a working directory that holds no checkpoint (a run that failed before saving anything)."""
        if self.partial.is_dir() and last_checkpoint(self.partial) is None:
            shutil.rmtree(self.partial, ignore_errors=True)

    def _final_taken(self) -> bool:
        return self.final.is_dir() and any(self.final.iterdir())

    def finalize(self) -> Path:
        """Replace `output_dir` with the finished run in two renames, so no reader sees half of it."""
        if self.final.exists():
            old = self.final.with_name(self.final.name + ".old")
            if old.exists():
                shutil.rmtree(old)
            self.final.rename(old)
            self.partial.rename(self.final)
            shutil.rmtree(old)
        else:
            self.final.parent.mkdir(parents=True, exist_ok=True)
            self.partial.rename(self.final)
        return self.final
