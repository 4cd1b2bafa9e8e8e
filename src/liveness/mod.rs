//! Liveness: noticing that a process is alive but stuck, by heartbeats
//! from processes that vouch for themselves, or by the progress watchdog
//! ([`progress`]), which judges processes by their CPU and I/O counters.
//!
//! A sender writes fixed 64-byte frames ([`frame`]) to a Unix datagram
//! socket; the kernel attaches its credentials to every datagram. The
//! [`Listener`] reads a bounded number of datagrams per wakeup and hands
//! each, with the credentials, to the daemon, which checks identity and
//! passes the beat to the senders' table ([`beats`]): a fixed table keyed
//! by `ProcKey`, with nonce order, per-sender and global rates, a pinned
//! pid namespace, and the stall latch (one `stalled` per silence run, a
//! `resumed` on the next beat). [`client`] is the sending side.
//!
//! Invariant: nothing here blocks. The socket is non-blocking and read
//! only after poll(2) says so; a flood costs at most
//! [`DATAGRAMS_PER_WAKE`] reads per wakeup, and every datagram that is not
//! taken as a beat is counted under one reason.

pub mod beats;
pub mod client;
pub mod frame;
pub mod progress;

use std::ffi::CString;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::procfs::ProcReader;
use crate::sys::{self, Ucred, CMSG_SPACE};
use beats::{Accepted, Admission, Beats, Origin, Reject};
use frame::{Frame, FRAME_LEN};

/// Datagrams read per wakeup before the loop looks at signals and timers.
pub const DATAGRAMS_PER_WAKE: usize = 1024;
/// The socket's receive buffer asked of the kernel.
const RCVBUF: usize = 4 << 20;

/// Why the socket could not be opened: `<path>: <what>[: os error][; hint]`.
#[derive(Debug)]
pub struct ListenError {
    pub path: PathBuf,
    pub what: &'static str,
    pub error: Option<io::Error>,
    pub hint: &'static str,
}

impl fmt::Display for ListenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.what)?;
        if let Some(e) = &self.error {
            write!(f, ": {e}")?;
        }
        if !self.hint.is_empty() {
            write!(f, "; {}", self.hint)?;
        }
        Ok(())
    }
}

impl std::error::Error for ListenError {}

/// The bound socket.
pub struct Listener {
    fd: OwnedFd,
    path: PathBuf,
    /// The socket file's device and inode, so only that file is removed.
    file_id: (u64, u64),
    /// Set when the listener left a stale socket file in its place.
    pub replaced_stale: bool,
}

/// One datagram as read: its bytes (at most one frame's worth), its real
/// length and its credentials, if any.
pub struct Datagram<'a> {
    pub bytes: &'a [u8],
    pub len: usize,
    /// Descriptors the sender passed (closed on receipt); such a datagram
    /// is refused as malformed.
    pub fds_closed: usize,
    pub creds: Result<Ucred, sys::CredsError>,
}

