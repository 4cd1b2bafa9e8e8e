//! What happens after a supervised job ends: whether it is started again
//! (its restart policy), after how long (exponential backoff with jitter),
//! and whether it may be started at all (the restart-loop guard).
//!
//! Pure: time and randomness come in as arguments, so every decision is
//! tested without a clock. Invariant: the wait never exceeds
//! `backoff.max`, and the guard never allows more than `starts` starts
//! within `window`.

use std::collections::VecDeque;
use std::time::Duration;

use crate::config::{Backoff, Restart, RestartGuard};
use crate::sys::ChildExit;

/// How a job's process ended, as far as reeve can know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// reeve reaped it (it was reeve's child).
    Known(ChildExit),
    /// It was adopted after a daemon restart, so another process reaped
    /// it: the pidfd says it ended, nothing says how.
    Unknown,
}

impl Ending {
    /// Ended with exit status 0.
    pub fn succeeded(self) -> bool {
        self == Ending::Known(ChildExit::Code(0))
    }

    /// One phrase for events: `exit 3`, `signal 9`, `signal 11 (core
    /// dumped)`, `unknown (...)`.
    pub fn describe(self) -> String {
        match self {
            Ending::Known(ChildExit::Code(c)) => format!("exit {c}"),
            Ending::Known(ChildExit::Signal { signal, core }) => {
                let core = if core { " (core dumped)" } else { "" };
                format!("signal {signal}{core}")
            }
            Ending::Unknown => {
                "unknown (adopted after a daemon restart, so reeve was not its parent)".into()
            }
        }
    }
}

/// Whether the policy starts the job again after `ending`. An unknown
/// ending counts as a failure: a job is not left stopped on a guess.
pub fn restarts(policy: Restart, ending: Ending) -> bool {
    match policy {
        Restart::Always => true,
        Restart::OnFailure => !ending.succeeded(),
        Restart::Never => false,
    }
}

/// The wait before restart number `attempt` (1 for the first restart
/// after a healthy run): `initial × 2^(attempt-1)`, at most `max`, then a
/// uniform draw from its upper half, so jobs that fail together do not
/// restart in step.
pub fn backoff(b: &Backoff, attempt: u32, random: u64) -> Duration {
    let exp = attempt.saturating_sub(1).min(32);
    let base = b
        .initial
        .checked_mul(1u32 << exp.min(31))
        .map_or(b.max, |d| d.min(b.max));
    let base_ns = u64::try_from(base.as_nanos()).unwrap_or(u64::MAX);
    let half = base_ns / 2;
    let jitter = random % (base_ns - half).saturating_add(1);
    Duration::from_nanos(half.saturating_add(jitter).min(base_ns))
}

/// The restart-loop guard: the times of the recent starts of one job.
#[derive(Debug)]
pub struct StartWindow {
    guard: RestartGuard,
    /// Monotonic ns of the starts within the window, oldest first; never
    /// more than `guard.starts`.
    starts: VecDeque<u64>,
}

impl StartWindow {
    pub fn new(guard: RestartGuard) -> StartWindow {
        StartWindow {
            guard,
            starts: VecDeque::with_capacity(guard.starts as usize),
        }
    }

    /// Records a start at `now_ns` if the guard allows it; `false` when
    /// `starts` starts already fall within the window ending now.
    pub fn try_start(&mut self, now_ns: u64) -> bool {
        let window = u64::try_from(self.guard.window.as_nanos()).unwrap_or(u64::MAX);
        while self
            .starts
            .front()
            .is_some_and(|&t| now_ns.saturating_sub(t) >= window)
        {
            self.starts.pop_front();
        }
        if self.starts.len() >= self.guard.starts as usize {
            return false;
        }
        self.starts.push_back(now_ns);
        true
    }

    /// Takes back the start [`StartWindow::try_start`] just recorded (it
    /// did not happen: a lock was busy), keeping the earlier ones.
    pub fn undo_last(&mut self) {
        self.starts.pop_back();
    }

    /// Starts counted in the window now.
    pub fn recent(&self) -> usize {
        self.starts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn b(initial_ms: u64, max_ms: u64) -> Backoff {
        Backoff {
            initial: Duration::from_millis(initial_ms),
            max: Duration::from_millis(max_ms),
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_within_its_upper_half() {
        let cfg = b(100, 1000);
        for (attempt, base_ms) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (60, 1000),
        ] {
            let base = Duration::from_millis(base_ms);
            for random in [0, 1, 7, u64::MAX / 3, u64::MAX] {
                let d = backoff(&cfg, attempt, random);
                assert!(d >= base / 2 && d <= base, "attempt {attempt}: {d:?}");
            }
        }
        assert_eq!(backoff(&cfg, 1, 0), Duration::from_millis(50));
        assert!(backoff(&cfg, u32::MAX, u64::MAX) <= Duration::from_secs(1));
        // Different draws spread the restarts.
        assert_ne!(backoff(&cfg, 3, 1), backoff(&cfg, 3, 123_456_789));
    }

    #[test]
    fn policies() {
        let ok = Ending::Known(ChildExit::Code(0));
        let bad = Ending::Known(ChildExit::Code(3));
        let killed = Ending::Known(ChildExit::Signal {
            signal: 9,
            core: false,
        });
        assert!(restarts(Restart::Always, ok));
        assert!(!restarts(Restart::OnFailure, ok));
        assert!(restarts(Restart::OnFailure, bad));
        assert!(restarts(Restart::OnFailure, killed));
        assert!(restarts(Restart::OnFailure, Ending::Unknown));
        assert!(!restarts(Restart::Never, bad));
        assert_eq!(killed.describe(), "signal 9");
        assert!(Ending::Unknown.describe().starts_with("unknown"));
    }

    #[test]
    fn guard_allows_starts_per_window_then_refuses() {
        let mut w = StartWindow::new(RestartGuard {
            starts: 3,
            window: Duration::from_secs(10),
        });
        assert!(w.try_start(0));
        assert!(w.try_start(S));
        assert!(w.try_start(2 * S));
        w.undo_last();
        assert!(w.try_start(2 * S), "a start taken back is not counted");
        assert!(!w.try_start(3 * S), "a fourth start within 10 s");
        assert_eq!(w.recent(), 3);
        // The first start leaves the window at 10 s.
        assert!(w.try_start(10 * S));
        assert!(!w.try_start(10 * S + 1));
    }
}
