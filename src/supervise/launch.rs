//! Starting a supervised job and adopting one a previous daemon started.
//!
//! A start prepares the job's group with its limits in force (or does not
//! start), refuses while the group holds any process (so a job is never
//! started twice), writes the job's record, and forks a child that starts
//! its own session, joins the group and execs the command: the command
//! runs no instruction outside its group. The child is then held by a
//! pidfd, opened while it is reeve's unreaped child, so its pid cannot
//! have been reused. Adoption opens the pidfd between two reads of the
//! process's identity, so the pidfd holds the process the record names.

use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{Command, Stdio};

use super::{nanos, Running, State, Supervisor, LOCK_RETRY};
use crate::cgroup::{Group, Hierarchy};
use crate::log::{Logger, Val};
use crate::placement::{self, Member, Placement, Records};
use crate::procfs::{ProcKey, ProcReader, ReadError};
use crate::store::records::RecordError;
use crate::sys;

/// Environment variables reeve's service manager set for reeve alone,
/// removed from a job's environment.
const INHERITED_NOT: [&str; 5] = [
    "NOTIFY_SOCKET",
    "WATCHDOG_PID",
    "WATCHDOG_USEC",
    "LISTEN_FDS",
    "LISTEN_PID",
];

/// Why a start did not happen.
enum Refusal {
    /// The records lock is held by a CLI command: try again shortly.
    Busy,
    /// Counted as a failed start; the backoff applies.
    Failed(String),
}

impl Supervisor {
    /// Starts job `i` now, unless the restart-loop guard refuses.
    pub(super) fn launch(&mut self, i: usize, log: &mut Logger) {
        let now = sys::monotonic_ns();
        let job = &mut self.jobs[i];
        if !job.window.try_start(now) {
            self.counters.guard_trips += 1;
            log.error(
                "job_restart_loop",
                &[
                    ("job", Val::S(&job.spec.name)),
                    ("starts", Val::U(job.window.recent() as u64)),
                    (
                        "window_ms",
                        Val::U(job.spec.restart_guard.window.as_millis() as u64),
                    ),
                    (
                        "effect",
                        Val::S("not started again until reeve restarts; fix the job, then restart reeve"),
                    ),
                ],
            );
            job.state = State::Held {
                why: "held by the restart-loop guard",
            };
            return;
        }
        let (Some((h, records)), Some(reader)) = (&self.place, self.reader.as_mut()) else {
            // Unreachable in practice: without them every job is held at
            // construction. Held, so the loop does not come back at once.
            self.jobs[i].state = State::Held {
                why: "not started: job groups could not be set up",
            };
            return;
        };
        let job = &mut self.jobs[i];
        match spawn(h, records, reader, &job.spec) {
            Ok(started) => {
                self.counters.starts += 1;
                let Launched {
                    key,
                    pidfd,
                    cgroup,
                    record,
                } = started;
                let command = job.spec.command.join(" ");
                log.info(
                    "job_launched",
                    &[
                        ("job", Val::S(&job.spec.name)),
                        ("pid", Val::U(key.pid.into())),
                        ("start_ticks", Val::U(key.start_ticks)),
                        ("cgroup", Val::S(&cgroup)),
                        ("command", Val::S(&command)),
                        ("attempt", Val::U(job.attempt.into())),
                        ("record", Val::S(&record)),
                    ],
                );
                job.state = State::Running(Running {
                    key,
                    pidfd,
                    child: true,
                    // After the fork: preparing the group and writing the
                    // record (synced) are not the job's running time.
                    started_ns: sys::monotonic_ns(),
                    ready: false,
                    kill_at_ns: None,
                    killed: false,
                });
            }
            Err(Refusal::Busy) => {
                // Not a start: the guard forgets it, and only it.
                job.window.undo_last();
                log.debug(
                    "job_launch_deferred",
                    &[
                        ("job", Val::S(&job.spec.name)),
                        (
                            "reason",
                            Val::S("a reeve command holds the job records lock"),
                        ),
                    ],
                );
                job.state = State::Due {
                    at_ns: now.saturating_add(nanos(LOCK_RETRY)),
                };
            }
            Err(Refusal::Failed(why)) => {
                self.counters.start_failures += 1;
                job.attempt = job.attempt.saturating_add(1);
                let random = super::random_or_zero(log);
                let job = &mut self.jobs[i];
                let wait = super::policy::backoff(&job.spec.backoff, job.attempt, random);
                log.error(
                    "job_launch_failed",
                    &[
                        ("job", Val::S(&job.spec.name)),
                        ("reason", Val::S(&why)),
                        ("retry_in_ms", Val::U(wait.as_millis() as u64)),
                    ],
                );
                job.state = State::Due {
                    at_ns: now.saturating_add(nanos(wait)),
                };
            }
        }
    }

