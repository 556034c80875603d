"""Exceptions raised by tasklet.

Every error the user can cause derives from `TaskletError`, so the CLI can catch one type, print a friendly
message and exit with status 1, while genuine bugs still produce a traceback.
"""

from __future__ import annotations


class TaskletError(Exception):
    """Base class for errors caused by input, configuration or stored data."""


class ValidationError(TaskletError):
    """A task (or a field of one) breaks a rule, e.g. an empty title or a negative estimate."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class NotFoundError(TaskletError):
    """No task has the requested id."""

    def __init__(self, task_id: int) -> None:
        super().__init__(f"no task with id {task_id}")
        self.task_id = task_id


class QueryError(TaskletError):
    """A filter expression could not be parsed; `position` points at the offending character."""

    def __init__(self, message: str, position: int = 0) -> None:
        super().__init__(f"{message} (at column {position + 1})")
        self.position = position


class StorageError(TaskletError):
    """The database file is missing, locked, or was written by a newer version of tasklet."""
