"""Infilling benchmarks in HumanEval-infilling's JSON Lines format, scored by running their tests.

Each line holds `task_id`, `prompt` (the code before the gap), `suffix`, `canonical_solution` (the middle),
`test` (defines `check(candidate)`) and `entry_point`; the file may be gzipped. A completion passes when
`prompt + completion + suffix + test + check(entry_point)` exits cleanly in the sandbox. With one greedy sample
per task, pass@1 is the fraction of tasks that pass.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path

from finetune.errors import UserError

FIELDS = ("task_id", "prompt", "suffix", "canonical_solution", "test", "entry_point")


@dataclass(frozen=True)
class Task:
    task_id: str
    prompt: str
    suffix: str
    canonical_solution: str
    test: str
    entry_point: str

    @property
    def truncation(self) -> str:
        """Single-line tasks keep the first line of a completion; other tasks are scored as generated."""
        return "line" if "SingleLine" in self.task_id else "none"

    def program(self, completion: str) -> str:
        """The program whose clean exit means the completion is correct."""
        return f"{self.prompt}{completion}{self.suffix}\n\n{self.test}\n\ncheck({self.entry_point})\n"


def load_tasks(path: str | Path, limit: int | None = None) -> list[Task]:
    """Tasks of a HumanEval-infilling file (.jsonl or .jsonl.gz); a bad line is a one-line UserError."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"benchmark file {path} not found: pass a HumanEval-infilling .jsonl or .jsonl.gz file")
    opener = gzip.open if file.read_bytes()[:2] == b"\x1f\x8b" else open
    tasks: list[Task] = []
    try:
        with opener(file, "rt", encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                tasks.append(_task(json.loads(line), file, number))
                if limit is not None and len(tasks) >= limit:
                    break
    except json.JSONDecodeError:
        raise UserError(f"{file} line {number} is not valid JSON: fix or remove that line") from None
    except (UnicodeDecodeError, OSError, EOFError) as exc:
        raise UserError(f"{file} cannot be read as UTF-8 JSON Lines ({exc}): pass a .jsonl or .jsonl.gz file") from None
    if not tasks:
        raise UserError(f"{file} holds no tasks: it must have one JSON object per line with fields {', '.join(FIELDS)}")
    return tasks


def _task(record: object, file: Path, number: int) -> Task:
    if not isinstance(record, dict):
        raise UserError(f"{file} line {number} is not a JSON object: each line must hold one task")
    missing = [name for name in FIELDS if not isinstance(record.get(name), str)]
    if missing:
        raise UserError(
            f"{file} line {number} lacks the field(s) {', '.join(missing)} (text): every task needs {', '.join(FIELDS)}"
        )
    return Task(**{name: record[name] for name in FIELDS})


def pass_at_1(passed: list[bool]) -> float:
    """The fraction of tasks whose one completion passed."""
    return sum(passed) / len(passed) if passed else 0.0
