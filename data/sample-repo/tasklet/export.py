"""Export tasks to CSV, JSON and Markdown, and import them back from CSV or JSON.

CSV is for spreadsheets, JSON for other programs (it round-trips every field), Markdown for pasting a to-do list
into notes or an issue tracker.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from datetime import date
from typing import TextIO

from tasklet.errors import ValidationError
from tasklet.models import Status, Task, sort_key
from tasklet.textutils import format_duration

CSV_FIELDS = ("id", "title", "status", "priority", "due", "tags", "estimate_minutes", "recurrence", "notes")
FORMATS = ("csv", "json", "markdown")


def write_csv(tasks: Iterable[Task], stream: TextIO) -> int:
    """Write one row per task; tags are joined with spaces. Returns the number of rows."""
    writer = csv.DictWriter(stream, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    count = 0
    for task in tasks:
        row = {name: value for name, value in task.to_dict().items() if name in CSV_FIELDS}
        row["tags"] = " ".join(task.tags)
        writer.writerow(row)
        count += 1
    return count


def read_csv(stream: TextIO) -> list[Task]:
    """Tasks from CSV with at least a `title` column; ids are dropped so the tasks can be added anew."""
    reader = csv.DictReader(stream)
    if reader.fieldnames is None or "title" not in reader.fieldnames:
        raise ValidationError("csv", "the first row must be a header with a 'title' column")
    tasks = []
    for line, row in enumerate(reader, start=2):
        data = {key: value for key, value in row.items() if key and value not in (None, "")}
        data.pop("id", None)
        data["tags"] = (data.get("tags") or "").split()
        if "estimate_minutes" in data:
            data["estimate_minutes"] = int(data["estimate_minutes"])
        try:
            tasks.append(Task.from_dict(data))
        except (ValidationError, ValueError) as exc:
            raise ValidationError("csv", f"line {line}: {exc}") from None
    return tasks


def write_json(tasks: Iterable[Task], stream: TextIO) -> int:
    """A JSON array of `Task.to_dict()` objects, non-ASCII kept readable."""
    items = [task.to_dict() for task in tasks]
    json.dump(items, stream, ensure_ascii=False, indent=2)
    stream.write("\n")
    return len(items)


def read_json(stream: TextIO) -> list[Task]:
    data = json.load(stream)
    if not isinstance(data, list):
        raise ValidationError("json", "expected a list of task objects")
    return [Task.from_dict(item) for item in data]


def write_markdown(tasks: Iterable[Task], stream: TextIO, today: date | None = None) -> int:
    """A GitHub-style checklist, open tasks first, one section per status."""
    today = today or date.today()
    ordered = sorted(tasks, key=lambda task: sort_key(task, today))
    count = 0
    for status in Status:
        group = [task for task in ordered if task.status is status]
        if not group:
            continue
        if count:
            stream.write("\n")
        stream.write(f"## {status.value.capitalize()} ({len(group)})\n\n")
        for task in group:
            stream.write(_markdown_line(task, today) + "\n")
        count += len(group)
    return count


def _markdown_line(task: Task, today: date) -> str:
    box = "x" if task.status is Status.DONE else " "
    title = task.title if task.status is not Status.CANCELLED else f"~~{task.title}~~"
    details = []
    if task.due:
        details.append(("**overdue** " if task.is_overdue(today) else "") + f"due {task.due.isoformat()}")
    if task.estimate_minutes:
        details.append(format_duration(task.estimate_minutes))
    details.extend(f"#{tag}" for tag in task.tags)
    suffix = f" — {', '.join(details)}" if details else ""
    return f"- [{box}] {title}{suffix}"


def export(tasks: Iterable[Task], stream: TextIO, fmt: str) -> int:
    """Write `tasks` in format `fmt`; returns how many were written."""
    writers = {"csv": write_csv, "json": write_json, "markdown": write_markdown}
    if fmt not in writers:
        raise ValidationError("format", f"unknown export format {fmt!r} (expected {', '.join(FORMATS)})")
    return writers[fmt](tasks, stream)
