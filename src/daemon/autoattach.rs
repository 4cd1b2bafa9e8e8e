//! The daemon's side of governance: attaching what discovery found to the
//! job or pool its rule names, adopting what is already governed, and
//! removing a job's group once its process has ended.
//!
//! Work arrives in bounded queues filled by discovery and is drained a
//! bounded number of items per loop wakeup. Every outcome is a log event:
//! `attached`, `adopted`, `attach_failed`, `limit_failed`, `job_removed`.

use crate::cgroup::{self, Group, Hierarchy};
use crate::config::{Config, Rule};
use crate::discovery::{Discovery, ADOPTED_RULE};
use crate::log::{Logger, Val};
use crate::placement::{self, Placement, Records};
use crate::procfs::{ProcKey, ProcReader};
use crate::state::{GovernanceView, Governed, JobState};
use crate::sys;

/// Attaches handled per wakeup.
pub const ATTACH_PER_WAKE: usize = 64;

/// The rule that made a group: `pool.NAME` is the pool of the first rule
/// naming it; `job.RULE-PID` is the job of rule RULE.
fn rule_of_group(rules: &[Rule], group: &str) -> Option<usize> {
    if let Some(pool) = group.strip_prefix("pool.") {
        return rules.iter().position(|r| r.pool.as_deref() == Some(pool));
    }
    let job = group.strip_prefix("job.")?;
    rules.iter().position(|r| {
        r.pool.is_none()
            && job
                .strip_prefix(&cgroup::sanitize_job_name(&r.name))
                .and_then(|rest| rest.strip_prefix('-'))
                .is_some_and(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
    })
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
}

impl AutoAttach {
    /// Sets up governance when some rule asks for it. A failure is logged
    /// as an error that says what will not happen, and the daemon carries
    /// on discovering.
    pub fn new(config: &Config, log: &mut Logger) -> Option<AutoAttach> {
        if !config.targets.iter().any(governs) {
            return None;
        }
        let setup = || -> Result<AutoAttach, String> {
            let h = Hierarchy::detect(config.cgroup_root.as_deref()).map_err(|e| e.to_string())?;
            placement::ensure_root(&h)?;
            let records = Records::open(&config.state_dir)?;
            let reader = ProcReader::open().map_err(|e| format!("cannot open /proc: {e}"))?;
            Ok(AutoAttach {
                h,
                records,
                reader,
                view: GovernanceView::default(),
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
            Err(why) => {
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
        let Ok(entries) = std::fs::read_dir(&self.h.root) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !(name.starts_with("job.") || name.starts_with("pool.")) {
                continue;
            }
            let Ok(pids) = Group::new(e.path()).procs() else {
                continue;
            };
            for pid in pids {
                let Ok(key) = placement::identify(&mut self.reader, pid) else {
                    continue;
                };
                let rule = rule_of_group(rules, &name).map_or(ADOPTED_RULE, |i| i as u16);
                let restored = d.tracked().get(&key).is_some_and(|t| t.alive());
                // Restored from the snapshot or not: this daemon takes up
                // its governance, and the audit log says so.
                if restored || d.restore(key, rule, sys::realtime_ms()) {
                    self.note_adopted(key, &name);
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
    fn note_adopted(&mut self, key: ProcKey, group: &str) {
        let record = self.records.load(group).ok().flatten();
        let original = record.as_ref().and_then(|r| {
            r.members
                .iter()
                .find(|m| m.key() == key)
                .map(|m| m.original_cgroup.clone())
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

    fn job_name(rule: &Rule, pid: u32) -> String {
        cgroup::sanitize_job_name(&format!("{}-{pid}", rule.name))
    }

    /// Attaches (or adopts) one discovered process.
    pub fn attach(&mut self, log: &mut Logger, key: ProcKey, rule: &Rule) {
        if !governs(rule) {
            return;
        }
        let base = [
            ("pid", Val::U(key.pid.into())),
            ("start_ticks", Val::U(key.start_ticks)),
            ("rule", Val::S(&rule.name)),
        ];
        if let Some(group) = placement::managed_group(&self.h, key.pid) {
            let f = [base[0], base[1], base[2], ("job", Val::S(&group))];
            log.info("adopted", &f);
            self.note_adopted(key, &group);
            return;
        }
        if self.records.released().contains(&key) {
            log.info(
                "not_attached",
                &[
                    base[0],
                    base[1],
                    base[2],
                    ("reason", Val::S("released by reeve detach")),
                ],
            );
            return;
        }
        let place = match &rule.pool {
            Some(p) => Placement::Pool(p.clone()),
            None => Placement::Job(Self::job_name(rule, key.pid)),
        };
        let now = sys::realtime_ms();
        let held = match self.records.lock() {
            Ok(l) => l,
            Err(why) => {
                let f = [base[0], base[1], base[2], ("reason", Val::S(&why))];
                log.error("attach_failed", &f);
                return;
            }
        };
        match placement::attach(
            &self.h,
            &held,
            &mut self.reader,
            key,
            &place,
            &rule.limits,
            now,
        ) {
            Ok(r) => {
                let cg = r.cgroup.display().to_string();
                let limits = rule.limits.describe();
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
                log.info("attached", &f);
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
                        limits: rule.limits.clone(),
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
            Err(why) => {
                // A target that ended before it could be moved is not a
                // failure of governance.
                if placement::identify(&mut self.reader, key.pid).ok() != Some(key) {
                    let f = [
                        base[0],
                        base[1],
                        base[2],
                        ("reason", Val::S("the process ended before it was attached")),
                    ];
                    log.debug("attach_skipped", &f);
                    return;
                }
                let f = [base[0], base[1], base[2], ("reason", Val::S(&why))];
                log.error("attach_failed", &f);
            }
        }
    }

    /// After a process in an auto-attached job ended: remove the job's
    /// group and record once nothing runs in it. Pools stay.
    pub fn ended(&mut self, log: &mut Logger, key: ProcKey, rule: Option<&Rule>) {
        if self.view.procs.remove(&key).is_some() {
            self.view.generation += 1;
        }
        let Some(rule) = rule else {
            return;
        };
        if !governs(rule) || rule.pool.is_some() {
            return;
        }
        let name = format!("job.{}", Self::job_name(rule, key.pid));
        let path = self.h.root.join(&name);
        if !path.is_dir() {
            return;
        }
        let group = Group::new(&path);
        let Ok(_lock) = self.records.lock() else {
            return;
        };
        if matches!(group.populated(), Ok(false)) {
            match group.remove() {
                Ok(()) => {
                    let _ = self.records.remove(&name);
                    self.view.jobs.remove(&name);
                    self.view.generation += 1;
                    log.info("job_removed", &[("job", Val::S(&name))]);
                }
                Err(e) => log.warn(
                    "job_remove_failed",
                    &[("job", Val::S(&name)), ("reason", Val::S(&e.to_string()))],
                ),
            }
        }
    }
}
