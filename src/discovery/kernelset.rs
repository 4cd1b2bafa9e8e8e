//! The tracked set the proc connector's kernel filter names
//! ([`super::filter::build`]): with it the kernel drops the forks and exits
//! of every process discovery does not track, which is nearly all of them,
//! so an exec storm of untracked processes wakes reeve once per exec
//! instead of three times.
//!
//! Invariant: no fork or exit discovery needs is lost to the filter. The
//! filter is replaced after a process joins the tracked set, so between
//! its discovery and the replacement the kernel may drop its fork and exit
//! events. [`Discovery::recover_filtered`] closes that window after every
//! replacement: the kernel sends a process's exit event only after the
//! process has become a zombie (`do_exit` calls `exit_notify` before
//! `proc_exit_connector`), so a newcomer whose stat shows it alive had not
//! sent its exit, which the new filter now keeps; one that is dead, gone
//! or replaced ended unseen and is ended now (its exit status unknown).
//! Its children, from /proc/<pid>/task/<tid>/children, are evaluated as
//! its forks would have been. A kernel without those files cannot close
//! the fork side of the window, so there the filter keeps every leader's
//! forks and exits ([`Discovery::filter_outdated`] is never true).

use super::{Discovery, Sink};
use crate::procfs::{ProcKey, ReadError};

/// Newcomers remembered between two filter replacements; with more, every
/// live tracked process is checked after the next one.
const ADDED_MAX: usize = 256;

/// What changed in the tracked set since the filter was last replaced.
pub(super) struct KernelSet {
    added: Vec<ProcKey>,
    overflow: bool,
    /// The set gained a member, or no filter was built yet.
    outdated: bool,
    /// The kernel lists children per thread (CONFIG_PROC_CHILDREN).
    children_known: bool,
}

impl KernelSet {
    pub(super) fn new() -> KernelSet {
        KernelSet {
            added: Vec::with_capacity(ADDED_MAX),
            overflow: false,
            outdated: true,
            children_known: std::path::Path::new("/proc/thread-self/children").exists(),
        }
    }

    pub(super) fn joined(&mut self, key: ProcKey) {
        self.outdated = true;
        if self.added.len() < ADDED_MAX {
            self.added.push(key);
        } else {
            self.overflow = true;
        }
    }
}

impl Discovery {
    /// Whether the filter in force should be rebuilt: the set gained a
    /// member, or the one installed names (`installed` tgids; `None`: no
    /// membership test) more than twice the live ones.
    /// Always false on a kernel without per-thread children files: there
    /// the filter keeps every leader's forks and exits.
    pub fn filter_outdated(&self, installed: Option<usize>) -> bool {
        let live = self.live as usize;
        self.kernel.children_known
            && (self.kernel.outdated
                || match installed {
                    Some(n) => n > 2 * live + 16,
                    None => live <= super::filter::MAX_FILTERED,
                })
    }

    /// Appends the pids of the live tracked processes to `out`.
    pub fn live_tgids(&self, out: &mut Vec<u32>) {
        out.extend(
            self.tracked
                .iter()
                .filter(|(_, t)| t.alive())
                .map(|(k, _)| k.pid),
        );
    }

    /// Called once a filter naming the tracked set is in force: ends the
    /// newcomers that ended unseen and evaluates their children (see the
    /// module doc). Bounded by the newcomers since the last call.
    pub fn recover_filtered(&mut self, sink: &mut impl Sink) {
        self.kernel.outdated = false;
        let mut added = std::mem::take(&mut self.kernel.added);
        if std::mem::take(&mut self.kernel.overflow) {
            // Rare: more newcomers than remembered in one interval.
            added.clear();
            added.extend(
                self.tracked
                    .iter()
                    .filter(|(_, t)| t.alive())
                    .map(|(k, _)| *k),
            );
        }
        for &key in &added {
            if !self.tracked.get(&key).is_some_and(|t| t.alive()) {
                continue;
            }
            match self.reader.stat(key.pid) {
                Ok(s) if s.start_ticks == key.start_ticks && !s.is_dead() => {}
                Ok(_) | Err(ReadError::Gone) => {
                    self.exit_identity(key, None, sink);
                    continue;
                }
                Err(_) => {
                    self.stats.read_errors += 1;
                    continue;
                }
            }
            match self.reader.children(key.pid) {
                Ok(Some(children)) => {
                    for child in children {
                        self.probe(child, sink);
                    }
                }
                // No such files: the set is never filtered on such a kernel.
                Ok(None) | Err(ReadError::Gone) => {}
                Err(_) => self.stats.read_errors += 1,
            }
        }
        added.clear();
        self.kernel.added = added;
    }
}
