//! The daemon's side of governance: attaching what discovery found to the
//! job or pool its rule names, adopting what is already governed, and
//! removing a job's group once its process has ended.
//!
//! Work arrives in bounded queues filled by discovery and is drained a
//! bounded number of items per loop wakeup. Every outcome is a log event:
//! `attached`, `adopted`, `attach_failed`, `limit_failed`, `not_moved`,
//! `record_failed`, `job_removed`.
//!
//! Invariant: the daemon never waits on another process. The records lock
//! is only tried; when a CLI command holds it (or released.json cannot be
//! read) the item is [`Outcome::Retry`]: it stays queued for the next
//! wakeup, with one `attach_deferred` debug event and a count.

use std::collections::HashMap;

mod cleanup;
mod pools;
mod relimit;

use cleanup::remove_stale_temps;

use super::naming::{job_name, rule_of_group};
use crate::cgroup::{Group, Hierarchy, Limits};
use crate::config::{Config, Rule};
use crate::discovery::{Discovery, Restore, RuleId, Step};
use crate::log::{Logger, Val};
use crate::placement::{
    self, PlaceError, Placement, Protected, Ready, RecordError, Records, SetupError,
};
use crate::procfs::{ProcKey, ProcReader};
use crate::state::{GovernanceView, Governed, JobState};
use crate::sys;
use pools::ready_for;

/// Attaches handled per wakeup: each per-process job costs two synced
/// record writes, so a wakeup stays short and signals are served between.
pub const ATTACH_PER_WAKE: usize = 16;

/// A pool's journal past this many bytes is folded into its record (one
/// pool per wakeup, after that wakeup's attaches): a few hundred attaches
/// between two record writes, and a bound on the bytes a pool keeps on
/// disk whatever the number of members that passed through it.
pub const JOURNAL_BOUND: u64 = 64 * 1024;

/// What the loop does with a queued item after one try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Handled (attached, skipped, or failed and said so).
    Done,
    /// Found already in a governed group: taken up, not moved.
    Adopted,
    /// Could not be handled without waiting on another process: keep it
    /// queued and try again at the next wakeup.
    Retry,
}

/// Whether a rule asks for governance at all.
pub fn governs(rule: &Rule) -> bool {
    !rule.limits.is_empty() || rule.pool.is_some()
}

pub struct AutoAttach {
    h: Hierarchy,
    records: Records,
    reader: ProcReader,
    /// What is governed, for the state snapshot.
    pub view: GovernanceView,
    /// Items put back in their queue because the records lock was held.
    pub deferred: u64,
    /// released.json was unreadable at the last try (its error is logged
    /// once per run of failures).
    released_broken: bool,
    /// Pools prepared with their limits in force, by group name: a member
    /// joins without re-preparing ([`placement::join`]).
    ready: HashMap<String, Ready>,
    /// pid 1, reeve and its ancestors, read once.
    protected: Protected,
    /// Pools whose journal passed [`JOURNAL_BOUND`], or that a restart
    /// found with a journal: folded into their record by [`AutoAttach::compact_one`].
    to_compact: Vec<String>,
    /// Groups whose rule a reload gave new limits, with those limits
    /// ([`AutoAttach::relimit_some`]).
    to_relimit: Vec<(String, Limits)>,
}

impl AutoAttach {
    /// Sets up governance when some rule asks for it. A failure is logged
    /// as an error that says what will not happen, and the daemon carries
    /// on discovering.
    pub fn new(config: &Config, log: &mut Logger) -> Option<AutoAttach> {
        if !config.targets.iter().any(governs) {
            return None;
        }
        let mut setup = || -> Result<AutoAttach, SetupError> {
            let h = Hierarchy::detect(config.cgroup_root.as_deref()).map_err(SetupError::Cgroup)?;
            placement::ensure_root(&h).map_err(SetupError::Cgroup)?;
            let records = Records::open(&config.state_dir).map_err(SetupError::Records)?;
            remove_stale_temps(&records, log);
            let mut reader = ProcReader::open().map_err(SetupError::Proc)?;
            let protected = Protected::of_self(&mut reader).map_err(SetupError::Protected)?;
            Ok(AutoAttach {
                h,
                records,
                reader,
                view: GovernanceView::default(),
                deferred: 0,
                released_broken: false,
                ready: HashMap::new(),
                protected,
                to_compact: Vec::new(),
                to_relimit: Vec::new(),
            })
        };
        match setup() {
            Ok(g) => {
                log.info(
                    "governance",
                    &[
                        ("root", Val::S(&g.h.root.display().to_string())),
                        ("delegated", Val::Bool(g.h.delegated)),
                    ],
                );
                Some(g)
            }
            Err(e) => {
                let why = e.to_string();
                log.error(
                    "governance_unavailable",
                    &[
                        ("reason", Val::S(&why)),
                        (
                            "effect",
                            Val::S("discovered targets are tracked but not attached and no limits are applied"),
                        ),
                    ],
                );
                None
            }
        }
    }

