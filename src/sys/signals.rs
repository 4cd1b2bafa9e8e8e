//! Signals: the signalfd the loop polls, and the signal state of reeve and
//! of the commands it starts.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::{cvt, read_fd};

// ---------------------------------------------------------------------------
// Signals

/// Signals the daemon turns into readable events instead of handler code.
pub const DAEMON_SIGNALS: [libc::c_int; 4] =
    [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT];

/// The daemon's signals when it runs as PID 1: SIGCHLD too, so orphans the
/// kernel hands to init are reaped from the loop.
pub const PID1_SIGNALS: [libc::c_int; 5] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGCHLD,
];

/// Blocks `signals` for the calling thread and returns a non-blocking
/// signalfd that reports them.
pub fn signalfd_for(signals: &[libc::c_int]) -> io::Result<OwnedFd> {
    // SAFETY: an all-zero sigset_t is valid storage; sigemptyset initialises it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is valid, writable storage for a sigset_t.
    unsafe { libc::sigemptyset(&mut set) };
    for &s in signals {
        // SAFETY: `set` was initialised by sigemptyset; `s` is a valid signal.
        cvt(unsafe { libc::sigaddset(&mut set, s) })?;
    }
    // SAFETY: `set` is initialised; the old mask is not requested.
    cvt(unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) })?;
    // SAFETY: `set` is initialised; -1 asks for a new fd.
    let fd = cvt(unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) })?;
    // SAFETY: `fd` was just created and is owned only here.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reads one pending signal number from a signalfd, `Ok(None)` if none.
pub fn read_signal(fd: &OwnedFd) -> io::Result<Option<i32>> {
    let mut info = [0u8; std::mem::size_of::<libc::signalfd_siginfo>()];
    match read_fd(fd.as_raw_fd(), &mut info) {
        Ok(n) if n == info.len() => {
            // ssi_signo is the first u32 of signalfd_siginfo.
            let signo = u32::from_ne_bytes([info[0], info[1], info[2], info[3]]);
            Ok(Some(signo as i32))
        }
        Ok(_) => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}

/// Restores the default mask for `signals` (used by code that forks).
pub fn unblock_signals(signals: &[libc::c_int]) -> io::Result<()> {
    // SAFETY: as in `signalfd_for`.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is valid, writable storage.
    unsafe { libc::sigemptyset(&mut set) };
    for &s in signals {
        // SAFETY: `set` is initialised; `s` is a valid signal.
        cvt(unsafe { libc::sigaddset(&mut set, s) })?;
    }
    // SAFETY: `set` is initialised; the old mask is not requested.
    cvt(unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) })?;
    Ok(())
}

/// One past the highest signal number on Linux (the kernel's _NSIG).
const NSIG: libc::c_int = 65;

/// Ignores SIGPIPE for this process, so a write to a closed stdout or
/// stderr is an EPIPE error the caller handles, not a silent death before
/// reeve records what it was doing. A child gets the default back before
/// exec ([`setsid_and_join_cgroup_before_exec`]).
pub fn ignore_sigpipe() -> io::Result<()> {
    // SAFETY: SIG_IGN installs no handler code; the sigaction struct is a
    // zeroed local with sa_sigaction set, and the old action is not read.
    let r = unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = libc::SIG_IGN;
        libc::sigaction(libc::SIGPIPE, &action, std::ptr::null_mut())
    };
    cvt(r).map(|_| ())
}

/// In a forked child before exec: every signal back to SIG_DFL (exec keeps
/// SIG_IGN, so a shell's background job would pass on ignored SIGINT and
/// SIGQUIT, and glibc's posix_spawn leaves its two internal signals, 32
/// and 33, ignored in what it starts) and an empty mask (the parent blocks
/// the signals it reads through a signalfd). Uses the rt_sigaction system
/// call directly, because the C library refuses its internal signals; in
/// a single-threaded child about to exec nothing sends those. Calls only
/// rt_sigaction and sigprocmask, both async-signal-safe; allocates nothing.
pub(super) fn default_signal_state_in_child() -> io::Result<()> {
    // The kernel's struct sigaction for SIG_DFL: handler, flags, restorer
    // and mask all zero (no field of any architecture's layout is larger
    // than these four words).
    let default_action = [0u64; 4];
    for sig in 1..NSIG {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: rt_sigaction reads `default_action` (valid, zeroed: SIG_DFL,
        // no flags, empty mask) and writes no old action (null); the last
        // argument is the kernel's sigset size, 8 bytes for 64 signals.
        let r = unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                default_action.as_ptr(),
                std::ptr::null_mut::<u64>(),
                8usize,
            )
        };
        cvt(r as libc::c_int)?;
    }
    // SAFETY: `empty` is a local initialised by sigemptyset before use.
    let r = unsafe {
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut())
    };
    cvt(r).map(|_| ())
}
