//! Thin wrappers over the libc calls reeve needs: clocks, directory
//! enumeration with getdents64, dirfd-relative reads into caller buffers,
//! netlink sockets, signalfd and poll.
//!
//! This is the only module with `unsafe`. Every wrapper takes and returns
//! safe types (slices, `OwnedFd`, `io::Result`), never allocates, and states
//! in a SAFETY comment why the call is sound.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn cvt_size(ret: libc::ssize_t) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// Retries a call that failed with EINTR.
fn retry<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// The kernel's USER_HZ as reported by sysconf(_SC_CLK_TCK); never assumed.
pub fn clock_ticks_per_sec() -> io::Result<u64> {
    // SAFETY: sysconf has no memory-safety preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if v <= 0 {
        return Err(io::Error::other("sysconf(_SC_CLK_TCK) returned no value"));
    }
    Ok(v as u64)
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec. The clocks used here exist
    // on every kernel reeve supports, so the call cannot fail; if it did,
    // `ts` stays zero, which callers treat as "time unknown".
    unsafe { libc::clock_gettime(clock, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// CLOCK_MONOTONIC in nanoseconds (the clock netlink event timestamps use).
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// CLOCK_BOOTTIME in nanoseconds (the clock process start times count in).
pub fn boottime_ns() -> u64 {
    clock_ns(libc::CLOCK_BOOTTIME)
}

/// CLOCK_REALTIME in milliseconds since the epoch.
pub fn realtime_ms() -> u64 {
    clock_ns(libc::CLOCK_REALTIME) / 1_000_000
}

pub fn getpid() -> u32 {
    // SAFETY: getpid cannot fail.
    unsafe { libc::getpid() as u32 }
}

pub fn geteuid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

/// Opens a directory (O_DIRECTORY | O_CLOEXEC) for dirfd-relative access.
pub fn open_dir(path: &CStr) -> io::Result<OwnedFd> {
    // SAFETY: `path` is NUL-terminated; the flags create no aliasing.
    let fd = retry(|| {
        cvt(unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        })
    })?;
    // SAFETY: `fd` was just returned by open and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Rewinds a directory fd so the next `getdents` starts from the top.
pub fn rewind_dir(dir: &OwnedFd) -> io::Result<()> {
    // SAFETY: lseek on an fd we own; no memory is passed.
    let r = unsafe { libc::lseek(dir.as_raw_fd(), 0, libc::SEEK_SET) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Fills `buf` with linux_dirent64 records; returns the bytes written, 0 at
/// the end of the directory. Parse the result with [`DirentIter`].
pub fn getdents(dir: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    retry(|| {
        // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`.
        let r = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                dir.as_raw_fd(),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        cvt_size(r as libc::ssize_t)
    })
}

/// One directory entry from a getdents64 buffer.
#[derive(Debug, Clone, Copy)]
pub struct Dirent<'a> {
    pub ino: u64,
    pub name: &'a [u8],
}

/// Walks the linux_dirent64 records of a getdents buffer without trusting
/// them: a malformed record length ends the walk instead of reading past it.
pub struct DirentIter<'a> {
    buf: &'a [u8],
}

impl<'a> DirentIter<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        DirentIter { buf }
    }
}

impl<'a> Iterator for DirentIter<'a> {
    type Item = Dirent<'a>;

    fn next(&mut self) -> Option<Dirent<'a>> {
        // struct linux_dirent64 { u64 d_ino; i64 d_off; u16 d_reclen; u8 d_type; char d_name[]; }
        const NAME_OFFSET: usize = 19;
        let head = self.buf.get(..NAME_OFFSET)?;
        let ino = u64::from_ne_bytes(head[0..8].try_into().ok()?);
        let reclen = u16::from_ne_bytes(head[16..18].try_into().ok()?) as usize;
        if reclen < NAME_OFFSET || reclen > self.buf.len() {
            self.buf = &[];
            return None;
        }
        let raw_name = &self.buf[NAME_OFFSET..reclen];
        let len = raw_name
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(raw_name.len());
        self.buf = &self.buf[reclen..];
        Some(Dirent {
            ino,
            name: &raw_name[..len],
        })
    }
}

