"""Which checkpoints of a run are complete, so `resume=true` never starts from half a save.

The Trainer writes a checkpoint file by file (weights, optimizer, scheduler, RNG states) and `trainer_state.json`
last; a kill -9 in between leaves a `checkpoint-N/` that `Trainer.train(resume_from_checkpoint=...)` cannot load.
After each save, `CompletionMarker` writes `finetune-complete.json` into the checkpoint, listing every file and its
size. A checkpoint counts as complete when its marker's files are all there at those sizes, or, without a marker
(killed between the Trainer's save and the marker, or saved by an older finetune), when `trainer_state.json` names
its step and every weights/optimizer file is whole. Incomplete checkpoints are renamed out of the Trainer's sight
(`incomplete-checkpoint-N-<time>`: neither `get_last_checkpoint` nor the `save_total_limit` rotation matches it).
"""

from __future__ import annotations

import contextlib
import json
import re
import struct
import time
import zipfile
from pathlib import Path

from transformers import TrainerCallback

from finetune.io import write_text_atomic

MARKER = "finetune-complete.json"
QUARANTINE_PREFIX = "incomplete-"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_WEIGHTS = ("adapter_model.safetensors", "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
_WEIGHT_DIRS = ("global_step", "pytorch_model_fsdp")  # DeepSpeed and FSDP sharded states


def checkpoint_step(path: Path) -> int | None:
    match = _CHECKPOINT.match(path.name)
    return int(match.group(1)) if match and path.is_dir() else None


def checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """`checkpoint-N` folders in `directory`, oldest step first."""
    if not directory.is_dir():
        return []
    return sorted((step, p) for p in directory.iterdir() if (step := checkpoint_step(p)) is not None)


def _files(checkpoint: Path) -> dict[str, int]:
    return {
        p.relative_to(checkpoint).as_posix(): p.stat().st_size
        for p in sorted(checkpoint.rglob("*"))
        if p.is_file() and p.name != MARKER
    }


def _safetensors_whole(path: Path) -> bool:
    """The header's tensors end exactly where the file does (a cut file is shorter)."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            return False
        (length,) = struct.unpack("<Q", head)
        if length > size - 8:
            return False
        try:
            header = json.loads(handle.read(length))
        except ValueError:
            return False
    ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
    return 8 + length + max(ends, default=0) == size


def _torch_file_whole(path: Path) -> bool:
    """torch.save writes a zip archive whose directory comes last: a cut file has none."""
    try:
        with zipfile.ZipFile(path):
            return True
    except (zipfile.BadZipFile, OSError):
        return False


def _unmarked_problem(checkpoint: Path, step: int) -> str | None:
    state = checkpoint / "trainer_state.json"
    if not state.is_file():
        return "no trainer_state.json (the Trainer writes it last): the save was interrupted"
    try:
        saved_step = json.loads(state.read_text(encoding="utf-8")).get("global_step")
    except (ValueError, UnicodeDecodeError):
        return "trainer_state.json is cut short: the save was interrupted"
    if saved_step != step:
        return f"trainer_state.json says step {saved_step}, not {step}"
    names = {p.name for p in checkpoint.iterdir()}
    if not any(n in names for n in _WEIGHTS) and not any(n.startswith(_WEIGHT_DIRS) for n in names):
        return "no model weights"
    for path in sorted(checkpoint.rglob("*")):
        whole = True
        if path.suffix == ".safetensors":
            whole = _safetensors_whole(path)
        elif path.suffix in (".pt", ".pth", ".bin"):
            whole = _torch_file_whole(path)
        if not whole:
            return f"{path.relative_to(checkpoint)} is cut short"
    index = checkpoint / "model.safetensors.index.json"
    if index.is_file():
        shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        missing = sorted(s for s in shards if not (checkpoint / s).is_file())
        if missing:
            return f"weight shard {missing[0]} is missing"
    return None


def problem(checkpoint: Path) -> str | None:
    """Why `checkpoint` cannot be resumed from, or None when it is complete."""
    step = checkpoint_step(checkpoint)
    if step is None:
        return "not a checkpoint-N folder"
    marker = checkpoint / MARKER
    if not marker.is_file():
        return _unmarked_problem(checkpoint, step)
    try:
        listed: dict[str, int] = json.loads(marker.read_text(encoding="utf-8"))["files"]
    except (ValueError, KeyError, UnicodeDecodeError):
        return f"{MARKER} is unreadable"
    for name, size in listed.items():
        path = checkpoint / name
        if not path.is_file():
            return f"{name} is missing (the checkpoint was partly deleted)"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, not the {size} saved"
    return None


def mark_complete(checkpoint: Path, step: int) -> None:
    """Record every file of a finished checkpoint and its size; written to a temporary name, then renamed."""
    record = {"step": step, "files": _files(checkpoint)}
    write_text_atomic(checkpoint / MARKER, json.dumps(record, indent=1) + "\n")


def settle(directory: Path) -> tuple[Path | None, list[str]]:
    """The newest complete checkpoint in `directory` and what was found on the way (main process, before training).

    Every incomplete checkpoint is moved aside, so the Trainer resumes from, rotates and overwrites only complete
    ones; a complete checkpoint without a marker gets one now.
    """
    notes: list[str] = []
    found = checkpoints(directory)
    chosen: Path | None = None
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for step, path in reversed(found):
        why = problem(path)
        if why is None:
            if not (path / MARKER).is_file():
                notes.append(f"{path.name} has no completion marker but its files are whole: marked it complete")
                with contextlib.suppress(OSError):  # a read-only copy still resumes
                    mark_complete(path, step)
            chosen = chosen or path
            continue
        aside = path.with_name(f"{QUARANTINE_PREFIX}{path.name}-{stamp}")
        path.rename(aside)
        notes.append(f"skipped {path.name}: {why}; moved it to {aside.name}")
    if chosen is not None:
        notes.append(f"resuming from {chosen.name}, the newest complete checkpoint")
    else:
        notes.append(f"no complete checkpoint in {directory}: starting from step 0")
    return chosen, notes


def discard_quarantined(directory: Path) -> list[str]:
    """Delete the incomplete checkpoints moved aside earlier (a finished run only holds complete ones)."""
    import shutil

    removed = []
    for path in sorted(directory.glob(f"{QUARANTINE_PREFIX}checkpoint-*")):
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path.name)
    return removed


class CompletionMarker(TrainerCallback):
    """Marks each checkpoint complete once every process has finished writing it (and the rotation has run)."""

    def on_save(self, args, state, control, **kwargs):
        from accelerate import PartialState

        PartialState().wait_for_everyone()  # each rank writes its own RNG state / shards
        if state.is_world_process_zero:
            checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if checkpoint.is_dir():
                mark_complete(checkpoint, state.global_step)


class AlreadyFinished(Exception):
    """Raised by `StopWhenFinished` before a step past max_steps; the trainer catches it and finishes the run."""


class StopWhenFinished(TrainerCallback):
    """A run resumed from the checkpoint of its last step has nothing left to train, but transformers would take one
    more step before checking max_steps (global_step max_steps + 1). Stop before that step begins."""

    def on_step_begin(self, args, state, control, **kwargs):
        if state.max_steps > 0 and state.global_step >= state.max_steps:
            raise AlreadyFinished
