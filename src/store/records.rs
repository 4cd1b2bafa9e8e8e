//! Job records: what reeve knows about each group it manages, one file per
//! group in `<state_dir>/jobs/<group>.json`, plus the list of identities an
//! operator released with `detach`.
//!
//! Invariants: a record is read-modified-written only while the caller
//! holds [`RecordsLock`] (the `jobs/.lock` flock shared by the daemon and
//! the CLI commands), and written atomically through [`write_atomic`].
//! Every cgroup move is written ahead: the record lists the move as a
//! [`Pending`] intent (identity, from, to) durably before the move, and
//! the intent becomes a member (or stops being one) in the write after it.
//! An intent left by a crash (or by a move whose outcome was not proved)
//! is settled from what the kernel shows the next time the record is
//! written, so a group holds only what its members and intents name, and
//! the descendants those fork inside it after being recorded (a child is
//! born in its parent's group; nothing records it). `reeve run` writes a
//! [`JobRecord::pending_runs`] intent before it forks. `jobs/.lock` and
//! `released.json` are opened without blocking and refused unless they
//! are trusted regular files.
//! The daemon's moves into a pool whose record exists go to the group's
//! membership journal (`records/journal.rs`) instead, one appended line per
//! intent and per confirmation; [`Records::load`] folds the journal into the
//! record and [`Records::save`] empties it once the record holds it.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use fs2::FileExt;
use serde::{Deserialize, Serialize};

use super::{load_versioned, write_atomic, Loaded, StateDir, StoreError};

mod journal;
use crate::cgroup::Limits;
use crate::procfs::{ProcKey, ProcReader};
pub use journal::{fold as fold_journal, Entry, JournalFile};

/// One process reeve moved, and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub pid: u32,
    pub start_ticks: u64,
    pub original_cgroup: PathBuf,
}

impl Member {
    pub fn key(&self) -> ProcKey {
        ProcKey {
            pid: self.pid,
            start_ticks: self.start_ticks,
        }
    }
}

/// A move written ahead of its cgroup.procs write: the process
/// `pid`@`start_ticks` is about to go (or went) from `from` to `to`.
/// `to` is the record's group for an attach, `from` is for a detach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub pid: u32,
    pub start_ticks: u64,
    pub from: PathBuf,
    pub to: PathBuf,
}

impl Pending {
    pub fn key(&self) -> ProcKey {
        ProcKey {
            pid: self.pid,
            start_ticks: self.start_ticks,
        }
    }
}

/// Why a record operation failed. Displays as one line that names the file
/// and what to do.
#[derive(Debug)]
pub enum RecordError {
    /// The state directory or a record file could not be used or written.
    Store(StoreError),
    /// `jobs/.lock` is held by another process ([`Records::try_lock`]).
    Busy { path: PathBuf },
    /// Opening or locking `jobs/.lock` failed.
    Lock { path: PathBuf, source: io::Error },
    /// A record that cannot be used: set aside to `moved_to`, or left in
    /// place when it could not be moved.
    Unusable {
        group: String,
        reason: String,
        moved_to: Option<PathBuf>,
    },
    /// `released.json` cannot be read or parsed.
    Released { path: PathBuf, reason: String },
    /// A record or list that could not be encoded.
    Encode { what: String, reason: String },
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::Store(e) => write!(f, "{e}"),
            RecordError::Busy { path } => write!(
                f,
                "{}: held by another reeve command; the work is retried later",
                path.display()
            ),
            RecordError::Lock { path, source } => {
                write!(f, "cannot lock {}: {source}", path.display())
            }
            RecordError::Unusable {
                group,
                reason,
                moved_to: Some(to),
            } => write!(
                f,
                "job record for {group} was unusable ({reason}); set aside as {}",
                to.display()
            ),
            RecordError::Unusable {
                group,
                reason,
                moved_to: None,
            } => write!(
                f,
                "job record for {group}: {reason}; move the file aside to let reeve write a new one"
            ),
            RecordError::Released { path, reason } => write!(
                f,
                "{}: unreadable ({reason}); reeve attaches nothing automatically until it is \
                 repaired or removed (removing it forgets which processes `reeve detach` released)",
                path.display()
            ),
            RecordError::Encode { what, reason } => write!(f, "encoding {what}: {reason}"),
        }
    }
}