/// Opens `path` relative to `dir` read-only, O_CLOEXEC | O_NOFOLLOW.
pub fn open_read_at(dir: &OwnedFd, path: &CStr) -> io::Result<OwnedFd> {
    // SAFETY: `path` is NUL-terminated; openat has no memory preconditions.
    let fd = retry(|| {
        cvt(unsafe {
            libc::openat(
                dir.as_raw_fd(),
                path.as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            )
        })
    })?;
    // SAFETY: `fd` was just opened and is owned only here.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reads a whole small file relative to `dir` into `buf`. Returns the number
/// of bytes read; a file larger than `buf` is reported as `InvalidData` so a
/// caller never parses a truncated record as if it were complete.
pub fn read_file_at(dir: &OwnedFd, path: &CStr, buf: &mut [u8]) -> io::Result<usize> {
    let file = open_read_at(dir, path)?;
    read_to_end_from(&file, buf, 0)
}

/// Continues reading `file` into `buf[filled..]` until end-of-file; a file
/// that does not fit is `InvalidData`.
fn read_to_end_from(file: &OwnedFd, buf: &mut [u8], mut filled: usize) -> io::Result<usize> {
    loop {
        if filled == buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "file larger than the read buffer",
            ));
        }
        let n = read_fd(file.as_raw_fd(), &mut buf[filled..])?;
        if n == 0 {
            return Ok(filled);
        }
        filled += n;
    }
}

/// Reads a one-record /proc file (such as /proc/<pid>/stat) relative to
/// `dir`. The kernel produces such a file in one go, so a first read that
/// is shorter than `buf` and ends in a newline is the whole file; that
/// saves the second read(2) that would only confirm end-of-file. Anything
/// else falls back to reading until end-of-file, as [`read_file_at`] does.
pub fn read_record_at(dir: &OwnedFd, path: &CStr, buf: &mut [u8]) -> io::Result<usize> {
    let file = open_read_at(dir, path)?;
    let filled = read_fd(file.as_raw_fd(), buf)?;
    if filled > 0 && filled < buf.len() && buf[filled - 1] == b'\n' {
        return Ok(filled);
    }
    read_to_end_from(&file, buf, filled)
}

/// Reads up to `buf.len()` bytes of a file relative to `dir`: the prefix of
/// a file that may be longer than any sensible buffer (a cmdline).
pub fn read_prefix_at(dir: &OwnedFd, path: &CStr, buf: &mut [u8]) -> io::Result<usize> {
    let file = open_read_at(dir, path)?;
    let mut filled = 0;
    while filled < buf.len() {
        let n = read_fd(file.as_raw_fd(), &mut buf[filled..])?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

/// read(2) into a slice, retrying EINTR.
pub fn read_fd(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    retry(|| {
        // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`.
        cvt_size(unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) })
    })
}

/// readlinkat into `buf`; returns the length of the target. A target that
/// fills the whole buffer may be truncated and is reported as `InvalidData`.
pub fn readlink_at(dir: &OwnedFd, path: &CStr, buf: &mut [u8]) -> io::Result<usize> {
    let n = retry(|| {
        // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`.
        cvt_size(unsafe {
            libc::readlinkat(
                dir.as_raw_fd(),
                path.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        })
    })?;
    if n >= buf.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "link target longer than the buffer",
        ));
    }
    Ok(n)
}

/// The inode number of a path relative to `dir` (following links), used
/// for namespace identities such as /proc/<pid>/ns/pid.
pub fn inode_at(dir: &OwnedFd, path: &CStr) -> io::Result<u64> {
    // SAFETY: an all-zero `stat` is a valid value for this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `st` is writable.
    cvt(unsafe { libc::fstatat(dir.as_raw_fd(), path.as_ptr(), &mut st, 0) })?;
    Ok(st.st_ino)
}

