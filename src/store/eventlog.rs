//! The audit event log: `events.jsonl` in the state directory, one JSON
//! object per line, `{"seq":N,"ts_ms":T,"event":"name",..fields}`, shared by
//! the daemon and CLI commands.
//!
//! Invariant: sequence numbers are unique and gap-free across writers and
//! across rotation, and the file only ever holds whole lines. Every write
//! happens under an exclusive flock on `events.lock`; the next seq comes in
//! O(1) from the sidecar `events.seq` (`<last_seq> <log_size> <inode>
//! <check>`), trusted only when it matches the log as found, and otherwise
//! from the log's last complete line. A torn tail left by a crash is cut
//! back before the next write; a write the disk refuses is cut back and
//! queued in memory for [`EventLog::flush_pending`]. Steady-state appends
//! format into reused buffers and allocate nothing.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Write as _};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::reader::{self, generation_path, list_generations, scan_tail, LOCK_NAME, LOG_NAME};
use super::{open_private, open_read, StateDir, StoreError};
use crate::log::{json_str, json_val, Val};

const SEQ_NAME: &str = "events.seq";

/// `<seq:20> <size:20> <ino:20> <check:16 hex>\n`: fixed width, so one
/// pwrite at offset 0 replaces it whole.
const SIDECAR_LEN: usize = 20 + 1 + 20 + 1 + 20 + 1 + 16 + 1;

/// The largest in-memory queue a caller may ask for.
const MAX_QUEUE: usize = 1 << 20;

/// Field names the line itself uses; a field may not shadow them.
const RESERVED: [&str; 3] = ["seq", "ts_ms", "event"];

/// When appended lines are forced to stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// fdatasync after every append.
    Always,
    /// fdatasync at most once per interval, from [`EventLog::sync_if_due`].
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
    /// How long an append waits for another writer's lock before queueing.
    pub lock_timeout: Duration,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            fsync: FsyncPolicy::Always,
            rotate_bytes: 64 << 20,
            keep: 5,
            queue_capacity: 1024,
            lock_timeout: Duration::from_millis(200),
        }
    }
}

