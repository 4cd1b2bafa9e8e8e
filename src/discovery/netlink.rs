//! The netlink proc connector: a socket subscribed to the kernel's process
//! events, and a pure parser for the datagrams it delivers.
//!
//! The parser trusts nothing: every length is checked against the buffer,
//! and a malformed message ends iteration with an error instead of a panic
//! or an out-of-bounds read. The connector reports only in the initial pid
//! and user namespaces; [`ProcConnector::open`] refuses elsewhere with a
//! reason the daemon logs before it falls back to polling.

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

use crate::procfs::{Comm, INIT_PID_NS_INO, INIT_USER_NS_INO};
use crate::sys;

pub(super) const NLMSG_HDRLEN: usize = 16;
pub(super) const CN_MSG_LEN: usize = 20;
pub(super) const EVENT_HDR_LEN: usize = 16;
pub(super) const NLMSG_ERROR: u16 = 2;
pub(super) const NLMSG_NOOP: u16 = 1;
pub(super) const NLMSG_OVERRUN: u16 = 4;
pub(super) const CN_IDX_PROC: u32 = 1;
pub(super) const CN_VAL_PROC: u32 = 1;
const PROC_CN_MCAST_LISTEN: u32 = 1;
const PROC_CN_MCAST_IGNORE: u32 = 2;

pub(super) const PROC_EVENT_NONE: u32 = 0;
pub(super) const PROC_EVENT_FORK: u32 = 0x0000_0001;
pub(super) const PROC_EVENT_EXEC: u32 = 0x0000_0002;
pub(super) const PROC_EVENT_COMM: u32 = 0x0000_0200;
pub(super) const PROC_EVENT_EXIT: u32 = 0x8000_0000;

/// One process event from the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcEvent {
    /// The answer to a subscription request: `ack` is the request's ack
    /// field plus one (the kernel rewrites `seq`), `err` an errno or 0.
    Ack {
        ack: u32,
        err: u32,
    },
    Fork {
        parent_tgid: u32,
        child_pid: u32,
        child_tgid: u32,
    },
    Exec {
        pid: u32,
        tgid: u32,
    },
    Comm {
        pid: u32,
        tgid: u32,
        comm: Comm,
    },
    Exit {
        pid: u32,
        tgid: u32,
        exit_code: u32,
        exit_signal: u32,
    },
    /// An event kind reeve does not act on (uid, gid, sid, ptrace, coredump).
    Other {
        what: u32,
    },
}

/// A process event with the kernel's CLOCK_MONOTONIC timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    pub timestamp_ns: u64,
    pub kind: ProcEvent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetlinkError {
    /// A header or payload extends past the datagram.
    Truncated,
    /// The netlink header's length is impossible.
    BadLength(u32),
    /// The kernel reported a netlink-level error (errno).
    Kernel(i32),
    /// The kernel dropped messages: events were lost.
    Overrun,
    /// A connector message not addressed to the proc connector.
    NotProc { idx: u32, val: u32 },
}

impl fmt::Display for NetlinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetlinkError::Truncated => write!(f, "truncated netlink message"),
            NetlinkError::BadLength(n) => write!(f, "impossible netlink length {n}"),
            NetlinkError::Kernel(e) => write!(f, "netlink error from the kernel: errno {e}"),
            NetlinkError::Overrun => write!(f, "netlink overrun: events were lost"),
            NetlinkError::NotProc { idx, val } => {
                write!(
                    f,
                    "connector message for {idx}:{val}, not the proc connector"
                )
            }
        }
    }
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(off..off + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(off..off + 8)?.try_into().ok()?))
}

/// Iterates the proc events in one datagram. After the first error it
/// yields nothing more.
pub fn events(buf: &[u8]) -> Events<'_> {
    Events { rest: buf }
}

pub struct Events<'a> {
    rest: &'a [u8],
}

impl Iterator for Events<'_> {
    type Item = Result<Event, NetlinkError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.rest.is_empty() {
                return None;
            }
            match self.next_message() {
                Ok(Some(ev)) => return Some(Ok(ev)),
                Ok(None) => continue,
                Err(e) => {
                    self.rest = &[];
                    return Some(Err(e));
                }
            }
        }
    }
}

