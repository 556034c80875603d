"""A tiny filter language for listing tasks.

A query is a list of terms that must all hold. Examples::

    status:todo tag:work                 open work tasks that have not been started
    priority>=high due<=+7d              important tasks due within a week
    is:overdue -tag:someday              overdue, unless tagged someday
    "quarterly report" has:estimate      the phrase in title or notes, with an estimate

A leading ``-`` negates a term. Bare words and quoted phrases search title and notes, case-insensitively.
Dates are ISO (``2025-03-01``), ``today``, ``tomorrow``, ``yesterday`` or relative (``+3d``, ``-2w``).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, timedelta

from tasklet.errors import QueryError, ValidationError
from tasklet.models import Priority, Status, Task

_TOKEN = re.compile(r'\s*(-?)(?:"([^"]*)"|([^\s"]+))')
_COMPARISON = re.compile(r"^([a-z_]+)(<=|>=|!=|<|>|=|:)(.+)$")
_RELATIVE = re.compile(r"^([+-])(\d+)([dw])$")
_OPERATORS: dict[str, Callable[[object, object], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "=": operator.eq,
    ":": operator.eq,
    "!=": operator.ne,
}
_FLAGS = {
    "open": lambda task, today: task.is_open,
    "closed": lambda task, today: not task.is_open,
    "overdue": lambda task, today: task.is_overdue(today),
    "recurring": lambda task, today: bool(task.recurrence),
    "started": lambda task, today: task.status is Status.DOING,
}
_HAS = {
    "due": lambda task: task.due is not None,
    "estimate": lambda task: task.estimate_minutes is not None,
    "notes": lambda task: bool(task.notes.strip()),
    "tags": lambda task: bool(task.tags),
}


@dataclass(frozen=True)
class Term:
    """One condition of a query; `column` is where it started, for error messages."""

    field: str
    op: str
    value: str
    negated: bool = False
    column: int = 0

    def matches(self, task: Task, today: date) -> bool:
        return self._test(task, today) != self.negated

    def _test(self, task: Task, today: date) -> bool:
        if self.field == "text":
            needle = self.value.casefold()
            return needle in task.title.casefold() or needle in task.notes.casefold()
        if self.field == "tag":
            return self.value.lstrip("#").lower() in task.tags
        if self.field == "is":
            return _FLAGS[self.value](task, today)
        if self.field == "has":
            return _HAS[self.value](task)
        compare = _OPERATORS[self.op]
        if self.field == "status":
            return compare(task.status.value, Status.parse(self.value).value)
        if self.field == "priority":
            return compare(int(task.priority), int(Priority.parse(self.value)))
        if self.field == "due":
            return task.due is not None and compare(task.due, resolve_date(self.value, today))
        if self.field == "estimate":
            return task.estimate_minutes is not None and compare(task.estimate_minutes, int(self.value))
        raise AssertionError(f"unchecked field {self.field}")


@dataclass(frozen=True)
class Query:
    """All terms must match. An empty query matches every task."""

    terms: tuple[Term, ...] = ()
    source: str = ""

    def matches(self, task: Task, today: date) -> bool:
        return all(term.matches(task, today) for term in self.terms)

    def filter(self, tasks: Iterable[Task], today: date) -> list[Task]:
        return [task for task in tasks if self.matches(task, today)]

    @property
    def wants_closed(self) -> bool:
        """Whether the query can match done or cancelled tasks (otherwise storage may skip them)."""
        for term in self.terms:
            if term.field == "status" and not term.negated and term.op in (":", "="):
                return not Status.parse(term.value).is_open
            if term.field == "is" and term.value == "closed" and not term.negated:
                return True
        return not any(term.field == "is" and term.value == "open" and not term.negated for term in self.terms)


def resolve_date(text: str, today: date) -> date:
    """An ISO date, a named day, or an offset from today."""
    value = text.strip().lower()
    named = {"today": 0, "tomorrow": 1, "yesterday": -1}
    if value in named:
        return today + timedelta(days=named[value])
    match = _RELATIVE.match(value)
    if match:
        sign, count, unit = match.groups()
        days = int(count) * (7 if unit == "w" else 1)
        return today + timedelta(days=days if sign == "+" else -days)
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"not a date: {text!r}") from None


def parse_query(text: str) -> Query:
    """Parse `text` into a Query, raising QueryError with the column of the first problem."""
    terms = []
    position = 0
    while position < len(text):
        if not text[position:].strip():
            break
        match = _TOKEN.match(text, position)
        if match is None:
            raise QueryError("unterminated quote", text.index('"', position))
        negated, phrase, word = match.groups()
        column = match.start(2) if phrase is not None else match.start(3)
        terms.append(_parse_term(phrase, word, bool(negated), column))
        position = match.end()
    return Query(tuple(terms), text)


def _parse_term(phrase: str | None, word: str | None, negated: bool, column: int) -> Term:
    if phrase is not None:
        return Term("text", ":", phrase, negated, column)
    assert word is not None
    match = _COMPARISON.match(word)
    if match is None:
        return Term("text", ":", word, negated, column)
    field, op, value = match.groups()
    term = Term(field, op, value, negated, column)
    _check(term)
    return term


def _check(term: Term) -> None:
    """Validate a term once, at parse time, so matching never fails half-way through a listing."""
    field, op, value = term.field, term.op, term.value
    try:
        if field == "tag" and op == ":":
            return
        if field == "is" and op == ":" and value in _FLAGS:
            return
        if field == "has" and op == ":" and value in _HAS:
            return
        if field == "status" and op in (":", "=", "!="):
            Status.parse(value)
            return
        if field == "priority":
            Priority.parse(value)
            return
        if field == "due":
            resolve_date(value, date.today())
            return
        if field == "estimate" and value.isdigit():
            return
    except (ValueError, ValidationError) as exc:
        raise QueryError(str(exc), term.column) from None
    raise QueryError(f"cannot use {field}{op}{value}", term.column)
