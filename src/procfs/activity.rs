//! The host's process churn, from two kernel counters: every process or
//! thread ever created (`processes` in /proc/stat, the kernel's
//! `total_forks`, incremented by every fork and clone) and every task that
//! exists now (the thread count in /proc/loadavg, `nr_threads`).
//!
//! If neither changed between two readings, no task was created and none
//! was released in between, so the set of /proc/<pid> entries is the
//! same: a steady scan (which looks for new and gone pids) would find
//! nothing. A new task always counts a fork; while forks stand still, the
//! thread count can only fall, and falls with every task released.

use crate::digits::parse_u64;

/// One reading of the two counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Activity {
    /// Tasks created since boot (/proc/stat `processes`).
    pub forks: u64,
    /// Tasks that exist now (/proc/loadavg, the number after the slash).
    pub threads: u64,
}

impl Activity {
    /// True when `now` proves nothing was created or released since
    /// `then` was read; an unreadable reading proves nothing.
    pub fn still(then: Option<Activity>, now: Option<Activity>) -> bool {
        now.is_some() && now == then
    }
}

/// The thread count in /proc/loadavg: `0.27 0.95 1.17 1/120 25251` → 120.
pub fn parse_loadavg_threads(buf: &[u8]) -> Option<u64> {
    let field = buf.split(|&b| b == b' ').nth(3)?;
    let slash = field.iter().position(|&b| b == b'/')?;
    parse_u64(&field[slash + 1..])
}

/// Finds the `processes N` line of /proc/stat fed in pieces of any size:
/// the file can be longer than any fixed buffer (its `intr` line has a
/// count per interrupt), so it is read in chunks and never held whole.
#[derive(Debug, Default)]
pub struct ForksFinder {
    col: usize,
    off: bool,
    acc: Option<u64>,
    found: Option<u64>,
}

const PREFIX: &[u8] = b"processes ";

impl ForksFinder {
    pub fn feed(&mut self, chunk: &[u8]) {
        for &b in chunk {
            if self.found.is_some() {
                return;
            }
            if b == b'\n' {
                if self.col > PREFIX.len() && !self.off {
                    self.found = self.acc;
                }
                *self = ForksFinder {
                    found: self.found,
                    ..ForksFinder::default()
                };
                continue;
            }
            if self.off {
                continue;
            }
            if self.col < PREFIX.len() {
                self.off = b != PREFIX[self.col];
            } else {
                let d = b.checked_sub(b'0').filter(|d| *d < 10);
                self.acc = match (d, self.acc.or(Some(0))) {
                    (Some(d), Some(a)) => {
                        a.checked_mul(10).and_then(|a| a.checked_add(u64::from(d)))
                    }
                    _ => None,
                };
                self.off = self.acc.is_none();
            }
            self.col += 1;
        }
    }

    /// The value, once its whole line has been fed.
    pub fn found(&self) -> Option<u64> {
        self.found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &[u8] = b"cpu  1 2 3 4\ncpu0 1 2 3 4\nintr 9 0 0 1 2 3\nctxt 77\nbtime 1700000000\nprocesses 25251\nprocs_running 1\nprocs_blocked 0\n";

    #[test]
    fn finds_processes_whatever_the_chunk_size() {
        for size in 1..=STAT.len() {
            let mut f = ForksFinder::default();
            for chunk in STAT.chunks(size) {
                f.feed(chunk);
            }
            assert_eq!(f.found(), Some(25251), "chunk size {size}");
        }
    }

    #[test]
    fn a_line_that_only_starts_like_it_or_is_cut_is_not_taken() {
        let mut f = ForksFinder::default();
        f.feed(b"processesx 5\nprocesses 12a\nprocesses_blocked 3\nprocesses 9");
        assert_eq!(f.found(), None, "no complete valid line yet");
        f.feed(b"\n");
        assert_eq!(f.found(), Some(9));
        let mut f = ForksFinder::default();
        f.feed(b"processes \nprocesses 99999999999999999999999\n");
        assert_eq!(f.found(), None, "empty and overflowing values are refused");
    }

    #[test]
    fn only_two_equal_readings_prove_stillness() {
        let a = Activity {
            forks: 10,
            threads: 5,
        };
        assert!(Activity::still(Some(a), Some(a)));
        assert!(!Activity::still(None, None), "nothing read proves nothing");
        assert!(!Activity::still(None, Some(a)));
        assert!(!Activity::still(Some(a), None));
        let forked = Activity { forks: 11, ..a };
        let released = Activity { threads: 4, ..a };
        assert!(!Activity::still(Some(a), Some(forked)));
        assert!(!Activity::still(Some(a), Some(released)));
    }

    #[test]
    fn a_fork_on_this_host_moves_the_count() {
        let mut reader = crate::procfs::ProcReader::open().unwrap();
        let before = reader
            .activity()
            .expect("this kernel's /proc/stat and /proc/loadavg");
        let status = std::process::Command::new("true").status().unwrap();
        assert!(status.success());
        let after = reader.activity().unwrap();
        assert!(after.forks > before.forks, "{before:?} then {after:?}");
        assert!(!Activity::still(Some(before), Some(after)));
    }

    #[test]
    fn loadavg_thread_count() {
        assert_eq!(
            parse_loadavg_threads(b"0.27 0.95 1.17 1/120 25251\n"),
            Some(120)
        );
        assert_eq!(parse_loadavg_threads(b"0.27 0.95 1.17 1/ 25251\n"), None);
        assert_eq!(parse_loadavg_threads(b"0.27 0.95\n"), None);
        assert_eq!(parse_loadavg_threads(b""), None);
    }
}
