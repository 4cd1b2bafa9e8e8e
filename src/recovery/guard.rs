//! The restart-loop guard and the per-process debounce.
//!
//! A job may be acted on at most `max_actions` times per sliding `window`;
//! past that reeve stops acting on it until the window moves on, and says
//! so once per episode. One process is acted on at most once per
//! `debounce`. Both tables are bounded: an entry whose times are all out of
//! its window is dropped when room is needed, and a table that is still
//! full refuses (the caller counts it and does not act).

use std::collections::{HashMap, VecDeque};

use crate::config::Guard;
use crate::procfs::ProcKey;

/// The most jobs and processes remembered at once.
pub const MAX_ENTRIES: usize = 4096;

/// What the guard says about one action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Act,
    /// The same process was acted on less than `debounce` ago.
    Debounced,
    /// The job had `max_actions` in the window. `first` is true for the
    /// first refusal of an episode (the one to say out loud).
    Suppressed {
        first: bool,
    },
    /// The guard's tables are full of live entries.
    Full,
}

#[derive(Debug, Default)]
struct Window {
    times: VecDeque<u64>,
    said: bool,
}

#[derive(Debug, Default)]
pub struct Guards {
    jobs: HashMap<String, Window>,
    last: HashMap<ProcKey, (u64, u64)>,
}

impl Guards {
    /// Decides, and on `Act` records the action at `now_ns`.
    pub fn check(&mut self, job: &str, key: ProcKey, g: &Guard, now_ns: u64) -> Verdict {
        let debounce = g.debounce.as_nanos() as u64;
        let window = g.window.as_nanos() as u64;
        if let Some(&(at, _)) = self.last.get(&key) {
            if now_ns.saturating_sub(at) < debounce {
                return Verdict::Debounced;
            }
        }
        if !self.jobs.contains_key(job) && self.jobs.len() >= MAX_ENTRIES {
            self.jobs.retain(|_, w| {
                w.times
                    .back()
                    .is_some_and(|&t| now_ns.saturating_sub(t) < window)
            });
            if self.jobs.len() >= MAX_ENTRIES {
                return Verdict::Full;
            }
        }
        if !self.last.contains_key(&key) && self.last.len() >= MAX_ENTRIES {
            self.last
                .retain(|_, &mut (at, keep)| now_ns.saturating_sub(at) < keep);
            if self.last.len() >= MAX_ENTRIES {
                return Verdict::Full;
            }
        }
        let w = self.jobs.entry(job.to_string()).or_default();
        while w
            .times
            .front()
            .is_some_and(|&t| now_ns.saturating_sub(t) >= window)
        {
            w.times.pop_front();
        }
        if w.times.len() >= g.max_actions as usize {
            let first = !w.said;
            w.said = true;
            return Verdict::Suppressed { first };
        }
        w.said = false;
        w.times.push_back(now_ns);
        self.last.insert(key, (now_ns, debounce));
        Verdict::Act
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn at_most_max_per_window_then_said_once_then_acts_again() {
        let g = Guard {
            max_actions: 3,
            window: Duration::from_secs(60),
            debounce: Duration::from_secs(5),
        };
        let mut guards = Guards::default();
        let s = 1_000_000_000u64;
        let key = |pid| ProcKey {
            pid,
            start_ticks: 1,
        };
        // A crash loop: a new process of the same job every second.
        let verdicts: Vec<Verdict> = (0..6)
            .map(|i| guards.check("job.enc", key(100 + i), &g, i as u64 * s))
            .collect();
        assert_eq!(
            verdicts,
            [
                Verdict::Act,
                Verdict::Act,
                Verdict::Act,
                Verdict::Suppressed { first: true },
                Verdict::Suppressed { first: false },
                Verdict::Suppressed { first: false },
            ]
        );
        // Another job is not affected.
        assert_eq!(guards.check("job.other", key(7), &g, 6 * s), Verdict::Act);
        // The same process again within the debounce.
        assert_eq!(
            guards.check("job.other", key(7), &g, 8 * s),
            Verdict::Debounced
        );
        // The window moved on: acting again, and a new episode is said again.
        assert_eq!(guards.check("job.enc", key(200), &g, 61 * s), Verdict::Act);
        assert_eq!(guards.check("job.enc", key(201), &g, 62 * s), Verdict::Act);
        assert_eq!(guards.check("job.enc", key(202), &g, 62 * s), Verdict::Act);
        assert_eq!(
            guards.check("job.enc", key(203), &g, 63 * s),
            Verdict::Suppressed { first: true }
        );
    }
}