    /// The managed subtree job and pool groups live in.
    pub fn root(&self) -> &std::path::Path {
        &self.h.root
    }

    /// Tracks the processes of every group reeve governs, including jobs
    /// made by `reeve run` or `reeve attach` while no daemon ran; nothing
    /// is moved or re-limited.
    pub fn adopt_existing(&mut self, d: &mut Discovery, rules: &[Rule], log: &mut Logger) {
        let not_adopted = |log: &mut Logger, what: &str, why: &str| {
            log.error(
                "adopt_failed",
                &[
                    ("what", Val::S(what)),
                    ("reason", Val::S(why)),
                    (
                        "effect",
                        Val::S("processes already governed there are not tracked by this daemon"),
                    ),
                ],
            );
        };
        let root = self.h.root.display().to_string();
        let entries = match std::fs::read_dir(&self.h.root) {
            Ok(e) => e,
            Err(e) => return not_adopted(log, &root, &e.to_string()),
        };
        for e in entries {
            let e = match e {
                Ok(e) => e,
                Err(e) => {
                    not_adopted(log, &root, &e.to_string());
                    continue;
                }
            };
            let name = e.file_name().to_string_lossy().into_owned();
            if !(name.starts_with("job.") || name.starts_with("pool.")) {
                continue;
            }
            // A journal a previous daemon left is folded first: intents
            // it wrote before dying are settled from the kernel's view.
            if self.records.journal_len(&name) > 0 {
                self.to_compact.push(name.clone());
                self.compact_one(log);
            }
            let pids = match Group::new(e.path()).procs() {
                Ok(p) => p,
                Err(err) => {
                    not_adopted(log, &name, &err.to_string());
                    continue;
                }
            };
            for pid in pids {
                let key = match placement::identify(&mut self.reader, pid) {
                    Ok(k) => k,
                    Err(PlaceError::ProcessGone { .. }) => continue, // ended since listed
                    Err(err) => {
                        not_adopted(log, &format!("{name} pid {pid}"), &err.to_string());
                        continue;
                    }
                };
                let rule = rule_of_group(rules, &name)
                    .and_then(|i| rules.get(i))
                    .map_or(RuleId::ADOPTED, |r| d.rule_id(&r.name));
                let restored = d.tracked().get(&key).is_some_and(|t| t.alive());
                let outcome = if restored {
                    Restore::Tracked
                } else {
                    d.restore(key, rule, sys::realtime_ms())
                };
                if let Restore::Unreadable(why) | Restore::Refused(why) = &outcome {
                    log.error(
                        "adopt_failed",
                        &[
                            ("pid", Val::U(pid.into())),
                            ("start_ticks", Val::U(key.start_ticks)),
                            ("job", Val::S(&name)),
                            ("reason", Val::S(why)),
                            (
                                "effect",
                                Val::S("it stays in its group, untracked by this daemon"),
                            ),
                        ],
                    );
                }
                // Restored from the snapshot or not: this daemon takes up
                // its governance, and the audit log says so.
                if outcome == Restore::Tracked {
                    super::mark(d, log, key, Step::Adopt);
                    self.note_adopted(log, key, &name);
                    log.info(
                        "adopted",
                        &[
                            ("pid", Val::U(pid.into())),
                            ("start_ticks", Val::U(key.start_ticks)),
                            ("job", Val::S(&name)),
                            ("source", Val::S("cgroup")),
                        ],
                    );
                }
            }
        }
    }

    /// Records a process found in a governed group, with what its job
    /// record says about the group and the process's origin.
    fn note_adopted(&mut self, log: &mut Logger, key: ProcKey, group: &str) {
        let record = match self.records.load(group) {
            Ok(r) => r,
            Err(e) => {
                // Adopted all the same (the process is in the group); the
                // state snapshot lacks what the record would have said.
                log.error(
                    "record_unusable",
                    &[
                        ("job", Val::S(group)),
                        ("reason", Val::S(&e.to_string())),
                        (
                            "effect",
                            Val::S("the job's limits and the process's origin are unknown to this daemon"),
                        ),
                    ],
                );
                None
            }
        };
        let original = record.as_ref().and_then(|r| {
            r.members
                .iter()
                .find(|m| m.key() == key)
                .map(|m| m.original_cgroup.clone())
                .or_else(|| {
                    r.pending
                        .iter()
                        .find(|p| p.key() == key && p.to == r.cgroup)
                        .map(|p| p.from.clone())
                })
        });
        let cgroup = self.h.root.join(group);
        self.view.procs.insert(
            key,
            Governed {
                job: group.to_string(),
                cgroup: cgroup.clone(),
                original_cgroup: original,
                attached_ms: record.as_ref().map_or(sys::realtime_ms(), |r| r.created_ms),
            },
        );
        if let Some(r) = record {
            self.view.jobs.insert(
                group.to_string(),
                JobState {
                    group: r.group,
                    cgroup: r.cgroup,
                    pool: r.pool,
                    limits: r.limits,
                    in_force: r.in_force,
                    problems: r.problems,
                },
            );
        }
        self.view.generation += 1;
    }

