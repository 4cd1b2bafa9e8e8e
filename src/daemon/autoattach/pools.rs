//! The daemon's prepared pools: which pools a member can join without
//! preparing them again, and the folding of a pool's journal into its
//! record once it passes [`super::JOURNAL_BOUND`].
//!
//! Invariant: a prepared pool is used only while the rule asks for the
//! limits it was prepared with and its record file is the one the daemon
//! last saw, checked under the records lock; at most one journal is folded
//! per wakeup, after that wakeup's moves.

use std::collections::HashMap;

use super::AutoAttach;
use crate::config::Rule;
use crate::log::{Logger, Val};
use crate::placement::{self, Placement, Ready, RecordError, Records};

impl AutoAttach {
    /// Keeps a pool the full path prepared with every limit in force and
    /// its record written, so the next member joins without re-preparing.
    pub(super) fn remember_ready(&mut self, r: &placement::AttachReport, rule: &Rule) {
        if !r.in_force || r.unconfirmed.is_some() {
            self.ready.remove(&r.group);
            return;
        }
        let stamp = self.records.stamp(&r.group);
        // Without its journal open the pool is prepared again next time.
        let Ok(journal) = self.records.journal(&r.group) else {
            self.ready.remove(&r.group);
            return;
        };
        self.ready.insert(
            r.group.clone(),
            Ready {
                group: r.group.clone(),
                path: r.cgroup.clone(),
                requested: rule.limits.clone(),
                limits: r.limits.clone(),
                stamp,
                journal,
            },
        );
    }

    /// Folds one pool's journal into its record, when one passed
    /// [`super::JOURNAL_BOUND`]: at most one record write per wakeup, after that
    /// wakeup's moves; one that cannot be folded now is tried at a later
    /// wakeup (the loop does not spin for it).
    pub fn compact_one(&mut self, log: &mut Logger) {
        let Some(group) = self.to_compact.first().cloned() else {
            return;
        };
        let held = match self.records.try_lock() {
            Ok(l) => l,
            // A command holds the lock: the next wakeup tries again.
            Err(RecordError::Busy { .. }) => return,
            Err(e) => {
                self.to_compact.remove(0);
                log.error(
                    "record_failed",
                    &[
                        ("job", Val::S(&group)),
                        ("reason", Val::S(&e.to_string())),
                        (
                            "effect",
                            Val::S(
                                "the pool's journal keeps growing until its record can be written",
                            ),
                        ),
                    ],
                );
                return;
            }
        };
        self.to_compact.remove(0);
        let result = placement::compact(&self.h, &held, &mut self.reader, &group);
        drop(held);
        match result {
            Ok(_) => {
                let stamp = self.records.stamp(&group);
                if let Some(r) = self.ready.get_mut(&group) {
                    r.stamp = stamp;
                }
            }
            Err(e) => {
                self.ready.remove(&group);
                log.error(
                    "record_failed",
                    &[
                        ("job", Val::S(&group)),
                        ("reason", Val::S(&e.to_string())),
                        ("effect", Val::S("the pool's journal keeps its members; folding is tried again after the pool's next attach")),
                    ],
                );
            }
        }
    }
}

/// The prepared pool `place` joins, when the daemon prepared it for
/// the limits `rule` asks for and its record file has not been
/// rewritten by anyone else since.
pub(super) fn ready_for<'a>(
    cache: &'a mut HashMap<String, Ready>,
    records: &Records,
    place: &Placement,
    rule: &Rule,
) -> Option<&'a mut Ready> {
    let Placement::Pool(_) = place else {
        return None;
    };
    let name = place.group_name();
    let valid = cache.get(&name).is_some_and(|r| {
        // An unknown stamp proves nothing: the record may be gone.
        r.requested == rule.limits && r.stamp.is_some() && r.stamp == records.stamp(&name)
    });
    if !valid {
        cache.remove(&name);
        return None;
    }
    cache.get_mut(&name)
}
