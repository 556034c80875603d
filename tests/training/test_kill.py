"""kill -9 at every phase of a run, then run again: it continues from the last complete checkpoint, its losses equal
an uninterrupted run's, nothing half-written is ever taken as complete, and no leftover stays behind.

Each test drives `python -m finetune` subprocesses (through tests/kill_probe.py to stop at an exact phase) on the
tiny model, 6 steps with a checkpoint every 2, and compares with one uninterrupted in-process run.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import train_recipe
from safetensors.torch import load_file

from finetune.config.load import validate_recipe
from finetune.training.checkpoints import MARKER, checkpoints, problem
from finetune.training.trainer import run

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PROBE = ROOT / "tests" / "kill_probe.py"
STEPS, SAVE_EVERY = 6, 2


def recipe_data(out: Path, model_dir: Path, repo: Path, **training) -> dict:
    data = train_recipe(out, model_dir, repo, max_steps=STEPS, save_steps=SAVE_EVERY, **training)
    data["data"]["eval_split"] = 0  # no eval pass: the tests are about the training state
    data["overwrite"] = True  # as the quickstart recipe: resume=true must still continue (resume wins)
    return data


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_model_dir, code_repo) -> Path:
    """One uninterrupted run of the recipe the tests kill (in-process: no interpreter start-up to pay)."""
    out = tmp_path_factory.mktemp("reference") / "run"
    run(validate_recipe(recipe_data(out, tiny_model_dir, code_repo)))
    return out


def losses(out: Path) -> dict[int, float]:
    """Loss per step from metrics.jsonl; a step logged twice (mixed runs) fails the test."""
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if "loss" in r]
    assert len(steps) == len(set(steps)), f"steps logged twice: {steps}"
    return {r["step"]: r["loss"] for r in records if "loss" in r}


def assert_same_training(out: Path, reference: Path) -> None:
    got, want = losses(out), losses(reference)
    assert sorted(got) == list(range(1, STEPS + 1))
    assert got == pytest.approx(want, rel=1e-5, abs=1e-5)
    state = json.loads((out / f"checkpoint-{STEPS}" / "trainer_state.json").read_text())
    history = {r["step"]: r["loss"] for r in state["log_history"] if "loss" in r}
    assert history == pytest.approx(want, rel=1e-5, abs=1e-5)
    mine, theirs = load_file(out / "adapter_model.safetensors"), load_file(reference / "adapter_model.safetensors")
    assert mine.keys() == theirs.keys()
    for key in mine:
        assert torch.allclose(mine[key], theirs[key], atol=1e-5), key
    assert not list(out.glob("incomplete-*")) and not out.with_name(out.name + ".partial").exists()
    assert not out.with_name(out.name + ".old").exists() and not out.with_name(out.name + ".lock").exists()


def assert_complete_ones_load(directory: Path) -> list[int]:
    """Every checkpoint that `problem` calls complete really loads; returns their steps."""
    complete = []
    for step, path in checkpoints(directory):
        if problem(path) is not None:
            continue
        complete.append(step)
        json.loads((path / "trainer_state.json").read_text())
        load_file(path / "adapter_model.safetensors")
        for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
            torch.load(path / name, weights_only=False)
    return complete


class Process:
    """A `finetune` process forked by the probe server: its pid, log and exit status."""

    def __init__(self, pid: int, log: Path, marker: Path):
        self.pid, self.log, self.marker = pid, log, marker

    def poll(self) -> int | None:
        done = Path(f"{self.log}.exit")
        return int(done.read_text()) if done.is_file() and done.read_text() else None

    def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while (code := self.poll()) is None:
            if time.monotonic() > deadline:
                os.kill(self.pid, signal.SIGKILL)
                pytest.fail(f"process {self.pid} still running after {timeout}s:\n{self.output()[-3000:]}")
            time.sleep(0.05)
        return code

    def kill(self) -> int:
        """kill -9; returns the exit status (0 when it finished just before the signal)."""
        if self.poll() is None:  # not reaped yet, so the pid is still this process's
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        code = self.wait(30)
        assert code in (0, -signal.SIGKILL), self.output()[-3000:]
        return code

    def paused(self, timeout: float = 240) -> None:
        """Wait until the process reached its pause phase."""
        deadline = time.monotonic() + timeout
        while not self.marker.exists():
            code = self.poll()
            if code is not None or time.monotonic() > deadline:
                pytest.fail(f"never reached its phase (exit {code}):\n{self.output()[-3000:]}")
            time.sleep(0.05)

    def output(self) -> str:
        return self.log.read_text() if self.log.is_file() else ""


@pytest.fixture(scope="module")
def server():
    """The probe's fork server (tests/kill_probe.py): launches without paying the imports each time."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, str(PROBE)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    assert json.loads(proc.stdout.readline()) == {"ready": True}
    yield proc
    proc.stdin.close()
    proc.wait(timeout=60)


