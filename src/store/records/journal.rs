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

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
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

/// A journal held open by a writer that appends many times (the daemon).
#[derive(Debug)]
pub struct JournalFile {
    path: PathBuf,
    group: String,
    file: File,
}

impl JournalFile {
    pub(super) fn open(dir: &StateDir, group: &str) -> Result<JournalFile, RecordError> {
        let path = path(dir.path(), group);
        let file =
            open_private(&path, true).map_err(|e| StoreError::io("open journal", &path, e))?;
        Ok(JournalFile {
            path,
            group: group.to_string(),
            file,
        })
    }

    /// Appends `entries` in one write(2), without fsync (see the module
    /// comment for why that is enough), and returns the journal's length
    /// after. A journal unlinked under the open file (its link count is 0)
    /// is opened again first, so no entry goes where no reader looks.
    pub fn append(&mut self, entries: &[Entry]) -> Result<u64, RecordError> {
        let mut buf = Vec::with_capacity(entries.len() * 160);
        for e in entries {
            serde_json::to_writer(&mut buf, e).map_err(|e| RecordError::Encode {
                what: format!("journal entry for {}", self.group),
                reason: e.to_string(),
            })?;
            buf.push(b'\n');
        }
        let io_err = |op, path: &Path, e| RecordError::Store(StoreError::io(op, path, e));
        let mut meta = self
            .file
            .metadata()
            .map_err(|e| io_err("stat journal", &self.path, e))?;
        if meta.nlink() == 0 {
            self.file = open_private(&self.path, true)
                .map_err(|e| io_err("open journal", &self.path, e))?;
            meta = self
                .file
                .metadata()
                .map_err(|e| io_err("stat journal", &self.path, e))?;
        }
        if let Err(e) = self.file.write_all(&buf) {
            // A full disk can take part of the lines: cut them off, so the
            // next append starts on a line of its own and no entry is lost
            // inside a torn one.
            if let Err(cut) = self.file.set_len(meta.len()) {
                return Err(RecordError::Store(StoreError::io(
                    "append to journal",
                    &self.path,
                    io::Error::new(
                        e.kind(),
                        format!("{e}; and cutting off the partial line failed: {cut}"),
                    ),
                )));
            }
            return Err(io_err("append to journal", &self.path, e));
        }
        Ok(meta.len() + buf.len() as u64)
    }
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

#[cfg(test)]
mod tests {
    use super::super::super::testdir::TempDir;
    use super::super::Records;
    use super::*;
    use crate::cgroup::Limits;

    fn pending(pid: u32) -> Pending {
        Pending {
            pid,
            start_ticks: 5,
            from: "/o".into(),
            to: "/x".into(),
        }
    }

    #[test]
    fn folding_is_idempotent_and_a_save_empties_the_journal() {
        let t = TempDir::new("journal");
        let records = Records::open(t.path()).unwrap();
        let r = JobRecord::new(
            "pool.j".into(),
            true,
            Path::new("/x"),
            &Limits::default(),
            1,
        );
        records.save(&r).unwrap();
        let mut j = records.journal("pool.j").unwrap();
        let member = Member {
            pid: 7,
            start_ticks: 5,
            original_cgroup: "/o".into(),
        };
        j.append(&[Entry::Intent(pending(7)), Entry::Intent(pending(8))])
            .unwrap();
        let len = j
            .append(&[
                Entry::Member(member.clone()),
                Entry::Withdrawn {
                    pid: 8,
                    start_ticks: 5,
                },
                Entry::Intent(pending(9)),
            ])
            .unwrap();
        assert_eq!(len, records.journal_len("pool.j"));
        // A torn last line (only a machine crash makes one) is skipped.
        let path = t.path().join("jobs/pool.j.journal");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"{\"member\":{\"pid\":1").unwrap();
        let once = records.load("pool.j").unwrap().unwrap();
        assert_eq!(once.members, vec![member.clone()]);
        assert_eq!(once.pending, vec![pending(9)]);
        // Folding the same journal onto a record that holds it changes
        // nothing.
        let mut twice = once.clone();
        fold(&t.path().join("jobs"), &mut twice).unwrap();
        assert_eq!(twice, once);
        records.save(&once).unwrap();
        assert_eq!(records.journal_len("pool.j"), 0);
        assert_eq!(
            records.load("pool.j").unwrap().unwrap().pending,
            once.pending
        );
        // The open journal appends after the emptying, not at its old end.
        let len = j.append(&[Entry::Member(member)]).unwrap();
        assert_eq!(len, records.journal_len("pool.j"));
    }
}
