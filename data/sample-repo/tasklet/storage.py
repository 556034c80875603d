"""Persistence in one SQLite file.

The schema is versioned with ``PRAGMA user_version``: each entry of `MIGRATIONS` moves the database one version
forward, inside a transaction, so a crash half-way through an upgrade leaves the old schema intact. A database
written by a newer tasklet is refused rather than silently damaged.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import date, datetime
from pathlib import Path

from tasklet.errors import NotFoundError, StorageError
from tasklet.models import Priority, Status, Task

MIGRATIONS: Sequence[str] = (
    # 1: tasks and tags
    """
    CREATE TABLE tasks (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        title       TEXT    NOT NULL,
        notes       TEXT    NOT NULL DEFAULT '',
        priority    INTEGER NOT NULL DEFAULT 2 CHECK (priority BETWEEN 1 AND 4),
        status      TEXT    NOT NULL DEFAULT 'todo',
        due         TEXT,
        created     TEXT    NOT NULL,
        completed   TEXT
    );
    CREATE TABLE task_tags (
        task_id INTEGER NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
        tag     TEXT    NOT NULL,
        PRIMARY KEY (task_id, tag)
    );
    CREATE INDEX task_tags_by_tag ON task_tags(tag);
    """,
    # 2: estimates and recurring tasks
    """
    ALTER TABLE tasks ADD COLUMN estimate_minutes INTEGER;
    ALTER TABLE tasks ADD COLUMN recurrence TEXT;
    CREATE INDEX tasks_open_by_due ON tasks(due) WHERE status IN ('todo', 'doing');
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)

_COLUMNS = "id, title, notes, priority, status, due, created, completed, estimate_minutes, recurrence"


