//! The senders' table: who beats, the checks every accepted frame passes,
//! and the stall latch.
//!
//! Senders are keyed by [`ProcKey`], so a recycled pid is a new sender. The
//! table is a [`SlotTable`] allocated once at its capacity; when it is
//! full, a bounded eviction scan frees a slot: first a sender that ended,
//! then one silent for [`EVICT_SILENT_NS`] or that said `stopping`. A
//! sender that beat within that time is never evicted; a newcomer that
//! finds no slot is refused and counted. Every refusal has a
//! [`Reject`] reason and a counter; nothing here reads /proc (the caller
//! passes the identity and namespace it read), so it is tested without a
//! kernel.
//!
//! The latch: a sender with a timeout is *beating* until no beat came for
//! longer than the timeout, then *stalled* (reported once), and the next
//! accepted beat makes it *beating* again (reported as a resume).

use super::frame::{nonce_after, Frame, Status};
use crate::discovery::RuleId;
use crate::procfs::ProcKey;
use crate::table::SlotTable;

/// A sender silent this long (or one that said `stopping`) may be evicted
/// to make room for a new one.
pub const EVICT_SILENT_NS: u64 = 10 * 60 * 1_000_000_000;
/// Entries one eviction pass examines.
const EVICT_SCAN: usize = 64;

/// Why a datagram was not taken as a beat; each has a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Not 64 bytes.
    Size,
    Magic,
    Version,
    /// Unknown status code or reserved bytes not zero.
    Malformed,
    /// No SCM_CREDENTIALS (or a malformed control part).
    NoCredentials,
    /// The frame's pid is not the sending process's.
    Spoof,
    /// The nonce equals the last accepted one.
    Replay,
    /// The nonce is behind the last accepted one.
    OutOfOrder,
    /// The pid's namespace differs from the one pinned at first sight.
    Namespace,
    /// Over the per-sender rate.
    RatePid,
    /// Over the listener's global rate.
    RateGlobal,
    /// Neither tracked by a rule nor from an allowed uid.
    NotAllowed,
    /// The sender ended before its identity could be read.
    Gone,
    /// A new sender found no slot, not even after an eviction scan.
    TableFull,
}

impl Reject {
    pub const ALL: [Reject; 14] = [
        Reject::Size,
        Reject::Magic,
        Reject::Version,
        Reject::Malformed,
        Reject::NoCredentials,
        Reject::Spoof,
        Reject::Replay,
        Reject::OutOfOrder,
        Reject::Namespace,
        Reject::RatePid,
        Reject::RateGlobal,
        Reject::NotAllowed,
        Reject::Gone,
        Reject::TableFull,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reject::Size => "size",
            Reject::Magic => "magic",
            Reject::Version => "version",
            Reject::Malformed => "malformed",
            Reject::NoCredentials => "no_credentials",
            Reject::Spoof => "spoof",
            Reject::Replay => "replay",
            Reject::OutOfOrder => "out_of_order",
            Reject::Namespace => "namespace",
            Reject::RatePid => "rate_pid",
            Reject::RateGlobal => "rate_global",
            Reject::NotAllowed => "not_allowed",
            Reject::Gone => "gone",
            Reject::TableFull => "table_full",
        }
    }

    fn index(self) -> usize {
        Reject::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }

    /// The reason a frame decoding error is counted under.
    pub fn of_frame(e: super::frame::FrameError) -> Reject {
        use super::frame::FrameError;
        match e {
            FrameError::Size(_) => Reject::Size,
            FrameError::Magic => Reject::Magic,
            FrameError::Version(_) => Reject::Version,
            FrameError::Status(_) | FrameError::Reserved => Reject::Malformed,
        }
    }
}

/// A token bucket: `rate` tokens a second, at most `rate` held.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    /// Tokens in millionths, so a slow rate still refills smoothly.
    micro: u64,
    last_ns: u64,
}