/// Where the log stands: which file, how long, and the last seq in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Position {
    dev: u64,
    ino: u64,
    size: u64,
    last_seq: u64,
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
/// only for the duration of one append or flush.
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
    torn_repairs: u64,
    sync_failures: u64,
    unsynced: bool,
    last_sync_ms: u64,
    error: Option<StoreError>,
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
            torn_repairs: 0,
            sync_failures: 0,
            unsynced: false,
            last_sync_ms: 0,
            error: None,
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
    /// event is then neither written nor queued.
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
        result
    }

    /// Retries queued events in order; returns how many landed.
    pub fn flush_pending(&mut self) -> usize {
        if self.queue.is_empty() {
            return 0;
        }
        match self.acquire() {
            Ok(true) => {}
            Ok(false) => return 0,
            Err(e) => {
                self.error = Some(e);
                return 0;
            }
        }
        let landed = self.drain_locked();
        self.release();
        landed
    }

    /// Events queued and not yet written.
    pub fn pending(&self) -> usize {
        self.queue.len()
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

    /// The most recent problem that did not fail the call that met it: a
    /// refused write that was queued, a failed fdatasync or rotation. The
    /// caller logs it; taking it clears it.
    pub fn take_error(&mut self) -> Option<StoreError> {
        self.error.take()
    }

    /// For [`FsyncPolicy::Interval`]: fdatasync if lines were written since
    /// the last sync and the interval has passed (`now_ms` on any clock the
    /// caller uses consistently). Other policies: nothing.
    pub fn sync_if_due(&mut self, now_ms: u64) {
        let FsyncPolicy::Interval(every) = self.opts.fsync else {
            return;
        };
        let every_ms = u64::try_from(every.as_millis()).unwrap_or(u64::MAX);
        let due = now_ms < self.last_sync_ms || now_ms - self.last_sync_ms >= every_ms;
        if self.unsynced && due {
            self.last_sync_ms = now_ms;
            self.sync_log();
        }
    }

    /// fdatasync of anything written and not yet synced, whatever the
    /// policy (for shutdown).
    pub fn sync(&mut self) -> Result<(), StoreError> {
        if !self.unsynced {
            return Ok(());
        }
        if let Some(log) = &self.log {
            log.file
                .sync_data()
                .map_err(|e| StoreError::io("fdatasync", &self.log_path, e))?;
        }
        self.unsynced = false;
        Ok(())
    }

    fn append_body(&mut self, body: &str) -> Result<Option<u64>, StoreError> {
        if !self.acquire()? {
            self.enqueue(body);
            return Ok(None);
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
        match self.land(body)? {
            Attempt::Landed(seq) => Ok(Some(seq)),
            Attempt::Refused(e) => {
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

    /// Takes the exclusive lock, waiting up to `lock_timeout`; `Ok(false)`
    /// when another writer kept it that long.
    fn acquire(&mut self) -> Result<bool, StoreError> {
        let deadline = Instant::now() + self.opts.lock_timeout;
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
                            let _ = fs2::FileExt::unlock(&self.lock);
                            return Err(e);
                        }
                    }
                    // The lock file was removed or replaced (an operator
                    // clearing a "stale lock"): a lock on the old inode
                    // excludes nobody, so move to the file now at the name.
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

    fn release(&mut self) {
        self.locked = None;
        if let Err(e) = fs2::FileExt::unlock(&self.lock) {
            // Closing the fd would release it; keeping it open and locked
            // would stall every other writer, so say so loudly.
            self.error = Some(StoreError::io("unlock", &self.lock_path, e));
        }
    }

    /// Writes one line under the lock, rotating afterwards if it is due.
    fn land(&mut self, body: &str) -> Result<Attempt, StoreError> {
        let mut pos = match self.locked {
            Some(p) => p,
            None => match self.prepare_locked() {
                Ok(p) => p,
                Err(e) if is_refusal(&e) => return Ok(Attempt::Refused(e)),
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
                return Ok(Attempt::Refused(err));
            }
            return Err(err);
        }
        pos.size += self.line.len() as u64;
        pos.last_seq = seq;
        self.known = Some(pos);
        self.locked = Some(pos);
        self.write_sidecar(pos);
        match self.opts.fsync {
            FsyncPolicy::Always => {
                self.unsynced = true;
                self.sync_log();
            }
            FsyncPolicy::Interval(_) => self.unsynced = true,
            FsyncPolicy::Never => {}
        }
        if pos.size >= self.opts.rotate_bytes {
            if let Err(e) = self.rotate_locked(pos) {
                self.known = None;
                self.locked = None;
                self.error = Some(e);
            }
        }
        Ok(Attempt::Landed(seq))
    }

    /// Finds where the log stands, under the lock: which file is
    /// `events.jsonl` now, its size and last seq, repairing a torn tail.
    fn prepare_locked(&mut self) -> Result<Position, StoreError> {
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
        if let Some((last_seq, s, i)) = self.read_sidecar() {
            if (s, i) == (size, ino) {
                return Ok(Position {
                    dev,
                    ino,
                    size,
                    last_seq,
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
        let pos = Position {
            dev,
            ino,
            size,
            last_seq,
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

    /// Moves `events.jsonl` to `.1` (and each `.k` to `.k+1`, dropping what
    /// falls beyond `keep`) and starts an empty log; seq carries on.
    fn rotate_locked(&mut self, pos: Position) -> Result<(), StoreError> {
        if self.opts.fsync != FsyncPolicy::Never {
            self.sync_log();
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

    fn read_sidecar(&self) -> Option<(u64, u64, u64)> {
        let mut buf = [0u8; SIDECAR_LEN];
        let mut filled = 0;
        while filled < buf.len() {
            match self.sidecar.read_at(&mut buf[filled..], filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
        parse_sidecar(&buf[..filled])
    }

    /// The sidecar is a hint: when it cannot be written, the next writer
    /// finds it stale and reads the log's tail instead, so a failure here
    /// costs time, never correctness.
    fn write_sidecar(&mut self, pos: Position) {
        self.side_buf.clear();
        format_sidecar(&mut self.side_buf, pos.last_seq, pos.size, pos.ino);
        let _ = self.sidecar.write_all_at(self.side_buf.as_bytes(), 0);
    }

    fn sync_log(&mut self) {
        if !self.unsynced {
            return;
        }
        let Some(log) = &self.log else {
            return;
        };
        match log.file.sync_data() {
            Ok(()) => self.unsynced = false,
            Err(e) => {
                self.sync_failures += 1;
                self.error = Some(StoreError::io("fdatasync", &self.log_path, e));
            }
        }
    }

    fn sync_dir(&self) -> Result<(), StoreError> {
        self.dir
            .sync_all()
            .map_err(|e| StoreError::io("fsync directory", &self.dir_path, e))
    }
}

fn open_lock(path: &Path) -> Result<(File, (u64, u64)), StoreError> {
    let file =
        open_private(path, false).map_err(|e| StoreError::io("open event log lock", path, e))?;
    let meta = file
        .metadata()
        .map_err(|e| StoreError::io("inspect", path, e))?;
    Ok((file, (meta.dev(), meta.ino())))
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

fn is_contended(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
        || e.raw_os_error() == fs2::lock_contended_error().raw_os_error()
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

/// A 64-bit mixer (splitmix64's finaliser): a torn or hand-edited sidecar
/// fails the check instead of passing as a plausible position.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn sidecar_check(seq: u64, size: u64, ino: u64) -> u64 {
    mix(seq ^ mix(size ^ mix(ino ^ 0x7265_6576_6573_6571)))
}

fn format_sidecar(out: &mut String, seq: u64, size: u64, ino: u64) {
    let check = sidecar_check(seq, size, ino);
    let _ = writeln!(out, "{seq:020} {size:020} {ino:020} {check:016x}");
}

/// Parses a sidecar into `(last_seq, log_size, inode)`; `None` for anything
/// that is not exactly what [`format_sidecar`] writes.
fn parse_sidecar(buf: &[u8]) -> Option<(u64, u64, u64)> {
    if buf.len() != SIDECAR_LEN || buf[SIDECAR_LEN - 1] != b'\n' {
        return None;
    }
    let text = std::str::from_utf8(&buf[..SIDECAR_LEN - 1]).ok()?;
    let mut parts = text.split(' ');
    let mut num = || -> Option<u64> {
        let p = parts.next()?;
        if p.len() != 20 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        p.parse().ok()
    };
    let (seq, size, ino) = (num()?, num()?, num()?);
    let check = parts.next()?;
    if parts.next().is_some() || check.len() != 16 {
        return None;
    }
    let check = u64::from_str_radix(check, 16).ok()?;
    (check == sidecar_check(seq, size, ino)).then_some((seq, size, ino))
}

pub use reader::{read_events, EventReader};

#[cfg(test)]
mod tests;
