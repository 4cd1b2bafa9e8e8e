//! The daemon's stderr: writes that never block, a backlog allocated once
//! for the lines stderr does not take at once, and a count of the lines
//! that did not fit.
//!
//! Invariant: a line is written whole or held whole (the rest of a line a
//! write took part of always goes first), the backlog never grows past
//! [`STDERR_BACKLOG`], and every line is either written or counted.

use std::fs::File;
use std::io::{self, Write as _};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};

use crate::sys;

/// Bytes of log lines held while stderr is not writable.
pub const STDERR_BACKLOG: usize = 64 << 10;

/// How log lines reach stderr.
pub(super) enum Sink {
    /// Blocking writes to fd 2 (CLI commands, and the daemon before the
    /// loop starts): nothing waits on them but the command itself.
    Blocking,
    /// The daemon's: writes that never block, with a bounded backlog.
    NonBlocking(Backlog),
}

pub(super) struct Backlog {
    /// A private open of stderr's pipe or terminal with O_NONBLOCK, or a
    /// duplicate of fd 2 (a socket set non-blocking, or a regular file,
    /// whose writes never wait on another process).
    pub(super) out: File,
    /// Poll for POLLOUT before each write of at most one pipe buffer: a
    /// pipe that could not be opened privately stays blocking, and a pipe
    /// that polls writable takes one such write without waiting.
    pub(super) guarded: bool,
    /// Lines waiting for stderr to be writable; never grows past
    /// [`STDERR_BACKLOG`].
    pub(super) pending: Vec<u8>,
    /// Lines dropped since the last `log_dropped` line, and in all.
    pub(super) dropped: u64,
    pub(super) dropped_total: u64,
    pub(super) notice: String,
}

/// The largest write a guarded pipe takes without blocking once it polls
/// writable (one free pipe buffer).
const GUARDED_CHUNK: usize = 4096;

/// One write(2) that never waits: `WouldBlock` when stderr is not ready.
fn write_some(out: &mut File, guarded: bool, bytes: &[u8]) -> io::Result<usize> {
    if guarded {
        let mut fds = [libc::pollfd {
            fd: out.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        }];
        sys::poll(&mut fds, 0)?;
        if fds[0].revents & (libc::POLLOUT | libc::POLLERR) == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = bytes.len().min(GUARDED_CHUNK);
        return out.write(&bytes[..n]);
    }
    out.write(bytes)
}

