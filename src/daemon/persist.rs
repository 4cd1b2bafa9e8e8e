//! The daemon's durability: the state directory and its lock, the audit
//! log behind the logger, restoring tracked processes at start, and
//! coalesced snapshot writes.
//!
//! Invariants: one daemon per state directory; a snapshot is written at
//! most once per [`FLUSH_INTERVAL_MS`] while something it holds changed
//! (a scan that changes nothing writes nothing), and at shutdown; a state
//! file that cannot be used is set aside by `store` and the daemon rebuilds
//! from a full scan and the governed groups; a failed save is an error
//! event (at most one a minute), never a crash. The audit log is appended
//! without waiting for its lock (a held lock queues events for the next
//! wakeup) and committed once per wakeup by [`Persistence::tick`]; a
//! failure to write it is reported once per failure run, on stderr only,
//! so the queue holds real events, never reports about itself.

mod save;

use crate::discovery::{Discovery, DiscoveryStats, Restore, RuleId};
use crate::log::{Logger, Val};
use crate::procfs::ProcKey;
use crate::state::{self, Counters, DaemonLock, State};
use crate::store::{EventLog, Loaded, LogOptions, StateDir};
use crate::sys;

/// Longest a change waits before it is in the snapshot.
pub const FLUSH_INTERVAL_MS: u64 = 1000;
/// How long a stopping daemon keeps trying to land queued audit events
/// (another writer holding the lock, a full disk) before it counts them
/// lost. The loop is over by then, so this delays only the exit.
pub const AUDIT_DRAIN_AT_EXIT: std::time::Duration = std::time::Duration::from_secs(10);
const SAVE_ERROR_EVERY_MS: u64 = 60_000;

/// What the audit log says happened after the snapshot (`since`): the
/// daemon that wrote it saw these, then died before its next snapshot.
#[derive(Default)]
struct SinceSnapshot {
    /// Identities discovered, with their rule's name, time and comm.
    discovered: Vec<(ProcKey, String, u64, String)>,
    exited: std::collections::HashSet<ProcKey>,
}