class Launcher:
    """Starts `finetune` processes with their own cache, logs and pause markers."""

    def __init__(self, server: subprocess.Popen, tmp: Path, recipe: Path):
        self.server, self.tmp, self.recipe, self.count = server, tmp, recipe, 0
        # COLUMNS: rich would wrap the summary lines at 80 columns
        self.env = {"FINETUNE_CACHE": str(tmp / "cache"), "COLUMNS": "300"}

    def start(self, phase: str, *args: str) -> Process:
        self.count += 1
        marker, log = self.tmp / f"paused-{self.count}", self.tmp / f"log-{self.count}.txt"
        request = {"args": list(args), "phase": phase, "marker": str(marker), "log": str(log), "cwd": str(self.tmp)}
        self.server.stdin.write(json.dumps({**request, "env": self.env}) + "\n")
        self.server.stdin.flush()
        return Process(json.loads(self.server.stdout.readline())["pid"], log, marker)

    def train(self, phase: str, *overrides: str) -> Process:
        return self.start(phase, "train", str(self.recipe), *overrides)

    def kill_at(self, phase: str, *args: str, command: str = "train") -> str:
        """Run until the phase, kill -9 there; returns the output."""
        proc = self.train(phase, *args) if command == "train" else self.start(phase, command, *args)
        proc.paused()
        assert proc.kill() == -signal.SIGKILL
        return proc.output()

    def finish(self, *args: str, command: str = "train") -> str:
        proc = self.train("none", *args) if command == "train" else self.start("none", command, *args)
        assert proc.wait(300) == 0, proc.output()[-3000:]
        return proc.output()


@pytest.fixture
def launcher(server, tmp_path, tiny_model_dir, code_repo) -> Launcher:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(recipe_data(tmp_path / "run", tiny_model_dir, code_repo)))
    return Launcher(server, tmp_path, recipe)


def test_killed_while_preparing_and_mid_run_then_resumed(launcher, tmp_path, reference) -> None:
    """Also: a second run into the same output_dir is refused while the first lives, and not after it is killed."""
    out = tmp_path / "run"
    launcher.kill_at("prepare")
    assert len(list((tmp_path / "cache").glob(".*.partial"))) == 1  # the killed prepare's temporary entry

    first = launcher.train("step:3", "resume=true")
    first.paused()
    second = subprocess.run(  # a plain `python -m finetune train`, as a user would start it
        [sys.executable, "-m", "finetune", "train", str(launcher.recipe)],
        env={**os.environ, **launcher.env, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])},
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert second.returncode == 2, second.stderr[-3000:]
    error = [line for line in second.stderr.splitlines() if line.startswith("error:")]
    assert error == [error[0]] and f"is in use by another finetune run (pid {first.pid} on " in error[0]
    assert "Traceback" not in second.stderr
    assert first.kill() == -signal.SIGKILL
    log = first.output()
    assert "removed a stale temporary folder from a killed run" in log and "no complete checkpoint" in log
    assert not list((tmp_path / "cache").glob(".*.partial"))
    partial = out.with_name("run.partial")
    assert assert_complete_ones_load(partial) == [2]
    assert out.with_name("run.lock").exists()  # left by the kill: it must not block

    log = launcher.finish("resume=true")
    assert "resuming from checkpoint-2" in log
    assert_same_training(out, reference)


def test_killed_while_saving_a_checkpoint_and_the_final_model_then_resumed(launcher, tmp_path, reference) -> None:
    out, partial = tmp_path / "run", tmp_path / "run.partial"
    launcher.kill_at("checkpoint:4")
    assert (partial / "checkpoint-4").is_dir() and not (partial / "checkpoint-4" / "trainer_state.json").exists()
    assert assert_complete_ones_load(partial) == [2]  # the half-written checkpoint-4 is not taken as complete

    log = launcher.kill_at("final", "resume=true")
    assert "skipped checkpoint-4: no trainer_state.json" in log and "resuming from checkpoint-2" in log
    assert assert_complete_ones_load(partial) == [4, 6]

    log = launcher.finish("resume=true")
    assert "resuming from checkpoint-6" in log
    assert_same_training(out, reference)


