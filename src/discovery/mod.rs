//! Discovery: finding the processes the rules name, once per identity.
//!
//! Two sources feed one engine. Scans walk /proc: a *deep* scan reads the
//! stat of every process (the cold start, polling mode, and the rescan after
//! a netlink overrun); a *steady* scan reads only pids whose /proc inode it
//! has not seen, relying on netlink exec events for re-execs. Netlink
//! events ([`netlink`]) report exec, comm changes and exits as they happen.
//!
//! Invariants: a process is discovered at most once per [`ProcKey`]; a pid
//! whose start time changed is a new process and the old identity is
//! recorded as exited; reeve never discovers itself or its descendants; the
//! seen-set and the tracked table are sized at construction and never grow
//! (the rule-id table changes only at a reload or a restore, bounded by the
//! rules something refers to). A tracked
//! identity's state changes only through [`lifecycle::Life::step`], and its
//! rule is a [`RuleId`] that a reload does not change.

mod ending;
mod evaluate;
pub mod filter;
mod kernelset;
pub mod lifecycle;
pub mod matcher;
pub mod netlink;
mod restore;
mod ruleid;
mod types;

use std::io;

use crate::config::Rule;
use crate::procfs::{self, ProcKey, ProcReader, ReadError, Stat};
use crate::sys;
use crate::table::{Refusal, SlotTable};

use evaluate::{NameHits, Outcome};
pub use lifecycle::{Illegal, Life, Step};
use matcher::RuleSet;
use netlink::{Event, ProcEvent};
pub use ruleid::{RuleId, RuleIdsExhausted, RuleNames};
pub use types::{DiscoveryStats, ExitStatus, Restore, ScanKind, ScanReport, Sink, Source, Tracked};

/// What discovery remembers about every pid in /proc, target or not: 32
/// bytes, so a seen-set for every pid of a big host stays small.
#[derive(Debug, Clone, Copy)]
struct Seen {
    ino: u64,
    start_ticks: u64,
    /// The rules whose names matched (valid when `has_hits`), kept while
    /// the identity is evaluated again (too young, refused) so /proc is not
    /// read for them twice.
    hits: NameHits,
    comm_hash: u32,
    /// The scan that last saw it. Only equality with the current scan's
    /// epoch matters (every entry a scan did not see is swept at its end),
    /// so a wrapping byte is enough.
    epoch: u8,
    claim: Claim,
    /// The rules changed since this pid was evaluated.
    stale_rules: bool,
    has_hits: bool,
}

/// What the rules made of a seen pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Claim {
    /// No rule claims it.
    None,
    /// Tracked (the tracked table holds its lifecycle).
    Tracked,
    /// A rule matched except for `min_age`: evaluated again every scan.
    TooYoung,
    /// Matched but refused for capacity: retried every scan, reported once.
    Refused,
}

impl Seen {
    fn hits(&self) -> Option<NameHits> {
        self.has_hits.then_some(self.hits)
    }

    fn set_hits(&mut self, hits: Option<NameHits>) {
        self.has_hits = hits.is_some();
        self.hits = hits.unwrap_or(0);
    }

    /// Evaluated again even when nothing about it changed.
    fn recheck(&self) -> bool {
        self.stale_rules || matches!(self.claim, Claim::TooYoung | Claim::Refused)
    }
}

/// The rule id of a process tracked because it runs in a group reeve
/// governs, although no current rule names it.
pub const ADOPTED_RULE: RuleId = RuleId::ADOPTED;

/// Exited entries stay this long (for status and dedup) before their slot
/// may be reused by the bounded eviction scan.
pub const EXITED_RETENTION_MS: u64 = 10 * 60 * 1000;
/// Slots examined per eviction attempt.
const EVICT_SCAN: usize = 256;

