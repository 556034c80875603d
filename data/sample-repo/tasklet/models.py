"""The Task record and the rules every task obeys.

Tasks are immutable: every change (completing, re-tagging, postponing) returns a new `Task`. That keeps the
storage layer honest - it always writes a whole, validated record - and makes undo trivial to add later.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta, timezone
from enum import Enum, IntEnum
from typing import Any

from tasklet.errors import ValidationError

MAX_TITLE_LENGTH = 200
MAX_TAGS = 16
_TAG_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")


class Priority(IntEnum):
    """How much a task matters; higher values sort first."""

    LOW = 1
    NORMAL = 2
    HIGH = 3
    URGENT = 4

    @classmethod
    def parse(cls, text: str | int) -> Priority:
        """Accept a name (``"high"``), a prefix (``"h"``), a number (``3``) or bangs (``"!!!"``)."""
        if isinstance(text, int):
            return cls(text)
        value = text.strip().lower()
        if not value:
            raise ValidationError("priority", "must not be empty")
        if set(value) == {"!"}:
            return cls(min(len(value) + 1, cls.URGENT))
        if value.isdigit():
            number = int(value)
            if number not in {member.value for member in cls}:
                raise ValidationError("priority", f"must be between 1 and 4, got {number}")
            return cls(number)
        matches = [member for member in cls if member.name.lower().startswith(value)]
        if len(matches) != 1:
            names = ", ".join(member.name.lower() for member in cls)
            raise ValidationError("priority", f"unknown priority {text!r} (expected one of {names})")
        return matches[0]

    @property
    def label(self) -> str:
        return self.name.lower()


class Status(str, Enum):
    """Where a task is in its life. Only TODO and DOING count as open."""

    TODO = "todo"
    DOING = "doing"
    DONE = "done"
    CANCELLED = "cancelled"

    @property
    def is_open(self) -> bool:
        return self in (Status.TODO, Status.DOING)

    @classmethod
    def parse(cls, text: str) -> Status:
        value = text.strip().lower()
        aliases = {"open": "todo", "started": "doing", "wip": "doing", "closed": "done", "canceled": "cancelled"}
        value = aliases.get(value, value)
        try:
            return cls(value)
        except ValueError:
            names = ", ".join(member.value for member in cls)
            raise ValidationError("status", f"unknown status {text!r} (expected one of {names})") from None


def utcnow() -> datetime:
    """The current time, timezone-aware, truncated to whole seconds (what SQLite round-trips exactly)."""
    return datetime.now(timezone.utc).replace(microsecond=0)


def normalize_tag(raw: str) -> str:
    """Lower-case a tag and strip a leading ``#`` so ``#Work`` and ``work`` are the same tag."""
    tag = raw.strip().lstrip("#").lower().replace(" ", "-")
    if not _TAG_PATTERN.match(tag):
        raise ValidationError("tags", f"invalid tag {raw!r}: use letters, digits, '-' or '_' (max 32 chars)")
    return tag


def normalize_tags(tags: Iterable[str]) -> tuple[str, ...]:
    """Normalized, de-duplicated and sorted, so two tasks with the same tags compare equal."""
    result = tuple(sorted({normalize_tag(tag) for tag in tags}))
    if len(result) > MAX_TAGS:
        raise ValidationError("tags", f"at most {MAX_TAGS} tags per task, got {len(result)}")
    return result


