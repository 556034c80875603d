from __future__ import annotations

from datetime import date

import pytest

from tasklet.errors import ValidationError
from tasklet.models import Priority, Task
from tasklet.scheduling import Rule, add_months, next_occurrence, occurrences, parse_rule, plan_week, spawn_next


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("daily", Rule(interval_days=1)),
        ("Weekdays", Rule(weekdays=frozenset(range(5)))),
        ("weekly:mon,thu", Rule(weekdays=frozenset({0, 3}))),
        ("weekly: Monday, friday", Rule(weekdays=frozenset({0, 4}))),
        ("monthly:31", Rule(month_day=31)),
        ("every 3 days", Rule(interval_days=3)),
        ("every  2 weeks", Rule(interval_days=14)),
    ],
)
def test_parse_rule(text: str, rule: Rule) -> None:
    assert parse_rule(text) == rule
    assert parse_rule(str(rule)) == rule


@pytest.mark.parametrize("text", ["hourly", "weekly:", "weekly:funday", "monthly:0", "monthly:32", "every 0 days"])
def test_parse_rule_rejects(text: str) -> None:
    with pytest.raises(ValidationError):
        parse_rule(text)


def test_add_months_clamps() -> None:
    assert add_months(date(2025, 1, 31), 1) == date(2025, 2, 28)
    assert add_months(date(2024, 1, 31), 1) == date(2024, 2, 29)
    assert add_months(date(2025, 11, 15), 3) == date(2026, 2, 15)
    assert add_months(date(2025, 3, 15), -3) == date(2024, 12, 15)


def test_next_occurrence_weekly_and_monthly() -> None:
    wednesday = date(2025, 3, 12)
    assert next_occurrence(parse_rule("weekly:mon,thu"), wednesday) == date(2025, 3, 13)
    assert next_occurrence(parse_rule("weekly:wed"), wednesday) == date(2025, 3, 19)
    assert next_occurrence(parse_rule("monthly:31"), date(2025, 2, 1)) == date(2025, 2, 28)
    assert next_occurrence(parse_rule("monthly:31"), date(2025, 2, 28)) == date(2025, 3, 31)


def test_occurrences_in_range() -> None:
    days = list(occurrences(parse_rule("weekdays"), date(2025, 3, 7), date(2025, 3, 14)))
    assert [day.day for day in days] == [10, 11, 12, 13, 14]


def test_spawn_next_skips_missed_occurrences() -> None:
    task = Task("water plants", due=date(2025, 3, 3), recurrence="weekly:mon")
    following = spawn_next(task.complete(), completed_on=date(2025, 3, 19))
    assert following is not None
    assert following.due == date(2025, 3, 24)
    assert following.id is None and following.is_open
    assert spawn_next(Task("one-off").complete(), date(2025, 3, 19)) is None


def test_plan_week_respects_capacity_and_due_dates() -> None:
    monday = date(2025, 3, 10)
    tasks = [
        Task("big", estimate_minutes=200, priority=Priority.HIGH),
        Task("due tuesday", estimate_minutes=120, due=date(2025, 3, 11)),
        Task("too big", estimate_minutes=500),
        Task("no estimate"),
        Task("small", estimate_minutes=30, priority=Priority.LOW),
    ]
    plans, unplanned = plan_week(tasks, monday, minutes_per_day=240)
    assert [plan.day.weekday() for plan in plans] == [0, 1, 2, 3, 4]
    assert [task.title for task in plans[0].tasks] == ["big", "small"]
    assert [task.title for task in plans[1].tasks] == ["due tuesday"]
    assert [task.title for task in unplanned] == ["too big"]
    assert all(plan.free_minutes >= 0 for plan in plans)
