//! Why `reeve run` did not run its command, or could not follow it: one
//! variant per failure, each displayed as one line that says what was
//! left as it was and what to do, and the exit code it ends `reeve run`
//! with.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::cgroup::CgroupError;

/// Why `reeve run` did not run the command, or could not follow it.
#[derive(Debug)]
pub enum RunError {
    /// Nothing after `--`.
    NoCommand,
    /// /proc could not be opened.
    Proc(io::Error),
    /// The records lock or the group's record could not be used (an
    /// unreadable record is set aside, never silently replaced).
    Records(crate::store::records::RecordError),
    /// A group of that name exists without a record: not reeve's to use.
    NotOurs(PathBuf),
    /// The job's group already holds processes.
    Busy(PathBuf),
    /// A cgroup file needed for the decision could not be read.
    Cgroup(CgroupError),
    /// The group could not be created or made ready.
    Prepare(crate::cgroup::CgroupError),
    /// The requested limits are not in force; the command was not started.
    NotInForce {
        program: String,
        problems: Vec<String>,
        cleanup: Option<String>,
    },
    /// The group's cgroup.procs could not be opened for the child.
    OpenProcs {
        path: PathBuf,
        err: io::Error,
        cleanup: Option<String>,
    },
    /// Signal forwarding could not be set up.
    Signals(io::Error),
    /// fork or exec failed.
    Spawn {
        program: String,
        err: io::Error,
        cleanup: Option<String>,
    },
    /// The run's intent (the group and `reeve run`'s own identity as the
    /// parent) could not be written ahead; the command was not started.
    IntentNotWritten {
        program: String,
        err: crate::store::records::RecordError,
        cleanup: Option<String>,
    },
    /// The child started but its identity could not be read; it was ended.
    Identity { pid: u32, why: String },
    /// Waiting for the child failed.
    Wait(io::Error),
}

impl RunError {
    /// The exit code `reeve run` ends with: 2 usage, 127 command not
    /// found, 126 not executable, 1 anything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::NoCommand => 2,
            RunError::Spawn { err, .. } => match err.raw_os_error() {
                Some(libc::ENOENT) => 127,
                Some(libc::EACCES) | Some(libc::ENOEXEC) => 126,
                _ => 1,
            },
            _ => 1,
        }
    }
}

/// Appends `; <what was left behind>` when undoing the preparation of the
/// group failed.
fn cleanup_note(f: &mut fmt::Formatter<'_>, cleanup: &Option<String>) -> fmt::Result {
    match cleanup {
        Some(note) => write!(f, "; {note}"),
        None => Ok(()),
    }
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::NoCommand => f.write_str("run needs a command after --"),
            RunError::Proc(e) => write!(f, "/proc: cannot open: {e}"),
            RunError::Records(why) => write!(f, "{why}"),
            RunError::NotOurs(path) => write!(
                f,
                "{}: exists but reeve has no record of it; nothing was changed; choose \
                 another name, or remove the group if it is stale",
                path.display()
            ),
            RunError::Busy(path) => write!(
                f,
                "{}: the job is running (its group holds processes); nothing was changed; \
                 choose another --job name, or stop the job first",
                path.display()
            ),
            RunError::Cgroup(e) => write!(f, "{e}"),
            RunError::Prepare(why) => write!(f, "{why}"),
            RunError::NotInForce {
                program,
                problems,
                cleanup,
            } => {
                write!(
                    f,
                    "not starting {program}: the requested limits cannot be put in force: {}",
                    problems.join("; ")
                )?;
                cleanup_note(f, cleanup)
            }
            RunError::OpenProcs { path, err, cleanup } => {
                write!(f, "{}: {err}", path.display())?;
                cleanup_note(f, cleanup)
            }
            RunError::Signals(e) => write!(f, "cannot set up signal handling: {e}"),
            RunError::Spawn {
                program,
                err,
                cleanup,
            } => {
                write!(f, "cannot run '{program}': {err}")?;
                cleanup_note(f, cleanup)
            }
            RunError::IntentNotWritten {
                program,
                err,
                cleanup,
            } => {
                write!(
                    f,
                    "{err}; the job record could not list the run ahead, so '{program}' was not \
                     started"
                )?;
                cleanup_note(f, cleanup)
            }
            RunError::Identity { pid, why } => write!(
                f,
                "/proc/{pid}/stat: cannot read the started command's identity ({why}); it was \
                 ended rather than left ungoverned"
            ),
            RunError::Wait(e) => write!(f, "waiting for the command: {e}"),
        }
    }
}

impl std::error::Error for RunError {}