    /// At daemon start: adopts job `i` when its group holds its process,
    /// else makes it due now. A group that holds processes reeve cannot
    /// identify is never started into (the start refuses a busy group).
    pub(super) fn adopt(&mut self, i: usize, log: &mut Logger) {
        let (Some((h, records)), Some(reader)) = (&self.place, self.reader.as_mut()) else {
            return;
        };
        let job = &mut self.jobs[i];
        let now = sys::monotonic_ns();
        match find_adoptable(h, records, reader, &job.spec.name) {
            Ok(Some((key, pidfd, source))) => {
                self.counters.adopted += 1;
                log.info(
                    "job_adopted",
                    &[
                        ("job", Val::S(&job.spec.name)),
                        ("pid", Val::U(key.pid.into())),
                        ("start_ticks", Val::U(key.start_ticks)),
                        ("source", Val::S(source)),
                    ],
                );
                // Its start time is unknown to this daemon; readiness and
                // the backoff count from the adoption.
                job.state = State::Running(Running {
                    key,
                    pidfd,
                    child: false,
                    started_ns: now,
                    ready: false,
                    kill_at_ns: None,
                    killed: false,
                });
            }
            Ok(None) => job.state = State::Due { at_ns: now },
            Err(why) => {
                log.error(
                    "job_adopt_failed",
                    &[
                        ("job", Val::S(&job.spec.name)),
                        ("reason", Val::S(&why)),
                        (
                            "effect",
                            Val::S("not started while its group holds processes; retried with the backoff"),
                        ),
                    ],
                );
                job.state = State::Due { at_ns: now };
            }
        }
    }
}

/// The identity of `pid` if it is alive.
fn alive(reader: &mut ProcReader, pid: u32) -> Result<Option<ProcKey>, String> {
    match reader.stat(pid) {
        Ok(s) if !s.is_dead() => Ok(Some(s.key())),
        Ok(_) | Err(ReadError::Gone) => Ok(None),
        Err(e) => Err(format!("/proc/{pid}/stat: {e}")),
    }
}

/// A pidfd on `key`, or `None` when the pid no longer names that process:
/// the identity is read again after the pidfd is open, so a pid reused in
/// between is caught.
fn pin(reader: &mut ProcReader, key: ProcKey) -> Result<Option<OwnedFd>, String> {
    let pidfd = match sys::pidfd_open(key.pid) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(None),
        Err(e) => return Err(format!("pidfd_open({}): {e}", key.pid)),
    };
    Ok((alive(reader, key.pid)? == Some(key)).then_some(pidfd))
}

/// The process of job `name` its group still holds: the record's member
/// when it is alive in the group (`record`), else the oldest process in
/// the group (`cgroup`: a daemon that died between the fork and the
/// record). `Ok(None)`: the group holds nothing.
fn find_adoptable(
    h: &Hierarchy,
    records: &Records,
    reader: &mut ProcReader,
    name: &str,
) -> Result<Option<(ProcKey, OwnedFd, &'static str)>, String> {
    let path = h.job_path(name).map_err(|e| e.to_string())?;
    if !path.is_dir() {
        return Ok(None);
    }
    let pids = Group::new(&path).procs().map_err(|e| e.to_string())?;
    if pids.is_empty() {
        return Ok(None);
    }
    let group = placement::Placement::Job(name.to_string()).group_name();
    let record = records.load(&group).map_err(|e| e.to_string())?;
    let recorded = record
        .iter()
        .flat_map(|r| r.members.iter().map(Member::key));
    for key in recorded {
        if pids.contains(&key.pid) {
            if let Some(fd) = pin(reader, key)? {
                return Ok(Some((key, fd, "record")));
            }
        }
    }
    let mut oldest: Option<ProcKey> = None;
    for &pid in &pids {
        if let Some(k) = alive(reader, pid)? {
            if oldest.map_or(true, |o| k.start_ticks < o.start_ticks) {
                oldest = Some(k);
            }
        }
    }
    match oldest {
        Some(key) => match pin(reader, key)? {
            Some(fd) => Ok(Some((key, fd, "cgroup"))),
            None => Err(format!(
                "pid {} in {} ended or changed while being adopted",
                key.pid,
                path.display()
            )),
        },
        None => Ok(None),
    }
}

