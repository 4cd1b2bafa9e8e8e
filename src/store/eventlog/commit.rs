//! Commits: making what was appended durable, as the policy says, with at
//! most one fdatasync per call, and reporting the durable point in the
//! sidecar for readers.
//!
//! With [`EventLog::sync_in_background`] (the daemon) a commit never
//! waits for the disk: it hands the fdatasync to the `reeve-sync` thread
//! and returns; a later commit collects the outcome and reports the
//! durable point then (the daemon commits at every wakeup and, while a
//! sync is in flight, wakes within [`REPORT_WITHIN_MS`] for it).
//! Lines appended while a sync is in flight join the next one, so there is
//! still at most one fdatasync per commit and one in flight at a time.
//!
//! Invariant: no lock is held across a commit's fdatasync (only the rare
//! rotation and tail recovery sync under the lock); the durable point is
//! written after the sync it reports, so a reader never sees a seq called
//! durable that is not.

use std::os::fd::OwnedFd;

use super::syncer::Syncer;
use super::{EventLog, FsyncPolicy};
use crate::store::StoreError;

/// How soon a caller with a background sync in flight should commit again
/// to collect it and report the durable point: readers (`reeve events
/// --follow`) see an event at most this long after its sync returned, and
/// a busy loop, which commits at every wakeup anyway, spends no wakeup of
/// its own on it.
pub const REPORT_WITHIN_MS: u64 = 20;

impl EventLog {
    /// Makes what was appended durable as the policy says, with at most
    /// one fdatasync: `Always`, if anything was written since the last
    /// sync; `Interval`, if also the interval has passed (`now_ms` on any
    /// clock the caller uses consistently); `Never`, nothing. The durable
    /// point is then written to the sidecar if the lock is had within
    /// `lock_timeout` (otherwise at the next commit). Failures are counted
    /// and kept for [`EventLog::take_error`].
    pub fn commit(&mut self, now_ms: u64) {
        self.collect_sync();
        let due = match self.opts.fsync {
            FsyncPolicy::Always => true,
            FsyncPolicy::Interval(every) => {
                let every_ms = u64::try_from(every.as_millis()).unwrap_or(u64::MAX);
                now_ms < self.last_sync_ms || now_ms - self.last_sync_ms >= every_ms
            }
            FsyncPolicy::Never => false,
        };
        if due && self.unsynced && self.in_flight.is_none() {
            self.last_sync_ms = now_ms;
            if self.syncer.is_some() {
                self.start_sync();
            } else {
                self.sync_log();
            }
        }
        if self.unreported.is_some() {
            self.report_durable();
        }
    }

    /// From now on, commits hand their fdatasync to a thread of its own
    /// and never wait for the disk (see the module's text). Only for a
    /// group-committing log whose policy syncs at all.
    pub fn sync_in_background(&mut self) -> Result<(), StoreError> {
        if !self.opts.group_commit || self.opts.fsync == FsyncPolicy::Never || self.syncer.is_some()
        {
            return Ok(());
        }
        let syncer = Syncer::start()
            .map_err(|e| StoreError::io("start the sync thread of", &self.log_path, e))?;
        self.syncer = Some(syncer);
        Ok(())
    }

    /// Whether a durable point waits to be written to the sidecar (its
    /// sync ended but the lock was busy): the caller commits again soon.
    pub fn report_pending(&self) -> bool {
        self.unreported.is_some()
    }

    /// Whether a background sync is in flight: the caller commits again
    /// within [`REPORT_WITHIN_MS`] to report it.
    pub fn sync_in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Hands the open log's fdatasync to the thread. A duplicate fd goes
    /// with it, so rotation cannot close the file under the sync.
    fn start_sync(&mut self) {
        let (Some(log), Some(syncer)) = (&self.log, &self.syncer) else {
            return;
        };
        let fd = match log.file.try_clone() {
            Ok(f) => OwnedFd::from(f),
            Err(e) => {
                // No fd to spare (EMFILE): sync here rather than not at all.
                self.error = Some(StoreError::io("duplicate the fd of", &self.log_path, e));
                self.sync_log();
                return;
            }
        };
        let point = self
            .known
            .filter(|k| (k.dev, k.ino) == (log.dev, log.ino))
            .map(|k| (k.dev, k.ino, k.last_seq));
        match syncer.request(fd) {
            Ok(()) => {
                self.syncs += 1;
                self.unsynced = false;
                self.in_flight = Some(point);
            }
            Err(_) => {
                self.syncer = None;
                self.error = Some(StoreError::Invalid(
                    "the audit log's sync thread is gone; syncing on the caller from now on".into(),
                ));
                self.sync_log();
            }
        }
    }

