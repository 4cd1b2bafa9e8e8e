//! `detach`: moving a group's processes back to the cgroups its job record
//! says they came from, written ahead like an attach.

use std::path::{Path, PathBuf};

use super::{family, identify, settle, PlaceError};
use crate::cgroup::{Group, Hierarchy, Limits, MoveOutcome};
use crate::procfs::{ProcKey, ProcReader};
use crate::store::records::{JobRecord, Pending, RecordError, RecordsLock};
use crate::sys;

/// What a detach did.
#[derive(Debug)]
pub struct DetachReport {
    pub group: String,
    pub moved: Vec<(ProcKey, PathBuf)>,
    pub failed: Vec<(u32, String)>,
    pub removed: bool,
    /// Why the group was not removed when it could not be listed, or was
    /// empty and could not be removed.
    pub kept: Option<String>,
    /// The moves happened but the record confirming them was not written.
    pub unconfirmed: Option<RecordError>,
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
/// it is empty. Written ahead like [`attach`]: the released identities and
/// every move back (with its destination) are durable before the first
/// move; a process born in the group is listed with the fallback origin
/// first. Nothing is moved when they cannot be written.
pub fn detach(
    h: &Hierarchy,
    held: &RecordsLock<'_>,
    reader: &mut ProcReader,
    group_name: &str,
    only: Option<ProcKey>,
) -> Result<DetachReport, PlaceError> {
    let records = held.records();
    let path = h.root.join(group_name);
    let group = Group::new(&path);
    if !path.is_dir() {
        records.remove(group_name)?;
        return Err(PlaceError::NoSuchGroup(path));
    }
    let mut record = records.load(group_name)?.unwrap_or_else(|| {
        let mut r = JobRecord::new(
            group_name.to_string(),
            group_name.starts_with("pool."),
            &path,
            &Limits::default(),
            sys::realtime_ms(),
        );
        r.problems = vec!["reeve had no record of this group; its limits are unknown".into()];
        r
    });
    settle(h, reader, &mut record);
    // Intents settling could not decide stay, whatever this detach does.
    let earlier = record.pending.clone();
    // A process born in the group after attach goes where its first member
    // came from; without any record, to the parent of reeve's root.
    let fallback = record
        .members
        .first()
        .map(|m| m.original_cgroup.clone())
        .or_else(|| h.root.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| h.mount.clone());
    let mut gaps = Vec::new();
    let wanted: Option<Vec<ProcKey>> = only.map(|k| family(reader, k, &mut gaps));
    let mut failed: Vec<(u32, String)> = gaps.into_iter().map(|(k, why)| (k.pid, why)).collect();
    let mut intents = Vec::new();
    for pid in group.procs()? {
        let key = match identify(reader, pid) {
            Ok(key) => key,
            Err(PlaceError::ProcessGone { .. }) => continue, // ended: nothing to move back
            Err(e) => {
                failed.push((pid, format!("{e}; it stays in the group")));
                continue;
            }
        };
        if wanted.as_ref().is_some_and(|w| !w.contains(&key)) {
            continue;
        }
        let origin = record
            .members
            .iter()
            .find(|m| m.key() == key)
            .map_or(fallback.clone(), |m| m.original_cgroup.clone());
        intents.push(Pending {
            pid,
            start_ticks: key.start_ticks,
            from: path.clone(),
            to: nearest_existing(h, &origin),
        });
    }
    // Released before moved: a detach whose release is not durable would
    // let the daemon take the processes straight back.
    let keys: Vec<ProcKey> = intents.iter().map(Pending::key).collect();
    records
        .release(&keys, reader)
        .map_err(PlaceError::IntentNotWritten)?;
    record.pending.extend(intents.iter().cloned());
    records
        .save(&record)
        .map_err(PlaceError::IntentNotWritten)?;
    let mut moved = Vec::new();
    // Moves whose write may have reached the kernel without the move being
    // proved: their intents stay, settled below from what the kernel shows.
    let mut unsure = Vec::new();
    for p in &intents {
        let k = p.key();
        // A stranger that takes the pid inside the bracket is moved to the
        // destination outside reeve's groups, under no limits of reeve's;
        // moving it into a governed group instead would be worse.
        match Group::new(&p.to).move_pid(k, None, reader) {
            Ok(MoveOutcome::Moved) => moved.push((k, p.to.clone())),
            Ok(o @ MoveOutcome::GoneBeforeWrite) => failed.push((k.pid, o.describe(k))),
            Ok(o) => {
                unsure.push(p.clone());
                failed.push((k.pid, o.describe(k)));
            }
            Err(e) => {
                unsure.push(p.clone());
                failed.push((k.pid, e.to_string()));
            }
        }
    }
    record.pending = earlier;
    record.pending.extend(unsure);
    record
        .members
        .retain(|m| !moved.iter().any(|(k, _)| *k == m.key()));
    settle(h, reader, &mut record);
    // A group that cannot be listed or removed stays, with its record; the
    // report says why. Network limits go before the group: sockets opened
    // in it would keep its programs after the rmdir, so a group whose
    // programs stay is kept, with the reason in its record.
    let (removed, kept) = match group.procs() {
        Ok(p) if p.is_empty() => match crate::cgroup::net::remove(&path) {
            Err(e) => {
                record.problems.push(e.to_string());
                (false, Some(e.to_string()))
            }
            Ok(()) => match group.remove() {
                Ok(()) => (true, None),
                Err(e) => (false, Some(e.to_string())),
            },
        },
        Ok(_) => (false, None),
        Err(e) => (false, Some(e.to_string())),
    };
    let unconfirmed = if removed {
        records.remove(group_name).err()
    } else {
        records.save(&record).err()
    };
    Ok(DetachReport {
        group: group_name.to_string(),
        moved,
        failed,
        removed,
        kept,
        unconfirmed,
    })
}
