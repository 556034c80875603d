from __future__ import annotations

import sqlite3
from dataclasses import replace
from datetime import date, datetime, timezone
from pathlib import Path

import pytest

from tasklet.errors import NotFoundError, StorageError
from tasklet.models import Status, Task
from tasklet.storage import SCHEMA_VERSION, TaskStore


def test_add_assigns_ids_and_round_trips(store: TaskStore, sample_tasks: list[Task]) -> None:
    stored = [store.add(task) for task in sample_tasks]
    assert [task.id for task in stored] == list(range(1, len(sample_tasks) + 1))
    for task in stored:
        assert store.get(task.id) == task


def test_add_refuses_stored_task(store: TaskStore) -> None:
    task = store.add(Task("once"))
    with pytest.raises(StorageError, match="use update"):
        store.add(task)


def test_update_replaces_tags(store: TaskStore) -> None:
    task = store.add(Task("x", tags=("a", "b")))
    store.update(task.with_tags(add=["c"], remove=["a"]))
    assert store.get(task.id).tags == ("b", "c")
    assert store.with_tag("a") == []


def test_update_and_delete_unknown_id(store: TaskStore) -> None:
    with pytest.raises(NotFoundError):
        store.update(replace(Task("ghost"), id=99))
    with pytest.raises(NotFoundError, match="no task with id 7"):
        store.delete(7)


def test_delete_cascades_to_tags(store: TaskStore) -> None:
    task = store.add(Task("x", tags=("gone",)))
    store.delete(task.id)
    assert store.tag_counts() == {}


def test_failed_transaction_rolls_back(store: TaskStore) -> None:
    with pytest.raises(RuntimeError), store.transaction() as db:
        db.execute("INSERT INTO tasks (title, created) VALUES ('half', '2025-01-01T00:00:00+00:00')")
        raise RuntimeError("boom")
    assert store.all() == []


def test_queries(store: TaskStore, sample_tasks: list[Task]) -> None:
    for task in sample_tasks:
        store.add(task)
    assert len(store.all(include_closed=False)) == 6
    due = store.due_between(date(2025, 3, 1), date(2025, 3, 31))
    assert [task.title for task in due] == ["Write quarterly report", "Buy groceries"]
    assert store.tag_counts()["work"] == 2  # the done one does not count
    assert store.stats() == {"todo": 5, "doing": 1, "done": 1, "cancelled": 0}


def test_search_is_literal(store: TaskStore) -> None:
    store.add(Task("grow 100% faster"))
    store.add(Task("grow 1000 faster"))
    store.add(Task("snake_case names", notes="under_score"))
    assert [task.title for task in store.search("100%")] == ["grow 100% faster"]
    assert [task.title for task in store.search("e_c")] == ["snake_case names"]
    assert store.search("   ") == []


def test_purge_closed(store: TaskStore) -> None:
    old = datetime(2024, 1, 1, tzinfo=timezone.utc)
    store.add(Task("old", status=Status.DONE, created=old, completed=old))
    store.add(Task("open"))
    assert store.purge_closed(datetime(2025, 1, 1, tzinfo=timezone.utc)) == 1
    assert [task.title for task in store.all()] == ["open"]


def test_schema_version_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "tasks.db"
    with TaskStore(path) as store:
        store.add(Task("persisted"))
        assert store.version == SCHEMA_VERSION
    with TaskStore(path) as store:
        assert [task.title for task in store.all()] == ["persisted"]


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    connection = sqlite3.connect(path)
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    connection.close()
    with pytest.raises(StorageError, match="upgrade"):
        TaskStore(path)