impl Events<'_> {
    /// Consumes one netlink message; `Ok(None)` for a message that carries
    /// no event (NOOP).
    fn next_message(&mut self) -> Result<Option<Event>, NetlinkError> {
        let b = self.rest;
        let len = u32_at(b, 0).ok_or(NetlinkError::Truncated)?;
        let ty = u16_at(b, 4).ok_or(NetlinkError::Truncated)?;
        let len_us = len as usize;
        if len_us < NLMSG_HDRLEN || len_us > b.len() {
            return Err(NetlinkError::BadLength(len));
        }
        let msg = &b[NLMSG_HDRLEN..len_us];
        // NLMSG_ALIGN: the next message starts on a 4-byte boundary.
        let next = (len_us + 3) & !3;
        self.rest = b.get(next..).unwrap_or(&[]);
        match ty {
            NLMSG_NOOP => return Ok(None),
            NLMSG_ERROR => {
                let errno = u32_at(msg, 0).ok_or(NetlinkError::Truncated)? as i32;
                if errno == 0 {
                    return Ok(None);
                }
                // The kernel sends a negative errno; any other value is
                // passed through as it came, never negated into overflow.
                return Err(NetlinkError::Kernel(errno.wrapping_neg()));
            }
            NLMSG_OVERRUN => return Err(NetlinkError::Overrun),
            _ => {}
        }
        parse_cn_msg(msg).map(Some)
    }
}

fn parse_cn_msg(msg: &[u8]) -> Result<Event, NetlinkError> {
    let idx = u32_at(msg, 0).ok_or(NetlinkError::Truncated)?;
    let val = u32_at(msg, 4).ok_or(NetlinkError::Truncated)?;
    if idx != CN_IDX_PROC || val != CN_VAL_PROC {
        return Err(NetlinkError::NotProc { idx, val });
    }
    let ack = u32_at(msg, 12).ok_or(NetlinkError::Truncated)?;
    let data_len = u16_at(msg, 16).ok_or(NetlinkError::Truncated)? as usize;
    let data = msg
        .get(CN_MSG_LEN..CN_MSG_LEN + data_len)
        .ok_or(NetlinkError::Truncated)?;
    let what = u32_at(data, 0).ok_or(NetlinkError::Truncated)?;
    let timestamp_ns = u64_at(data, 8).ok_or(NetlinkError::Truncated)?;
    let body = &data[EVENT_HDR_LEN.min(data.len())..];
    let w = |i: usize| u32_at(body, i * 4).ok_or(NetlinkError::Truncated);
    let kind = match what {
        PROC_EVENT_NONE => ProcEvent::Ack { ack, err: w(0)? },
        PROC_EVENT_FORK => ProcEvent::Fork {
            parent_tgid: w(1)?,
            child_pid: w(2)?,
            child_tgid: w(3)?,
        },
        PROC_EVENT_EXEC => ProcEvent::Exec {
            pid: w(0)?,
            tgid: w(1)?,
        },
        PROC_EVENT_COMM => {
            let raw = body.get(8..24).ok_or(NetlinkError::Truncated)?;
            let end = raw.iter().position(|&c| c == 0).unwrap_or(raw.len());
            ProcEvent::Comm {
                pid: w(0)?,
                tgid: w(1)?,
                comm: Comm::new(&raw[..end]),
            }
        }
        PROC_EVENT_EXIT => ProcEvent::Exit {
            pid: w(0)?,
            tgid: w(1)?,
            exit_code: w(2)?,
            exit_signal: w(3)?,
        },
        other => ProcEvent::Other { what: other },
    };
    Ok(Event { timestamp_ns, kind })
}