/// Reads an extended attribute of `path` into `buf`; returns its length.
/// ENODATA (no such attribute) is `ErrorKind::NotFound`.
pub fn getxattr(path: &CStr, name: &CStr, buf: &mut [u8]) -> io::Result<usize> {
    let r = retry(|| {
        // SAFETY: both strings are NUL-terminated; the kernel writes at most
        // `buf.len()` bytes into `buf`.
        cvt_size(unsafe {
            libc::getxattr(
                path.as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        })
    });
    match r {
        Err(e) if e.raw_os_error() == Some(libc::ENODATA) => {
            Err(io::Error::new(io::ErrorKind::NotFound, "no such attribute"))
        }
        other => other,
    }
}

// ---------------------------------------------------------------------------
// Netlink

/// Opens a non-blocking NETLINK_CONNECTOR socket bound to `groups`.
pub fn netlink_connector_socket(groups: u32) -> io::Result<OwnedFd> {
    // SAFETY: socket(2) has no memory preconditions.
    let fd = cvt(unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            libc::NETLINK_CONNECTOR,
        )
    })?;
    // SAFETY: `fd` was just created and is owned only here.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: an all-zero sockaddr_nl is valid; the fields are set below.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    addr.nl_groups = groups;
    addr.nl_pid = 0;
    // SAFETY: `addr` is a valid sockaddr_nl and the length matches it.
    cvt(unsafe {
        libc::bind(
            sock.as_raw_fd(),
            (&addr as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    })?;
    Ok(sock)
}

/// Asks for a larger receive buffer; as root SO_RCVBUFFORCE lifts the
/// rmem_max cap. Returns the size the kernel granted.
pub fn set_recv_buffer(sock: &OwnedFd, bytes: usize) -> io::Result<usize> {
    let val = bytes.min(i32::MAX as usize) as libc::c_int;
    let set = |opt| {
        // SAFETY: `val` is a readable c_int and the length matches it.
        cvt(unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&val as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        })
    };
    if set(libc::SO_RCVBUFFORCE).is_err() {
        set(libc::SO_RCVBUF)?;
    }
    let mut got: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `got` and `len` are writable and `len` holds got's size.
    cvt(unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&mut got as *mut libc::c_int).cast(),
            &mut len,
        )
    })?;
    Ok(got.max(0) as usize)
}