/// A started job's process.
struct Launched {
    key: ProcKey,
    pidfd: OwnedFd,
    cgroup: String,
    /// `saved`, or why the record does not list the process (a restarted
    /// daemon still adopts it from its group).
    record: String,
}

/// Prepares the group, writes the record and starts the command.
fn spawn(
    h: &Hierarchy,
    records: &Records,
    reader: &mut ProcReader,
    spec: &crate::config::JobSpec,
) -> Result<Launched, Refusal> {
    let failed = |what: &str, e: &dyn std::fmt::Display| Refusal::Failed(format!("{what}: {e}"));
    let place = Placement::Job(spec.name.clone());
    let lock = match records.try_lock() {
        Ok(l) => l,
        Err(RecordError::Busy { .. }) => return Err(Refusal::Busy),
        Err(e) => return Err(Refusal::Failed(e.to_string())),
    };
    let path = place.path(h).map_err(|e| Refusal::Failed(e.to_string()))?;
    if path.is_dir()
        && Group::new(&path)
            .populated()
            .map_err(|e| failed("group", &e))?
    {
        return Err(Refusal::Failed(format!(
            "{}: the job's group holds processes reeve did not start for it in this life; \
             it is not started a second time",
            path.display()
        )));
    }
    let prepared =
        placement::prepare(h, &place, &spec.limits).map_err(|e| Refusal::Failed(e.to_string()))?;
    if !prepared.in_force {
        return Err(Refusal::Failed(format!(
            "the limits cannot be put in force: {}",
            prepared.problems.join("; ")
        )));
    }
    let mut record = placement::new_record(&place, &prepared, sys::realtime_ms());
    // Written ahead: a daemon that dies after the fork finds the record
    // and the group, and adopts the group's process.
    lock.records()
        .save(&record)
        .map_err(|e| Refusal::Failed(e.to_string()))?;
    let procs_path = prepared.path.join("cgroup.procs");
    let procs = OpenOptions::new()
        .write(true)
        .open(&procs_path)
        .map_err(|e| failed(&procs_path.display().to_string(), &e))?;
    let Some((program, args)) = spec.command.split_first() else {
        return Err(Refusal::Failed("empty command".into()));
    };
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null());
    // What the service manager gave reeve is reeve's: a job that inherited
    // these would speak for reeve (sd_notify, the watchdog, sockets).
    for var in INHERITED_NOT {
        cmd.env_remove(var);
    }
    sys::setsid_and_join_cgroup_before_exec(&mut cmd, procs.as_raw_fd());
    let mut child = cmd
        .spawn()
        .map_err(|e| failed(&format!("cannot run '{program}'"), &e))?;
    drop(procs);
    let pid = child.id();
    // The child is unreaped, so its pid is still its own: the pidfd, opened
    // before `child` is let go, holds it. Without a pidfd it cannot be
    // supervised: it is killed (unreaped, so the pid is its own) rather
    // than left running ungoverned in the job's group.
    let pidfd = match sys::pidfd_open(pid) {
        Ok(fd) => fd,
        Err(e) => {
            let end = match child.kill() {
                Ok(()) => "it was killed; reeve reaps it when it exits".to_string(),
                Err(k) => format!("killing it failed too: {k}"),
            };
            return Err(Refusal::Failed(format!(
                "pidfd_open({pid}): {e}; the started command cannot be supervised: {end}"
            )));
        }
    };
    // From here the pidfd holds the child (std's Child never reaps on drop).
    drop(child);
    let key = match reader.stat(pid) {
        Ok(s) => s.key(),
        Err(e) => {
            // Unidentified, it is not left running ungoverned.
            let end = sys::pidfd_send_signal(&pidfd, libc::SIGKILL)
                .err()
                .map_or(String::new(), |k| format!("; ending it failed too: {k}"));
            return Err(Refusal::Failed(format!(
                "/proc/{pid}/stat: cannot read the started command's identity ({e}); it was \
                 ended{end}"
            )));
        }
    };
    // The job came from reeve's own group: `reeve detach` returns it
    // there; when that cannot be read, to reeve's root, detach's fallback.
    let original = h
        .process_cgroup(sys::getpid())
        .unwrap_or_else(|_| h.root.clone());
    record.members.push(Member {
        pid,
        start_ticks: key.start_ticks,
        original_cgroup: original,
    });
    let record = match lock.records().save(&record) {
        Ok(()) => "saved".to_string(),
        Err(e) => e.to_string(),
    };
    Ok(Launched {
        key,
        pidfd,
        cgroup: prepared.path.display().to_string(),
        record,
    })
}
