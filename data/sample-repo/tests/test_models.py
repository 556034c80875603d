from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, timedelta, timezone

import pytest

from tasklet.errors import ValidationError
from tasklet.models import Priority, Status, Task, normalize_tag, sort_key


@pytest.mark.parametrize(
    ("text", "expected"),
    [("high", Priority.HIGH), ("H", Priority.HIGH), ("u", Priority.URGENT), ("3", Priority.HIGH),
     ("!", Priority.NORMAL), ("!!!", Priority.URGENT), ("!!!!!", Priority.URGENT), (1, Priority.LOW)],
)  # fmt: skip
def test_priority_parse(text: str | int, expected: Priority) -> None:
    assert Priority.parse(text) is expected


@pytest.mark.parametrize("text", ["", "5", "medium", "0"])
def test_priority_parse_rejects(text: str) -> None:
    with pytest.raises(ValidationError):
        Priority.parse(text)


def test_status_aliases() -> None:
    assert Status.parse("WIP") is Status.DOING
    assert Status.parse("canceled") is Status.CANCELLED
    assert Status.parse(" open ") is Status.TODO
    with pytest.raises(ValidationError, match="unknown status"):
        Status.parse("paused")


def test_title_whitespace_is_collapsed() -> None:
    assert Task("  pay \t the\nrent ").title == "pay the rent"


def test_tags_are_normalized_and_sorted() -> None:
    task = Task("x", tags=("#Work", "home", "work", "Deep Work"))
    assert task.tags == ("deep-work", "home", "work")


@pytest.mark.parametrize("tag", ["", "#", "with/slash", "x" * 40, "-leading"])
def test_bad_tags(tag: str) -> None:
    with pytest.raises(ValidationError, match="invalid tag"):
        normalize_tag(tag)


def test_empty_title_is_rejected() -> None:
    with pytest.raises(ValidationError, match="title: must not be empty"):
        Task("   ")


def test_done_needs_completion_time() -> None:
    with pytest.raises(ValidationError, match="completion time"):
        Task("x", status=Status.DONE)


def test_complete_and_reopen(today: date) -> None:
    task = Task("x", due=today)
    done = task.complete(datetime.now(timezone.utc) + timedelta(seconds=1))
    assert done.status is Status.DONE and done.completed is not None
    assert not done.is_overdue(today + timedelta(days=5))
    with pytest.raises(ValidationError, match="already done"):
        done.complete()
    assert done.reopen() == replace(task, status=Status.TODO)


def test_start_only_from_todo() -> None:
    started = Task("x").start()
    assert started.status is Status.DOING
    with pytest.raises(ValidationError):
        started.start()


def test_overdue_and_days_left(today: date) -> None:
    task = Task("x", due=today - timedelta(days=2))
    assert task.is_overdue(today)
    assert task.days_left(today) == -2
    assert not Task("y", due=today).is_overdue(today)
    assert Task("z").days_left(today) is None


def test_with_tags() -> None:
    task = Task("x", tags=("a", "b"))
    assert task.with_tags(add=["C"], remove=["#a"]).tags == ("b", "c")


def test_dict_round_trip(sample_tasks: list[Task]) -> None:
    for task in sample_tasks:
        assert Task.from_dict(task.to_dict()) == task


def test_from_dict_minimal() -> None:
    task = Task.from_dict({"title": "only a title"})
    assert task.priority is Priority.NORMAL and task.status is Status.TODO and task.tags == ()


def test_sort_key_orders_open_then_priority_then_due(sample_tasks: list[Task], today: date) -> None:
    ordered = [task.title for task in sorted(sample_tasks, key=lambda task: sort_key(task, today))]
    assert ordered[0] == "Renew passport"
    assert ordered[1] == "Write quarterly report"
    assert ordered[-1] == "Submit expenses"
