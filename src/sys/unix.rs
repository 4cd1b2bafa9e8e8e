//! Unix datagram sockets with kernel credentials (the heartbeat channel),
//! and getrandom(2).
//!
//! The listener is SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC with
//! SO_PASSCRED, so the kernel attaches the sender's pid, uid and gid to
//! every datagram whether the sender asks or not. [`recv_with_creds`] reads
//! one datagram and its control data into caller buffers; [`parse_creds`]
//! turns the control bytes into a [`Ucred`] in safe code (it is fuzzed).

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::{cvt, cvt_size, retry};

/// Room for one SCM_CREDENTIALS message (a 16-byte header and a 12-byte
/// ucred, padded) and a little more, so a truncated control part is
/// reported rather than silently cut.
pub const CMSG_SPACE: usize = 64;

/// The longest socket path the kernel takes (sun_path less its NUL).
pub const SOCKET_PATH_MAX: usize = 107;

/// The sender's credentials, as the kernel attested them (pids as seen
/// from the receiver's pid namespace).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ucred {
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
}

/// Why a control part held no usable credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredsError {
    /// No SCM_CREDENTIALS message in the control data.
    Missing,
    /// A header whose length runs past the data or is shorter than itself.
    Malformed,
    /// The pid is not positive.
    BadPid,
}

impl std::fmt::Display for CredsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CredsError::Missing => "no SCM_CREDENTIALS in the datagram",
            CredsError::Malformed => "malformed control message",
            CredsError::BadPid => "credentials with a pid that is not positive",
        })
    }
}

const HDR: usize = std::mem::size_of::<libc::cmsghdr>();
const ALIGN: usize = std::mem::size_of::<usize>();

fn ne_usize(b: &[u8]) -> usize {
    let mut a = [0u8; ALIGN];
    a.copy_from_slice(&b[..ALIGN]);
    usize::from_ne_bytes(a)
}

fn ne_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_ne_bytes(a)
}

/// Finds the SCM_CREDENTIALS message in a control part (native byte order
/// and alignment, as recvmsg returns it). Each header's `cmsg_len` is
/// checked against what is left, never trusted.
pub fn parse_creds(control: &[u8]) -> Result<Ucred, CredsError> {
    let mut at = 0usize;
    while control.len().saturating_sub(at) >= HDR {
        let len = ne_usize(&control[at..]);
        if len < HDR || len > control.len() - at {
            return Err(CredsError::Malformed);
        }
        let level = ne_u32(&control[at + ALIGN..]) as libc::c_int;
        let kind = ne_u32(&control[at + ALIGN + 4..]) as libc::c_int;
        if level == libc::SOL_SOCKET && kind == libc::SCM_CREDENTIALS {
            let data = &control[at + HDR..at + len];
            if data.len() < 12 {
                return Err(CredsError::Malformed);
            }
            let pid = ne_u32(data) as i32;
            if pid <= 0 {
                return Err(CredsError::BadPid);
            }
            return Ok(Ucred {
                pid: pid as u32,
                uid: ne_u32(&data[4..]),
                gid: ne_u32(&data[8..]),
            });
        }
        // The next header starts at the aligned end of this one.
        let step = len.div_ceil(ALIGN).saturating_mul(ALIGN);
        at = at.saturating_add(step);
    }
    Err(CredsError::Missing)
}

/// Encodes one SCM_CREDENTIALS control message the way the kernel does
/// (for tests and the fuzz target's seeds).
pub fn encode_creds(c: Ucred) -> Vec<u8> {
    let len = HDR + 12;
    let mut out = Vec::with_capacity(len.div_ceil(ALIGN) * ALIGN);
    out.extend_from_slice(&len.to_ne_bytes());
    out.extend_from_slice(&(libc::SOL_SOCKET as u32).to_ne_bytes());
    out.extend_from_slice(&(libc::SCM_CREDENTIALS as u32).to_ne_bytes());
    out.extend_from_slice(&(c.pid as i32).to_ne_bytes());
    out.extend_from_slice(&c.uid.to_ne_bytes());
    out.extend_from_slice(&c.gid.to_ne_bytes());
    out.resize(len.div_ceil(ALIGN) * ALIGN, 0);
    out
}

