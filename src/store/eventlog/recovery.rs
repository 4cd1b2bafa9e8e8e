//! Finding where the log stands before a write: which file is
//! `events.jsonl` now, how long it is, its last seq and how far it is known
//! durable, in O(1) from the sidecar when it matches the log as found and
//! otherwise from the log's tail (cutting a torn tail back).
//!
//! Invariant: a position is only ever computed under the writers' lock, so
//! the seq it yields is the next free one.

use std::io;
use std::os::unix::fs::MetadataExt;

use super::{open_log, EventLog, FsyncPolicy, Position};
use crate::store::reader::{generation_path, list_generations, scan_tail};
use crate::store::{open_read, StoreError};

impl EventLog {
    /// Finds where the log stands, under the lock: which file is
    /// `events.jsonl` now, its size and last seq, repairing a torn tail.
    pub(super) fn prepare_locked(&mut self) -> Result<Position, StoreError> {
        let meta = match std::fs::symlink_metadata(&self.log_path) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(StoreError::io("inspect", &self.log_path, e)),
        };
        let current = match (&self.log, &meta) {
            (Some(log), Some(m)) => log.dev == m.dev() && log.ino == m.ino(),
            _ => false,
        };
        let (dev, ino, size) = match meta {
            Some(m) if current => (m.dev(), m.ino(), m.len()),
            _ => {
                // Rotated by another writer, removed, or replaced: reopen.
                // Our old handle may hold unsynced lines; settle them first.
                if self.opts.fsync != FsyncPolicy::Never {
                    self.sync_log();
                }
                self.log = None;
                let log = open_log(&self.log_path)?;
                let (id, size) = ((log.dev, log.ino), log.size);
                self.log = Some(log);
                (id.0, id.1, size)
            }
        };
        // The sidecar is what the last writer, whoever it was, left; what
        // this appender remembers covers a sidecar that could not be written.
        if let Some(side) = self.read_sidecar() {
            if (side.size, side.ino) == (size, ino) {
                let durable = match self.known {
                    Some(k) if (k.dev, k.ino) == (dev, ino) => k.durable.max(side.durable),
                    _ => side.durable,
                };
                return Ok(Position {
                    dev,
                    ino,
                    size,
                    last_seq: side.seq,
                    durable: durable.min(side.seq),
                });
            }
        }
        if let Some(k) = self.known {
            if (k.dev, k.ino, k.size) == (dev, ino, size) {
                return Ok(k);
            }
        }
        self.recover_locked(dev, ino, size)
    }

    /// The slow path: the sidecar is missing or stale, so read the log's
    /// tail (and if the log is empty, the newest rotated generation's).
    /// What is in the file is then made durable once, so the durable point
    /// starts true (a crash may have left lines only in the page cache).
    fn recover_locked(&mut self, dev: u64, ino: u64, size: u64) -> Result<Position, StoreError> {
        let Some(log) = self.log.as_mut() else {
            return Err(StoreError::Invalid("event log is not open".into()));
        };
        let tail =
            scan_tail(&log.file, size).map_err(|e| StoreError::io("read", &self.log_path, e))?;
        let mut size = size;
        if tail.complete_len < size {
            log.file
                .set_len(tail.complete_len)
                .map_err(|e| StoreError::io("cut the torn tail of", &self.log_path, e))?;
            size = tail.complete_len;
            self.torn_repairs += 1;
        }
        let last_seq = match tail.last_seq {
            Some(s) => s,
            None => self.newest_generation_seq()?,
        };
        // An empty log holds nothing to sync; the generation its seq comes
        // from was synced before it was rotated.
        let mut durable = if size == 0 { last_seq } else { 0 };
        let syncing = size > 0 && self.opts.fsync != FsyncPolicy::Never;
        if let Some(log) = self.log.as_ref().filter(|_| syncing) {
            self.syncs += 1;
            match log.file.sync_data() {
                Ok(()) => durable = last_seq,
                Err(e) => {
                    self.sync_failures += 1;
                    self.error = Some(StoreError::io("fdatasync", &self.log_path, e));
                }
            }
        }
        let pos = Position {
            dev,
            ino,
            size,
            last_seq,
            durable,
        };
        self.write_sidecar(pos);
        Ok(pos)
    }

    fn newest_generation_seq(&self) -> Result<u64, StoreError> {
        let gens = list_generations(&self.dir_path)
            .map_err(|e| StoreError::io("list", &self.dir_path, e))?;
        for g in gens {
            let path = generation_path(&self.dir_path, g);
            let file = match open_read(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::io("open", &path, e)),
            };
            let size = file
                .metadata()
                .map_err(|e| StoreError::io("inspect", &path, e))?
                .len();
            let tail = scan_tail(&file, size).map_err(|e| StoreError::io("read", &path, e))?;
            if let Some(s) = tail.last_seq {
                return Ok(s);
            }
        }
        Ok(0)
    }
}