    /// Whether governance already knows `key` (attached or adopted).
    pub fn knows(&self, key: &ProcKey) -> bool {
        self.view.procs.contains_key(key)
    }

    /// Counts and logs an item put back in its queue.
    fn defer(&mut self, log: &mut Logger, key: ProcKey, what: &str, why: &str) {
        self.deferred += 1;
        log.debug(
            "attach_deferred",
            &[
                ("pid", Val::U(key.pid.into())),
                ("start_ticks", Val::U(key.start_ticks)),
                ("work", Val::S(what)),
                ("reason", Val::S(why)),
                ("deferred_total", Val::U(self.deferred)),
            ],
        );
    }

    /// Attaches (or adopts) one discovered process.
    pub fn attach(&mut self, log: &mut Logger, key: ProcKey, rule: &Rule) -> Outcome {
        if !governs(rule) {
            return Outcome::Done;
        }
        let base = [
            ("pid", Val::U(key.pid.into())),
            ("start_ticks", Val::U(key.start_ticks)),
            ("rule", Val::S(&rule.name)),
        ];
        // Read once: whether it is governed already, and where it comes from.
        let current = self.h.process_cgroup(key.pid).ok();
        if let Some(group) = current
            .as_deref()
            .and_then(|c| placement::managed_group_at(&self.h, c))
        {
            let f = [base[0], base[1], base[2], ("job", Val::S(&group))];
            log.info("adopted", &f);
            self.note_adopted(log, key, &group);
            return Outcome::Adopted;
        }
        let place = match &rule.pool {
            Some(p) => Placement::Pool(p.clone()),
            None => Placement::Job(job_name(&rule.name, key)),
        };
        let now = sys::realtime_ms();
        let held = match self.records.try_lock() {
            Ok(l) => l,
            Err(e @ RecordError::Busy { .. }) => {
                self.defer(log, key, "attach", &e.to_string());
                return Outcome::Retry;
            }
            Err(e) => {
                let why = e.to_string();
                let f = [base[0], base[1], base[2], ("reason", Val::S(&why))];
                log.error("attach_failed", &f);
                return Outcome::Done;
            }
        };
        match held.records().released() {
            Ok(list) => {
                if self.released_broken {
                    self.released_broken = false;
                    log.info("released_readable", &[base[0], base[1], base[2]]);
                }
                if list.contains(&key) {
                    log.info(
                        "not_attached",
                        &[
                            base[0],
                            base[1],
                            base[2],
                            ("reason", Val::S("released by reeve detach")),
                        ],
                    );
                    return Outcome::Done;
                }
            }
            Err(e) => {
                let why = e.to_string();
                if !self.released_broken {
                    self.released_broken = true;
                    log.error(
                        "released_unreadable",
                        &[
                            base[0],
                            base[1],
                            base[2],
                            ("reason", Val::S(&why)),
                            (
                                "effect",
                                Val::S("nothing is attached automatically until it is readable; retried at each wakeup"),
                            ),
                        ],
                    );
                }
                self.defer(log, key, "attach", &why);
                return Outcome::Retry;
            }
        }
        // Checked under the lock: no command rewrites the record between
        // this check and the moves.
        let ready = ready_for(&mut self.ready, &self.records, &place, rule);
        let mut result = None;
        let mut fresh = None;
        if let Some(ready) = ready {
            let group = ready.group.clone();
            match placement::join(
                &self.h,
                &held,
                &mut self.reader,
                key,
                current,
                ready,
                &self.protected,
            ) {
                Ok((r, journal_len)) => {
                    if journal_len > JOURNAL_BOUND && !self.to_compact.contains(&group) {
                        self.to_compact.push(group);
                    }
                    result = Some(Ok(r));
                }
                // The pool changed under the daemon (its group removed, a
                // file it needs gone): prepare it again. A move whose write
                // may have landed keeps its intent in the journal, which the
                // full path settles from the kernel's view.
                Err(PlaceError::Cgroup(e)) => {
                    let why = e.to_string();
                    log.warn(
                        "attach_retry",
                        &[
                            base[0],
                            base[1],
                            base[2],
                            ("job", Val::S(&group)),
                            ("reason", Val::S(&why)),
                            ("action", Val::S("preparing the pool again")),
                        ],
                    );
                    self.ready.remove(&group);
                }
                Err(e) => result = Some(Err(e)),
            }
        }
        let result = match result {
            Some(r) => r,
            None => {
                let r = placement::attach(
                    &self.h,
                    &held,
                    &mut self.reader,
                    key,
                    &place,
                    &rule.limits,
                    now,
                );
                if let (Ok(r), Placement::Pool(_)) = (&r, &place) {
                    fresh = Some(r.group.clone());
                }
                r
            }
        };
        drop(held);
        if let (Some(_), Ok(r)) = (fresh, &result) {
            self.remember_ready(r, rule);
        }
        match result {
            Ok(r) => self.attached(log, key, rule, &r, now),
            Err(PlaceError::ProcessGone {
                detail, stranger, ..
            }) => {
                // A target that ended before it could be moved is not a
                // failure of governance; a stranger that took its pid
                // inside the move is said louder.
                let f = [base[0], base[1], base[2], ("reason", Val::S(&detail))];
                let runs = matches!(self.reader.stat(key.pid),
                    Ok(s) if s.start_ticks == key.start_ticks && !s.is_dead());
                if runs {
                    // Said gone, yet it runs (a leader thread that exited
                    // while other threads run is one such process): it runs
                    // ungoverned, which is never a quiet outcome.
                    let why = format!(
                        "{detail}; but the process still runs (a leader thread that exited while \
                         other threads run?), ungoverned"
                    );
                    log.warn(
                        "attach_skipped",
                        &[base[0], base[1], base[2], ("reason", Val::S(&why))],
                    );
                } else if stranger.is_some() {
                    log.warn("attach_skipped", &f);
                } else {
                    log.debug("attach_skipped", &f);
                }
            }
            Err(e) => {
                let why = e.to_string();
                let f = [base[0], base[1], base[2], ("reason", Val::S(&why))];
                log.error("attach_failed", &f);
            }
        }
        Outcome::Done
    }

