//! The watch loop: one thread, one poll(2) over a signalfd, the netlink
//! socket and the supervised jobs' pidfds, one computed deadline (the next
//! scan, or a job's next timed step, see `jobs.rs`).
//!
//! States: *running* (events are handled as they arrive, a scan runs when
//! the deadline passes: every `scan_interval` when polling or while a
//! process waits to be evaluated again, every `rescan_interval` while
//! netlink reports events, at once after an overrun), *stopping jobs* (PID 1
//! only: a terminating signal was forwarded to the jobs, and the loop runs
//! on until they ended or their timeouts passed) and *stopping* (a
//! terminating signal arrived; the loop logs `stopped` and returns). Each wakeup does bounded work: at most
//! [`MAX_DATAGRAMS_PER_WAKE`] netlink datagrams, then at most one scan, so a
//! flood of process events cannot starve signals or scans. Signals are
//! turned into readable bytes by signalfd; no work happens in a handler.

use std::path::PathBuf;
use std::time::Duration;

mod autoattach;
pub mod beats;
mod discover;
mod jobs;
mod kernelfilter;
mod liveness;
mod naming;
mod observe;
mod persist;
mod reload;
mod render;
mod sink;

use sink::{cleanup_skipped, mark, push_bounded};

use crate::config::{Config, DiscoveryMode, LogLevel};
use crate::discovery::netlink::ProcConnector;
use crate::discovery::{Discovery, RuleId, Step};
use crate::log::{Logger, Val};
use crate::procfs::activity::Activity;
use crate::procfs::ProcKey;
use crate::store::eventlog::REPORT_WITHIN_MS;
use crate::sys;

/// Netlink datagrams handled per wakeup before the loop looks at signals
/// and timers again.
pub const MAX_DATAGRAMS_PER_WAKE: usize = 4096;
/// In netlink mode, one safety-net scan in this many rescan intervals is
/// deep (reads every pid's stat).
const DEEP_EVERY: u32 = 10;
/// How long a stopping daemon waits for a slow stderr reader to take the
/// last lines.
const STDERR_DRAIN_AT_EXIT: Duration = Duration::from_secs(1);
/// How long to wait for the kernel to acknowledge the netlink subscription.
const NETLINK_HANDSHAKE: Duration = Duration::from_secs(1);

/// Governance work waiting for the loop: an identity and its rule's stable
/// id (a reload between queueing and draining changes neither).
pub type Work = (ProcKey, RuleId);

/// How soon the loop comes back for work a lock held by another process
/// kept it from doing (deferred attaches, queued audit events).
const RETRY_MS: u64 = 100;

/// What the governance queues hold after a wakeup's bounded share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backlog {
    Empty,
    /// More than one wakeup's share: come back at once.
    More,
    /// Items wait for a lock another process holds: come back after
    /// [`RETRY_MS`], not at once (no spinning on someone else's lock).
    Blocked,
}

/// Why the loop ended.
enum Stop {
    Signal(i32),
}

pub struct Daemon {
    config: Config,
    config_path: Option<PathBuf>,
    log: Logger,
    discovery: Discovery,
    connector: Option<ProcConnector>,
    signals: std::os::fd::OwnedFd,
    /// When the last scan ended; the next is due one interval later
    /// ([`Daemon::next_scan_ns`]).
    last_scan_ns: u64,
    /// When the last deep scan ended.
    last_deep_ns: u64,
    need_deep: bool,
    /// The host's fork and thread counters read just before the last scan
    /// began: a steady rescan is skipped while they stand still.
    activity_at_scan: Option<Activity>,
    auto: Option<autoattach::AutoAttach>,
    persist: persist::Persistence,
    to_attach: Vec<Work>,
    ended: Vec<Work>,
    overrides: LogOverrides,
    /// How stderr is written (see [`Logger::nonblocking_stderr`]).
    stderr_mode: &'static str,
    /// Metrics publishing and service manager notifications.
    obs: observe::Observer,
    kernel_filter: kernelfilter::KernelFilter,
    /// Supervised jobs (`jobs` in the config), and PID-1 duties.
    jobs: crate::supervise::Supervisor,
    /// The poll set, rebuilt each wakeup in storage reserved at start.
    pollfds: Vec<sys::PollFd>,
    /// PID 1 only: the terminating signal whose job stop is under way.
    stopping: Option<i32>,
    /// The progress watchdog and the rules' recovery actions.
    live: liveness::Liveness,
    /// The heartbeat listener and its senders (a `heartbeat` section).
    heart: Option<beats::Heart>,
    /// This daemon life's random id (16 hex digits).
    instance: String,
}