def test_killed_between_the_renames_that_replace_a_run(launcher, tmp_path, reference) -> None:
    out = tmp_path / "run"
    shutil.copytree(reference, out)  # a finished run, which the next one replaces (overwrite=true)
    launcher.kill_at("rename")
    assert not out.exists() and out.with_name("run.old").is_dir() and out.with_name("run.partial").is_dir()

    log = launcher.finish("resume=true")
    assert "removed" in log and "run.old, a previous run that a killed run was replacing" in log
    assert "resuming from checkpoint-6" in log
    assert_same_training(out, reference)


def test_killed_merge_leaves_nothing_behind(launcher, tmp_path, reference) -> None:
    merged = tmp_path / "merged"
    launcher.kill_at("merge", str(reference), "--out", str(merged), command="merge")
    leftovers = list(tmp_path.glob(".merged.*.partial"))
    assert len(leftovers) == 1 and (leftovers[0] / "config.json").is_file() and not merged.exists()

    log = launcher.finish(str(reference), "--out", str(merged), command="merge")
    assert "removed a stale temporary folder from a killed run" in log and str(leftovers[0]) in log
    assert not list(tmp_path.glob(".merged.*")) and (merged / "model.safetensors").is_file()


def kill_point(proc: Process, rng: random.Random) -> dict:
    """Wait until a random moment after this process's 1st or 2nd step: in that step's save or in the next step."""
    target, seen, times = rng.randint(1, 2), 0, []
    while proc.poll() is None and seen < target:
        count = len(re.findall(r"step +\d+/\d+  loss ", proc.output()))  # one line per step (logging_steps=1)
        if count > seen:
            seen, times = count, [*times, time.monotonic()]
        time.sleep(0.005)
    # one step seen: no step time measured yet; a tiny model's step with its save takes ~50 ms, and a longer wait
    # would let a fast process finish the run before the kill (seed 434267623 did, 2026-12-03)
    step_s = times[-1] - times[-2] if len(times) > 1 else 0.05
    time.sleep(delay := rng.uniform(0.0, step_s))
    return {"step_of_this_process": target, "into_it_s": round(delay, 3)}


def test_random_kills_then_resume(launcher, tmp_path, tiny_model_dir, code_repo, reference) -> None:
    """Killed at random moments (a checkpoint every step, two kept: saves and rotations are often hit)."""
    data = recipe_data(tmp_path / "run", tiny_model_dir, code_repo)
    data["training"].update(save_steps=1, save_total_limit=2)
    launcher.recipe.write_text(yaml.safe_dump(data))
    partial = tmp_path / "run.partial"
    seed = int(os.environ.get("FINETUNE_KILL_SEED", time.time_ns() % 2**32))
    rng = random.Random(seed)
    kills: list[dict] = []  # what each kill left: for the failure message and the README numbers (pytest -s)
    newest, finished = 0, False
    while len(kills) < 5 and not finished:
        proc = launcher.train("none", "resume=true")
        delay = kill_point(proc, rng)
        # it finished first: nothing left to kill; or the kill landed after the run's last act, the rename of
        # run.partial to run, before the process exited (seed 3090471619, 2026-12-03)
        finished = proc.kill() == 0 or (not partial.exists() and (tmp_path / "run" / "summary.json").is_file())
        if finished:
            newest = STEPS
            break
        complete = assert_complete_ones_load(partial)
        incomplete = {p.name: problem(p) for _, p in checkpoints(partial) if problem(p) is not None}
        kills.append({**delay, "complete": complete, "incomplete": incomplete})
        assert complete and complete[-1] >= newest or not newest, (seed, kills)  # a complete one is never lost
        newest = complete[-1] if complete else newest
    log = launcher.finish("resume=true")
    print(f"random kills (seed {seed}): {json.dumps(kills)}")
    assert len(kills) >= 2, (seed, kills)  # else the delays missed the run: nothing was tested
    assert (f"resuming from checkpoint-{newest}" if newest else "no complete checkpoint") in log, (seed, kills)
    assert_same_training(tmp_path / "run", reference)
    assert all((p / MARKER).is_file() for _, p in checkpoints(tmp_path / "run"))
