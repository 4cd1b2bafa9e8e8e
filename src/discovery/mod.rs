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
//! recorded as exited; reeve never discovers itself or its descendants; all
//! tables are sized at construction and nothing grows afterwards.

pub mod matcher;
pub mod netlink;

use std::io;

use crate::config::Rule;
use crate::procfs::{self, Comm, ProcKey, ProcReader, ReadError, Stat};
use crate::sys;
use crate::table::{Refusal, SlotTable};

use matcher::{Facts, RuleSet, Verdict};
use netlink::{Event, ProcEvent};

/// Where a discovery came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Scan,
    Netlink,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Scan => "scan",
            Source::Netlink => "netlink",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanKind {
    /// Read every process's stat.
    Deep,
    /// Read only processes whose /proc inode is new.
    Steady,
}

impl ScanKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ScanKind::Deep => "deep",
            ScanKind::Steady => "steady",
        }
    }
}

/// A tracked process. `exited_ms` is 0 while it runs.
#[derive(Debug, Clone, Copy)]
pub struct Tracked {
    pub rule: u16,
    pub comm: Comm,
    pub ppid: u32,
    pub uid: u32,
    pub discovered_ms: u64,
    pub exited_ms: u64,
}

impl Tracked {
    pub fn alive(&self) -> bool {
        self.exited_ms == 0
    }
}

/// How a process ended, when the kernel told us (netlink exit event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

impl ExitStatus {
    /// Decodes the kernel's wait-status word.
    pub fn from_wait_status(raw: u32) -> ExitStatus {
        let sig = raw & 0x7f;
        if sig != 0 {
            ExitStatus::Signal(sig as i32)
        } else {
            ExitStatus::Code(((raw >> 8) & 0xff) as i32)
        }
    }
}

/// What one scan found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanReport {
    pub kind: ScanKind,
    /// Live tracked processes this scan saw, new ones included.
    pub found: u32,
    /// Processes discovered by this scan.
    pub new: u32,
    /// Live tracked processes after the scan.
    pub tracked: u32,
    /// Tracked processes whose exit this scan noticed.
    pub gone: u32,
    pub duration_us: u64,
}

/// Counters worth exporting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiscoveryStats {
    pub scans: u64,
    pub discovered: u64,
    pub exited: u64,
    /// Target identities refused because the slot table was full.
    pub refused: u64,
    /// Pids not indexed because the seen-set was full (parsed every scan).
    pub seen_overflow: u64,
    /// /proc reads that failed for a reason other than the process leaving.
    pub read_errors: u64,
}

/// Receives what discovery learns. The daemon logs and acts on it.
pub trait Sink {
    fn discovered(&mut self, key: ProcKey, t: &Tracked, rule: &str, source: Source);
    fn exited(&mut self, key: ProcKey, t: &Tracked, rule: &str, status: Option<ExitStatus>);
    fn already_tracked(&mut self, key: ProcKey, source: Source);
    fn refused(&mut self, key: ProcKey, rule: &str, why: Refusal);
}

/// What discovery remembers about every pid in /proc, target or not.
#[derive(Debug, Clone, Copy)]
struct Seen {
    ino: u64,
    start_ticks: u64,
    comm_hash: u32,
    epoch: u32,
    recheck: bool,
    tracked: bool,
    /// Matched but refused for capacity: retried every scan, reported once.
    refused: bool,
}

enum Outcome {
    Match { rule: usize, uid: u32 },
    TooYoung,
    NoMatch,
}

/// The rule index of a process tracked because it runs in a group reeve
/// governs, although no current rule names it.
pub const ADOPTED_RULE: u16 = u16::MAX;

/// Exited entries stay this long (for status and dedup) before their slot
/// may be reused by the bounded eviction scan.
pub const EXITED_RETENTION_MS: u64 = 10 * 60 * 1000;
/// Slots examined per eviction attempt.
const EVICT_SCAN: usize = 256;
/// Ancestors walked when checking whether a process descends from reeve.
const MAX_ANCESTRY: usize = 64;

pub struct Discovery {
    reader: ProcReader,
    rules: RuleSet,
    seen: SlotTable<u32, Seen>,
    tracked: SlotTable<ProcKey, Tracked>,
    batch: Box<[(u32, u64)]>,
    name_hits: Box<[bool]>,
    self_pid: u32,
    /// reeve's own start ticks: no process that started earlier can be
    /// its descendant, which bounds the ancestry walk.
    self_start: u64,
    epoch: u32,
    live: u32,
    cur: ScanReport,
    stats: DiscoveryStats,
}

