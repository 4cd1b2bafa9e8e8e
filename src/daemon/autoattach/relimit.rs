//! After a reload: the limits a rule now asks for, put in force on the
//! groups it already governs (its pool, or each of its per-process jobs),
//! read back, and written into each job record.
//!
//! Invariant: only limit files are written; no process is moved, signalled
//! or re-identified, so a governed workload is otherwise undisturbed. Every
//! group ends in one `limits_applied` event (with what the kernel holds) and
//! one `limit_failed` per limit not in force. The records lock is only
//! tried: a group waits in its queue while a command holds it.

use super::{governs, AutoAttach, Outcome, ATTACH_PER_WAKE};
use crate::cgroup::Limits;
use crate::config::Rule;
use crate::daemon::naming::rule_of_group;
use crate::log::{Logger, Val};
use crate::placement::{self, Placement, RecordError};
use crate::state::JobState;

/// What re-limiting one group did.
#[derive(Debug, PartialEq)]
pub enum Relimited {
    /// The limits were written; `in_force` when every one reads back as
    /// written.
    Applied { in_force: bool },
    /// The group is gone (its job ended since the reload): nothing to do.
    Gone,
    /// Nothing was written: the group could not be prepared or its record
    /// could not be read.
    Failed,
    /// A command holds the records lock: try again at the next wakeup.
    Busy,
}

/// The placement a governed group's name stands for.
fn placement_of(group: &str) -> Option<Placement> {
    if let Some(p) = group.strip_prefix("pool.") {
        return Some(Placement::Pool(p.to_string()));
    }
    group
        .strip_prefix("job.")
        .map(|j| Placement::Job(j.to_string()))
}

impl AutoAttach {
    /// Queues every governed group whose rule, found by the same name in
    /// `old` and `new` and placing into the same pool (or none), now asks
    /// for other limits. A pool rule that now names no limits leaves the
    /// pool's budget as it is, as an attach does. Returns how many groups
    /// were queued.
    pub fn queue_relimit(&mut self, old: &[Rule], new: &[Rule]) -> usize {
        let mut groups: Vec<&String> = self.view.jobs.keys().collect();
        groups.extend(self.view.procs.values().map(|g| &g.job));
        groups.sort();
        groups.dedup();
        let mut queued = 0;
        for group in groups {
            let (Some(o), Some(n)) = (rule_of_group(old, group), rule_of_group(new, group)) else {
                continue;
            };
            let (o, n) = (&old[o], &new[n]);
            let changed = o.name == n.name && o.pool == n.pool && o.limits != n.limits;
            let keeps_budget = n.pool.is_some() && n.limits.is_empty();
            if !changed || keeps_budget || !(governs(o) || governs(n)) {
                continue;
            }
            self.to_relimit.retain(|(g, _)| g != group);
            self.to_relimit.push((group.clone(), n.limits.clone()));
            queued += 1;
        }
        queued
    }

    /// Whether re-limiting work waits (a command held the records lock).
    pub fn relimit_pending(&self) -> bool {
        !self.to_relimit.is_empty()
    }

    /// Re-limits up to [`ATTACH_PER_WAKE`] queued groups; one the records
    /// lock kept from is tried again at the next wakeup, in order.
    pub fn relimit_some(&mut self, log: &mut Logger) -> Outcome {
        let n = self.to_relimit.len().min(ATTACH_PER_WAKE);
        let mut done = 0;
        while done < n {
            let (group, limits) = self.to_relimit[0].clone();
            if self.relimit(log, &group, &limits) == Relimited::Busy {
                return Outcome::Retry;
            }
            self.to_relimit.remove(0);
            done += 1;
        }
        Outcome::Done
    }

    /// Makes `limits` the complete limit set of `group`, reads back what the
    /// kernel holds and writes it into the group's record.
    pub(super) fn relimit(&mut self, log: &mut Logger, group: &str, limits: &Limits) -> Relimited {
        let failed = |log: &mut Logger, why: &str| {
            log.error(
                "limit_failed",
                &[
                    ("job", Val::S(group)),
                    ("reason", Val::S(why)),
                    (
                        "effect",
                        Val::S("the job keeps the limits it had; the next reload or attach tries again"),
                    ),
                ],
            );
            Relimited::Failed
        };
        let Some(place) = placement_of(group) else {
            return failed(log, "not a job or pool group name");
        };
        match place.path(&self.h) {
            Ok(p) if p.is_dir() => {}
            Ok(_) => return Relimited::Gone,
            Err(e) => return failed(log, &e.to_string()),
        }
        let held = match self.records.try_lock() {
            Ok(l) => l,
            Err(RecordError::Busy { .. }) => return Relimited::Busy,
            Err(e) => return failed(log, &e.to_string()),
        };
        let record = match held.records().load(group) {
            Ok(r) => r,
            Err(e) => return failed(log, &e.to_string()),
        };
        let prepared = match placement::prepare(&self.h, &place, limits) {
            Ok(p) => p,
            Err(e) => return failed(log, &e.to_string()),
        };
        let saved = match record {
            Some(mut r) => {
                r.limits = prepared.limits.clone();
                r.in_force = prepared.in_force;
                r.problems = prepared.problems.clone();
                held.records().save(&r).err()
            }
            None => None,
        };
        drop(held);
        // A prepared pool is joined only with the limits it was prepared for.
        self.ready.remove(group);
        if let Some(e) = saved {
            log.error(
                "record_failed",
                &[
                    ("job", Val::S(group)),
                    ("reason", Val::S(&e.to_string())),
                    (
                        "effect",
                        Val::S("the new limits are written to the group; its record still names the old ones"),
                    ),
                ],
            );
        }
        let state = JobState {
            group: group.to_string(),
            cgroup: prepared.path.clone(),
            pool: matches!(place, Placement::Pool(_)),
            limits: prepared.limits.clone(),
            in_force: prepared.in_force,
            problems: prepared.problems.clone(),
        };
        self.view.jobs.insert(group.to_string(), state);
        self.view.generation += 1;
        let held_now = prepared.limits.describe();
        let reset = prepared.reset.join(",");
        let mut f = vec![
            ("job", Val::S(group)),
            ("limits", Val::S(&held_now)),
            ("in_force", Val::Bool(prepared.in_force)),
        ];
        if !reset.is_empty() {
            f.push(("limit_reset", Val::S(&reset)));
        }
        log.info("limits_applied", &f);
        for why in &prepared.problems {
            log.error(
                "limit_failed",
                &[
                    ("job", Val::S(group)),
                    ("reason", Val::S(why)),
                    ("effect", Val::S("the process runs without this limit")),
                ],
            );
        }
        Relimited::Applied {
            in_force: prepared.in_force,
        }
    }
}

#[cfg(test)]
#[path = "relimit_tests.rs"]
mod tests;