/// Sends one datagram to the kernel (netlink pid 0).
pub fn netlink_send_to_kernel(sock: &OwnedFd, msg: &[u8]) -> io::Result<()> {
    // SAFETY: an all-zero sockaddr_nl addresses the kernel (nl_pid 0).
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    let n = retry(|| {
        // SAFETY: `msg` is readable for its length; `addr` matches its length.
        cvt_size(unsafe {
            libc::sendto(
                sock.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        })
    })?;
    if n != msg.len() {
        return Err(io::Error::other("short netlink send"));
    }
    Ok(())
}

/// Receives one datagram without blocking. `Ok(None)` when nothing is
/// queued; an overrun surfaces as an error of raw_os_error ENOBUFS. The
/// second value is the sender's netlink port id (0 for the kernel).
pub fn netlink_recv(sock: &OwnedFd, buf: &mut [u8]) -> io::Result<Option<(usize, u32)>> {
    // SAFETY: an all-zero sockaddr_nl is a valid out-parameter.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    let mut alen = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
    let r = retry(|| {
        // SAFETY: the kernel writes at most `buf.len()` bytes into `buf` and
        // at most `alen` bytes into `addr`.
        cvt_size(unsafe {
            libc::recvfrom(
                sock.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
                (&mut addr as *mut libc::sockaddr_nl).cast(),
                &mut alen,
            )
        })
    });
    match r {
        Ok(n) => Ok(Some((n, addr.nl_pid))),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}

// ---------------------------------------------------------------------------
// Signals

/// Signals the daemon turns into readable events instead of handler code.
pub const DAEMON_SIGNALS: [libc::c_int; 4] =
    [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT];

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
fn default_signal_state_in_child() -> io::Result<()> {
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

// ---------------------------------------------------------------------------
// poll

/// Readiness of one fd after [`poll`].
pub type PollFd = libc::pollfd;

pub fn poll_fd(fd: RawFd) -> PollFd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

pub fn is_readable(p: &PollFd) -> bool {
    p.revents & (libc::POLLIN | libc::POLLERR | libc::POLLHUP) != 0
}

/// poll(2) over `fds` with a timeout in milliseconds (-1: forever). EINTR
/// returns Ok(0) so the caller recomputes its deadline.
pub fn poll(fds: &mut [PollFd], timeout_ms: i32) -> io::Result<usize> {
    // SAFETY: `fds` is a valid, writable array of pollfd of the given length.
    let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(e);
    }
    Ok(r as usize)
}

// ---------------------------------------------------------------------------
// ---- classic socket filter

/// Attaches a classic BPF program to `sock` (SO_ATTACH_FILTER): the kernel
/// runs it on every datagram before queueing it, and drops those for which
/// it returns 0. The kernel copies and checks the program; a program it
/// rejects is an EINVAL error and the socket stays unfiltered.
pub fn attach_socket_filter(sock: &OwnedFd, program: &[libc::sock_filter]) -> io::Result<()> {
    let len = u16::try_from(program.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "socket filter too long"))?;
    let prog = libc::sock_fprog {
        len,
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: `prog` points at `len` readable instructions for the duration
    // of the call; the kernel copies them and keeps no pointer.
    cvt(unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&prog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirent_iter_stops_on_bad_reclen() {
        let mut rec = vec![0u8; 24];
        rec[0..8].copy_from_slice(&7u64.to_ne_bytes());
        rec[16..18].copy_from_slice(&24u16.to_ne_bytes());
        rec[19..22].copy_from_slice(b"123");
        let mut bad = rec.clone();
        bad.extend_from_slice(&[0u8; 19]);
        // second record claims a length beyond the buffer
        bad[24 + 16..24 + 18].copy_from_slice(&500u16.to_ne_bytes());
        let names: Vec<_> = DirentIter::new(&bad)
            .map(|d| (d.ino, d.name.to_vec()))
            .collect();
        assert_eq!(names, vec![(7, b"123".to_vec())]);
        assert_eq!(DirentIter::new(&rec[..10]).count(), 0);
    }

    #[test]
    fn proc_listing_contains_self() {
        let dir = open_dir(c"/proc").unwrap();
        let mut buf = [0u8; 8192];
        let me = getpid().to_string();
        let mut found = false;
        loop {
            let n = getdents(&dir, &mut buf).unwrap();
            if n == 0 {
                break;
            }
            found |= DirentIter::new(&buf[..n]).any(|d| d.name == me.as_bytes());
        }
        assert!(found);
    }

    #[test]
    fn read_file_at_reports_oversize() {
        let dir = open_dir(c"/proc").unwrap();
        let mut small = [0u8; 4];
        let err = read_file_at(&dir, c"self/stat", &mut small).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let mut big = [0u8; 4096];
        let n = read_file_at(&dir, c"self/stat", &mut big).unwrap();
        assert!(big[..n].ends_with(b"\n"));
    }

    #[test]
    fn read_record_matches_full_read() {
        let dir = open_dir(c"/proc").unwrap();
        let mut a = [0u8; 4096];
        let mut b = [0u8; 4096];
        let n = read_record_at(&dir, c"self/status", &mut a).unwrap();
        let m = read_file_at(&dir, c"self/status", &mut b).unwrap();
        // status changes between reads only in counters; the length of the
        // first line and the name are stable.
        assert!(n > 100 && m > 100);
        assert_eq!(a[..5], b[..5]);
        let mut small = [0u8; 8];
        assert!(read_record_at(&dir, c"self/stat", &mut small).is_err());
    }

    #[test]
    fn clock_ticks_is_positive() {
        assert!(clock_ticks_per_sec().unwrap() > 0);
    }
}
