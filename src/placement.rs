//! Placement policy: putting a process and its family into a job or pool
//! group under limits, and taking it out again, keeping the job records
//! (`store::records`) that make that reversible.
//!
//! Invariants: every move is preceded by an identity check of the process
//! (`Group::move_pid`); a group's limits are either verified in force or
//! reported as not, with the reason (never silently dropped); the original
//! cgroup of every process is recorded before it is moved, so `detach`
//! can put it back; a record is written atomically under a lock shared by
//! the daemon and the CLI commands.

use std::path::{Path, PathBuf};

use crate::cgroup::{self, CgroupError, Group, Hierarchy, Limits};
use crate::procfs::{ProcKey, ProcReader, ReadError};
pub use crate::store::records::{JobRecord, Member, Records, RecordsLock};

/// The group a process is governed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// A job: one workload in its own group.
    Job(String),
    /// A pool: every member shares one group and one budget.
    Pool(String),
}

impl Placement {
    /// The group's directory name under reeve's root (`job.x`, `pool.y`).
    pub fn group_name(&self) -> String {
        match self {
            Placement::Job(n) => format!("job.{n}"),
            Placement::Pool(n) => format!("pool.{n}"),
        }
    }

    pub fn path(&self, h: &Hierarchy) -> Result<PathBuf, CgroupError> {
        match self {
            Placement::Job(n) => h.job_path(n),
            Placement::Pool(n) => h.pool_path(n),
        }
    }
}

/// A group made ready for members: created, controllers enabled, limits
/// written, and what the kernel then holds read back.
#[derive(Debug)]
pub struct Prepared {
    pub path: PathBuf,
    pub in_force: bool,
    pub problems: Vec<String>,
    /// The group existed before (a pool, or a job being re-used).
    pub existed: bool,
    /// The limits the kernel enforces on the group now, read back from its
    /// files after the writes (memory in whole pages, CPU lists canonical,
    /// io.max per device and key). This, not the request, goes into the
    /// job record.
    pub limits: Limits,
    /// Limit files put back to the kernel's default because the limit set
    /// no longer names them (e.g. "memory.max").
    pub reset: Vec<String>,
}

/// A record for a group just prepared, with no members yet, holding the
/// limits the kernel enforces.
pub fn new_record(place: &Placement, prepared: &Prepared, now_ms: u64) -> JobRecord {
    let mut r = JobRecord::new(
        place.group_name(),
        matches!(place, Placement::Pool(_)),
        &prepared.path,
        &prepared.limits,
        now_ms,
    );
    r.in_force = prepared.in_force;
    r.problems = prepared.problems.clone();
    r
}

/// Creates reeve's root when missing and, when it is delegated, moves reeve
/// out of it into its supervisor leaf.
pub fn ensure_root(h: &Hierarchy) -> Result<(), String> {
    std::fs::create_dir_all(&h.root).map_err(|e| {
        format!(
            "cannot create reeve's cgroup root {}: {e} (it must be writable by reeve)",
            h.root.display()
        )
    })?;
    h.enter_supervisor_leaf().map_err(|e| e.to_string())
}

/// Creates the group for `place` and makes `limits` its complete limit
/// set: a limit file `limits` does not name is put back to the kernel's
/// default, so a limit dropped from the config or the command line stops
/// being enforced. A pool joined without limits keeps the budget it has
/// (joining is not a change of budget). What the kernel holds afterwards
/// is read back into [`Prepared::limits`].
///
/// A limit that cannot be put in force is a problem in the result, never
/// an error: the caller decides whether that is fatal (`reeve run`) or
/// reported (`attach`, the daemon).
pub fn prepare(h: &Hierarchy, place: &Placement, limits: &Limits) -> Result<Prepared, String> {
    ensure_root(h)?;
    let path = place.path(h).map_err(|e| e.to_string())?;
    let existed = path.is_dir();
    let mut problems = Vec::new();
    if let Err(e) = h.enable_controllers(&path, &limits.controllers()) {
        problems.push(e.to_string());
    }
    Group::new(&path).create().map_err(|e| e.to_string())?;
    let keep = existed && limits.is_empty() && matches!(place, Placement::Pool(_));
    let mut reset = Vec::new();
    if problems.is_empty() && !keep {
        for a in cgroup::apply_exactly(&path, limits) {
            match a.result {
                Err(e) => problems.push(e.to_string()),
                Ok(()) if a.reset => reset.push(a.file),
                Ok(()) => {}
            }
        }
    }
    let (held, unreadable) = cgroup::held(&path);
    problems.extend(
        unreadable
            .iter()
            .map(|e| format!("{e}; the job record cannot say what the kernel holds for this file")),
    );
    Ok(Prepared {
        in_force: problems.is_empty(),
        path,
        problems,
        existed,
        limits: held,
        reset,
    })
}

