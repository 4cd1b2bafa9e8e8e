//! The loop's discovery side: when a scan is due and which kind it is,
//! the scan itself, and the bounded drain of the netlink socket (events
//! handed to discovery, overruns turned into an immediate deep scan, a
//! failed socket into polling).

use super::sink::{log_scan, LogSink};
use super::{Daemon, DEEP_EVERY, MAX_DATAGRAMS_PER_WAKE};
use crate::discovery::netlink::{self, NetlinkError};
use crate::discovery::ScanKind;
use crate::log::Val;
use crate::procfs::activity::Activity;
use crate::sys;

impl Daemon {
    pub(super) fn scan_now(&mut self) -> Result<(), String> {
        // A steady scan cannot see an exec or rename of a pid it already
        // knows; one netlink lost without an overrun would go unnoticed,
        // so every DEEP_EVERY-th rescan interval the net is a deep scan.
        let interval = self
            .config
            .discovery
            .rescan_interval
            .saturating_mul(DEEP_EVERY);
        let deep_due = sys::monotonic_ns().saturating_sub(self.last_deep_ns)
            >= u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX);
        let kind = if self.connector.is_some() && !self.need_deep && !deep_due {
            ScanKind::Steady
        } else {
            ScanKind::Deep
        };
        // A steady scan looks for pids that appeared or went without an
        // event. None can have while the kernel's fork and thread counts
        // stand where they stood when the last scan began (see
        // procfs::activity), so the scan is skipped: on a quiet host the
        // safety net costs two small reads, however many processes run.
        // Entries waiting to be evaluated again still need their scan.
        let began = sys::monotonic_ns();
        let activity = match self.connector.is_some() {
            true => self.discovery.reader().activity(),
            false => None,
        };
        if kind == ScanKind::Steady
            && Activity::still(self.activity_at_scan, activity)
            && !self.discovery.rechecks_pending()
        {
            self.obs.scan_skipped();
            self.last_scan_ns = sys::monotonic_ns();
            // Said like a scan that found nothing (debug level): what is
            // tracked is what the last scan left, nothing new, nothing gone.
            let live = self.discovery.live();
            let us = self.last_scan_ns.saturating_sub(began) / 1000;
            self.log.debug(
                "scan",
                &[
                    ("kind", Val::S("skipped")),
                    ("found", Val::U(live.into())),
                    ("new", Val::U(0)),
                    ("tracked", Val::U(live.into())),
                    ("gone", Val::U(0)),
                    ("duration_us", Val::U(us)),
                    (
                        "reason",
                        Val::S("no process was created or ended since the last scan"),
                    ),
                ],
            );
            return Ok(());
        }
        self.activity_at_scan = activity;
        let mut sink = LogSink {
            log: &mut self.log,
            to_attach: &mut self.to_attach,
            ended: &mut self.ended,
        };
        let report = self
            .discovery
            .scan(kind, &mut sink)
            .map_err(|e| format!("cannot read /proc: {e}"))?;
        log_scan(&mut self.log, &report);
        self.obs.scanned(&report);
        self.need_deep = false;
        self.last_scan_ns = sys::monotonic_ns();
        if kind == ScanKind::Deep {
            self.last_deep_ns = self.last_scan_ns;
        }
        Ok(())
    }

    /// When the next scan is due. Polling scans every `scan_interval`. With
    /// netlink the scan is a safety net for what events cannot report (see
    /// docs/ARCHITECTURE.md, Discovery) and runs every `rescan_interval`,
    /// unless a process waits for a scan to be evaluated again; an overrun
    /// sets `need_deep`, which scans at once.
    pub(super) fn next_scan_ns(&self) -> u64 {
        self.last_scan_ns.saturating_add(self.scan_interval_ns())
    }

    /// The pace of scans in force: `rescan_interval` in netlink mode (the
    /// safety net), `scan_interval` when polling or while a process waits
    /// to be evaluated again.
    pub(super) fn scan_interval_ns(&self) -> u64 {
        let d = &self.config.discovery;
        let interval = if self.connector.is_some() && !self.discovery.rechecks_pending() {
            d.rescan_interval
        } else {
            d.scan_interval
        };
        u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX)
    }

    pub(super) fn drain_netlink(&mut self) {
        let Some(conn) = self.connector.as_mut() else {
            return;
        };
        let mut sink = LogSink {
            log: &mut self.log,
            to_attach: &mut self.to_attach,
            ended: &mut self.ended,
        };
        for _ in 0..MAX_DATAGRAMS_PER_WAKE {
            match conn.recv() {
                Ok(Some(dgram)) => {
                    for ev in netlink::events(dgram) {
                        match ev {
                            Ok(ev) => {
                                self.obs.netlink_event(&ev);
                                let before = self.discovery.stats().discovered;
                                self.discovery.handle_event(&ev, &mut sink);
                                let found =
                                    self.discovery.stats().discovered.saturating_sub(before);
                                if found > 0 {
                                    self.obs.discovered_from(&ev, found);
                                }
                            }
                            Err(NetlinkError::Overrun) => {
                                self.obs.overruns += 1;
                                self.need_deep = true
                            }
                            Err(e) => sink.log.warn(
                                "netlink_malformed",
                                &[
                                    ("error", Val::S(&e.to_string())),
                                    ("action", Val::S("message skipped; the next scan covers it")),
                                ],
                            ),
                        }
                    }
                }
                Ok(None) => return,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    self.obs.overruns += 1;
                    self.need_deep = true;
                    sink.log.warn(
                        "netlink_overrun",
                        &[
                            ("error", Val::S(&e.to_string())),
                            ("action", Val::S("events were lost; rescanning /proc now")),
                        ],
                    );
                }
                Err(e) => {
                    sink.log.error(
                        "netlink_failed",
                        &[
                            ("error", Val::S(&e.to_string())),
                            ("action", Val::S("falling back to polling /proc")),
                        ],
                    );
                    self.connector = None;
                    self.obs.netlink_lost = true;
                    self.need_deep = true;
                    return;
                }
            }
        }
    }
}
