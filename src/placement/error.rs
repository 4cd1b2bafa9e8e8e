//! Why placing or releasing a process failed: one typed error for the
//! policy layer, so callers act on the kind instead of re-reading /proc to
//! guess it. Displays as one line.

use std::fmt;
use std::path::PathBuf;

use crate::cgroup::{CgroupError, MoveOutcome};
use crate::procfs::ProcKey;
use crate::store::records::RecordError;

/// Why placing or releasing a process failed. Displays as one line.
#[derive(Debug)]
pub enum PlaceError {
    /// The process ended, or its pid now names another process; `detail`
    /// says when. `stranger` is the process that took its pid inside the
    /// move, when one was found in the group (`detail` says where it went).
    ProcessGone {
        pid: u32,
        detail: String,
        stranger: Option<ProcKey>,
    },
    /// /proc could not be read for the process.
    Proc {
        pid: u32,
        detail: String,
    },
    /// reeve will not move this process.
    Refused {
        pid: u32,
        why: &'static str,
    },
    /// A job record or the records lock (`Busy` when another process holds
    /// it and the caller did not wait).
    Record(RecordError),
    /// The move's intent could not be written ahead: nothing was moved.
    IntentNotWritten(RecordError),
    Cgroup(CgroupError),
    /// The group could not be made ready for members.
    Prepare(crate::cgroup::CgroupError),
    /// `detach` of a group that does not exist.
    NoSuchGroup(PathBuf),
    /// A failure whose clean-up failed too; the line says both.
    Incomplete(String),
}

impl fmt::Display for PlaceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlaceError::ProcessGone { pid, detail, .. } => write!(f, "process {pid}: {detail}"),
            PlaceError::Proc { pid, detail } => write!(f, "cannot read process {pid}: {detail}"),
            PlaceError::Refused { pid, why } => {
                write!(f, "refusing to move process {pid}: {why}")
            }
            PlaceError::Record(e) => write!(f, "{e}"),
            PlaceError::IntentNotWritten(e) => write!(f, "{e}; nothing was moved"),
            PlaceError::Cgroup(e) => write!(f, "{e}"),
            PlaceError::Prepare(e) => write!(f, "{e}"),
            PlaceError::Incomplete(e) => f.write_str(e),
            PlaceError::NoSuchGroup(p) => write!(f, "no such job: {} does not exist", p.display()),
        }
    }
}

impl std::error::Error for PlaceError {}

impl From<RecordError> for PlaceError {
    fn from(e: RecordError) -> PlaceError {
        PlaceError::Record(e)
    }
}

impl From<CgroupError> for PlaceError {
    fn from(e: CgroupError) -> PlaceError {
        PlaceError::Cgroup(e)
    }
}

impl PlaceError {
    /// Why a move of `key` that did not end in `MoveOutcome::Moved` did
    /// not place it (`outcome` says what happened instead).
    pub fn from_move(key: ProcKey, outcome: Result<MoveOutcome, CgroupError>) -> PlaceError {
        match outcome {
            Ok(o) => PlaceError::ProcessGone {
                pid: key.pid,
                detail: o.describe(key),
                stranger: match o {
                    MoveOutcome::StrangerMovedBack { stranger, .. }
                    | MoveOutcome::StrangerLeft { stranger, .. } => Some(stranger),
                    _ => None,
                },
            },
            Err(e) => PlaceError::Cgroup(e),
        }
    }

    /// The records lock was held by another process: retry later.
    pub fn is_busy(&self) -> bool {
        matches!(self, PlaceError::Record(RecordError::Busy { .. }))
    }
}
