//! Supervised jobs: the commands of the config's `jobs` list, which the
//! daemon starts itself and keeps running (restart policy, exponential
//! backoff with jitter, restart-loop guard, readiness after a delay).
//!
//! Each job's process runs in its own session and its own group
//! (`job.<name>`, limits in force before exec, as `reeve run`), so it
//! outlives a crash of the daemon; it is watched through a pidfd in the
//! daemon's poll set, never waited for. A restarted daemon adopts a job
//! its group still holds (identity = pid + start ticks, checked around
//! the pidfd's opening) and never starts it a second time: a start is
//! refused while the job's group holds any process.
//!
//! States of one job, and the only steps between them:
//! `Due` (start at a time) → `Running` (a pidfd on a checked identity) →
//! `Due` again (policy says restart, after the backoff) or `Held` (policy,
//! restart-loop guard, or the PID-1 stop says no more). Every step is an
//! event. Invariant: nothing is ever signalled except through the pidfd of
//! a job's checked identity.

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use crate::cgroup::{Group, Hierarchy};
use crate::config::{Config, JobSpec};
use crate::log::{Logger, Val};
use crate::placement::Records;
use crate::procfs::{ProcKey, ProcReader};
use crate::sys::{self, PollFd};

mod launch;
mod pid1;
pub mod policy;

use policy::{Ending, StartWindow};

/// How soon a start the records lock deferred is tried again.
const LOCK_RETRY: Duration = Duration::from_millis(100);

/// Counts since the daemon started, for status and metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counters {
    pub starts: u64,
    pub start_failures: u64,
    pub exits: u64,
    pub restarts: u64,
    pub guard_trips: u64,
    pub adopted: u64,
    pub orphans_reaped: u64,
}

/// One job's state.
enum State {
    /// To be started at this monotonic time.
    Due {
        at_ns: u64,
    },
    Running(Running),
    /// Not started again until the daemon restarts; says why.
    Held {
        why: &'static str,
    },
}

/// A job's process, known by identity and held by a pidfd.
struct Running {
    key: ProcKey,
    pidfd: OwnedFd,
    /// reeve started it in this life, so it is reeve's child and its exit
    /// status can be reaped; an adopted process's cannot.
    child: bool,
    started_ns: u64,
    ready: bool,
    /// PID-1 stop: when it is killed if it has not ended.
    kill_at_ns: Option<u64>,
    killed: bool,
}

struct Job {
    spec: JobSpec,
    state: State,
    /// Restarts since the last healthy run (see [`Supervisor::ended`]).
    attempt: u32,
    window: StartWindow,
}

/// The daemon's supervised jobs.
pub struct Supervisor {
    jobs: Vec<Job>,
    /// Where job groups live and their records; `None` when the cgroup
    /// hierarchy or the state directory could not be used (said at start;
    /// no job starts then).
    place: Option<(Hierarchy, Records)>,
    reader: Option<ProcReader>,
    pid1: bool,
    pub counters: Counters,
    stop: Option<pid1::Stop>,
}

