//! The sidecar `events.seq`: where the log stood when it was last
//! written, `<last_seq> <log_size> <inode> <durable_seq> <check>`, fixed
//! width so one pwrite at offset 0 replaces it whole.
//!
//! Invariant: the sidecar is a hint, never the truth: it is trusted only
//! when its check holds and its size and inode match the log as found;
//! otherwise the log's tail is read. `durable_seq` is the highest seq known
//! to have reached stable storage (an fdatasync of the log returned after
//! that line was written), which is what a reader may call durable.

use std::fmt::Write as _;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::{EventLog, Position};
use crate::store::open_read;

pub(super) const SEQ_NAME: &str = "events.seq";

/// `<seq:20> <size:20> <ino:20> <durable:20> <check:16 hex>\n`.
pub(super) const SIDECAR_LEN: usize = 4 * (20 + 1) + 16 + 1;

/// What a sidecar says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Sidecar {
    pub seq: u64,
    pub size: u64,
    pub ino: u64,
    pub durable: u64,
}

impl EventLog {
    pub(super) fn read_sidecar(&self) -> Option<Sidecar> {
        read_from(&self.sidecar)
    }

    /// The sidecar is a hint: when it cannot be written, the next writer
    /// finds it stale and reads the log's tail instead, so a failure here
    /// costs time, never correctness (and a reader sees an older durable
    /// point, never a newer one).
    pub(super) fn write_sidecar(&mut self, pos: Position) {
        self.side_buf.clear();
        format_sidecar(
            &mut self.side_buf,
            Sidecar {
                seq: pos.last_seq,
                size: pos.size,
                ino: pos.ino,
                durable: pos.durable,
            },
        );
        // Dropped on purpose: see above.
        let _ = self.sidecar.write_all_at(self.side_buf.as_bytes(), 0);
    }
}

/// The highest seq of the audit log in `dir` known to be on stable storage,
/// as the writers last reported it; `None` when there is no valid sidecar
/// (no writer yet, or it was damaged: the next writer rewrites it).
pub fn durable_seq(dir: &Path) -> Option<u64> {
    let file = open_read(&dir.join(SEQ_NAME)).ok()?;
    read_from(&file).map(|s| s.durable)
}

fn read_from(file: &std::fs::File) -> Option<Sidecar> {
    let mut buf = [0u8; SIDECAR_LEN];
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    parse_sidecar(&buf[..filled])
}

/// A 64-bit mixer (splitmix64's finaliser): a torn or hand-edited sidecar
/// fails the check instead of passing as a plausible position.
pub(super) fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn sidecar_check(s: Sidecar) -> u64 {
    mix(s.seq ^ mix(s.size ^ mix(s.ino ^ mix(s.durable ^ 0x7265_6576_6573_6571))))
}

pub(super) fn format_sidecar(out: &mut String, s: Sidecar) {
    let check = sidecar_check(s);
    let _ = writeln!(
        out,
        "{:020} {:020} {:020} {:020} {check:016x}",
        s.seq, s.size, s.ino, s.durable
    );
}

/// Parses a sidecar; `None` for anything that is not exactly what
/// [`format_sidecar`] writes.
pub(super) fn parse_sidecar(buf: &[u8]) -> Option<Sidecar> {
    if buf.len() != SIDECAR_LEN || buf[SIDECAR_LEN - 1] != b'\n' {
        return None;
    }
    let text = std::str::from_utf8(&buf[..SIDECAR_LEN - 1]).ok()?;
    let mut parts = text.split(' ');
    let mut num = || -> Option<u64> {
        let p = parts.next()?;
        if p.len() != 20 {
            return None;
        }
        crate::digits::parse_u64(p.as_bytes())
    };
    let s = Sidecar {
        seq: num()?,
        size: num()?,
        ino: num()?,
        durable: num()?,
    };
    let check = parts.next()?;
    if parts.next().is_some() || check.len() != 16 {
        return None;
    }
    let check = u64::from_str_radix(check, 16).ok()?;
    (check == sidecar_check(s)).then_some(s)
}