/// Builds the subscription message: nlmsghdr + cn_msg + one u32 op. The
/// kernel answers with an ack event whose `ack` is this message's plus one.
fn mcast_message(op: u32, seq: u32, port: u32) -> [u8; NLMSG_HDRLEN + CN_MSG_LEN + 4] {
    let mut m = [0u8; NLMSG_HDRLEN + CN_MSG_LEN + 4];
    let total = m.len() as u32;
    m[0..4].copy_from_slice(&total.to_ne_bytes());
    m[4..6].copy_from_slice(&3u16.to_ne_bytes()); // NLMSG_DONE, as the connector expects
    m[8..12].copy_from_slice(&seq.to_ne_bytes());
    m[12..16].copy_from_slice(&port.to_ne_bytes());
    let c = NLMSG_HDRLEN;
    m[c..c + 4].copy_from_slice(&CN_IDX_PROC.to_ne_bytes());
    m[c + 4..c + 8].copy_from_slice(&CN_VAL_PROC.to_ne_bytes());
    m[c + 8..c + 12].copy_from_slice(&seq.to_ne_bytes());
    m[c + 12..c + 16].copy_from_slice(&seq.to_ne_bytes());
    m[c + 16..c + 18].copy_from_slice(&4u16.to_ne_bytes());
    m[c + CN_MSG_LEN..].copy_from_slice(&op.to_ne_bytes());
    m
}

/// Receive buffer the daemon asks for: room for tens of thousands of events
/// during a fork storm before the kernel reports an overrun.
pub const RECV_BUFFER: usize = 8 * 1024 * 1024;
/// One datagram; a proc event is well under 128 bytes.
pub const DATAGRAM_BUF: usize = 1024;

/// A subscribed proc-connector socket.
pub struct ProcConnector {
    sock: OwnedFd,
    seq: u32,
    buf: Box<[u8]>,
    foreign: u64,
}

/// Datagrams from senders other than the kernel one `recv` skips at most.
const FOREIGN_PER_RECV: usize = 64;

impl ProcConnector {
    /// Subscribes to process events and waits up to `handshake` for the
    /// kernel's acknowledgement. Errors say why in words an operator can act
    /// on; the caller decides whether that means polling or failing.
    pub fn open(handshake: Duration) -> Result<ProcConnector, String> {
        let ns_ino = |p: &std::ffi::CStr| {
            sys::open_dir(c"/proc")
                .and_then(|d| sys::inode_at(&d, p))
                .ok()
        };
        if let Some(ino) = ns_ino(c"self/ns/pid") {
            if ino != INIT_PID_NS_INO {
                return Err(format!(
                    "running in a child pid namespace (pid ns inode {ino}); the proc connector only reports in the initial one"
                ));
            }
        }
        if let Some(ino) = ns_ino(c"self/ns/user") {
            if ino != INIT_USER_NS_INO {
                return Err(format!(
                    "running in a child user namespace (user ns inode {ino}); the proc connector only reports in the initial one"
                ));
            }
        }
        let sock = sys::netlink_connector_socket(CN_IDX_PROC).map_err(|e| {
            format!("cannot bind the netlink proc connector: {e} (it needs root or CAP_NET_ADMIN)")
        })?;
        sys::set_recv_buffer(&sock, RECV_BUFFER)
            .map_err(|e| format!("cannot size the netlink receive buffer: {e}"))?;
        sys::attach_socket_filter(&sock, &super::filter::program())
            .map_err(|e| format!("cannot attach the proc event filter: {e}"))?;
        let seq = sys::getpid();
        let mut conn = ProcConnector {
            sock,
            seq,
            buf: vec![0; DATAGRAM_BUF].into_boxed_slice(),
            foreign: 0,
        };
        sys::netlink_send_to_kernel(&conn.sock, &mcast_message(PROC_CN_MCAST_LISTEN, seq, 0))
            .map_err(|e| format!("cannot subscribe to process events: {e}"))?;
        conn.await_ack(handshake)?;
        Ok(conn)
    }

