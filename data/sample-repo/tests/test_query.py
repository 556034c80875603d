from __future__ import annotations

from datetime import date

import pytest

from tasklet.errors import QueryError
from tasklet.models import Task
from tasklet.query import parse_query, resolve_date


def titles(query: str, tasks: list[Task], today: date) -> list[str]:
    return [task.title for task in parse_query(query).filter(tasks, today)]


def test_empty_query_matches_everything(sample_tasks: list[Task], today: date) -> None:
    assert len(titles("", sample_tasks, today)) == len(sample_tasks)
    assert parse_query("   ").terms == ()


def test_tags_and_negation(sample_tasks: list[Task], today: date) -> None:
    assert titles("tag:work is:open", sample_tasks, today) == ["Write quarterly report", "Fix flaky CI job"]
    assert "Buy groceries" not in titles("-tag:errands", sample_tasks, today)


def test_priority_and_status(sample_tasks: list[Task], today: date) -> None:
    assert titles("priority>=high", sample_tasks, today) == ["Write quarterly report", "Renew passport"]
    assert titles("status:wip", sample_tasks, today) == ["Fix flaky CI job"]
    assert titles("status!=todo", sample_tasks, today) == ["Fix flaky CI job", "Submit expenses"]


def test_due_dates(sample_tasks: list[Task], today: date) -> None:
    assert titles("is:overdue", sample_tasks, today) == ["Write quarterly report"]
    assert titles("due<=+7d", sample_tasks, today) == ["Write quarterly report", "Buy groceries"]
    assert titles("due:today", sample_tasks, today) == ["Buy groceries"]
    assert titles("-has:due", sample_tasks, today) == [
        "Read 'Designing Data-Intensive Applications'",
        "Fix flaky CI job",
        "Submit expenses",
    ]


def test_text_search_covers_notes_and_phrases(sample_tasks: list[Task], today: date) -> None:
    assert titles('"quarterly REPORT"', sample_tasks, today) == ["Write quarterly report"]
    assert titles("belege", sample_tasks, today) == ["Steuererklärung abgeben"]
    assert titles("estimate>60 flaky", sample_tasks, today) == ["Fix flaky CI job"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("today", date(2025, 3, 12)), ("Tomorrow", date(2025, 3, 13)), ("+2w", date(2025, 3, 26)),
     ("-3d", date(2025, 3, 9)), ("2025-12-24", date(2025, 12, 24))],
)  # fmt: skip
def test_resolve_date(text: str, expected: date, today: date) -> None:
    assert resolve_date(text, today) == expected


@pytest.mark.parametrize(
    ("text", "column"),
    [("tag:work due<someday", 10), ('status:todo "open quote', 13), ("is:sleepy", 1), ("priority:9", 1),
     ("tag<work", 1)],
)  # fmt: skip
def test_errors_point_at_the_term(text: str, column: int) -> None:
    with pytest.raises(QueryError) as info:
        parse_query(text)
    assert info.value.position + 1 == column


def test_wants_closed() -> None:
    assert parse_query("status:done").wants_closed
    assert not parse_query("status:todo").wants_closed
    assert not parse_query("is:open tag:x").wants_closed
    assert parse_query("tag:x").wants_closed
