//! The state snapshot, written off the loop: the loop captures what it
//! holds ([`Capture::take`], fixed-size records) and hands it to one
//! thread, `reeve-save`, which builds the [`State`](crate::state::State), serialises it and
//! writes it atomically (temp file, fsync, rename,
//! directory fsync). The loop looks for the outcome at each wakeup without
//! waiting, and wakes within [`REPORT_WITHIN_MS`] for it while one is in
//! flight.
//!
//! Invariants: at most one snapshot is in flight, so snapshots land in the
//! order they were captured; a change made while one is in flight is
//! written by the next due save; a save forced at start or shutdown runs on
//! the caller after the one in flight has ended, so the last file written
//! is the newest. The thread takes no lock the loop takes.
//!
//! [`REPORT_WITHIN_MS`]: crate::store::eventlog::REPORT_WITHIN_MS

use std::io;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::thread::JoinHandle;

use super::{Persistence, AUDIT_DRAIN_AT_EXIT, FLUSH_INTERVAL_MS, SAVE_ERROR_EVERY_MS};
use crate::discovery::{Discovery, DiscoveryStats};
use crate::log::{Logger, Val};
use crate::state::{self, Capture, GovernanceView};
use crate::store::StateDir;
use crate::sys;

/// A save's outcome and how long it took (µs), serialising included;
/// `gone` when there was no save because the thread had ended.
struct Outcome {
    result: Result<(), String>,
    us: u64,
    gone: bool,
}

pub(super) struct Saver {
    requests: Option<Sender<Box<Capture>>>,
    done: Receiver<Outcome>,
    thread: Option<JoinHandle<()>>,
    /// A wait gave up on the save in flight (a hung disk): the thread is
    /// left to it, not joined.
    abandoned: bool,
}

impl Saver {
    pub(super) fn start(dir: StateDir) -> io::Result<Saver> {
        let (requests, jobs) = mpsc::channel::<Box<Capture>>();
        let (report, done) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("reeve-save".into())
            .spawn(move || {
                while let Ok(capture) = jobs.recv() {
                    let began = sys::monotonic_ns();
                    let result = capture.into_state().save(&dir);
                    let us = sys::monotonic_ns().saturating_sub(began) / 1000;
                    let outcome = Outcome {
                        result,
                        us,
                        gone: false,
                    };
                    if report.send(outcome).is_err() {
                        return;
                    }
                }
            })?;
        Ok(Saver {
            requests: Some(requests),
            done,
            thread: Some(thread),
            abandoned: false,
        })
    }

    /// Hands a snapshot to the thread; `Err` gives it back when the thread
    /// is gone.
    fn request(&self, snapshot: Box<Capture>) -> Result<(), Box<Capture>> {
        match &self.requests {
            Some(tx) => tx.send(snapshot).map_err(|e| e.0),
            None => Err(snapshot),
        }
    }

    /// The outcome of the save in flight if it has ended; never waits.
    fn poll(&self) -> Option<Outcome> {
        match self.done.try_recv() {
            Ok(o) => Some(o),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => Some(gone()),
        }
    }

    /// Waits for the outcome of the save in flight (start and shutdown),
    /// at most [`AUDIT_DRAIN_AT_EXIT`]: past it the save is abandoned, so
    /// a hung disk cannot hold a stopping daemon forever.
    fn wait(&mut self) -> Outcome {
        match self.done.recv_timeout(AUDIT_DRAIN_AT_EXIT) {
            Ok(o) => o,
            Err(RecvTimeoutError::Timeout) => {
                self.abandoned = true;
                Outcome {
                    result: Err(format!(
                        "the snapshot write in flight had not finished after {} s",
                        AUDIT_DRAIN_AT_EXIT.as_secs()
                    )),
                    us: 0,
                    gone: true,
                }
            }
            Err(RecvTimeoutError::Disconnected) => gone(),
        }
    }
}

fn gone() -> Outcome {
    Outcome {
        result: Err("the snapshot thread ended".into()),
        us: 0,
        gone: true,
    }
}

impl Drop for Saver {
    fn drop(&mut self) {
        // Closing the channel ends the thread once its save returns.
        self.requests = None;
        if let Some(t) = self.thread.take().filter(|_| !self.abandoned) {
            let _ = t.join();
        }
    }
}

