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
    /// A failure whose clean-up or confirmation failed too: `failure` is
    /// what went wrong first, `leftover` what stays behind because of it.
    Incomplete {
        failure: Box<PlaceError>,
        leftover: Leftover,
    },
}

/// What a failed placement left behind: a clean-up or a confirmation that
/// failed in its turn. Displays as one clause of a [`PlaceError`]'s line.
#[derive(Debug)]
pub enum Leftover {
    /// The group the placement created could not be removed; the group
    /// and its record stay.
    GroupKept(CgroupError),
    /// The group the placement created was removed, its record was not.
    RecordKept(RecordError),
    /// The job record could not be written: the intent it holds stays
    /// until its next write settles it.
    IntentInRecord(RecordError),
    /// The pool's journal could not be appended: the intent it holds stays
    /// until the record is next written.
    IntentInJournal(RecordError),
}

impl fmt::Display for Leftover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Leftover::GroupKept(e) => {
                write!(f, "cleaning up: {e}; the group and its record stay")
            }
            Leftover::RecordKept(e) => write!(f, "cleaning up: {e}"),
            Leftover::IntentInRecord(e) => {
                write!(
                    f,
                    "the job record keeps the intent until its next write: {e}"
                )
            }
            Leftover::IntentInJournal(e) => write!(
                f,
                "the journal keeps the intent until the record is next written: {e}"
            ),
        }
    }
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
            PlaceError::Incomplete { failure, leftover } => write!(f, "{failure}; {leftover}"),
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

    /// `self`, with what its clean-up or confirmation left behind, if
    /// anything.
    pub fn leaving(self, leftover: Option<Leftover>) -> PlaceError {
        match leftover {
            Some(leftover) => PlaceError::Incomplete {
                failure: Box::new(self),
                leftover,
            },
            None => self,
        }
    }

    /// The records lock was held by another process: retry later.
    pub fn is_busy(&self) -> bool {
        matches!(self, PlaceError::Record(RecordError::Busy { .. }))
    }
}

/// Why the daemon's governance could not be set up. Displays as one line.
#[derive(Debug)]
pub enum SetupError {
    /// The cgroup v2 hierarchy or reeve's root in it.
    Cgroup(CgroupError),
    /// The job records in the state directory.
    Records(RecordError),
    /// /proc could not be opened.
    Proc(std::io::Error),
    /// reeve's own ancestry (the processes never moved) could not be read.
    Protected(PlaceError),
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetupError::Cgroup(e) => write!(f, "{e}"),
            SetupError::Records(e) => write!(f, "{e}"),
            SetupError::Proc(e) => write!(f, "/proc: cannot open it: {e}"),
            SetupError::Protected(e) => {
                write!(f, "reading reeve's own ancestry (never moved): {e}")
            }
        }
    }
}

impl std::error::Error for SetupError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_incomplete_failure_keeps_its_kind_and_says_both_in_one_line() {
        let failure = PlaceError::Refused {
            pid: 42,
            why: "it is pid 1",
        };
        let unwritten = || RecordError::Encode {
            what: "job.x".into(),
            reason: "no space".into(),
        };
        let e = failure.leaving(Some(Leftover::IntentInRecord(unwritten())));
        let PlaceError::Incomplete { failure, leftover } = &e else {
            panic!("not incomplete: {e:?}");
        };
        assert!(matches!(**failure, PlaceError::Refused { pid: 42, .. }));
        assert!(matches!(leftover, Leftover::IntentInRecord(_)));
        let line = e.to_string();
        assert!(!line.contains('\n'), "{line}");
        assert!(
            line.starts_with("refusing to move process 42: it is pid 1; the job record keeps the intent until its next write: "),
            "{line}"
        );
        let plain = PlaceError::NoSuchGroup("/x".into()).leaving(None);
        assert!(matches!(plain, PlaceError::NoSuchGroup(_)));
        let kept = PlaceError::NoSuchGroup("/x".into())
            .leaving(Some(Leftover::IntentInJournal(unwritten())));
        assert!(
            kept.to_string()
                .contains("; the journal keeps the intent until the record is next written: "),
            "{kept}"
        );
    }
}
