//! Rotation: `events.jsonl` becomes `events.jsonl.1` (each `.k` moves to
//! `.k+1`, what falls beyond `keep` is removed) and an empty log starts;
//! the sequence carries on from the rotated generation.
//!
//! Invariant: a rotation happens under the writers' lock, after the line
//! that made it due, and the old generation is synced before it is renamed.

use std::io;

use super::{open_log, EventLog, FsyncPolicy, Position};
use crate::store::reader::{generation_path, list_generations};
use crate::store::StoreError;

impl EventLog {
    /// Moves `events.jsonl` to `.1` (and each `.k` to `.k+1`, dropping what
    /// falls beyond `keep`) and starts an empty log; seq carries on.
    /// The generation being rotated away is synced whoever wrote it, so
    /// everything in it is durable and the fresh log starts durable.
    pub(super) fn rotate_locked(&mut self, pos: Position) -> Result<(), StoreError> {
        let mut durable = pos.durable;
        if self.opts.fsync != FsyncPolicy::Never && self.sync_now() {
            durable = pos.last_seq;
        }
        for k in (1..self.opts.keep).rev() {
            let from = generation_path(&self.dir_path, k);
            let to = generation_path(&self.dir_path, k + 1);
            match std::fs::rename(&from, &to) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io("rotate", &from, e)),
            }
        }
        let first = generation_path(&self.dir_path, 1);
        std::fs::rename(&self.log_path, &first)
            .map_err(|e| StoreError::io("rotate", &self.log_path, e))?;
        self.log = None;
        self.known = None;
        self.locked = None;
        // Not O_EXCL: a writer opening the log for the first time (which
        // takes no lock) may have created the empty file a moment ago.
        let log = open_log(&self.log_path)?;
        let size = log.size;
        let fresh = Position {
            dev: log.dev,
            ino: log.ino,
            size,
            last_seq: pos.last_seq,
            durable,
        };
        self.log = Some(log);
        if size == 0 {
            self.known = Some(fresh);
            self.locked = Some(fresh);
            self.write_sidecar(fresh);
        }
        self.drop_old_generations()?;
        if self.opts.fsync != FsyncPolicy::Never {
            self.sync_dir()?;
        }
        Ok(())
    }

    /// Removes generations numbered beyond `keep` (left by a larger `keep`
    /// in an earlier configuration).
    fn drop_old_generations(&self) -> Result<(), StoreError> {
        let gens = list_generations(&self.dir_path)
            .map_err(|e| StoreError::io("list", &self.dir_path, e))?;
        for g in gens.into_iter().filter(|&g| g > self.opts.keep) {
            let path = generation_path(&self.dir_path, g);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io("remove old generation", &path, e)),
            }
        }
        Ok(())
    }
}