impl Persistence {
    /// Writes the snapshot when it changed and the flush interval passed,
    /// or always when `force` (start, shutdown: then on the caller, after
    /// any save in flight). Otherwise it is handed to the `reeve-save`
    /// thread and this returns at once; a save in flight defers the next.
    pub fn maybe_save(
        &mut self,
        d: &Discovery,
        gov: Option<&GovernanceView>,
        log: &mut Logger,
        force: bool,
    ) {
        self.collect_save(log, force);
        let now = sys::realtime_ms();
        let stats = d.stats();
        // Only what the snapshot holds counts as a change: scans and read
        // errors are counted in memory but never saved, so an idle daemon
        // writes nothing.
        // An overflow's start is saved (so `reeve status` shows it), not
        // its every repetition.
        let held = DiscoveryStats {
            scans: 0,
            seen_overflow: stats.seen_overflow.min(1),
            read_errors: 0,
            ..stats
        };
        let version = (held, gov.map_or(0, |g| g.generation));
        let changed = self.saved != Some(version);
        if self.save_disabled
            || self.save_in_flight.is_some()
            || !(force || changed && now.saturating_sub(self.last_save_ms) >= FLUSH_INTERVAL_MS)
        {
            return;
        }
        let counters = state::add_counters(&self.base, &stats);
        let empty = GovernanceView::default();
        let mut snapshot = Capture::take(
            d,
            gov.unwrap_or(&empty),
            log.last_audit_seq(),
            sys::getpid(),
            self.started_ms,
            &counters,
            now,
        );
        snapshot.set_instance(&self.instance);
        if !force {
            let handed = match &self.saver {
                Some(saver) => saver.request(Box::new(snapshot)),
                None => Err(Box::new(snapshot)),
            };
            match handed {
                Ok(()) => {
                    self.save_in_flight = Some((version, now));
                    return;
                }
                Err(back) => {
                    // The thread is gone: write on the loop rather than
                    // not at all.
                    self.saver = None;
                    snapshot = *back;
                }
            }
        }
        let began = sys::monotonic_ns();
        let result = snapshot.into_state().save(&self.dir);
        let us = sys::monotonic_ns().saturating_sub(began) / 1000;
        let outcome = Outcome {
            result,
            us,
            gone: false,
        };
        self.finish_save(version, now, outcome, force, log);
    }

    /// Whether a snapshot is being written: the loop comes back within
    /// `REPORT_WITHIN_MS` to take its outcome.
    pub fn save_in_flight(&self) -> bool {
        self.save_in_flight.is_some()
    }

    /// Takes the outcome of the save in flight if it ended; with `wait`,
    /// waits for it.
    fn collect_save(&mut self, log: &mut Logger, wait: bool) {
        let (Some((version, at)), Some(saver)) = (self.save_in_flight, self.saver.as_mut()) else {
            return;
        };
        let outcome = if wait {
            saver.wait()
        } else {
            match saver.poll() {
                Some(o) => o,
                None => return,
            }
        };
        self.save_in_flight = None;
        if self.saver.as_ref().is_some_and(|s| s.abandoned) {
            // The forced save that follows would hang on the same disk:
            // none is made (the failure is said below).
            self.save_disabled = true;
        }
        if outcome.gone {
            // Later saves run on the caller.
            self.saver = None;
        }
        self.finish_save(version, at, outcome, wait, log);
    }

    fn finish_save(
        &mut self,
        version: (DiscoveryStats, u64),
        at: u64,
        Outcome { result, us, .. }: Outcome,
        force: bool,
        log: &mut Logger,
    ) {
        self.save_seconds.observe_us(us);
        self.save_failing = result.is_err();
        match result {
            Ok(()) => {
                self.saves += 1;
                self.saved = Some(version);
                self.last_save_ms = at;
            }
            Err(e) => {
                self.save_failures += 1;
                // Retry at the next interval; say so at most once a minute.
                self.last_save_ms = at;
                let now = sys::realtime_ms();
                if force || now.saturating_sub(self.last_error_ms) >= SAVE_ERROR_EVERY_MS {
                    self.last_error_ms = now;
                    log.error(
                        "state_save_failed",
                        &[
                            ("error", Val::S(&e)),
                            (
                                "action",
                                Val::S("the previous state file is intact; retrying every second"),
                            ),
                        ],
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LogFormat, LogLevel};
    use crate::store::LogOptions;
    use crate::tempdir::TempDir;
    use std::time::{Duration, Instant};

    #[test]
    fn a_due_snapshot_is_written_by_the_thread_and_collected_later() {
        let t = TempDir::new("persist-save");
        let state_dir = t.path().join("state");
        let mut log = Logger::new(LogFormat::Text, LogLevel::Error);
        let mut p = Persistence::open(&state_dir, LogOptions::default(), &mut log).unwrap();
        let d = Discovery::new(&[], 16).unwrap();
        let file = state_dir.join(state::STATE_FILE);
        p.maybe_save(&d, None, &mut log, false);
        assert!(p.save_in_flight(), "handed to reeve-save, not written here");
        assert_eq!(p.saves, 0, "not counted before its outcome is taken");
        // Nothing changed since: the next call only looks for the outcome.
        let until = Instant::now() + Duration::from_secs(10);
        while p.save_in_flight() {
            assert!(Instant::now() < until, "the snapshot thread never reported");
            std::thread::sleep(Duration::from_millis(1));
            p.maybe_save(&d, None, &mut log, false);
        }
        assert_eq!((p.saves, p.save_failures), (1, 0));
        assert!(!p.save_failing);
        let loaded = std::fs::read(&file).unwrap();
        assert!(serde_json::from_slice::<serde_json::Value>(&loaded).is_ok());
        // Unchanged and not forced: nothing more is written.
        p.maybe_save(&d, None, &mut log, false);
        assert!(!p.save_in_flight());
        // Forced (shutdown): written on the caller, at once.
        p.maybe_save(&d, None, &mut log, true);
        assert!(!p.save_in_flight());
        assert_eq!(p.saves, 2);
    }
}
