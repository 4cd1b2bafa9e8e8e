//! `reeve run`: start a command inside its own governed group.
//!
//! Invariants: ownership and busyness of the group are checked before
//! anything is written to it (a running job's limits are never touched by
//! a second `run`); the child joins its group between fork and exec, so
//! the command runs no instruction outside it, with every signal at its
//! default disposition and an empty mask; it starts its own session and
//! is never killed by reeve's death (no parent-death signal), so `kill -9`
//! of `reeve run` leaves it running in its group; requested limits are in
//! force before the command starts, or the command does not start; the
//! job record holds the limits the kernel enforces; once the command
//! runs, a closed stdout or stderr costs reeve's own lines, never the
//! record of the job's end.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{Child, Command, ExitStatus};

use crate::cgroup::{self, Group, Hierarchy, Limits};
use crate::log::Val;
use crate::placement::{self, JobRecord, Member, Pending, Placement, Records};
use crate::procfs::{ProcKey, ProcReader};
use crate::sys;

mod error;
#[cfg(test)]
mod tests;

pub use error::RunError;

/// What to run and where.
pub struct RunSpec {
    pub place: Placement,
    pub limits: Limits,
    pub detach: bool,
    pub argv: Vec<OsString>,
}

/// The default job name: the command's basename and reeve's pid.
pub fn default_job_name(argv0: &OsString) -> String {
    let base = std::path::Path::new(argv0)
        .file_name()
        .map_or_else(|| "job".into(), |b| b.to_string_lossy().into_owned());
    cgroup::sanitize_job_name(&format!("{base}-{}", sys::getpid()))
}

