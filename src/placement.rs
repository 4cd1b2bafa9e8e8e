//! Placement policy: putting a process and its family into a job or pool
//! group under limits, and taking it out again, keeping the job records
//! (`store::records`) that make that reversible.
//!
//! Invariants: every move is bracketed by a pidfd (`Group::move_pid`:
//! opened before the identity check, proved alive after the write, a
//! stranger that took the pid moved back out); every move is written ahead
//! in the job record (identity, original cgroup, group), or for the
//! daemon's joins of a prepared pool ([`join`]) in the pool's journal, and
//! confirmed after (an intent stays until the kernel shows where its
//! process is), so a group holds its recorded members and intents (journal
//! folded in) and the descendants they fork inside it after being recorded,
//! nothing else; `detach` moves the recorded ones to their origins and
//! those descendants to the fallback origin, and nothing else; a group's limits are
//! either verified in force or reported as not, with the reason; a record
//! is written atomically under a lock shared by the daemon and the CLI
//! commands. pid 1, reeve and reeve's ancestors are never moved.

use std::path::PathBuf;

use crate::cgroup::{self, CgroupError, Group, Hierarchy, Limits, MoveOutcome};
use crate::procfs::{ProcKey, ProcReader, ReadError};
pub use crate::store::records::{JobRecord, Member, Pending, RecordError, Records, RecordsLock};
use crate::sys;

#[cfg(test)]
mod attach_tests;
mod detach;
mod error;
mod family;
mod join;

