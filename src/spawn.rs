//! `reeve run`: start a command inside its own governed group.
//!
//! Invariants: the child joins its group between fork and exec, so the
//! command runs no instruction outside it; it starts its own session and
//! is never killed by reeve's death (no parent-death signal), so `kill -9`
//! of `reeve run` leaves it running in its group; requested limits are in
//! force before the command starts, or the command does not start.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::AsRawFd;
use std::process::{Command, ExitStatus};

use crate::cgroup::{self, Group, Hierarchy, Limits};
use crate::log::Val;
use crate::placement::{self, Member, Placement, Records};
use crate::procfs::ProcReader;
use crate::sys;

/// What to run and where.
pub struct RunSpec {
    pub place: Placement,
    pub limits: Limits,
    pub detach: bool,
    pub argv: Vec<OsString>,
}

/// A failure with the exit code `reeve run` ends with.
#[derive(Debug)]
pub struct RunError {
    pub code: i32,
    pub message: String,
}

fn fail(code: i32, message: String) -> RunError {
    RunError { code, message }
}

/// The default job name: the command's basename and reeve's pid.
pub fn default_job_name(argv0: &OsString) -> String {
    let base = std::path::Path::new(argv0)
        .file_name()
        .map_or_else(|| "job".into(), |b| b.to_string_lossy().into_owned());
    cgroup::sanitize_job_name(&format!("{base}-{}", sys::getpid()))
}

