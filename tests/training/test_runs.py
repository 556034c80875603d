"""The pieces that make runs survive kills and never mix, one by one and fast: which checkpoints are complete,
the output directory's lock, the sweep of killed runs' temporary paths, the cache's race, metrics after a resume.
(tests/training/test_kill.py kills real runs.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from finetune.cli.main import main
from finetune.errors import UserError
from finetune.io import _HOST, sweep_stale
from finetune.lock import RunLock
from finetune.run import RunDir
from finetune.training.checkpoints import MARKER, mark_complete, problem, settle

ROOT = Path(__file__).resolve().parents[2]


def make_checkpoint(directory: Path, step: int) -> Path:
    """The files the Trainer writes for a LoRA checkpoint, tiny, trainer_state.json last."""
    path = directory / f"checkpoint-{step}"
    path.mkdir(parents=True)
    save_file({"lora_A": torch.randn(8, 64), "lora_B": torch.zeros(64, 8)}, path / "adapter_model.safetensors")
    (path / "adapter_config.json").write_text("{}")
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin"):
        torch.save({"state": torch.randn(32)}, path / name)
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": []}))
    return path


def cut(path: Path) -> None:
    with path.open("r+b") as handle:
        handle.truncate(path.stat().st_size // 2)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ---------------------------------------------------------------------------------------------- checkpoints


def test_a_checkpoint_is_complete_only_when_every_file_is_whole(tmp_path: Path) -> None:
    assert problem(make_checkpoint(tmp_path / "a", 4)) is None  # whole, no marker yet
    for damage, expected in [
        (lambda p: (p / "trainer_state.json").unlink(), "no trainer_state.json (the Trainer writes it last)"),
        (lambda p: cut(p / "trainer_state.json"), "trainer_state.json is cut short"),
        (lambda p: cut(p / "adapter_model.safetensors"), "adapter_model.safetensors is cut short"),
        (lambda p: cut(p / "optimizer.pt"), "optimizer.pt is cut short"),
        (lambda p: (p / "adapter_model.safetensors").unlink(), "no model weights"),
        (lambda p: (p / "trainer_state.json").write_text('{"global_step": 2}'), "says step 2, not 4"),
    ]:
        checkpoint = make_checkpoint(tmp_path / f"d{len(expected)}", 4)
        damage(checkpoint)
        assert expected in (problem(checkpoint) or ""), expected


def test_the_marker_catches_files_deleted_or_cut_after_the_save(tmp_path: Path) -> None:
    checkpoint = make_checkpoint(tmp_path, 2)
    mark_complete(checkpoint, 2)
    listed = json.loads((checkpoint / MARKER).read_text())["files"]
    assert "optimizer.pt" in listed and MARKER not in listed and problem(checkpoint) is None
    (checkpoint / "scheduler.pt").unlink()  # e.g. a save_total_limit rotation killed half way through
    assert "scheduler.pt is missing" in problem(checkpoint)
    checkpoint = make_checkpoint(tmp_path / "b", 2)
    mark_complete(checkpoint, 2)
    with (checkpoint / "rng_state.pth").open("ab") as handle:
        handle.write(b"x")
    assert "rng_state.pth has" in problem(checkpoint)


def test_settle_resumes_from_the_newest_complete_checkpoint_and_moves_the_others_aside(tmp_path: Path) -> None:
    from transformers.trainer_utils import get_last_checkpoint, sort_checkpoints

    mark_complete(make_checkpoint(tmp_path, 2), 2)
    make_checkpoint(tmp_path, 3)  # complete, killed before its marker (e.g. right after a rotation)
    (make_checkpoint(tmp_path, 4) / "trainer_state.json").unlink()  # killed while saving
    chosen, notes = settle(tmp_path)
    assert chosen == tmp_path / "checkpoint-3" and (chosen / MARKER).is_file()
    assert notes[0].startswith("skipped checkpoint-4: no trainer_state.json") and "moved it to incomplete-" in notes[0]
    assert notes[1] == "checkpoint-3 has no completion marker but its files are whole: marked it complete"
    assert notes[-1] == "resuming from checkpoint-3, the newest complete checkpoint"
    [aside] = tmp_path.glob("incomplete-checkpoint-4-*")
    assert get_last_checkpoint(str(tmp_path)) == str(chosen)  # the Trainer's own view agrees
    assert str(aside) not in sort_checkpoints(str(tmp_path))  # the rotation never counts it

    empty = tmp_path / "empty"
    (make_checkpoint(empty, 2) / "optimizer.pt").write_bytes(b"")
    chosen, notes = settle(empty)
    assert chosen is None and notes[-1] == f"no complete checkpoint in {empty}: starting from step 0"


def test_resume_wins_over_overwrite_and_a_half_replaced_run_is_cleaned(tmp_path: Path) -> None:
    rundir = RunDir(tmp_path / "run")
    mark_complete(make_checkpoint(rundir.partial, 2), 2)
    rundir.old.mkdir()  # killed between the renames of a replacement
    checkpoint, notes = rundir.prepare(overwrite=True, resume=True)
    assert checkpoint == rundir.partial / "checkpoint-2" and checkpoint.is_dir()
    assert not rundir.old.exists() and "a previous run that a killed run was replacing" in notes[0]
    checkpoint, _ = rundir.prepare(overwrite=True, resume=False)
    assert checkpoint is None and not any(rundir.partial.iterdir())


# ---------------------------------------------------------------------------------------------------- lock


def test_one_run_per_output_dir_and_a_dead_holder_never_blocks(tmp_path: Path) -> None:
    lock_file = tmp_path / "run.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from finetune.lock import RunLock; "
         f"RunLock(__import__('pathlib').Path({str(lock_file)!r}), 'x').acquire(); print('locked', flush=True); "
         "time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(UserError, match=rf"output_dir run is in use by another finetune run \(pid {holder.pid} on "):
            RunLock(lock_file, "output_dir run").acquire()
    finally:
        holder.kill()
        holder.wait()
    assert json.loads(lock_file.read_text())["pid"] == holder.pid  # left behind by the kill ...
    with RunLock(lock_file, "output_dir run"):  # ... and ignored: the kernel released the lock
        assert json.loads(lock_file.read_text())["pid"] == os.getpid()
        with pytest.raises(UserError, match=f"pid {os.getpid()} on "):  # a second run in this very process too
            RunLock(lock_file, "output_dir run").acquire()
    assert not lock_file.exists()


def test_a_second_run_into_a_locked_output_dir_exits_2_before_touching_it(tmp_path, tiny_model_dir, code_repo, capsys):
    import yaml
    from conftest import train_recipe

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(train_recipe(tmp_path / "run", tiny_model_dir, code_repo, max_steps=1)))
    with RunLock(tmp_path / "run.lock", "output_dir run"):
        assert main(["train", str(recipe)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: output_dir {tmp_path / 'run'} is in use by another finetune")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["recipe.yaml"]


# ---------------------------------------------------------------------------------------------- leftovers


def test_sweep_removes_only_dead_owners_temporaries_and_puts_a_moved_aside_output_back(tmp_path: Path) -> None:
    dead, alive = dead_pid(), os.getpid()
    doomed = tmp_path / f".out.jsonl.{dead}@{_HOST}.abc123.tmp"
    kept = [
        tmp_path / f".out.jsonl.{alive}@{_HOST}.def456.tmp",  # its owner runs
        tmp_path / f".out.jsonl.{dead}@other-host.ghi789.tmp",  # cannot tell from here
        tmp_path / f".other.jsonl.{dead}@{_HOST}.jkl012.tmp",  # not this command's output
        tmp_path / ".out.jsonl.abcdef.tmp",  # not named by its owner
    ]
    for path in [doomed, *kept]:
        path.write_text("half")
    partial = tmp_path / f".model.{dead}@{_HOST}.x1.partial"
    (partial / "sub").mkdir(parents=True)
    old = tmp_path / f".model.{dead}@{_HOST}.y2.old"
    old.mkdir()
    (old / "config.json").write_text("{}")
    lines = sweep_stale(tmp_path, ["out.jsonl", "model"])
    assert not doomed.exists() and not partial.exists() and all(p.exists() for p in kept)
    assert (tmp_path / "model" / "config.json").is_file()  # the previous output, restored
    assert f"removed a stale temporary file from a killed run (process {dead}): {doomed}" in lines
    assert any(line.startswith(f"restored {tmp_path / 'model'} from an interrupted replacement") for line in lines)
    assert len(lines) == 3


@pytest.mark.parametrize("command", ["data fim", "data sft", "eval"])
def test_commands_remove_their_killed_runs_temporaries(command, tmp_path, code_repo, tiny_model_dir, capsys) -> None:
    if command == "eval":
        bench = tmp_path / "tasks.jsonl"
        task = {"task_id": "t/0", "prompt": "def f():\n", "suffix": "\n", "canonical_solution": "    return 1",
                "test": "def check(candidate):\n    assert candidate() == 1\n", "entry_point": "f"}
        bench.write_text(json.dumps(task) + "\n")
        out = tmp_path / "out"
        out.mkdir()
        stale = out / f".results.json.{dead_pid()}@{_HOST}.abc.tmp"
        argv = ["eval", "--benchmark", str(bench), "--oracle", "--out", str(out)]
    else:
        out = tmp_path / "out.jsonl"
        stale = tmp_path / f".out.jsonl.{dead_pid()}@{_HOST}.abc.tmp"
        if command == "data fim":
            argv = ["data", "fim", str(code_repo), "--out", str(out)]
        else:
            source = tmp_path / "in.jsonl"
            source.write_text(json.dumps({"instruction": "Say hi", "output": "hi"}) + "\n")
            argv = ["data", "sft", str(source), "--tokenizer", str(tiny_model_dir), "--out", str(out)]
    stale.write_text("half")
    assert main(argv) == 0
    assert not stale.exists()
    assert "removed a stale temporary file from a killed run" in capsys.readouterr().out.replace("\n", "")


def test_two_prepares_of_one_cache_entry_keep_the_first_and_sweep_a_killed_one(tmp_path: Path) -> None:
    from datasets import Dataset

    from finetune.data.cache import load_cached, save_cached
    from finetune.data.pipeline import PreparedData

    def data(marker: int) -> PreparedData:
        return PreparedData(Dataset.from_dict({"input_ids": [[marker]], "labels": [[marker]]}), None, {}, [], [])

    stale = tmp_path / f".other-key.{dead_pid()}@{_HOST}.zz.partial"
    stale.mkdir()
    entry = tmp_path / "key"
    [line] = save_cached(entry, data(1))
    assert line.startswith("removed a stale temporary folder from a killed run (process") and line.endswith(str(stale))
    assert save_cached(entry, data(2)) == []  # lost the race: the entry already there stays, no error
    assert load_cached(entry).train["input_ids"] == [[1]]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key"]


# ------------------------------------------------------------------------------------------------- metrics


def test_resumed_metrics_keep_only_what_was_logged_up_to_the_checkpoint(tmp_path: Path) -> None:
    from finetune.training.callbacks import MetricsCallback

    path = tmp_path / "metrics.jsonl"
    records = [{"step": s, "loss": 5.0 - s, "tokens_seen": 100 * s} for s in range(1, 6)]
    records.insert(4, {"step": 4, "eval_loss": 3.0})
    records += [{"step": 5, "train_loss": 2.0}, {"step": 5, "final_eval_loss": 1.0}]
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"step": 6, "lo')  # killed mid-line
    metrics = MetricsCallback(path)
    metrics.resume_at(4)
    kept = [json.loads(line) for line in path.read_text().splitlines()]
    assert kept == records[:5] and metrics.tokens_before == 400
    metrics.resume_at(0)
    assert path.read_text() == "" and metrics.tokens_before == 0