@dataclass(frozen=True)
class Task:
    """One thing to do.

    `id` is None until the task has been stored. `recurrence` holds a rule understood by
    `tasklet.scheduling.parse_rule`, e.g. ``"weekly:mon,thu"``; completing a recurring task creates the next one.
    """

    title: str
    id: int | None = None
    notes: str = ""
    priority: Priority = Priority.NORMAL
    status: Status = Status.TODO
    tags: tuple[str, ...] = ()
    due: date | None = None
    estimate_minutes: int | None = None
    recurrence: str | None = None
    created: datetime = field(default_factory=utcnow)
    completed: datetime | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "title", " ".join(self.title.split()))
        object.__setattr__(self, "tags", normalize_tags(self.tags))
        object.__setattr__(self, "priority", Priority(self.priority))
        object.__setattr__(self, "status", Status(self.status))
        self.validate()

    def validate(self) -> None:
        """Raise ValidationError for the first broken rule."""
        if not self.title:
            raise ValidationError("title", "must not be empty")
        if len(self.title) > MAX_TITLE_LENGTH:
            raise ValidationError("title", f"at most {MAX_TITLE_LENGTH} characters, got {len(self.title)}")
        if self.estimate_minutes is not None and self.estimate_minutes <= 0:
            raise ValidationError("estimate_minutes", "must be positive")
        if self.status is Status.DONE and self.completed is None:
            raise ValidationError("completed", "a done task needs a completion time")
        if self.status is not Status.DONE and self.completed is not None:
            raise ValidationError("completed", "only done tasks have a completion time")
        if self.completed is not None and self.completed < self.created:
            raise ValidationError("completed", "cannot be earlier than the creation time")

    @property
    def is_open(self) -> bool:
        return self.status.is_open

    def is_overdue(self, today: date) -> bool:
        """Open and due before `today`; a task due today is not overdue yet."""
        return self.is_open and self.due is not None and self.due < today

    def days_left(self, today: date) -> int | None:
        """Whole days until the due date (negative when overdue); None without a due date."""
        return None if self.due is None else (self.due - today).days

    def start(self) -> Task:
        if self.status is not Status.TODO:
            raise ValidationError("status", f"only a todo task can be started, this one is {self.status.value}")
        return replace(self, status=Status.DOING)

    def complete(self, when: datetime | None = None) -> Task:
        """The task marked done at `when` (default: now)."""
        if not self.is_open:
            raise ValidationError("status", f"task is already {self.status.value}")
        return replace(self, status=Status.DONE, completed=when or utcnow())

    def cancel(self) -> Task:
        if not self.is_open:
            raise ValidationError("status", f"task is already {self.status.value}")
        return replace(self, status=Status.CANCELLED)

    def reopen(self) -> Task:
        return replace(self, status=Status.TODO, completed=None)

    def postpone(self, days: int) -> Task:
        """Move the due date by `days`; a task without a due date becomes due `days` from today."""
        base = self.due or date.today()
        return replace(self, due=base + timedelta(days=days))

    def with_tags(self, add: Iterable[str] = (), remove: Iterable[str] = ()) -> Task:
        dropped = {normalize_tag(tag) for tag in remove}
        kept = [tag for tag in self.tags if tag not in dropped]
        return replace(self, tags=tuple(kept) + tuple(add))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict; `from_dict` reverses it exactly."""
        return {
            "id": self.id,
            "title": self.title,
            "notes": self.notes,
            "priority": self.priority.label,
            "status": self.status.value,
            "tags": list(self.tags),
            "due": self.due.isoformat() if self.due else None,
            "estimate_minutes": self.estimate_minutes,
            "recurrence": self.recurrence,
            "created": self.created.isoformat(),
            "completed": self.completed.isoformat() if self.completed else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Task:
        """Build a task from `to_dict` output (or hand-written JSON with only a title)."""
        if "title" not in data:
            raise ValidationError("title", "missing")
        created = data.get("created")
        completed = data.get("completed")
        return cls(
            id=data.get("id"),
            title=str(data["title"]),
            notes=str(data.get("notes") or ""),
            priority=Priority.parse(data.get("priority") or "normal"),
            status=Status.parse(data.get("status") or "todo"),
            tags=tuple(data.get("tags") or ()),
            due=date.fromisoformat(data["due"]) if data.get("due") else None,
            estimate_minutes=data.get("estimate_minutes"),
            recurrence=data.get("recurrence"),
            created=datetime.fromisoformat(created) if created else utcnow(),
            completed=datetime.fromisoformat(completed) if completed else None,
        )


def sort_key(task: Task, today: date) -> tuple[int, int, int, str]:
    """Open before closed, then higher priority, then sooner due date (undated last), then title."""
    far_future = 10**6
    days = task.days_left(today)
    return (
        0 if task.is_open else 1,
        -int(task.priority),
        days if days is not None else far_future,
        task.title.lower(),
    )
