//! Thin wrappers over the libc calls reeve needs: clocks, directory
//! enumeration with getdents64, dirfd-relative reads into caller buffers,
//! netlink sockets, signalfd, poll, and the bpf(2) commands of cgroup
//! bandwidth limits.
//!
//! This is the only module with `unsafe`. Every wrapper takes and returns
//! safe types (slices, `OwnedFd`, `io::Result`), never allocates, and states
//! in a SAFETY comment why the call is sound.

use std::io;
use std::os::fd::RawFd;

mod bpf;
mod fs;
mod netlink;
mod process;
mod recovery;
mod signals;
mod unix;

pub use bpf::*;
pub use fs::*;
pub use netlink::*;
pub use process::*;
pub use recovery::*;
pub use signals::*;
pub use unix::*;

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

/// Gives the calling thread the lowest scheduling priority (nice 19): on a
/// busy host it runs only when nothing of normal priority, the watch loop
/// included, wants the CPU. Lowering needs no privilege.
pub fn lower_thread_priority() -> io::Result<()> {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) };
    // SAFETY: setpriority reads only its arguments; with PRIO_PROCESS and a
    // thread id it changes that one thread (Linux).
    cvt(unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19) })?;
    Ok(())
}

pub fn getegid() -> u32 {
    // SAFETY: getegid cannot fail.
    unsafe { libc::getegid() }
}

pub fn geteuid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
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
