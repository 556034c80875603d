// Command tasklet-agent prints reminders for tasks that are due soon.
//
// It reads the JSON that `tasklet export -f json` writes, so it needs no database driver, and can run from
// cron or a systemd timer:
//
//	tasklet export -f json -o /tmp/tasks.json && tasklet-agent -file /tmp/tasks.json -within 48h
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"
)

// Task mirrors the fields of tasklet's JSON export that the agent uses.
type Task struct {
	ID       int      `json:"id"`
	Title    string   `json:"title"`
	Priority string   `json:"priority"`
	Status   string   `json:"status"`
	Tags     []string `json:"tags"`
	Due      *string  `json:"due"`
}

// Reminder is one task with its parsed due date.
type Reminder struct {
	Task Task
	Due  time.Time
}

var priorityRank = map[string]int{"low": 1, "normal": 2, "high": 3, "urgent": 4}

func (r Reminder) overdue(now time.Time) bool {
	return r.Due.Before(startOfDay(now))
}

func startOfDay(t time.Time) time.Time {
	year, month, day := t.Date()
	return time.Date(year, month, day, 0, 0, 0, 0, t.Location())
}

// loadTasks decodes an export; an empty file is an empty list, not an error.
func loadTasks(r io.Reader) ([]Task, error) {
	var tasks []Task
	decoder := json.NewDecoder(r)
	if err := decoder.Decode(&tasks); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, fmt.Errorf("decoding tasks: %w", err)
	}
	return tasks, nil
}

// dueSoon keeps open tasks due before now+within (overdue ones included), most urgent first.
func dueSoon(tasks []Task, now time.Time, within time.Duration, tag string) ([]Reminder, error) {
	limit := now.Add(within)
	var reminders []Reminder
	for _, task := range tasks {
		if task.Due == nil || (task.Status != "todo" && task.Status != "doing") {
			continue
		}
		if tag != "" && !hasTag(task, tag) {
			continue
		}
		due, err := time.ParseInLocation("2006-01-02", *task.Due, now.Location())
		if err != nil {
			return nil, fmt.Errorf("task %d: bad due date %q: %w", task.ID, *task.Due, err)
		}
		if due.Before(limit) {
			reminders = append(reminders, Reminder{Task: task, Due: due})
		}
	}
	sort.SliceStable(reminders, func(i, j int) bool {
		a, b := reminders[i], reminders[j]
		if !a.Due.Equal(b.Due) {
			return a.Due.Before(b.Due)
		}
		return priorityRank[a.Task.Priority] > priorityRank[b.Task.Priority]
	})
	return reminders, nil
}

func hasTag(task Task, tag string) bool {
	tag = strings.TrimPrefix(strings.ToLower(tag), "#")
	for _, t := range task.Tags {
		if t == tag {
			return true
		}
	}
	return false
}

func describe(r Reminder, now time.Time) string {
	days := int(r.Due.Sub(startOfDay(now)).Hours() / 24)
	var when string
	switch {
	case r.overdue(now):
		when = fmt.Sprintf("OVERDUE by %d day(s)", -days)
	case days == 0:
		when = "due today"
	case days == 1:
		when = "due tomorrow"
	default:
		when = fmt.Sprintf("due in %d days", days)
	}
	marker := " "
	if priorityRank[r.Task.Priority] >= priorityRank["high"] {
		marker = "!"
	}
	return fmt.Sprintf("%s #%-4d %-40s %s", marker, r.Task.ID, truncate(r.Task.Title, 40), when)
}

// truncate shortens s to n runes (not bytes), so titles in any script are cut cleanly.
func truncate(s string, n int) string {
	runes := []rune(s)
	if len(runes) <= n {
		return s
	}
	return string(runes[:n-1]) + "…"
}

func run(args []string, stdout, stderr io.Writer, now time.Time) int {
	flags := flag.NewFlagSet("tasklet-agent", flag.ContinueOnError)
	flags.SetOutput(stderr)
	file := flags.String("file", "-", "tasklet JSON export to read ('-' for standard input)")
	within := flags.Duration("within", 24*time.Hour, "remind about tasks due within this duration")
	tag := flags.String("tag", "", "only tasks with this tag")
	quiet := flags.Bool("quiet", false, "print nothing when nothing is due")
	if err := flags.Parse(args); err != nil {
		return 2
	}

	var input io.Reader = os.Stdin
	if *file != "-" {
		f, err := os.Open(*file)
		if err != nil {
			fmt.Fprintln(stderr, "tasklet-agent:", err)
			return 1
		}
		defer f.Close()
		input = f
	}

	tasks, err := loadTasks(input)
	if err != nil {
		fmt.Fprintln(stderr, "tasklet-agent:", err)
		return 1
	}
	reminders, err := dueSoon(tasks, now, *within, *tag)
	if err != nil {
		fmt.Fprintln(stderr, "tasklet-agent:", err)
		return 1
	}
	if len(reminders) == 0 {
		if !*quiet {
			fmt.Fprintln(stdout, "Nothing due. 🌿")
		}
		return 0
	}
	for _, r := range reminders {
		fmt.Fprintln(stdout, describe(r, now))
	}
	return 0
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr, time.Now()))
}
