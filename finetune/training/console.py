"""One aligned, human line per logging step, in place of transformers' raw log dicts and tqdm bar.

The full records (every number transformers and TRL log) still go to metrics.jsonl; the console gets what a person
watches: step/total, loss, eval loss, learning rate, real tokens per second, elapsed time and the time left. Plain
lines work the same in a terminal and in a log file.
"""

from __future__ import annotations

import time
from typing import Any

from transformers import TrainerCallback


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60:02d}:{rest % 60:02d}"


def step_line(step: int, total: int, logs: dict[str, Any], elapsed: float, steps_done: int) -> str | None:
    """The line for one log record, or None for records a person does not need (the end-of-run summary)."""
    width = len(str(total))
    head = f"step {step:>{width}}/{total}"
    if "loss" in logs:
        parts = [head, f"loss {logs['loss']:.4f}"]
        if "learning_rate" in logs:
            parts.append(f"lr {logs['learning_rate']:.2e}")
        if "tokens_per_second" in logs:
            parts.append(f"{logs['tokens_per_second']:>8,.0f} tok/s")
        left = (total - step) * elapsed / steps_done if steps_done > 0 and total > step else 0.0
        parts.append(f"{_clock(elapsed)} elapsed, {_clock(left)} left")
        return "  ".join(parts)
    if "eval_loss" in logs:
        return f"{head}  eval loss {logs['eval_loss']:.4f}"
    return None


class ConsoleLines(TrainerCallback):
    """Prints `step_line` for each log on the main process (after MetricsCallback has added tokens/s)."""

    def __init__(self, console) -> None:
        self.console = console
        self._start: tuple[float, int] | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self._start = (time.perf_counter(), state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or logs is None or self._start is None:
            return
        began, first_step = self._start
        line = step_line(state.global_step, state.max_steps, logs, time.perf_counter() - began,
                         state.global_step - first_step)  # fmt: skip
        if line is not None:
            self.console.print(line, highlight=False, soft_wrap=True)