/// Receives the audit events of a run (`job_started`, `job_ended`,
/// `run_failed`).
pub type OnEvent<'a> = &'a mut dyn FnMut(&str, &[(&str, Val<'_>)]);

/// reeve's own lines once the command runs. A closed or broken stdout or
/// stderr (`reeve run ... | head -1`) costs the line, counted in `lost`
/// and reported in the job's events; it never stops reeve before the job's
/// end is recorded (SIGPIPE is ignored, and nothing here panics).
#[derive(Default)]
struct Console {
    lost: u64,
}

impl Console {
    fn out(&mut self, line: &str) {
        self.write(&mut io::stdout().lock(), line);
    }

    fn err(&mut self, line: &str) {
        self.write(&mut io::stderr().lock(), line);
    }

    fn write(&mut self, w: &mut dyn Write, line: &str) {
        let text = format!("{line}\n");
        if w.write_all(text.as_bytes())
            .and_then(|()| w.flush())
            .is_err()
        {
            self.lost += 1;
        }
    }
}

/// Checks, before anything is written, that `place` may be used: a group
/// that exists must have reeve's record, and a job's group must hold no
/// process. Returns the record of an existing group. Runs under the
/// records lock, which the daemon and every CLI command take too.
fn check_first(
    h: &Hierarchy,
    records: &Records,
    place: &Placement,
) -> Result<Option<JobRecord>, RunError> {
    let path = place.path(h).map_err(RunError::Prepare)?;
    let record = records
        .load(&place.group_name())
        .map_err(RunError::Records)?;
    if !path.is_dir() {
        // A record without its group is stale: the group is made anew.
        return Ok(None);
    }
    let Some(record) = record else {
        return Err(RunError::NotOurs(path));
    };
    if matches!(place, Placement::Job(_))
        && Group::new(&path).populated().map_err(RunError::Cgroup)?
    {
        return Err(RunError::Busy(path));
    }
    Ok(Some(record))
}

/// Undoes what preparing the group left when the command does not run: a
/// group this run created is removed; an existing group keeps the limits
/// just written, so its record is brought up to what the kernel now holds.
/// Says what could not be undone.
fn undo(
    records: &Records,
    group: &Group,
    prepared: &placement::Prepared,
    prior: Option<JobRecord>,
) -> Option<String> {
    if !prepared.existed {
        let mut why = Vec::new();
        if let Err(e) = group.remove() {
            why.push(format!("the new group was not removed: {e}"));
        }
        // The group is gone, or stays empty: the record of the intent the
        // run wrote ahead goes with it.
        let name = prepared.path.file_name().map(|n| n.to_string_lossy());
        if let Some(Err(e)) = name.map(|n| records.remove(&n)) {
            why.push(format!("its record was not removed: {e}"));
        }
        return (!why.is_empty()).then(|| why.join("; "));
    }
    let mut r = prior?;
    r.limits = prepared.limits.clone();
    r.in_force = prepared.in_force;
    r.problems = prepared.problems.clone();
    records
        .save(&r)
        .err()
        .map(|e| format!("the record of {} was not updated: {e}", r.group))
}

/// Runs the command; returns the exit code for `reeve run`.
pub fn run(
    h: &Hierarchy,
    records: &Records,
    spec: &RunSpec,
    on_event: OnEvent<'_>,
) -> Result<i32, RunError> {
    let Some((program, args)) = spec.argv.split_first() else {
        return Err(RunError::NoCommand);
    };
    let program_text = program.to_string_lossy().into_owned();
    sys::ignore_sigpipe().map_err(RunError::Signals)?;
    let group_name = spec.place.group_name();
    let mut reader = ProcReader::open().map_err(RunError::Proc)?;
    let original = h.process_cgroup(sys::getpid()).map_err(RunError::Cgroup)?;
    // Signals that foreground mode forwards are blocked before the child
    // exists, so none can be lost in between; the child's pre-exec hook
    // restores an empty mask and default dispositions.
    let signals = if spec.detach {
        None
    } else {
        Some(sys::signalfd_for(&sys::DAEMON_SIGNALS).map_err(RunError::Signals)?)
    };
    let lock = records.lock().map_err(RunError::Records)?;
    let prior = check_first(h, records, &spec.place)?;
    // From here on the group is written: every failure undoes what it can.
    let prepared = placement::prepare(h, &spec.place, &spec.limits).map_err(RunError::Prepare)?;
    let group = Group::new(&prepared.path);
    if !prepared.in_force {
        return Err(RunError::NotInForce {
            program: program_text,
            problems: prepared.problems.clone(),
            cleanup: undo(records, &group, &prepared, prior),
        });
    }
    // No memory.events means no memory controller, so no OOM kill to count.
    let oom_before = cgroup::memory_events(&prepared.path).map_or(0, |e| e.oom_kill);

    // Written ahead: the child joins the group before exec, before its
    // identity is known, so the record first names this run (its own
    // identity as the parent) and the group; the first record write after
    // a crash between here and the record below settles it from the
    // group's processes. No intent, no command.
    let me = sys::getpid();
    let intent = match reader.stat(me) {
        Ok(s) => {
            let mut r = match &prior {
                Some(r) => r.clone(),
                None => placement::new_record(&spec.place, &prepared, sys::realtime_ms()),
            };
            r.pending_runs.push(Pending {
                pid: me,
                start_ticks: s.start_ticks,
                from: original.clone(),
                to: prepared.path.clone(),
            });
            records.save(&r)
        }
        Err(e) => Err(crate::store::records::RecordError::Encode {
            what: format!("the intent of this run (/proc/{me}/stat)"),
            reason: e.to_string(),
        }),
    };
    if let Err(err) = intent {
        return Err(RunError::IntentNotWritten {
            program: program_text,
            err,
            cleanup: undo(records, &group, &prepared, prior),
        });
    }
    let procs_path = prepared.path.join("cgroup.procs");
    let procs = match OpenOptions::new().write(true).open(&procs_path) {
        Ok(f) => f,
        Err(err) => {
            return Err(RunError::OpenProcs {
                path: procs_path,
                err,
                cleanup: undo(records, &group, &prepared, prior),
            })
        }
    };
    let mut cmd = Command::new(program);
    cmd.args(args);
    if spec.detach {
        // Detached, the command must not hold the caller's stdout open:
        // `$(reeve run --detach ...)` captures just the pid= line, and the
        // command's own output goes to reeve's stderr.
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::from(io::stderr()));
    }
    sys::setsid_and_join_cgroup_before_exec(&mut cmd, procs.as_raw_fd());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(err) => {
            return Err(RunError::Spawn {
                program: program_text,
                err,
                cleanup: undo(records, &group, &prepared, prior),
            })
        }
    };
    drop(procs);
    let pid = child.id();
    let start_ticks = match reader.stat(pid) {
        Ok(s) => s.start_ticks,
        Err(e) => {
            let why = match end_unidentified(&mut child) {
                Ok(()) => e.to_string(),
                Err(end) => format!("{e}; ending it failed too: {end}"),
            };
            let cleanup = undo(records, &group, &prepared, prior)
                .map_or(String::new(), |note| format!("; {note}"));
            on_event(
                "run_failed",
                &[
                    ("job", Val::S(&group_name)),
                    ("pid", Val::U(pid.into())),
                    (
                        "reason",
                        Val::S(&format!("identity unreadable: {why}{cleanup}")),
                    ),
                ],
            );
            return Err(RunError::Identity { pid, why });
        }
    };
    let key = ProcKey { pid, start_ticks };
    let mut record = match prior {
        Some(mut r) => {
            // A job's group was empty (checked first): its old members are gone.
            if !r.pool {
                r.members.clear();
            }
            r.limits = prepared.limits.clone();
            r.in_force = prepared.in_force;
            r.problems = prepared.problems.clone();
            r
        }
        None => placement::new_record(&spec.place, &prepared, sys::realtime_ms()),
    };
    record.members.push(Member {
        pid,
        start_ticks,
        original_cgroup: original,
    });
    let mut console = Console::default();
    let record_error = records.save(&record).err().map(|e| e.to_string());
    drop(lock);
    if let Some(e) = &record_error {
        console.err(&format!(
            "reeve: warning: the job record was not saved ({e}); `reeve detach` will return \
             its processes to reeve's parent group"
        ));
    }
    if spec.detach {
        console.out(&format!(
            "pid={pid} job={group_name} cgroup={}",
            prepared.path.display()
        ));
    }
    let cgroup_text = prepared.path.display().to_string();
    let command = spec
        .argv
        .iter()
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    let held = prepared.limits.describe();
    let reset = prepared.reset.join(",");
    let record_text = record_error.as_deref().unwrap_or("saved");
    let mut fields = vec![
        ("job", Val::S(&group_name)),
        ("cgroup", Val::S(&cgroup_text)),
        ("pid", Val::U(pid.into())),
        ("start_ticks", Val::U(start_ticks)),
        ("limits", Val::S(&held)),
        ("command", Val::S(&command)),
        ("detached", Val::Bool(spec.detach)),
        ("record", Val::S(record_text)),
    ];
    if !prepared.reset.is_empty() {
        fields.push(("limit_reset", Val::S(&reset)));
    }
    if console.lost > 0 {
        fields.push(("output_lost", Val::U(console.lost)));
    }
    on_event("job_started", &fields);

    let Some(signals) = signals else {
        return Ok(0);
    };
    let status = wait_forwarding(&mut child, &signals, &mut console)?;
    let code = exit_code(&status);
    let mut how = describe(&status);
    let mut oom_killed = false;
    if let Ok(ev) = cgroup::memory_events(&prepared.path) {
        if ev.oom_kill > oom_before {
            oom_killed = true;
            let max = prepared.limits.memory.map_or("?".into(), |m| m.to_string());
            how.push_str(&format!(" (OOM-killed: memory.max {max})"));
        }
    }
    console.err(&format!("reeve: {group_name} ended: {how}"));
    on_event(
        "job_ended",
        &[
            ("job", Val::S(&group_name)),
            ("pid", Val::U(pid.into())),
            ("start_ticks", Val::U(start_ticks)),
            ("exit_code", Val::I(code.into())),
            ("oom_killed", Val::Bool(oom_killed)),
            ("output_lost", Val::U(console.lost)),
        ],
    );
    finish(records, &group, &spec.place, key, &mut console);
    Ok(code)
}

/// Ends a child whose identity could not be read, through a pidfd (it is
/// unreaped, so its pid is still its own), and reaps it.
fn end_unidentified(child: &mut Child) -> io::Result<()> {
    let pidfd = sys::pidfd_open(child.id())?;
    sys::pidfd_send_signal(&pidfd, libc::SIGKILL)?;
    child.wait().map(|_| ())
}

/// Waits for the child, forwarding terminating signals to it through a
/// pidfd (the child is unreaped, so its pid cannot have been reused).
fn wait_forwarding(
    child: &mut Child,
    signals: &OwnedFd,
    console: &mut Console,
) -> Result<ExitStatus, RunError> {
    let pidfd = match sys::pidfd_open(child.id()) {
        Ok(p) => Some(p),
        Err(e) => {
            console.err(&format!(
                "reeve: warning: no pidfd for pid {} ({e}); signals to reeve are not \
                 forwarded to the command",
                child.id()
            ));
            None
        }
    };
    loop {
        let mut fds = [
            sys::poll_fd(signals.as_raw_fd()),
            sys::poll_fd(pidfd.as_ref().map_or(-1, |p| p.as_raw_fd())),
        ];
        // Without a pidfd (very old kernel) poll wakes every 100 ms.
        let timeout = if pidfd.is_some() { -1 } else { 100 };
        sys::poll(&mut fds, timeout).map_err(RunError::Wait)?;
        if sys::is_readable(&fds[0]) {
            loop {
                match sys::read_signal(signals) {
                    Ok(Some(sig)) => forward(pidfd.as_ref(), sig, console),
                    Ok(None) => break,
                    Err(e) => {
                        console.err(&format!("reeve: warning: reading signals: {e}"));
                        break;
                    }
                }
            }
        }
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) => {}
            Err(e) => return Err(RunError::Wait(e)),
        }
    }
}

