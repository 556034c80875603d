"""The output directory of a run: written under `<output_dir>.partial` and renamed when complete.

A crashed or killed run leaves only the `.partial` directory (with its checkpoints, so `resume=true` can continue
it); `output_dir` itself only ever holds a finished run. `<output_dir>.lock` keeps a second run out while one is
working (see runlock.py).

`resume=true` wins over `overwrite=true`: resuming never deletes anything, so a recipe that sets `overwrite: true`
for re-runs can still be continued with `resume=true` on the command line.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from finetune.errors import UserError
from finetune.io import write_text_atomic
from finetune.lock import RunLock
from finetune.training.checkpoints import checkpoints, discard_quarantined, settle

RECIPE_FILE = "recipe.yaml"  # the fully resolved recipe: how the run was trained
SPLIT_FILE = "split.json"  # the held-out files: what evaluation may use
REPORT_FILE = "data_report.json"


def write_run_records(directory: Path, recipe_yaml: str, data_report: dict, split: dict) -> None:
    """The files that let merge, complete and eval (and a person) know how a run was made."""
    write_text_atomic(directory / RECIPE_FILE, recipe_yaml)
    write_text_atomic(directory / REPORT_FILE, json.dumps(data_report, indent=2) + "\n")
    write_text_atomic(directory / SPLIT_FILE, json.dumps(split, indent=2) + "\n")


def saved_recipe(directory: Path | None, strict: bool = False) -> dict[str, Any]:
    """The resolved recipe a run saved in `directory`: {} when there is none; an unreadable one is {} or, `strict`,
    a one-line error (merge must not guess how an adapter was trained)."""
    import yaml

    if directory is None or not (directory / RECIPE_FILE).is_file():
        return {}
    try:
        data = yaml.safe_load((directory / RECIPE_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        if strict:
            raise UserError(
                f"{directory / RECIPE_FILE} is not valid YAML: fix or delete it (it records how the run was trained)"
            ) from None
        return {}
    return data if isinstance(data, dict) else {}


def split_file(directory: str | Path | None) -> Path | None:
    """The split.json a run saved in `directory`, if there is one."""
    path = Path(directory) / SPLIT_FILE if directory else None
    return path if path is not None and path.is_file() else None


def held_out_paths(split: Path) -> set[str]:
    """The files a run held out of training, from its split.json."""
    try:
        return set(json.loads(split.read_text(encoding="utf-8"))["eval_paths"])
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"{split} is not a training run's split.json (no eval_paths list): pass another --split") from None


def last_checkpoint(directory: Path) -> Path | None:
    """The checkpoint with the highest step in `directory`, if any (after `settle`, the newest complete one)."""
    found = checkpoints(directory)
    return found[-1][1] if found else None


class RunDir:
    """Paths and life cycle of one run's output directory."""

    def __init__(self, output_dir: str | Path):
        self.final = Path(output_dir)
        self.partial = self.final.with_name(self.final.name + ".partial")
        self.old = self.final.with_name(self.final.name + ".old")  # the previous run, while being replaced

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

    def lock(self) -> RunLock:
        """The lock that keeps other runs out of this output_dir (take it on the main process only)."""
        try:
            self.final.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self.check(overwrite=True, resume=False)  # names a parent that is a file
            raise UserError(f"cannot write output_dir {self.final} ({exc.strerror}): choose a writable output_dir") from None
        return RunLock(self.final.with_name(self.final.name + ".lock"), f"output_dir {self.final}")

    def prepare(self, *, overwrite: bool, resume: bool) -> tuple[Path | None, list[str]]:
        """Create the working directory (main process, under the lock); return the checkpoint to resume from, if
        any, and what was found and done on the way, for the console."""
        self.check(overwrite=overwrite, resume=resume)
        notes: list[str] = []
        if self.old.exists():  # a replacement killed after moving the previous run aside
            shutil.rmtree(self.old)
            notes.append(f"removed {self.old}, a previous run that a killed run was replacing")
        if overwrite and not resume and self.partial.exists():
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
        if not resume:
            return None, notes
        checkpoint, found = settle(self.partial)
        return checkpoint, notes + found

    def discard_if_empty(self) -> None:
        """Remove a working directory that holds no checkpoint (a run that failed before saving anything)."""
        if self.partial.is_dir() and last_checkpoint(self.partial) is None:
            shutil.rmtree(self.partial, ignore_errors=True)

    def _final_taken(self) -> bool:
        return self.final.is_dir() and any(self.final.iterdir())

    def finalize(self) -> Path:
        """Replace `output_dir` with the finished run in two renames, so no reader sees half of it.

        Killed between the renames, `output_dir` is missing and `.partial` holds the finished run: `resume=true`
        finishes it (no steps left) and the next run removes `.old`.
        """
        discard_quarantined(self.partial)
        if self.final.exists():
            if self.old.exists():
                shutil.rmtree(self.old)
            self.final.rename(self.old)
            self.partial.rename(self.final)
            shutil.rmtree(self.old)
        else:
            self.final.parent.mkdir(parents=True, exist_ok=True)
            self.partial.rename(self.final)
        return self.final