    /// Logs and records a successful attach.
    fn attached(
        &mut self,
        log: &mut Logger,
        key: ProcKey,
        rule: &Rule,
        r: &placement::AttachReport,
        now: u64,
    ) {
        let base = [
            ("pid", Val::U(key.pid.into())),
            ("start_ticks", Val::U(key.start_ticks)),
            ("rule", Val::S(&rule.name)),
        ];
        let cg = r.cgroup.display().to_string();
        let limits = r.limits.describe();
        let f = [
            base[0],
            base[1],
            base[2],
            ("job", Val::S(&r.group)),
            ("cgroup", Val::S(&cg)),
            ("moved", Val::U(r.moved.len() as u64)),
            ("limits", Val::S(&limits)),
            ("in_force", Val::Bool(r.in_force)),
        ];
        let reset = r.reset.join(",");
        if reset.is_empty() {
            log.info("attached", &f);
        } else {
            let mut f = f.to_vec();
            f.push(("limit_reset", Val::S(&reset)));
            log.info("attached", &f);
        }
        for (k, why) in &r.failed {
            log.warn(
                "not_moved",
                &[
                    ("pid", Val::U(k.pid.into())),
                    ("start_ticks", Val::U(k.start_ticks)),
                    ("job", Val::S(&r.group)),
                    ("reason", Val::S(why)),
                ],
            );
        }
        if let Some(e) = &r.unconfirmed {
            log.error(
                "record_failed",
                &[
                    ("job", Val::S(&r.group)),
                    ("reason", Val::S(&e.to_string())),
                    (
                        "effect",
                        Val::S("the moves are done and the record lists them as intents; the next write of the record settles them"),
                    ),
                ],
            );
        }
        for m in &r.members {
            self.view.procs.insert(
                m.key(),
                Governed {
                    job: r.group.clone(),
                    cgroup: r.cgroup.clone(),
                    original_cgroup: Some(m.original_cgroup.clone()),
                    attached_ms: now,
                },
            );
        }
        self.view.jobs.insert(
            r.group.clone(),
            JobState {
                group: r.group.clone(),
                cgroup: r.cgroup.clone(),
                pool: rule.pool.is_some(),
                limits: r.limits.clone(),
                in_force: r.in_force,
                problems: r.problems.clone(),
            },
        );
        self.view.generation += 1;
        for why in &r.problems {
            log.error(
                "limit_failed",
                &[
                    ("job", Val::S(&r.group)),
                    ("reason", Val::S(why)),
                    ("effect", Val::S("the process runs without this limit")),
                ],
            );
        }
    }
}