impl Supervisor {
    /// Reads the jobs of `config`. Nothing is started or adopted yet
    /// ([`Supervisor::start`]).
    pub fn new(config: &Config, log: &mut Logger) -> Supervisor {
        let pid1 = sys::getpid() == 1;
        let jobs: Vec<Job> = config
            .jobs
            .iter()
            .map(|spec| Job {
                spec: spec.clone(),
                state: State::Due { at_ns: 0 },
                attempt: 0,
                window: StartWindow::new(spec.restart_guard),
            })
            .collect();
        let mut sup = Supervisor {
            jobs,
            place: None,
            reader: None,
            pid1,
            counters: Counters::default(),
            stop: None,
        };
        if sup.jobs.is_empty() {
            return sup;
        }
        let setup = Hierarchy::detect(config.cgroup_root.as_deref())
            .map_err(|e| e.to_string())
            .and_then(|h| {
                let records = Records::open(&config.state_dir).map_err(|e| e.to_string())?;
                let reader = ProcReader::open().map_err(|e| format!("/proc: cannot open: {e}"))?;
                Ok((h, records, reader))
            });
        match setup {
            Ok((h, records, reader)) => {
                sup.place = Some((h, records));
                sup.reader = Some(reader);
            }
            Err(why) => {
                log.error(
                    "job_setup_failed",
                    &[
                        ("jobs", Val::U(sup.jobs.len() as u64)),
                        ("reason", Val::S(&why)),
                        (
                            "effect",
                            Val::S("no supervised job is started or adopted until reeve restarts"),
                        ),
                    ],
                );
                for job in &mut sup.jobs {
                    job.state = State::Held {
                        why: "not started: job groups could not be set up",
                    };
                }
            }
        }
        sup
    }

    /// Jobs whose process runs now.
    pub fn running(&self) -> usize {
        self.jobs
            .iter()
            .filter(|j| matches!(j.state, State::Running(_)))
            .count()
    }

    /// Whether reeve runs as PID 1 (reaps orphans, stops its jobs when told
    /// to stop).
    pub fn is_pid1(&self) -> bool {
        self.pid1
    }

    /// At daemon start: each job whose group still holds its process is
    /// adopted; the others are due now.
    pub fn start(&mut self, log: &mut Logger) {
        for i in 0..self.jobs.len() {
            if matches!(self.jobs[i].state, State::Due { .. }) {
                self.adopt(i, log);
            }
        }
    }

    /// Appends the pidfds of running jobs to `fds`, in job order.
    pub fn poll_fds(&self, fds: &mut Vec<PollFd>) {
        for job in &self.jobs {
            if let State::Running(r) = &job.state {
                fds.push(sys::poll_fd(r.pidfd.as_raw_fd()));
            }
        }
    }

    /// Handles the pidfds [`Supervisor::poll_fds`] appended, after poll:
    /// a readable one has ended.
    pub fn polled(&mut self, fds: &[PollFd], log: &mut Logger) {
        let mut k = 0;
        for i in 0..self.jobs.len() {
            if !matches!(self.jobs[i].state, State::Running(_)) {
                continue;
            }
            let readable = fds.get(k).is_some_and(sys::is_readable);
            k += 1;
            if readable {
                self.reap(i, log);
            }
        }
    }

    /// Timed work: due starts, readiness, the PID-1 stop's kills.
    pub fn tick(&mut self, log: &mut Logger) {
        let now = sys::monotonic_ns();
        for i in 0..self.jobs.len() {
            let ready = self.jobs[i].spec.ready;
            let delay = nanos(ready.delay);
            match &self.jobs[i].state {
                State::Due { at_ns } if *at_ns <= now && self.stop.is_none() => self.launch(i, log),
                // A job ready by heartbeat waits for its first beat.
                State::Running(r)
                    if !r.ready
                        && !ready.heartbeat
                        && now.saturating_sub(r.started_ns) >= delay =>
                {
                    self.mark_ready(i, "delay", log)
                }
                _ => {}
            }
        }
        self.stop_tick(now, log);
    }

    /// Milliseconds until the next timed work, capped at `cap`.
    pub fn wait_ms(&self, cap: i32) -> i32 {
        let now = sys::monotonic_ns();
        let mut next = u64::MAX;
        for job in &self.jobs {
            match &job.state {
                State::Due { at_ns } if self.stop.is_none() => next = next.min(*at_ns),
                State::Running(r) => {
                    if !r.ready && !job.spec.ready.heartbeat {
                        next = next.min(r.started_ns.saturating_add(nanos(job.spec.ready.delay)));
                    }
                    if let (Some(at), false) = (r.kill_at_ns, r.killed) {
                        next = next.min(at);
                    }
                }
                _ => {}
            }
        }
        if let Some(at) = self.stop.as_ref().map(|s| s.give_up_ns) {
            next = next.min(at);
        }
        if next == u64::MAX {
            return cap;
        }
        let ms = next.saturating_sub(now).div_ceil(1_000_000);
        let ms = i32::try_from(ms).unwrap_or(i32::MAX);
        if cap < 0 {
            ms
        } else {
            ms.min(cap)
        }
    }

