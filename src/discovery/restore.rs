//! Taking up, after a restart, an identity a previous daemon tracked: only
//! once /proc confirms it is the same process, and never as a new
//! discovery.

use super::{Discovery, Life, Restore, RuleId, Step, Tracked};
use crate::procfs::{ProcKey, ReadError};

impl Discovery {
    /// Tracks a process again after a restart, without a new `discovered`
    /// event, once /proc confirms it is the same process (pid and start
    /// time). `rule` is the rule's id, or [`RuleId::ADOPTED`] for a process
    /// found in a governed group that no rule names. Only
    /// [`Restore::Gone`] means the process ended: a process that cannot be
    /// read, or that the table has no room for, still runs.
    pub fn restore(&mut self, key: ProcKey, rule: RuleId, discovered_ms: u64) -> Restore {
        let stat = match self.reader.stat(key.pid) {
            Ok(s) if s.start_ticks == key.start_ticks && !s.is_dead() => s,
            Ok(_) | Err(ReadError::Gone) => return Restore::Gone,
            Err(e) => return Restore::Unreadable(e.to_string()),
        };
        if self.tracked.get(&key).is_some_and(|t| t.alive()) {
            return Restore::Tracked;
        }
        let life = match Life::Seen.step(Step::Restore) {
            Ok(l) => l,
            Err(e) => return Restore::Refused(e.to_string()),
        };
        let uid = self.reader.status_ids(key.pid).map_or(u32::MAX, |i| i.euid);
        let t = Tracked {
            rule,
            life,
            comm: stat.comm,
            ppid: stat.ppid,
            uid,
            discovered_ms,
            exited_ms: 0,
        };
        if let Err(why) = self.tracked.insert(key, t) {
            self.stats.refused += 1;
            return Restore::Refused(why.to_string());
        }
        self.live += 1;
        self.kernel.joined(key);
        Restore::Tracked
    }
}
