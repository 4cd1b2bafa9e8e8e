//! The audit event log: `events.jsonl` in the state directory, one JSON
//! object per line, `{"seq":N,"ts_ms":T,"event":"name",..fields}`, shared by
//! the daemon and CLI commands.
//!
//! Invariant: sequence numbers are unique and gap-free across writers and
//! across rotation, and the file only ever holds whole lines. Every write
//! happens under an exclusive flock on `events.lock` ([`lock`]), held for
//! the write, never across a commit's fdatasync; the next seq comes in O(1)
//! from the sidecar `events.seq` ([`sidecar`]) when it matches the log as
//! found, and otherwise from the log's last complete line ([`recovery`]).
//! A torn tail left by a crash is cut back before the next write; a write
//! the disk refuses is cut back and queued in memory for
//! [`EventLog::flush_pending`]; a full log is rotated ([`rotation`]).
//!
//! Durability is a commit ([`commit`]): [`EventLog::commit`] makes everything appended
//! since the last commit durable with one fdatasync, and records the
//! durable point in the sidecar for readers ([`durable_seq`]). With
//! `group_commit` (the daemon) appends never sync and the caller commits
//! once per loop wakeup; without it (CLI commands) every append commits
//! before it returns. Steady-state appends format into reused buffers and
//! allocate nothing.

mod commit;
mod lock;
mod recovery;
mod rotation;
mod sidecar;
mod syncer;

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::reader::{LOCK_NAME, LOG_NAME};
use super::{open_private, StateDir, StoreError};
use crate::log::{json_str, json_val, Val};
pub use commit::REPORT_WITHIN_MS;
use lock::open_lock;
pub use sidecar::durable_seq;
use sidecar::{SEQ_NAME, SIDECAR_LEN};

/// The largest in-memory queue a caller may ask for.
const MAX_QUEUE: usize = 1 << 20;

/// Field names the line itself uses; a field may not shadow them.
const RESERVED: [&str; 3] = ["seq", "ts_ms", "event"];

/// How far appended lines are forced to stable storage at a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// One fdatasync at every commit that has something to sync: durable by
    /// the end of the append (per-append mode) or, in group commit, by the
    /// sync requested at the commit after it (on the caller, or on the
    /// sync thread with [`EventLog::sync_in_background`]).
    Always,
    /// fdatasync at a commit only if the interval has passed since the
    /// last one.
    Interval(Duration),
    /// Leave it to the kernel.
    Never,
}

#[derive(Debug, Clone)]
pub struct LogOptions {
    pub fsync: FsyncPolicy,
    /// Rotate once the log reaches this many bytes.
    pub rotate_bytes: u64,
    /// Rotated generations kept (`events.jsonl.1` ..= `.keep`); at least 1.
    pub keep: u32,
    /// Events held in memory while the log cannot be written.
    pub queue_capacity: usize,
    /// How long an append waits for another writer's lock before queueing;
    /// zero tries once.
    pub lock_timeout: Duration,
    /// Appends do not sync; the caller calls [`EventLog::commit`] once per
    /// batch (the daemon: per loop wakeup). Off: every append commits.
    pub group_commit: bool,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            fsync: FsyncPolicy::Always,
            rotate_bytes: 64 << 20,
            keep: 5,
            queue_capacity: 1024,
            lock_timeout: Duration::from_millis(200),
            group_commit: false,
        }
    }
}

/// Where the log stands: which file, how long, its last seq, and the
/// highest seq known to be on stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Position {
    dev: u64,
    ino: u64,
    size: u64,
    last_seq: u64,
    durable: u64,
}

struct OpenLog {
    file: File,
    dev: u64,
    ino: u64,
    /// The size when it was opened.
    size: u64,
}

enum Attempt {
    Landed(u64),
    /// The disk refused (ENOSPC, EDQUOT, EIO); the event can be retried.
    Refused(StoreError),
}

