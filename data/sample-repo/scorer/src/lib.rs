//! Urgency scoring for tasklet tasks.
//!
//! The score orders a to-do list when priorities tie or conflict: an overdue normal task can outrank a high
//! priority task that is due next month. It is a weighted sum of a few simple signals so that users can read
//! (and tune) why one task is above another.

use std::cmp::Ordering;
use std::fmt;

/// How much a task matters, as stored by tasklet (1 = low ... 4 = urgent).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    Low = 1,
    Normal = 2,
    High = 3,
    Urgent = 4,
}

impl Priority {
    pub fn from_level(level: u8) -> Option<Priority> {
        match level {
            1 => Some(Priority::Low),
            2 => Some(Priority::Normal),
            3 => Some(Priority::High),
            4 => Some(Priority::Urgent),
            _ => None,
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
            Priority::Urgent => "urgent",
        };
        f.write_str(name)
    }
}

/// The fields of a task that the score looks at. Dates are days since an arbitrary epoch.
#[derive(Clone, Debug, PartialEq)]
pub struct Task {
    pub id: u64,
    pub title: String,
    pub priority: Priority,
    pub due_day: Option<i64>,
    pub created_day: i64,
    pub estimate_minutes: Option<u32>,
    pub started: bool,
    pub tags: Vec<String>,
}

/// Weights of each signal; `Weights::default()` is what tasklet ships with.
#[derive(Clone, Debug, PartialEq)]
pub struct Weights {
    pub priority: f64,
    pub due: f64,
    pub age: f64,
    pub started: f64,
    pub quick_win: f64,
    pub someday_penalty: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            priority: 6.0,
            due: 12.0,
            age: 2.0,
            started: 4.0,
            quick_win: 1.5,
            someday_penalty: 5.0,
        }
    }
}

/// Due-date pressure in [0, 1]: 1 when overdue or due today, fading to 0 two weeks out.
fn due_pressure(due_day: Option<i64>, today: i64) -> f64 {
    match due_day {
        None => 0.0,
        Some(due) if due <= today => 1.0,
        Some(due) => {
            let days = (due - today) as f64;
            (1.0 - days / 14.0).max(0.0)
        }
    }
}

/// Age in [0, 1]: old tasks slowly float up so nothing rots at the bottom forever.
fn age_signal(created_day: i64, today: i64) -> f64 {
    let age = (today - created_day).max(0) as f64;
    (age / 60.0).min(1.0)
}

/// The urgency of `task` on `today`; higher means "do it sooner".
pub fn urgency(task: &Task, today: i64, weights: &Weights) -> f64 {
    let mut score = weights.priority * (task.priority as u8 as f64 - 1.0) / 3.0;
    score += weights.due * due_pressure(task.due_day, today);
    if let Some(due) = task.due_day {
        if due < today {
            // Each day overdue adds a little, capped so one ancient task cannot dominate everything.
            score += ((today - due) as f64).min(10.0) * 0.3;
        }
    }
    score += weights.age * age_signal(task.created_day, today);
    if task.started {
        score += weights.started;
    }
    if matches!(task.estimate_minutes, Some(minutes) if minutes <= 15) {
        score += weights.quick_win;
    }
    if task.tags.iter().any(|tag| tag == "someday") {
        score -= weights.someday_penalty;
    }
    score
}

/// Sort tasks by descending urgency; ties keep the lower id first so the order is stable across runs.
pub fn rank<'a>(tasks: &'a [Task], today: i64, weights: &Weights) -> Vec<(&'a Task, f64)> {
    let mut scored: Vec<(&Task, f64)> = tasks
        .iter()
        .map(|task| (task, urgency(task, today, weights)))
        .collect();
    scored.sort_by(|(a, sa), (b, sb)| {
        sb.partial_cmp(sa)
            .unwrap_or(Ordering::Equal)
            .then_with(|| a.id.cmp(&b.id))
    });
    scored
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: u64, priority: Priority, due_day: Option<i64>) -> Task {
        Task {
            id,
            title: format!("task {id}"),
            priority,
            due_day,
            created_day: 100,
            estimate_minutes: None,
            started: false,
            tags: Vec::new(),
        }
    }

    #[test]
    fn priority_levels_round_trip() {
        for level in 1..=4 {
            assert_eq!(Priority::from_level(level).unwrap() as u8, level);
        }
        assert_eq!(Priority::from_level(0), None);
        assert_eq!(Priority::Urgent.to_string(), "urgent");
    }

    #[test]
    fn due_pressure_fades_over_two_weeks() {
        assert_eq!(due_pressure(None, 10), 0.0);
        assert_eq!(due_pressure(Some(9), 10), 1.0);
        assert_eq!(due_pressure(Some(10), 10), 1.0);
        assert!((due_pressure(Some(17), 10) - 0.5).abs() < 1e-9);
        assert_eq!(due_pressure(Some(40), 10), 0.0);
    }

    #[test]
    fn overdue_normal_beats_distant_high() {
        let weights = Weights::default();
        let overdue = task(1, Priority::Normal, Some(95));
        let distant = task(2, Priority::High, Some(130));
        assert!(urgency(&overdue, 100, &weights) > urgency(&distant, 100, &weights));
    }

    #[test]
    fn someday_tasks_sink() {
        let weights = Weights::default();
        let mut someday = task(1, Priority::High, None);
        someday.tags.push("someday".to_string());
        let plain = task(2, Priority::Low, None);
        assert!(urgency(&someday, 100, &weights) < urgency(&plain, 100, &weights));
    }

    #[test]
    fn rank_is_stable_for_ties() {
        let tasks = vec![task(3, Priority::Normal, None), task(1, Priority::Normal, None)];
        let ranked = rank(&tasks, 100, &Weights::default());
        let ids: Vec<u64> = ranked.iter().map(|(task, _)| task.id).collect();
        assert_eq!(ids, vec![1, 3]);
    }
}
