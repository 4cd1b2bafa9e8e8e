//! Applying the rules to one process: read only the /proc files some rule
//! needs, match names first, then filters, then make sure the process is
//! not reeve's own descendant.
//!
//! Invariant: /proc/<pid>/cmdline is read only when a rule that the comm
//! and exe did not already match has an argv0 or cmdline matcher, and at
//! most once per identity between changes of its image: the names each
//! rule matched are remembered ([`NameHits`]) for a process that is
//! evaluated again because it was too young or refused for capacity.

use super::matcher::{self, Facts, Verdict};
use super::Discovery;
use crate::procfs::{self, ReadError, Stat};

/// The rules whose name matchers matched one identity, as a bit per rule
/// index. Only kept when the rule set has at most 64 rules (the config
/// allows no more).
pub(super) type NameHits = u64;

pub(super) enum Outcome {
    Match { rule: usize, uid: u32 },
    TooYoung,
    NoMatch,
}

/// Ancestors walked when checking whether a process descends from reeve.
const MAX_ANCESTRY: usize = 64;

impl Discovery {
    /// Evaluates `stat` against the rules. `known` are the name matches
    /// remembered for this identity, which spare the exe and cmdline reads.
    /// Returns the outcome and the name matches to remember.
    pub(super) fn evaluate(
        &mut self,
        stat: &Stat,
        known: Option<NameHits>,
    ) -> (Outcome, Option<NameHits>) {
        let any = match known {
            Some(mask) => {
                for i in 0..self.rules.len() {
                    self.name_hits[i] = i < 64 && mask & (1 << i) != 0;
                }
                mask != 0
            }
            None => match self.match_names(stat) {
                Some(any) => any,
                None => return (Outcome::NoMatch, None),
            },
        };
        let hits = (self.rules.len() <= 64).then(|| {
            (0..self.rules.len())
                .filter(|&i| self.name_hits[i])
                .fold(0u64, |m, i| m | (1 << i))
        });
        if !any {
            return (Outcome::NoMatch, hits);
        }
        (self.apply_filters(stat), hits)
    }

    /// Fills `name_hits`; `None` when the process left while being read.
    fn match_names(&mut self, stat: &Stat) -> Option<bool> {
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
                Err(ReadError::Gone) => return None,
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
            self.stats.cmdline_reads += 1;
            match self.reader.cmdline(pid) {
                Ok(cmdline) => {
                    for i in 0..self.rules.len() {
                        if !self.name_hits[i] && self.rules.matches_cmdline(i, cmdline) {
                            self.name_hits[i] = true;
                            any = true;
                        }
                    }
                }
                Err(ReadError::Gone) => return None,
                Err(_) => self.stats.read_errors += 1,
            }
        }
        Some(any)
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
