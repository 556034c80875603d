"""`finetune eval --repo` keeps its work as it goes: a killed eval leaves its rows and a partial results.json, the
same command resumes it (generating only what is missing) and ends with the files an uninterrupted eval writes;
other settings are refused in one line; a log shows each phase and the progress."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from finetune.cli.main import main
from finetune.evaluate import progress

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_REPO = ROOT / "data" / "sample-repo"

# Runs `finetune` main(args) in a fresh process that writes `marker` and sleeps after `after` journal rows and half
# of the next one (what a kill in the middle of a write leaves), so the test kills it at a known point. The
# package carries no test hook: the pause is patched in here.
PAUSING_EVAL = """
import json, os, sys, time
from pathlib import Path
from finetune.evaluate.journal import Journal
marker, after, args = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
append, rows = Journal.append, []

def append_then_pause(self, row):
    append(self, row)
    rows.append(row)
    if len(rows) == after:
        self._handle.write(json.dumps(row)[:25])
        self._handle.flush()
        marker.write_text(str(os.getpid()))
        time.sleep(600)

Journal.append = append_then_pause
from finetune.cli.main import main
sys.exit(main(args))
"""


def _args(model: Path, out: Path, *extra: str) -> list[str]:
    return ["eval", "--repo", str(SAMPLE_REPO), "--model", str(model), "--compare", str(model), "--per-category", "1",
            "--batch-size", "1", "--max-new-tokens", "12", "--context-chars", "1200", "--out", str(out), *extra]  # fmt: skip


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def _stable(results: dict) -> dict:
    """results.json without what depends on the session: timings, how many items were resumed, the resume note."""
    runs = [
        {**run, "generation": {k: v for k, v in run["generation"].items() if k not in _SESSION}} for run in results["runs"]
    ]
    return {**results, "runs": runs, "notes": [n for n in results["notes"] if "resumed" not in n]}


_SESSION = {"seconds", "tokens_per_second", "resumed", "completed_now"}


@pytest.fixture(scope="module")
def uninterrupted(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """An eval run in one go, and what it printed (stdout is not a terminal: plain lines, one per batch)."""
    out = tmp_path_factory.mktemp("whole") / "eval"
    log = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(log):
        patch.setattr(progress, "PLAIN_EVERY_S", 0.0)
        assert main(_args(tiny_model_dir, out)) == 0
    return out, log.getvalue()


def test_killed_eval_resumes_and_matches_an_uninterrupted_one(uninterrupted, tiny_model_dir: Path, tmp_path: Path) -> None:
    uninterrupted, _ = uninterrupted
    items = json.loads((uninterrupted / "results.json").read_text())["items"]
    after = items + 3  # the first model done, the second 3 items in
    out, marker = tmp_path / "eval", tmp_path / "paused"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", PAUSING_EVAL, str(marker), str(after), *_args(tiny_model_dir, out)],
        env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert marker.exists(), proc.stderr.read().decode() if proc.poll() is not None else "no pause in 300 s"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()

    partial = json.loads((out / "results.json").read_text())
    assert partial["complete"] is False
    assert [run["items_done"] for run in partial["runs"]] == [items, 2]  # as of the last finished batch
    lines = _lines(out / "predictions.jsonl")
    assert len(lines) == after + 1  # the rows, then half a line

    assert main(_args(tiny_model_dir, out)) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["complete"] is True
    first, second = (run["generation"] for run in results["runs"])
    assert (first["resumed"], first["completed_now"]) == (items, 0)  # not even loaded again
    assert (second["resumed"], second["completed_now"]) == (3, items - 3)
    expected = json.loads((uninterrupted / "results.json").read_text())
    assert _stable(results) == _stable(expected)
    assert (out / "predictions.jsonl").read_bytes() == (uninterrupted / "predictions.jsonl").read_bytes()
    assert (out / "report.md").is_file()


def test_resuming_with_other_settings_is_one_line(uninterrupted, tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "eval"
    out.mkdir()
    results = json.loads((uninterrupted[0] / "results.json").read_text())
    (out / "results.json").write_text(json.dumps({**results, "complete": False}))  # as a killed eval leaves it
    (out / "predictions.jsonl").write_text("")
    assert main(_args(tiny_model_dir, out, "--max-new-tokens", "13")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "settings differ" in err and "pass a new --out" in err
    assert main(_args(tiny_model_dir, out, "--per-category", "2")) == 2  # other items
    assert "items_sha256" in capsys.readouterr().err


def test_a_log_shows_every_phase_and_the_progress(uninterrupted) -> None:
    _, out = uninterrupted
    for phase in ("eval: building items", "eval: loading", "eval: scoring", "eval: writing results"):
        assert phase in out, phase
    progress_lines = [line for line in out.splitlines() if line.startswith("completing with")]
    assert progress_lines and "tokens/s" in progress_lines[-1] and "done in" in progress_lines[-1]
    assert any(" left" in line for line in progress_lines)  # the time left, while it runs
