//! The systemd notify protocol, written by hand: one datagram per message
//! to the Unix socket named by `$NOTIFY_SOCKET` (a path, or an abstract
//! name when it starts with '@').
//!
//! The socket is non-blocking: a notify that cannot be sent at once is
//! counted as failed, never waited for, so the supervision loop does not
//! depend on the service manager's reading speed. Without `$NOTIFY_SOCKET`
//! every call does nothing. `$WATCHDOG_USEC` (honoured only when
//! `$WATCHDOG_PID` is absent or reeve's pid) gives the keep-alive cadence:
//! half the watchdog timeout.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// The service manager's notify socket, if reeve runs under one.
pub struct Notifier {
    socket: Option<(UnixDatagram, SocketAddr)>,
    watchdog: Option<Duration>,
    /// Messages that could not be sent.
    pub failures: u64,
    pub sent: u64,
}

impl Notifier {
    /// Reads `$NOTIFY_SOCKET`, `$WATCHDOG_USEC` and `$WATCHDOG_PID`. An
    /// unusable socket is an error for the caller to log; reeve runs on
    /// without notifying.
    pub fn from_env() -> (Notifier, Option<String>) {
        let watchdog = watchdog_interval(
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
            crate::sys::getpid(),
        );
        let mut n = Notifier {
            socket: None,
            watchdog: None,
            failures: 0,
            sent: 0,
        };
        let Some(name) = std::env::var_os("NOTIFY_SOCKET") else {
            return (n, None);
        };
        match open(&name.to_string_lossy()) {
            Ok(s) => {
                n.socket = Some(s);
                n.watchdog = watchdog;
                // A watchdog asked for in a form reeve cannot read would
                // get reeve killed for silence: say so.
                let usec = std::env::var("WATCHDOG_USEC").ok();
                let unreadable = usec
                    .as_deref()
                    .is_some_and(|u| u.trim().parse::<u64>().ok().filter(|&v| v > 0).is_none());
                let warning = unreadable.then(|| {
                    format!(
                        "WATCHDOG_USEC {:?} is not a positive number of microseconds; no WATCHDOG=1 is sent",
                        usec.unwrap_or_default()
                    )
                });
                (n, warning)
            }
            Err(e) => (
                n,
                Some(format!(
                    "NOTIFY_SOCKET {}: {e}; the service manager is not told when reeve is ready",
                    name.to_string_lossy()
                )),
            ),
        }
    }

    /// Whether a service manager listens.
    pub fn active(&self) -> bool {
        self.socket.is_some()
    }

    /// How often to send WATCHDOG=1, when the service manager asked for it.
    pub fn watchdog_every(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Sends one message (`READY=1`, `WATCHDOG=1`, `STOPPING=1`,
    /// `STATUS=...`, newline-separated). Returns the error of a failed send;
    /// it is also counted.
    pub fn send(&mut self, msg: &str) -> io::Result<()> {
        let Some((sock, addr)) = &self.socket else {
            return Ok(());
        };
        match sock.send_to_addr(msg.as_bytes(), addr) {
            Ok(_) => {
                self.sent += 1;
                Ok(())
            }
            Err(e) => {
                self.failures += 1;
                Err(e)
            }
        }
    }
}

fn open(name: &str) -> io::Result<(UnixDatagram, SocketAddr)> {
    let addr = if let Some(abs) = name.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        SocketAddr::from_abstract_name(abs.as_bytes())?
    } else if name.starts_with('/') {
        SocketAddr::from_pathname(name)?
    } else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "neither an absolute path nor an abstract name starting with '@'",
        ));
    };
    let sock = UnixDatagram::unbound()?;
    sock.set_nonblocking(true)?;
    Ok((sock, addr))
}

/// Half of `WATCHDOG_USEC`, when it is set for this process.
pub fn watchdog_interval(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    if let Some(p) = pid {
        if p.trim().parse::<u32>().ok()? != me {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_is_half_and_only_for_us() {
        assert_eq!(
            watchdog_interval(Some("2000000"), None, 7),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            watchdog_interval(Some("2000000"), Some("7"), 7),
            Some(Duration::from_secs(1))
        );
        assert_eq!(watchdog_interval(Some("2000000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval(Some("x"), None, 7), None);
        assert_eq!(watchdog_interval(None, None, 7), None);
    }

    #[test]
    fn sends_to_a_path_and_an_abstract_name() {
        let dir = std::env::temp_dir().join(format!("reeve-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sock");
        let _ = std::fs::remove_file(&path);
        let rx = UnixDatagram::bind(&path).unwrap();
        let (sock, addr) = open(path.to_str().unwrap()).unwrap();
        sock.send_to_addr(b"READY=1", &addr).unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        std::fs::remove_dir_all(&dir).unwrap();

        use std::os::linux::net::SocketAddrExt;
        let name = format!("reeve-notify-test-{}", std::process::id());
        let rx = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
            .unwrap();
        let (sock, addr) = open(&format!("@{name}")).unwrap();
        sock.send_to_addr(b"WATCHDOG=1", &addr).unwrap();
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");
        assert!(open("relative").is_err());
    }
}