/// Log settings given on the command line; they win over the config file,
/// also after a reload.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogOverrides {
    pub format: Option<crate::config::LogFormat>,
    pub level: Option<LogLevel>,
}

impl Daemon {
    /// Sets up discovery and the signal fd. Errors are one line for the
    /// operator; the caller exits 1.
    pub fn new(
        config: Config,
        config_path: Option<PathBuf>,
        mut log: Logger,
        overrides: LogOverrides,
    ) -> Result<Daemon, String> {
        // From here on a stderr nobody reads costs log lines, never the loop.
        let stderr_mode = match log.nonblocking_stderr() {
            Ok(how) => how,
            Err(e) => {
                // A closed fd 2 has nothing to block on; the failure of
                // every write is counted.
                log.warn(
                    "stderr_unavailable",
                    &[
                        ("error", Val::S(&e.to_string())),
                        (
                            "effect",
                            Val::S("log lines on stderr are counted as failed writes"),
                        ),
                    ],
                );
                "blocking"
            }
        };
        let signals = sys::signalfd_for(jobs::signal_set())
            .map_err(|e| format!("cannot set up signal handling: {e}"))?;
        let mut persist =
            persist::Persistence::open(&config.state_dir, config.audit_options(), &mut log)?;
        let discovery = Discovery::new(&config.targets, config.capacity)
            .map_err(|e| format!("cannot open /proc: {e}"))?;
        let connector = match config.discovery.mode {
            DiscoveryMode::Poll => None,
            DiscoveryMode::Netlink => {
                Some(ProcConnector::open(NETLINK_HANDSHAKE).map_err(|why| {
                    format!("discovery.mode is \"netlink\" but {why}; use \"auto\" or \"poll\"")
                })?)
            }
            DiscoveryMode::Auto => match ProcConnector::open(NETLINK_HANDSHAKE) {
                Ok(c) => Some(c),
                Err(why) => {
                    let scan = crate::units::format_duration(config.discovery.scan_interval);
                    log.warn(
                        "discovery_mode",
                        &[
                            ("mode", Val::S("poll")),
                            ("reason", Val::S(&why)),
                            (
                                "effect",
                                Val::S(&format!(
                                    "targets are found by a full /proc scan every {scan}"
                                )),
                            ),
                        ],
                    );
                    None
                }
            },
        };
        let auto = autoattach::AutoAttach::new(&config, &mut log);
        // After signalfd_for: the endpoint's threads inherit the blocked
        // signal mask, so a terminating signal reaches the signalfd and
        // never kills the process through a worker.
        let obs = observe::start(&config, &mut log)?;
        let heart = beats::open(&config, &mut log)?;
        let mut id = [0u8; 8];
        sys::getrandom(&mut id).map_err(|e| format!("getrandom: {e}"))?;
        let instance = format!("{:016x}", u64::from_le_bytes(id));
        persist.instance.clone_from(&instance);
        let queue = config.capacity;
        let jobs = crate::supervise::Supervisor::new(&config, &mut log);
        let pollfds = Vec::with_capacity(jobs::JOB_FDS_AT + config.jobs.len());
        let live = liveness::Liveness::new(config.capacity);
        Ok(Daemon {
            config,
            config_path,
            log,
            discovery,
            connector,
            signals,
            last_scan_ns: 0,
            last_deep_ns: 0,
            need_deep: true,
            activity_at_scan: None,
            auto,
            persist,
            to_attach: Vec::with_capacity(queue),
            ended: Vec::with_capacity(queue),
            overrides,
            stderr_mode,
            obs,
            kernel_filter: kernelfilter::KernelFilter::new(queue),
            jobs,
            pollfds,
            stopping: None,
            live,
            heart,
            instance,
        })
    }

