//! A group's membership journal, `<state_dir>/jobs/<group>.journal`: the
//! moves the daemon makes into a pool whose record is already written,
//! appended one line each instead of rewriting the record.
//!
//! Invariant: an entry is on file before the move it announces (an
//! intent) or after the move it confirms (a member); the record a reader
//! loads is the JSON file with the journal folded in, and folding is
//! idempotent, so a journal left beside a record it was already folded
//! into changes nothing. Appends are one write(2) each, without fsync:
//! cgroup membership does not survive a machine crash, so an intent only
//! has to survive a crash of the reeve process, which the page cache
//! already guarantees. Power-loss durability of what was placed is the
//! audit log's job (group commit at the end of the wakeup).

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{JobRecord, Member, Pending, RecordError};
use crate::store::{open_private, open_read, StateDir, StoreError};

/// One line of the journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Entry {
    /// A move into the group, written ahead of its cgroup.procs write.
    Intent(Pending),
    /// A move that happened: the process is a member.
    Member(Member),
    /// A move that did not happen: its intent is withdrawn.
    Withdrawn { pid: u32, start_ticks: u64 },
}

/// The journal of `group` in the records directory `dir`.
pub(super) fn path(dir: &Path, group: &str) -> PathBuf {
    dir.join(format!("{group}.journal"))
}

/// Appends `entries` in one write(2), without fsync (see the module
/// comment for why that is enough). Returns the journal's length after.
pub(super) fn append(dir: &StateDir, group: &str, entries: &[Entry]) -> Result<u64, RecordError> {
    let path = path(dir.path(), group);
    let mut buf = Vec::with_capacity(entries.len() * 160);
    for e in entries {
        serde_json::to_writer(&mut buf, e).map_err(|e| RecordError::Encode {
            what: format!("journal entry for {group}"),
            reason: e.to_string(),
        })?;
        buf.push(b'\n');
    }
    let io_err = |op, e| RecordError::Store(StoreError::io(op, &path, e));
    let mut file = open_private(&path, true).map_err(|e| io_err("open journal", e))?;
    file.write_all(&buf)
        .map_err(|e| io_err("append to journal", e))?;
    let len = file
        .metadata()
        .map_err(|e| io_err("stat journal", e))?
        .len();
    Ok(len)
}

/// Applies the journal of `r.group` to `r`. A line that does not parse is
/// skipped: one write(2) of a line is never torn by a crash of reeve, only
/// by a crash of the machine, and that ends every process the line could
/// name (what it announced is then moot, and the audit log holds it).
pub fn fold(dir: &Path, r: &mut JobRecord) -> Result<(), RecordError> {
    let path = path(dir, &r.group);
    let mut file = match open_read(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StoreError::io("open journal", &path, e).into()),
    };
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| StoreError::io("read journal", &path, e))?;
    for line in bytes.split(|&b| b == b'\n') {
        if let Ok(e) = serde_json::from_slice::<Entry>(line) {
            apply(r, e);
        }
    }
    Ok(())
}

/// One entry's effect; applying it twice is applying it once.
pub(super) fn apply(r: &mut JobRecord, e: Entry) {
    match e {
        Entry::Intent(p) => {
            r.pending.retain(|q| q.key() != p.key());
            r.pending.push(p);
        }
        Entry::Member(m) => {
            r.pending.retain(|q| q.key() != m.key());
            r.members.retain(|o| o.key() != m.key());
            r.members.push(m);
        }
        Entry::Withdrawn { pid, start_ticks } => r
            .pending
            .retain(|q| (q.pid, q.start_ticks) != (pid, start_ticks)),
    }
}

/// Empties the journal once the record holds everything in it.
pub(super) fn truncate(dir: &StateDir, group: &str) -> Result<(), RecordError> {
    let path = path(dir.path(), group);
    match std::fs::metadata(&path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        _ => {}
    }
    let file = open_private(&path, false).map_err(|e| StoreError::io("open journal", &path, e))?;
    file.set_len(0)
        .map_err(|e| StoreError::io("truncate journal", &path, e))?;
    Ok(())
}

/// Removes the journal with its record.
pub(super) fn remove(dir: &StateDir, group: &str) -> Result<(), RecordError> {
    let path = path(dir.path(), group);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::io("remove journal", &path, e).into()),
    }
}