pub struct Discovery {
    reader: ProcReader,
    rules: RuleSet,
    /// Stable ids of every rule something may still refer to.
    names: RuleNames,
    /// `ids[i]`: the id of the current rule at index `i`.
    ids: Box<[RuleId]>,
    seen: SlotTable<u32, Seen>,
    tracked: SlotTable<ProcKey, Tracked>,
    batch: Box<[(u32, u64)]>,
    name_hits: Box<[bool]>,
    self_pid: u32,
    /// reeve's own start ticks: no process that started earlier can be
    /// its descendant, which bounds the ancestry walk.
    self_start: u64,
    epoch: u8,
    live: u32,
    /// Some seen pid waits to be evaluated again (too young, refused, or
    /// rules changed): the next scan must come at the polling pace.
    rechecks: bool,
    /// A `seen_full` report was made and no scan since has fit.
    seen_full: bool,
    /// This scan met a pid the seen-set could not hold.
    overflowed: bool,
    cur: ScanReport,
    stats: DiscoveryStats,
    kernel: kernelset::KernelSet,
}

/// The seen-set's hard maximum, whatever the host allows.
pub const SEEN_MAX: usize = crate::table::MAX_CAPACITY;
/// The seen-set's size when the host's limits cannot be read: the kernel's
/// default pid_max.
const DEFAULT_HOST_PIDS: usize = 32_768;
/// The smallest seen-set.
const SEEN_MIN: usize = 1024;

/// The seen-set holds every process on the host: as many as the host can
/// run (`host_pids`, see [`host_pid_limit`]), at least four times the
/// target capacity, within [`SEEN_MAX`]. Sized once at start; a host that
/// later holds more is an event (`seen_set_full`) and a counter.
pub fn seen_capacity(capacity: usize, host_pids: Option<usize>) -> usize {
    capacity
        .saturating_mul(4)
        .max(host_pids.unwrap_or(DEFAULT_HOST_PIDS))
        .clamp(SEEN_MIN, SEEN_MAX)
}

/// How many processes this host can hold: the smaller of kernel.pid_max
/// and kernel.threads-max (every process is at least one thread). `None`
/// when neither can be read.
pub fn host_pid_limit() -> Option<usize> {
    let read =
        |path: &str| -> Option<usize> { std::fs::read_to_string(path).ok()?.trim().parse().ok() };
    let pid_max = read("/proc/sys/kernel/pid_max");
    let threads_max = read("/proc/sys/kernel/threads-max");
    match (pid_max, threads_max) {
        (Some(p), Some(t)) => Some(p.min(t)),
        (p, t) => p.or(t),
    }
}

