//! Job records: what reeve knows about each group it manages, one file per
//! group in `<state_dir>/jobs/<group>.json`, plus the list of identities an
//! operator released with `detach`.
//!
//! Invariant: a record is read-modified-written only while the caller
//! holds [`RecordsLock`] (the `jobs/.lock` flock shared by the daemon and
//! the CLI commands), and written atomically through [`write_atomic`].

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use fs2::FileExt;
use serde::{Deserialize, Serialize};

use super::{load_versioned, write_atomic, Loaded, StateDir};
use crate::cgroup::Limits;
use crate::procfs::{ProcKey, ProcReader};

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

pub const RECORD_VERSION: u32 = 1;
const RELEASED_FILE: &str = "released.json";

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
        }
    }
}

/// The job records of one state directory.
pub struct Records {
    dir: StateDir,
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
    pub fn open(state_dir: &Path) -> Result<Records, String> {
        StateDir::open(state_dir).map_err(|e| e.to_string())?;
        let dir = StateDir::open(&state_dir.join("jobs")).map_err(|e| e.to_string())?;
        Ok(Records { dir })
    }

    /// Serialises read-modify-write of records across processes.
    pub fn lock(&self) -> Result<RecordsLock<'_>, String> {
        let path = self.dir.path().join(".lock");
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        FileExt::lock_exclusive(&file).map_err(|e| format!("locking {}: {e}", path.display()))?;
        Ok(RecordsLock {
            records: self,
            _file: file,
        })
    }

    pub fn load(&self, group: &str) -> Result<Option<JobRecord>, String> {
        match load_versioned(
            &self.dir,
            &format!("{group}.json"),
            RECORD_VERSION,
            crate::sys::realtime_ms(),
        ) {
            Loaded::Missing => Ok(None),
            Loaded::Ok(r) => Ok(Some(r)),
            Loaded::SetAside { reason, moved_to } => Err(format!(
                "job record for {group} was unusable ({reason}); set aside as {}",
                moved_to.display()
            )),
            Loaded::Unusable { reason } => Err(format!("job record for {group}: {reason}")),
        }
    }

    pub fn save(&self, r: &JobRecord) -> Result<(), String> {
        let bytes = serde_json::to_vec_pretty(r).map_err(|e| e.to_string())?;
        write_atomic(&self.dir, &format!("{}.json", r.group), &bytes).map_err(|e| e.to_string())
    }

    pub fn remove(&self, group: &str) -> Result<(), String> {
        let path = self.dir.path().join(format!("{group}.json"));
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// Identities an operator released with `detach`: the daemon never
    /// re-attaches them. Kept in `released.json`, pruned of processes that
    /// have ended whenever it is written.
    pub fn released(&self) -> Vec<ProcKey> {
        let path = self.dir.path().join(RELEASED_FILE);
        std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Vec<ProcKey>>(&b).ok())
            .unwrap_or_default()
    }

    /// Adds `keys` to the released list (call under [`Records::lock`]).
    pub fn release(&self, keys: &[ProcKey], reader: &mut ProcReader) -> Result<(), String> {
        let mut list = self.released();
        list.extend_from_slice(keys);
        list.sort();
        list.dedup();
        list.retain(|k| matches!(reader.stat(k.pid), Ok(s) if s.start_ticks == k.start_ticks));
        let bytes = serde_json::to_vec(&list).map_err(|e| e.to_string())?;
        write_atomic(&self.dir, RELEASED_FILE, &bytes).map_err(|e| e.to_string())
    }

    /// Every record, for status and adoption. Unreadable ones are skipped
    /// and named in the second list.
    pub fn all(&self) -> (Vec<JobRecord>, Vec<String>) {
        let mut out = Vec::new();
        let mut bad = Vec::new();
        let Ok(entries) = std::fs::read_dir(self.dir.path()) else {
            return (out, bad);
        };
        for e in entries.flatten() {
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
                Err(why) => bad.push(why),
            }
        }
        out.sort_by(|a, b| a.group.cmp(&b.group));
        (out, bad)
    }
}
