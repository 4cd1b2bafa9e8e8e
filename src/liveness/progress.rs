//! The progress watchdog: hung-encoder detection without instrumentation.
//!
//! A watched process makes progress when its CPU time (utime + stime of
//! /proc/<pid>/stat) or its I/O counters (rchar + wchar of /proc/<pid>/io)
//! move. One that has made none for its rule's `stall_after`, while not
//! stopped (state T or t: a stop by a signal or a debugger is not a hang),
//! is *stalled*; the next progress makes it *resumed*. Each stall run gives
//! exactly one `Stalled` and, if it ends, one `Resumed`.
//!
//! Invariant: bounded work per tick whatever the number of processes. The
//! watch list is preallocated to the tracked table's capacity and sampled
//! by a rotating cursor, at most [`SAMPLES_PER_TICK`] processes per tick of
//! [`TICK`]; so the worst detection latency is `stall_after` plus one full
//! sampling round (`ceil(watched / SAMPLES_PER_TICK)` ticks). Reads go
//! through the daemon's [`ProcReader`] (buffers allocated once). A process
//! whose pid now names another identity, or that is gone, leaves the list
//! at its next sample, so a recycled pid is never judged for the old one.

use std::time::Duration;

use crate::discovery::RuleId;
use crate::procfs::{ProcKey, ProcReader, ReadError};

/// How often the watchdog samples.
pub const TICK: Duration = Duration::from_millis(250);
/// The most processes sampled per tick (two small /proc reads each).
pub const SAMPLES_PER_TICK: usize = 256;

/// Where a watched process stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Added, not sampled yet: the first sample is the baseline.
    New,
    Progressing,
    Stalled,
}

#[derive(Debug, Clone, Copy)]
struct Watch {
    key: ProcKey,
    rule: RuleId,
    stall_after_ns: u64,
    cpu_ticks: u64,
    io_bytes: u64,
    /// Whether `io_bytes` is from the last sample (it is not read when the
    /// CPU time moved: that alone is progress).
    io_fresh: bool,
    /// When the counters last moved (or the process was last stopped).
    moved_ns: u64,
    phase: Phase,
}

/// What a sample found out about one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No progress for `idle`, the rule's threshold being `stall_after`.
    Stalled {
        key: ProcKey,
        rule: RuleId,
        idle: Duration,
        stall_after: Duration,
    },
    /// Progress again after a stall that lasted `stalled_for` (from the
    /// last progress seen).
    Resumed {
        key: ProcKey,
        rule: RuleId,
        stalled_for: Duration,
    },
}

/// Counters for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProgressStats {
    pub samples: u64,
    pub stalls: u64,
    pub resumes: u64,
    /// Processes not watched because the list was full.
    pub refused: u64,
    /// /proc reads that failed for a reason other than the process being
    /// gone (the sample counts as no progress).
    pub read_errors: u64,
}

/// The watch list and its sampling cursor.
pub struct Watchdog {
    watches: Vec<Watch>,
    cursor: usize,
    next_tick_ns: u64,
    stats: ProgressStats,
}

