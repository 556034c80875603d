-- Reports over a tasklet database. Run one with, for example:
--
--   sqlite3 -header -column tasks.db < sql/reports.sql
--
-- Every query only reads; they are safe to run while tasklet is in use.

-- 1. Overdue tasks per tag (untagged tasks are counted under '(none)').
SELECT COALESCE(tt.tag, '(none)')           AS tag,
       COUNT(*)                             AS overdue,
       MIN(t.due)                           AS oldest_due,
       CAST(julianday('now') - julianday(MIN(t.due)) AS INTEGER) AS days_late
  FROM tasks AS t
  LEFT JOIN task_tags AS tt ON tt.task_id = t.id
 WHERE t.status IN ('todo', 'doing')
   AND t.due < date('now')
 GROUP BY COALESCE(tt.tag, '(none)')
 ORDER BY overdue DESC, oldest_due;

-- 2. Completed tasks and estimated hours per week (weeks start on Monday) over the last twelve weeks.
SELECT strftime('%Y-W%W', completed)                    AS week,
       COUNT(*)                                         AS done,
       ROUND(SUM(COALESCE(estimate_minutes, 0)) / 60.0, 1) AS estimated_hours
  FROM tasks
 WHERE status = 'done'
   AND completed >= date('now', '-84 days')
 GROUP BY week
 ORDER BY week;

-- 3. How long tasks stay open, by priority (median is approximated by the average of the middle rows).
WITH durations AS (
    SELECT priority,
           julianday(completed) - julianday(created) AS days,
           ROW_NUMBER() OVER (PARTITION BY priority ORDER BY julianday(completed) - julianday(created)) AS rn,
           COUNT(*) OVER (PARTITION BY priority) AS n
      FROM tasks
     WHERE status = 'done' AND completed IS NOT NULL
)
SELECT CASE priority WHEN 1 THEN 'low' WHEN 2 THEN 'normal' WHEN 3 THEN 'high' ELSE 'urgent' END AS priority,
       MAX(n)                                   AS tasks,
       ROUND(AVG(days), 1)                      AS mean_days,
       ROUND(AVG(CASE WHEN rn IN ((n + 1) / 2, (n + 2) / 2) THEN days END), 1) AS median_days
  FROM durations
 GROUP BY priority
 ORDER BY durations.priority DESC;

-- 4. Tags that have not been used on an open task for 90 days: candidates for clean-up.
SELECT tt.tag,
       COUNT(*)       AS tasks,
       MAX(t.created) AS last_used
  FROM task_tags AS tt
  JOIN tasks AS t ON t.id = tt.task_id
 GROUP BY tt.tag
HAVING SUM(t.status IN ('todo', 'doing')) = 0
   AND MAX(t.created) < date('now', '-90 days')
 ORDER BY last_used;
