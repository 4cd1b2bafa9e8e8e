//! The loop's liveness duties: the progress watchdog over the tracked
//! processes whose rule sets `stall_after`, and the rules' `on_stall` and
//! `on_exit` actions through [`Recovery`].
//!
//! The loop calls [`Liveness::watch_new`] with what discovery queued (new
//! identities), [`Liveness::exits`] with what it queued as ended, and
//! [`Liveness::wakeup`] once per wakeup; it polls [`Liveness::poll_fds`]
//! and wakes by [`Liveness::deadline_ns`]. Nothing here waits: a tick
//! samples a bounded number of processes, and hooks and escalations are
//! fds and deadlines in the loop's poll(2).

use super::Work;
use crate::config::{Config, Rule};
use crate::discovery::Discovery;
use crate::liveness::progress::{self, Verdict, Watchdog};
use crate::log::{Logger, Val};
use crate::metrics::text::Exposition;
use crate::procfs::ProcKey;
use crate::recovery::{self, Incident, Recovery};
use crate::state::GovernanceView;

/// Pollfds the loop adds for liveness.
pub(super) const POLL_FDS: usize = recovery::hooks::POLL_FDS;
/// How long a stopping daemon gives its hooks to die after SIGKILL.
const HOOKS_AT_EXIT: std::time::Duration = std::time::Duration::from_secs(1);

pub(super) struct Liveness {
    watchdog: Watchdog,
    recovery: Recovery,
    /// One tick's verdicts, allocated once.
    verdicts: Vec<Verdict>,
}

/// The rule a tracked identity runs under, if the running config has it.
fn rule_of<'c>(
    config: &'c Config,
    d: &Discovery,
    rule: crate::discovery::RuleId,
) -> Option<&'c Rule> {
    d.rule_index(rule).and_then(|i| config.targets.get(i))
}

/// What the guard counts per, and the group `kill_job` kills: the job
/// group the process is governed in (a per-process job only), else the
/// rule's name and no group.
fn job_of<'v>(
    gov: Option<&'v GovernanceView>,
    key: &ProcKey,
    rule: &'v str,
) -> (&'v str, Option<&'v std::path::Path>) {
    match gov.and_then(|g| g.procs.get(key)) {
        Some(g) if g.job.starts_with("job.") => (g.job.as_str(), Some(g.cgroup.as_path())),
        Some(g) => (g.job.as_str(), None),
        None => (rule, None),
    }
}

impl Liveness {
    pub(super) fn new(capacity: usize) -> Liveness {
        Liveness {
            watchdog: Watchdog::new(capacity),
            recovery: Recovery::new(),
            verdicts: Vec::with_capacity(progress::SAMPLES_PER_TICK),
        }
    }

    /// Watches the new identities in `items` whose rule sets `stall_after`.
    pub(super) fn watch_new(
        &mut self,
        items: &[Work],
        config: &Config,
        d: &Discovery,
        log: &mut Logger,
    ) {
        let now = crate::sys::monotonic_ns();
        for &(key, rule) in items {
            let Some(after) = rule_of(config, d, rule).and_then(|r| r.liveness.stall_after) else {
                continue;
            };
            if !self.watchdog.watch(key, rule, after, now) {
                log.error(
                    "watch_refused",
                    &[
                        ("pid", Val::U(key.pid.into())),
                        ("start_ticks", Val::U(key.start_ticks)),
                        ("rule", Val::S(d.rule_name(rule))),
                        (
                            "reason",
                            Val::S("the watch list is full (it holds capacity processes)"),
                        ),
                        ("effect", Val::S("this process is not checked for stalls")),
                    ],
                );
            }
        }
    }

    /// After a reload: every live tracked identity is watched again under
    /// its rule's current `stall_after`.
    pub(super) fn reloaded(&mut self, config: &Config, d: &Discovery, log: &mut Logger) {
        self.watchdog = Watchdog::new(config.capacity);
        let live: Vec<Work> = d
            .tracked()
            .iter()
            .filter(|(_, t)| t.alive())
            .map(|(k, t)| (*k, t.rule))
            .collect();
        self.watch_new(&live, config, d, log);
    }

    /// Runs the `on_exit` actions of the ended identities in `items`.
    pub(super) fn exits(
        &mut self,
        items: &[Work],
        config: &Config,
        d: &mut Discovery,
        gov: Option<&GovernanceView>,
        log: &mut Logger,
    ) {
        let now = crate::sys::monotonic_ns();
        for &(key, rule) in items {
            self.run_actions(key, rule, "exited", config, d, gov, now, log);
        }
    }

    /// One call per wakeup: a watchdog tick if one is due (each verdict an
    /// event, each stall its rule's `on_stall`), then escalations and hooks.
    pub(super) fn wakeup(
        &mut self,
        config: &Config,
        d: &mut Discovery,
        gov: Option<&GovernanceView>,
        log: &mut Logger,
    ) {
        let now = crate::sys::monotonic_ns();
        let mut verdicts = std::mem::take(&mut self.verdicts);
        verdicts.clear();
        self.watchdog.tick(now, d.reader(), |v| verdicts.push(v));
        for v in &verdicts {
            self.verdict(*v, config, d, gov, now, log);
        }
        self.verdicts = verdicts;
        self.recovery.service(now, log);
    }

