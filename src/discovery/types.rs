//! What discovery reports: where a discovery came from, what a tracked
//! process looks like, how a process ended, what a scan found, the counters
//! it keeps, and the [`Sink`] that receives it all.

use super::lifecycle::Life;
use super::ruleid::RuleId;
use crate::procfs::{Comm, ProcKey};
use crate::table::Refusal;

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

/// A tracked process. `rule` is the rule's stable identity (it survives a
/// reload that reorders or removes rules); `exited_ms` is 0 while it runs.
#[derive(Debug, Clone, Copy)]
pub struct Tracked {
    pub rule: RuleId,
    pub life: Life,
    pub comm: Comm,
    pub ppid: u32,
    pub uid: u32,
    pub discovered_ms: u64,
    pub exited_ms: u64,
}

impl Tracked {
    pub fn alive(&self) -> bool {
        self.life.alive()
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

impl ScanReport {
    pub(super) fn empty(kind: ScanKind) -> ScanReport {
        ScanReport {
            kind,
            found: 0,
            new: 0,
            tracked: 0,
            gone: 0,
            duration_us: 0,
        }
    }
}

/// Counters worth exporting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiscoveryStats {
    pub scans: u64,
    pub discovered: u64,
    pub exited: u64,
    /// Target identities refused because the slot table was full.
    pub refused: u64,
    /// Times a pid could not be indexed because the seen-set was full (it
    /// is parsed again every scan, so one pid counts once per scan).
    pub seen_overflow: u64,
    /// /proc reads that failed for a reason other than the process leaving.
    pub read_errors: u64,
    /// /proc/<pid>/cmdline reads (each can wait on the process's mmap lock).
    pub cmdline_reads: u64,
    /// Lifecycle steps refused because the identity was not in a state
    /// that allows them.
    pub illegal_steps: u64,
}

/// Receives what discovery learns. The daemon logs and acts on it.
pub trait Sink {
    fn discovered(&mut self, key: ProcKey, t: &Tracked, rule: &str, source: Source);
    fn exited(&mut self, key: ProcKey, t: &Tracked, rule: &str, status: Option<ExitStatus>);
    fn already_tracked(&mut self, key: ProcKey, source: Source);
    fn refused(&mut self, key: ProcKey, rule: &str, why: Refusal);
    /// The seen-set (`capacity` pids, `len` held) is too small for the
    /// processes on the host. Reported once until a whole scan fits again;
    /// every pid it could not hold is also counted (`seen_overflow`). The
    /// default does nothing: a sink that reports to an operator overrides it.
    fn seen_full(&mut self, _capacity: usize, _len: usize) {}
}

/// What [`super::Discovery::restore`] found for a saved identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restore {
    /// The same process runs and is tracked (again).
    Tracked,
    /// It ended: the pid is gone, a zombie, or another process's now.
    Gone,
    /// /proc could not be read for it (it may still run).
    Unreadable(String),
    /// It runs, but is not tracked: the table had no room, or the
    /// lifecycle refused the step.
    Refused(String),
}
