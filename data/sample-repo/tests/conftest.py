"""Shared fixtures: an in-memory store, a fixed 'today', and a few tasks in every state."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timezone

import pytest

from tasklet.models import Priority, Status, Task
from tasklet.storage import TaskStore

TODAY = date(2025, 3, 12)  # a Wednesday
CREATED = datetime(2025, 3, 1, 9, 0, tzinfo=timezone.utc)


@pytest.fixture
def today() -> date:
    return TODAY


@pytest.fixture
def store() -> Iterator[TaskStore]:
    with TaskStore(":memory:") as opened:
        yield opened


@pytest.fixture
def sample_tasks() -> list[Task]:
    return [
        Task("Write quarterly report", priority=Priority.HIGH, tags=("work",), due=date(2025, 3, 10),
             estimate_minutes=180, created=CREATED),
        Task("Buy groceries", tags=("home", "errands"), due=TODAY, estimate_minutes=45, created=CREATED),
        Task("Renew passport", priority=Priority.URGENT, due=date(2025, 4, 2), created=CREATED),
        Task("Read 'Designing Data-Intensive Applications'", priority=Priority.LOW, tags=("someday",),
             created=CREATED),
        Task("Fix flaky CI job", tags=("work",), status=Status.DOING, estimate_minutes=90, created=CREATED),
        Task("Submit expenses", tags=("work",), status=Status.DONE, created=CREATED,
             completed=datetime(2025, 3, 5, 17, 30, tzinfo=timezone.utc)),
        Task("Steuererklärung abgeben", tags=("home",), due=date(2025, 7, 31), notes="Belege im Ordner „Steuer“",
             created=CREATED),
    ]  # fmt: skip