    /// Takes the outcome of the background sync in flight, if it ended:
    /// success moves the durable point to the line it covered; failure is
    /// counted and kept for [`EventLog::take_error`], and the lines are
    /// synced again at the next commit.
    fn collect_sync(&mut self) {
        let Some(point) = self.in_flight else {
            return;
        };
        let Some(result) = self.syncer.as_ref().and_then(Syncer::poll) else {
            return;
        };
        self.in_flight = None;
        self.apply_sync(point, result);
    }

    fn apply_sync(&mut self, point: Option<(u64, u64, u64)>, result: std::io::Result<()>) {
        match result {
            Ok(()) => {
                let durable = self.durable();
                if let Some(p) = point.filter(|p| p.2 > durable) {
                    self.unreported = Some(p);
                }
            }
            Err(e) => {
                self.sync_failures += 1;
                self.unsynced = true;
                if e.kind() == std::io::ErrorKind::BrokenPipe {
                    self.syncer = None;
                }
                self.error = Some(StoreError::io("fdatasync", &self.log_path, e));
            }
        }
    }

    /// fdatasync of anything written and not yet synced, whatever the
    /// policy (for shutdown), after waiting for the background sync in
    /// flight. A failure of that one, or any other problem not yet taken
    /// ([`EventLog::take_error`]), is returned, so a stopping caller says
    /// it even when the sync here succeeds.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        if let (Some(point), Some(syncer)) = (self.in_flight, self.syncer.as_mut()) {
            let result = syncer.wait(super::syncer::EXIT_WAIT);
            let hung = matches!(&result, Err(e) if e.kind() == std::io::ErrorKind::TimedOut);
            self.in_flight = None;
            self.apply_sync(point, result);
            if hung {
                // A second fdatasync on the same disk would hang as well.
                return Err(self.error.take().unwrap_or_else(|| {
                    StoreError::Invalid("the audit log's fdatasync hung".into())
                }));
            }
        }
        if self.unsynced {
            if let Some(log) = &self.log {
                self.syncs += 1;
                log.file
                    .sync_data()
                    .map_err(|e| StoreError::io("fdatasync", &self.log_path, e))?;
            }
            self.unsynced = false;
            self.unreported = self.known.map(|k| (k.dev, k.ino, k.last_seq));
        }
        if self.unreported.is_some() {
            self.report_durable();
        }
        match self.error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// fdatasync of the open log if this appender left lines unsynced.
    pub(super) fn sync_log(&mut self) {
        if self.unsynced {
            self.sync_now();
        }
    }

    /// One fdatasync of the open log; true when it succeeded. Everything in
    /// the file when it is called is then on stable storage, whoever wrote
    /// it, so the durable point moves to the last line this appender knows.
    pub(super) fn sync_now(&mut self) -> bool {
        let Some(log) = &self.log else {
            return false;
        };
        self.syncs += 1;
        match log.file.sync_data() {
            Ok(()) => {
                self.unsynced = false;
                if let Some(k) = self.known.filter(|k| (k.dev, k.ino) == (log.dev, log.ino)) {
                    if k.last_seq > k.durable {
                        self.unreported = Some((k.dev, k.ino, k.last_seq));
                    }
                }
                true
            }
            Err(e) => {
                self.sync_failures += 1;
                self.error = Some(StoreError::io("fdatasync", &self.log_path, e));
                false
            }
        }
    }

    /// Writes the durable point into the sidecar, under the lock but
    /// after the fdatasync (which no lock is held across). A point for a
    /// file that has since been rotated is dropped: rotation synced it.
    fn report_durable(&mut self) {
        let Some((dev, ino, seq)) = self.unreported else {
            return;
        };
        match self.acquire() {
            Ok(true) => {}
            // Busy: the next commit reports it.
            Ok(false) => return,
            Err(e) => {
                self.error = Some(e);
                return;
            }
        }
        match self.prepare_locked() {
            Ok(mut pos) => {
                if (pos.dev, pos.ino) == (dev, ino) && pos.durable < seq {
                    pos.durable = seq.min(pos.last_seq);
                    self.write_sidecar(pos);
                }
                self.known = Some(pos);
                self.unreported = None;
            }
            Err(e) => self.error = Some(e),
        }
        self.release();
    }
}