impl std::error::Error for RecordError {}

impl From<StoreError> for RecordError {
    fn from(e: StoreError) -> RecordError {
        RecordError::Store(e)
    }
}

impl RecordError {
    /// True when the failure is a full disk or quota.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, RecordError::Store(e) if e.is_disk_full())
    }
}

pub const RECORD_VERSION: u32 = 1;
const RELEASED_FILE: &str = "released.json";
/// A released list larger than this is not one reeve wrote.
const MAX_RELEASED_BYTES: u64 = 16 << 20;

/// What reeve knows about one group it manages, persisted in
/// `<state_dir>/jobs/<group>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub version: u32,
    /// The group's directory name (`job.x` or `pool.y`).
    pub group: String,
    pub cgroup: PathBuf,
    pub pool: bool,
    pub limits: Limits,
    pub in_force: bool,
    /// Why the limits are not in force, one line each.
    pub problems: Vec<String>,
    pub created_ms: u64,
    pub members: Vec<Member>,
    /// Moves written ahead and not yet confirmed. Records written before
    /// intents existed have none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<Pending>,
    /// `reeve run`s written ahead of their fork: `pid`@`start_ticks` is
    /// the `reeve run` about to start a command into `to` from `from`; the
    /// command's own identity is unknown until after the fork.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_runs: Vec<Pending>,
}

impl JobRecord {
    /// A record for a group with no members yet.
    pub fn new(
        group: String,
        pool: bool,
        cgroup: &Path,
        limits: &Limits,
        now_ms: u64,
    ) -> JobRecord {
        JobRecord {
            version: RECORD_VERSION,
            group,
            cgroup: cgroup.to_path_buf(),
            pool,
            limits: limits.clone(),
            in_force: false,
            problems: Vec::new(),
            created_ms: now_ms,
            members: Vec::new(),
            pending: Vec::new(),
            pending_runs: Vec::new(),
        }
    }

    /// Drops the members whose process has ended (or whose pid now names
    /// another process), so a pool's record does not grow with every
    /// process that ever ran in it. A member whose state cannot be read is
    /// kept.
    pub fn prune_exited(&mut self, reader: &mut ProcReader) {
        self.members.retain(|m| match reader.stat(m.pid) {
            Ok(s) => s.start_ticks == m.start_ticks && !s.is_dead(),
            Err(crate::procfs::ReadError::Gone) => false,
            Err(_) => true,
        });
    }
}

/// The job records of one state directory.
pub struct Records {
    dir: StateDir,
    /// Reads /proc for pruning ended members at each save: opened once,
    /// with its buffers, not per save.
    reader: std::cell::RefCell<ProcReader>,
}

/// Holds the records lock until dropped; the records it guards are
/// reached through it, so a read-modify-write cannot forget the lock.
pub struct RecordsLock<'a> {
    records: &'a Records,
    _file: File,
}

impl RecordsLock<'_> {
    pub fn records(&self) -> &Records {
        self.records
    }
}

impl Records {
    pub fn open(state_dir: &Path) -> Result<Records, RecordError> {
        StateDir::open(state_dir)?;
        let dir = StateDir::open(&state_dir.join("jobs"))?;
        let reader =
            ProcReader::open().map_err(|e| StoreError::io("open", Path::new("/proc"), e))?;
        Ok(Records {
            dir,
            reader: std::cell::RefCell::new(reader),
        })
    }