fn sockaddr(path: &CStr) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    let bytes = path.to_bytes();
    if bytes.is_empty() || bytes.len() > SOCKET_PATH_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "socket path must be 1 to 107 bytes",
        ));
    }
    // SAFETY: an all-zero sockaddr_un is a valid value of this C struct.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    Ok((addr, len as libc::socklen_t))
}

fn dgram_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; on success the fd is new and ours.
    let fd = cvt(unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    })?;
    // SAFETY: `fd` was just returned by socket(2) and is owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A non-blocking datagram socket bound to `path` with SO_PASSCRED set.
/// The receive buffer is raised to `rcvbuf` bytes where the kernel allows.
pub fn unix_dgram_bind(path: &CStr, rcvbuf: usize) -> io::Result<OwnedFd> {
    let fd = dgram_socket()?;
    let one: libc::c_int = 1;
    // SAFETY: `one` is a valid c_int for the option's length.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PASSCRED,
            &one as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })?;
    let size = rcvbuf.min(i32::MAX as usize) as libc::c_int;
    // SAFETY: as above. A refused size leaves the kernel default, which
    // only means more datagrams are dropped under a flood (the sender sees
    // EAGAIN); the receiver is correct either way.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &size as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    let (addr, len) = sockaddr(path)?;
    // SAFETY: `addr` is a valid sockaddr_un of `len` bytes.
    cvt(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &addr as *const libc::sockaddr_un as *const libc::sockaddr,
            len,
        )
    })?;
    Ok(fd)
}

/// An unbound non-blocking datagram socket for a client.
pub fn unix_dgram_client() -> io::Result<OwnedFd> {
    dgram_socket()
}

/// Sends one datagram to the socket at `path`. Never blocks: a full
/// receiver is EAGAIN.
pub fn unix_send_to(fd: &OwnedFd, path: &CStr, data: &[u8]) -> io::Result<usize> {
    let (addr, len) = sockaddr(path)?;
    retry(|| {
        // SAFETY: `data` is readable for its length and `addr` is a valid
        // sockaddr_un of `len` bytes.
        cvt_size(unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                data.as_ptr() as *const libc::c_void,
                data.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                &addr as *const libc::sockaddr_un as *const libc::sockaddr,
                len,
            )
        })
    })
}

/// Whether a datagram socket at `path` has a live receiver: a connect
/// that is refused means the file is left over from a dead process.
pub fn unix_dgram_listening(path: &CStr) -> io::Result<bool> {
    let fd = dgram_socket()?;
    let (addr, len) = sockaddr(path)?;
    // SAFETY: `addr` is a valid sockaddr_un of `len` bytes.
    let r = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            &addr as *const libc::sockaddr_un as *const libc::sockaddr,
            len,
        )
    };
    if r == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => Ok(false),
        _ => Err(e),
    }
}

/// What one [`recv_with_creds`] read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// The datagram's real length (may exceed the buffer: see `truncated`).
    pub len: usize,
    /// Bytes of control data written.
    pub control_len: usize,
    /// The datagram was longer than the buffer (MSG_TRUNC).
    pub truncated: bool,
    /// The control data did not fit (MSG_CTRUNC).
    pub control_truncated: bool,
    /// File descriptors the sender passed (SCM_RIGHTS), closed at once.
    pub fds_closed: usize,
}

/// The file descriptors in the SCM_RIGHTS messages of a control part, in
/// the same bounds-checked walk as [`parse_creds`].
pub fn passed_fds(control: &[u8]) -> impl Iterator<Item = libc::c_int> + '_ {
    let mut at = 0usize;
    let mut data: &[u8] = &[];
    std::iter::from_fn(move || loop {
        if data.len() >= 4 {
            let fd = ne_u32(data) as libc::c_int;
            data = &data[4..];
            return Some(fd);
        }
        if control.len().saturating_sub(at) < HDR {
            return None;
        }
        let len = ne_usize(&control[at..]);
        if len < HDR || len > control.len() - at {
            return None;
        }
        let level = ne_u32(&control[at + ALIGN..]) as libc::c_int;
        let kind = ne_u32(&control[at + ALIGN + 4..]) as libc::c_int;
        data = if level == libc::SOL_SOCKET && kind == libc::SCM_RIGHTS {
            &control[at + HDR..at + len]
        } else {
            &[]
        };
        at = at.saturating_add(len.div_ceil(ALIGN).saturating_mul(ALIGN));
    })
}