    /// Whether `key` is a running job's process (a heartbeat sender the
    /// listener admits without a rule).
    pub fn runs(&self, key: ProcKey) -> bool {
        self.jobs
            .iter()
            .any(|j| matches!(&j.state, State::Running(r) if r.key == key))
    }

    /// A verified heartbeat from `key` (pid and start time, read by the
    /// listener) makes the job running as that process ready at once: the
    /// readiness of a job with `ready.heartbeat`, and an early one before
    /// a job's `ready.delay`.
    pub fn beat_from(&mut self, key: ProcKey, log: &mut Logger) {
        let found = self.jobs.iter().position(|j| match &j.state {
            State::Running(r) => r.key == key && !r.ready,
            _ => false,
        });
        if let Some(i) = found {
            self.mark_ready(i, "heartbeat", log);
        }
    }

    fn mark_ready(&mut self, i: usize, by: &str, log: &mut Logger) {
        let job = &mut self.jobs[i];
        let State::Running(r) = &mut job.state else {
            return;
        };
        r.ready = true;
        log.info(
            "job_ready",
            &[
                ("job", Val::S(&job.spec.name)),
                ("pid", Val::U(r.key.pid.into())),
                ("start_ticks", Val::U(r.key.start_ticks)),
                ("by", Val::S(by)),
            ],
        );
    }

    /// A running job's pidfd is readable: reaps it when it is reeve's
    /// child, then applies the policy.
    fn reap(&mut self, i: usize, log: &mut Logger) {
        let State::Running(r) = &self.jobs[i].state else {
            return;
        };
        let ending = if r.child {
            match sys::reap_pidfd(&r.pidfd) {
                Ok(Some(exit)) => Ending::Known(exit),
                // Readable yet not waitable: the exit is still being
                // reported; the pidfd stays readable, so the next wakeup
                // comes back for it.
                Ok(None) => return,
                Err(e) => {
                    log.warn(
                        "job_status_unknown",
                        &[
                            ("job", Val::S(&self.jobs[i].spec.name)),
                            ("pid", Val::U(r.key.pid.into())),
                            ("error", Val::S(&e.to_string())),
                            (
                                "effect",
                                Val::S("its end is handled with an unknown status"),
                            ),
                        ],
                    );
                    Ending::Unknown
                }
            }
        } else {
            Ending::Unknown
        };
        self.ended(i, ending, log);
    }

