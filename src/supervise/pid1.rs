//! reeve as PID 1 (a minimal container, an initramfs): orphans the kernel
//! hands to init are reaped, and a terminating signal stops the jobs
//! before reeve exits, with an exit status that says how that went.
//!
//! Invariants: the exit status of a job's process is never taken by the
//! orphan reaper (an ended child is looked at with WNOWAIT first, and a
//! job's is reaped as the job's); every signal goes through the pidfd of a
//! job's checked identity; the stop is bounded (each job's `stop_timeout`,
//! then SIGKILL, then at most [`KILL_GRACE`]).

use std::time::Duration;

use super::policy::Ending;
use super::{nanos, State, Supervisor};
use crate::log::{Logger, Val};
use crate::sys::{self, ChildExit};

/// After SIGKILL, how long the stop waits for the kernel to end a job
/// (a process in uninterruptible sleep dies only when it wakes).
pub const KILL_GRACE: Duration = Duration::from_secs(5);
/// Ended children reaped per wakeup.
const REAP_PER_WAKE: usize = 4096;

/// A stop in progress.
pub(super) struct Stop {
    /// The signal forwarded to the jobs.
    signal: i32,
    /// When the stop ends whatever still runs.
    pub(super) give_up_ns: u64,
    /// Every job ended within its timeout, with status 0 or by the
    /// forwarded signal.
    clean: bool,
}

impl Stop {
    /// A job ended during the stop.
    pub(super) fn note(&mut self, ending: Ending, killed: bool) {
        let by_signal = matches!(
            ending,
            Ending::Known(ChildExit::Signal { signal, .. }) if signal == self.signal
        );
        let ok = ending.succeeded() || by_signal || ending == Ending::Unknown;
        if killed || !ok {
            self.clean = false;
        }
    }
}

impl Supervisor {
    /// A terminating signal arrived while reeve is PID 1: forwards it to
    /// every running job through its pidfd and starts no job again.
    /// Returns `false` when nothing runs, so the daemon may stop at once.
    pub fn begin_stop(&mut self, signal: i32, log: &mut Logger) -> bool {
        if self.stop.is_some() {
            // A second signal while stopping: the timeouts already run.
            return true;
        }
        let now = sys::monotonic_ns();
        let mut give_up = now;
        let mut running = 0;
        for job in &mut self.jobs {
            match &mut job.state {
                State::Running(r) => {
                    running += 1;
                    let kill_at = now.saturating_add(nanos(job.spec.stop_timeout));
                    r.kill_at_ns = Some(kill_at);
                    give_up = give_up.max(kill_at.saturating_add(nanos(KILL_GRACE)));
                    let sent = sys::pidfd_send_signal(&r.pidfd, signal);
                    let error = sent.as_ref().err().map(|e| e.to_string());
                    log.info(
                        "job_stopping",
                        &[
                            ("job", Val::S(&job.spec.name)),
                            ("pid", Val::U(r.key.pid.into())),
                            ("start_ticks", Val::U(r.key.start_ticks)),
                            ("signal", Val::I(signal.into())),
                            (
                                "timeout_ms",
                                Val::U(job.spec.stop_timeout.as_millis() as u64),
                            ),
                            ("error", Val::S(error.as_deref().unwrap_or(""))),
                        ],
                    );
                }
                State::Due { .. } => {
                    job.state = State::Held {
                        why: "stopped: reeve is stopping",
                    }
                }
                State::Held { .. } => {}
            }
        }
        self.stop = Some(Stop {
            signal,
            give_up_ns: give_up,
            clean: true,
        });
        running > 0
    }