/// Receives the audit events of a run (`job_started`, `job_ended`).
pub type OnEvent<'a> = &'a mut dyn FnMut(&str, &[(&str, Val<'_>)]);

/// Runs the command; returns the exit code for `reeve run`.
pub fn run(
    h: &Hierarchy,
    records: &Records,
    spec: &RunSpec,
    on_event: OnEvent<'_>,
) -> Result<i32, RunError> {
    let Some((program, args)) = spec.argv.split_first() else {
        return Err(fail(2, "run needs a command after --".into()));
    };
    let group_name = spec.place.group_name();
    let mut reader = ProcReader::open().map_err(|e| fail(1, format!("cannot open /proc: {e}")))?;
    let lock = records.lock().map_err(|e| fail(1, e.to_string()))?;
    let prepared = placement::prepare(h, &spec.place, &spec.limits).map_err(|e| fail(1, e))?;
    let group = Group::new(&prepared.path);
    let busy = group.procs().map(|p| !p.is_empty()).unwrap_or(false);
    if busy && matches!(spec.place, Placement::Job(_)) {
        return Err(fail(
            1,
            format!(
                "job group {} already holds processes; choose another --job name",
                prepared.path.display()
            ),
        ));
    }
    if !prepared.in_force {
        if !prepared.existed {
            let _ = group.remove();
        }
        return Err(fail(
            1,
            format!(
                "not starting {}: the requested limits cannot be put in force: {}",
                program.to_string_lossy(),
                prepared.problems.join("; ")
            ),
        ));
    }
    let original = h
        .process_cgroup(sys::getpid())
        .map_err(|e| fail(1, e.to_string()))?;
    let oom_before = cgroup::memory_events(&prepared.path).map_or(0, |e| e.oom_kill);

    let procs_path = prepared.path.join("cgroup.procs");
    let procs = OpenOptions::new()
        .write(true)
        .open(&procs_path)
        .map_err(|e| fail(1, format!("{}: {e}", procs_path.display())))?;
    // Signals that foreground mode forwards are blocked before the child
    // exists, so none can be lost in between; the child's pre-exec hook
    // restores an empty mask.
    let signals = if spec.detach {
        None
    } else {
        Some(
            sys::signalfd_for(&sys::DAEMON_SIGNALS)
                .map_err(|e| fail(1, format!("cannot set up signal forwarding: {e}")))?,
        )
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
        Err(e) => {
            if !prepared.existed {
                let _ = group.remove();
            }
            let code = match e.kind() {
                io::ErrorKind::NotFound => 127,
                _ if e.raw_os_error() == Some(libc::EACCES)
                    || e.raw_os_error() == Some(libc::ENOEXEC) =>
                {
                    126
                }
                _ => 1,
            };
            return Err(fail(
                code,
                format!("cannot run '{}': {e}", program.to_string_lossy()),
            ));
        }
    };
    drop(procs);
    let pid = child.id();
    let start_ticks = reader.stat(pid).map_or(0, |s| s.start_ticks);
    let mut record = records.load(&group_name).ok().flatten().unwrap_or_else(|| {
        placement::new_record(&spec.place, &prepared, &spec.limits, sys::realtime_ms())
    });
    record.members.push(Member {
        pid,
        start_ticks,
        original_cgroup: original,
    });
    if let Err(e) = records.save(&record) {
        eprintln!("reeve: warning: the job record was not saved ({e}); `reeve detach` will return its processes to reeve's parent group");
    }
    drop(lock);
    let cgroup_text = prepared.path.display().to_string();
    let command = spec
        .argv
        .iter()
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    on_event(
        "job_started",
        &[
            ("job", Val::S(&group_name)),
            ("cgroup", Val::S(&cgroup_text)),
            ("pid", Val::U(pid.into())),
            ("start_ticks", Val::U(start_ticks)),
            ("limits", Val::S(&spec.limits.describe())),
            ("command", Val::S(&command)),
            ("detached", Val::Bool(spec.detach)),
        ],
    );

    if spec.detach {
        println!(
            "pid={pid} job={group_name} cgroup={}",
            prepared.path.display()
        );
        return Ok(0);
    }
    let Some(signals) = signals else {
        return Ok(0);
    };
    let status = wait_forwarding(&mut child, &signals)?;
    let code = exit_code(&status);
    let mut how = describe(&status);
    let mut oom_killed = false;
    if let Ok(ev) = cgroup::memory_events(&prepared.path) {
        if ev.oom_kill > oom_before {
            oom_killed = true;
            how.push_str(&format!(
                " (OOM-killed: memory.max {})",
                spec.limits.memory.map_or("?".into(), |m| m.to_string())
            ));
        }
    }
    eprintln!("reeve: {group_name} ended: {how}");
    on_event(
        "job_ended",
        &[
            ("job", Val::S(&group_name)),
            ("pid", Val::U(pid.into())),
            ("start_ticks", Val::U(start_ticks)),
            ("exit_code", Val::I(code.into())),
            ("oom_killed", Val::Bool(oom_killed)),
        ],
    );
    finish_group(records, &group, &group_name);
    Ok(code)
}

/// Waits for the child, forwarding terminating signals to it through a
/// pidfd (the child is unreaped, so its pid cannot have been reused).
fn wait_forwarding(
    child: &mut std::process::Child,
    signals: &std::os::fd::OwnedFd,
) -> Result<ExitStatus, RunError> {
    let pidfd = sys::pidfd_open(child.id()).ok();
    loop {
        let mut fds = [
            sys::poll_fd(signals.as_raw_fd()),
            sys::poll_fd(pidfd.as_ref().map_or(-1, |p| p.as_raw_fd())),
        ];
        // Without a pidfd (very old kernel) poll wakes every 100 ms.
        let timeout = if pidfd.is_some() { -1 } else { 100 };
        sys::poll(&mut fds, timeout).map_err(|e| fail(1, format!("poll: {e}")))?;
        if sys::is_readable(&fds[0]) {
            while let Ok(Some(sig)) = sys::read_signal(signals) {
                if let Some(p) = &pidfd {
                    let _ = sys::pidfd_send_signal(p, sig);
                }
            }
        }
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) => {}
            Err(e) => return Err(fail(1, format!("waiting for the child: {e}"))),
        }
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

/// Removes the job group once its last process is gone. Descendants that
/// outlive the command keep the group; that is said, not hidden.
fn finish_group(records: &Records, group: &Group, name: &str) {
    for _ in 0..50 {
        if matches!(group.populated(), Ok(false)) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let Ok(_lock) = records.lock() else {
        return;
    };
    match group.populated() {
        Ok(false) => {
            if let Err(e) = group.remove() {
                eprintln!("reeve: warning: job group not removed: {e}");
            } else if let Err(e) = records.remove(name) {
                eprintln!("reeve: warning: job record not removed: {e}");
            }
        }
        Ok(true) => eprintln!(
            "reeve: {name}: processes the command left behind keep running in {}; `reeve detach --job {}` releases them",
            group.path().display(),
            name.split_once('.').map_or(name, |(_, n)| n)
        ),
        Err(e) => eprintln!("reeve: warning: {e}"),
    }
}
