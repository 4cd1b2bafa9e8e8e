//! The watch loop's side of supervised jobs and of running as PID 1: the
//! jobs' pidfds after the fixed head of the poll set, their timers in the
//! poll timeout, SIGCHLD (PID 1 only) for orphans, and the stop.
//!
//! Invariant: nothing here waits; a job's start, end and stop are steps
//! taken in a wakeup, and a PID-1 stop is a state of the loop (jobs told,
//! their pidfds and timeouts polled) rather than a wait.

use std::os::fd::AsRawFd;

use super::{Daemon, Stop};
use crate::log::Val;
use crate::metrics::text::Exposition;
use crate::sys;

/// The poll set's fixed head: signalfd, netlink, stderr, the heartbeat
/// socket; then the places of the running exec hooks' fds; supervised
/// jobs' pidfds follow from [`JOB_FDS_AT`].
pub(super) const BASE_FDS: usize = 4;
pub(super) const JOB_FDS_AT: usize = BASE_FDS + super::liveness::POLL_FDS;

/// The signals the daemon's signalfd takes: SIGCHLD too when reeve is
/// PID 1, for the orphans the kernel reparents to it.
pub(super) fn signal_set() -> &'static [libc::c_int] {
    if sys::getpid() == 1 {
        &sys::PID1_SIGNALS
    } else {
        &sys::DAEMON_SIGNALS
    }
}

impl Daemon {
    /// Fills the poll set (in its storage reserved at start) and waits in
    /// poll(2). stderr is polled only while log lines wait for it.
    pub(super) fn poll_wakeup(&mut self, wait_ms: i32) -> Result<(), String> {
        let fds = &mut self.pollfds;
        fds.clear();
        fds.extend([
            sys::poll_fd(self.signals.as_raw_fd()),
            sys::poll_fd(self.connector.as_ref().map_or(-1, |c| c.fd())),
            libc::pollfd {
                fd: self.log.stderr_backlog_fd().unwrap_or(-1),
                events: libc::POLLOUT,
                revents: 0,
            },
            sys::poll_fd(self.heart.as_ref().map_or(-1, |h| h.fd())),
        ]);
        // The running exec hooks' fds (or -1) in their fixed places, then
        // the jobs' pidfds.
        fds.resize(JOB_FDS_AT, sys::poll_fd(-1));
        self.live.poll_fds(&mut fds[BASE_FDS..JOB_FDS_AT]);
        self.jobs.poll_fds(fds);
        sys::poll(fds, wait_ms).map_err(|e| format!("poll failed: {e}"))?;
        Ok(())
    }

    /// At the start of a wakeup: due starts, readiness, the stop's kills;
    /// the loop's end once a PID-1 stop is over.
    pub(super) fn jobs_wakeup(&mut self) -> Option<Stop> {
        self.jobs.tick(&mut self.log);
        let sig = self.stopping?;
        self.jobs
            .stop_finished(&mut self.log)
            .then_some(Stop::Signal(sig))
    }

    /// After poll: the jobs whose pidfd is readable have ended.
    pub(super) fn jobs_polled(&mut self) {
        let fds = self.pollfds.get(JOB_FDS_AT..).unwrap_or(&[]);
        self.jobs.polled(fds, &mut self.log);
    }

    /// SIGCHLD: as PID 1, reap every ended child. Not PID 1, reeve's only
    /// children are its own (jobs, reaped through their pidfds), so there
    /// are no orphans to reap.
    pub(super) fn jobs_sigchld(&mut self) {
        if !self.jobs.is_pid1() {
            return;
        }
        // A running exec hook is reaped by liveness, which waits for it
        // through its pidfd; every other ended child is a job's or an
        // orphan's.
        let live = &self.live;
        self.jobs
            .reap_orphans(&mut self.log, &|pid| live.owns_child(pid));
    }

    /// A terminating signal. As PID 1 with jobs running, the signal is
    /// forwarded and the loop goes on until they ended or their timeouts
    /// passed; otherwise the loop ends now and the jobs keep running.
    pub(super) fn stop_requested(&mut self, sig: i32) -> Option<Stop> {
        if !self.jobs.is_pid1() {
            return Some(Stop::Signal(sig));
        }
        if self.stopping.is_none() {
            self.log.info(
                "pid1_stopping",
                &[
                    ("signal", Val::I(sig.into())),
                    ("note", Val::S("running jobs are told to stop first")),
                ],
            );
        }
        if self.jobs.begin_stop(sig, &mut self.log) {
            self.stopping.get_or_insert(sig);
            None
        } else {
            Some(Stop::Signal(self.stopping.unwrap_or(sig)))
        }
    }

    /// When the loop has ended: what becomes of each job (not PID 1: they
    /// keep running and the next daemon adopts them).
    pub(super) fn jobs_at_exit(&mut self) {
        if !self.jobs.is_pid1() {
            self.jobs.report_left(&mut self.log);
        }
    }

    /// The supervised jobs' metric families (docs/METRICS.md), rendered
    /// only when the config has jobs or reeve is PID 1.
    pub(super) fn render_jobs(&self, e: &mut Exposition<'_>) {
        if self.config.jobs.is_empty() && !self.jobs.is_pid1() {
            return;
        }
        let n = self.jobs.counters;
        let families = [
            (
                "reeve_supervised_starts_total",
                "Supervised job processes started.",
                n.starts,
            ),
            (
                "reeve_supervised_start_failures_total",
                "Supervised job starts that failed (each retried after its backoff).",
                n.start_failures,
            ),
            (
                "reeve_supervised_exits_total",
                "Supervised job processes that ended.",
                n.exits,
            ),
            (
                "reeve_supervised_restarts_total",
                "Restarts scheduled by a restart policy.",
                n.restarts,
            ),
            (
                "reeve_supervised_restart_loops_total",
                "Jobs the restart-loop guard stopped.",
                n.guard_trips,
            ),
            (
                "reeve_supervised_adopted_total",
                "Running jobs adopted at start from a previous daemon.",
                n.adopted,
            ),
            (
                "reeve_orphans_reaped_total",
                "Orphans reaped as PID 1.",
                n.orphans_reaped,
            ),
        ];
        for (name, help, v) in families {
            e.single(name, "counter", help, v as f64);
        }
        e.single(
            "reeve_supervised_running",
            "gauge",
            "Supervised jobs whose process runs.",
            self.jobs.running() as f64,
        );
    }
}
