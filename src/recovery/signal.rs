//! Signals that can only reach the identity they were meant for.
//!
//! A pidfd is opened first and the identity (pid + start ticks, not dead)
//! checked after: if the check passes, the pidfd refers to that very
//! process, and every signal sent through it, now or at an escalation
//! later, reaches it or nobody. Without pidfd_open (ENOSYS: a kernel before
//! 5.3, or a seccomp profile that hides it) nothing is sent: a check
//! followed by kill(2) leaves a window in which the pid can be reused, and
//! no signal of reeve's may ever reach another process. The refusal is
//! counted and said; `kill_job` (cgroup.kill) needs no pidfd.

use std::os::fd::{AsRawFd, OwnedFd};

use crate::procfs::{ProcKey, ProcReader, ReadError};
use crate::sys;

/// A process proven to be `key`: signals go through its pidfd.
pub struct Target(OwnedFd);

/// Why no signal was sent.
#[derive(Debug)]
pub enum Refusal {
    /// The process ended, or its pid now names another process.
    Gone,
    /// The kernel has no pidfd_open: nothing can be sent safely.
    NoPidfd,
    /// Its identity could not be read or the kernel refused: the error.
    Failed(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Gone => {
                f.write_str("the process ended or its pid was reused; nothing was sent")
            }
            Refusal::NoPidfd => f.write_str(
                "this kernel has no pidfd_open (before 5.3, or hidden by seccomp): a signal could reach a process that took the pid, so nothing was sent; use kill_job",
            ),
            Refusal::Failed(e) => f.write_str(e),
        }
    }
}

/// Opens `key` for signalling: a pidfd opened before the identity check.
pub fn open(key: ProcKey, reader: &mut ProcReader) -> Result<Target, Refusal> {
    let target = match sys::pidfd_open(key.pid) {
        Ok(fd) => Target(fd),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Err(Refusal::Gone),
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => return Err(Refusal::NoPidfd),
        Err(e) => {
            return Err(Refusal::Failed(format!(
                "process {key}: opening a pidfd: {e}"
            )))
        }
    };
    verify(key, reader)?;
    Ok(target)
}

/// Whether `key` is still the live process at its pid.
fn verify(key: ProcKey, reader: &mut ProcReader) -> Result<(), Refusal> {
    match reader.stat(key.pid) {
        Ok(st) if st.start_ticks == key.start_ticks && !st.is_dead() => Ok(()),
        Ok(_) | Err(ReadError::Gone) => Err(Refusal::Gone),
        Err(e) => Err(Refusal::Failed(format!(
            "/proc/{}/stat: cannot check the identity: {e}; nothing was sent",
            key.pid
        ))),
    }
}

impl Target {
    /// Sends `sig` through the pidfd. `Gone` when the process ended
    /// meanwhile (the pidfd then refers to nothing, so no other process can
    /// receive it).
    pub fn send(&self, sig: i32) -> Result<(), Refusal> {
        match sys::pidfd_send_signal(&self.0, sig) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Err(Refusal::Gone),
            Err(e) => Err(Refusal::Failed(format!("sending signal {sig}: {e}"))),
        }
    }

    /// True when the process has ended (its pidfd is readable).
    pub fn ended(&self) -> bool {
        let mut p = [sys::poll_fd(self.0.as_raw_fd())];
        // A zero timeout: a readiness check, never a wait. A poll error
        // counts as "not ended": the send that follows goes through the
        // pidfd, so it still reaches this process or nobody.
        matches!(sys::poll(&mut p, 0), Ok(n) if n > 0)
    }
}

/// Hooks that only test builds compile: hold a signal between the identity
/// check and the send so a test can recycle the pid there.
#[cfg(feature = "test-hooks")]
pub fn pause_before_signal(key: ProcKey) {
    // `REEVE_TEST_PAUSE_BEFORE_SIGNAL=<path>`: create `<path>.paused`
    // holding the pid, then wait (at most 60 s) for `<path>.go`.
    let Some(path) = std::env::var_os("REEVE_TEST_PAUSE_BEFORE_SIGNAL") else {
        return;
    };
    crate::cgroup::test_hooks::park(&path.to_string_lossy(), key.pid);
}

#[cfg(not(feature = "test-hooks"))]
#[inline(always)]
pub fn pause_before_signal(_: ProcKey) {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    #[test]
    fn a_stale_identity_is_refused_and_a_live_one_signalled_through_its_pidfd() {
        let mut child = Command::new("sleep")
            .arg("30")
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let mut r = ProcReader::open().unwrap();
        let key = r.stat(child.id()).unwrap().key();
        let stale = ProcKey {
            start_ticks: key.start_ticks + 1,
            ..key
        };
        assert!(matches!(open(stale, &mut r), Err(Refusal::Gone)));
        let t = open(key, &mut r).unwrap_or_else(|e| panic!("{e}"));
        assert!(!t.ended());
        t.send(libc::SIGTERM).unwrap();
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGTERM));
        // Reaped: the pidfd refers to nothing; a send goes nowhere.
        assert!(t.ended());
        assert!(matches!(t.send(libc::SIGKILL), Err(Refusal::Gone)));
        assert!(matches!(open(key, &mut r), Err(Refusal::Gone)));
    }
}