/// An appender to the audit event log. Cheap to keep open; holds the lock
/// only for the duration of one append, flush or durable-point report.
pub struct EventLog {
    dir: File,
    dir_path: PathBuf,
    log_path: PathBuf,
    lock_path: PathBuf,
    opts: LogOptions,
    lock: File,
    /// (dev, inode) of `lock`, to notice the lock file being replaced.
    lock_id: (u64, u64),
    sidecar: File,
    log: Option<OpenLog>,
    /// What this appender last left behind; valid while the file still has
    /// that identity and size (nobody else has written since).
    known: Option<Position>,
    /// The position validated under the currently held lock.
    locked: Option<Position>,
    body: String,
    line: String,
    side_buf: String,
    queue: VecDeque<String>,
    spare: Vec<String>,
    lost: u64,
    /// The seq of the last line this appender wrote.
    last_written: u64,
    torn_repairs: u64,
    sync_failures: u64,
    syncs: u64,
    refusals: u64,
    /// Lines written since the last successful fdatasync.
    unsynced: bool,
    /// (dev, inode, seq) the last fdatasync made durable, until the
    /// sidecar says so.
    unreported: Option<(u64, u64, u64)>,
    last_sync_ms: u64,
    /// The background fdatasync, once [`EventLog::sync_in_background`]
    /// started it.
    syncer: Option<syncer::Syncer>,
    /// The sync handed to it and not yet ended: (dev, inode, seq) of the
    /// last line it covers, when this appender knew it.
    in_flight: Option<Option<(u64, u64, u64)>>,
    error: Option<StoreError>,
    /// Untrusted files moved out of the way at open, for the caller to
    /// report.
    set_aside: Vec<super::SetAside>,
}

impl EventLog {
    /// Opens (creating 0600 if missing) the log, its lock file and its
    /// sidecar in `dir`. A symlink at any of them is an error, never followed.
    pub fn open(dir: &StateDir, opts: LogOptions) -> Result<EventLog, StoreError> {
        if opts.keep == 0 {
            return Err(StoreError::Invalid(
                "event log keep must be at least 1: rotation needs a generation to carry the \
                 sequence on"
                    .into(),
            ));
        }
        if opts.rotate_bytes == 0 {
            return Err(StoreError::Invalid(
                "event log rotate_bytes must be more than 0".into(),
            ));
        }
        if opts.queue_capacity > MAX_QUEUE {
            return Err(StoreError::Invalid(format!(
                "event log queue_capacity {} is more than the maximum {MAX_QUEUE}",
                opts.queue_capacity
            )));
        }
        let base = dir.path();
        let lock_path = base.join(LOCK_NAME);
        let seq_path = base.join(SEQ_NAME);
        let log_path = base.join(LOG_NAME);
        // A file another user owns, linked in from elsewhere, or writable
        // by others is moved aside before anything is opened, so nobody
        // else's file is appended to or trusted for a position.
        let now = crate::sys::realtime_ms();
        let mut set_aside = Vec::new();
        for path in [&lock_path, &seq_path, &log_path] {
            set_aside.extend(super::set_aside_if_untrusted(path, now)?);
        }
        let (lock, lock_id) = open_lock(&lock_path)?;
        let sidecar = open_private(&seq_path, false)
            .map_err(|e| StoreError::io("open event log sidecar", &seq_path, e))?;
        let log = open_log(&log_path)?;
        let this = EventLog {
            dir: dir.try_clone_handle()?,
            dir_path: base.to_path_buf(),
            log_path,
            lock_path,
            queue: VecDeque::with_capacity(opts.queue_capacity),
            spare: Vec::with_capacity(opts.queue_capacity),
            opts,
            lock,
            lock_id,
            sidecar,
            log: Some(log),
            known: None,
            locked: None,
            body: String::with_capacity(1024),
            line: String::with_capacity(1024),
            side_buf: String::with_capacity(SIDECAR_LEN),
            lost: 0,
            last_written: 0,
            torn_repairs: 0,
            sync_failures: 0,
            syncs: 0,
            refusals: 0,
            unsynced: false,
            unreported: None,
            last_sync_ms: 0,
            syncer: None,
            in_flight: None,
            error: None,
            set_aside,
        };
        if this.opts.fsync != FsyncPolicy::Never {
            this.sync_dir()?;
        }
        Ok(this)
    }

