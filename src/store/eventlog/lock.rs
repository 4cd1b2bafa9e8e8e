//! The writers' lock on `events.lock`: taken and released around each
//! append or flush, never held across anything slow but the write itself.
//!
//! Invariant: a lock held on a lock file that has since been removed or
//! replaced excludes nobody, so it never counts: the writer moves to the
//! file now at the name. A writer waits at most `lock_timeout` (zero for the
//! daemon, which tries once and queues), never without bound.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use super::EventLog;
use crate::store::{open_private, StoreError};

impl EventLog {
    /// Takes the exclusive lock, waiting up to `lock_timeout`; `Ok(false)`
    /// when another writer kept it that long.
    pub(super) fn acquire(&mut self) -> Result<bool, StoreError> {
        self.acquire_within(self.opts.lock_timeout)
    }

    /// Takes the exclusive lock, waiting up to `wait` (zero: one try).
    pub(super) fn acquire_within(&mut self, wait: Duration) -> Result<bool, StoreError> {
        let deadline = Instant::now() + wait;
        let mut pause = Duration::from_micros(500);
        let mut reopened = 0;
        loop {
            match fs2::FileExt::try_lock_exclusive(&self.lock) {
                Ok(()) => {
                    match self.lock_is_current() {
                        Ok(true) => {
                            self.locked = None;
                            return Ok(true);
                        }
                        Ok(false) => {}
                        Err(e) => {
                            // The inspection error is what the caller
                            // reports; an unlock that fails too changes
                            // nothing, since the fd stays ours.
                            let _ = fs2::FileExt::unlock(&self.lock);
                            return Err(e);
                        }
                    }
                    // The lock file was removed or replaced (an operator
                    // clearing a "stale lock"): a lock on the old inode
                    // excludes nobody, so move to the file now at the name
                    // (replacing the handle closes it, which unlocks it
                    // whatever this unlock says).
                    let _ = fs2::FileExt::unlock(&self.lock);
                    reopened += 1;
                    if reopened > 8 {
                        return Err(StoreError::Refused {
                            path: self.lock_path.clone(),
                            reason: "the event log lock file keeps being replaced",
                        });
                    }
                    (self.lock, self.lock_id) = open_lock(&self.lock_path)?;
                    continue;
                }
                Err(e) if is_contended(&e) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(StoreError::io("lock", &self.lock_path, e)),
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            std::thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(Duration::from_millis(10));
        }
    }

    fn lock_is_current(&self) -> Result<bool, StoreError> {
        match std::fs::symlink_metadata(&self.lock_path) {
            Ok(m) => Ok((m.dev(), m.ino()) == self.lock_id),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(StoreError::io("inspect", &self.lock_path, e)),
        }
    }

    pub(super) fn release(&mut self) {
        self.locked = None;
        if let Err(e) = fs2::FileExt::unlock(&self.lock) {
            // Closing the fd would release it; keeping it open and locked
            // would stall every other writer, so say so loudly.
            self.error = Some(StoreError::io("unlock", &self.lock_path, e));
        }
    }
}

pub(super) fn open_lock(path: &Path) -> Result<(File, (u64, u64)), StoreError> {
    let file =
        open_private(path, false).map_err(|e| StoreError::io("open event log lock", path, e))?;
    let meta = file
        .metadata()
        .map_err(|e| StoreError::io("inspect", path, e))?;
    Ok((file, (meta.dev(), meta.ino())))
}

fn is_contended(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
        || e.raw_os_error() == fs2::lock_contended_error().raw_os_error()
}
