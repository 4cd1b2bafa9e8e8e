//! Recovery: what reeve does about a stalled or ended process, per its
//! rule's `on_stall` / `on_exit` actions.
//!
//! [`Recovery::act`] is the one entry point, for a stall of any cause (the
//! progress watchdog, heartbeats) and for an exit. It passes the guard
//! first (a debounce per process, at most `max_actions` per window per
//! job; past that it stops acting and says so: `actions_suppressed`), then
//! runs each action:
//! - `signal`: through a pidfd opened after an identity check
//!   ([`signal`]); an escalation (`then` after `grace`) holds the same
//!   pidfd, so a recycled pid is never hit;
//! - `kill_job`: cgroup.kill of the process's own job group;
//! - `exec`: a hook, run asynchronously ([`hooks`]).
//!
//! Invariant: nothing here waits on another process. Escalations and hooks
//! are deadlines and fds the daemon folds into its one poll(2); every
//! outcome is an event and a counter.

pub mod guard;
pub mod hooks;
pub mod signal;

use std::path::Path;

use crate::cgroup::Group;
use crate::config::{substitute, Action, Guard, LogLevel, Signal};
use crate::log::{Logger, Val};
use crate::procfs::{ProcKey, ProcReader};

/// Escalations pending at once; beyond, an escalation is refused (said
/// and counted) and only the first signal is sent.
pub const MAX_ESCALATIONS: usize = 256;

/// What happened, to whom: the input of [`Recovery::act`].
#[derive(Debug, Clone, Copy)]
pub struct Incident<'a> {
    pub key: ProcKey,
    pub rule: &'a str,
    /// What the guard counts actions per: the governed job group's name,
    /// else the rule's name.
    pub job: &'a str,
    /// The job group of the process, when it has one of its own (for
    /// `kill_job`).
    pub group: Option<&'a Path>,
    /// `stalled` or `exited` (the `{event}` placeholder).
    pub event: &'a str,
}

/// Action kinds and outcomes counted for metrics: `actions[kind][outcome]`
/// (exec hooks have their own [`hooks::HookStats`]).
pub const KINDS: [&str; 3] = ["signal", "escalation", "kill_job"];
pub const OUTCOMES: [&str; 4] = ["done", "refused", "gone", "failed"];

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecoveryStats {
    pub actions: [[u64; 4]; 3],
    pub suppressed: u64,
    pub debounced: u64,
    /// Signals sent with kill(2) after an identity check, the kernel
    /// having no pidfd_open.
    pub signals_without_pidfd: u64,
    pub hooks: hooks::HookStats,
}

const SIGNAL: usize = 0;
const ESCALATION: usize = 1;
const KILL_JOB: usize = 2;
const DONE: usize = 0;
const REFUSED: usize = 1;
const GONE: usize = 2;
const FAILED: usize = 3;

struct Escalation {
    key: ProcKey,
    target: signal::Target,
    then: Signal,
    due_ns: u64,
    rule: String,
    job: String,
}

pub struct Recovery {
    guards: guard::Guards,
    escalations: Vec<Escalation>,
    hooks: hooks::Hooks,
    stats: RecoveryStats,
}

impl Default for Recovery {
    fn default() -> Recovery {
        Recovery::new()
    }
}

/// The fields every action event starts with.
fn who<'a>(inc: &'a Incident<'a>) -> [(&'static str, Val<'a>); 5] {
    [
        ("pid", Val::U(inc.key.pid.into())),
        ("start_ticks", Val::U(inc.key.start_ticks)),
        ("rule", Val::S(inc.rule)),
        ("job", Val::S(inc.job)),
        ("trigger", Val::S(inc.event)),
    ]
}

/// Logs `event` about an incident: its five fields ([`who`]), then `more`
/// (at most three), in one fixed array.
fn tell<'a>(
    log: &mut Logger,
    level: LogLevel,
    event: &str,
    head: &[(&'static str, Val<'a>); 5],
    more: &[(&'static str, Val<'a>)],
) {
    let mut fields = [("", Val::U(0)); 8];
    fields[..5].copy_from_slice(head);
    let n = 5 + more.len().min(3);
    fields[5..n].copy_from_slice(&more[..n - 5]);
    log.log(level, event, &fields[..n]);
}

impl Recovery {
    pub fn new() -> Recovery {
        Recovery {
            guards: guard::Guards::default(),
            escalations: Vec::with_capacity(MAX_ESCALATIONS),
            hooks: hooks::Hooks::new(),
            stats: RecoveryStats::default(),
        }
    }

    pub fn stats(&self) -> RecoveryStats {
        RecoveryStats {
            hooks: self.hooks.stats(),
            ..self.stats
        }
    }

