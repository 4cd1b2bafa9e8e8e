//! The daemon's path into a pool that is already prepared: the group
//! exists, its limits are in force and its record is on file, so a new
//! member costs only what the kernel needs (the family, each member's
//! current cgroup, the move) plus two appended journal lines.
//!
//! Invariant: the same write-ahead as [`super::attach`]: the intents are
//! in the group's journal before the first cgroup.procs write, and a
//! confirmation (member or withdrawn) follows the moves; nothing is
//! re-prepared, so no limit file is written or read back per member.

use std::path::PathBuf;

use super::{family, AttachReport, Leftover, Member, PlaceError, RecordsLock};
use crate::cgroup::{self, Group, Hierarchy, Limits, MoveOutcome};
use crate::procfs::{ProcKey, ProcReader};
use crate::store::records::{Entry, JournalFile, Pending};
use crate::sys;

/// A pool the daemon prepared, with the limits the kernel enforces on it
/// and its journal open. It stays valid while the rule asks for the same
/// limits and the pool's record file is the one the daemon last saw
/// ([`Ready::stamp`]): only a record write (which empties the journal in
/// place) or a record removal (which removes the journal) changes the
/// journal, and both change the stamp.
#[derive(Debug)]
pub struct Ready {
    pub group: String,
    pub path: PathBuf,
    /// The limits the rule asked for when the pool was prepared.
    pub requested: Limits,
    /// What the kernel enforces, read back then.
    pub limits: Limits,
    /// The record file's stamp (`Records::stamp`) when the pool was
    /// prepared or last compacted.
    pub stamp: Option<(u64, i64, i64)>,
    pub journal: JournalFile,
}

/// pid 1, reeve and reeve's ancestors, by identity. Read once: a living
/// process gains no ancestors (reparenting goes to a subreaper or init,
/// both ancestors already), and an ancestor that ends takes its start time
/// with it, so a pid it leaves is not refused by mistake.
#[derive(Debug, Clone)]
pub struct Protected {
    keys: Vec<ProcKey>,
}

impl Protected {
    pub fn of_self(reader: &mut ProcReader) -> Result<Protected, PlaceError> {
        let mut keys = Vec::new();
        let mut pid = sys::getpid();
        for _ in 0..4096 {
            let s = reader.stat(pid).map_err(|e| PlaceError::Proc {
                pid,
                detail: format!("reading reeve's ancestors: {e}"),
            })?;
            keys.push(s.key());
            if s.ppid == 0 || pid == 1 {
                break;
            }
            pid = s.ppid;
        }
        Ok(Protected { keys })
    }

    /// Refuses what [`super::refuse_protected`] refuses.
    pub fn check(&self, key: ProcKey) -> Result<(), PlaceError> {
        let why = if key.pid == 1 {
            "it is pid 1, the init process"
        } else if self.keys.first() == Some(&key) {
            "it is reeve itself"
        } else if self.keys.contains(&key) {
            "it is an ancestor of reeve (its parent, or above)"
        } else {
            return Ok(());
        };
        Err(PlaceError::Refused { pid: key.pid, why })
    }
}

/// Moves `key` and its descendants into the prepared pool `ready`. Fails
/// like [`super::attach`]: when `key` is refused, when the intents cannot
/// be appended (nothing is moved), or when `key` itself cannot be moved
/// (it goes first, so nothing else was). `current` is `key`'s cgroup when
/// the caller has just read it. The records lock (`_held`) is held for
/// the appends. Returns the report and the journal's length after the
/// confirmation.
pub fn join(
    h: &Hierarchy,
    _held: &RecordsLock<'_>,
    reader: &mut ProcReader,
    key: ProcKey,
    current: Option<PathBuf>,
    ready: &mut Ready,
    protected: &Protected,
) -> Result<(AttachReport, u64), PlaceError> {
    protected.check(key)?;
    let mut failed = Vec::new();
    let mut intents = Vec::new();
    let mut current = current;
    for k in family(reader, key, &mut failed) {
        let cg = match current.take() {
            Some(c) if k == key => Ok(c),
            _ => h.process_cgroup(k.pid),
        };
        match cg {
            Ok(from) if from == ready.path => {}
            Ok(from) => intents.push(Pending {
                pid: k.pid,
                start_ticks: k.start_ticks,
                from,
                to: ready.path.clone(),
            }),
            Err(e) if k == key => {
                return Err(match e.kind {
                    cgroup::CgroupErrorKind::ProcessGone => PlaceError::ProcessGone {
                        pid: key.pid,
                        detail: "ended before it was moved".into(),
                        stranger: None,
                    },
                    _ => PlaceError::Cgroup(e),
                })
            }
            Err(e) => failed.push((k, e.to_string())),
        }
    }
    let written: Vec<Entry> = intents.iter().cloned().map(Entry::Intent).collect();
    let mut journal_len = 0;
    if !written.is_empty() {
        journal_len = ready
            .journal
            .append(&written)
            .map_err(PlaceError::IntentNotWritten)?;
    }
    let group = Group::new(&ready.path);
    let mut members = Vec::new();
    let mut settled = Vec::with_capacity(intents.len());
    let mut root_failed = None;
    for (i, p) in intents.iter().enumerate() {
        let k = p.key();
        let outcome = group.move_pid(k, Some(&p.from), reader);
        // Only a move proved not written is withdrawn; any other outcome
        // leaves its intent for the next fold to settle from what the
        // kernel shows (the write may have landed).
        let withdraw = matches!(outcome, Ok(MoveOutcome::GoneBeforeWrite));
        let why = match outcome {
            Ok(MoveOutcome::Moved) => {
                let m = Member {
                    pid: k.pid,
                    start_ticks: k.start_ticks,
                    original_cgroup: p.from.clone(),
                };
                settled.push(Entry::Member(m.clone()));
                members.push(m);
                continue;
            }
            other => PlaceError::from_move(k, other),
        };
        if withdraw {
            settled.push(Entry::Withdrawn {
                pid: k.pid,
                start_ticks: k.start_ticks,
            });
        }
        if k == key {
            // The root goes first: the rest of the family stays out, and
            // its intents are withdrawn with the root's.
            settled.extend(intents[i + 1..].iter().map(|q| Entry::Withdrawn {
                pid: q.pid,
                start_ticks: q.start_ticks,
            }));
            root_failed = Some(why);
            break;
        }
        failed.push((k, why.to_string()));
    }
    let unconfirmed = if settled.is_empty() {
        None
    } else {
        match ready.journal.append(&settled) {
            Ok(len) => {
                journal_len = len;
                None
            }
            Err(e) => Some(e),
        }
    };
    if let Some(why) = root_failed {
        return Err(why.leaving(unconfirmed.map(Leftover::IntentInJournal)));
    }
    Ok((
        AttachReport {
            group: ready.group.clone(),
            cgroup: ready.path.clone(),
            moved: members.iter().map(Member::key).collect(),
            members,
            failed,
            limits: ready.limits.clone(),
            reset: Vec::new(),
            in_force: true,
            problems: Vec::new(),
            unconfirmed,
        },
        journal_len,
    ))
}
