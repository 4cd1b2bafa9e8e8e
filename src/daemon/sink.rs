//! What discovery reports, turned into log events and governance work:
//! every report is logged, and each new or ended identity is queued for
//! the loop's bounded governance step (a full queue is an event, never a
//! silent drop).

use super::Work;
use crate::config::LogLevel;
use crate::discovery::{Discovery, ExitStatus, ScanReport, Sink, Source, Step, Tracked};
use crate::log::{Logger, Val};
use crate::procfs::ProcKey;
use crate::table::Refusal;

/// Logs what discovery reports and queues governance work for after the
/// event or scan (the queues are preallocated to the table's capacity, the
/// most identities that can be waiting).
pub(super) struct LogSink<'a> {
    pub(super) log: &'a mut Logger,
    pub(super) to_attach: &'a mut Vec<Work>,
    pub(super) ended: &'a mut Vec<Work>,
}

/// An ended identity whose job clean-up could not be queued.
pub(super) fn cleanup_skipped(log: &mut Logger, key: ProcKey, action: &str) {
    log.warn(
        "job_cleanup_skipped",
        &[
            ("pid", Val::U(key.pid.into())),
            ("start_ticks", Val::U(key.start_ticks)),
            ("reason", Val::S("ended queue full")),
            ("action", Val::S(action)),
        ],
    );
}

pub(super) fn push_bounded(q: &mut Vec<Work>, item: Work) -> bool {
    if q.len() < q.capacity() {
        q.push(item);
        true
    } else {
        false
    }
}

impl Sink for LogSink<'_> {
    fn discovered(&mut self, key: ProcKey, t: &Tracked, rule: &str, source: Source) {
        if !push_bounded(self.to_attach, (key, t.rule)) {
            self.log.error(
                "attach_failed",
                &[
                    ("pid", Val::U(key.pid.into())),
                    ("start_ticks", Val::U(key.start_ticks)),
                    ("rule", Val::S(rule)),
                    ("reason", Val::S("attach queue full")),
                ],
            );
        }
        self.log.info(
            "discovered",
            &[
                ("pid", Val::U(key.pid.into())),
                ("start_ticks", Val::U(key.start_ticks)),
                ("rule", Val::S(rule)),
                ("comm", Val::B(t.comm.as_bytes())),
                ("ppid", Val::U(t.ppid.into())),
                ("uid", Val::U(t.uid.into())),
                ("source", Val::S(source.as_str())),
            ],
        );
    }

    fn exited(&mut self, key: ProcKey, t: &Tracked, rule: &str, status: Option<ExitStatus>) {
        if !push_bounded(self.ended, (key, t.rule)) {
            // The next start's sweep of empty per-process jobs removes it.
            cleanup_skipped(
                self.log,
                key,
                "its empty job group stays until reeve restarts or `reeve detach` removes it",
            );
        }
        let extra = match status {
            Some(ExitStatus::Code(c)) => Some(("exit_code", Val::I(c.into()))),
            Some(ExitStatus::Signal(s)) => Some(("signal", Val::I(s.into()))),
            None => None,
        };
        let fields = [
            ("pid", Val::U(key.pid.into())),
            ("start_ticks", Val::U(key.start_ticks)),
            ("rule", Val::S(rule)),
            ("comm", Val::B(t.comm.as_bytes())),
            extra.unwrap_or(("", Val::U(0))),
        ];
        let n = if extra.is_some() { 5 } else { 4 };
        self.log.info("exited", &fields[..n]);
    }

    fn already_tracked(&mut self, key: ProcKey, source: Source) {
        self.log.debug(
            "already_tracked",
            &[
                ("pid", Val::U(key.pid.into())),
                ("start_ticks", Val::U(key.start_ticks)),
                ("source", Val::S(source.as_str())),
            ],
        );
    }

    fn seen_full(&mut self, capacity: usize, len: usize) {
        self.log.error(
            "seen_set_full",
            &[
                ("capacity", Val::U(capacity as u64)),
                ("held", Val::U(len as u64)),
                (
                    "effect",
                    Val::S("pids beyond it are read on every scan, at a higher CPU cost; targets are still found"),
                ),
                (
                    "action",
                    Val::S("restart reeve after raising kernel.pid_max (the set is sized from it at start) or capacity"),
                ),
            ],
        );
    }

    fn refused(&mut self, key: ProcKey, rule: &str, why: Refusal) {
        self.log.error(
            "capacity_refused",
            &[
                ("pid", Val::U(key.pid.into())),
                ("start_ticks", Val::U(key.start_ticks)),
                ("rule", Val::S(rule)),
                ("reason", Val::S(&why.to_string())),
                (
                    "action",
                    Val::S("not tracked; raise \"capacity\" in the config and restart"),
                ),
            ],
        );
    }
}

/// Takes a lifecycle step for `key`. A refused step changes nothing; it is
/// counted by discovery (`illegal_steps`) and logged here.
pub(super) fn mark(d: &mut Discovery, log: &mut Logger, key: ProcKey, step: Step) {
    if let Err(e) = d.mark(key, step) {
        log.debug(
            "lifecycle_refused",
            &[
                ("pid", Val::U(key.pid.into())),
                ("start_ticks", Val::U(key.start_ticks)),
                ("reason", Val::S(&e.to_string())),
            ],
        );
    }
}

pub(super) fn log_scan(log: &mut Logger, r: &ScanReport) {
    let level = if r.new + r.gone > 0 {
        LogLevel::Info
    } else {
        LogLevel::Debug
    };
    log.log(
        level,
        "scan",
        &[
            ("kind", Val::S(r.kind.as_str())),
            ("found", Val::U(r.found.into())),
            ("new", Val::U(r.new.into())),
            ("tracked", Val::U(r.tracked.into())),
            ("gone", Val::U(r.gone.into())),
            ("duration_us", Val::U(r.duration_us)),
        ],
    );
}