/// `root` and its living descendants, parents before children. The
/// children files of /proc name them directly; a kernel without those
/// costs one pass over every process instead.
pub fn family(reader: &mut ProcReader, root: ProcKey) -> Vec<ProcKey> {
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        let children = match reader.children(parent.pid) {
            Ok(Some(c)) => c,
            Ok(None) => return family_by_scan(reader, root),
            Err(_) => Vec::new(), // the parent ended meanwhile
        };
        for pid in children {
            if let Ok(s) = reader.stat(pid) {
                if is_child(&s, parent) && !out.contains(&s.key()) {
                    out.push(s.key());
                }
            }
        }
        i += 1;
    }
    out
}

/// A living child of `parent`. A child cannot have started before its
/// parent, which also rejects a stale ppid that names a reused pid.
fn is_child(s: &crate::procfs::Stat, parent: ProcKey) -> bool {
    !s.is_dead()
        && s.ppid == parent.pid
        && s.pid != parent.pid
        && s.start_ticks >= parent.start_ticks
}

fn family_by_scan(reader: &mut ProcReader, root: ProcKey) -> Vec<ProcKey> {
    let mut all = Vec::new();
    let mut batch = vec![(0u32, 0u64); crate::procfs::PID_BATCH];
    if reader.rewind_pids().is_ok() {
        while let Ok(n) = reader.next_pid_batch(&mut batch) {
            if n == 0 {
                break;
            }
            all.extend(
                batch[..n]
                    .iter()
                    .filter_map(|&(pid, _)| reader.stat(pid).ok()),
            );
        }
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        for s in &all {
            if is_child(s, parent) && !out.contains(&s.key()) {
                out.push(s.key());
            }
        }
        i += 1;
    }
    out
}

/// What an attach did.
#[derive(Debug)]
pub struct AttachReport {
    pub group: String,
    pub cgroup: PathBuf,
    pub moved: Vec<ProcKey>,
    /// The moved processes with the cgroups they came from.
    pub members: Vec<Member>,
    /// Family members that could not be moved, and why.
    pub failed: Vec<(ProcKey, String)>,
    pub in_force: bool,
    pub problems: Vec<String>,
}

/// Reads a process's identity; `Err` when it is gone.
pub fn identify(reader: &mut ProcReader, pid: u32) -> Result<ProcKey, String> {
    match reader.stat(pid) {
        Ok(s) if !s.is_dead() => Ok(s.key()),
        Ok(_) | Err(ReadError::Gone) => Err(format!("process {pid} does not exist")),
        Err(e) => Err(format!("cannot read process {pid}: {e}")),
    }
}

/// Moves `key` and its descendants into `place` with `limits`, recording
/// where each came from. Fails only when `key` itself could not be moved.
/// The caller holds the records lock (`held`) for the whole read-modify-write.
pub fn attach(
    h: &Hierarchy,
    held: &RecordsLock<'_>,
    reader: &mut ProcReader,
    key: ProcKey,
    place: &Placement,
    limits: &Limits,
    now_ms: u64,
) -> Result<AttachReport, String> {
    let group_name = place.group_name();
    let records = held.records();
    let prepared = prepare(h, place, limits)?;
    let group = Group::new(&prepared.path);
    let mut record = match records.load(&group_name)? {
        Some(mut r) if prepared.existed => {
            r.limits = prepared.limits.clone();
            r.in_force = prepared.in_force;
            r.problems = prepared.problems.clone();
            r
        }
        _ => new_record(place, &prepared, now_ms),
    };
    let mut moved = Vec::new();
    let mut members = Vec::new();
    let mut failed = Vec::new();
    for k in family(reader, key) {
        let original = match h.process_cgroup(k.pid) {
            Ok(p) => p,
            Err(e) => {
                failed.push((k, e.to_string()));
                continue;
            }
        };
        if original == prepared.path {
            continue;
        }
        match group.move_pid(k, reader) {
            Ok(()) => {
                let m = Member {
                    pid: k.pid,
                    start_ticks: k.start_ticks,
                    original_cgroup: original,
                };
                record.members.retain(|old| old.key() != k);
                record.members.push(m.clone());
                members.push(m);
                moved.push(k);
            }
            Err(e) => failed.push((k, e.to_string())),
        }
    }
    if let Some((_, why)) = failed.iter().find(|(k, _)| *k == key) {
        if !prepared.existed && moved.is_empty() {
            let _ = group.remove();
        }
        return Err(format!("cannot move process {}: {why}", key.pid));
    }
    records.save(&record)?;
    Ok(AttachReport {
        group: group_name,
        cgroup: prepared.path,
        moved,
        members,
        failed,
        in_force: prepared.in_force,
        problems: prepared.problems,
    })
}