    fn await_ack(&mut self, handshake: Duration) -> Result<(), String> {
        let deadline = sys::monotonic_ns().saturating_add(handshake.as_nanos() as u64);
        let expect_ack = self.seq.wrapping_add(1);
        loop {
            let now = sys::monotonic_ns();
            if now >= deadline {
                return Err(format!(
                    "the kernel did not acknowledge the proc connector subscription within {} ms",
                    handshake.as_millis()
                ));
            }
            let wait_ms = ((deadline - now) / 1_000_000).max(1) as i32;
            let mut fds = [sys::poll_fd(self.sock.as_raw_fd())];
            sys::poll(&mut fds, wait_ms).map_err(|e| format!("poll on netlink: {e}"))?;
            while let Some(dgram) = self.recv().map_err(|e| format!("netlink receive: {e}"))? {
                for ev in events(dgram) {
                    match ev {
                        Ok(Event {
                            kind: ProcEvent::Ack { ack, err },
                            ..
                        }) if ack == expect_ack => {
                            if err != 0 {
                                return Err(format!(
                                    "the kernel refused the proc connector subscription: {}",
                                    io::Error::from_raw_os_error(err as i32)
                                ));
                            }
                            return Ok(());
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    pub fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// Replaces the socket's filter ([`super::filter::build`]). On error
    /// the previous filter stays in force.
    pub fn set_filter(&self, program: &[libc::sock_filter]) -> io::Result<()> {
        sys::attach_socket_filter(&self.sock, program)
    }

    /// Removes the socket's filter: every event is queued again.
    pub fn clear_filter(&self) -> io::Result<()> {
        sys::detach_socket_filter(&self.sock)
    }

    /// The next datagram from the kernel, `Ok(None)` when none is queued.
    /// Events discovery never acts on were dropped by the kernel already
    /// ([`super::filter`]).
    /// An overrun is an error whose raw_os_error is ENOBUFS. Datagrams from
    /// any sender but the kernel are dropped.
    pub fn recv(&mut self) -> io::Result<Option<&[u8]>> {
        // Datagrams from a sender other than the kernel are skipped and
        // counted, at most FOREIGN_PER_RECV per call, so a local process
        // flooding the socket cannot keep one call busy: the caller's
        // bounded drain comes back at the next wakeup.
        for _ in 0..FOREIGN_PER_RECV {
            match sys::netlink_recv(&self.sock, &mut self.buf)? {
                None => return Ok(None),
                Some((_, sender)) if sender != 0 => self.foreign += 1,
                Some((n, _)) => return Ok(Some(&self.buf[..n])),
            }
        }
        Ok(None)
    }

    /// Datagrams from senders other than the kernel, skipped.
    pub fn foreign(&self) -> u64 {
        self.foreign
    }
}

impl Drop for ProcConnector {
    fn drop(&mut self) {
        // Unsubscribing keeps the kernel's listener count right, so it stops
        // building events nobody reads. A failure here changes nothing.
        let _ = sys::netlink_send_to_kernel(
            &self.sock,
            &mcast_message(PROC_CN_MCAST_IGNORE, self.seq, 0),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datagram(what: u32, body: &[u8]) -> Vec<u8> {
        let mut ev = Vec::new();
        ev.extend_from_slice(&what.to_ne_bytes());
        ev.extend_from_slice(&0u32.to_ne_bytes());
        ev.extend_from_slice(&77u64.to_ne_bytes());
        ev.extend_from_slice(body);
        let mut cn = Vec::new();
        cn.extend_from_slice(&CN_IDX_PROC.to_ne_bytes());
        cn.extend_from_slice(&CN_VAL_PROC.to_ne_bytes());
        cn.extend_from_slice(&9u32.to_ne_bytes());
        cn.extend_from_slice(&0u32.to_ne_bytes());
        cn.extend_from_slice(&(ev.len() as u16).to_ne_bytes());
        cn.extend_from_slice(&0u16.to_ne_bytes());
        cn.extend_from_slice(&ev);
        let mut nl = Vec::new();
        nl.extend_from_slice(&((16 + cn.len()) as u32).to_ne_bytes());
        nl.extend_from_slice(&3u16.to_ne_bytes());
        nl.extend_from_slice(&0u16.to_ne_bytes());
        nl.extend_from_slice(&0u32.to_ne_bytes());
        nl.extend_from_slice(&0u32.to_ne_bytes());
        nl.extend_from_slice(&cn);
        nl
    }

    fn words(ws: &[u32]) -> Vec<u8> {
        ws.iter().flat_map(|w| w.to_ne_bytes()).collect()
    }

    #[test]
    fn parses_each_kind() {
        let d = datagram(PROC_EVENT_EXEC, &words(&[10, 10]));
        let evs: Vec<_> = events(&d).collect();
        assert_eq!(
            evs,
            vec![Ok(Event {
                timestamp_ns: 77,
                kind: ProcEvent::Exec { pid: 10, tgid: 10 }
            })]
        );
        let d = datagram(PROC_EVENT_EXIT, &words(&[5, 5, 256, 17, 1, 1]));
        assert_eq!(
            events(&d).next().unwrap().unwrap().kind,
            ProcEvent::Exit {
                pid: 5,
                tgid: 5,
                exit_code: 256,
                exit_signal: 17
            }
        );
        let d = datagram(PROC_EVENT_FORK, &words(&[1, 1, 2, 2]));
        assert_eq!(
            events(&d).next().unwrap().unwrap().kind,
            ProcEvent::Fork {
                parent_tgid: 1,
                child_pid: 2,
                child_tgid: 2
            }
        );
        let mut body = words(&[3, 3]);
        body.extend_from_slice(b"ffmpeg\0\0\0\0\0\0\0\0\0\0");
        let d = datagram(PROC_EVENT_COMM, &body);
        match events(&d).next().unwrap().unwrap().kind {
            ProcEvent::Comm { tgid, comm, .. } => {
                assert_eq!(tgid, 3);
                assert_eq!(comm.as_bytes(), b"ffmpeg");
            }
            other => panic!("{other:?}"),
        }
        let d = datagram(PROC_EVENT_NONE, &words(&[1]));
        assert_eq!(
            events(&d).next().unwrap().unwrap().kind,
            ProcEvent::Ack { ack: 0, err: 1 }
        );
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let d = datagram(PROC_EVENT_EXIT, &words(&[5, 5, 0, 17, 1, 1]));
        for cut in 0..d.len() {
            let got: Vec<_> = events(&d[..cut]).collect();
            assert!(got.iter().all(|e| e.is_err()), "cut {cut}: {got:?}");
        }
    }

    #[test]
    fn several_messages_in_one_datagram() {
        let mut d = datagram(PROC_EVENT_EXEC, &words(&[10, 10]));
        d.extend(datagram(PROC_EVENT_EXEC, &words(&[11, 11])));
        let pids: Vec<_> = events(&d)
            .map(|e| match e.unwrap().kind {
                ProcEvent::Exec { tgid, .. } => tgid,
                _ => 0,
            })
            .collect();
        assert_eq!(pids, vec![10, 11]);
    }

    #[test]
    fn foreign_connector_and_bad_lengths() {
        let mut d = datagram(PROC_EVENT_EXEC, &words(&[10, 10]));
        d[16..20].copy_from_slice(&7u32.to_ne_bytes());
        assert_eq!(
            events(&d).next(),
            Some(Err(NetlinkError::NotProc { idx: 7, val: 1 }))
        );
        let mut d = datagram(PROC_EVENT_EXEC, &words(&[10, 10]));
        d[0..4].copy_from_slice(&5000u32.to_ne_bytes());
        assert_eq!(events(&d).next(), Some(Err(NetlinkError::BadLength(5000))));
        let mut d = datagram(PROC_EVENT_EXEC, &words(&[10, 10]));
        d[4..6].copy_from_slice(&NLMSG_OVERRUN.to_ne_bytes());
        assert_eq!(events(&d).next(), Some(Err(NetlinkError::Overrun)));
    }

    #[test]
    fn netlink_error_with_any_errno() {
        for errno in [-1i32, i32::MIN, i32::MAX, 0] {
            let mut d = Vec::new();
            d.extend_from_slice(&20u32.to_ne_bytes());
            d.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
            d.extend_from_slice(&[0u8; 10]);
            d.extend_from_slice(&errno.to_ne_bytes());
            let got: Vec<_> = events(&d).collect();
            if errno == 0 {
                assert!(got.is_empty());
            } else {
                assert_eq!(got, vec![Err(NetlinkError::Kernel(errno.wrapping_neg()))]);
            }
        }
    }

    #[test]
    fn subscription_message_layout() {
        let m = mcast_message(PROC_CN_MCAST_LISTEN, 42, 0);
        assert_eq!(u32_at(&m, 0), Some(40));
        assert_eq!(u32_at(&m, 16), Some(CN_IDX_PROC));
        assert_eq!(u16_at(&m, 32), Some(4));
        assert_eq!(u32_at(&m, 36), Some(PROC_CN_MCAST_LISTEN));
    }
}