impl Bucket {
    pub fn full(rate: u32, now_ns: u64) -> Bucket {
        Bucket {
            micro: u64::from(rate) * 1_000_000,
            last_ns: now_ns,
        }
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, rate: u32, now_ns: u64) -> bool {
        let cap = u64::from(rate) * 1_000_000;
        let dt = now_ns.saturating_sub(self.last_ns);
        // rate tokens per second = rate micro-tokens per microsecond.
        let add = (dt / 1_000).saturating_mul(u64::from(rate));
        if add > 0 {
            self.micro = self.micro.saturating_add(add).min(cap);
            self.last_ns = now_ns;
        }
        if self.micro >= 1_000_000 {
            self.micro -= 1_000_000;
            true
        } else {
            false
        }
    }
}

/// The listener's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rates {
    /// Beats a second one sender may send (a burst of as many).
    pub per_pid: u32,
    /// Beats a second the listener takes from everyone together.
    pub global: u32,
}

/// Where a sender is in its silence run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Latch {
    Beating,
    Stalled,
}

/// One sender.
#[derive(Debug, Clone, Copy)]
pub struct Sender {
    /// The rule that tracks it; `None` for a sender admitted by uid.
    pub rule: Option<RuleId>,
    pub by_uid: bool,
    /// Silence longer than this is a stall; 0: no stall detection.
    pub timeout_ns: u64,
    pub uid: u32,
    /// The pid namespace inode pinned at first sight.
    pub ns: u64,
    /// The /proc/<pid> directory inode the last accepted beat resolved to.
    pub proc_ino: u64,
    pub last_nonce: u64,
    pub last_beat_ns: u64,
    pub status: Status,
    pub latch: Latch,
    /// The process is known to have ended.
    pub ended: bool,
    pub beats: u64,
    bucket: Bucket,
}

/// How a sender that reeve has no entry for may be admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    pub rule: Option<RuleId>,
    pub timeout_ns: u64,
    /// Admitted because its uid is allowed, not because a rule tracks it.
    pub by_uid: bool,
}

/// Who sent a frame, as the caller established it: the identity read
/// from /proc for the kernel's pid, the kernel's uid, the pid namespace
/// inode, and the inode of the /proc/<pid> directory (procfs gives a
/// reused pid a new one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    pub key: ProcKey,
    pub uid: u32,
    pub ns: u64,
    pub proc_ino: u64,
}

/// What an accepted beat changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    /// First beat of this identity.
    pub new: bool,
    /// The sender was stalled; it was silent this long.
    pub resumed_after_ns: Option<u64>,
    /// The status the previous beat gave, when this one differs.
    pub status_was: Option<Status>,
    pub rule: Option<RuleId>,
    pub admitted_by_uid: bool,
}

/// A stall the check found: reported once per silence run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stall {
    pub key: ProcKey,
    pub rule: Option<RuleId>,
    pub silent_ns: u64,
    pub timeout_ns: u64,
    pub status: Status,
}

/// Counters for the metrics snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BeatStats {
    pub accepted: u64,
    /// Accepted from senders no rule tracks, admitted by uid.
    pub accepted_by_uid: u64,
    pub rejected: [u64; Reject::ALL.len()],
    pub stalls: u64,
    pub resumes: u64,
    pub evicted: u64,
    /// Senders seen to end while in the table.
    pub ended: u64,
}

impl BeatStats {
    pub fn rejected(&self, r: Reject) -> u64 {
        self.rejected[r.index()]
    }
}

/// The table of senders and the checks; see the module docs.
pub struct Beats {
    table: SlotTable<ProcKey, Sender>,
    rates: Rates,
    global: Bucket,
    /// No stall can be due before this (monotonic ns); `u64::MAX`: none.
    next_due_ns: u64,
    pub stats: BeatStats,
}

impl Beats {
    /// Allocates the whole table, once.
    pub fn new(capacity: usize, rates: Rates, now_ns: u64) -> Beats {
        Beats {
            table: SlotTable::with_capacity(capacity),
            rates,
            global: Bucket::full(rates.global, now_ns),
            next_due_ns: u64::MAX,
            stats: BeatStats::default(),
        }
    }

    pub fn set_rates(&mut self, rates: Rates) {
        self.rates = rates;
    }