class TaskStore:
    """All tasks of one database file. Use as a context manager so the connection is always closed.

    >>> with TaskStore(":memory:") as store:
    ...     task = store.add(Task("water the plants"))
    ...     store.get(task.id).title
    'water the plants'
    """

    def __init__(self, path: str | Path = ":memory:") -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open database {self.path}: {exc}") from exc
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA foreign_keys = ON")
        self.migrate()

    def __enter__(self) -> TaskStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN ... COMMIT, or ROLLBACK if the block raises."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    @property
    def version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def migrate(self) -> None:
        """Bring the schema up to `SCHEMA_VERSION`, one migration per transaction."""
        current = self.version
        if current > SCHEMA_VERSION:
            raise StorageError(
                f"{self.path} has schema version {current}, this tasklet only knows up to {SCHEMA_VERSION}; upgrade"
            )
        for number in range(current, SCHEMA_VERSION):
            with self.transaction() as db:
                for statement in _statements(MIGRATIONS[number]):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {number + 1}")

    # -- writing ---------------------------------------------------------------------------------------------

    def add(self, task: Task) -> Task:
        """Store a new task and return it with its id."""
        if task.id is not None:
            raise StorageError(f"task already has id {task.id}; use update()")
        with self.transaction() as db:
            cursor = db.execute(
                f"INSERT INTO tasks ({_COLUMNS}) VALUES (NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?)", _row_values(task)
            )
            stored = replace(task, id=cursor.lastrowid)
            self._write_tags(db, stored)
        return stored

    def update(self, task: Task) -> Task:
        """Overwrite a stored task with `task` (matched by id)."""
        if task.id is None:
            raise StorageError("cannot update a task that was never stored; use add()")
        with self.transaction() as db:
            cursor = db.execute(
                "UPDATE tasks SET title = ?, notes = ?, priority = ?, status = ?, due = ?, created = ?,"
                " completed = ?, estimate_minutes = ?, recurrence = ? WHERE id = ?",
                (*_row_values(task), task.id),
            )
            if cursor.rowcount == 0:
                raise NotFoundError(task.id)
            db.execute("DELETE FROM task_tags WHERE task_id = ?", (task.id,))
            self._write_tags(db, task)
        return task

    def delete(self, task_id: int) -> None:
        with self.transaction() as db:
            if db.execute("DELETE FROM tasks WHERE id = ?", (task_id,)).rowcount == 0:
                raise NotFoundError(task_id)

    def purge_closed(self, before: datetime) -> int:
        """Delete done and cancelled tasks finished before `before`; returns how many went."""
        with self.transaction() as db:
            cursor = db.execute(
                "DELETE FROM tasks WHERE status IN ('done', 'cancelled') AND COALESCE(completed, created) < ?",
                (before.isoformat(),),
            )
            return cursor.rowcount

    @staticmethod
    def _write_tags(db: sqlite3.Connection, task: Task) -> None:
        db.executemany("INSERT INTO task_tags (task_id, tag) VALUES (?, ?)", [(task.id, tag) for tag in task.tags])

    # -- reading ---------------------------------------------------------------------------------------------

    def get(self, task_id: int) -> Task:
        row = self._db.execute(f"SELECT {_COLUMNS} FROM tasks WHERE id = ?", (task_id,)).fetchone()
        if row is None:
            raise NotFoundError(task_id)
        return self._to_task(row)

    def all(self, *, include_closed: bool = True) -> list[Task]:
        sql = f"SELECT {_COLUMNS} FROM tasks"
        if not include_closed:
            sql += " WHERE status IN ('todo', 'doing')"
        return [self._to_task(row) for row in self._db.execute(sql + " ORDER BY id")]

    def with_tag(self, tag: str) -> list[Task]:
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM tasks WHERE id IN (SELECT task_id FROM task_tags WHERE tag = ?) ORDER BY id",
            (tag,),
        )
        return [self._to_task(row) for row in rows]

    def due_between(self, first: date, last: date) -> list[Task]:
        """Open tasks due in the closed interval [first, last], soonest first."""
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM tasks WHERE status IN ('todo', 'doing') AND due BETWEEN ? AND ?"
            " ORDER BY due, priority DESC, id",
            (first.isoformat(), last.isoformat()),
        )
        return [self._to_task(row) for row in rows]

    def search(self, words: str) -> list[Task]:
        """Tasks whose title or notes contain every word (case-insensitive for ASCII)."""
        terms = words.split()
        if not terms:
            return []
        clause = " AND ".join("(title LIKE ? ESCAPE '\\' OR notes LIKE ? ESCAPE '\\')" for _ in terms)
        params: list[str] = []
        for term in terms:
            pattern = "%" + _escape_like(term) + "%"
            params += [pattern, pattern]
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM tasks WHERE {clause} ORDER BY id", params)
        return [self._to_task(row) for row in rows]

    def tag_counts(self) -> Counter[str]:
        """How many open tasks carry each tag."""
        rows = self._db.execute(
            "SELECT tag, COUNT(*) FROM task_tags JOIN tasks ON tasks.id = task_tags.task_id"
            " WHERE tasks.status IN ('todo', 'doing') GROUP BY tag"
        )
        return Counter({tag: count for tag, count in rows})

    def stats(self) -> dict[str, int]:
        """Task counts per status, with zeros for statuses nobody uses yet."""
        counts = {status.value: 0 for status in Status}
        for status, count in self._db.execute("SELECT status, COUNT(*) FROM tasks GROUP BY status"):
            counts[status] = count
        return counts

    def _to_task(self, row: sqlite3.Row) -> Task:
        tags = [tag for (tag,) in self._db.execute("SELECT tag FROM task_tags WHERE task_id = ?", (row["id"],))]
        return Task(
            id=row["id"],
            title=row["title"],
            notes=row["notes"],
            priority=Priority(row["priority"]),
            status=Status(row["status"]),
            tags=tuple(tags),
            due=date.fromisoformat(row["due"]) if row["due"] else None,
            created=datetime.fromisoformat(row["created"]),
            completed=datetime.fromisoformat(row["completed"]) if row["completed"] else None,
            estimate_minutes=row["estimate_minutes"],
            recurrence=row["recurrence"],
        )


def _row_values(task: Task) -> tuple[object, ...]:
    """The task's columns in `_COLUMNS` order, without the id."""
    return (
        task.title,
        task.notes,
        int(task.priority),
        task.status.value,
        task.due.isoformat() if task.due else None,
        task.created.isoformat(),
        task.completed.isoformat() if task.completed else None,
        task.estimate_minutes,
        task.recurrence,
    )


def _escape_like(term: str) -> str:
    """Make %, _ and the escape character itself match literally in a LIKE pattern."""
    return term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _statements(script: str) -> list[str]:
    """Split a migration into statements (none of ours contain a ';' inside a string)."""
    return [statement.strip() for statement in script.split(";") if statement.strip()]
