"""The ``tasklet`` command.

Each subcommand is a small function taking the parsed arguments, an open store and an output stream, so tests
can call `main([...])` with a temporary database and read what was printed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import TextIO

from tasklet import __version__
from tasklet.config import Config, load_config
from tasklet.errors import TaskletError, ValidationError
from tasklet.export import FORMATS, export, read_csv, read_json
from tasklet.i18n import translate
from tasklet.models import Priority, Task, sort_key
from tasklet.query import parse_query, resolve_date
from tasklet.scheduling import parse_rule, plan_week, spawn_next
from tasklet.storage import TaskStore
from tasklet.textutils import format_duration, format_table, parse_duration, plural, wrap

Handler = Callable[[argparse.Namespace, TaskStore, Config, TextIO], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tasklet", description="A small task tracker for the terminal.")
    parser.add_argument("--version", action="version", version=f"tasklet {__version__}")
    parser.add_argument("--db", type=Path, help="database file (default: from config or $TASKLET_DB_PATH)")
    parser.add_argument("--today", type=date.fromisoformat, help=argparse.SUPPRESS)  # for tests and demos
    commands = parser.add_subparsers(dest="command", required=True)

    add = commands.add_parser("add", help="add a task")
    add.add_argument("title", nargs="+")
    add.add_argument("-p", "--priority", type=Priority.parse)
    add.add_argument("-t", "--tag", action="append", default=[], dest="tags")
    add.add_argument("-d", "--due", help="ISO date, today, tomorrow or +3d")
    add.add_argument("-e", "--estimate", type=parse_duration, help="e.g. 45m, 1h30m, 2d")
    add.add_argument("-r", "--repeat", help="recurrence: daily, weekdays, weekly:mon,thu, monthly:1, every 2 weeks")
    add.add_argument("-n", "--notes", default="")

    listing = commands.add_parser("list", aliases=["ls"], help="list tasks matching a query")
    listing.add_argument("query", nargs="*", help="e.g. status:todo tag:work due<=+7d")
    listing.add_argument("--all", action="store_true", help="include done and cancelled tasks")

    single = {
        "show": "show one task",
        "start": "mark as in progress",
        "done": "mark as done (a repeating task gets its next instance)",
        "cancel": "cancel a task",
        "rm": "delete a task",
    }
    for name, text in single.items():
        command = commands.add_parser(name, help=text)
        command.add_argument("id", type=int)

    postpone = commands.add_parser("postpone", help="move a due date")
    postpone.add_argument("id", type=int)
    postpone.add_argument("days", type=int, nargs="?", default=1)

    out = commands.add_parser("export", help="write tasks as csv, json or markdown")
    out.add_argument("--format", "-f", choices=FORMATS, default="markdown")
    out.add_argument("--output", "-o", type=Path, help="file to write (default: standard output)")
    out.add_argument("query", nargs="*")

    into = commands.add_parser("import", help="add tasks from a csv or json file")
    into.add_argument("file", type=Path)

    plan = commands.add_parser("plan", help="spread estimated tasks over this week")
    plan.add_argument("--minutes", type=int, help="working minutes per day")

    commands.add_parser("stats", help="counts per status and tag")
    return parser


def cmd_add(args: argparse.Namespace, store: TaskStore, config: Config, out: TextIO) -> int:
    if args.repeat:
        parse_rule(args.repeat)  # fail before storing anything
    task = Task(
        title=" ".join(args.title),
        notes=args.notes,
        priority=args.priority or config.default_priority,
        tags=tuple(args.tags),
        due=resolve_date(args.due, args.today) if args.due else None,
        estimate_minutes=args.estimate,
        recurrence=args.repeat,
    )
    stored = store.add(task)
    print(translate("added", config.language, id=stored.id, title=stored.title), file=out)
    return 0


def cmd_list(args: argparse.Namespace, store: TaskStore, config: Config, out: TextIO) -> int:
    query = parse_query(" ".join(args.query))
    tasks = store.all(include_closed=args.all or query.wants_closed)
    if not args.all and not any(term.field in ("status", "is") for term in query.terms):
        tasks = [task for task in tasks if task.is_open]
    tasks = sorted(query.filter(tasks, args.today), key=lambda task: sort_key(task, args.today))
    if not tasks:
        print(translate("nothing", config.language), file=out)
        return 0
    rows = [_row(task, args.today) for task in tasks]
    print(format_table(rows, ["id", "pri", "status", "due", "est", "title", "tags"], {5: 48}), file=out)
    overdue = sum(task.is_overdue(args.today) for task in tasks)
    footer = plural(len(tasks), "task")
    if overdue:
        footer += ", " + translate("overdue", config.language, count=overdue)
    print(footer, file=out)
    return 0


def _row(task: Task, today: date) -> list[str]:
    due = ""
    if task.due:
        due = task.due.isoformat() + ("!" if task.is_overdue(today) else "")
    estimate = format_duration(task.estimate_minutes) if task.estimate_minutes else ""
    return [str(task.id), task.priority.label, task.status.value, due, estimate, task.title, " ".join(task.tags)]


def cmd_show(args: argparse.Namespace, store: TaskStore, config: Config, out: TextIO) -> int:
    task = store.get(args.id)
    print(f"#{task.id} {task.title}", file=out)
    for label, value in (
        ("status", task.status.value),
        ("priority", task.priority.label),
        ("due", task.due.isoformat() if task.due else "-"),
        ("estimate", format_duration(task.estimate_minutes) if task.estimate_minutes else "-"),
        ("repeats", task.recurrence or "-"),
        ("tags", " ".join(f"#{tag}" for tag in task.tags) or "-"),
        ("created", task.created.strftime("%Y-%m-%d %H:%M")),
    ):
        print(f"  {label:<9}{value}", file=out)
    if task.notes:
        print("\n" + wrap(task.notes, 76, indent="  "), file=out)
    return 0


def cmd_start(args: argparse.Namespace, store: TaskStore, config: Config, out: TextIO) -> int:
    store.update(store.get(args.id).start())
    return 0


def cmd_done(args: argparse.Namespace, store: TaskStore, config: Config, out: TextIO) -> int:
    """Complete a task; a recurring task immediately gets its next instance."""
    task = store.get(args.id)
    finished = store.update(task.complete(_now(args.today, task)))
    print(translate("completed", config.language, id=finished.id, title=finished.title), file=out)
    following = spawn_next(finished, args.today)
    if following is not None:
        store.add(following)
        print(translate("next", config.language, due=following.due), file=out)
    return 0


def _now(today: date, task: Task) -> datetime:
    """The completion time: now, or noon of --today when a demo pins the date (never before creation)."""
    now = datetime.now(timezone.utc).replace(microsecond=0)
    if today != now.date():
        now = datetime(today.year, today.month, today.day, 12, tzinfo=timezone.utc)
    return max(now, task.created)


def cmd_cancel(args: argparse.Namespace, store: TaskStore, config: Config, out: TextIO) -> int:
    store.update(store.get(args.id).cancel())
    return 0


def cmd_rm(args: argparse.Namespace, store: TaskStore, config: Config, out: TextIO) -> int:
    store.delete(args.id)
    print(translate("deleted", config.language, id=args.id), file=out)
    return 0


def cmd_postpone(args: argparse.Namespace, store: TaskStore, config: Config, out: TextIO) -> int:
    """Move the due date by N days; an undated task becomes due N days from today."""
    task = store.get(args.id)
    store.update(replace(task, due=(task.due or args.today) + timedelta(days=args.days)))
    return 0


def cmd_export(args: argparse.Namespace, store: TaskStore, config: Config, out: TextIO) -> int:
    query = parse_query(" ".join(args.query))
    tasks = query.filter(store.all(), args.today)
    if args.output is None:
        export(tasks, out, args.format)
        return 0
    temporary = args.output.with_name(args.output.name + ".part")
    with open(temporary, "w", encoding="utf-8", newline="") as stream:
        count = export(tasks, stream, args.format)
    temporary.replace(args.output)  # never leave a half-written export behind
    print(f"wrote {plural(count, 'task')} to {args.output}", file=out)
    return 0


def cmd_import(args: argparse.Namespace, store: TaskStore, config: Config, out: TextIO) -> int:
    readers = {".csv": read_csv, ".json": read_json}
    reader = readers.get(args.file.suffix.lower())
    if reader is None:
        raise ValidationError("file", f"expected a .csv or .json file, got {args.file.name}")
    with open(args.file, encoding="utf-8", newline="") as stream:
        tasks = reader(stream)
    for task in tasks:  # the reader validated every row before the first insert
        store.add(replace(task, id=None))
    print(f"imported {plural(len(tasks), 'task')}", file=out)
    return 0


def cmd_plan(args: argparse.Namespace, store: TaskStore, config: Config, out: TextIO) -> int:
    monday = args.today - timedelta(days=args.today.weekday())
    start = max(monday, args.today)
    minutes = args.minutes or config.minutes_per_day
    days, unplanned = plan_week(store.all(include_closed=False), start, minutes_per_day=minutes)
    for day in days:
        if not day.tasks:
            continue
        load = f"{format_duration(day.planned_minutes)} of {format_duration(day.capacity)}"
        print(f"{day.day:%a %d %b}  ({load})", file=out)
        for task in day.tasks:
            print(f"    {format_duration(task.estimate_minutes or 0):>6}  {task.title}", file=out)
    if unplanned:
        titles = ", ".join(task.title for task in unplanned)
        print(translate("unplanned", config.language, titles=titles), file=out)
    return 0


def cmd_stats(args: argparse.Namespace, store: TaskStore, config: Config, out: TextIO) -> int:
    counts = store.stats()
    print("  ".join(f"{status}: {count}" for status, count in counts.items()), file=out)
    tags = store.tag_counts()
    if tags:
        print("tags: " + ", ".join(f"#{tag} {count}" for tag, count in tags.most_common()), file=out)
    return 0


HANDLERS: dict[str, Handler] = {
    "add": cmd_add,
    "list": cmd_list,
    "ls": cmd_list,
    "show": cmd_show,
    "start": cmd_start,
    "done": cmd_done,
    "cancel": cmd_cancel,
    "rm": cmd_rm,
    "postpone": cmd_postpone,
    "export": cmd_export,
    "import": cmd_import,
    "plan": cmd_plan,
    "stats": cmd_stats,
}


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, env: dict[str, str] | None = None) -> int:
    """Run one command; returns the exit status (0 ok, 1 user error, 2 bad usage)."""
    out = out or sys.stdout
    args = build_parser().parse_args(argv)
    args.today = args.today or date.today()
    try:
        config = load_config(env)
        with TaskStore(args.db or config.db_path) as store:
            return HANDLERS[args.command](args, store, config, out)
    except TaskletError as exc:
        print(f"tasklet: {exc}", file=sys.stderr)
        return 1