    /// Appends one event. `Ok(Some(seq))` when it was written; `Ok(None)`
    /// when it could not be written now (another writer held the lock past
    /// `lock_timeout`, the disk refused, or earlier events are still
    /// queued) and was queued for [`EventLog::flush_pending`], or counted in
    /// [`EventLog::lost`] if the queue is full. `Err` when it can never be
    /// written as asked (a symlink at the log, a reserved field name); the
    /// event is then neither written nor queued. Without `group_commit`
    /// the line is committed before this returns.
    pub fn append(
        &mut self,
        ts_ms: u64,
        event: &str,
        fields: &[(&str, Val<'_>)],
    ) -> Result<Option<u64>, StoreError> {
        if let Some((k, _)) = fields.iter().find(|(k, _)| RESERVED.contains(k)) {
            return Err(StoreError::Invalid(format!(
                "event {event:?} has a field named {k:?}, which the log line itself uses"
            )));
        }
        let mut body = std::mem::take(&mut self.body);
        format_body(&mut body, ts_ms, event, fields);
        let result = self.append_body(&body);
        self.body = body;
        if self.commits_each_append() {
            self.commit(ts_ms);
        }
        result
    }

    /// Formats one event and queues it, unwritten, for the next
    /// [`EventLog::flush_pending_within`]: the daemon holds the lines of a
    /// wakeup's events until its placements are done, so no write waits
    /// between an exec and its move. `Ok(false)` when the queue is half
    /// full: the caller appends instead, so holding never fills it.
    pub fn defer(
        &mut self,
        ts_ms: u64,
        event: &str,
        fields: &[(&str, Val<'_>)],
    ) -> Result<bool, StoreError> {
        if self.queue.len() >= self.opts.queue_capacity / 2 {
            return Ok(false);
        }
        if let Some((k, _)) = fields.iter().find(|(k, _)| RESERVED.contains(k)) {
            return Err(StoreError::Invalid(format!(
                "event {event:?} has a field named {k:?}, which the log line itself uses"
            )));
        }
        let mut body = std::mem::take(&mut self.body);
        format_body(&mut body, ts_ms, event, fields);
        self.enqueue(&body);
        self.body = body;
        Ok(true)
    }

    /// Retries queued events in order, waiting for the lock at most
    /// `lock_timeout`; returns how many landed.
    pub fn flush_pending(&mut self) -> usize {
        self.flush_pending_within(self.opts.lock_timeout)
    }

    /// The same, waiting for the lock at most `wait` (a stopping daemon,
    /// whose loop is over, may wait for a writer to finish).
    pub fn flush_pending_within(&mut self, wait: Duration) -> usize {
        if self.queue.is_empty() {
            return 0;
        }
        match self.acquire_within(wait) {
            Ok(true) => {}
            Ok(false) => return 0,
            Err(e) => {
                self.error = Some(e);
                return 0;
            }
        }
        let landed = self.drain_locked();
        self.release();
        if landed > 0 && self.commits_each_append() {
            self.commit(crate::sys::realtime_ms());
        }
        landed
    }

    /// Events queued and not yet written.
    pub fn pending(&self) -> usize {
        self.queue.len()
    }

    /// The seq of the last line this appender wrote (appended or from its
    /// queue); 0 before the first.
    pub fn last_written(&self) -> u64 {
        self.last_written
    }

    /// Events dropped because the queue was full.
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// Torn tails (a line cut short by a crash) cut off before appending.
    pub fn torn_repairs(&self) -> u64 {
        self.torn_repairs
    }

    /// fdatasync calls that failed; the lines stay written, their
    /// durability is unconfirmed.
    pub fn sync_failures(&self) -> u64 {
        self.sync_failures
    }

    /// fdatasync calls made on the log, successful or not: what durability
    /// costs, counted rather than assumed.
    pub fn syncs(&self) -> u64 {
        self.syncs
    }

    /// Writes the disk refused (full, over quota, I/O error); each left
    /// its event queued.
    pub fn refusals(&self) -> u64 {
        self.refusals
    }

    /// The highest seq this appender knows to be on stable storage.
    pub fn durable(&self) -> u64 {
        let reported = self.known.map_or(0, |k| k.durable);
        reported.max(self.unreported.map_or(0, |u| u.2))
    }

    /// Untrusted files that [`EventLog::open`] moved aside; taking them
    /// clears them.
    pub fn take_set_aside(&mut self) -> Vec<super::SetAside> {
        std::mem::take(&mut self.set_aside)
    }

    /// The most recent problem that did not fail the call that met it: a
    /// refused write that was queued, a failed fdatasync or rotation. The
    /// caller logs it; taking it clears it.
    pub fn take_error(&mut self) -> Option<StoreError> {
        self.error.take()
    }

    /// Per-append mode with `Always`: each append is durable before it
    /// returns. (`Interval` commits only when the caller says, on its
    /// clock.)
    fn commits_each_append(&self) -> bool {
        !self.opts.group_commit && self.opts.fsync == FsyncPolicy::Always
    }

    /// Whatever goes wrong, the event is not lost: it lands, or it waits
    /// in the queue (counted in `lost` only when the queue is full) and the
    /// reason is kept for [`EventLog::take_error`].
    fn append_body(&mut self, body: &str) -> Result<Option<u64>, StoreError> {
        match self.acquire() {
            Ok(true) => {}
            Ok(false) => {
                self.enqueue(body);
                return Ok(None);
            }
            Err(e) => {
                self.enqueue(body);
                self.error = Some(e);
                return Ok(None);
            }
        }
        let result = self.append_locked(body);
        self.release();
        result
    }

    fn append_locked(&mut self, body: &str) -> Result<Option<u64>, StoreError> {
        self.drain_locked();
        if !self.queue.is_empty() {
            // Earlier events wait; this one may not overtake them.
            self.enqueue(body);
            return Ok(None);
        }
        match self.land(body) {
            Ok(Attempt::Landed(seq)) => Ok(Some(seq)),
            Ok(Attempt::Refused(e)) | Err(e) => {
                self.enqueue(body);
                self.error = Some(e);
                Ok(None)
            }
        }
    }

    /// Writes queued events in order until one does not land.
    fn drain_locked(&mut self) -> usize {
        let mut landed = 0;
        while let Some(body) = self.queue.pop_front() {
            match self.land(&body) {
                Ok(Attempt::Landed(_)) => {
                    landed += 1;
                    self.spare.push(body);
                }
                Ok(Attempt::Refused(e)) | Err(e) => {
                    self.queue.push_front(body);
                    self.error = Some(e);
                    break;
                }
            }
        }
        landed
    }

    fn enqueue(&mut self, body: &str) {
        if self.queue.len() >= self.opts.queue_capacity {
            self.lost += 1;
            return;
        }
        let mut slot = self.spare.pop().unwrap_or_default();
        slot.clear();
        slot.push_str(body);
        self.queue.push_back(slot);
    }

    /// Writes one line under the lock, rotating afterwards if it is due.
    fn land(&mut self, body: &str) -> Result<Attempt, StoreError> {
        let mut pos = match self.locked {
            Some(p) => p,
            None => match self.prepare_locked() {
                Ok(p) => p,
                Err(e) if is_refusal(&e) => {
                    self.refusals += 1;
                    return Ok(Attempt::Refused(e));
                }
                Err(e) => return Err(e),
            },
        };
        let Some(seq) = pos.last_seq.checked_add(1) else {
            return Err(StoreError::Invalid(
                "event log sequence number is exhausted".into(),
            ));
        };
        let Some(log) = self.log.as_mut() else {
            return Err(StoreError::Invalid("event log is not open".into()));
        };
        self.line.clear();
        // Formatting into a String cannot fail.
        let _ = write!(self.line, "{{\"seq\":{seq}");
        self.line.push_str(body);
        if let Err(e) = log.file.write_all(self.line.as_bytes()) {
            // Never leave part of a line behind: cut back to where it began.
            // If even that fails, forget what we knew so the next writer
            // finds the torn tail and repairs it.
            if log.file.set_len(pos.size).is_err() {
                self.known = None;
                self.locked = None;
            }
            let err = StoreError::io("append to", &self.log_path, e);
            if is_refusal(&err) {
                self.refusals += 1;
                return Ok(Attempt::Refused(err));
            }
            return Err(err);
        }
        pos.size += self.line.len() as u64;
        pos.last_seq = seq;
        self.last_written = seq;
        self.known = Some(pos);
        self.locked = Some(pos);
        self.write_sidecar(pos);
        self.unsynced = self.opts.fsync != FsyncPolicy::Never;
        if pos.size >= self.opts.rotate_bytes {
            if let Err(e) = self.rotate_locked(pos) {
                self.known = None;
                self.locked = None;
                self.error = Some(e);
            }
        }
        Ok(Attempt::Landed(seq))
    }

    fn sync_dir(&self) -> Result<(), StoreError> {
        self.dir
            .sync_all()
            .map_err(|e| StoreError::io("fsync directory", &self.dir_path, e))
    }
}

fn open_log(path: &Path) -> Result<OpenLog, StoreError> {
    let file = open_private(path, true).map_err(|e| StoreError::io("open", path, e))?;
    let meta = file
        .metadata()
        .map_err(|e| StoreError::io("inspect", path, e))?;
    Ok(OpenLog {
        dev: meta.dev(),
        ino: meta.ino(),
        size: meta.len(),
        file,
    })
}

fn is_refusal(e: &StoreError) -> bool {
    match e {
        StoreError::Io { source, .. } => super::is_disk_refusal(source),
        _ => false,
    }
}

/// Formats everything after `{"seq":N`: `,"ts_ms":T,"event":..,fields}\n`.
fn format_body(out: &mut String, ts_ms: u64, event: &str, fields: &[(&str, Val<'_>)]) {
    out.clear();
    let _ = write!(out, ",\"ts_ms\":{ts_ms},\"event\":");
    json_str(out, event);
    for (k, v) in fields {
        out.push(',');
        json_str(out, k);
        out.push(':');
        json_val(out, v);
    }
    out.push_str("}\n");
}

pub use super::reader::{read_events, EventReader};

#[cfg(test)]
mod tests;

#[cfg(test)]
mod commit_tests;
