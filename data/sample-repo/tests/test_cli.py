"""End-to-end: run the command against a temporary database and read what it printed."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from tasklet.cli import main

TODAY = "2025-03-12"


@pytest.fixture
def run(tmp_path: Path):
    env = {"HOME": str(tmp_path), "TASKLET_DB_PATH": str(tmp_path / "tasks.db")}

    def invoke(*args: str, language: str = "en") -> tuple[int, str]:
        out = io.StringIO()
        code = main(["--today", TODAY, *args], out=out, env={**env, "TASKLET_LANGUAGE": language})
        return code, out.getvalue()

    return invoke


def test_add_list_done(run) -> None:
    assert run("add", "Buy", "milk", "-t", "home", "-d", "today", "-e", "15m") == (0, "Added task 1: Buy milk\n")
    run("add", "Write report", "-p", "high", "-d", "2025-03-10", "-t", "work")
    code, listing = run("list")
    assert code == 0
    lines = listing.splitlines()
    assert lines[0].split() == ["id", "pri", "status", "due", "est", "title", "tags"]
    assert lines[2].split()[:4] == ["2", "high", "todo", "2025-03-10!"]
    assert lines[-1] == "2 tasks, 1 overdue"
    assert run("done", "1")[1] == "✔ Completed task 1: Buy milk\n"
    assert "Buy milk" not in run("list")[1]
    assert "Buy milk" in run("list", "--all")[1]


def test_recurring_task_comes_back(run) -> None:
    run("add", "Water plants", "-d", "2025-03-10", "-r", "weekly:mon")
    code, output = run("done", "1")
    assert code == 0
    assert output.splitlines()[1] == "↻ Next occurrence due 2025-03-17"
    assert "2025-03-17" in run("list")[1]


def test_translated_messages(run) -> None:
    assert run("add", "Einkaufen", language="de")[1] == "Aufgabe 1 hinzugefügt: Einkaufen\n"
    assert run("add", "买菜", language="zh_CN.UTF-8")[1] == "已添加任务 2：买菜\n"
    assert run("list", "tag:none", language="de")[1] == "Nichts zu tun. Schönen Tag noch! 🌞\n"


def test_errors_exit_with_one(run, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("done", "42")[0] == 1
    assert "no task with id 42" in capsys.readouterr().err
    assert run("list", "due<never")[0] == 1
    assert run("add", "x", "-r", "fortnightly")[0] == 1


def test_export_and_import_round_trip(run, tmp_path: Path) -> None:
    run("add", "Steuererklärung", "-t", "home", "-e", "2h")
    run("add", "Call the bank", "-p", "urgent")
    target = tmp_path / "out.json"
    assert run("export", "-f", "json", "-o", str(target))[1] == f"wrote 2 tasks to {target}\n"
    data = json.loads(target.read_text(encoding="utf-8"))
    assert [item["title"] for item in data] == ["Steuererklärung", "Call the bank"]
    assert not target.with_name("out.json.part").exists()
    assert run("import", str(target)) == (0, "imported 2 tasks\n")
    assert run("stats")[1].startswith("todo: 4")


def test_plan(run) -> None:
    run("add", "Deep work", "-e", "3h", "-p", "high")
    run("add", "Emails", "-e", "2h")
    code, output = run("plan", "--minutes", "240")
    assert code == 0
    assert output.splitlines()[0] == "Wed 12 Mar  (3h of 4h)"
    assert "Emails" in output.splitlines()[-1]