    /// Runs `actions` for `inc`, if the guard allows. `log` alone is the
    /// event the caller already wrote, so it passes no guard.
    pub fn act(
        &mut self,
        inc: &Incident,
        actions: &[Action],
        g: &Guard,
        now_ns: u64,
        reader: &mut ProcReader,
        log: &mut Logger,
    ) {
        if actions.iter().all(|a| *a == Action::Log) {
            return;
        }
        // Per-process job groups (each new process of a rule gets one)
        // count together, per rule: a crash loop makes a new group each
        // time, and the guard exists to catch it. A pool counts as itself.
        let counted_as = if inc.group.is_some() {
            inc.rule
        } else {
            inc.job
        };
        match self.guards.check(counted_as, inc.key, g, now_ns) {
            guard::Verdict::Act => {}
            guard::Verdict::Debounced => {
                self.stats.debounced += 1;
                let debounce_ms = g.debounce.as_millis() as u64;
                let w = who(inc);
                tell(
                    log,
                    LogLevel::Info,
                    "action_debounced",
                    &w,
                    &[("debounce_ms", Val::U(debounce_ms))],
                );
                return;
            }
            guard::Verdict::Suppressed { first } => {
                self.stats.suppressed += 1;
                let w = who(inc);
                let fields = [
                    w[0],
                    w[1],
                    w[2],
                    w[3],
                    w[4],
                    ("max_actions", Val::U(g.max_actions.into())),
                    ("window_ms", Val::U(g.window.as_millis() as u64)),
                    ("suppressed_total", Val::U(self.stats.suppressed)),
                    (
                        "effect",
                        Val::S(
                            "reeve stops acting on this job until the window moves on; \
                                find why it keeps stalling or ending",
                        ),
                    ),
                ];
                // Said once per episode; the rest of it is counted.
                if first {
                    log.error("actions_suppressed", &fields);
                } else {
                    log.debug("actions_suppressed", &fields);
                }
                return;
            }
            guard::Verdict::Full => {
                self.stats.suppressed += 1;
                let w = who(inc);
                tell(
                    log,
                    LogLevel::Error,
                    "actions_suppressed",
                    &w,
                    &[
                        ("reason", Val::S("the guard's tables are full")),
                        ("effect", Val::S("no action taken")),
                    ],
                );
                return;
            }
        }
        for a in actions {
            match a {
                Action::Log => {}
                Action::Signal {
                    signal,
                    then,
                    grace,
                } => self.signal(inc, *signal, *then, *grace, now_ns, reader, log),
                Action::KillJob => self.kill_job(inc, log),
                Action::Exec { argv, timeout } => {
                    let argv = argv
                        .iter()
                        .map(|a| substitute(a, inc.key.pid, inc.job, inc.rule, inc.event))
                        .collect();
                    let req = hooks::Request {
                        argv,
                        timeout: *timeout,
                        label: hooks::Label {
                            pid: inc.key.pid,
                            start_ticks: inc.key.start_ticks,
                            rule: inc.rule.to_string(),
                            job: inc.job.to_string(),
                            event: inc.event.to_string(),
                        },
                    };
                    self.hooks.submit(req, now_ns, log);
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn signal(
        &mut self,
        inc: &Incident,
        sig: Signal,
        then: Option<Signal>,
        grace: std::time::Duration,
        now_ns: u64,
        reader: &mut ProcReader,
        log: &mut Logger,
    ) {
        let outcome = signal::open(inc.key, reader).and_then(|t| {
            signal::pause_before_signal(inc.key);
            t.send(sig.0).map(|()| t)
        });
        let w = who(inc);
        let target = match outcome {
            Ok(t) => t,
            Err(signal::Refusal::Gone) => {
                self.stats.actions[SIGNAL][GONE] += 1;
                tell(
                    log,
                    LogLevel::Warn,
                    "action_refused",
                    &w,
                    &[
                        ("action", Val::S("signal")),
                        ("signal", Val::S(sig.name())),
                        (
                            "reason",
                            Val::S("the process ended or its pid was reused; nothing was sent"),
                        ),
                    ],
                );
                return;
            }
            Err(signal::Refusal::NoPidfd) => {
                self.stats.actions[SIGNAL][REFUSED] += 1;
                self.stats.signals_without_pidfd += 1;
                let reason = signal::Refusal::NoPidfd.to_string();
                tell(
                    log,
                    LogLevel::Error,
                    "action_refused",
                    &w,
                    &[
                        ("action", Val::S("signal")),
                        ("signal", Val::S(sig.name())),
                        ("reason", Val::S(&reason)),
                    ],
                );
                return;
            }
            Err(signal::Refusal::Failed(e)) => {
                self.stats.actions[SIGNAL][FAILED] += 1;
                tell(
                    log,
                    LogLevel::Error,
                    "action_failed",
                    &w,
                    &[
                        ("action", Val::S("signal")),
                        ("signal", Val::S(sig.name())),
                        ("error", Val::S(&e)),
                    ],
                );
                return;
            }
        };
        self.stats.actions[SIGNAL][DONE] += 1;
        let via = "pidfd";
        tell(
            log,
            LogLevel::Warn,
            "action_taken",
            &w,
            &[
                ("action", Val::S("signal")),
                ("signal", Val::S(sig.name())),
                ("via", Val::S(via)),
            ],
        );
        let Some(then) = then else { return };
        if self.escalations.len() >= MAX_ESCALATIONS {
            self.stats.actions[ESCALATION][REFUSED] += 1;
            tell(
                log,
                LogLevel::Error,
                "action_refused",
                &w,
                &[
                    ("action", Val::S("escalation")),
                    ("signal", Val::S(then.name())),
                    (
                        "reason",
                        Val::S("too many escalations pending; only the first signal was sent"),
                    ),
                ],
            );
            return;
        }
        self.escalations.push(Escalation {
            key: inc.key,
            target,
            then,
            due_ns: now_ns.saturating_add(u64::try_from(grace.as_nanos()).unwrap_or(u64::MAX)),
            rule: inc.rule.to_string(),
            job: inc.job.to_string(),
        });
    }

    fn kill_job(&mut self, inc: &Incident, log: &mut Logger) {
        let w = who(inc);
        let Some(group) = inc.group else {
            self.stats.actions[KILL_JOB][REFUSED] += 1;
            tell(log, LogLevel::Error, "action_refused", &w, &[
                ("action", Val::S("kill_job")),
                ("reason", Val::S("the process is in no job group of its own (not attached yet, or attach failed)")),
            ]);
            return;
        };
        let path = group.display().to_string();
        match Group::new(group).kill() {
            Ok(()) => {
                self.stats.actions[KILL_JOB][DONE] += 1;
                tell(
                    log,
                    LogLevel::Warn,
                    "action_taken",
                    &w,
                    &[("action", Val::S("kill_job")), ("cgroup", Val::S(&path))],
                );
            }
            Err(e) => {
                self.stats.actions[KILL_JOB][FAILED] += 1;
                let error = e.to_string();
                tell(
                    log,
                    LogLevel::Error,
                    "action_failed",
                    &w,
                    &[("action", Val::S("kill_job")), ("error", Val::S(&error))],
                );
            }
        }
    }

    /// Whether `pid` is a running hook's (reaped by the hooks, not by a
    /// PID-1 orphan sweep).
    pub fn runs_hook(&self, pid: u32) -> bool {
        self.hooks.runs(pid)
    }

    /// The fds the loop polls for running hooks (see [`hooks::POLL_FDS`]).
    pub fn poll_fds(&self, out: &mut [libc::pollfd]) {
        self.hooks.poll_fds(out);
    }

    /// When the loop must come back for an escalation or a hook.
    pub fn deadline_ns(&self, now_ns: u64) -> Option<u64> {
        let esc = self.escalations.iter().map(|e| e.due_ns).min();
        match (esc, self.hooks.deadline_ns(now_ns)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Escalations that are due, hook output and ends. Call once per
    /// wakeup; never waits.
    pub fn service(&mut self, now_ns: u64, log: &mut Logger) {
        let mut i = 0;
        while i < self.escalations.len() {
            if self.escalations[i].due_ns > now_ns {
                i += 1;
                continue;
            }
            let e = self.escalations.swap_remove(i);
            self.escalate(e, log);
        }
        self.hooks.service(now_ns, log);
    }

    fn escalate(&mut self, e: Escalation, log: &mut Logger) {
        let base = [
            ("pid", Val::U(e.key.pid.into())),
            ("start_ticks", Val::U(e.key.start_ticks)),
            ("rule", Val::S(&e.rule)),
            ("job", Val::S(&e.job)),
            ("signal", Val::S(e.then.name())),
        ];
        let sent = if e.target.ended() {
            Err(signal::Refusal::Gone)
        } else {
            e.target.send(e.then.0)
        };
        match sent {
            Ok(()) => {
                self.stats.actions[ESCALATION][DONE] += 1;
                log.warn("action_escalated", &base);
            }
            Err(signal::Refusal::Gone) => {
                self.stats.actions[ESCALATION][GONE] += 1;
                tell(
                    log,
                    LogLevel::Info,
                    "escalation_skipped",
                    &base,
                    &[("reason", Val::S("the process ended within the grace"))],
                );
            }
            // A target always holds a pidfd; say so rather than assume.
            Err(err @ (signal::Refusal::Failed(_) | signal::Refusal::NoPidfd)) => {
                let err = err.to_string();
                self.stats.actions[ESCALATION][FAILED] += 1;
                tell(
                    log,
                    LogLevel::Error,
                    "action_failed",
                    &base,
                    &[("action", Val::S("escalation")), ("error", Val::S(&err))],
                );
            }
        }
    }

    /// At daemon stop: pending escalations are dropped (said), running
    /// hooks killed and reaped (at most `within`).
    pub fn shutdown(&mut self, within: std::time::Duration, log: &mut Logger) {
        for e in self.escalations.drain(..) {
            self.stats.actions[ESCALATION][REFUSED] += 1;
            log.warn(
                "action_refused",
                &[
                    ("pid", Val::U(e.key.pid.into())),
                    ("start_ticks", Val::U(e.key.start_ticks)),
                    ("rule", Val::S(&e.rule)),
                    ("job", Val::S(&e.job)),
                    ("action", Val::S("escalation")),
                    ("signal", Val::S(e.then.name())),
                    ("reason", Val::S("reeve is stopping")),
                ],
            );
        }
        self.hooks.shutdown(within, log);
    }
}

#[cfg(test)]
mod tests;