    fn verdict(
        &mut self,
        v: Verdict,
        config: &Config,
        d: &mut Discovery,
        gov: Option<&GovernanceView>,
        now: u64,
        log: &mut Logger,
    ) {
        match v {
            Verdict::Resumed {
                key,
                rule,
                stalled_for,
            } => log.info(
                "resumed",
                &[
                    ("pid", Val::U(key.pid.into())),
                    ("start_ticks", Val::U(key.start_ticks)),
                    ("rule", Val::S(d.rule_name(rule))),
                    ("cause", Val::S("no_progress")),
                    ("stalled_ms", Val::U(stalled_for.as_millis() as u64)),
                ],
            ),
            Verdict::Stalled {
                key,
                rule,
                idle,
                stall_after,
            } => {
                log.warn(
                    "stalled",
                    &[
                        ("pid", Val::U(key.pid.into())),
                        ("start_ticks", Val::U(key.start_ticks)),
                        ("rule", Val::S(d.rule_name(rule))),
                        ("cause", Val::S("no_progress")),
                        ("idle_ms", Val::U(idle.as_millis() as u64)),
                        ("stall_after_ms", Val::U(stall_after.as_millis() as u64)),
                    ],
                );
                self.on_stall(key, rule, config, d, gov, now, log);
            }
        }
    }

    /// Runs the rule's `on_stall` actions for a stall of any cause (the
    /// watchdog here; heartbeats call it too). The caller has logged the
    /// `stalled` event with its cause.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_stall(
        &mut self,
        key: ProcKey,
        rule: crate::discovery::RuleId,
        config: &Config,
        d: &mut Discovery,
        gov: Option<&GovernanceView>,
        now: u64,
        log: &mut Logger,
    ) {
        self.run_actions(key, rule, "stalled", config, d, gov, now, log);
    }

    /// The rule's actions for `event` (`stalled`: `on_stall`, `exited`:
    /// `on_exit`) on `key`, under the rule's guard.
    #[allow(clippy::too_many_arguments)]
    fn run_actions(
        &mut self,
        key: ProcKey,
        rule: crate::discovery::RuleId,
        event: &'static str,
        config: &Config,
        d: &mut Discovery,
        gov: Option<&GovernanceView>,
        now: u64,
        log: &mut Logger,
    ) {
        // A rule a reload removed has no actions any more.
        let Some(r) = rule_of(config, d, rule) else {
            return;
        };
        let actions = match event {
            "exited" => &r.liveness.on_exit,
            _ => &r.liveness.on_stall,
        };
        if actions.is_empty() {
            return;
        }
        let (job, group) = job_of(gov, &key, &r.name);
        let inc = Incident {
            key,
            rule: &r.name,
            job,
            group,
            event,
        };
        self.recovery
            .act(&inc, actions, &r.liveness.guard, now, d.reader(), log);
    }

    /// When the loop must wake for liveness next (monotonic ns).
    pub(super) fn deadline_ns(&self, now_ns: u64) -> Option<u64> {
        match (
            self.watchdog.deadline_ns(),
            self.recovery.deadline_ns(now_ns),
        ) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether `pid` is one of reeve's children that liveness reaps (a
    /// running exec hook).
    pub(super) fn owns_child(&self, pid: u32) -> bool {
        self.recovery.runs_hook(pid)
    }

    pub(super) fn poll_fds(&self, out: &mut [libc::pollfd]) {
        self.recovery.poll_fds(out);
    }

    /// The liveness families of /metrics (docs/METRICS.md lists them).
    pub(super) fn render(&self, e: &mut Exposition<'_>) {
        let p = self.watchdog.stats();
        let r = self.recovery.stats();
        e.single(
            "reeve_progress_watched",
            "gauge",
            "Processes the progress watchdog samples (their rule sets stall_after).",
            self.watchdog.len() as f64,
        );
        let counters = [
            ("reeve_progress_samples_total", "Progress samples taken (a stat and an io read each).", p.samples),
            ("reeve_stalls_total", "Stalls the progress watchdog saw (one per stall run).", p.stalls),
            ("reeve_resumes_total", "Stalled processes that made progress again.", p.resumes),
            ("reeve_progress_watch_refused_total", "Processes not watched because the watch list was full.", p.refused),
            ("reeve_progress_read_errors_total", "Progress reads that failed for a reason other than the process ending.", p.read_errors),
            ("reeve_actions_suppressed_total", "Actions not taken because the job reached max_actions in its window (or the guard's tables were full).", r.suppressed),
            ("reeve_actions_debounced_total", "Actions not taken because the same process was acted on within the debounce.", r.debounced),
            ("reeve_signals_without_pidfd_total", "Signals refused because the kernel has no pidfd_open (nothing is sent by pid).", r.signals_without_pidfd),
        ];
        for (name, help, v) in counters {
            e.single(name, "counter", help, v as f64);
        }
        e.family(
            "reeve_actions_total",
            "counter",
            "Signal, escalation and kill_job actions by outcome (done; refused; gone: the process ended or its pid was reused, nothing sent; failed).",
        );
        for (k, kind) in recovery::KINDS.iter().enumerate() {
            for (o, outcome) in recovery::OUTCOMES.iter().enumerate() {
                let labels = [("action", *kind), ("outcome", *outcome)];
                e.sample("reeve_actions_total", &labels, r.actions[k][o] as f64);
            }
        }
        e.family(
            "reeve_hooks_total",
            "counter",
            "Exec hooks by outcome (started; succeeded: exit 0; failed: other exit or signal; timed_out; spawn_failed; refused: queue full).",
        );
        let h = r.hooks;
        let hooks = [
            ("started", h.started),
            ("succeeded", h.succeeded),
            ("failed", h.failed),
            ("timed_out", h.timed_out),
            ("spawn_failed", h.spawn_failed),
            ("refused", h.refused),
        ];
        for (outcome, v) in hooks {
            e.sample("reeve_hooks_total", &[("outcome", outcome)], v as f64);
        }
    }

    pub(super) fn shutdown(&mut self, log: &mut Logger) {
        self.recovery.shutdown(HOOKS_AT_EXIT, log);
    }
}