    /// The job's process ended: the event, its leftovers, the next step.
    fn ended(&mut self, i: usize, ending: Ending, log: &mut Logger) {
        let now = sys::monotonic_ns();
        let job = &mut self.jobs[i];
        let State::Running(r) = &job.state else {
            return;
        };
        self.counters.exits += 1;
        let key = r.key;
        let ran = Duration::from_nanos(now.saturating_sub(r.started_ns));
        let was_stopping = r.kill_at_ns.is_some();
        let killed = r.killed;
        // A run longer than the longest wait was healthy: the next
        // failure starts the backoff from `initial` again.
        if ran > job.spec.backoff.max {
            job.attempt = 0;
        }
        let how = ending.describe();
        let ran_ms = ran.as_millis() as u64;
        let restart = !was_stopping && policy::restarts(job.spec.restart, ending);
        let next = if was_stopping {
            "stopped"
        } else if restart {
            "restart"
        } else {
            "held"
        };
        log.info(
            "job_exited",
            &[
                ("job", Val::S(&job.spec.name)),
                ("pid", Val::U(key.pid.into())),
                ("start_ticks", Val::U(key.start_ticks)),
                ("status", Val::S(&how)),
                ("ran_ms", Val::U(ran_ms)),
                ("killed", Val::Bool(killed)),
                ("next", Val::S(next)),
            ],
        );
        if let Some(stop) = self.stop.as_mut() {
            stop.note(ending, killed);
        }
        self.kill_leftovers(i, log);
        let job = &mut self.jobs[i];
        job.state = if was_stopping {
            State::Held {
                why: "stopped: reeve is stopping",
            }
        } else if restart {
            job.attempt = job.attempt.saturating_add(1);
            let random = random_or_zero(log);
            let wait = policy::backoff(&job.spec.backoff, job.attempt, random);
            self.counters.restarts += 1;
            log.info(
                "job_restarting",
                &[
                    ("job", Val::S(&job.spec.name)),
                    ("in_ms", Val::U(wait.as_millis() as u64)),
                    ("attempt", Val::U(job.attempt.into())),
                ],
            );
            State::Due {
                at_ns: now.saturating_add(nanos(wait)),
            }
        } else {
            State::Held {
                why: "ended; its restart policy does not start it again",
            }
        };
    }

    /// Processes the job's main process left in its group are ended
    /// through cgroup.kill: the group is the job's alone, and the next
    /// start needs it empty.
    fn kill_leftovers(&mut self, i: usize, log: &mut Logger) {
        let Some((h, _)) = &self.place else {
            return;
        };
        let name = &self.jobs[i].spec.name;
        let Ok(path) = h.job_path(name) else {
            // Config-validated names always make a path.
            return;
        };
        let group = Group::new(&path);
        match group.populated() {
            Ok(false) => {}
            Ok(true) => {
                let result = group.kill();
                let (level_error, reason) = match &result {
                    Ok(()) => (false, String::new()),
                    Err(e) => (true, e.to_string()),
                };
                let cgroup = path.to_string_lossy();
                let fields = [
                    ("job", Val::S(name)),
                    ("cgroup", Val::S(&cgroup)),
                    ("error", Val::S(&reason)),
                ];
                if level_error {
                    log.error("job_leftovers_not_killed", &fields);
                } else {
                    log.info("job_leftovers_killed", &fields[..2]);
                }
            }
            Err(e) => log.warn(
                "job_leftovers_unknown",
                &[("job", Val::S(name)), ("error", Val::S(&e.to_string()))],
            ),
        }
    }
}

/// A duration in nanoseconds, saturating.
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Jitter for a backoff: getrandom(2); when it fails (never after early
/// boot), the wait is the lower bound and the failure is said.
fn random_or_zero(log: &mut Logger) -> u64 {
    match sys::random_u64() {
        Ok(r) => r,
        Err(e) => {
            log.warn(
                "job_jitter_unavailable",
                &[
                    ("error", Val::S(&e.to_string())),
                    (
                        "effect",
                        Val::S("the restart waits the backoff's lower bound"),
                    ),
                ],
            );
            0
        }
    }
}

impl Supervisor {
    /// At daemon stop (not PID 1): one `job_left` line per job, saying
    /// whether its process keeps running (adopted by the next daemon) or
    /// why it is not running.
    pub fn report_left(&self, log: &mut Logger) {
        for job in &self.jobs {
            let (pid, start_ticks, state) = match &job.state {
                State::Running(r) => (r.key.pid, r.key.start_ticks, "keeps running"),
                State::Due { .. } => (0, 0, "not running; started when reeve starts again"),
                State::Held { why } => (0, 0, *why),
            };
            log.info(
                "job_left",
                &[
                    ("job", Val::S(&job.spec.name)),
                    ("pid", Val::U(pid.into())),
                    ("start_ticks", Val::U(start_ticks)),
                    ("state", Val::S(state)),
                ],
            );
        }
    }
}
