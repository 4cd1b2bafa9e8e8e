//! The proc connector's kernel filter kept in step with the tracked set
//! (`discovery::kernelset` says why nothing needed is lost): replaced at the
//! end of a wakeup, after that wakeup's placements, when the tracked set
//! gained a member or shrank well below what the filter names.
//!
//! A replacement the kernel refuses is an event; the filter is then removed
//! (every event reaches reeve again, as before any filter) and not tried
//! again, and a socket whose filter cannot even be removed is given up for
//! polling, since a filter that no longer names every tracked process
//! could hide an exit.

use super::sink::LogSink;
use super::Daemon;
use crate::discovery::filter;
use crate::log::Val;

pub(super) struct KernelFilter {
    /// Scratch for the tracked tgids, reserved once at the tracked
    /// capacity.
    tgids: Vec<u32>,
    /// Scratch for the program, reserved once at the kernel's limit.
    program: Vec<libc::sock_filter>,
    /// How many tgids the filter in force names; `None`: it has no
    /// membership test (at start, and above `filter::MAX_FILTERED`).
    installed: Option<usize>,
    /// A replacement failed; the socket runs unfiltered from then on.
    given_up: bool,
}

impl KernelFilter {
    pub(super) fn new(capacity: usize) -> KernelFilter {
        KernelFilter {
            tgids: Vec::with_capacity(capacity),
            program: Vec::with_capacity(filter::MAX_LEN),
            installed: None,
            given_up: false,
        }
    }
}

impl Daemon {
    /// Replaces the filter when the tracked set asks for it, then lets
    /// discovery recover what the old filter may have dropped meanwhile.
    pub(super) fn refresh_kernel_filter(&mut self) {
        let Some(conn) = self.connector.as_ref() else {
            return;
        };
        let f = &mut self.kernel_filter;
        if f.given_up || !self.discovery.filter_outdated(f.installed) {
            return;
        }
        f.tgids.clear();
        self.discovery.live_tgids(&mut f.tgids);
        let n = filter::sort_for_filter(&mut f.tgids);
        let set = (n <= filter::MAX_FILTERED).then(|| &f.tgids[..n]);
        filter::build(set, &mut f.program);
        let installed = set.map(<[u32]>::len);
        let refused = match conn.set_filter(&f.program) {
            Ok(()) => None,
            Err(e) => Some((e, conn.clear_filter())),
        };
        match refused {
            None => {
                f.installed = installed;
                let mut sink = LogSink {
                    log: &mut self.log,
                    to_attach: &mut self.to_attach,
                    ended: &mut self.ended,
                };
                self.discovery.recover_filtered(&mut sink);
            }
            Some((e, Ok(()))) => {
                f.given_up = true;
                f.installed = None;
                let error = e.to_string();
                self.log.warn(
                    "netlink_filter_failed",
                    &[
                        ("error", Val::S(&error)),
                        (
                            "effect",
                            Val::S("the kernel filter is removed: every process event reaches reeve, which costs CPU in exec storms"),
                        ),
                    ],
                );
                // What the old filter dropped since the set last grew.
                self.need_deep = true;
            }
            Some((e, Err(clear))) => {
                let error = format!("{e}; removing the filter: {clear}");
                self.log.error(
                    "netlink_failed",
                    &[
                        ("error", Val::S(&error)),
                        ("action", Val::S("falling back to polling /proc")),
                    ],
                );
                self.connector = None;
                self.obs.netlink_lost = true;
                self.need_deep = true;
            }
        }
    }
}
