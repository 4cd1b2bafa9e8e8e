//! The netlink socket of the proc connector, and the classic BPF filter
//! the kernel runs on it.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::{cvt, cvt_size, retry};

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

/// Removes the socket's filter (SO_DETACH_FILTER): every datagram is queued
/// again.
pub fn detach_socket_filter(sock: &OwnedFd) -> io::Result<()> {
    let unused: libc::c_int = 0;
    // SAFETY: the option takes no value; a valid int is passed for form.
    cvt(unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_DETACH_FILTER,
            (&unused as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })?;
    Ok(())
}
