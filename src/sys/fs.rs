//! Files and directories: open and enumerate /proc with getdents64, read
//! dirfd-relative files into caller buffers, readlink, inodes, xattrs.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::{cvt, cvt_size, retry};

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

/// The statfs f_type of procfs (PROC_SUPER_MAGIC, linux/magic.h).
const PROC_SUPER_MAGIC: i64 = 0x9fa0;

/// Whether `fd` is a file of the kernel's own procfs, not one a FUSE
/// file system (LXCFS in a container) or a bind mount of a regular file
/// put in its place.
pub fn is_procfs(fd: &OwnedFd) -> io::Result<bool> {
    // SAFETY: an all-zero statfs is a valid value of a plain C struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open and `st` is a valid, writable statfs.
    cvt(unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) })?;
    Ok(st.f_type as i64 == PROC_SUPER_MAGIC)
}
