//! Clean-up of what auto-attach made: a per-process job's group and record
//! once its process has ended, the empty per-process jobs an earlier daemon
//! left, and stale temp files of job records. The records lock is only
//! tried; a command holding it defers the work, never stalls the loop.

use super::{job_name, rule_of_group, AutoAttach, Outcome};
use crate::cgroup::Group;
use crate::config::Rule;
use crate::log::{Logger, Val};
use crate::placement::{RecordError, Records};
use crate::procfs::ProcKey;

impl AutoAttach {
    /// After a process in an auto-attached job ended: remove the job's
    /// group and record once nothing runs in it. Pools stay. `rule` is the
    /// name of the rule that tracked it, also when a reload has removed
    /// that rule since: the job's name holds the whole identity, so the
    /// group found under it is this process's own.
    pub fn ended(&mut self, log: &mut Logger, key: ProcKey, rule: &str) -> Outcome {
        if self.view.procs.remove(&key).is_some() {
            self.view.generation += 1;
        }
        let name = format!("job.{}", job_name(rule, key));
        let path = self.h.root.join(&name);
        if !path.is_dir() {
            return Outcome::Done;
        }
        let group = Group::new(&path);
        let _held = match self.records.try_lock() {
            Ok(l) => l,
            Err(e @ RecordError::Busy { .. }) => {
                self.defer(log, key, "job_removal", &e.to_string());
                return Outcome::Retry;
            }
            Err(e) => {
                log.error(
                    "job_remove_failed",
                    &[("job", Val::S(&name)), ("reason", Val::S(&e.to_string()))],
                );
                return Outcome::Done;
            }
        };
        let populated = match group.populated() {
            Ok(p) => p,
            Err(e) => {
                log.warn(
                    "job_remove_failed",
                    &[
                        ("job", Val::S(&name)),
                        ("reason", Val::S(&e.to_string())),
                        ("effect", Val::S("the group and its record stay")),
                    ],
                );
                return Outcome::Done;
            }
        };
        if !populated {
            match group.remove() {
                Ok(()) => {
                    if let Err(e) = self.records.remove(&name) {
                        log.error(
                            "job_remove_failed",
                            &[
                                ("job", Val::S(&name)),
                                ("reason", Val::S(&e.to_string())),
                                (
                                    "effect",
                                    Val::S("the group is gone; its stale record stays"),
                                ),
                            ],
                        );
                    }
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
        Outcome::Done
    }

    /// At start: removes the per-process job groups (`job.<rule>-<pid>-<start>`
    /// of a rule without a pool) that hold no process, with their records.
    /// A daemon that stopped with exits still queued, or died before it
    /// cleaned up, leaves such groups; nothing else makes them. Pools and
    /// the jobs of `reeve run`/`reeve attach` are never touched.
    pub fn sweep_empty_jobs(&mut self, rules: &[Rule], log: &mut Logger) {
        let root = self.h.root.display().to_string();
        let failed = |log: &mut Logger, why: &str| {
            log.error(
                "job_sweep_failed",
                &[
                    ("root", Val::S(&root)),
                    ("reason", Val::S(why)),
                    (
                        "effect",
                        Val::S("empty job groups left by an earlier daemon stay"),
                    ),
                ],
            );
        };
        let entries = match std::fs::read_dir(&self.h.root) {
            Ok(e) => e,
            Err(e) => return failed(log, &e.to_string()),
        };
        let mut empty = Vec::new();
        for e in entries {
            let e = match e {
                Ok(e) => e,
                Err(e) => {
                    failed(log, &format!("listing: {e}"));
                    continue;
                }
            };
            let name = e.file_name().to_string_lossy().into_owned();
            let per_process = name.starts_with("job.")
                && rule_of_group(rules, &name)
                    .and_then(|i| rules.get(i))
                    .is_some_and(|r| r.pool.is_none());
            if !per_process {
                continue;
            }
            match Group::new(e.path()).populated() {
                Ok(false) => empty.push(name),
                Ok(true) => {}
                Err(err) => failed(log, &err.to_string()),
            }
        }
        if empty.is_empty() {
            return;
        }
        let _held = match self.records.try_lock() {
            Ok(l) => l,
            Err(e) => {
                log.warn(
                    "job_cleanup_skipped",
                    &[
                        ("jobs", Val::U(empty.len() as u64)),
                        ("reason", Val::S(&e.to_string())),
                        (
                            "action",
                            Val::S("the empty job groups stay until the next start"),
                        ),
                    ],
                );
                return;
            }
        };
        for name in empty {
            let group = Group::new(self.h.root.join(&name));
            // Re-checked under the lock: a command may have used it since.
            match group.populated() {
                Ok(false) => {}
                Ok(true) => continue,
                Err(e) => {
                    let why = e.to_string();
                    log.warn(
                        "job_remove_failed",
                        &[("job", Val::S(&name)), ("reason", Val::S(&why))],
                    );
                    continue;
                }
            }
            let removed = group
                .remove()
                .map_err(|e| e.to_string())
                .and_then(|()| self.records.remove(&name).map_err(|e| e.to_string()));
            match removed {
                Ok(()) => log.info(
                    "job_removed",
                    &[("job", Val::S(&name)), ("reason", Val::S("empty at start"))],
                ),
                Err(why) => log.warn(
                    "job_remove_failed",
                    &[("job", Val::S(&name)), ("reason", Val::S(&why))],
                ),
            }
        }
    }
}

/// Removes the temp files of job records a writer killed mid-write left
/// behind, one `temp_removed` event per file. A command holding the
/// records lock now may be writing one: they stay until the next start.
pub(super) fn remove_stale_temps(records: &Records, log: &mut Logger) {
    match records.remove_stale_temps() {
        Ok((removed, failed)) => {
            for name in &removed {
                log.debug("temp_removed", &[("file", Val::S(name))]);
            }
            for why in &failed {
                log.warn("temp_remove_failed", &[("reason", Val::S(why))]);
            }
        }
        Err(e) => log.debug("temp_remove_skipped", &[("reason", Val::S(&e.to_string()))]),
    }
}