    pub fn capacity(&self) -> usize {
        self.table.capacity()
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    pub fn get(&self, key: &ProcKey) -> Option<&Sender> {
        self.table.get(key)
    }

    /// Counts a refusal and returns it.
    pub fn reject(&mut self, r: Reject) -> Reject {
        self.stats.rejected[r.index()] += 1;
        r
    }

    /// The global rate, checked before any /proc read so a flood costs a
    /// recvmsg per datagram and no more.
    pub fn take_global(&mut self, now_ns: u64) -> Result<(), Reject> {
        if self.global.take(self.rates.global, now_ns) {
            Ok(())
        } else {
            Err(self.reject(Reject::RateGlobal))
        }
    }

    /// The sender whose last beat resolved to this /proc/<pid> inode: the
    /// same process still (a reused pid has a new inode), so its identity
    /// and pinned namespace need no new read.
    pub fn known_by_inode(&self, pid: u32, proc_ino: u64) -> Option<Origin> {
        let key = self
            .table
            .find_pid(pid, |_, s| s.proc_ino == proc_ino && !s.ended)?;
        let s = self.table.get(&key)?;
        Some(Origin {
            key,
            uid: s.uid,
            ns: s.ns,
            proc_ino,
        })
    }

    /// Whether an entry for this identity exists (admission is only asked
    /// for a newcomer).
    pub fn knows(&self, key: &ProcKey) -> bool {
        self.table.contains(key)
    }

    /// Takes one beat from `key` (whose kernel credentials, frame pid and
    /// global rate the caller has checked). `ns` is the pid namespace the
    /// caller read for it; `admit` says whether a newcomer may be taken.
    pub fn beat(
        &mut self,
        from: Origin,
        frame: &Frame,
        admit: Option<Admission>,
        now_ns: u64,
    ) -> Result<Accepted, Reject> {
        let Origin {
            key,
            uid,
            ns,
            proc_ino,
        } = from;
        let rate = self.rates.per_pid;
        let (new, sender) = match self.table.get_mut(&key) {
            Some(s) => (false, s),
            None => {
                let Some(a) = admit else {
                    return Err(self.reject(Reject::NotAllowed));
                };
                let sender = Sender {
                    rule: a.rule,
                    by_uid: a.by_uid,
                    timeout_ns: a.timeout_ns,
                    uid,
                    ns,
                    proc_ino,
                    last_nonce: frame.nonce.wrapping_sub(1),
                    last_beat_ns: now_ns,
                    status: frame.status,
                    latch: Latch::Beating,
                    ended: false,
                    beats: 0,
                    bucket: Bucket::full(rate, now_ns),
                };
                if !self.make_room(now_ns) {
                    return Err(self.reject(Reject::TableFull));
                }
                if self.table.insert(key, sender).is_err() {
                    return Err(self.reject(Reject::TableFull));
                }
                match self.table.get_mut(&key) {
                    Some(s) => (true, s),
                    None => return Err(self.reject(Reject::TableFull)),
                }
            }
        };
        let verdict = if sender.ns != ns {
            Err(Reject::Namespace)
        } else if frame.nonce == sender.last_nonce {
            Err(Reject::Replay)
        } else if !nonce_after(frame.nonce, sender.last_nonce) {
            Err(Reject::OutOfOrder)
        } else if !sender.bucket.take(rate, now_ns) {
            Err(Reject::RatePid)
        } else {
            Ok(())
        };
        if let Err(r) = verdict {
            return Err(self.reject(r));
        }
        let resumed_after_ns =
            (sender.latch == Latch::Stalled).then(|| now_ns.saturating_sub(sender.last_beat_ns));
        let status_was = (!new && sender.status != frame.status).then_some(sender.status);
        sender.latch = Latch::Beating;
        sender.proc_ino = proc_ino;
        sender.last_nonce = frame.nonce;
        sender.last_beat_ns = now_ns;
        sender.status = frame.status;
        sender.beats += 1;
        let accepted = Accepted {
            new,
            resumed_after_ns,
            status_was,
            rule: sender.rule,
            admitted_by_uid: sender.by_uid,
        };
        if sender.timeout_ns > 0 {
            self.next_due_ns = self
                .next_due_ns
                .min(now_ns.saturating_add(sender.timeout_ns));
        }
        self.stats.accepted += 1;
        self.stats.accepted_by_uid += u64::from(accepted.admitted_by_uid);
        self.stats.resumes += u64::from(resumed_after_ns.is_some());
        Ok(accepted)
    }

    /// A free slot, evicting one sender if need be (bounded scan).
    fn make_room(&mut self, now_ns: u64) -> bool {
        if self.table.len() < self.table.capacity() {
            return true;
        }
        let evicted = self
            .table
            .evict_one(EVICT_SCAN, |_, s| s.ended)
            .or_else(|| {
                self.table.evict_one(EVICT_SCAN, |_, s| {
                    s.status == Status::Stopping
                        || now_ns.saturating_sub(s.last_beat_ns) >= EVICT_SILENT_NS
                })
            });
        self.stats.evicted += u64::from(evicted.is_some());
        evicted.is_some()
    }

    /// Whether every slot holds a sender.
    pub fn is_full(&self) -> bool {
        self.table.len() >= self.table.capacity()
    }

    /// Frees one slot (bounded scan) held by a sender that ended unseen:
    /// `inode_now(pid)` is the inode of /proc/<pid> now, which differs from
    /// the one it beat from once that process is gone. Senders no rule
    /// tracks (admitted by uid, supervised jobs) have no other way to be
    /// seen ending: their exits never reach reeve.
    pub fn evict_gone(&mut self, mut inode_now: impl FnMut(u32) -> Option<u64>) -> bool {
        let evicted = self.table.evict_one(EVICT_SCAN, |k, s| {
            s.ended || inode_now(k.pid) != Some(s.proc_ino)
        });
        self.stats.evicted += u64::from(evicted.is_some());
        evicted.is_some()
    }

    /// When the next stall can be due (monotonic ns), for the poll timeout.
    pub fn next_due_ns(&self) -> Option<u64> {
        (self.next_due_ns != u64::MAX).then_some(self.next_due_ns)
    }

    /// Latches every sender silent past its timeout, once per silence run,
    /// and pushes it to `out` (bounded by the table's capacity). `alive`
    /// says whether an identity still runs; one that ended is marked so and
    /// not reported (its end is not a stall). Runs only once the earliest
    /// deadline passed; recomputes the next one.
    pub fn check(
        &mut self,
        now_ns: u64,
        mut alive: impl FnMut(ProcKey) -> bool,
        out: &mut Vec<Stall>,
    ) {
        if now_ns < self.next_due_ns {
            return;
        }
        let mut next = u64::MAX;
        let mut ended = 0;
        for (key, s) in self.table.iter_mut() {
            if s.timeout_ns == 0 || s.ended || s.latch == Latch::Stalled {
                continue;
            }
            let due = s.last_beat_ns.saturating_add(s.timeout_ns);
            if s.status == Status::Stopping {
                continue;
            }
            if now_ns < due {
                next = next.min(due);
                continue;
            }
            if !alive(*key) {
                s.ended = true;
                ended += 1;
                continue;
            }
            s.latch = Latch::Stalled;
            if out.len() < out.capacity() {
                out.push(Stall {
                    key: *key,
                    rule: s.rule,
                    silent_ns: now_ns.saturating_sub(s.last_beat_ns),
                    timeout_ns: s.timeout_ns,
                    status: s.status,
                });
            }
            self.stats.stalls += 1;
        }
        self.stats.ended += ended;
        self.next_due_ns = next;
    }

    /// Marks an identity as ended (the daemon saw it exit).
    pub fn ended(&mut self, key: &ProcKey) {
        if let Some(s) = self.table.get_mut(key) {
            if !s.ended {
                s.ended = true;
                self.stats.ended += 1;
            }
        }
    }

    /// Senders stalled now.
    pub fn stalled(&self) -> usize {
        self.table
            .iter()
            .filter(|(_, s)| s.latch == Latch::Stalled && !s.ended)
            .count()
    }
}

#[cfg(test)]
mod tests;