impl Listener {
    /// Binds `path` with `mode` and `gid` (`None`: reeve's group). The
    /// socket is made under a temporary name, given its mode and group,
    /// then renamed into place, so it is never writable by more than the
    /// config says. A socket file with no listener (a daemon that died) is
    /// replaced; one with a live listener, or a path that is not a socket,
    /// is refused.
    pub fn open(path: &Path, mode: u32, gid: Option<u32>) -> Result<Listener, ListenError> {
        let fail = |what, error, hint| ListenError {
            path: path.to_path_buf(),
            what,
            error,
            hint,
        };
        let cpath = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| fail("path holds a NUL byte", None, ""))?;
        let mut replaced_stale = false;
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => {
                match sys::unix_dgram_listening(&cpath) {
                    Ok(false) => replaced_stale = true,
                    Ok(true) => {
                        return Err(fail(
                            "another process listens on this socket",
                            None,
                            "stop it or give heartbeat.socket another path",
                        ))
                    }
                    // A stream or seqpacket socket answers EPROTOTYPE: not
                    // a heartbeat listener, and not ours to remove.
                    Err(e) => {
                        return Err(fail(
                            "cannot tell whether this socket is in use",
                            Some(e),
                            "remove it if no process uses it",
                        ))
                    }
                }
            }
            Ok(_) => {
                return Err(fail(
                    "exists and is not a socket",
                    None,
                    "give heartbeat.socket a path reeve may own",
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(fail("cannot inspect", Some(e), "")),
        }
        let mut rnd = [0u8; 4];
        sys::getrandom(&mut rnd).map_err(|e| fail("cannot read random bytes", Some(e), ""))?;
        let mut tmp_name = path.as_os_str().to_owned();
        tmp_name.push(format!(".tmp-{:08x}", u32::from_le_bytes(rnd)));
        let tmp = PathBuf::from(tmp_name);
        let ctmp = CString::new(tmp.as_os_str().as_bytes())
            .map_err(|_| fail("path holds a NUL byte", None, ""))?;
        let fd = sys::unix_dgram_bind(&ctmp, RCVBUF).map_err(|e| {
            let hint = match e.raw_os_error() {
                Some(libc::ENOENT) => "create its directory first",
                Some(libc::EINVAL) => {
                    "a socket path holds at most 107 bytes (with the temporary suffix)"
                }
                _ => "",
            };
            fail("cannot bind the heartbeat socket", Some(e), hint)
        })?;
        let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
            .map_err(|e| fail("cannot set the socket's mode", Some(e), ""))
            .and_then(|()| match gid {
                Some(g) => std::os::unix::fs::chown(&tmp, None, Some(g))
                    .map_err(|e| fail("cannot set the socket's group", Some(e), "")),
                None => Ok(()),
            })
            .and_then(|()| {
                std::fs::rename(&tmp, path)
                    .map_err(|e| fail("cannot move the socket into place", Some(e), ""))
            });
        let file_id = placed.and_then(|()| {
            std::fs::symlink_metadata(path)
                .map(|m| (m.dev(), m.ino()))
                .map_err(|e| fail("cannot inspect the socket after placing it", Some(e), ""))
        });
        let file_id = match file_id {
            Ok(id) => id,
            Err(e) => {
                // The temporary file is ours and useless now; the error
                // that matters is the one returned.
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        Ok(Listener {
            fd,
            path: path.to_path_buf(),
            file_id,
            replaced_stale,
        })
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads one datagram into `buf`; `Ok(None)` when none waits.
    pub fn recv<'a>(
        &self,
        buf: &'a mut [u8; FRAME_LEN],
        control: &mut [u8; CMSG_SPACE],
    ) -> io::Result<Option<Datagram<'a>>> {
        let Some(got) = sys::recv_with_creds(&self.fd, buf, control)? else {
            return Ok(None);
        };
        let creds = if got.control_truncated {
            Err(sys::CredsError::Malformed)
        } else {
            sys::parse_creds(&control[..got.control_len])
        };
        let n = got.len.min(FRAME_LEN);
        Ok(Some(Datagram {
            bytes: &buf[..n],
            len: got.len,
            fds_closed: got.fds_closed,
            creds,
        }))
    }
}

/// A datagram taken as a beat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    pub origin: Origin,
    pub frame: Frame,
    pub accepted: Accepted,
}

/// A datagram refused, and the pid the kernel named (0: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub reason: Reject,
    pub pid: u32,
}

/// What [`intake`] asks of the host: who a pid is now, and whether a
/// sender the table does not hold may beat.
pub trait Senders {
    /// The inode of the /proc/<pid> directory; `None` when it is gone.
    fn proc_inode(&mut self, pid: u32) -> Option<u64>;
    /// The identity (pid + start ticks) and pid namespace inode of `pid`
    /// as /proc shows them now; `None` when it ended or is a zombie.
    fn identify(&mut self, pid: u32) -> Option<(crate::procfs::ProcKey, u64)>;
    /// Whether a newcomer may beat, and with which rule and timeout.
    fn admit(&mut self, origin: Origin) -> Option<Admission>;
}

/// The /proc directory, for [`Senders::proc_inode`]: one fstatat per beat.
pub struct ProcDir(OwnedFd);

impl ProcDir {
    pub fn open() -> io::Result<ProcDir> {
        sys::open_dir(c"/proc").map(ProcDir)
    }

    /// The inode of /proc/<pid>.
    pub fn inode(&self, pid: u32) -> Option<u64> {
        let mut digits = [0u8; 10];
        let d = crate::digits::format_u32(&mut digits, pid);
        let mut name = [0u8; 11];
        name[..d.len()].copy_from_slice(d);
        let path = std::ffi::CStr::from_bytes_with_nul(&name[..=d.len()]).ok()?;
        sys::inode_at(&self.0, path).ok()
    }
}

/// [`Senders::identify`] through a [`ProcReader`].
pub fn identify_with(reader: &mut ProcReader, pid: u32) -> Option<(crate::procfs::ProcKey, u64)> {
    let stat = reader.stat(pid).ok().filter(|s| !s.is_dead())?;
    let ns = reader.pid_ns(pid).ok().flatten()?;
    Some((stat.key(), ns))
}