/// Reads one datagram without blocking; `Ok(None)` when none waits.
pub fn recv_with_creds(
    fd: &OwnedFd,
    buf: &mut [u8],
    control: &mut [u8; CMSG_SPACE],
) -> io::Result<Option<Received>> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is a valid value of this C struct.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = CMSG_SPACE as _;
    let r = retry(|| {
        // SAFETY: `msg` points at `iov` (the caller's writable buffer) and
        // at `control` (CMSG_SPACE writable bytes), both alive for the call.
        // MSG_TRUNC makes the kernel report the datagram's real length.
        cvt_size(unsafe {
            libc::recvmsg(
                fd.as_raw_fd(),
                &mut msg,
                libc::MSG_DONTWAIT | libc::MSG_TRUNC | libc::MSG_CMSG_CLOEXEC,
            )
        })
    });
    match r {
        Ok(len) => {
            let control_len = (msg.msg_controllen as usize).min(CMSG_SPACE);
            // A sender can pass descriptors; the kernel has installed them
            // in this process. They are never used: close each, so a
            // hostile sender cannot exhaust reeve's descriptors.
            let mut fds_closed = 0;
            for fd in passed_fds(&control[..control_len]) {
                // SAFETY: the kernel just installed `fd` for this process
                // from this datagram; nothing else knows or owns it. The
                // result is not needed: the fd is gone either way.
                unsafe { libc::close(fd) };
                fds_closed += 1;
            }
            Ok(Some(Received {
                len,
                control_len,
                truncated: msg.msg_flags & libc::MSG_TRUNC != 0,
                control_truncated: msg.msg_flags & libc::MSG_CTRUNC != 0,
                fds_closed,
            }))
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}

/// Fills `buf` from getrandom(2) without ever waiting: the kernel's
/// CSPRNG once it is initialised; before that (a PID 1 early in boot) the
/// pool's output as it is (GRND_INSECURE, Linux 5.6+), which is enough for
/// what reeve draws (an instance id, restart jitter, a client's nonce
/// start, a temporary socket name), none of which is a secret.
pub fn getrandom(buf: &mut [u8]) -> io::Result<()> {
    /// GRND_INSECURE, not in every libc's constants yet.
    const GRND_INSECURE: libc::c_uint = 0x0004;
    let mut at = 0;
    let mut flags = libc::GRND_NONBLOCK;
    while at < buf.len() {
        let rest = &mut buf[at..];
        let r = retry(|| {
            // SAFETY: `rest` is writable for its length.
            cvt_size(unsafe {
                libc::getrandom(rest.as_mut_ptr() as *mut libc::c_void, rest.len(), flags)
            } as libc::ssize_t)
        });
        match r {
            Ok(n) => at += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && flags != GRND_INSECURE => {
                flags = GRND_INSECURE;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creds_round_trip_and_bounds() {
        let c = Ucred {
            pid: 42,
            uid: 1000,
            gid: 100,
        };
        let bytes = encode_creds(c);
        assert_eq!(parse_creds(&bytes), Ok(c));
        assert_eq!(parse_creds(&[]), Err(CredsError::Missing));
        for cut in 1..HDR + 12 {
            assert!(parse_creds(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut zero = bytes.clone();
        zero[..ALIGN].copy_from_slice(&0usize.to_ne_bytes());
        assert_eq!(parse_creds(&zero), Err(CredsError::Malformed));
        let mut neg = encode_creds(c);
        neg[HDR..HDR + 4].copy_from_slice(&(-1i32).to_ne_bytes());
        assert_eq!(parse_creds(&neg), Err(CredsError::BadPid));
        // Another message first (SCM_RIGHTS-shaped), then the credentials.
        let mut two = Vec::new();
        two.extend_from_slice(&(HDR + 4).to_ne_bytes());
        two.extend_from_slice(&(libc::SOL_SOCKET as u32).to_ne_bytes());
        two.extend_from_slice(&(libc::SCM_RIGHTS as u32).to_ne_bytes());
        two.extend_from_slice(&[0u8; 8]);
        two.extend_from_slice(&bytes);
        assert_eq!(parse_creds(&two), Ok(c));
    }

    #[test]
    fn kernel_attaches_credentials() {
        let dir = crate::tempdir::TempDir::new("unixsock");
        let path = dir.path().join("s");
        let cpath = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        let rx = unix_dgram_bind(&cpath, 1 << 16).unwrap();
        assert!(unix_dgram_listening(&cpath).unwrap());
        let tx = unix_dgram_client().unwrap();
        assert_eq!(unix_send_to(&tx, &cpath, b"hello").unwrap(), 5);
        let mut buf = [0u8; 4];
        let mut control = [0u8; CMSG_SPACE];
        let got = recv_with_creds(&rx, &mut buf, &mut control)
            .unwrap()
            .unwrap();
        assert_eq!(got.len, 5);
        assert!(got.truncated);
        let c = parse_creds(&control[..got.control_len]).unwrap();
        assert_eq!(c.pid, super::super::getpid());
        assert_eq!(c.uid, super::super::geteuid());
        assert_eq!(recv_with_creds(&rx, &mut buf, &mut control).unwrap(), None);
        drop(rx);
        assert!(!unix_dgram_listening(&cpath).unwrap());
    }

    /// Sends `data` with `fds` attached (SCM_RIGHTS) to the socket at `path`.
    fn send_with_fds(path: &CStr, data: &[u8], fds: &[libc::c_int]) {
        let tx = unix_dgram_client().unwrap();
        let (addr, alen) = sockaddr(path).unwrap();
        let mut iov = libc::iovec {
            iov_base: data.as_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        };
        let mut control = vec![0u8; HDR + 4 * fds.len() + ALIGN];
        control[..ALIGN].copy_from_slice(&(HDR + 4 * fds.len()).to_ne_bytes());
        control[ALIGN..ALIGN + 4].copy_from_slice(&(libc::SOL_SOCKET as u32).to_ne_bytes());
        control[ALIGN + 4..HDR].copy_from_slice(&(libc::SCM_RIGHTS as u32).to_ne_bytes());
        for (i, fd) in fds.iter().enumerate() {
            control[HDR + 4 * i..HDR + 4 * i + 4].copy_from_slice(&fd.to_ne_bytes());
        }
        // SAFETY: an all-zero msghdr is valid; every pointer set below
        // points at live buffers of the given lengths.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = &addr as *const libc::sockaddr_un as *mut libc::c_void;
        msg.msg_namelen = alen;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = (HDR + 4 * fds.len()).div_ceil(ALIGN) * ALIGN;
        // SAFETY: as above.
        let r = unsafe { libc::sendmsg(tx.as_raw_fd(), &msg, 0) };
        assert_eq!(r, data.len() as isize, "{}", io::Error::last_os_error());
    }

    #[test]
    fn passed_descriptors_are_closed_on_receipt() {
        let dir = crate::tempdir::TempDir::new("unixfds");
        let path = dir.path().join("s");
        let cpath = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        let rx = unix_dgram_bind(&cpath, 1 << 16).unwrap();
        let files: Vec<std::fs::File> = (0..3)
            .map(|_| std::fs::File::open("/dev/null").unwrap())
            .collect();
        let fds: Vec<libc::c_int> = files.iter().map(|f| f.as_raw_fd()).collect();
        send_with_fds(&cpath, b"x", &fds);
        let mut buf = [0u8; 8];
        let mut control = [0u8; CMSG_SPACE];
        let got = recv_with_creds(&rx, &mut buf, &mut control)
            .unwrap()
            .unwrap();
        assert_eq!(got.fds_closed, 3);
        let installed: Vec<libc::c_int> = passed_fds(&control[..got.control_len]).collect();
        assert_eq!(installed.len(), 3);
        for fd in installed {
            assert!(!fds.contains(&fd), "the kernel installs new descriptors");
            // SAFETY: F_GETFD only asks whether `fd` is open.
            let r = unsafe { libc::fcntl(fd, libc::F_GETFD) };
            assert_eq!(r, -1, "fd {fd} was left open");
        }
        // The credentials are still found next to them.
        let c = parse_creds(&control[..got.control_len]).unwrap();
        assert_eq!(c.pid, super::super::getpid());
    }

    #[test]
    fn random_bytes_differ() {
        let mut a = [0u8; 16];
        let mut b = [0u8; 16];
        getrandom(&mut a).unwrap();
        getrandom(&mut b).unwrap();
        assert_ne!(a, b);
    }
}
