"""What an eval is doing, while it does it: a line per phase, and a bar per model (items, tokens/s, time left).

On a terminal the bars are rich's. In a log (stdout not a terminal, where rich would print nothing until the end)
the same facts come as plain lines: one when a task starts, then one every `PLAIN_EVERY_S` seconds and one when it
ends, so a long eval is never silent.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

PLAIN_EVERY_S = 30.0


@dataclass
class _Task:
    description: str
    total: int
    unit: str
    completed: int = 0
    tokens: int = 0
    began: float = field(default_factory=time.monotonic)
    done_before: int = 0  # completed when the task started (a resumed eval): not part of this session's speed
    printed: float = field(default_factory=time.monotonic)

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.began, 1e-9)
        parts = [f"{self.description}: {self.completed}/{self.total} {self.unit}"]
        if self.tokens:
            parts.append(f"{_rate(self.tokens / elapsed)} tokens/s")
        new = self.completed - self.done_before
        if new > 0 and self.completed < self.total:
            parts.append(f"{_duration(elapsed / new * (self.total - self.completed))} left")
        elif self.completed >= self.total:
            parts.append(f"done in {_duration(elapsed)}")
        return ", ".join(parts)


def _rate(per_second: float) -> str:
    return f"{per_second:.0f}" if per_second >= 10 else f"{per_second:.1f}"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class EvalProgress:
    """`phase(text)` prints a line; `add_task`/`advance` drive one bar per model (or per test run)."""

    def __init__(self, console: Any) -> None:
        self.console = console
        self._tasks: list[_Task] = []
        self._rich_ids: list[Any] = []
        self._lock = threading.Lock()  # benchmark tests finish on the sandbox's threads
        self._rich = None
        if console.is_terminal:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._rich = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=console,
            )

    def __enter__(self) -> EvalProgress:
        if self._rich is not None:
            self._rich.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._rich is not None:
            self._rich.stop()

    def phase(self, text: str) -> None:
        self.console.print(f"[dim]eval:[/dim] {text}")

    def add_task(self, description: str, total: int, completed: int = 0, unit: str = "items") -> int:
        task = _Task(description, total, unit, completed, done_before=completed)
        self._tasks.append(task)
        if self._rich is not None:
            self._rich_ids.append(self._rich.add_task(description, total=total, completed=completed, rate=""))
        else:
            self.console.print(task.line(), highlight=False, markup=False)
        return len(self._tasks) - 1

    def advance(self, task_id: int, n: int = 1, tokens: int = 0) -> None:
        with self._lock:
            self._advance(self._tasks[task_id], task_id, n, tokens)

    def _advance(self, task: _Task, task_id: int, n: int, tokens: int) -> None:
        task.completed += n
        task.tokens += tokens
        if self._rich is not None:
            elapsed = max(time.monotonic() - task.began, 1e-9)
            rate = f"{_rate(task.tokens / elapsed)} tokens/s" if task.tokens else ""
            self._rich.update(self._rich_ids[task_id], advance=n, rate=rate)
            return
        now = time.monotonic()
        if now - task.printed >= PLAIN_EVERY_S or task.completed >= task.total:
            task.printed = now
            self.console.print(task.line(), highlight=False, markup=False)