    /// During a stop: kills, through its pidfd, each job past its timeout.
    pub(super) fn stop_tick(&mut self, now: u64, log: &mut Logger) {
        if self.stop.is_none() {
            return;
        }
        for job in &mut self.jobs {
            let State::Running(r) = &mut job.state else {
                continue;
            };
            if r.killed || r.kill_at_ns.map_or(true, |at| now < at) {
                continue;
            }
            r.killed = true;
            let sent = sys::pidfd_send_signal(&r.pidfd, libc::SIGKILL);
            let error = sent.as_ref().err().map(|e| e.to_string());
            log.warn(
                "job_killed",
                &[
                    ("job", Val::S(&job.spec.name)),
                    ("pid", Val::U(r.key.pid.into())),
                    ("start_ticks", Val::U(r.key.start_ticks)),
                    ("reason", Val::S("it did not end within its stop_timeout")),
                    ("error", Val::S(error.as_deref().unwrap_or(""))),
                ],
            );
        }
    }

    /// The stop is over: every job ended, or the give-up time passed (said
    /// per job still running).
    pub fn stop_finished(&mut self, log: &mut Logger) -> bool {
        let Some(stop) = self.stop.as_mut() else {
            return false;
        };
        let running: Vec<usize> = (0..self.jobs.len())
            .filter(|&i| matches!(self.jobs[i].state, State::Running(_)))
            .collect();
        if running.is_empty() {
            return true;
        }
        if sys::monotonic_ns() < stop.give_up_ns {
            return false;
        }
        stop.clean = false;
        for i in running {
            if let State::Running(r) = &self.jobs[i].state {
                log.error(
                    "job_stop_abandoned",
                    &[
                        ("job", Val::S(&self.jobs[i].spec.name)),
                        ("pid", Val::U(r.key.pid.into())),
                        (
                            "reason",
                            Val::S("still running after SIGKILL and the grace period"),
                        ),
                    ],
                );
            }
        }
        true
    }

    /// The exit status of a stopped PID 1: 0 when every job that ran ended
    /// within its stop_timeout with status 0 or by the forwarded signal,
    /// 1 otherwise.
    pub fn exit_status(&self) -> i32 {
        match &self.stop {
            Some(s) if !s.clean => 1,
            _ => 0,
        }
    }

    /// PID 1 got SIGCHLD: reaps every ended child. A child that is a job's
    /// process is handled as that job's end (its status goes to the job);
    /// any other is an orphan the kernel reparented to init, and is
    /// counted. `owned_elsewhere` names children another part of the
    /// daemon reaps itself (left waitable for it).
    pub fn reap_orphans(&mut self, log: &mut Logger, owned_elsewhere: &dyn Fn(u32) -> bool) {
        let mut orphans = 0u64;
        for _ in 0..REAP_PER_WAKE {
            let pid = match sys::peek_ended_child() {
                Ok(Some(pid)) => pid,
                Ok(None) => break,
                Err(e) if e.raw_os_error() == Some(libc::ECHILD) => break,
                Err(e) => {
                    log.error(
                        "reap_failed",
                        &[
                            ("error", Val::S(&e.to_string())),
                            ("effect", Val::S("zombies wait for the next SIGCHLD")),
                        ],
                    );
                    break;
                }
            };
            let job = self.jobs.iter().position(|j| match &j.state {
                State::Running(r) => r.child && r.key.pid == pid,
                _ => false,
            });
            if let Some(i) = job {
                self.reap(i, log);
                if matches!(self.jobs[i].state, State::Running(_)) {
                    // Not reaped after all: the pidfd brings it back.
                    break;
                }
                continue;
            }
            if owned_elsewhere(pid) {
                // Its owner reaps it in this wakeup; peeking again would
                // find it first and stop the sweep.
                break;
            }
            match sys::reap_pid(pid) {
                Ok(_) => orphans += 1,
                Err(e) => {
                    log.error(
                        "reap_failed",
                        &[
                            ("pid", Val::U(pid.into())),
                            ("error", Val::S(&e.to_string())),
                        ],
                    );
                    break;
                }
            }
        }
        if orphans > 0 {
            self.counters.orphans_reaped += orphans;
            log.info(
                "orphans_reaped",
                &[
                    ("count", Val::U(orphans)),
                    ("total", Val::U(self.counters.orphans_reaped)),
                ],
            );
        }
    }
}
