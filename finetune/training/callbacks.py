"""Callbacks the trainer runs: the metrics log (`metrics.jsonl`) with real token counts.

The checkpoint marker callback lives with the rules it serves (`checkpoints.py`), the FIM evaluation callback with
evaluation (`evaluate/callback.py`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from finetune.io import write_text_atomic
from finetune.training.collate import TokenCounter


class MetricsCallback(TrainerCallback):
    """Adds real tokens seen and tokens/s to every log and appends each log line to `metrics.jsonl` (main process).

    Tokens are counted from the batches the model receives (`count_tokens`: padding excluded, any packing layout),
    on this process, times the number of processes.
    """

    def __init__(self, path: Path):
        self.path = path
        self.history: list[dict[str, Any]] = []
        self.tokens = TokenCounter()
        self.tokens_before = 0  # tokens seen before the checkpoint this run resumed from
        self._last: tuple[float, int] | None = None

    def resume_at(self, step: int) -> None:
        """Keep only what was logged up to the checkpoint the run starts from (main process).

        A killed run logged steps after its last checkpoint, and maybe half a line; the resumed run logs them
        again. At the checkpoint's own step, the loss and eval lines came before the save and stay; the end-of-run
        lines (train summary, final eval, completion scores) come again.
        """
        kept = [
            record
            for record in read_metrics(self.path, lenient=True)
            if record.get("step", 0) < step or (record.get("step") == step and ("loss" in record or "eval_loss" in record))
        ]
        write_text_atomic(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        self.tokens_before = next((r["tokens_seen"] for r in reversed(kept) if "tokens_seen" in r), 0)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._last = (time.perf_counter(), self.tokens_before)
        if model is not None:
            self.tokens.attach(model)

    def on_train_end(self, args, state, control, **kwargs):
        self.tokens.detach()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None:
            return
        logs.pop("num_tokens", None)  # TRL's count of the tokens in the input; tokens_seen is the one count we keep
        now = time.perf_counter()
        tokens = self.tokens_before + self.tokens.real * max(1, args.world_size)
        if "loss" in logs and self._last is not None:
            then, seen = self._last
            logs["tokens_seen"] = tokens
            if tokens > seen and now > then:
                logs["tokens_per_second"] = round((tokens - seen) / (now - then), 1)
            self._last = (now, tokens)
        if not state.is_world_process_zero:
            return
        record = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4), **logs}
        self.history.append(record)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


def read_metrics(path: Path, lenient: bool = False) -> list[dict[str, Any]]:
    """The records of metrics.jsonl; `lenient` skips lines a killed run left unfinished."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            if not lenient and line.strip():
                raise
    return records