    /// Opens `jobs/.lock` without blocking on whatever sits at the name
    /// (a FIFO is refused, not waited on), refusing a symlink, anything but
    /// a regular file and an untrusted file. An unusable lock file is
    /// refused rather than set aside: two processes setting aside and
    /// re-creating it would each hold a lock on a different file.
    fn open_lock_file(&self) -> Result<(PathBuf, File), RecordError> {
        let path = self.dir.path().join(".lock");
        match super::open_private(&path, true) {
            Ok(file) => Ok((path, file)),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::InvalidInput | io::ErrorKind::PermissionDenied
                ) =>
            {
                let source = io::Error::new(
                    e.kind(),
                    format!("{e}; move it away so reeve can create its own lock file"),
                );
                Err(RecordError::Lock { path, source })
            }
            Err(source) => Err(RecordError::Lock { path, source }),
        }
    }

    /// Serialises read-modify-write of records across processes, waiting
    /// for another holder. For the CLI commands only: the daemon uses
    /// [`Records::try_lock`].
    pub fn lock(&self) -> Result<RecordsLock<'_>, RecordError> {
        let (path, file) = self.open_lock_file()?;
        FileExt::lock_exclusive(&file).map_err(|source| RecordError::Lock { path, source })?;
        Ok(RecordsLock {
            records: self,
            _file: file,
        })
    }

    /// The records lock if nobody holds it, else [`RecordError::Busy`] at
    /// once: the daemon never waits on another process.
    pub fn try_lock(&self) -> Result<RecordsLock<'_>, RecordError> {
        let (path, file) = self.open_lock_file()?;
        match FileExt::try_lock_exclusive(&file) {
            Ok(()) => Ok(RecordsLock {
                records: self,
                _file: file,
            }),
            Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => {
                Err(RecordError::Busy { path })
            }
            Err(source) => Err(RecordError::Lock { path, source }),
        }
    }

    /// The record of `group` with its journal folded in.
    pub fn load(&self, group: &str) -> Result<Option<JobRecord>, RecordError> {
        let mut r = match self.load_file(group)? {
            Some(r) => r,
            None => return Ok(None),
        };
        journal::fold(self.dir.path(), &mut r)?;
        Ok(Some(r))
    }

    fn load_file(&self, group: &str) -> Result<Option<JobRecord>, RecordError> {
        match load_versioned(
            &self.dir,
            &format!("{group}.json"),
            RECORD_VERSION,
            crate::sys::realtime_ms(),
        ) {
            Loaded::Missing => Ok(None),
            Loaded::Ok(r) => Ok(Some(r)),
            Loaded::SetAside { reason, moved_to } => Err(RecordError::Unusable {
                group: group.to_string(),
                reason,
                moved_to: Some(moved_to),
            }),
            Loaded::Unusable { reason } => Err(RecordError::Unusable {
                group: group.to_string(),
                reason,
                moved_to: None,
            }),
        }
    }

    /// `group`'s membership journal, opened for appending (one write(2)
    /// per append, no fsync). Append under the records lock, for a group
    /// whose record is on file.
    pub fn journal(&self, group: &str) -> Result<JournalFile, RecordError> {
        JournalFile::open(&self.dir, group)
    }

    /// Which version of `group`'s record file is on disk (inode and
    /// modification time): every [`Records::save`] renames a new file in,
    /// so a change of stamp means someone rewrote the record. `None` when
    /// the file cannot be stat'ed: an unknown stamp never equals a known
    /// one, so the caller prepares the pool again rather than trust it.
    pub fn stamp(&self, group: &str) -> Option<(u64, i64, i64)> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::symlink_metadata(self.dir.path().join(format!("{group}.json"))).ok()?;
        Some((m.ino(), m.mtime(), m.mtime_nsec()))
    }

    /// Writes `r` atomically and then empties its journal: call with a
    /// record loaded (journal folded) under the same lock. Members whose
    /// process has ended are left out, so every write keeps a record to
    /// the processes it governs.
    pub fn save(&self, r: &JobRecord) -> Result<(), RecordError> {
        let mut r = r.clone();
        r.prune_exited(&mut self.reader.borrow_mut());
        let bytes = serde_json::to_vec_pretty(&r).map_err(|e| RecordError::Encode {
            what: format!("job record {}", r.group),
            reason: e.to_string(),
        })?;
        write_atomic(&self.dir, &format!("{}.json", r.group), &bytes)?;
        journal::truncate(&self.dir, &r.group)
    }

    /// Removes the record, then its journal (a journal left without its
    /// record is never read, and the next record written empties it).
    pub fn remove(&self, group: &str) -> Result<(), RecordError> {
        let path = self.dir.path().join(format!("{group}.json"));
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io("remove job record", &path, e).into()),
        }
        journal::remove(&self.dir, group)
    }

    /// Bytes in `group`'s journal (0 when it has none).
    pub fn journal_len(&self, group: &str) -> u64 {
        std::fs::symlink_metadata(journal::path(self.dir.path(), group)).map_or(0, |m| m.len())
    }

    /// Identities an operator released with `detach`: the daemon never
    /// re-attaches them. Kept in `released.json`, pruned of processes that
    /// have ended whenever it is written. A file that exists but cannot be
    /// read or parsed is an error, never an empty list: an empty list
    /// would let the daemon re-attach what an operator released.
    pub fn released(&self) -> Result<Vec<ProcKey>, RecordError> {
        let path = self.dir.path().join(RELEASED_FILE);
        let fail = |reason: String| RecordError::Released {
            path: path.clone(),
            reason,
        };
        // An untrusted or non-regular file is refused, not set aside:
        // setting it aside would empty the list and let the daemon attach
        // what an operator released.
        let file = match super::open_read(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(fail(e.to_string())),
        };
        let mut bytes = Vec::new();
        file.take(MAX_RELEASED_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| fail(e.to_string()))?;
        if bytes.len() as u64 > MAX_RELEASED_BYTES {
            return Err(fail(format!(
                "larger than {MAX_RELEASED_BYTES} bytes, which reeve never writes"
            )));
        }
        serde_json::from_slice::<Vec<ProcKey>>(&bytes).map_err(|e| fail(e.to_string()))
    }

    /// Adds `keys` to the released list (call under [`Records::lock`]).
    pub fn release(&self, keys: &[ProcKey], reader: &mut ProcReader) -> Result<(), RecordError> {
        let mut list = self.released()?;
        list.extend_from_slice(keys);
        list.sort();
        list.dedup();
        list.retain(|k| matches!(reader.stat(k.pid), Ok(s) if s.start_ticks == k.start_ticks));
        let bytes = serde_json::to_vec(&list).map_err(|e| RecordError::Encode {
            what: RELEASED_FILE.to_string(),
            reason: e.to_string(),
        })?;
        write_atomic(&self.dir, RELEASED_FILE, &bytes)?;
        Ok(())
    }

    /// Removes the temp files a writer killed mid-write left in `jobs/`
    /// (`.<name>.json.tmp.<pid>.<n>`). Every record write happens under
    /// the records lock, so while this holds it (tried, never waited for:
    /// [`RecordError::Busy`] when a command holds it) no temp file is in
    /// use. For the daemon at start; the read-only commands never call it.
    /// Returns the names removed and, per file that could not be, why.
    pub fn remove_stale_temps(&self) -> Result<(Vec<String>, Vec<String>), RecordError> {
        let _held = self.try_lock()?;
        let dir = self.dir.path();
        let entries = std::fs::read_dir(dir).map_err(|e| StoreError::io("list", dir, e))?;
        let mut removed = Vec::new();
        let mut failed = Vec::new();
        for e in entries {
            let e = match e {
                Ok(e) => e,
                Err(e) => {
                    failed.push(StoreError::io("list", dir, e).to_string());
                    continue;
                }
            };
            let name = e.file_name().to_string_lossy().into_owned();
            if !(name.starts_with('.') && name.contains(".json.tmp.")) {
                continue;
            }
            match std::fs::remove_file(e.path()) {
                Ok(()) => removed.push(name),
                Err(err) => {
                    failed.push(StoreError::io("remove temp file", &e.path(), err).to_string())
                }
            }
        }
        Ok((removed, failed))
    }

    /// Every record, for status and adoption. Unreadable ones are skipped
    /// and named in the second list, as is a directory listing that failed
    /// (the records after it may be missing from the first).
    pub fn all(&self) -> (Vec<JobRecord>, Vec<String>) {
        let mut out = Vec::new();
        let mut bad = Vec::new();
        let entries = match std::fs::read_dir(self.dir.path()) {
            Ok(e) => e,
            Err(e) => {
                bad.push(format!("{}: {e}", self.dir.path().display()));
                return (out, bad);
            }
        };
        for e in entries {
            let e = match e {
                Ok(e) => e,
                Err(e) => {
                    bad.push(StoreError::io("list", self.dir.path(), e).to_string());
                    continue;
                }
            };
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(group) = name.strip_suffix(".json") else {
                continue;
            };
            if name == RELEASED_FILE {
                continue;
            }
            match self.load(group) {
                Ok(Some(r)) => out.push(r),
                Ok(None) => {}
                Err(why) => bad.push(why.to_string()),
            }
        }
        out.sort_by(|a, b| a.group.cmp(&b.group));
        (out, bad)
    }
}

#[cfg(test)]
mod tests;
