//! Reading /proc: process identity, metadata and fast PID-set scans.
//!
//! Two halves: [`parse`] holds the pure parsers (`parse_stat`,
//! `parse_status_ids`, `parse_cmdline`), which never panic on any input;
//! [`read`] holds [`ProcReader`], which owns one /proc directory fd and
//! fixed buffers allocated once, so a steady-state scan reads files
//! without allocating. A process that vanishes mid-read is
//! [`ReadError::Gone`], a normal outcome rather than a failure.

pub mod activity;
mod parse;
mod read;

use std::fmt;
use std::io;

use serde::{Deserialize, Serialize};

pub use parse::{
    argv0, basename, parse_cmdline, parse_io, parse_ns_link, parse_stat, parse_status_ids,
    strip_deleted, IoCounters, StatusIds,
};
pub use read::{ProcInfo, ProcReader, CMDLINE_BUF, INIT_PID_NS_INO, INIT_USER_NS_INO, PID_BATCH};

/// A process's identity: its pid and its start time in clock ticks since
/// boot (field 22 of /proc/<pid>/stat). A reused pid has a new start time,
/// so two different processes never share a `ProcKey`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ProcKey {
    pub pid: u32,
    pub start_ticks: u64,
}

impl fmt::Display for ProcKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.pid, self.start_ticks)
    }
}

/// The longest comm /proc shows: 15 bytes for a task, up to 63 for a kernel
/// worker that appends its workqueue name. Longer input is cut here.
pub const COMM_CAP: usize = 64;

/// A process name as /proc shows it, stored inline (no allocation).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Comm {
    bytes: [u8; COMM_CAP],
    len: u8,
}

impl Comm {
    pub fn new(src: &[u8]) -> Comm {
        let len = src.len().min(COMM_CAP);
        let mut bytes = [0u8; COMM_CAP];
        bytes[..len].copy_from_slice(&src[..len]);
        Comm {
            bytes,
            len: len as u8,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    /// The name as text, with bytes that are not UTF-8 shown lossily.
    pub fn to_string_lossy(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(self.as_bytes())
    }
}

impl fmt::Debug for Comm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_string_lossy())
    }
}

impl Default for Comm {
    fn default() -> Self {
        Comm::new(b"")
    }
}

/// The fields of /proc/<pid>/stat that reeve uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub pid: u32,
    pub comm: Comm,
    pub state: u8,
    pub ppid: u32,
    /// The kernel's task flags (field 9).
    pub flags: u64,
    pub utime: u64,
    pub stime: u64,
    pub num_threads: u64,
    pub start_ticks: u64,
}

impl Stat {
    pub fn key(&self) -> ProcKey {
        ProcKey {
            pid: self.pid,
            start_ticks: self.start_ticks,
        }
    }

    /// Kernel threads (PF_KTHREAD) have no exe and an empty cmdline.
    pub fn is_kernel_thread(&self) -> bool {
        self.flags & 0x0020_0000 != 0
    }

    /// True when the whole process has exited and awaits (or needs no)
    /// reaping. A zombie leader whose other threads still run is alive.
    pub fn is_dead(&self) -> bool {
        matches!(self.state, b'Z' | b'X' | b'x') && self.num_threads <= 1
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// No "pid (" prefix.
    NoPid,
    /// No closing ')' after the comm.
    NoComm,
    /// Fewer fields than the one named.
    Truncated(u8),
    /// The field named is not a number.
    BadField(u8),
    /// A /proc/<pid>/status file without Uid: and Gid: lines.
    NoIds,
    /// A /proc/<pid>/io file without readable rchar: and wchar: lines.
    NoCounters,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::NoPid => write!(f, "no leading pid"),
            ParseError::NoComm => write!(f, "no comm in parentheses"),
            ParseError::Truncated(n) => write!(f, "truncated before field {n}"),
            ParseError::BadField(n) => write!(f, "field {n} is not a number"),
            ParseError::NoIds => write!(f, "no Uid:/Gid: lines"),
            ParseError::NoCounters => write!(f, "no rchar:/wchar: lines"),
        }
    }
}

impl std::error::Error for ParseError {}

/// Why a read of a process's file did not produce a value.
#[derive(Debug)]
pub enum ReadError {
    /// The process exited (or its pid was never there): a normal event.
    Gone,
    /// The file was read but did not parse.
    Parse(ParseError),
    /// Any other failure, such as a permission refusal.
    Io(io::Error),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Gone => write!(f, "process is gone"),
            ReadError::Parse(e) => write!(f, "unparseable: {e}"),
            ReadError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        match e.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ESRCH) => ReadError::Gone,
            _ => ReadError::Io(e),
        }
    }
}
