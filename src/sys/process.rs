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

/// How a child ended, from waitid(2)'s siginfo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildExit {
    /// It called exit with this code.
    Code(i32),
    /// A signal ended it (`core`: it dumped core).
    Signal { signal: i32, core: bool },
}

/// Reads what waitid(2) filled in, `None` when no child was waitable
/// (WNOHANG and nothing has ended: `si_pid` stays 0).
fn exit_of(info: &libc::siginfo_t) -> Option<(u32, ChildExit)> {
    // SAFETY: waitid filled `info` for a CLD_* event (or left it zeroed);
    // si_pid and si_status read the sigchld fields of the union, which is
    // what waitid writes.
    let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
    if pid <= 0 {
        return None;
    }
    let exit = match info.si_code {
        libc::CLD_EXITED => ChildExit::Code(status),
        libc::CLD_DUMPED => ChildExit::Signal {
            signal: status,
            core: true,
        },
        _ => ChildExit::Signal {
            signal: status,
            core: false,
        },
    };
    Some((pid as u32, exit))
}

fn waitid(
    idtype: libc::idtype_t,
    id: libc::id_t,
    flags: libc::c_int,
) -> io::Result<Option<(u32, ChildExit)>> {
    // SAFETY: an all-zero siginfo_t is valid storage; waitid writes it.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    retry(|| {
        // SAFETY: `info` is valid, writable storage for one siginfo_t.
        cvt(unsafe { libc::waitid(idtype, id, &mut info, flags) })
    })?;
    Ok(exit_of(&info))
}

/// Reaps the child a pidfd refers to if it has ended, without waiting.
/// `Ok(None)`: it still runs. ECHILD: it is not reeve's child (a process
/// adopted after a restart), so its status is not reeve's to read.
pub fn reap_pidfd(pidfd: &OwnedFd) -> io::Result<Option<ChildExit>> {
    let fd = pidfd.as_raw_fd() as libc::id_t;
    Ok(waitid(libc::P_PIDFD, fd, libc::WEXITED | libc::WNOHANG)?.map(|(_, e)| e))
}

/// The pid of some ended child of reeve, left waitable (WNOWAIT), so the
/// caller decides who reaps it. `Ok(None)`: no child has ended; ECHILD: no
/// children at all.
pub fn peek_ended_child() -> io::Result<Option<u32>> {
    let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
    Ok(waitid(libc::P_ALL, 0, flags)?.map(|(pid, _)| pid))
}

/// Reaps the ended child `pid` (one [`peek_ended_child`] returned).
pub fn reap_pid(pid: u32) -> io::Result<Option<ChildExit>> {
    let flags = libc::WEXITED | libc::WNOHANG;
    Ok(waitid(libc::P_PID, pid as libc::id_t, flags)?.map(|(_, e)| e))
}

/// Eight bytes from [`super::getrandom`].
pub fn random_u64() -> io::Result<u64> {
    let mut buf = [0u8; 8];
    super::getrandom(&mut buf)?;
    Ok(u64::from_ne_bytes(buf))
}