pub use detach::{detach, DetachReport};
pub use error::{Leftover, PlaceError, SetupError};
pub use family::family;
pub use join::{join, Protected, Ready};

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
pub fn ensure_root(h: &Hierarchy) -> Result<(), CgroupError> {
    std::fs::create_dir_all(&h.root).map_err(|e| {
        CgroupError::os(
            cgroup::CgroupErrorKind::Io,
            &h.root,
            "creating reeve's cgroup root",
            &e,
            "it must be writable by reeve: run as root or delegate the subtree",
        )
    })?;
    h.enter_supervisor_leaf()
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
pub fn prepare(h: &Hierarchy, place: &Placement, limits: &Limits) -> Result<Prepared, CgroupError> {
    ensure_root(h)?;
    let path = place.path(h)?;
    let existed = path.is_dir();
    let mut problems = Vec::new();
    if let Err(e) = h.enable_controllers(&path, &limits.controllers()) {
        problems.push(e.to_string());
    }
    Group::new(&path).create()?;
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
    /// The limits now recorded for the group (the group's own when the
    /// attach gave none).
    pub limits: Limits,
    pub in_force: bool,
    pub problems: Vec<String>,
    /// Limit files put back to the kernel's default because the limit set
    /// no longer names them (from [`Prepared::reset`]).
    pub reset: Vec<String>,
    /// The moves happened but the record confirming them was not written:
    /// the record lists them as intents, settled on its next write.
    pub unconfirmed: Option<RecordError>,
}

/// Reads a process's identity; `Err` when it is gone.
pub fn identify(reader: &mut ProcReader, pid: u32) -> Result<ProcKey, PlaceError> {
    match reader.stat(pid) {
        Ok(s) if !s.is_dead() => Ok(s.key()),
        Ok(_) | Err(ReadError::Gone) => Err(PlaceError::ProcessGone {
            pid,
            detail: "no such process".into(),
            stranger: None,
        }),
        Err(e) => Err(PlaceError::Proc {
            pid,
            detail: e.to_string(),
        }),
    }
}

/// Refuses processes that reeve must never move: pid 1, reeve itself and
/// every ancestor of reeve (moving one would move the supervisor of the
/// system, or of reeve, under a job's limits). The ancestors are read from
/// reeve's own ppid chain, which cannot change under a living reeve except
/// by reparenting to a subreaper or init, both still ancestors.
pub fn refuse_protected(reader: &mut ProcReader, key: ProcKey) -> Result<(), PlaceError> {
    let refused = |why| Err(PlaceError::Refused { pid: key.pid, why });
    if key.pid == 1 {
        return refused("it is pid 1, the init process");
    }
    let me = sys::getpid();
    if key.pid == me {
        return refused("it is reeve itself");
    }
    let mut pid = me;
    // A ppid chain is at most as long as the nesting of pid namespaces
    // allows; the bound only guards against a corrupt read.
    for _ in 0..4096 {
        let ppid = match reader.stat(pid) {
            Ok(s) => s.ppid,
            Err(e) => {
                return Err(PlaceError::Proc {
                    pid,
                    detail: format!("reading reeve's ancestors: {e}"),
                })
            }
        };
        if ppid == key.pid {
            return refused("it is an ancestor of reeve (its parent, or above)");
        }
        if ppid == 0 || ppid == 1 {
            break;
        }
        pid = ppid;
    }
    Ok(())
}

/// Resolves intents a crash left in `record` from what the kernel shows:
/// a process found where its intent was going has arrived (a member is
/// added, or removed for a detach); anything else did not move, or ended.
///
/// An intent whose process or cgroup cannot be read (an error other than
/// "gone") stays pending: dropping it could leave a process in the group
/// that the record does not name.
///
/// A `reeve run` written ahead names only itself: whoever holds the
/// records lock now, the run either started its command or never will
/// (it holds the lock from its intent to its record). Every living
/// process in the group that no member or intent names and that started
/// no earlier than the run becomes a member from the run's origin; a
/// group that cannot be listed keeps the intent.
pub(crate) fn settle(h: &Hierarchy, reader: &mut ProcReader, record: &mut JobRecord) {
    for run in std::mem::take(&mut record.pending_runs) {
        let Ok(pids) = Group::new(&run.to).procs() else {
            record.pending_runs.push(run);
            continue;
        };
        for pid in pids {
            let named = |k: &ProcKey| {
                record.members.iter().any(|m| m.key() == *k)
                    || record.pending.iter().any(|p| p.key() == *k)
            };
            match reader.stat(pid) {
                Ok(s) if !s.is_dead() && s.start_ticks >= run.start_ticks && !named(&s.key()) => {
                    record.members.push(Member {
                        pid,
                        start_ticks: s.start_ticks,
                        original_cgroup: run.from.clone(),
                    });
                }
                Ok(_) | Err(ReadError::Gone) => {}
                // Unreadable: keep the intent, settled on a later write.
                Err(_) => {
                    if !record.pending_runs.contains(&run) {
                        record.pending_runs.push(run.clone());
                    }
                }
            }
        }
    }
    for p in std::mem::take(&mut record.pending) {
        match reader.stat(p.pid) {
            Ok(s) if s.start_ticks == p.start_ticks && !s.is_dead() => {}
            Ok(_) | Err(ReadError::Gone) => continue,
            Err(_) => {
                record.pending.push(p);
                continue;
            }
        }
        match h.process_cgroup(p.pid) {
            Ok(cg) if cg == p.to => {}
            Ok(_) => continue,
            Err(e) if e.kind == cgroup::CgroupErrorKind::ProcessGone => continue,
            Err(_) => {
                record.pending.push(p);
                continue;
            }
        }
        record.members.retain(|m| m.key() != p.key());
        if p.to == record.cgroup {
            record.members.push(Member {
                pid: p.pid,
                start_ticks: p.start_ticks,
                original_cgroup: p.from,
            });
        }
    }
}

/// Folds `group`'s journal into its record and writes it: intents a
/// crash left are settled from what the kernel shows, members that ended
/// are dropped, and the journal is emptied. `Ok(false)` when the group has
/// no record.
pub fn compact(
    h: &Hierarchy,
    held: &RecordsLock<'_>,
    reader: &mut ProcReader,
    group: &str,
) -> Result<bool, RecordError> {
    let records = held.records();
    let Some(mut record) = records.load(group)? else {
        return Ok(false);
    };
    settle(h, reader, &mut record);
    records.save(&record)?;
    Ok(true)
}

/// Removes a group this attach created when nothing was moved into it.
fn abandon(created: bool, group: &Group, records: &Records, name: &str) -> Option<Leftover> {
    if !created {
        return None;
    }
    // A group that cannot be removed may hold a process: its record stays.
    if let Err(e) = group.remove() {
        return Some(Leftover::GroupKept(e));
    }
    records.remove(name).err().map(Leftover::RecordKept)
}

/// Moves `key` and its descendants into `place`, each move written ahead
/// in the job record: the intents (identity, original cgroup, group) are
/// saved before the first write to cgroup.procs and confirmed after the
/// last. Fails when `key` itself cannot be moved (the family root goes
/// first, so nothing else was moved then), when the intents cannot be
/// written (nothing is moved), or when `key` is refused. `limits` empty
/// keeps an existing group's recorded limits. The caller holds the
/// records lock (`held`) for the whole read-modify-write.
pub fn attach(
    h: &Hierarchy,
    held: &RecordsLock<'_>,
    reader: &mut ProcReader,
    key: ProcKey,
    place: &Placement,
    limits: &Limits,
    now_ms: u64,
) -> Result<AttachReport, PlaceError> {
    refuse_protected(reader, key)?;
    let group_name = place.group_name();
    let records = held.records();
    let existing = if place.path(h)?.is_dir() {
        records.load(&group_name)?
    } else {
        None
    };
    let limits = match &existing {
        Some(r) if limits.is_empty() => r.limits.clone(),
        _ => limits.clone(),
    };
    let prepared = prepare(h, place, &limits).map_err(PlaceError::Prepare)?;
    let group = Group::new(&prepared.path);
    let mut record = match existing {
        Some(mut r) if prepared.existed => {
            r.limits = prepared.limits.clone();
            r.in_force = prepared.in_force;
            r.problems = prepared.problems.clone();
            r
        }
        _ => new_record(place, &prepared, now_ms),
    };
    settle(h, reader, &mut record);
    // Intents left by earlier moves that settling could not decide (a
    // process or cgroup it could not read): they stay, whatever this
    // attach does.
    let earlier = record.pending.clone();
    let created = !prepared.existed;
    let mut failed = Vec::new();
    let mut intents = Vec::new();
    for k in family(reader, key, &mut failed) {
        match h.process_cgroup(k.pid) {
            Ok(from) if from == prepared.path => {}
            Ok(from) => intents.push(Pending {
                pid: k.pid,
                start_ticks: k.start_ticks,
                from,
                to: prepared.path.clone(),
            }),
            Err(e) if k == key => {
                let why = match e.kind {
                    cgroup::CgroupErrorKind::ProcessGone => PlaceError::ProcessGone {
                        pid: key.pid,
                        detail: "ended before it was moved".into(),
                        stranger: None,
                    },
                    _ => PlaceError::Cgroup(e),
                };
                return Err(why.leaving(abandon(created, &group, records, &group_name)));
            }
            Err(e) => failed.push((k, e.to_string())),
        }
    }
    record.pending.extend(intents.iter().cloned());
    if let Err(e) = records.save(&record) {
        let why = PlaceError::IntentNotWritten(e);
        return Err(why.leaving(abandon(created, &group, records, &group_name)));
    }
    let mut members = Vec::new();
    let mut root_failed = None;
    // Moves whose write may have reached the kernel without the move being
    // proved: their intents stay, settled below from what the kernel shows.
    let mut unsure = Vec::new();
    for p in &intents {
        let k = p.key();
        let outcome = group.move_pid(k, Some(&p.from), reader);
        if !matches!(
            outcome,
            Ok(MoveOutcome::Moved | MoveOutcome::GoneBeforeWrite)
        ) {
            unsure.push(p.clone());
        }
        let why = match outcome {
            Ok(MoveOutcome::Moved) => {
                members.push(Member {
                    pid: k.pid,
                    start_ticks: k.start_ticks,
                    original_cgroup: p.from.clone(),
                });
                continue;
            }
            other => PlaceError::from_move(k, other),
        };
        if k == key {
            root_failed = Some(why);
            break;
        }
        failed.push((k, why.to_string()));
    }
    for m in &members {
        record.members.retain(|old| old.key() != m.key());
        record.members.push(m.clone());
    }
    record.pending = earlier;
    record.pending.extend(unsure);
    settle(h, reader, &mut record);
    if let Some(why) = root_failed {
        // The root goes first: nothing of this attach is in the group,
        // unless a move whose outcome was not proved is still an intent.
        let cleanup = if record.members.is_empty() && record.pending.is_empty() && created {
            abandon(created, &group, records, &group_name)
        } else {
            records.save(&record).err().map(Leftover::IntentInRecord)
        };
        return Err(match (why, cleanup) {
            (
                PlaceError::ProcessGone {
                    pid,
                    detail,
                    stranger,
                },
                Some(c),
            ) => PlaceError::ProcessGone {
                pid,
                detail: format!("{detail}; {c}"),
                stranger,
            },
            (why, c) => why.leaving(c),
        });
    }
    let unconfirmed = records.save(&record).err();
    Ok(AttachReport {
        group: group_name,
        cgroup: prepared.path,
        moved: members.iter().map(Member::key).collect(),
        members,
        failed,
        limits,
        in_force: prepared.in_force,
        problems: prepared.problems,
        reset: prepared.reset,
        unconfirmed,
    })
}

/// The managed group a process is in, if it is one of reeve's
/// (`job.*` or `pool.*` directly under the root).
pub fn managed_group(h: &Hierarchy, pid: u32) -> Option<String> {
    managed_group_at(h, &h.process_cgroup(pid).ok()?)
}

/// The managed group `cg` is, if it is one of reeve's.
pub fn managed_group_at(h: &Hierarchy, cg: &std::path::Path) -> Option<String> {
    if cg.parent()? != h.root {
        return None;
    }
    let name = cg.file_name()?.to_str()?;
    (name.starts_with("job.") || name.starts_with("pool.")).then(|| name.to_string())
}
