//! Commits: making what was appended durable, as the policy says, with at
//! most one fdatasync per call, and reporting the durable point in the
//! sidecar for readers.
//!
//! Invariant: no lock is held across a commit's fdatasync (only the rare
//! rotation and tail recovery sync under the lock); the durable point is
//! written after the sync it reports, so a reader never sees a seq called
//! durable that is not.

use super::{EventLog, FsyncPolicy};
use crate::store::StoreError;

impl EventLog {
    /// Makes what was appended durable as the policy says, with at most
    /// one fdatasync: `Always`, if anything was written since the last
    /// sync; `Interval`, if also the interval has passed (`now_ms` on any
    /// clock the caller uses consistently); `Never`, nothing. The durable
    /// point is then written to the sidecar if the lock is had within
    /// `lock_timeout` (otherwise at the next commit). Failures are counted
    /// and kept for [`EventLog::take_error`].
    pub fn commit(&mut self, now_ms: u64) {
        let due = match self.opts.fsync {
            FsyncPolicy::Always => true,
            FsyncPolicy::Interval(every) => {
                let every_ms = u64::try_from(every.as_millis()).unwrap_or(u64::MAX);
                now_ms < self.last_sync_ms || now_ms - self.last_sync_ms >= every_ms
            }
            FsyncPolicy::Never => false,
        };
        if due && self.unsynced {
            self.last_sync_ms = now_ms;
            self.sync_log();
        }
        if self.unreported.is_some() {
            self.report_durable();
        }
    }

    /// fdatasync of anything written and not yet synced, whatever the
    /// policy (for shutdown).
    pub fn sync(&mut self) -> Result<(), StoreError> {
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
        Ok(())
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