/// The seen-set holds every pid on the host: four times the target capacity,
/// and never less than the default pid_max.
pub fn seen_capacity(capacity: usize) -> usize {
    capacity
        .saturating_mul(4)
        .clamp(32_768, crate::table::MAX_CAPACITY)
}

fn comm_hash(c: &Comm) -> u32 {
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
        let rules = RuleSet::new(rules);
        let self_pid = sys::getpid();
        let mut reader = reader;
        let self_start = reader.stat(self_pid).map_or(0, |s| s.start_ticks);
        Ok(Discovery {
            reader,
            name_hits: vec![false; rules.len()].into_boxed_slice(),
            rules,
            seen: SlotTable::with_capacity(seen_capacity(capacity)),
            tracked: SlotTable::with_capacity(capacity),
            batch: vec![(0, 0); procfs::PID_BATCH].into_boxed_slice(),
            self_pid,
            self_start,
            epoch: 0,
            live: 0,
            cur: ScanReport {
                kind: ScanKind::Deep,
                found: 0,
                new: 0,
                tracked: 0,
                gone: 0,
                duration_us: 0,
            },
            stats: DiscoveryStats::default(),
        })
    }

    /// Swaps in new rules (config reload). Tracked processes stay tracked;
    /// the next deep scan applies the new rules to everything else.
    pub fn set_rules(&mut self, rules: &[Rule]) {
        self.rules = RuleSet::new(rules);
        self.name_hits = vec![false; self.rules.len()].into_boxed_slice();
        for (_, e) in self.seen.iter_mut() {
            e.recheck = true;
        }
    }

    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    pub fn stats(&self) -> DiscoveryStats {
        self.stats
    }

    pub fn live(&self) -> u32 {
        self.live
    }

    pub fn tracked(&self) -> &SlotTable<ProcKey, Tracked> {
        &self.tracked
    }

    pub fn seen_len(&self) -> usize {
        self.seen.len()
    }

    pub fn reader(&mut self) -> &mut ProcReader {
        &mut self.reader
    }

    /// Tracks a process again after a restart, without a new `discovered`
    /// event, once /proc confirms it is the same process (pid and start
    /// time). `rule` is the rule's index, or [`ADOPTED_RULE`] for a process
    /// found in a governed group that no rule names. Returns false when the
    /// process is gone or its pid now belongs to another process.
    pub fn restore(&mut self, key: ProcKey, rule: u16, discovered_ms: u64) -> bool {
        let stat = match self.reader.stat(key.pid) {
            Ok(s) if s.start_ticks == key.start_ticks && !s.is_dead() => s,
            _ => return false,
        };
        if self.tracked.get(&key).is_some_and(|t| t.alive()) {
            return true;
        }
        let uid = self.reader.status_ids(key.pid).map_or(u32::MAX, |i| i.euid);
        let t = Tracked {
            rule,
            comm: stat.comm,
            ppid: stat.ppid,
            uid,
            discovered_ms,
            exited_ms: 0,
        };
        if self.tracked.insert(key, t).is_err() {
            self.stats.refused += 1;
            return false;
        }
        self.live += 1;
        true
    }

    /// One pass over /proc.
    pub fn scan(&mut self, kind: ScanKind, sink: &mut impl Sink) -> io::Result<ScanReport> {
        let t0 = sys::monotonic_ns();
        self.epoch = self.epoch.wrapping_add(1);
        self.cur = ScanReport {
            kind,
            found: 0,
            new: 0,
            tracked: 0,
            gone: 0,
            duration_us: 0,
        };
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
                if e.ino == ino && !e.recheck {
                    e.epoch = self.epoch;
                    if e.tracked {
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
        let same = prev.is_some_and(|e| e.start_ticks == key.start_ticks);
        let hash = comm_hash(&stat.comm);
        let changed = !same
            || source == Source::Netlink
            || prev.is_some_and(|e| e.comm_hash != hash || e.recheck);
        let is_tracked = self.tracked.get(&key).is_some_and(|t| t.alive());
        let mut entry = Seen {
            ino: ino.unwrap_or(match prev {
                Some(e) if same => e.ino,
                _ => 0,
            }),
            start_ticks: key.start_ticks,
            comm_hash: hash,
            epoch: self.epoch,
            recheck: false,
            tracked: is_tracked,
            refused: false,
        };
        let was_refused = same && prev.is_some_and(|e| e.refused);
        if stat.is_dead() {
            if is_tracked {
                self.exit_identity(key, None, sink);
                entry.tracked = false;
            }
        } else if is_tracked {
            if source == Source::Scan {
                self.cur.found += 1;
            }
            if changed && same {
                sink.already_tracked(key, source);
            }
        } else if changed {
            match self.evaluate(stat) {
                Outcome::Match { rule, uid } => {
                    entry.tracked = self.track(stat, rule, uid, source, was_refused, sink);
                    entry.refused = !entry.tracked;
                    entry.recheck = entry.refused;
                }
                Outcome::TooYoung => entry.recheck = true,
                Outcome::NoMatch => {}
            }
        } else if let Some(e) = prev {
            entry.recheck = e.recheck;
        }
        self.remember(pid, entry);
    }

    fn remember(&mut self, pid: u32, entry: Seen) {
        if let Some(e) = self.seen.get_mut(&pid) {
            *e = entry;
        } else if self.seen.insert(pid, entry).is_err() {
            self.stats.seen_overflow += 1;
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
        let t = Tracked {
            rule: rule as u16,
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
                    !v.alive()
                })
                .is_some()
        {
            result = self.tracked.insert(key, t);
        }
        match result {
            Ok(()) => {
                self.live += 1;
                self.cur.new += 1;
                if source == Source::Scan {
                    self.cur.found += 1;
                }
                self.stats.discovered += 1;
                sink.discovered(key, &t, self.rules.name(rule), source);
                true
            }
            Err(why) => {
                if !refused_before {
                    self.stats.refused += 1;
                    sink.refused(key, self.rules.name(rule), why);
                }
                false
            }
        }
    }

    fn exit_identity(&mut self, key: ProcKey, status: Option<ExitStatus>, sink: &mut impl Sink) {
        let now = sys::realtime_ms().max(1);
        let Some(t) = self.tracked.get_mut(&key) else {
            return;
        };
        if !t.alive() {
            return;
        }
        t.exited_ms = now;
        let t = *t;
        self.live = self.live.saturating_sub(1);
        self.cur.gone += 1;
        self.stats.exited += 1;
        if let Some(e) = self.seen.get_mut(&key.pid) {
            if e.start_ticks == key.start_ticks {
                e.tracked = false;
            }
        }
        sink.exited(key, &t, self.rules.name(t.rule as usize), status);
    }

    /// Pids this scan did not see are gone; tracked ones have exited.
    fn sweep(&mut self, sink: &mut impl Sink) {
        let epoch = self.epoch;
        let mut ended = 0usize;
        // Collect ended identities into the reusable batch buffer; if more
        // ended than it holds, the remainder is caught by the next sweep
        // because their entries are kept until reported.
        let cap = self.batch.len();
        let batch = &mut self.batch;
        self.seen.retain(|&pid, e| {
            if e.epoch == epoch {
                return true;
            }
            if e.tracked {
                if ended == cap {
                    return true;
                }
                batch[ended] = (pid, e.start_ticks);
                ended += 1;
            }
            false
        });
        for i in 0..ended {
            let (pid, start_ticks) = self.batch[i];
            self.exit_identity(ProcKey { pid, start_ticks }, None, sink);
        }
    }

    /// Deep scans also check every live tracked identity directly, so one
    /// that the seen-set could not index is still noticed when it ends.
    fn reconcile(&mut self, sink: &mut impl Sink) {
        if self.stats.seen_overflow == 0 {
            return;
        }
        let cap = self.batch.len();
        let mut n = 0;
        for (k, t) in self.tracked.iter() {
            if t.alive() && n < cap {
                self.batch[n] = (k.pid, k.start_ticks);
                n += 1;
            }
        }
        for i in 0..n {
            let (pid, start_ticks) = self.batch[i];
            let key = ProcKey { pid, start_ticks };
            let alive = matches!(self.reader.stat(pid), Ok(s) if s.start_ticks == start_ticks && !s.is_dead());
            if !alive {
                self.exit_identity(key, None, sink);
            }
        }
    }

    /// Releases the slots of identities that exited long ago, examining a
    /// bounded number of slots per call.
    pub fn evict_expired(&mut self, now_ms: u64) -> usize {
        let mut evicted = 0;
        while self
            .tracked
            .evict_one(EVICT_SCAN, |_, t| {
                !t.alive() && now_ms.saturating_sub(t.exited_ms) > EXITED_RETENTION_MS
            })
            .is_some()
        {
            evicted += 1;
            if evicted >= 16 {
                break;
            }
        }
        evicted
    }

    fn evaluate(&mut self, stat: &Stat) -> Outcome {
        let pid = stat.pid;
        let comm = stat.comm.as_bytes();
        let mut exe_buf = [0u8; 256];
        let mut exe_len = None;
        let user_process = !stat.is_kernel_thread();
        if user_process && self.rules.needs_exe() {
            match self.reader.exe(pid) {
                Ok(Some(target)) => {
                    let base = procfs::basename(target);
                    let n = base.len().min(exe_buf.len());
                    exe_buf[..n].copy_from_slice(&base[..n]);
                    exe_len = Some(n);
                }
                Ok(None) => {}
                Err(ReadError::Gone) => return Outcome::NoMatch,
                Err(_) => self.stats.read_errors += 1,
            }
        }
        let exe_base = exe_len.map(|n| &exe_buf[..n]);
        let mut any = false;
        let mut want_cmdline = false;
        for i in 0..self.rules.len() {
            let hit = self.rules.matches_without_cmdline(i, comm, exe_base);
            self.name_hits[i] = hit;
            any |= hit;
            want_cmdline |= !hit && self.rules.has_cmdline_matchers(i);
        }
        if want_cmdline && user_process {
            match self.reader.cmdline(pid) {
                Ok(cmdline) => {
                    for i in 0..self.rules.len() {
                        if !self.name_hits[i] && self.rules.matches_cmdline(i, cmdline) {
                            self.name_hits[i] = true;
                            any = true;
                        }
                    }
                }
                Err(ReadError::Gone) => return Outcome::NoMatch,
                Err(_) => self.stats.read_errors += 1,
            }
        }
        if !any {
            return Outcome::NoMatch;
        }
        self.apply_filters(stat)
    }

    fn apply_filters(&mut self, stat: &Stat) -> Outcome {
        let pid = stat.pid;
        let mut needs = matcher::Needs::default();
        for i in 0..self.rules.len() {
            if self.name_hits[i] {
                let n = self.rules.needs(i);
                needs.uid |= n.uid;
                needs.parent_comm |= n.parent_comm;
                needs.cwd |= n.cwd;
            }
        }
        let mut uid = None;
        if needs.uid {
            match self.reader.status_ids(pid) {
                Ok(ids) => uid = Some(ids.euid),
                Err(ReadError::Gone) => return Outcome::NoMatch,
                Err(_) => {
                    self.stats.read_errors += 1;
                    return Outcome::NoMatch;
                }
            }
        }
        let parent_comm = if needs.parent_comm {
            self.reader.stat(stat.ppid).ok().map(|p| p.comm)
        } else {
            None
        };
        let age_ms = self.reader.age_ms(stat.start_ticks);
        let mut winner = None;
        let mut too_young = false;
        {
            let cwd = if needs.cwd {
                match self.reader.cwd(pid) {
                    Ok(c) => c,
                    Err(ReadError::Gone) => return Outcome::NoMatch,
                    Err(_) => None,
                }
            } else {
                None
            };
            let facts = Facts {
                uid: uid.unwrap_or(u32::MAX),
                ppid: stat.ppid,
                parent_comm,
                age_ms,
                cwd,
            };
            for i in 0..self.rules.len() {
                if !self.name_hits[i] {
                    continue;
                }
                match self.rules.verdict(i, &facts) {
                    Verdict::Pass => {
                        winner = Some(i);
                        break;
                    }
                    Verdict::TooYoung { .. } => too_young = true,
                    Verdict::Fail => {}
                }
            }
        }
        let Some(rule) = winner else {
            return if too_young {
                Outcome::TooYoung
            } else {
                Outcome::NoMatch
            };
        };
        if stat.start_ticks >= self.self_start && self.descends_from_self(stat.ppid) {
            return Outcome::NoMatch;
        }
        let uid = match uid {
            Some(u) => u,
            None => match self.reader.status_ids(pid) {
                Ok(ids) => ids.euid,
                Err(ReadError::Gone) => return Outcome::NoMatch,
                Err(_) => u32::MAX,
            },
        };
        Outcome::Match { rule, uid }
    }

    /// True when `ppid` is reeve or one of its descendants. When reeve is
    /// pid 1 every orphan is its child, so only reeve itself is excluded.
    /// The walk stops at the first ancestor that started before reeve: a
    /// descendant's whole chain up to reeve started after reeve did.
    fn descends_from_self(&mut self, mut ppid: u32) -> bool {
        if self.self_pid == 1 {
            return false;
        }
        for _ in 0..MAX_ANCESTRY {
            if ppid == self.self_pid {
                return true;
            }
            if ppid <= 1 {
                return false;
            }
            match self.reader.stat(ppid) {
                Ok(s) if s.start_ticks >= self.self_start => ppid = s.ppid,
                _ => return false,
            }
        }
        false
    }
}

#[cfg(test)]
mod tests;