/// The managed group a process is in, if it is one of reeve's
/// (`job.*` or `pool.*` directly under the root).
pub fn managed_group(h: &Hierarchy, pid: u32) -> Option<String> {
    let cg = h.process_cgroup(pid).ok()?;
    if cg.parent()? != h.root {
        return None;
    }
    let name = cg.file_name()?.to_str()?;
    (name.starts_with("job.") || name.starts_with("pool.")).then(|| name.to_string())
}

/// What a detach did.
#[derive(Debug)]
pub struct DetachReport {
    pub group: String,
    pub moved: Vec<(ProcKey, PathBuf)>,
    pub failed: Vec<(u32, String)>,
    pub removed: bool,
}

/// The nearest existing group at or above `want` inside the mount.
fn nearest_existing(h: &Hierarchy, want: &Path) -> PathBuf {
    let mut p = want.to_path_buf();
    while !(p.join("cgroup.procs").is_file()) && p.starts_with(&h.mount) && p != h.mount {
        if !p.pop() {
            break;
        }
    }
    p
}

/// Moves the processes of `group` (all of them, or only `only` and its
/// descendants) back to where they came from, and removes the group when
/// it is empty.
pub fn detach(
    h: &Hierarchy,
    held: &RecordsLock<'_>,
    reader: &mut ProcReader,
    group_name: &str,
    only: Option<ProcKey>,
) -> Result<DetachReport, String> {
    let records = held.records();
    let path = h.root.join(group_name);
    let group = Group::new(&path);
    if !path.is_dir() {
        records.remove(group_name)?;
        return Err(format!("no such job: {} does not exist", path.display()));
    }
    let record = records.load(group_name)?;
    let members = record.as_ref().map_or(&[][..], |r| &r.members[..]);
    // A process born in the group after attach goes where its first member
    // came from; without any record, to the parent of reeve's root.
    let fallback = members
        .first()
        .map(|m| m.original_cgroup.clone())
        .or_else(|| h.root.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| h.mount.clone());
    let wanted: Option<Vec<ProcKey>> = only.map(|k| family(reader, k));
    let mut moved = Vec::new();
    let mut failed = Vec::new();
    for pid in group.procs().map_err(|e| e.to_string())? {
        let Ok(key) = identify(reader, pid) else {
            continue;
        };
        if let Some(w) = &wanted {
            if !w.contains(&key) {
                continue;
            }
        }
        let origin = members
            .iter()
            .find(|m| m.key() == key)
            .map_or(fallback.clone(), |m| m.original_cgroup.clone());
        let dest = nearest_existing(h, &origin);
        match Group::new(&dest).move_pid(key, reader) {
            Ok(()) => moved.push((key, dest)),
            Err(e) => failed.push((pid, e.to_string())),
        }
    }
    let released: Vec<ProcKey> = moved.iter().map(|(k, _)| *k).collect();
    records.release(&released, reader)?;
    let empty = group.procs().map(|p| p.is_empty()).unwrap_or(false);
    let removed = empty && group.remove().is_ok();
    if removed {
        records.remove(group_name)?;
    } else if let Some(mut r) = record {
        r.members
            .retain(|m| !moved.iter().any(|(k, _)| *k == m.key()));
        records.save(&r)?;
    }
    Ok(DetachReport {
        group: group_name.to_string(),
        moved,
        failed,
        removed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    #[test]
    fn family_from_children_files_matches_a_full_scan() {
        // A shell with two children of its own, killed by pid at the end.
        let mut sh = Command::new("/bin/sh")
            .args(["-c", "sleep 30 & sleep 30 & wait"])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let mut reader = ProcReader::open().unwrap();
        let root = identify(&mut reader, sh.id()).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let fam = loop {
            let f = family(&mut reader, root);
            if f.len() == 3 || std::time::Instant::now() > deadline {
                break f;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let mut scanned = family_by_scan(&mut reader, root);
        let mut got = fam.clone();
        got.sort();
        scanned.sort();
        for k in &fam[1..] {
            // The test's own grandchildren, listed as the shell's children
            // just now (the shell is not reaped yet), signalled via pidfd.
            if let Ok(fd) = crate::sys::pidfd_open(k.pid) {
                let _ = crate::sys::pidfd_send_signal(&fd, libc::SIGKILL);
            }
        }
        let _ = sh.kill();
        let _ = sh.wait();
        assert_eq!(fam.len(), 3, "{fam:?}");
        assert_eq!(fam[0], root);
        assert_eq!(got, scanned);
    }
}
