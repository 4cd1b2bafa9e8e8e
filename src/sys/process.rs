//! Processes: pidfds, and the hook that runs between fork and exec.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::signals::default_signal_state_in_child;
use super::{cvt, retry};

// ---------------------------------------------------------------------------
// Processes

/// A pidfd for `pid`. Opened right after an identity check (or for a child
/// that has not been reaped), it keeps referring to that process even if
/// the pid is later reused, so signals sent through it cannot go astray.
pub fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let fd = retry(|| {
        // SAFETY: pidfd_open takes a pid and flags and touches no memory.
        let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        cvt(r as libc::c_int)
    })?;
    // SAFETY: `fd` was just returned by the kernel and is owned only here.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sends `sig` to the process a pidfd refers to.
pub fn pidfd_send_signal(pidfd: &OwnedFd, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: a null siginfo asks the kernel to fill it in as for kill(2).
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    cvt(r as libc::c_int).map(|_| ())
}

/// Arranges for the child of `cmd` to start with every signal at its
/// default disposition and an empty mask (see
/// [`default_signal_state_in_child`]), start its own session and join the
/// cgroup whose `cgroup.procs` is open for writing as `procs_fd`, after
/// fork and before exec: the program runs no instruction outside its
/// group. A failure aborts the spawn with that error.
pub fn setsid_and_join_cgroup_before_exec(cmd: &mut std::process::Command, procs_fd: RawFd) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec and calls
    // only rt_sigaction, sigemptyset, sigprocmask, setsid(2) and write(2), all
    // async-signal-safe; it allocates nothing and touches no lock.
    // `procs_fd` stays open in the child until exec because the caller
    // holds it open across spawn.
    unsafe {
        cmd.pre_exec(move || {
            default_signal_state_in_child()?;
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            // Writing "0" moves the writing process itself.
            let n = libc::write(procs_fd, b"0".as_ptr().cast(), 1);
            if n != 1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
