"""Eval results kept as they come: each finished test or completion is a line appended (and flushed) to
predictions.jsonl and results.json says the eval is partial, so an eval that is killed keeps what it had and the
same command with the same --out picks up where it stopped instead of starting over.
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

from finetune.errors import UserError
from finetune.io import write_json_atomic, write_jsonl_atomic


def file_digest(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Journal:
    """predictions.jsonl and results.json of one eval in `out`; `key` says what a result depends on.

    Every journal line carries `run` (the model's number) and `item` (the task's or item's index).
    """

    def __init__(self, out: Path, key: dict) -> None:
        self.out, self.key = out, key
        self.predictions = out / "predictions.jsonl"
        self.results = out / "results.json"
        self._lock = threading.Lock()
        self._handle = None

    def resume(self) -> dict[tuple[int, int], dict]:
        """Rows an interrupted eval with the same key already wrote, by (run, item); {} when starting afresh."""
        try:
            previous = json.loads(self.results.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            previous = None
        rows: dict[tuple[int, int], dict] = {}
        if isinstance(previous, dict) and previous.get("complete") is False:
            old = previous.get("resume_key")
            if old != self.key:
                changed = sorted(k for k in set(old or {}) | set(self.key) if (old or {}).get(k) != self.key.get(k))
                raise UserError(
                    f"--out {self.out} holds an interrupted eval with other inputs ({', '.join(changed)} differ): "
                    f"rerun with the same options to resume it, pass a new --out, or delete {self.results} to start over"
                )
            rows = self._read_rows()
        self.out.mkdir(parents=True, exist_ok=True)
        # Rewrite what is kept (drops a line cut short by a kill), then append to it.
        write_jsonl_atomic(self.predictions, [rows[k] for k in sorted(rows)])
        self._handle = open(self.predictions, "a", encoding="utf-8")  # noqa: SIM115 - held open until finish()
        return rows

    def _read_rows(self) -> dict[tuple[int, int], dict]:
        rows = {}
        try:
            lines = self.predictions.read_text(encoding="utf-8").splitlines()
        except OSError:
            return rows
        for line in lines:
            try:
                row = json.loads(line)
                rows[(int(row["run"]), int(row["item"]))] = row
            except (ValueError, KeyError, TypeError):
                continue  # the last line of a killed eval may be cut short
        return rows

    def append(self, row: dict) -> None:
        """One finished test, on disk before the next (flushed: a killed process loses nothing written here)."""
        with self._lock:
            self._handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            self._handle.flush()

    def partial(self, summary: dict) -> None:
        write_json_atomic(self.results, {**summary, "complete": False, "resume_key": self.key})

    def finish(self, summary: dict, rows: list[dict]) -> list[Path]:
        """The final files: predictions.jsonl replaced by `rows`, then results.json marked complete."""
        self.close()
        write_jsonl_atomic(self.predictions, rows)
        return [self.predictions, write_json_atomic(self.results, {**summary, "complete": True, "resume_key": self.key})]

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