    fn mode_name(&self) -> &'static str {
        if self.connector.is_some() {
            "netlink"
        } else {
            "poll"
        }
    }

    /// Runs until a terminating signal. Governed processes are left as
    /// they are; so are supervised jobs, except when reeve is PID 1, which
    /// stops them first. Returns the exit status (see
    /// [`crate::supervise::Supervisor::exit_status`]).
    pub fn run(mut self) -> Result<i32, String> {
        let config_name = self
            .config_path
            .as_ref()
            .map_or_else(|| "embedded".to_string(), |p| p.display().to_string());
        let state_dir = self.config.state_dir.display().to_string();
        let cgroup_root = match &self.auto {
            Some(g) => g.root().display().to_string(),
            None if self.config.targets.iter().any(autoattach::governs) => {
                "none: governance could not be set up (see the error above)".to_string()
            }
            // Supervised jobs use the root on their own (their groups are
            // set up by the supervisor, which says so in its own events).
            None if !self.config.jobs.is_empty() => format!(
                "{} for supervised jobs only: no rule sets limits or a pool",
                self.config.cgroup_root.as_ref().map_or_else(
                    || "the detected root".to_string(),
                    |p| p.display().to_string()
                )
            ),
            None => "none: no rule sets limits or a pool".to_string(),
        };
        self.log.info(
            "started",
            &[
                ("version", Val::S(env!("CARGO_PKG_VERSION"))),
                ("instance", Val::S(&self.instance)),
                ("pid", Val::U(sys::getpid().into())),
                ("mode", Val::S(self.mode_name())),
                ("capacity", Val::U(self.config.capacity as u64)),
                (
                    "seen_capacity",
                    Val::U(self.discovery.seen_capacity() as u64),
                ),
                ("rules", Val::U(self.config.targets.len() as u64)),
                (
                    "scan_interval_ms",
                    Val::U(self.config.discovery.scan_interval.as_millis() as u64),
                ),
                (
                    "rescan_interval_ms",
                    Val::U(self.config.discovery.rescan_interval.as_millis() as u64),
                ),
                ("config", Val::S(&config_name)),
                ("stderr", Val::S(self.stderr_mode)),
                ("state_dir", Val::S(&state_dir)),
                ("cgroup_root", Val::S(&cgroup_root)),
            ],
        );
        let restored = self.persist.restore(&mut self.discovery, &mut self.log);
        self.live.watch_new(
            &restored.running,
            &self.config,
            &self.discovery,
            &mut self.log,
        );
        let queued_at_start = self.to_attach.len();
        if let Some(gov) = self.auto.as_mut() {
            gov.adopt_existing(&mut self.discovery, &self.config.targets, &mut self.log);
            // A restored target its rule governs but no group holds was
            // discovered by a daemon that died before attaching it.
            for &(key, rule) in &restored.running {
                let governed = self
                    .discovery
                    .rule_index(rule)
                    .and_then(|i| self.config.targets.get(i))
                    .is_some_and(autoattach::governs);
                if governed && !gov.knows(&key) && !push_bounded(&mut self.to_attach, (key, rule)) {
                    self.log.error(
                        "attach_failed",
                        &[
                            ("pid", Val::U(key.pid.into())),
                            ("start_ticks", Val::U(key.start_ticks)),
                            ("rule", Val::S(self.discovery.rule_name(rule))),
                            ("reason", Val::S("attach queue full at start")),
                        ],
                    );
                }
            }
        }
        self.mark_queued(queued_at_start);
        // What ended while reeve was down is handled as an exit it saw: a
        // per-process job left empty is removed (`job_removed`).
        for &(key, rule) in &restored.ended {
            if !push_bounded(&mut self.ended, (key, rule)) {
                cleanup_skipped(
                    &mut self.log,
                    key,
                    "the sweep of empty per-process jobs below removes its group",
                );
            }
        }
        // Per-process jobs left empty by a daemon that stopped or died
        // before it cleaned them up.
        if let Some(gov) = self.auto.as_mut() {
            gov.sweep_empty_jobs(&self.config.targets, &mut self.log);
        }
        // What was restored and adopted is on disk before anything else.
        let view = self.auto.as_ref().map(|g| &g.view);
        self.persist
            .maybe_save(&self.discovery, view, &mut self.log, true);
        self.jobs.start(&mut self.log);
        let result = self.event_loop();
        self.log.release_lines();
        self.jobs_at_exit();
        self.live.shutdown(&mut self.log);
        self.obs.stopping(&mut self.log);
        let view = self.auto.as_ref().map(|g| &g.view);
        self.persist
            .maybe_save(&self.discovery, view, &mut self.log, true);
        if let Ok(Stop::Signal(sig)) = result {
            self.log.info(
                "stopped",
                &[
                    ("reason", Val::S("signal")),
                    ("instance", Val::S(&self.instance)),
                    ("signal", Val::I(sig.into())),
                    ("tracked", Val::U(self.discovery.live().into())),
                    ("note", Val::S("tracked processes keep running")),
                ],
            );
        }
        // Also when the loop failed: what is queued lands if it can, and
        // the caller's error line follows the last log lines.
        self.persist.finish(&mut self.log);
        self.log.drain_stderr(STDERR_DRAIN_AT_EXIT);
        result.map(|_| self.jobs.exit_status())
    }

    fn event_loop(&mut self) -> Result<Stop, String> {
        loop {
            if let Some(stop) = self.jobs_wakeup() {
                return Ok(stop);
            }
            let now = sys::monotonic_ns();
            if self.need_deep || now >= self.next_scan_ns() {
                let queued = self.to_attach.len();
                let ended = self.ended.len();
                self.scan_now()?;
                self.mark_queued(queued);
                self.liveness_news(queued, ended);
            }
            self.discovery.evict_expired(sys::realtime_ms());
            let backlog = self.govern_some();
            // The lines of this wakeup's events, held while process events
            // were handled and placed: nothing but the move waits on an exec.
            self.log.release_lines();
            let queued = (self.to_attach.len(), self.ended.len());
            self.refresh_kernel_filter();
            self.mark_queued(queued.0);
            self.liveness_news(queued.0, queued.1);
            let backlog = match backlog {
                Backlog::Empty if (self.to_attach.len(), self.ended.len()) != queued => {
                    Backlog::More
                }
                other => other,
            };
            let view = self.auto.as_ref().map(|g| &g.view);
            self.persist
                .maybe_save(&self.discovery, view, &mut self.log, false);
            self.persist.tick(&mut self.log);
            self.observe_wakeup();
            let view = self.auto.as_ref().map(|g| &g.view);
            self.live
                .wakeup(&self.config, &mut self.discovery, view, &mut self.log);
            // As PID 1, orphans are swept every wakeup, not only on SIGCHLD:
            // a sweep stops at a child whose owner reaps it (a hook, reaped
            // just above), and signalfd folds SIGCHLDs into one.
            self.jobs_sigchld();

            let now = sys::monotonic_ns();
            let next = match self.live.deadline_ns(now) {
                Some(live) => live.min(self.next_scan_ns()),
                None => self.next_scan_ns(),
            };
            let to_scan_ms = next.saturating_sub(now).div_ceil(1_000_000);
            let audit_waits = self.log.audit_mut().is_some_and(|a| a.pending() > 0);
            // A background fdatasync or snapshot in flight is collected
            // (the durable point reported, a failure said) within
            // REPORT_WITHIN_MS; a busy loop looks sooner anyway.
            let syncing = self.log.audit_mut().is_some_and(|a| a.sync_in_flight())
                || self.persist.save_in_flight();
            // A durable point that found the lock busy is retried like
            // queued events, not at once.
            let reporting = self.log.audit_mut().is_some_and(|a| a.report_pending());
            let to_scan_ms = match (syncing, reporting) {
                (true, _) => to_scan_ms.min(REPORT_WITHIN_MS),
                (false, true) => to_scan_ms.min(RETRY_MS),
                (false, false) => to_scan_ms,
            };
            let wait_ms = match backlog {
                Backlog::More => 0,
                // Another process holds a lock: come back soon, not at once.
                Backlog::Blocked => to_scan_ms.min(RETRY_MS),
                Backlog::Empty if audit_waits => to_scan_ms.min(RETRY_MS),
                Backlog::Empty => to_scan_ms,
            };
            let wait_ms = wait_ms.min(i32::MAX as u64) as i32;
            let wait_ms = self.beats_cap_wait(self.obs.cap_wait(wait_ms));
            let wait_ms = self.jobs.wait_ms(wait_ms);
            self.poll_wakeup(wait_ms)?;
            let fds = &self.pollfds;
            let stderr_ready = fds[2].revents != 0;
            let (signal_ready, netlink_ready, beat_ready) = (
                sys::is_readable(&fds[0]),
                sys::is_readable(&fds[1]),
                sys::is_readable(&fds[3]),
            );
            self.obs.woke();
            if stderr_ready {
                self.log.flush_stderr();
            }
            self.jobs_polled();
            if signal_ready {
                if let Some(stop) = self.handle_signals()? {
                    return Ok(stop);
                }
            }
            if netlink_ready {
                let queued = self.to_attach.len();
                let ended = self.ended.len();
                self.log.hold_lines();
                self.drain_netlink();
                self.mark_queued(queued);
                self.liveness_news(queued, ended);
            }
            self.beats_wakeup(beat_ready);
            self.heartbeat_stalls();
        }
    }

    /// Drains a bounded part of the governance queues. Without auto-attach
    /// (no rule governs, or it is unavailable and said so) they are dropped.
    /// An item that would have to wait on another process (the records
    /// lock held by a CLI command) stays queued, in order, for the next
    /// wakeup. Returns whether items that can proceed at once are left, so
    /// the loop polls without sleeping only then.
    fn govern_some(&mut self) -> Backlog {
        let Some(gov) = self.auto.as_mut() else {
            self.to_attach.clear();
            self.ended.clear();
            return Backlog::Empty;
        };
        let n = self.to_attach.len().min(autoattach::ATTACH_PER_WAKE);
        let mut kept_attach = 0;
        for i in 0..n {
            let (key, rule) = self.to_attach[i];
            // A rule removed by a reload since no longer attaches.
            let current = self.discovery.rule_index(rule);
            let outcome = match current.and_then(|i| self.config.targets.get(i)) {
                Some(r) => gov.attach(&mut self.log, key, r),
                None => {
                    self.log.info(
                        "not_attached",
                        &[
                            ("pid", Val::U(key.pid.into())),
                            ("start_ticks", Val::U(key.start_ticks)),
                            ("rule", Val::S(self.discovery.rule_name(rule))),
                            ("reason", Val::S("its rule was removed by a reload")),
                        ],
                    );
                    autoattach::Outcome::Done
                }
            };
            // The identity's lifecycle step for what the attach did.
            let step = match outcome {
                autoattach::Outcome::Retry => {
                    self.to_attach[kept_attach] = (key, rule);
                    kept_attach += 1;
                    None
                }
                autoattach::Outcome::Adopted => Some(Step::Adopt),
                autoattach::Outcome::Done if gov.knows(&key) => Some(Step::Govern),
                autoattach::Outcome::Done => Some(Step::Release),
            };
            if let Some(step) = step {
                mark(&mut self.discovery, &mut self.log, key, step);
            }
        }
        self.to_attach.drain(kept_attach..n);
        let n = self.ended.len().min(autoattach::ATTACH_PER_WAKE);
        let mut kept_ended = 0;
        for i in 0..n {
            let (key, rule) = self.ended[i];
            let outcome = gov.ended(&mut self.log, key, self.discovery.rule_name(rule));
            if outcome == autoattach::Outcome::Retry {
                self.ended[kept_ended] = (key, rule);
                kept_ended += 1;
            }
        }
        self.ended.drain(kept_ended..n);
        // After this wakeup's moves, so no placement waits for it.
        gov.compact_one(&mut self.log);
        let relimit = gov.relimit_some(&mut self.log);
        if kept_attach + kept_ended > 0 || relimit == autoattach::Outcome::Retry {
            Backlog::Blocked
        } else if self.to_attach.is_empty() && self.ended.is_empty() && !gov.relimit_pending() {
            Backlog::Empty
        } else {
            Backlog::More
        }
    }

    /// What discovery queued since `queued` and `ended` (new and ended
    /// identities) goes to liveness: new ones are watched, ended ones get
    /// their rule's `on_exit` (while their job is still known).
    fn liveness_news(&mut self, queued: usize, ended: usize) {
        let new = self.to_attach.get(queued..).unwrap_or(&[]);
        self.live
            .watch_new(new, &self.config, &self.discovery, &mut self.log);
        let view = self.auto.as_ref().map(|g| &g.view);
        let gone = self.ended.get(ended..).unwrap_or(&[]);
        self.live
            .exits(gone, &self.config, &mut self.discovery, view, &mut self.log);
        // An ended sender is never reported stalled, and its slot goes
        // first when the senders' table is full.
        if let Some(heart) = self.heart.as_mut() {
            for (key, _) in gone {
                heart.ended(key);
            }
        }
    }

    /// Identities queued for attach since `from` are *pending* in their
    /// lifecycle (only when something will attach them).
    fn mark_queued(&mut self, from: usize) {
        if self.auto.is_none() {
            return;
        }
        for i in from..self.to_attach.len() {
            let (key, _) = self.to_attach[i];
            mark(&mut self.discovery, &mut self.log, key, Step::Queue);
        }
    }

    fn handle_signals(&mut self) -> Result<Option<Stop>, String> {
        while let Some(sig) =
            sys::read_signal(&self.signals).map_err(|e| format!("reading signals failed: {e}"))?
        {
            if sig == libc::SIGHUP {
                self.reload();
            } else if sig == libc::SIGCHLD {
                self.jobs_sigchld();
            } else if let Some(stop) = self.stop_requested(sig) {
                return Ok(Some(stop));
            }
        }
        Ok(None)
    }
}
