"""`finetune` processes that stop at one phase so a test can kill -9 them exactly there (tests/training/test_kill.py only).

    python tests/kill_probe.py

reads one JSON request a line ({"args", "phase", "marker", "log", "cwd", "env"}), forks a process that runs
`finetune` main(args) with its output in `log`, answers {"pid": ...}, and writes the exit status of each process to
`<log>.exit` when it ends. The server imports torch, transformers, PEFT and TRL once (about 11 s of every start on
two cores), so each launch is a fresh process without that cost; the killed process is a separate process as with
`python -m finetune`. At PHASE the process writes its pid to `marker` and sleeps; the test kills it. The phases are
patched in here, so the package itself carries no test hook:

    prepare        after the prepared train split is written into the cache's temporary folder
    step:N         after optimizer step N, before its checkpoint (if any) is saved
    checkpoint:N   in the middle of writing checkpoint-N: weights written, optimizer.pt cut in half, no
                   trainer_state.json yet
    final          in the middle of the final save: the weights file in the run's root cut in half
    rename         between the two renames that replace a previous run (previous run moved to `.old`)
    merge          after the merged model is written into its temporary folder, before the rename
    none           no pause
"""

from __future__ import annotations

import json
import os
import select
import sys
import time
import traceback
from pathlib import Path


def _pause(marker: Path) -> None:
    marker.write_text(str(os.getpid()))
    time.sleep(600)
    os._exit(99)  # never reached when the test kills us


def _cut_in_half(path: Path) -> None:
    with path.open("r+b") as handle:
        handle.truncate(path.stat().st_size // 2)


def install(phase: str, marker: Path) -> None:
    name, _, arg = phase.partition(":")
    if name == "prepare":
        from datasets import Dataset

        save = Dataset.save_to_disk

        def save_then_pause(self, path, *args, **kwargs):
            save(self, path, *args, **kwargs)
            if str(path).endswith(".partial/train"):
                _pause(marker)

        Dataset.save_to_disk = save_then_pause
    elif name == "step":
        from finetune.training.callbacks import MetricsCallback

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == int(arg):
                _pause(marker)

        MetricsCallback.on_step_end = on_step_end
    elif name == "checkpoint":
        from transformers import Trainer

        save = Trainer._save_optimizer_and_scheduler

        def half_saved(self, output_dir):
            save(self, output_dir)
            if self.state.global_step == int(arg):
                _cut_in_half(Path(output_dir) / "optimizer.pt")
                _pause(marker)

        Trainer._save_optimizer_and_scheduler = half_saved
    elif name == "final":
        import finetune.training.trainer

        save_final = finetune.training.trainer.save_final_model

        def final_half_saved(trainer, output_dir):
            save_final(trainer, output_dir)
            weights = next(p for p in Path(output_dir).glob("*.safetensors"))
            _cut_in_half(weights)
            _pause(marker)

        finetune.training.trainer.save_final_model = final_half_saved
    elif name == "rename":
        rename = Path.rename

        def rename_then_pause(self, target):
            result = rename(self, target)
            if str(target).endswith(".old"):
                _pause(marker)
            return result

        Path.rename = rename_then_pause
    elif name == "merge":
        import finetune.merge.run

        check = finetune.merge.run._check_plain_config

        def written_then_pause(directory):
            check(directory)
            _pause(marker)

        finetune.merge.run._check_plain_config = written_then_pause
    elif name != "none":
        raise SystemExit(f"unknown phase {phase}")


def _child(request: dict) -> None:
    """In the forked process: become `finetune ARGS` with the request's output, directory and environment."""
    code = 1
    try:
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        sys.stdout.reconfigure(line_buffering=True)  # the test watches the log for progress
        os.chdir(request["cwd"])
        os.environ.update(request["env"])
        sys.argv = ["finetune", *request["args"]]
        install(request["phase"], Path(request["marker"]))
        from finetune.cli.main import main

        code = main(request["args"])
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve() -> None:
    import datasets  # noqa: F401  (the heavy imports, once, before any fork)
    import transformers  # noqa: F401
    import trl  # noqa: F401

    import finetune.cli.main  # noqa: F401
    import finetune.merge.run  # noqa: F401
    import finetune.training.trainer  # noqa: F401

    logs: dict[int, str] = {}
    print(json.dumps({"ready": True}), flush=True)
    while True:
        readable, _, _ = select.select([sys.stdin], [], [], 0.05)
        if readable:
            line = sys.stdin.readline()
            if not line:  # the test session ended: end what a failed test left paused
                for pid in logs:
                    os.kill(pid, 9)
                return
            request = json.loads(line)
            pid = os.fork()
            if pid == 0:
                _child(request)
            logs[pid] = request["log"]
            print(json.dumps({"pid": pid}), flush=True)
        while logs:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            Path(logs.pop(pid) + ".exit").write_text(str(os.waitstatus_to_exitcode(status)))


if __name__ == "__main__":
    serve()