/// Checks one datagram, cheapest first: the kernel's credentials, the
/// frame, frame pid = credentials pid, the global rate (before any /proc
/// read, so a flood costs one recvmsg each), the sender's identity, then
/// the senders' table (admission, nonce, per-sender rate). The identity
/// costs one fstatat of /proc/<pid> for a sender already known under that
/// directory inode (procfs gives a reused pid a new inode, so the same
/// inode is the same process, in the namespace pinned at first sight);
/// a new inode is read in full (stat's start time, so a recycled pid is a
/// new sender, and the pid namespace). Admission is asked only for a
/// sender the table does not hold. Every refusal is counted in `beats`.
pub fn intake(
    beats: &mut Beats,
    d: &Datagram<'_>,
    senders: &mut impl Senders,
    now_ns: u64,
) -> Result<Taken, Refused> {
    let creds = d.creds;
    let kernel_pid = creds.map_or(0, |c| c.pid);
    let refuse = |beats: &mut Beats, r| {
        beats.reject(r);
        Refused {
            reason: r,
            pid: kernel_pid,
        }
    };
    let parsed = if d.len != FRAME_LEN {
        Err(Reject::Size)
    } else if d.fds_closed > 0 {
        Err(Reject::Malformed)
    } else {
        frame::decode(d.bytes).map_err(Reject::of_frame)
    };
    let (creds, frame) = match (creds, parsed) {
        (Err(_), _) => return Err(refuse(beats, Reject::NoCredentials)),
        (_, Err(r)) => return Err(refuse(beats, r)),
        (Ok(c), Ok(f)) if c.pid != f.pid => return Err(refuse(beats, Reject::Spoof)),
        (Ok(c), Ok(f)) => (c, f),
    };
    let refused = |reason| Refused {
        reason,
        pid: creds.pid,
    };
    beats.take_global(now_ns).map_err(refused)?;
    let Some(proc_ino) = senders.proc_inode(creds.pid) else {
        return Err(refuse(beats, Reject::Gone));
    };
    let origin = match beats.known_by_inode(creds.pid, proc_ino) {
        Some(known) => known,
        None => {
            let Some((key, ns)) = senders.identify(creds.pid) else {
                return Err(refuse(beats, Reject::Gone));
            };
            Origin {
                key,
                uid: creds.uid,
                ns,
                proc_ino,
            }
        }
    };
    let admission = if beats.knows(&origin.key) {
        None
    } else {
        if beats.is_full() {
            beats.evict_gone(|pid| senders.proc_inode(pid));
        }
        senders.admit(origin)
    };
    let accepted = beats
        .beat(origin, &frame, admission, now_ns)
        .map_err(refused)?;
    Ok(Taken {
        origin,
        frame,
        accepted,
    })
}

impl Drop for Listener {
    /// The socket file goes with the listener, so a clean stop leaves no
    /// stale file, unless the path now names another file. A failure is
    /// dropped on purpose: the next start replaces a stale socket anyway.
    fn drop(&mut self) {
        let ours =
            std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.file_id);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tempdir::TempDir;

    #[test]
    fn open_sets_mode_replaces_stale_and_refuses_the_rest() {
        let dir = TempDir::new("listener");
        let path = dir.path().join("beat.sock");
        let first = Listener::open(&path, 0o620, None).unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o7777, 0o620);
        assert!(!first.replaced_stale);
        let e = Listener::open(&path, 0o660, None).err().unwrap();
        assert!(e.to_string().contains("another process listens"), "{e}");
        drop(first);
        // A socket file left by a dead listener: the fd closed, the file stays.
        let cpath = CString::new(path.as_os_str().as_bytes()).unwrap();
        drop(sys::unix_dgram_bind(&cpath, 4096).unwrap());
        assert!(path.exists());
        let again = Listener::open(&path, 0o660, None).unwrap();
        assert!(again.replaced_stale);
        drop(again);
        assert!(!path.exists(), "a clean stop removes its socket file");
        std::fs::write(&path, b"not a socket").unwrap();
        let e = Listener::open(&path, 0o660, None).err().unwrap();
        assert!(e.to_string().contains("is not a socket"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), b"not a socket");
        let e = Listener::open(&dir.path().join("no/such/dir.sock"), 0o660, None)
            .err()
            .unwrap();
        assert!(e.to_string().contains("create its directory first"), "{e}");
        assert!(!e.to_string().contains('\n'));
    }

    #[test]
    fn proc_inode_is_the_directory_inode() {
        let dir = ProcDir::open().unwrap();
        for pid in [1, sys::getpid()] {
            let want = std::fs::metadata(format!("/proc/{pid}")).unwrap().ino();
            assert_eq!(dir.inode(pid), Some(want));
        }
        assert_eq!(dir.inode(u32::MAX), None);
    }

    #[test]
    fn recv_reports_credentials_and_real_length() {
        let dir = TempDir::new("listener-recv");
        let path = dir.path().join("b.sock");
        let l = Listener::open(&path, 0o600, None).unwrap();
        let mut c = client::Client::new(&path).unwrap();
        c.beat(frame::Status::Ok, [0; frame::PAYLOAD_LEN]).unwrap();
        let mut buf = [0u8; FRAME_LEN];
        let mut control = [0u8; CMSG_SPACE];
        let d = l.recv(&mut buf, &mut control).unwrap().unwrap();
        assert_eq!(d.len, FRAME_LEN);
        assert_eq!(d.creds.unwrap().pid, sys::getpid());
        let f = frame::decode(d.bytes).unwrap();
        assert_eq!((f.pid, f.nonce), (sys::getpid(), c.nonce()));
        assert!(l.recv(&mut buf, &mut control).unwrap().is_none());
    }
}
