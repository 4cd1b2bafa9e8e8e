//! A tiny heartbeat client: one non-blocking datagram socket, a nonce that
//! only goes up, one 64-byte frame per beat. What `reeve beat` uses; a Rust
//! program that wants to beat for itself can use it as is.
//!
//! A beat vouches for the calling process only: the frame carries
//! getpid(), and the listener drops a frame whose pid differs from the
//! kernel's credentials for the datagram.

use std::ffi::CString;
use std::fmt;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::frame::{encode, Frame, Status, PAYLOAD_LEN};
use crate::sys;

/// A failed beat: the socket path, what failed, the OS error and a hint.
#[derive(Debug)]
pub struct BeatError {
    pub path: PathBuf,
    pub what: &'static str,
    pub error: io::Error,
}

impl fmt::Display for BeatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hint = match self.error.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ECONNREFUSED) => {
                "; is `reeve watch` running with a heartbeat section?"
            }
            Some(libc::EACCES) => "; the socket's group or mode does not let this user write",
            Some(libc::EAGAIN) => "; the listener is busy, the next beat retries",
            _ => "",
        };
        write!(
            f,
            "{}: {}: {}{hint}",
            self.path.display(),
            self.what,
            self.error
        )
    }
}

impl std::error::Error for BeatError {}

/// One sender's socket and nonce.
pub struct Client {
    fd: OwnedFd,
    path: PathBuf,
    cpath: CString,
    pid: u32,
    nonce: u64,
}

impl Client {
    /// A client for the listener at `path`. The first nonce is random, so a
    /// restarted sender that reuses its pid (a new identity anyway) never
    /// depends on remembering where it was.
    pub fn new(path: &Path) -> Result<Client, BeatError> {
        let err = |what, error| BeatError {
            path: path.to_path_buf(),
            what,
            error,
        };
        let cpath = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| err("bad path", io::Error::from(io::ErrorKind::InvalidInput)))?;
        let fd = sys::unix_dgram_client().map_err(|e| err("cannot open a socket", e))?;
        let mut seed = [0u8; 8];
        sys::getrandom(&mut seed).map_err(|e| err("cannot read random bytes", e))?;
        // Start in the lower half so a long-lived sender never nears a wrap.
        let nonce = u64::from_le_bytes(seed) >> 2;
        Ok(Client {
            fd,
            path: path.to_path_buf(),
            cpath,
            pid: sys::getpid(),
            nonce,
        })
    }

    /// Sends one beat with `status` and `payload`.
    pub fn beat(&mut self, status: Status, payload: [u8; PAYLOAD_LEN]) -> Result<(), BeatError> {
        self.nonce = self.nonce.wrapping_add(1);
        let frame = Frame {
            status,
            pid: self.pid,
            nonce: self.nonce,
            timestamp_ns: sys::realtime_ms().saturating_mul(1_000_000),
            payload,
        };
        sys::unix_send_to(&self.fd, &self.cpath, &encode(&frame))
            .map(|_| ())
            .map_err(|error| BeatError {
                path: self.path.clone(),
                what: "cannot send a beat",
                error,
            })
    }

    /// The nonce of the last beat sent.
    pub fn nonce(&self) -> u64 {
        self.nonce
    }
}
