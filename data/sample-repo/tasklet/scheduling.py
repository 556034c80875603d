"""Recurring tasks and a simple weekly planner.

Recurrence rules are short strings so they fit in one database column and can be typed on the command line:

==================  ===============================================
``daily``           every day
``weekdays``        Monday to Friday
``weekly:mon,thu``  on the listed weekdays
``monthly:31``      on that day of the month (clamped: 31 -> Feb 28)
``every 3 days``    a fixed interval, also ``every 2 weeks``
==================  ===============================================
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import date, timedelta

from tasklet.errors import ValidationError
from tasklet.models import Task

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_EVERY = re.compile(r"^every\s+(\d+)\s+(day|week)s?$")


@dataclass(frozen=True)
class Rule:
    """A parsed recurrence rule. Exactly one of the fields describes the pattern."""

    weekdays: frozenset[int] = frozenset()
    month_day: int | None = None
    interval_days: int | None = None

    def __str__(self) -> str:
        if self.interval_days is not None:
            if self.interval_days % 7 == 0 and self.interval_days > 7:
                return f"every {self.interval_days // 7} weeks"
            return "daily" if self.interval_days == 1 else f"every {self.interval_days} days"
        if self.month_day is not None:
            return f"monthly:{self.month_day}"
        if self.weekdays == frozenset(range(5)):
            return "weekdays"
        return "weekly:" + ",".join(WEEKDAYS[day] for day in sorted(self.weekdays))


def parse_rule(text: str) -> Rule:
    """Parse a recurrence rule; raises ValidationError naming what was wrong."""
    value = " ".join(text.strip().lower().split())
    if value == "daily":
        return Rule(interval_days=1)
    if value == "weekdays":
        return Rule(weekdays=frozenset(range(5)))
    if value.startswith("weekly:"):
        return Rule(weekdays=_parse_weekdays(value.removeprefix("weekly:")))
    if value.startswith("monthly:"):
        return Rule(month_day=_parse_month_day(value.removeprefix("monthly:")))
    match = _EVERY.match(value)
    if match:
        count, unit = int(match.group(1)), match.group(2)
        if count < 1:
            raise ValidationError("recurrence", "the interval must be at least 1")
        return Rule(interval_days=count * (7 if unit == "week" else 1))
    raise ValidationError("recurrence", f"cannot understand {text!r}")


def _parse_weekdays(text: str) -> frozenset[int]:
    days = set()
    for part in text.split(","):
        name = part.strip()[:3]
        if name not in WEEKDAYS:
            raise ValidationError("recurrence", f"unknown weekday {part.strip()!r}")
        days.add(WEEKDAYS.index(name))
    return frozenset(days)


def _parse_month_day(text: str) -> int:
    if not text.strip().isdigit() or not 1 <= int(text) <= 31:
        raise ValidationError("recurrence", f"day of month must be 1-31, got {text!r}")
    return int(text)


def clamp_day(year: int, month: int, day: int) -> date:
    """`day` of the month, or the month's last day when it is shorter."""
    return date(year, month, min(day, calendar.monthrange(year, month)[1]))


def add_months(start: date, months: int, day: int | None = None) -> date:
    """`start` moved by whole months, keeping (or clamping) the day of the month."""
    index = start.year * 12 + (start.month - 1) + months
    year, month = divmod(index, 12)
    return clamp_day(year, month + 1, day or start.day)


def next_occurrence(rule: Rule, after: date) -> date:
    """The first date strictly after `after` on which the rule fires."""
    if rule.interval_days is not None:
        return after + timedelta(days=rule.interval_days)
    if rule.month_day is not None:
        candidate = clamp_day(after.year, after.month, rule.month_day)
        return candidate if candidate > after else add_months(after, 1, rule.month_day)
    day = after + timedelta(days=1)
    while day.weekday() not in rule.weekdays:
        day += timedelta(days=1)
    return day


def occurrences(rule: Rule, start: date, until: date) -> Iterator[date]:
    """Every date in (start, until] on which the rule fires, in order."""
    day = next_occurrence(rule, start)
    while day <= until:
        yield day
        day = next_occurrence(rule, day)


def spawn_next(task: Task, completed_on: date) -> Task | None:
    """The next instance of a recurring task after it was completed, or None for a one-off task.

    The next due date counts from the old due date when there was one, so a weekly chore done late stays on
    its weekday; when that date has already passed it skips ahead instead of piling up overdue copies.
    """
    if not task.recurrence:
        return None
    rule = parse_rule(task.recurrence)
    anchor = task.due or completed_on
    due = next_occurrence(rule, anchor)
    while due <= completed_on:
        due = next_occurrence(rule, due)
    return replace(task.reopen(), id=None, due=due)


@dataclass
class DayPlan:
    day: date
    capacity: int
    tasks: list[Task]

    @property
    def planned_minutes(self) -> int:
        return sum(task.estimate_minutes or 0 for task in self.tasks)

    @property
    def free_minutes(self) -> int:
        return self.capacity - self.planned_minutes


def plan_week(
    tasks: Iterable[Task], start: date, *, minutes_per_day: int = 240, workdays_only: bool = True
) -> tuple[list[DayPlan], list[Task]]:
    """Spread open, estimated tasks over the seven days from `start`.

    Greedy: tasks are taken by priority, then due date, and each goes on the earliest day that still has room
    and is not after its due date (an overdue task can only go on the first day). Returns the plan and what did
    not fit.
    """
    if minutes_per_day <= 0:
        raise ValidationError("minutes_per_day", "must be positive")
    days = [start + timedelta(days=offset) for offset in range(7)]
    if workdays_only:
        days = [day for day in days if day.weekday() < 5]
    plans = [DayPlan(day, minutes_per_day, []) for day in days]
    candidates = [task for task in tasks if task.is_open and task.estimate_minutes]
    candidates.sort(key=lambda task: (-int(task.priority), task.due or date.max, task.title))
    unplanned: list[Task] = []
    for task in candidates:
        slot = _first_fit(plans, task)
        if slot is None:
            unplanned.append(task)
        else:
            slot.tasks.append(task)
    return plans, unplanned


def _first_fit(plans: list[DayPlan], task: Task) -> DayPlan | None:
    minutes = task.estimate_minutes or 0
    for index, plan in enumerate(plans):
        late = task.due is not None and plan.day > task.due
        if late and index > 0:
            return None
        if plan.free_minutes >= minutes:
            return plan
    return None
