//! The daemon's persisted state: what it tracks, in `state.json`, and the
//! lock that allows one daemon per state directory.
//!
//! Invariants: the snapshot is written atomically (see `store`), at most
//! once per flush interval while something changed and once at shutdown;
//! all times are wall-clock milliseconds in `*_ms` fields, normalised on
//! read; a state file that cannot be used is set aside, never deleted, and
//! never stops the daemon from starting.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use std::collections::{BTreeMap, HashMap};

use fs2::FileExt;
use serde::{Deserialize, Serialize};

use crate::cgroup::Limits;

use crate::discovery::{Discovery, DiscoveryStats, RuleId};
use crate::procfs::{Comm, ProcKey};
use crate::store::{self, Loaded, StateDir};

pub const STATE_FILE: &str = "state.json";
pub const LOCK_FILE: &str = "reeve.lock";
pub const STATE_VERSION: u32 = 1;
/// How long a starting daemon retries the lock before it believes another
/// daemon holds it.
pub const LOCK_WAIT_MS: u64 = 500;

/// One tracked process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcState {
    pub pid: u32,
    pub start_ticks: u64,
    pub rule: String,
    pub comm: String,
    pub ppid: u32,
    pub uid: u32,
    pub discovered_ms: u64,
    /// 0 while the process runs.
    #[serde(default)]
    pub exited_ms: u64,
    pub last_seen_ms: u64,
    /// Where it is governed, when it is.
    #[serde(default, flatten, skip_serializing_if = "Option::is_none")]
    pub governed: Option<Governed>,
}

/// How a tracked process is governed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Governed {
    /// The group's name (`job.x` or `pool.y`).
    pub job: String,
    pub cgroup: PathBuf,
    /// Where it was before reeve moved it; absent for an adopted process
    /// whose origin reeve did not record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_cgroup: Option<PathBuf>,
    pub attached_ms: u64,
}

/// One governed group and its limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobState {
    pub group: String,
    pub cgroup: PathBuf,
    pub pool: bool,
    pub limits: Limits,
    pub in_force: bool,
    #[serde(default)]
    pub problems: Vec<String>,
}

/// What the daemon's governance knows, kept in memory and put into every
/// snapshot. `generation` changes whenever the contents do.
#[derive(Debug, Default)]
pub struct GovernanceView {
    pub procs: HashMap<ProcKey, Governed>,
    pub jobs: BTreeMap<String, JobState>,
    pub generation: u64,
}

