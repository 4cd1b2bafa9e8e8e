//! How tracked identities end and leave: an exit noticed by netlink, by a
//! scan that no longer sees the pid (the sweep), or by a direct check of
//! every live identity on a deep scan (reconcile); and the bounded eviction
//! of identities that exited long ago.
//!
//! Invariant: every exit is one [`Step::Exit`] and one `exited` report,
//! however many sources notice it; only an exited identity is evicted.

use super::{Claim, Discovery, ExitStatus, Sink, Step, EVICT_SCAN, EXITED_RETENTION_MS};
use crate::procfs::ProcKey;
use crate::sys;

impl Discovery {
    pub(super) fn exit_identity(
        &mut self,
        key: ProcKey,
        status: Option<ExitStatus>,
        sink: &mut impl Sink,
    ) {
        let now = sys::realtime_ms().max(1);
        let Some(t) = self.tracked.get_mut(&key) else {
            return;
        };
        // An identity already exited (a netlink exit, then the sweep) is
        // recorded once.
        let Ok(next) = t.life.step(Step::Exit) else {
            return;
        };
        t.life = next;
        t.exited_ms = now;
        let t = *t;
        self.live = self.live.saturating_sub(1);
        self.cur.gone += 1;
        self.stats.exited += 1;
        if let Some(e) = self.seen.get_mut(&key.pid) {
            if e.start_ticks == key.start_ticks {
                e.claim = Claim::None;
            }
        }
        sink.exited(key, &t, self.names.name(t.rule), status);
    }

    /// Pids this scan did not see are gone; tracked ones have exited.
    pub(super) fn sweep(&mut self, sink: &mut impl Sink) {
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
            if e.claim == Claim::Tracked {
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
    pub(super) fn reconcile(&mut self, sink: &mut impl Sink) {
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
                t.life.step(Step::Evict).is_ok()
                    && now_ms.saturating_sub(t.exited_ms) > EXITED_RETENTION_MS
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
}