/// Forwards `sig` to the command; a failure is said, not dropped.
fn forward(pidfd: Option<&OwnedFd>, sig: i32, console: &mut Console) {
    let result = match pidfd {
        Some(p) => sys::pidfd_send_signal(p, sig),
        None => Err(io::Error::from_raw_os_error(libc::ENOSYS)),
    };
    if let Err(e) = result {
        console.err(&format!(
            "reeve: warning: signal {sig} not forwarded to the command: {e}"
        ));
    }
}

/// The shell convention: the exit code, or 128 + the signal.
pub fn exit_code(status: &ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(s)) => 128 + s,
        _ => 1,
    }
}

fn describe(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => "ended".into(),
    }
}

/// After the command ended: a job's group and record are removed once its
/// last process is gone (descendants that outlive the command keep the
/// group; that is said, not hidden); a pool stays, and only the command
/// leaves its record.
fn finish(
    records: &Records,
    group: &Group,
    place: &Placement,
    key: ProcKey,
    console: &mut Console,
) {
    let name = place.group_name();
    if let Placement::Pool(_) = place {
        let lock = match records.lock() {
            Ok(l) => l,
            Err(e) => {
                console.err(&format!("reeve: warning: {name}: record not updated: {e}"));
                return;
            }
        };
        let updated = lock.records().load(&name).and_then(|r| match r {
            Some(mut r) => {
                r.members.retain(|m| m.key() != key);
                lock.records().save(&r)
            }
            None => Ok(()),
        });
        if let Err(e) = updated {
            console.err(&format!("reeve: warning: {name}: record not updated: {e}"));
        }
        return;
    }
    for _ in 0..50 {
        if matches!(group.populated(), Ok(false)) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let _lock = match records.lock() {
        Ok(l) => l,
        Err(e) => {
            console.err(&format!(
                "reeve: warning: {name}: group and record not removed: {e}"
            ));
            return;
        }
    };
    match group.populated() {
        Ok(false) => {
            if let Err(e) = group.remove() {
                console.err(&format!("reeve: warning: job group not removed: {e}"));
            } else if let Err(e) = records.remove(&name) {
                console.err(&format!("reeve: warning: job record not removed: {e}"));
            }
        }
        Ok(true) => console.err(&format!(
            "reeve: {name}: processes the command left behind keep running in {}; \
             `reeve detach --job {}` releases them",
            group.path().display(),
            name.split_once('.').map_or(name.as_str(), |(_, n)| n)
        )),
        Err(e) => console.err(&format!("reeve: warning: {e}")),
    }
}
