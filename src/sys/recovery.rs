//! What recovery needs beyond pidfds: process-group kills for exec hooks,
//! non-blocking pipes, and a hook's signal state before exec. (No signal
//! of reeve's goes by pid alone; kill(2) of one pid exists for tests.)

use std::io;
use std::os::fd::RawFd;

use super::cvt;
use super::signals::default_signal_state_in_child;

/// kill(2) for one pid: tests only, on children they have not reaped.
#[cfg(test)]
pub fn kill_pid(pid: u32, sig: libc::c_int) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid)
        .ok()
        .filter(|&p| p > 0)
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: kill takes two integers and touches no memory; a positive pid
    // names one process, never a group.
    cvt(unsafe { libc::kill(pid, sig) }).map(|_| ())
}

/// Sends `sig` to every process of the group `pgid`. Used for a hook the
/// caller started with its own process group and has not reaped yet, so the
/// group id cannot have been reused.
pub fn kill_process_group(pgid: u32, sig: libc::c_int) -> io::Result<()> {
    let pgid = libc::pid_t::try_from(pgid)
        .ok()
        .filter(|&p| p > 1)
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: kill with a negative pid signals a process group and touches
    // no memory; pgid > 1 excludes 0 (our own group) and -1 (everything).
    cvt(unsafe { libc::kill(-pgid, sig) }).map(|_| ())
}

/// Sets O_NONBLOCK on `fd` (a hook's pipe, read by the loop).
pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_GETFL/F_SETFL read and write the file status flags of an fd
    // the caller owns; no memory is passed.
    let flags = cvt(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    // SAFETY: as above.
    cvt(unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) }).map(|_| ())
}

/// In the child between fork and exec: every signal at its default with an
/// empty mask, and a session of its own (setsid), so the hook leads its own
/// process group and no process of reeve's session can join that group
/// and be caught by the group kill at its timeout.
pub fn hook_state_before_exec(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec and calls only
    // rt_sigaction, sigprocmask and setsid (async-signal-safe); it allocates
    // nothing.
    unsafe {
        cmd.pre_exec(|| {
            default_signal_state_in_child()?;
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