impl ProcState {
    pub fn key(&self) -> ProcKey {
        ProcKey {
            pid: self.pid,
            start_ticks: self.start_ticks,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub discovered: u64,
    pub exited: u64,
    pub refused: u64,
    pub restarts: u64,
    /// Pids the seen-set could not hold (`seen_set_full`): the set, sized
    /// at start from the host's limits, is too small for this host.
    #[serde(default)]
    pub seen_overflow: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    pub saved_at_ms: u64,
    pub daemon_pid: u32,
    pub started_ms: u64,
    pub processes: Vec<ProcState>,
    #[serde(default)]
    pub jobs: Vec<JobState>,
    #[serde(default)]
    pub counters: Counters,
    /// The last audit event written before this snapshot: on restart,
    /// events after it are what the snapshot does not yet know.
    #[serde(default)]
    pub audit_seq: u64,
    /// The daemon life that wrote it (a random id, also in its `started`
    /// and `stopped` events).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub instance: String,
}

/// What the loop copies out of discovery for a snapshot: fixed-size
/// records and the few rule names they refer to, so a capture costs one
/// allocation for the processes however many are tracked (plus the
/// governed ones' group names). [`Capture::into_state`] builds the
/// [`State`] (a string per process, sorting) off the loop.
pub struct Capture {
    head: State,
    procs: Vec<CapturedProc>,
    rules: Vec<(RuleId, String)>,
}

struct CapturedProc {
    key: ProcKey,
    rule: RuleId,
    comm: Comm,
    ppid: u32,
    uid: u32,
    discovered_ms: u64,
    exited_ms: u64,
    last_seen_ms: u64,
    governed: Option<Governed>,
}

impl Capture {
    /// What `discovery` tracks now and what governance knows of it.
    pub fn take(
        d: &Discovery,
        gov: &GovernanceView,
        audit_seq: u64,
        daemon_pid: u32,
        started_ms: u64,
        counters: &Counters,
        now_ms: u64,
    ) -> Capture {
        let tracked = d.tracked();
        let mut procs = Vec::with_capacity(tracked.len());
        let mut rules: Vec<(RuleId, String)> = Vec::new();
        for (k, t) in tracked.iter() {
            if !rules.iter().any(|(id, _)| *id == t.rule) {
                rules.push((t.rule, d.rule_name(t.rule).to_string()));
            }
            procs.push(CapturedProc {
                key: *k,
                rule: t.rule,
                comm: t.comm,
                ppid: t.ppid,
                uid: t.uid,
                discovered_ms: t.discovered_ms,
                exited_ms: t.exited_ms,
                last_seen_ms: if t.alive() { now_ms } else { t.exited_ms },
                governed: gov.procs.get(k).cloned(),
            });
        }
        let head = State {
            version: STATE_VERSION,
            saved_at_ms: now_ms,
            daemon_pid,
            started_ms,
            processes: Vec::new(),
            jobs: gov.jobs.values().cloned().collect(),
            counters: counters.clone(),
            audit_seq,
            instance: String::new(),
        };
        Capture { head, procs, rules }
    }

    pub fn set_instance(&mut self, instance: &str) {
        self.head.instance.clear();
        self.head.instance.push_str(instance);
    }

    /// The snapshot, processes sorted by identity.
    pub fn into_state(self) -> State {
        let Capture {
            mut head,
            procs,
            rules,
        } = self;
        let name = |id: RuleId| {
            rules
                .iter()
                .find(|(r, _)| *r == id)
                .map_or(String::new(), |(_, n)| n.clone())
        };
        let mut processes: Vec<ProcState> = procs
            .into_iter()
            .map(|p| ProcState {
                pid: p.key.pid,
                start_ticks: p.key.start_ticks,
                rule: name(p.rule),
                comm: p.comm.to_string_lossy().into_owned(),
                ppid: p.ppid,
                uid: p.uid,
                discovered_ms: p.discovered_ms,
                exited_ms: p.exited_ms,
                last_seen_ms: p.last_seen_ms,
                governed: p.governed,
            })
            .collect();
        processes.sort_by_key(|p| (p.pid, p.start_ticks));
        head.processes = processes;
        head
    }
}

/// A timestamp from elsewhere, in milliseconds: a value that can only be
/// seconds (before the year 2001 in ms, after it in s) is scaled.
pub fn normalise_ms(t: u64) -> u64 {
    const MS_2001: u64 = 978_307_200_000;
    // Seconds from 2001 on (and below what ten times that is in ms); a
    // smaller value is neither plausible seconds nor ms and stays as it is,
    // so normalising twice changes nothing.
    if (MS_2001 / 1000..MS_2001 / 1000 * 10).contains(&t) {
        t.saturating_mul(1000)
    } else {
        t
    }
}

impl State {
    /// Makes every time field milliseconds.
    pub fn normalise(&mut self) {
        self.saved_at_ms = normalise_ms(self.saved_at_ms);
        self.started_ms = normalise_ms(self.started_ms);
        for p in &mut self.processes {
            p.discovered_ms = normalise_ms(p.discovered_ms);
            p.exited_ms = normalise_ms(p.exited_ms);
            p.last_seen_ms = normalise_ms(p.last_seen_ms);
            if let Some(g) = &mut p.governed {
                g.attached_ms = normalise_ms(g.attached_ms);
            }
        }
    }

    pub fn save(&self, dir: &StateDir) -> Result<(), String> {
        let bytes = serde_json::to_vec(self).map_err(|e| e.to_string())?;
        store::write_atomic(dir, STATE_FILE, &bytes).map_err(|e| e.to_string())
    }

    pub fn load(dir: &StateDir, now_ms: u64) -> Loaded<State> {
        match store::load_versioned::<State>(dir, STATE_FILE, STATE_VERSION, now_ms) {
            Loaded::Ok(mut s) => {
                s.normalise();
                Loaded::Ok(s)
            }
            other => other,
        }
    }
}

/// Counters worth keeping across restarts, from discovery's own.
pub fn add_counters(base: &Counters, since_start: &DiscoveryStats) -> Counters {
    Counters {
        discovered: base.discovered.saturating_add(since_start.discovered),
        exited: base.exited.saturating_add(since_start.exited),
        refused: base.refused.saturating_add(since_start.refused),
        restarts: base.restarts,
        seen_overflow: base.seen_overflow.saturating_add(since_start.seen_overflow),
    }
}

/// The exclusive lock of one daemon on its state directory. The holder's
/// pid is written into the lock file so a second daemon can name it.
pub struct DaemonLock {
    _file: File,
}

fn lock_path(dir: &Path) -> PathBuf {
    dir.join(LOCK_FILE)
}

/// Opens (creating) the daemon lock file. One that is untrusted (another
/// user's, linked in, writable by others) is refused rather than set
/// aside: renaming a lock file another daemon holds would let two daemons
/// run on one directory.
fn open_lock(dir: &Path) -> Result<File, String> {
    let path = lock_path(dir);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(&path)
        .map_err(|e| format!("{}: {e}", store::Shown(&path)))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("{}: {e}", store::Shown(&path)))?;
    if !meta.is_file() {
        return Err(format!(
            "{}: not a regular file; remove it once no reeve watch runs",
            store::Shown(&path)
        ));
    }
    if let Some(why) = store::untrusted(&meta) {
        return Err(format!(
            "{}: {why}; reeve does not use it: check who made it, then remove it once no reeve watch runs",
            store::Shown(&path)
        ));
    }
    Ok(file)
}

fn read_holder(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

impl DaemonLock {
    /// Takes the lock or says who holds it. A reader such as `reeve status`
    /// holds a shared lock for an instant, so a refusal is retried for
    /// [`LOCK_WAIT_MS`] before it is believed.
    pub fn acquire(dir: &Path, pid: u32) -> Result<DaemonLock, String> {
        let mut file = open_lock(dir)?;
        let mut waited = 0;
        while FileExt::try_lock_exclusive(&file).is_err() && waited < LOCK_WAIT_MS {
            std::thread::sleep(std::time::Duration::from_millis(10));
            waited += 10;
        }
        if waited >= LOCK_WAIT_MS && FileExt::try_lock_exclusive(&file).is_err() {
            let holder = read_holder(&mut file)
                .map_or_else(|| "another process".to_string(), |p| format!("pid {p}"));
            return Err(format!(
                "another reeve watch ({holder}) already runs with state directory {}; stop it first or give this one another state_dir",
                store::Shown(dir)
            ));
        }
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(format!("{pid}\n").as_bytes()))
            .and_then(|()| file.sync_data())
            .map_err(|e| format!("{}: {e}", store::Shown(&lock_path(dir))))?;
        Ok(DaemonLock { _file: file })
    }
}

/// The pid of the daemon running on `dir`, if one does.
pub fn running_daemon(dir: &Path) -> Option<u32> {
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(lock_path(dir))
        .ok()?;
    if FileExt::try_lock_shared(&file).is_ok() {
        let _ = FileExt::unlock(&file);
        return None;
    }
    read_holder(&mut file).or(Some(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_normalised_to_ms() {
        assert_eq!(normalise_ms(0), 0);
        assert_eq!(normalise_ms(1_763_779_581), 1_763_779_581_000);
        assert_eq!(normalise_ms(1_763_779_581_123), 1_763_779_581_123);
        // Found by the state fuzz target: a tiny value scaled on every load.
        assert_eq!(normalise_ms(1000), 1000);
        for t in [1000, 1_763_779_581, 9_783_071_999, 9_783_072_000] {
            assert_eq!(normalise_ms(normalise_ms(t)), normalise_ms(t), "{t}");
        }
    }

    #[test]
    fn second_lock_names_the_holder() {
        let dir = std::env::temp_dir().join(format!(
            "reeve-lock-test-{}-{}",
            std::process::id(),
            crate::sys::monotonic_ns()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(running_daemon(&dir), None);
        let held = DaemonLock::acquire(&dir, 4242).unwrap();
        let err = DaemonLock::acquire(&dir, 1).err().unwrap();
        assert!(err.contains("pid 4242"), "{err}");
        assert_eq!(running_daemon(&dir), Some(4242));
        drop(held);
        assert_eq!(running_daemon(&dir), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