/// Reads the audit events after `since` (all of them when the snapshot
/// knew none). An unreadable log is an error the caller reports: without
/// it, exits missed while reeve was down cannot be found.
fn events_since(dir: &std::path::Path, since: u64) -> Result<SinceSnapshot, String> {
    let mut out = SinceSnapshot::default();
    let from = (since > 0).then_some(since);
    let reader = crate::store::read_events(dir, from).map_err(|e| e.to_string())?;
    for v in reader {
        let event = v.get("event").and_then(|e| e.as_str());
        let pid = v.get("pid").and_then(|x| x.as_u64());
        let start = v.get("start_ticks").and_then(|x| x.as_u64());
        let (Some(pid), Some(start_ticks)) = (pid.and_then(|p| u32::try_from(p).ok()), start)
        else {
            continue;
        };
        let key = ProcKey { pid, start_ticks };
        match event {
            Some("exited") => {
                out.exited.insert(key);
            }
            Some("discovered") => {
                let rule = v.get("rule").and_then(|r| r.as_str()).unwrap_or("");
                let ts = v.get("ts_ms").and_then(|t| t.as_u64()).unwrap_or(0);
                let comm = v.get("comm").and_then(|c| c.as_str()).unwrap_or("");
                out.discovered
                    .push((key, rule.to_string(), ts, comm.to_string()));
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Reports a saved identity that still runs but could not be tracked
/// again; true for those (they must not be called ended).
fn not_restored(outcome: &Restore, key: ProcKey, rule: &str, log: &mut Logger) -> bool {
    let (Restore::Unreadable(why) | Restore::Refused(why)) = outcome else {
        return false;
    };
    log.error(
        "restore_failed",
        &[
            ("pid", Val::U(key.pid.into())),
            ("start_ticks", Val::U(key.start_ticks)),
            ("rule", Val::S(rule)),
            ("reason", Val::S(why)),
            (
                "effect",
                Val::S("not tracked by this daemon; it keeps running (and its group, if any)"),
            ),
        ],
    );
    true
}

/// A daemon killed mid-save leaves its temp file behind; the lock is ours,
/// so nobody else is writing one now. A file that cannot be listed or
/// removed is a `temp_remove_failed` warning: it stays, and is tried again
/// at the next start.
fn remove_stale_temp_files(dir: &std::path::Path, log: &mut Logger) {
    let failed = |log: &mut Logger, what: &std::path::Path, e: &std::io::Error| {
        let why = format!("{}: {e}", what.display());
        log.warn("temp_remove_failed", &[("reason", Val::S(&why))]);
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => return failed(log, dir, &e),
    };
    let prefix = format!(".{}.tmp.", state::STATE_FILE);
    for e in entries {
        let e = match e {
            Ok(e) => e,
            Err(e) => {
                failed(log, dir, &e);
                continue;
            }
        };
        let name = e.file_name();
        let name = name.to_string_lossy();
        if !name.starts_with(&prefix) {
            continue;
        }
        match std::fs::remove_file(e.path()) {
            Ok(()) => log.debug("temp_removed", &[("file", Val::S(&name))]),
            Err(err) => failed(log, &e.path(), &err),
        }
    }
}

pub struct Persistence {
    /// The daemon's instance id, written in every snapshot.
    pub instance: String,
    dir: StateDir,
    _lock: DaemonLock,
    started_ms: u64,
    base: Counters,
    saved: Option<(DiscoveryStats, u64)>,
    last_save_ms: u64,
    last_error_ms: u64,
    /// A state file that could not be set aside must not be overwritten.
    save_disabled: bool,
    /// When the current run of audit log failures began (wall ms).
    audit_failing_since: Option<u64>,
    /// Runs of audit log failures since start.
    audit_failure_runs: u64,
    /// Snapshots written, writes that failed, whether the last one failed,
    /// and how long each write took: for the metrics endpoint.
    pub saves: u64,
    pub save_failures: u64,
    pub save_failing: bool,
    pub save_seconds: crate::metrics::text::Histogram,
    /// The thread that writes snapshots off the loop ([`save`]).
    saver: Option<save::Saver>,
    /// The snapshot handed to it and not yet written: what it holds and
    /// when it was captured.
    save_in_flight: Option<((DiscoveryStats, u64), u64)>,
}

/// What restoring found: identities tracked again and identities that
/// ended while reeve was down, each with its rule's id.
#[derive(Default)]
pub struct Restored {
    pub running: Vec<(ProcKey, RuleId)>,
    pub ended: Vec<(ProcKey, RuleId)>,
}

impl Persistence {
    /// Opens the state directory, takes the daemon lock and routes audit
    /// events to the event log.
    pub fn open(
        state_dir: &std::path::Path,
        audit: LogOptions,
        log: &mut Logger,
    ) -> Result<Persistence, String> {
        let dir = StateDir::open(state_dir)
            .map_err(|e| format!("cannot use the state directory: {e}"))?;
        let lock = DaemonLock::acquire(dir.path(), sys::getpid())?;
        // The loop never waits for another writer (a CLI command holding
        // the lock queues the events for the next wakeup) nor for the disk:
        // `tick` commits once per wakeup and the sync runs in the background.
        let audit = LogOptions {
            lock_timeout: std::time::Duration::ZERO,
            group_commit: true,
            ..audit
        };
        let mut events = EventLog::open(&dir, audit)
            .map_err(|e| format!("cannot open the audit event log: {e}"))?;
        // The commit's fdatasync runs on a thread of its own, so no exec
        // that arrives meanwhile waits for the disk before its move.
        events
            .sync_in_background()
            .map_err(|e| format!("cannot start the audit log's sync: {e}"))?;
        let set_aside = events.take_set_aside();
        log.set_audit(events);
        for f in &set_aside {
            log.warn(
                "file_set_aside",
                &[
                    ("path", Val::S(&f.path.to_string_lossy())),
                    ("reason", Val::S(&f.reason)),
                    ("moved_to", Val::S(&f.moved_to.to_string_lossy())),
                    (
                        "action",
                        Val::S("a fresh file is used; check who made the old one"),
                    ),
                ],
            );
        }
        remove_stale_temp_files(dir.path(), log);
        if dir.tightened() {
            log.warn(
                "state_dir_tightened",
                &[
                    ("path", Val::S(&dir.path().to_string_lossy())),
                    ("mode", Val::S("0700")),
                ],
            );
        }
        // Snapshots are serialised and written on a thread of their own:
        // with thousands tracked a save takes milliseconds, and an exec
        // arriving meanwhile would wait for it.
        let saver = dir
            .try_clone()
            .and_then(|d| {
                save::Saver::start(d).map_err(|e| {
                    crate::store::StoreError::io("start the snapshot thread for", state_dir, e)
                })
            })
            .map_err(|e| format!("cannot start the state snapshot writer: {e}"))?;
        Ok(Persistence {
            instance: String::new(),
            dir,
            _lock: lock,
            started_ms: sys::realtime_ms(),
            base: Counters::default(),
            saved: None,
            last_save_ms: 0,
            last_error_ms: 0,
            save_disabled: false,
            audit_failing_since: None,
            audit_failure_runs: 0,
            saves: 0,
            save_failures: 0,
            save_failing: false,
            save_seconds: Default::default(),
            saver: Some(saver),
            save_in_flight: None,
        })
    }

    /// Loads the last snapshot and re-tracks every process that is still
    /// the same process; those that ended while reeve was down are
    /// recorded as exited. Nothing is moved or re-limited.
    /// Returns the identities restored and those that ended, with their
    /// rule's id; the daemon handles the ended ones as if it had seen them
    /// exit (a per-process job left empty is removed).
    pub fn restore(&mut self, d: &mut Discovery, log: &mut Logger) -> Restored {
        let now = sys::realtime_ms();
        let mut back = Restored::default();
        match State::load(&self.dir, now) {
            Loaded::Missing => {}
            Loaded::Ok(s) => {
                self.base = s.counters.clone();
                self.base.restarts = self.base.restarts.saturating_add(1);
                let since = match events_since(self.dir.path(), s.audit_seq) {
                    Ok(since) => since,
                    Err(why) => {
                        log.error(
                            "audit_log_unreadable",
                            &[
                                ("error", Val::S(&why)),
                                (
                                    "effect",
                                    Val::S("targets discovered after the last snapshot that ended while reeve was down get no exited event and their jobs no clean-up; the next scan finds those still running"),
                                ),
                            ],
                        );
                        SinceSnapshot::default()
                    }
                };
                let (mut restored, mut ended) = (0u64, 0u64);
                for p in s.processes.iter().filter(|p| p.exited_ms == 0) {
                    let rule = d.rule_id(&p.rule);
                    let outcome = d.restore(p.key(), rule, p.discovered_ms);
                    if outcome == Restore::Tracked {
                        restored += 1;
                        back.running.push((p.key(), rule));
                    } else if not_restored(&outcome, p.key(), &p.rule, log) {
                        // It runs but is not tracked: said above.
                    } else if since.exited.contains(&p.key()) {
                        // Its exit was logged after the last snapshot.
                        ended += 1;
                        back.ended.push((p.key(), rule));
                    } else {
                        ended += 1;
                        back.ended.push((p.key(), rule));
                        log.info(
                            "exited",
                            &[
                                ("pid", Val::U(p.pid.into())),
                                ("start_ticks", Val::U(p.start_ticks)),
                                ("rule", Val::S(&p.rule)),
                                ("comm", Val::S(&p.comm)),
                                ("reason", Val::S("ended while reeve was not running")),
                            ],
                        );
                    }
                }
                // Discovered after the snapshot and still running: tracked
                // again silently, not discovered a second time.
                // Discovered after the snapshot and ended since, unseen: its
                // exit is logged now, as for a process the snapshot held.
                let mut seen = std::collections::HashSet::new();
                for (key, rule_name, ts, comm) in &since.discovered {
                    if !seen.insert(*key) {
                        continue;
                    }
                    let rule = d.rule_id(rule_name);
                    if since.exited.contains(key) {
                        // Its exit is logged; the daemon that logged it may
                        // have died before cleaning up its job.
                        ended += 1;
                        back.ended.push((*key, rule));
                        continue;
                    }
                    let outcome = d.restore(*key, rule, *ts);
                    if outcome == Restore::Tracked {
                        restored += 1;
                        back.running.push((*key, rule));
                    } else if not_restored(&outcome, *key, rule_name, log) {
                        // It runs but is not tracked: said above.
                    } else if !d.tracked().get(key).is_some_and(|t| t.alive()) {
                        ended += 1;
                        back.ended.push((*key, rule));
                        log.info(
                            "exited",
                            &[
                                ("pid", Val::U(key.pid.into())),
                                ("start_ticks", Val::U(key.start_ticks)),
                                ("rule", Val::S(rule_name)),
                                ("comm", Val::S(comm)),
                                ("reason", Val::S("ended while reeve was not running")),
                            ],
                        );
                    }
                }
                log.info(
                    "state_loaded",
                    &[
                        ("saved_at_ms", Val::U(s.saved_at_ms)),
                        ("restored", Val::U(restored)),
                        ("ended", Val::U(ended)),
                    ],
                );
            }
            Loaded::SetAside { reason, moved_to } => log.warn(
                "state_set_aside",
                &[
                    ("reason", Val::S(&reason)),
                    ("moved_to", Val::S(&moved_to.display().to_string())),
                    (
                        "action",
                        Val::S("rebuilding from the governed groups and a full scan"),
                    ),
                ],
            ),
            Loaded::Unusable { reason } => {
                self.save_disabled = true;
                self.save_failing = true;
                log.error(
                    "state_unusable",
                    &[
                        ("reason", Val::S(&reason)),
                        (
                            "action",
                            Val::S("the file is left as it is and no new state is written; move it away and restart reeve"),
                        ),
                    ],
                );
            }
        }
        back
    }

    /// End-of-wakeup upkeep of the audit log: retry queued events (one
    /// try of the lock), commit everything appended in this wakeup with at
    /// most one fdatasync, and report a failure once per run of failures
    /// (on stderr only, so reports never crowd the queue or refill the
    /// disk) and its end once the queue has drained.
    pub fn tick(&mut self, log: &mut Logger) {
        let now = sys::realtime_ms();
        let Some(audit) = log.audit_mut() else {
            return;
        };
        if audit.pending() > 0 {
            audit.flush_pending();
        }
        audit.commit(now);
        let error = audit.take_error();
        let (pending, lost, refusals) = (audit.pending() as u64, audit.lost(), audit.refusals());
        match (error, self.audit_failing_since) {
            (Some(e), None) => {
                self.audit_failing_since = Some(now);
                self.audit_failure_runs += 1;
                log.error(
                    "audit_log_failed",
                    &[
                        ("error", Val::S(&e.to_string())),
                        ("pending", Val::U(pending)),
                        ("lost", Val::U(lost)),
                        ("failures", Val::U(self.audit_failure_runs)),
                        (
                            "action",
                            Val::S("events wait in memory and are retried every wakeup; this is said once until the log recovers"),
                        ),
                    ],
                );
            }
            (None, Some(since)) if pending == 0 => {
                self.audit_failing_since = None;
                log.info(
                    "audit_log_recovered",
                    &[
                        ("failed_for_ms", Val::U(now.saturating_sub(since))),
                        ("lost", Val::U(lost)),
                        ("refused_writes", Val::U(refusals)),
                        ("failures", Val::U(self.audit_failure_runs)),
                    ],
                );
            }
            // A failure in a run already reported is counted by the log
            // (refusals, sync failures); nothing to add.
            _ => {}
        }
    }

    /// Whether the audit log is in a run of failures.
    pub fn audit_failing(&self) -> bool {
        self.audit_failing_since.is_some()
    }

    /// At shutdown: land what is queued (waiting for the lock or for
    /// space, up to [`AUDIT_DRAIN_AT_EXIT`]) and commit it. Events that
    /// still cannot be written are counted in one error line.
    pub fn finish(&mut self, log: &mut Logger) {
        let deadline = std::time::Instant::now() + AUDIT_DRAIN_AT_EXIT;
        let Some(audit) = log.audit_mut() else {
            return;
        };
        while audit.pending() > 0 {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            let step = left.min(std::time::Duration::from_millis(100));
            if audit.flush_pending_within(step) == 0 && audit.pending() > 0 {
                // The lock was had but the disk refused: wait a little for
                // space rather than spin.
                std::thread::sleep(step.min(std::time::Duration::from_millis(50)));
            }
        }
        if let Err(e) = audit.sync() {
            let error = e.to_string();
            log.error("audit_log_failed", &[("error", Val::S(&error))]);
        }
        let Some(audit) = log.audit_mut() else {
            return;
        };
        let (pending, lost) = (audit.pending() as u64, audit.lost());
        let refused = log.audit_failures();
        if pending + lost + refused > 0 {
            log.error(
                "audit_events_lost",
                &[
                    ("pending", Val::U(pending)),
                    ("lost", Val::U(lost)),
                    ("refused", Val::U(refused)),
                    (
                        "reason",
                        Val::S("the audit log could not be written before reeve stopped (pending), its queue was full (lost), or it refused a malformed event (refused)"),
                    ),
                ],
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LogFormat, LogLevel};
    use crate::store::FsyncPolicy;
    use crate::tempdir::TempDir;

    #[test]
    fn a_stale_temp_file_that_cannot_be_removed_is_a_warning() {
        let t = TempDir::new("persist-temps");
        let dir = StateDir::open(&t.path().join("state")).unwrap();
        let stale = dir.path().join(format!(".{}.tmp.7.1", state::STATE_FILE));
        std::fs::write(&stale, b"{").unwrap();
        // A directory that holds a file under a temp name: remove_file
        // fails on it.
        let stuck = dir.path().join(format!(".{}.tmp.7.2", state::STATE_FILE));
        std::fs::create_dir(&stuck).unwrap();
        std::fs::write(stuck.join("x"), b"").unwrap();
        let mut log = Logger::new(LogFormat::Text, LogLevel::Error);
        let opts = LogOptions {
            fsync: FsyncPolicy::Never,
            ..LogOptions::default()
        };
        log.set_audit(EventLog::open(&dir, opts).unwrap());

        remove_stale_temp_files(dir.path(), &mut log);

        assert!(!stale.exists(), "the stale temp file is removed");
        assert!(stuck.exists());
        let events = std::fs::read_to_string(dir.path().join("events.jsonl")).unwrap();
        let warned: Vec<&str> = events
            .lines()
            .filter(|l| l.contains("\"temp_remove_failed\""))
            .collect();
        assert_eq!(warned.len(), 1, "{events}");
        assert!(warned[0].contains(".tmp.7.2"), "{events}");
    }
}