fn comm_hash(c: &procfs::Comm) -> u32 {
    // FNV-1a: a stable fingerprint to notice that a comm changed.
    c.as_bytes().iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

impl Discovery {
    pub fn new(rules: &[Rule], capacity: usize) -> io::Result<Discovery> {
        Discovery::with_reader(ProcReader::open()?, rules, capacity)
    }

    pub fn with_reader(
        reader: ProcReader,
        rules: &[Rule],
        capacity: usize,
    ) -> io::Result<Discovery> {
        let seen = seen_capacity(capacity, host_pid_limit());
        Discovery::with_sizes(reader, rules, capacity, seen)
    }

    /// As [`Discovery::with_reader`], with the seen-set's size given.
    pub fn with_sizes(
        reader: ProcReader,
        rules: &[Rule],
        capacity: usize,
        seen_capacity: usize,
    ) -> io::Result<Discovery> {
        let mut names = RuleNames::default();
        let rule_names: Vec<&str> = rules.iter().map(|r| r.name.as_str()).collect();
        let ids = names
            .set_current(&rule_names, |_| false)
            .map_err(|e| io::Error::other(e.to_string()))?;
        let rules = RuleSet::new(rules);
        let self_pid = sys::getpid();
        let mut reader = reader;
        let self_start = reader.stat(self_pid).map_or(0, |s| s.start_ticks);
        Ok(Discovery {
            reader,
            name_hits: vec![false; rules.len()].into_boxed_slice(),
            rules,
            names,
            ids: ids.into_boxed_slice(),
            seen: SlotTable::with_capacity(seen_capacity),
            tracked: SlotTable::with_capacity(capacity),
            batch: vec![(0, 0); procfs::PID_BATCH].into_boxed_slice(),
            self_pid,
            self_start,
            epoch: 0,
            live: 0,
            rechecks: false,
            seen_full: false,
            overflowed: false,
            cur: ScanReport::empty(ScanKind::Deep),
            stats: DiscoveryStats::default(),
            kernel: kernelset::KernelSet::new(),
        })
    }

    /// Swaps in new rules (config reload). Tracked processes stay tracked
    /// under their rule's id, whatever its new place in the list; a rule
    /// the new list lacks keeps its name for them but no longer resolves
    /// ([`Discovery::rule_index`] is `None`). `queued` are the ids the
    /// caller still holds (work queued for later), kept alive like tracked
    /// ones so a freed id is never reused under them. The next deep scan
    /// applies the new rules to everything else. On error nothing changed.
    pub fn set_rules(
        &mut self,
        rules: &[Rule],
        queued: impl IntoIterator<Item = RuleId>,
    ) -> Result<(), RuleIdsExhausted> {
        let rule_names: Vec<&str> = rules.iter().map(|r| r.name.as_str()).collect();
        let mut in_use: std::collections::HashSet<RuleId> = queued.into_iter().collect();
        in_use.extend(self.tracked.iter().map(|(_, t)| t.rule));
        let ids = self
            .names
            .set_current(&rule_names, |id| in_use.contains(&id))?;
        self.ids = ids.into_boxed_slice();
        self.rules = RuleSet::new(rules);
        self.name_hits = vec![false; self.rules.len()].into_boxed_slice();
        for (_, e) in self.seen.iter_mut() {
            e.stale_rules = true;
            e.set_hits(None);
        }
        self.rechecks = true;
        Ok(())
    }

    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// The name a rule id stands for, also for a rule a reload removed.
    pub fn rule_name(&self, id: RuleId) -> &str {
        self.names.name(id)
    }

    /// The rule's index in the running config's `targets`, or `None` for a
    /// rule a reload removed and for [`RuleId::ADOPTED`].
    pub fn rule_index(&self, id: RuleId) -> Option<usize> {
        self.names.current(id)
    }

    /// The id of the rule called `name` (a name from a snapshot or the
    /// audit log, which may belong to a rule no longer configured).
    /// [`RuleId::ADOPTED`] for the adopted marker or when no id is left.
    pub fn rule_id(&mut self, name: &str) -> RuleId {
        if name.is_empty() || name == ruleid::ADOPTED_NAME {
            return RuleId::ADOPTED;
        }
        self.names.intern(name).unwrap_or(RuleId::ADOPTED)
    }

    pub fn stats(&self) -> DiscoveryStats {
        self.stats
    }

    pub fn live(&self) -> u32 {
        self.live
    }

    /// True when a seen process waits for a scan to be evaluated again (a
    /// target younger than its `min_age`, one refused for capacity, or any
    /// process after a rule change). Netlink sends no event when a process
    /// grows old enough, so only a scan finds it: the daemon keeps scanning
    /// at `scan_interval` while this holds, and at the longer
    /// `rescan_interval` otherwise.
    pub fn rechecks_pending(&self) -> bool {
        self.rechecks
    }

    pub fn tracked(&self) -> &SlotTable<ProcKey, Tracked> {
        &self.tracked
    }

    pub fn seen_len(&self) -> usize {
        self.seen.len()
    }

    /// How many pids the seen-set can hold.
    pub fn seen_capacity(&self) -> usize {
        self.seen.capacity()
    }

    pub fn reader(&mut self) -> &mut ProcReader {
        &mut self.reader
    }

    /// Takes one lifecycle step for a tracked identity (governance marks
    /// it pending, governed, adopted or released). A step its state does
    /// not allow changes nothing and is counted.
    pub fn mark(&mut self, key: ProcKey, step: Step) -> Result<Life, Illegal> {
        let Some(t) = self.tracked.get_mut(&key) else {
            self.stats.illegal_steps += 1;
            return Err(Illegal {
                from: Life::Seen,
                step,
            });
        };
        match t.life.step(step) {
            Ok(next) if next.alive() => {
                t.life = next;
                Ok(next)
            }
            // Exit and eviction belong to discovery, which also keeps the
            // live count and tells the sink.
            Ok(_) => {
                self.stats.illegal_steps += 1;
                Err(Illegal { from: t.life, step })
            }
            Err(e) => {
                self.stats.illegal_steps += 1;
                Err(e)
            }
        }
    }

    /// One pass over /proc.
    pub fn scan(&mut self, kind: ScanKind, sink: &mut impl Sink) -> io::Result<ScanReport> {
        let t0 = sys::monotonic_ns();
        self.epoch = self.epoch.wrapping_add(1);
        self.cur = ScanReport::empty(kind);
        // Recomputed by this scan: every entry that still waits is visited
        // and remembered again.
        self.rechecks = false;
        self.overflowed = false;
        self.reader.rewind_pids()?;
        loop {
            let n = self.reader.next_pid_batch(&mut self.batch)?;
            if n == 0 {
                break;
            }
            for i in 0..n {
                let (pid, ino) = self.batch[i];
                self.visit(pid, ino, kind, sink);
            }
        }
        self.sweep(sink);
        // A whole scan that fit ends the episode: a later overflow is
        // reported again.
        if !self.overflowed {
            self.seen_full = false;
        }
        if kind == ScanKind::Deep {
            self.reconcile(sink);
        }
        self.stats.scans += 1;
        self.cur.tracked = self.live;
        self.cur.duration_us = sys::monotonic_ns().saturating_sub(t0) / 1000;
        Ok(self.cur)
    }

    fn visit(&mut self, pid: u32, ino: u64, kind: ScanKind, sink: &mut impl Sink) {
        if pid == self.self_pid {
            return;
        }
        if kind == ScanKind::Steady {
            if let Some(e) = self.seen.get_mut(&pid) {
                if e.ino == ino && !e.recheck() {
                    e.epoch = self.epoch;
                    if e.claim == Claim::Tracked {
                        self.cur.found += 1;
                    }
                    return;
                }
            }
        }
        match self.reader.stat(pid) {
            Ok(stat) => self.observe(&stat, Some(ino), Source::Scan, sink),
            Err(ReadError::Gone) => {}
            Err(_) => self.stats.read_errors += 1,
        }
    }

    /// Acts on one process event from the netlink proc connector.
    pub fn handle_event(&mut self, ev: &Event, sink: &mut impl Sink) {
        match ev.kind {
            ProcEvent::Exec { tgid, .. } => self.probe(tgid, sink),
            ProcEvent::Comm { pid, tgid, .. } if pid == tgid => self.probe(tgid, sink),
            ProcEvent::Fork {
                parent_tgid,
                child_pid,
                child_tgid,
                // A forked child runs its parent's image: it can only be a
                // target if the parent is one. Everything else is left to exec
                // events and the rescan.
            } if child_pid == child_tgid && self.live_key(parent_tgid).is_some() => {
                self.probe(child_tgid, sink);
            }
            ProcEvent::Exit {
                pid,
                tgid,
                exit_code,
                ..
            } if pid == tgid => {
                let Some(key) = self.live_key(pid) else {
                    return;
                };
                // The leader thread can exit while other threads run on;
                // only a dead or replaced process has ended.
                let still_running = matches!(
                    self.reader.stat(pid),
                    Ok(s) if s.start_ticks == key.start_ticks && !s.is_dead()
                );
                if !still_running {
                    let status = ExitStatus::from_wait_status(exit_code);
                    self.exit_identity(key, Some(status), sink);
                }
            }
            _ => {}
        }
    }

    /// Evaluates one pid now (netlink exec/comm/fork).
    fn probe(&mut self, pid: u32, sink: &mut impl Sink) {
        if pid == self.self_pid {
            return;
        }
        match self.reader.stat(pid) {
            Ok(stat) => self.observe(&stat, None, Source::Netlink, sink),
            Err(ReadError::Gone) => {}
            Err(_) => self.stats.read_errors += 1,
        }
    }

    fn live_key(&self, pid: u32) -> Option<ProcKey> {
        self.tracked.find_pid(pid, |_, t| t.alive())
    }

    /// The core: given a fresh stat of `stat.pid`, update what we know and
    /// discover it if a rule matches.
    fn observe(&mut self, stat: &Stat, ino: Option<u64>, source: Source, sink: &mut impl Sink) {
        let pid = stat.pid;
        let key = stat.key();
        let prev = self.seen.get(&pid).copied();
        // A live identity under this pid with another start time has ended:
        // the pid was reused.
        if let Some(old) = self
            .tracked
            .find_pid(pid, |k, t| t.alive() && k.start_ticks != key.start_ticks)
        {
            self.exit_identity(old, None, sink);
        }
        let same = prev.filter(|e| e.start_ticks == key.start_ticks);
        let hash = comm_hash(&stat.comm);
        // A netlink event (exec, comm) or a new comm may mean a new image:
        // what the names matched is no longer known.
        let same_image = source == Source::Scan && same.is_some_and(|e| e.comm_hash == hash);
        let changed = !matches!(same, Some(e) if same_image && !e.recheck());
        let is_tracked = self.tracked.get(&key).is_some_and(|t| t.alive());
        let mut entry = Seen {
            ino: ino.unwrap_or(same.map_or(0, |e| e.ino)),
            start_ticks: key.start_ticks,
            comm_hash: hash,
            epoch: self.epoch,
            claim: if is_tracked {
                Claim::Tracked
            } else {
                Claim::None
            },
            stale_rules: false,
            hits: 0,
            has_hits: false,
        };
        if stat.is_dead() {
            if is_tracked {
                self.exit_identity(key, None, sink);
                entry.claim = Claim::None;
            }
        } else if is_tracked {
            if source == Source::Scan {
                self.cur.found += 1;
            }
            if changed && same.is_some() {
                sink.already_tracked(key, source);
            }
        } else if changed {
            let known = same.filter(|_| same_image).and_then(|e| e.hits());
            let (outcome, hits) = self.evaluate(stat, known);
            match outcome {
                Outcome::Match { rule, uid } => {
                    let refused_before = same.is_some_and(|e| e.claim == Claim::Refused);
                    if self.track(stat, rule, uid, source, refused_before, sink) {
                        entry.claim = Claim::Tracked;
                    } else {
                        entry.claim = Claim::Refused;
                        entry.set_hits(hits);
                    }
                }
                Outcome::TooYoung => {
                    entry.claim = Claim::TooYoung;
                    entry.set_hits(hits);
                }
                Outcome::NoMatch => {}
            }
        } else if let Some(e) = same {
            entry.set_hits(e.hits());
        }
        self.remember(pid, entry, sink);
    }

    fn remember(&mut self, pid: u32, entry: Seen, sink: &mut impl Sink) {
        self.rechecks |= entry.recheck();
        if let Some(e) = self.seen.get_mut(&pid) {
            *e = entry;
        } else if self.seen.insert(pid, entry).is_err() {
            // The pid is read again by every scan, and an exit of a
            // tracked one is found by the deep scan's reconcile.
            self.stats.seen_overflow += 1;
            self.overflowed = true;
            if !self.seen_full {
                self.seen_full = true;
                sink.seen_full(self.seen.capacity(), self.seen.len());
            }
        }
    }

    fn track(
        &mut self,
        stat: &Stat,
        rule: usize,
        uid: u32,
        source: Source,
        refused_before: bool,
        sink: &mut impl Sink,
    ) -> bool {
        let key = stat.key();
        let Some(&id) = self.ids.get(rule) else {
            return false;
        };
        let Ok(life) = Life::Seen.step(Step::Discover) else {
            return false;
        };
        let t = Tracked {
            rule: id,
            life,
            comm: stat.comm,
            ppid: stat.ppid,
            uid,
            discovered_ms: sys::realtime_ms(),
            exited_ms: 0,
        };
        let mut result = self.tracked.insert(key, t);
        if result == Err(Refusal::Full)
            && self
                .tracked
                .evict_one(self.tracked.capacity().min(EVICT_SCAN * 16), |_, v| {
                    v.life.step(Step::Evict).is_ok()
                })
                .is_some()
        {
            result = self.tracked.insert(key, t);
        }
        match result {
            Ok(()) => {
                self.live += 1;
                self.kernel.joined(key);
                self.cur.new += 1;
                if source == Source::Scan {
                    self.cur.found += 1;
                }
                self.stats.discovered += 1;
                sink.discovered(key, &t, self.names.name(id), source);
                true
            }
            Err(why) => {
                if !refused_before {
                    self.stats.refused += 1;
                    sink.refused(key, self.names.name(id), why);
                }
                false
            }
        }
    }
}

#[cfg(test)]
mod tests;
