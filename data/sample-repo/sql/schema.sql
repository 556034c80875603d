-- The tasklet database schema at version 2, as tasklet/storage.py creates it through its migrations.
-- Useful to create a database by hand or to read it with other tools:
--
--   sqlite3 tasks.db < sql/schema.sql
--
-- Dates are ISO-8601 text: 'YYYY-MM-DD' for due dates, 'YYYY-MM-DDTHH:MM:SS+00:00' for timestamps, so that
-- string comparison orders them correctly.

PRAGMA foreign_keys = ON;

BEGIN;

CREATE TABLE IF NOT EXISTS tasks (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    title            TEXT    NOT NULL,
    notes            TEXT    NOT NULL DEFAULT '',
    priority         INTEGER NOT NULL DEFAULT 2 CHECK (priority BETWEEN 1 AND 4),
    status           TEXT    NOT NULL DEFAULT 'todo',
    due              TEXT,
    created          TEXT    NOT NULL,
    completed        TEXT,
    estimate_minutes INTEGER,
    recurrence       TEXT
);

CREATE TABLE IF NOT EXISTS task_tags (
    task_id INTEGER NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    tag     TEXT    NOT NULL,
    PRIMARY KEY (task_id, tag)
);

CREATE INDEX IF NOT EXISTS task_tags_by_tag ON task_tags(tag);
CREATE INDEX IF NOT EXISTS tasks_open_by_due ON tasks(due) WHERE status IN ('todo', 'doing');

-- Open tasks with their tags as one space-separated string, the shape most reports want.
CREATE VIEW IF NOT EXISTS open_tasks AS
SELECT t.id,
       t.title,
       t.priority,
       t.status,
       t.due,
       t.estimate_minutes,
       COALESCE((SELECT group_concat(tag, ' ')
                   FROM (SELECT tag FROM task_tags WHERE task_id = t.id ORDER BY tag)), '') AS tags
  FROM tasks AS t
 WHERE t.status IN ('todo', 'doing');

PRAGMA user_version = 2;

COMMIT;
