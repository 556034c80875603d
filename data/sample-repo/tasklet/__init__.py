"""tasklet: a small, dependable task tracker for people who live in the terminal.

The package is split by concern so each part can be used on its own:

* `tasklet.models`     - the Task record and its rules (priorities, statuses, tags)
* `tasklet.storage`    - persistence in a single SQLite file, with schema migrations
* `tasklet.query`      - a tiny filter language: ``status:todo tag:work due<2025-01-31``
* `tasklet.scheduling` - recurring tasks and a greedy weekly planner
* `tasklet.textutils`  - slugs, durations and width-aware text for terminal tables
* `tasklet.export`     - CSV, JSON and Markdown import/export
* `tasklet.cli`        - the ``tasklet`` command
"""

from tasklet.errors import NotFoundError, QueryError, TaskletError, ValidationError
from tasklet.models import Priority, Status, Task

__all__ = [
    "NotFoundError",
    "Priority",
    "QueryError",
    "Status",
    "Task",
    "TaskletError",
    "ValidationError",
    "__version__",
]

__version__ = "0.4.2"