impl Watchdog {
    /// A watchdog that can watch `capacity` processes (the tracked table's
    /// capacity: nothing else can be watched).
    pub fn new(capacity: usize) -> Watchdog {
        Watchdog {
            watches: Vec::with_capacity(capacity),
            cursor: 0,
            next_tick_ns: 0,
            stats: ProgressStats::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.watches.len()
    }

    pub fn is_empty(&self) -> bool {
        self.watches.is_empty()
    }

    pub fn stats(&self) -> ProgressStats {
        self.stats
    }

    /// Starts watching `key` with its rule's threshold. False (and counted)
    /// when the list is full; a key already watched is not added twice.
    pub fn watch(
        &mut self,
        key: ProcKey,
        rule: RuleId,
        stall_after: Duration,
        now_ns: u64,
    ) -> bool {
        if self.watches.iter().any(|w| w.key == key) {
            return true;
        }
        if self.watches.len() == self.watches.capacity() {
            self.stats.refused += 1;
            return false;
        }
        self.watches.push(Watch {
            key,
            rule,
            stall_after_ns: u64::try_from(stall_after.as_nanos()).unwrap_or(u64::MAX),
            cpu_ticks: 0,
            io_bytes: 0,
            io_fresh: false,
            moved_ns: now_ns,
            phase: Phase::New,
        });
        true
    }

    /// Stops watching every process of `rule` (a reload removed or changed
    /// its `stall_after`); the daemon then watches again what still applies.
    pub fn forget_rule(&mut self, rule: RuleId) {
        self.watches.retain(|w| w.rule != rule);
        self.cursor = 0;
    }

    /// When the next tick is due (monotonic ns); `None` with nothing to
    /// watch, so an idle daemon does not wake for the watchdog.
    pub fn deadline_ns(&self) -> Option<u64> {
        (!self.watches.is_empty()).then_some(self.next_tick_ns)
    }

    /// Samples the next [`SAMPLES_PER_TICK`] processes if a tick is due,
    /// passing each stall or resume to `verdict`. Returns how many were
    /// sampled.
    pub fn tick(
        &mut self,
        now_ns: u64,
        reader: &mut ProcReader,
        verdict: impl FnMut(Verdict),
    ) -> usize {
        if self.watches.is_empty() || now_ns < self.next_tick_ns {
            return 0;
        }
        self.next_tick_ns = now_ns.saturating_add(TICK.as_nanos() as u64);
        self.sample(now_ns, SAMPLES_PER_TICK, reader, verdict)
    }

    /// Samples up to `budget` processes from the cursor on.
    pub fn sample(
        &mut self,
        now_ns: u64,
        budget: usize,
        reader: &mut ProcReader,
        mut verdict: impl FnMut(Verdict),
    ) -> usize {
        let mut left = budget.min(self.watches.len());
        let mut sampled = 0;
        while left > 0 && !self.watches.is_empty() {
            left -= 1;
            if self.cursor >= self.watches.len() {
                self.cursor = 0;
            }
            let i = self.cursor;
            sampled += 1;
            self.stats.samples += 1;
            match self.sample_one(i, now_ns, reader) {
                // Gone or another identity: the last entry takes this slot
                // and is sampled next (the cursor stays).
                None => {
                    self.watches.swap_remove(i);
                }
                Some(v) => {
                    self.cursor += 1;
                    if let Some(v) = v {
                        verdict(v);
                    }
                }
            }
        }
        sampled
    }

    /// `None` when the identity is gone; else the verdict, if any.
    fn sample_one(&mut self, i: usize, now_ns: u64, r: &mut ProcReader) -> Option<Option<Verdict>> {
        let w = &mut self.watches[i];
        let stat = match r.stat(w.key.pid) {
            Ok(s) if s.start_ticks == w.key.start_ticks && !s.is_dead() => s,
            Ok(_) | Err(ReadError::Gone) => return None,
            Err(_) => {
                self.stats.read_errors += 1;
                return Some(None);
            }
        };
        let cpu = stat.utime.wrapping_add(stat.stime);
        // CPU time that moved is progress; only a process whose CPU time
        // stood still costs the second read. An I/O count that was not
        // read last time is a new baseline, not progress.
        let moved = if cpu != w.cpu_ticks || w.phase == Phase::New {
            w.io_fresh = false;
            true
        } else {
            match r.io(w.key.pid) {
                Ok(io) => {
                    let io = io.rchar.wrapping_add(io.wchar);
                    let moved = w.io_fresh && io != w.io_bytes;
                    w.io_bytes = io;
                    w.io_fresh = true;
                    moved
                }
                Err(ReadError::Gone) => return None,
                // An unread I/O count proves neither progress nor its
                // absence: this sample judges nothing (counted), so a
                // process whose io file reeve cannot read is never called
                // stalled on its CPU time alone.
                Err(_) => {
                    self.stats.read_errors += 1;
                    w.io_fresh = false;
                    return Some(None);
                }
            }
        };
        w.cpu_ticks = cpu;
        let stopped = matches!(stat.state, b'T' | b't');
        match w.phase {
            Phase::New => {
                w.phase = Phase::Progressing;
                w.moved_ns = now_ns;
                Some(None)
            }
            _ if moved || stopped => {
                let was = w.phase;
                let since = w.moved_ns;
                w.moved_ns = now_ns;
                if was == Phase::Stalled && moved {
                    w.phase = Phase::Progressing;
                    self.stats.resumes += 1;
                    return Some(Some(Verdict::Resumed {
                        key: w.key,
                        rule: w.rule,
                        stalled_for: Duration::from_nanos(now_ns.saturating_sub(since)),
                    }));
                }
                Some(None)
            }
            Phase::Progressing if now_ns.saturating_sub(w.moved_ns) >= w.stall_after_ns => {
                w.phase = Phase::Stalled;
                self.stats.stalls += 1;
                Some(Some(Verdict::Stalled {
                    key: w.key,
                    rule: w.rule,
                    idle: Duration::from_nanos(now_ns.saturating_sub(w.moved_ns)),
                    stall_after: Duration::from_nanos(w.stall_after_ns),
                }))
            }
            _ => Some(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::RuleId;
    use std::process::{Command, Stdio};

    fn rule_id(name: &str) -> RuleId {
        crate::discovery::RuleNames::default().intern(name).unwrap()
    }

    fn key_of(pid: u32) -> ProcKey {
        let mut r = ProcReader::open().unwrap();
        r.stat(pid).unwrap().key()
    }

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn an_idle_process_stalls_once_and_a_busy_one_never() {
        let mut idle = Command::new("sleep")
            .arg("30")
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let mut busy = Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let rule = rule_id("a");
        let mut r = ProcReader::open().unwrap();
        let mut w = Watchdog::new(4);
        let t0 = crate::sys::monotonic_ns();
        assert!(w.watch(key_of(idle.id()), rule, Duration::from_secs(1), t0));
        assert!(w.watch(key_of(busy.id()), rule, Duration::from_secs(1), t0));
        let mut seen = Vec::new();
        // Simulated time runs 0.25 s per round; the busy loop burns real
        // CPU between rounds, so each of its samples moves.
        for round in 0..12u64 {
            std::thread::sleep(Duration::from_millis(30));
            w.sample(t0 + round * SEC / 4, 64, &mut r, |v| seen.push(v));
        }
        let stalled: Vec<_> = seen
            .iter()
            .filter_map(|v| match v {
                Verdict::Stalled { key, idle, .. } => Some((key.pid, *idle)),
                _ => None,
            })
            .collect();
        assert_eq!(stalled.len(), 1, "{seen:?}");
        assert_eq!(stalled[0].0, idle.id());
        assert!(stalled[0].1 >= Duration::from_secs(1), "{seen:?}");
        assert_eq!(w.stats().stalls, 1);
        busy.kill().unwrap();
        busy.wait().unwrap();
        idle.kill().unwrap();
        idle.wait().unwrap();
        // Gone processes leave the list at their next sample.
        w.sample(t0 + 20 * SEC, 64, &mut r, |v| seen.push(v));
        assert!(w.is_empty());
    }

    #[test]
    fn a_stopped_process_is_not_stalled_and_progress_resumes() {
        let mut child = Command::new("sh")
            .args(["-c", "read x; while :; do :; done"])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let mut r = ProcReader::open().unwrap();
        let mut w = Watchdog::new(1);
        let rule = rule_id("b");
        assert!(w.watch(key_of(pid), rule, Duration::from_secs(1), 0));
        assert!(!w.watch(key_of(std::process::id()), rule, Duration::from_secs(1), 0));
        assert_eq!(w.stats().refused, 1);
        let mut seen = Vec::new();
        w.sample(0, 8, &mut r, |v| seen.push(v)); // baseline
        crate::sys::kill_pid(pid, libc::SIGSTOP).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        for s in 1..5 {
            w.sample(s * SEC, 8, &mut r, |v| seen.push(v));
        }
        assert!(seen.is_empty(), "a stopped process stalled: {seen:?}");
        crate::sys::kill_pid(pid, libc::SIGCONT).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        for s in 5..9 {
            w.sample(s * SEC, 8, &mut r, |v| seen.push(v));
        }
        assert!(
            matches!(seen.as_slice(), [Verdict::Stalled { .. }]),
            "blocked on read after the stop: {seen:?}"
        );
        // Feeding it a line starts the busy loop: progress.
        use std::io::Write;
        child.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
        std::thread::sleep(Duration::from_millis(100));
        w.sample(10 * SEC, 8, &mut r, |v| seen.push(v));
        assert!(
            matches!(seen[1], Verdict::Resumed { rule: r, .. } if r == rule),
            "{seen:?}"
        );
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn sampling_is_bounded_and_rotates_over_every_process() {
        let me = key_of(std::process::id());
        let mut r = ProcReader::open().unwrap();
        let mut w = Watchdog::new(8);
        // Eight entries for identities that do not exist: each is dropped
        // at its first sample, so the budget bounds how many go per call.
        for i in 0..8u64 {
            let k = ProcKey {
                pid: me.pid,
                start_ticks: me.start_ticks + 1 + i,
            };
            assert!(w.watch(k, rule_id("a"), Duration::from_secs(1), 0));
        }
        assert_eq!(w.sample(0, 3, &mut r, |_| {}), 3);
        assert_eq!(w.len(), 5);
        assert_eq!(w.sample(0, 3, &mut r, |_| {}), 3);
        assert_eq!(w.len(), 2);
        assert!(w.watch(me, rule_id("a"), Duration::from_secs(1), 0));
        assert_eq!(w.sample(0, 100, &mut r, |_| {}), 3);
        assert_eq!(w.len(), 1);
        // A tick is due at once, then one TICK later.
        assert_eq!(w.deadline_ns(), Some(0));
        assert_eq!(w.tick(5, &mut r, |_| {}), 1);
        assert_eq!(w.tick(6, &mut r, |_| {}), 0);
        assert_eq!(w.deadline_ns(), Some(5 + TICK.as_nanos() as u64));
    }
}
