package dev.tasklet;

import java.time.LocalDate;
import java.time.temporal.ChronoUnit;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Locale;
import java.util.Objects;

/**
 * Formats tasks as short lines for the Android home-screen widget.
 *
 * <p>The widget has room for about 32 characters per line, so titles are shortened on a code point boundary
 * (never in the middle of a surrogate pair) and the due date is written relative to today.
 */
public final class TaskFormatter {

    /** The subset of a task the widget shows. */
    public record Task(long id, String title, int priority, String status, LocalDate due) {
        public Task {
            Objects.requireNonNull(title, "title");
            Objects.requireNonNull(status, "status");
            if (priority < 1 || priority > 4) {
                throw new IllegalArgumentException("priority must be 1..4, got " + priority);
            }
        }

        boolean isOpen() {
            return status.equals("todo") || status.equals("doing");
        }
    }

    private static final String ELLIPSIS = "…";
    private final int width;
    private final LocalDate today;

    public TaskFormatter(int width, LocalDate today) {
        if (width < 8) {
            throw new IllegalArgumentException("width must be at least 8, got " + width);
        }
        this.width = width;
        this.today = Objects.requireNonNull(today, "today");
    }

    /** Open tasks first by due date (undated last), then by descending priority. */
    public static Comparator<Task> widgetOrder() {
        return Comparator.comparing((Task task) -> !task.isOpen())
                .thenComparing(Task::due, Comparator.nullsLast(Comparator.naturalOrder()))
                .thenComparing(Comparator.comparingInt(Task::priority).reversed())
                .thenComparingLong(Task::id);
    }

    public String relativeDue(LocalDate due) {
        if (due == null) {
            return "";
        }
        long days = ChronoUnit.DAYS.between(today, due);
        if (days < 0) {
            return -days + "d late";
        }
        if (days == 0) {
            return "today";
        }
        if (days == 1) {
            return "tmrw";
        }
        if (days < 7) {
            return due.getDayOfWeek().getDisplayName(java.time.format.TextStyle.SHORT, Locale.ENGLISH);
        }
        return due.toString().substring(5); // MM-DD
    }

    /** Shorten to at most {@code max} code points, adding an ellipsis when something was cut. */
    static String shorten(String text, int max) {
        int count = text.codePointCount(0, text.length());
        if (count <= max) {
            return text;
        }
        int end = text.offsetByCodePoints(0, max - 1);
        return text.substring(0, end).stripTrailing() + ELLIPSIS;
    }

    public String format(Task task) {
        String marker = switch (task.status()) {
            case "done" -> "✓";
            case "cancelled" -> "✗";
            case "doing" -> "▶";
            default -> task.priority() >= 3 ? "!" : "·";
        };
        String due = relativeDue(task.due());
        int room = width - 2 - (due.isEmpty() ? 0 : due.length() + 1);
        String title = shorten(task.title(), Math.max(room, 3));
        StringBuilder line = new StringBuilder(marker).append(' ').append(title);
        if (!due.isEmpty()) {
            int used = line.codePointCount(0, line.length());
            line.append(" ".repeat(Math.max(1, width - used - due.length()))).append(due);
        }
        return line.toString();
    }

    public List<String> formatAll(List<Task> tasks, int maxLines) {
        List<Task> sorted = new ArrayList<>(tasks);
        sorted.sort(widgetOrder());
        List<String> lines = new ArrayList<>();
        for (Task task : sorted) {
            if (lines.size() == maxLines - 1 && sorted.size() > maxLines) {
                lines.add("+" + (sorted.size() - lines.size()) + " more");
                break;
            }
            lines.add(format(task));
        }
        return lines;
    }

    public static void main(String[] args) {
        LocalDate today = LocalDate.of(2025, 3, 12);
        TaskFormatter formatter = new TaskFormatter(32, today);
        List<Task> tasks = List.of(
                new Task(1, "Write quarterly report for the board", 3, "todo", today.minusDays(2)),
                new Task(2, "Buy groceries", 2, "todo", today),
                new Task(3, "Fix flaky CI job", 2, "doing", null),
                new Task(4, "Steuererklärung abgeben", 2, "todo", today.plusDays(20)),
                new Task(5, "Submit expenses", 2, "done", today.minusDays(7)));
        formatter.formatAll(tasks, 4).forEach(System.out::println);
    }
}