impl Backlog {
    /// Writes as much of the backlog as stderr takes now. `Err` for a
    /// failure other than "not now" (the backlog is then discarded and its
    /// lines counted as dropped, since no later write will take them).
    pub(super) fn flush(&mut self) -> io::Result<()> {
        while !self.pending.is_empty() {
            match write_some(&mut self.out, self.guarded, &self.pending) {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    self.pending.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let lines = self.pending.iter().filter(|&&b| b == b'\n').count() as u64;
                    self.dropped += lines;
                    self.dropped_total += lines;
                    self.pending.clear();
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Holds `line` for later, or drops and counts it if it does not fit.
    pub(super) fn hold(&mut self, line: &[u8]) {
        if self.pending.len() + line.len() <= STDERR_BACKLOG {
            self.pending.extend_from_slice(line);
        } else {
            self.dropped += 1;
            self.dropped_total += 1;
        }
    }

    /// Writes one whole line now if stderr takes it, else holds it. A line
    /// is never split between a write and the backlog unless the write
    /// took part of it, and then the rest goes first.
    pub(super) fn emit(&mut self, line: &[u8]) -> io::Result<()> {
        let flushed = self.flush();
        if !self.pending.is_empty() {
            self.hold(line);
            return flushed;
        }
        let mut at = 0;
        while at < line.len() {
            match write_some(&mut self.out, self.guarded, &line[at..]) {
                Ok(0) => break,
                Ok(n) => at += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    self.dropped += 1;
                    self.dropped_total += 1;
                    return Err(e);
                }
            }
        }
        if at > 0 && at < line.len() {
            // The rest of a started line always goes first, even past the
            // bound: a torn line would corrupt every later one.
            self.pending.extend_from_slice(&line[at..]);
        } else if at == 0 {
            self.hold(line);
        }
        flushed
    }
}

impl Backlog {
    fn new(out: File, guarded: bool) -> Backlog {
        Backlog {
            out,
            guarded,
            pending: Vec::with_capacity(STDERR_BACKLOG),
            dropped: 0,
            dropped_total: 0,
            notice: String::with_capacity(256),
        }
    }

    /// Opens stderr for writes that never block. Returns how: `private` (a
    /// pipe, FIFO or terminal reopened through /proc/self/fd/2 with
    /// O_NONBLOCK: a new open file description, so the flag does not leak
    /// to the other holders of the pipe, such as a shell or a supervisor
    /// that would then see EAGAIN),
    /// `socket` (a socket cannot be reopened; O_NONBLOCK is set on the
    /// shared description, which only reeve's own process tree writes
    /// through, and which every one of them must be ready for from a
    /// socket), `file` (a regular file: writes wait for the disk, never for
    /// another process), or `guarded` (a pipe that could not be reopened,
    /// e.g. with no reader left: each write is preceded by a zero-timeout
    /// poll and is at most one pipe buffer, which a writable pipe takes
    /// without waiting).
    pub(super) fn open() -> io::Result<(Backlog, &'static str)> {
        let meta = std::fs::metadata("/proc/self/fd/2")?;
        let ft = meta.file_type();
        let dup =
            || -> io::Result<File> { Ok(File::from(io::stderr().as_fd().try_clone_to_owned()?)) };
        let (out, guarded, how) = if ft.is_fifo() || ft.is_char_device() {
            let reopened = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
                .open("/proc/self/fd/2");
            match reopened {
                Ok(f) => (f, false, "private"),
                Err(_) => (dup()?, true, "guarded"),
            }
        } else if ft.is_socket() {
            let sock =
                std::os::unix::net::UnixStream::from(io::stderr().as_fd().try_clone_to_owned()?);
            sock.set_nonblocking(true)?;
            (
                File::from(std::os::fd::OwnedFd::from(sock)),
                false,
                "socket",
            )
        } else {
            (dup()?, false, "file")
        };
        Ok((Backlog::new(out, guarded), how))
    }

    /// The fd to poll for POLLOUT: set while lines wait or a drop has not
    /// been reported yet.
    pub(super) fn wants_write(&self) -> Option<RawFd> {
        (!self.pending.is_empty() || self.dropped > 0).then(|| self.out.as_raw_fd())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LogFormat, LogLevel};
    use crate::log::{Logger, Val};
    use std::io::Read as _;
    use std::os::unix::net::UnixStream;

    /// A logger whose stderr is one end of a socket pair nobody reads yet.
    fn stalled_logger() -> (Logger, UnixStream) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let mut log = Logger::new(LogFormat::Json, LogLevel::Debug);
        log.sink = Sink::NonBlocking(Backlog::new(
            File::from(std::os::fd::OwnedFd::from(ours)),
            false,
        ));
        (log, theirs)
    }

    #[test]
    fn a_stalled_stderr_drops_and_counts_then_says_so_once() {
        let (mut log, mut reader) = stalled_logger();
        let pad = "x".repeat(200);
        for i in 0..5000u64 {
            log.info("discovered", &[("i", Val::U(i)), ("pad", Val::S(&pad))]);
        }
        let dropped = log.log_dropped();
        assert!(dropped > 0, "a reader that never reads must cost lines");
        let Sink::NonBlocking(b) = &log.sink else {
            panic!()
        };
        assert!(b.pending.len() <= STDERR_BACKLOG);
        assert_eq!(b.pending.capacity(), STDERR_BACKLOG, "no growth");
        assert!(log.stderr_backlog_fd().is_some());
        // The reader catches up; the loop flushes when poll says so.
        reader.set_nonblocking(true).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 65536];
        for _ in 0..1000 {
            log.flush_stderr();
            match reader.read(&mut buf) {
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if log.stderr_backlog_fd().is_none() {
                        break;
                    }
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert!(log.stderr_backlog_fd().is_none(), "backlog drained");
        let text = String::from_utf8(got).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("every line whole and JSON"))
            .collect();
        let notices: Vec<_> = lines
            .iter()
            .filter(|v| v["event"] == "log_dropped")
            .collect();
        assert_eq!(notices.len(), 1, "one line says how many were dropped");
        assert_eq!(notices[0]["lines"], dropped);
        let shown = lines.iter().filter(|v| v["event"] == "discovered").count() as u64;
        assert_eq!(shown + dropped, 5000, "every line is shown or counted");
        // In order: the i values that made it strictly increase.
        let is: Vec<u64> = lines.iter().filter_map(|v| v["i"].as_u64()).collect();
        assert!(is.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn steady_state_lines_reuse_the_backlog() {
        let (mut log, _reader) = stalled_logger();
        log.info("warm", &[]);
        let Sink::NonBlocking(b) = &log.sink else {
            panic!()
        };
        let before = b.pending.as_ptr();
        for _ in 0..10_000 {
            log.debug("scan", &[("found", Val::U(1))]);
        }
        let Sink::NonBlocking(b) = &log.sink else {
            panic!()
        };
        assert_eq!(b.pending.as_ptr(), before);
    }
}
