//! Reading /proc: process identity, metadata and fast PID-set scans.
//!
//! Parsing is pure (`parse_stat`, `parse_status_ids`, `parse_cmdline`) and
//! never panics on any input. [`ProcReader`] owns one /proc directory fd
//! and fixed buffers allocated once, so a steady-state scan reads files
//! without allocating. A process that vanishes mid-read is
//! [`ReadError::Gone`], a normal outcome rather than a failure.

use std::ffi::CStr;
use std::fmt;
use std::io;
use std::os::fd::OwnedFd;

use serde::{Deserialize, Serialize};

use crate::sys;

/// A process's identity: its pid and its start time in clock ticks since
/// boot (field 22 of /proc/<pid>/stat). A reused pid has a new start time,
/// so two different processes never share a `ProcKey`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ProcKey {
    pub pid: u32,
    pub start_ticks: u64,
}

impl fmt::Display for ProcKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.pid, self.start_ticks)
    }
}

/// The longest comm /proc shows: 15 bytes for a task, up to 63 for a kernel
/// worker that appends its workqueue name. Longer input is cut here.
pub const COMM_CAP: usize = 64;

/// A process name as /proc shows it, stored inline (no allocation).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Comm {
    bytes: [u8; COMM_CAP],
    len: u8,
}

impl Comm {
    pub fn new(src: &[u8]) -> Comm {
        let len = src.len().min(COMM_CAP);
        let mut bytes = [0u8; COMM_CAP];
        bytes[..len].copy_from_slice(&src[..len]);
        Comm {
            bytes,
            len: len as u8,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    /// The name as text, with bytes that are not UTF-8 shown lossily.
    pub fn to_string_lossy(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(self.as_bytes())
    }
}

impl fmt::Debug for Comm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_string_lossy())
    }
}

impl Default for Comm {
    fn default() -> Self {
        Comm::new(b"")
    }
}

/// The fields of /proc/<pid>/stat that reeve uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub pid: u32,
    pub comm: Comm,
    pub state: u8,
    pub ppid: u32,
    /// The kernel's task flags (field 9).
    pub flags: u64,
    pub utime: u64,
    pub stime: u64,
    pub num_threads: u64,
    pub start_ticks: u64,
}

impl Stat {
    pub fn key(&self) -> ProcKey {
        ProcKey {
            pid: self.pid,
            start_ticks: self.start_ticks,
        }
    }

    /// Kernel threads (PF_KTHREAD) have no exe and an empty cmdline.
    pub fn is_kernel_thread(&self) -> bool {
        self.flags & 0x0020_0000 != 0
    }

    /// True when the whole process has exited and awaits (or needs no)
    /// reaping. A zombie leader whose other threads still run is alive.
    pub fn is_dead(&self) -> bool {
        matches!(self.state, b'Z' | b'X' | b'x') && self.num_threads <= 1
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// No "pid (" prefix.
    NoPid,
    /// No closing ')' after the comm.
    NoComm,
    /// Fewer fields than the one named.
    Truncated(u8),
    /// The field named is not a number.
    BadField(u8),
    /// A /proc/<pid>/status file without Uid: and Gid: lines.
    NoIds,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::NoPid => write!(f, "no leading pid"),
            ParseError::NoComm => write!(f, "no comm in parentheses"),
            ParseError::Truncated(n) => write!(f, "truncated before field {n}"),
            ParseError::BadField(n) => write!(f, "field {n} is not a number"),
            ParseError::NoIds => write!(f, "no Uid:/Gid: lines"),
        }
    }
}

impl std::error::Error for ParseError {}

fn parse_u64(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    Some(v)
}

fn parse_u32(b: &[u8]) -> Option<u32> {
    parse_u64(b).and_then(|v| u32::try_from(v).ok())
}

/// Parses /proc/<pid>/stat. The comm is everything between the first '('
/// and the last ')', because a comm may itself hold spaces, parentheses and
/// newlines; the fixed-format fields follow the last ')'.
pub fn parse_stat(buf: &[u8]) -> Result<Stat, ParseError> {
    let open = buf
        .iter()
        .position(|&b| b == b'(')
        .ok_or(ParseError::NoPid)?;
    let close = buf
        .iter()
        .rposition(|&b| b == b')')
        .ok_or(ParseError::NoComm)?;
    if close < open {
        return Err(ParseError::NoComm);
    }
    let pid_field = buf[..open].strip_suffix(b" ").ok_or(ParseError::NoPid)?;
    let pid = parse_u32(pid_field).ok_or(ParseError::NoPid)?;
    let comm = Comm::new(&buf[open + 1..close]);

    let rest = &buf[close + 1..];
    let rest = rest.strip_suffix(b"\n").unwrap_or(rest);
    let rest = rest.strip_prefix(b" ").ok_or(ParseError::Truncated(3))?;
    // Field numbers follow proc(5): 3 is state, 4 ppid, 14 utime, 15 stime,
    // 20 num_threads, 22 starttime. Every kernel reeve supports prints 52.
    let mut fields = rest.split(|&b| b == b' ');
    let mut next = |n: u8| fields.next().ok_or(ParseError::Truncated(n));
    let state_field = next(3)?;
    let state = match state_field {
        [s] => *s,
        _ => return Err(ParseError::BadField(3)),
    };
    let num = |b: &[u8], n: u8| parse_u64(b).ok_or(ParseError::BadField(n));
    let ppid = parse_u32(next(4)?).ok_or(ParseError::BadField(4))?;
    let mut flags = 0;
    let mut utime = 0;
    let mut stime = 0;
    let mut num_threads = 0;
    let mut start_ticks = 0;
    for n in 5u8..=22 {
        let f = next(n)?;
        match n {
            9 => flags = num(f, n)?,
            14 => utime = num(f, n)?,
            15 => stime = num(f, n)?,
            20 => num_threads = num(f, n)?,
            22 => start_ticks = num(f, n)?,
            _ => {}
        }
    }
    // Field 23 must follow, so that field 22 is known to be whole: a read
    // cut inside it would otherwise parse as a smaller start time.
    next(23)?;
    Ok(Stat {
        pid,
        comm,
        state,
        ppid,
        flags,
        utime,
        stime,
        num_threads,
        start_ticks,
    })
}

/// Real and effective ids from /proc/<pid>/status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatusIds {
    pub ruid: u32,
    pub euid: u32,
    pub rgid: u32,
    pub egid: u32,
}

/// Parses the `Uid:` and `Gid:` lines of /proc/<pid>/status (real,
/// effective, saved, filesystem ids separated by tabs).
pub fn parse_status_ids(buf: &[u8]) -> Result<StatusIds, ParseError> {
    let mut uid = None;
    let mut gid = None;
    for line in buf.split(|&b| b == b'\n') {
        let (slot, rest) = if let Some(r) = line.strip_prefix(b"Uid:") {
            (&mut uid, r)
        } else if let Some(r) = line.strip_prefix(b"Gid:") {
            (&mut gid, r)
        } else {
            continue;
        };
        let mut ids = rest
            .split(|&b| b == b'\t' || b == b' ')
            .filter(|f| !f.is_empty());
        let real = ids.next().and_then(parse_u32);
        let eff = ids.next().and_then(parse_u32);
        if let (Some(r), Some(e)) = (real, eff) {
            *slot = Some((r, e));
        }
    }
    match (uid, gid) {
        (Some((ruid, euid)), Some((rgid, egid))) => Ok(StatusIds {
            ruid,
            euid,
            rgid,
            egid,
        }),
        _ => Err(ParseError::NoIds),
    }
}

/// Splits /proc/<pid>/cmdline into arguments, showing bytes that are not
/// UTF-8 lossily. A process that rewrote its title may have no NULs at all;
/// then the whole text is one argument.
pub fn parse_cmdline(buf: &[u8]) -> Vec<String> {
    let body = buf.strip_suffix(b"\0").unwrap_or(buf);
    if body.is_empty() {
        return Vec::new();
    }
    body.split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// argv[0] from raw cmdline bytes: up to the first NUL.
pub fn argv0(cmdline: &[u8]) -> &[u8] {
    let end = cmdline
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(cmdline.len());
    &cmdline[..end]
}

/// The last path component of `path` (the whole of it when it has no '/').
pub fn basename(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => &path[i + 1..],
        None => path,
    }
}

/// The exe link of a replaced or deleted binary ends in " (deleted)"; the
/// name a rule means is the one before it.
pub fn strip_deleted(target: &[u8]) -> &[u8] {
    target.strip_suffix(b" (deleted)").unwrap_or(target)
}

/// Parses the inode from a namespace link target such as `pid:[4026531836]`.
pub fn parse_ns_link(target: &[u8]) -> Option<u64> {
    let open = target.iter().position(|&b| b == b'[')?;
    let inner = target.get(open + 1..)?.strip_suffix(b"]")?;
    parse_u64(inner)
}

/// Why a read of a process's file did not produce a value.
#[derive(Debug)]
pub enum ReadError {
    /// The process exited (or its pid was never there): a normal event.
    Gone,
    /// The file was read but did not parse.
    Parse(ParseError),
    /// Any other failure, such as a permission refusal.
    Io(io::Error),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Gone => write!(f, "process is gone"),
            ReadError::Parse(e) => write!(f, "unparseable: {e}"),
            ReadError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        match e.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ESRCH) => ReadError::Gone,
            _ => ReadError::Io(e),
        }
    }
}

const STAT_BUF: usize = 1024;
const LINK_BUF: usize = 4096;
const STATUS_BUF: usize = 8192;
/// Bytes of a cmdline that matching sees; longer command lines are cut.
pub const CMDLINE_BUF: usize = 32 * 1024;
const DENTS_BUF: usize = 32 * 1024;
/// Most entries one getdents buffer can hold: every record is at least 24
/// bytes (19-byte header, a name, NUL, 8-byte alignment).
pub const PID_BATCH: usize = DENTS_BUF / 24 + 1;

/// The inode of the initial pid namespace (PROC_PID_INIT_INO in the
/// kernel's proc_ns.h); the proc connector only reports there.
pub const INIT_PID_NS_INO: u64 = 0xEFFF_FFFC;
/// The inode of the initial user namespace (PROC_USER_INIT_INO).
pub const INIT_USER_NS_INO: u64 = 0xEFFF_FFFD;

/// Everything `reeve scan` reports about a process. Allocates; built only
/// for processes that matched.
#[derive(Debug, Clone, Serialize)]
pub struct ProcInfo {
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub comm: String,
    pub exe: Option<String>,
    pub cmdline: Vec<String>,
    pub cwd: Option<String>,
    pub start_ticks: u64,
    pub started_at_ms: u64,
    pub pid_ns: Option<u64>,
}

/// Reads /proc through one directory fd and buffers allocated once.
pub struct ProcReader {
    dir: OwnedFd,
    root: std::path::PathBuf,
    clk_tck: u64,
    stat_buf: Box<[u8]>,
    link_buf: Box<[u8]>,
    status_buf: Box<[u8]>,
    cmdline_buf: Box<[u8]>,
    dents_buf: Box<[u8]>,
}

impl ProcReader {
    /// Opens /proc.
    pub fn open() -> io::Result<ProcReader> {
        ProcReader::open_at(c"/proc")
    }

    /// Opens a proc mount at `root` (another mount, or a fixture in tests).
    pub fn open_at(root: &CStr) -> io::Result<ProcReader> {
        use std::os::unix::ffi::OsStrExt;
        Ok(ProcReader {
            dir: sys::open_dir(root)?,
            root: std::ffi::OsStr::from_bytes(root.to_bytes()).into(),
            clk_tck: sys::clock_ticks_per_sec()?,
            stat_buf: vec![0; STAT_BUF].into_boxed_slice(),
            link_buf: vec![0; LINK_BUF].into_boxed_slice(),
            status_buf: vec![0; STATUS_BUF].into_boxed_slice(),
            cmdline_buf: vec![0; CMDLINE_BUF].into_boxed_slice(),
            dents_buf: vec![0; DENTS_BUF].into_boxed_slice(),
        })
    }

    /// The pids of `pid`'s children, from every thread's
    /// /proc/<pid>/task/<tid>/children. `Ok(None)` when the kernel has no
    /// such files (built without CONFIG_PROC_CHILDREN).
    pub fn children(&mut self, pid: u32) -> Result<Option<Vec<u32>>, ReadError> {
        let task = self.root.join(pid.to_string()).join("task");
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&task)?.flatten() {
            let text = match std::fs::read(entry.path().join("children")) {
                Ok(t) => t,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if entry.path().is_dir() {
                        return Ok(None);
                    }
                    continue; // the thread ended meanwhile
                }
                Err(e) => return Err(e.into()),
            };
            out.extend(
                text.split(|&b| b == b' ' || b == b'\n')
                    .filter_map(parse_u32),
            );
        }
        out.sort_unstable();
        out.dedup();
        Ok(Some(out))
    }

    pub fn clock_ticks_per_sec(&self) -> u64 {
        self.clk_tck
    }

    /// Starts a new pass over the process directories of /proc.
    pub fn rewind_pids(&mut self) -> io::Result<()> {
        sys::rewind_dir(&self.dir)
    }

    /// Fills `out` with the next (pid, inode) pairs of the current pass and
    /// returns how many; 0 ends the pass. `out` must hold at least
    /// [`PID_BATCH`] entries. The inode of /proc/<pid> changes when the pid
    /// is reused, which lets a steady-state scan skip processes it has
    /// already parsed.
    pub fn next_pid_batch(&mut self, out: &mut [(u32, u64)]) -> io::Result<usize> {
        loop {
            let n = sys::getdents(&self.dir, &mut self.dents_buf)?;
            if n == 0 {
                return Ok(0);
            }
            let mut count = 0;
            for d in sys::DirentIter::new(&self.dents_buf[..n]) {
                if let (Some(pid), Some(slot)) = (parse_u32(d.name), out.get_mut(count)) {
                    *slot = (pid, d.ino);
                    count += 1;
                }
            }
            if count > 0 {
                return Ok(count);
            }
        }
    }

    /// Reads and parses /proc/<pid>/stat.
    pub fn stat(&mut self, pid: u32) -> Result<Stat, ReadError> {
        let mut p = [0u8; PATH_BUF];
        let n = sys::read_file_at(
            &self.dir,
            proc_path(&mut p, pid, b"stat"),
            &mut self.stat_buf,
        )?;
        parse_stat(&self.stat_buf[..n]).map_err(ReadError::Parse)
    }

    /// Real and effective ids from /proc/<pid>/status.
    pub fn status_ids(&mut self, pid: u32) -> Result<StatusIds, ReadError> {
        let mut p = [0u8; PATH_BUF];
        let path = proc_path(&mut p, pid, b"status");
        let n = sys::read_file_at(&self.dir, path, &mut self.status_buf)?;
        parse_status_ids(&self.status_buf[..n]).map_err(ReadError::Parse)
    }

    /// The raw cmdline, cut at [`CMDLINE_BUF`] bytes.
    pub fn cmdline(&mut self, pid: u32) -> Result<&[u8], ReadError> {
        let mut p = [0u8; PATH_BUF];
        let path = proc_path(&mut p, pid, b"cmdline");
        let n = sys::read_prefix_at(&self.dir, path, &mut self.cmdline_buf)?;
        Ok(&self.cmdline_buf[..n])
    }

    fn link(&mut self, pid: u32, file: &[u8]) -> Result<Option<&[u8]>, ReadError> {
        let mut p = [0u8; PATH_BUF];
        let path = proc_path(&mut p, pid, file);
        match sys::readlink_at(&self.dir, path, &mut self.link_buf) {
            Ok(n) => Ok(Some(&self.link_buf[..n])),
            // A kernel thread has no exe or cwd; another user's process may
            // refuse us. Neither is a failure of the scan.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOENT) | Some(libc::EACCES) | Some(libc::EPERM)
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The exe link target with any " (deleted)" suffix removed.
    pub fn exe(&mut self, pid: u32) -> Result<Option<&[u8]>, ReadError> {
        Ok(self.link(pid, b"exe")?.map(strip_deleted))
    }

    pub fn cwd(&mut self, pid: u32) -> Result<Option<&[u8]>, ReadError> {
        self.link(pid, b"cwd")
    }

    /// The inode of the process's pid namespace.
    pub fn pid_ns(&mut self, pid: u32) -> Result<Option<u64>, ReadError> {
        Ok(self.link(pid, b"ns/pid")?.and_then(parse_ns_link))
    }

    /// Wall-clock start time in ms since the epoch. Boot time is taken as
    /// CLOCK_REALTIME minus CLOCK_BOOTTIME (the clock start ticks count in),
    /// which is exact to the millisecond where /proc/stat's btime is whole
    /// seconds.
    pub fn started_at_ms(&self, start_ticks: u64) -> u64 {
        let boot_ms = sys::realtime_ms().saturating_sub(sys::boottime_ns() / 1_000_000);
        let since_boot_ms = (u128::from(start_ticks) * 1000 / u128::from(self.clk_tck.max(1)))
            .min(u128::from(u64::MAX)) as u64;
        boot_ms.saturating_add(since_boot_ms)
    }

    /// Age of a process in milliseconds from its start ticks.
    pub fn age_ms(&self, start_ticks: u64) -> u64 {
        let now_ms = sys::boottime_ns() / 1_000_000;
        let start_ms = (u128::from(start_ticks) * 1000 / u128::from(self.clk_tck.max(1)))
            .min(u128::from(u64::MAX)) as u64;
        now_ms.saturating_sub(start_ms)
    }

    /// Everything `reeve scan` prints about one process.
    pub fn info(&mut self, stat: &Stat) -> Result<ProcInfo, ReadError> {
        let pid = stat.pid;
        let ids = self.status_ids(pid)?;
        let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let exe = self.exe(pid)?.map(lossy);
        let cwd = self.cwd(pid)?.map(lossy);
        let cmdline = parse_cmdline(self.cmdline(pid)?);
        let pid_ns = self.pid_ns(pid)?;
        Ok(ProcInfo {
            pid,
            ppid: stat.ppid,
            uid: ids.euid,
            gid: ids.egid,
            comm: stat.comm.to_string_lossy().into_owned(),
            exe,
            cmdline,
            cwd,
            start_ticks: stat.start_ticks,
            started_at_ms: self.started_at_ms(stat.start_ticks),
            pid_ns,
        })
    }
}

const PATH_BUF: usize = 48;

/// Writes "<pid>/<file>\0" into `buf` and returns it as a C string. `file`
/// is one of the short constant names used above, so it always fits.
fn proc_path<'a>(buf: &'a mut [u8; PATH_BUF], pid: u32, file: &[u8]) -> &'a CStr {
    let mut digits = [0u8; 10];
    let mut i = digits.len();
    let mut v = pid;
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let d = &digits[i..];
    let file = &file[..file.len().min(PATH_BUF - d.len() - 2)];
    let end = d.len() + 1 + file.len();
    buf[..d.len()].copy_from_slice(d);
    buf[d.len()] = b'/';
    buf[d.len() + 1..end].copy_from_slice(file);
    buf[end] = 0;
    CStr::from_bytes_until_nul(&buf[..=end]).unwrap_or(c".")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(comm: &str) -> Vec<u8> {
        format!(
            "4242 ({comm}) S 17 4242 4242 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 4 0 123456 1000 10 \
             18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n"
        )
        .into_bytes()
    }

    #[test]
    fn parses_plain_stat() {
        let s = parse_stat(&line("ffmpeg")).unwrap();
        assert_eq!(s.pid, 4242);
        assert_eq!(s.comm.as_bytes(), b"ffmpeg");
        assert_eq!(s.state, b'S');
        assert_eq!(s.ppid, 17);
        assert_eq!((s.utime, s.stime), (7, 3));
        assert_eq!(s.num_threads, 4);
        assert_eq!(s.flags, 4194560);
        assert!(!s.is_kernel_thread());
        assert_eq!(s.start_ticks, 123456);
        assert_eq!(
            s.key(),
            ProcKey {
                pid: 4242,
                start_ticks: 123456
            }
        );
    }

    #[test]
    fn comm_with_spaces_parens_and_newlines() {
        for comm in [
            "a b",
            "x) S 1 2 (y",
            ")",
            "((",
            "",
            "line\nbreak",
            ") 1 2 3 4",
            "ab) Z 99",
        ] {
            let s = parse_stat(&line(comm)).unwrap_or_else(|e| panic!("{comm:?}: {e}"));
            assert_eq!(s.comm.as_bytes(), comm.as_bytes(), "{comm:?}");
            assert_eq!(s.ppid, 17, "{comm:?}");
            assert_eq!(s.start_ticks, 123456, "{comm:?}");
        }
    }

    #[test]
    fn long_comm_is_capped_not_rejected() {
        let long = "k".repeat(100);
        let s = parse_stat(&line(&long)).unwrap();
        assert_eq!(s.comm.as_bytes().len(), COMM_CAP);
    }

    #[test]
    fn truncated_and_garbage_are_errors() {
        let full = line("ffmpeg");
        for cut in 0..full.len() {
            let r = parse_stat(&full[..cut]);
            // Any prefix that still holds field 22 parses to the same key;
            // every shorter one is an error, never a panic.
            if let Ok(s) = r {
                assert_eq!(s.start_ticks, 123456, "cut at {cut}");
            }
        }
        assert_eq!(parse_stat(b"").unwrap_err(), ParseError::NoPid);
        assert_eq!(parse_stat(b"12 (x").unwrap_err(), ParseError::NoComm);
        assert_eq!(parse_stat(b"x (a) S 1").unwrap_err(), ParseError::NoPid);
        assert_eq!(parse_stat(b"1 (a)").unwrap_err(), ParseError::Truncated(3));
        assert_eq!(
            parse_stat(b"1 (a) S 1 2").unwrap_err(),
            ParseError::Truncated(6)
        );
        assert_eq!(
            parse_stat(b"1 (a) S x").unwrap_err(),
            ParseError::BadField(4)
        );
        assert_eq!(
            parse_stat(b"1 (a) SS 1").unwrap_err(),
            ParseError::BadField(3)
        );
        assert_eq!(parse_stat(b") 1 (").unwrap_err(), ParseError::NoComm);
        let mut big = line("a");
        let pos = big.windows(6).position(|w| w == b"123456").unwrap();
        big.splice(pos..pos + 6, b"99999999999999999999999".iter().copied());
        assert_eq!(parse_stat(&big).unwrap_err(), ParseError::BadField(22));
    }

    #[test]
    fn dead_means_zombie_without_live_threads() {
        let mut s = parse_stat(&line("a")).unwrap();
        assert!(!s.is_dead());
        s.state = b'Z';
        s.num_threads = 1;
        assert!(s.is_dead());
        s.num_threads = 3;
        assert!(!s.is_dead(), "a zombie leader with live threads is alive");
    }

    #[test]
    fn status_ids() {
        let text = b"Name:\tx\nUmask:\t0022\nState:\tS\nUid:\t1000\t1001\t1002\t1003\nGid:\t50\t51\t52\t53\n";
        let ids = parse_status_ids(text).unwrap();
        assert_eq!(
            ids,
            StatusIds {
                ruid: 1000,
                euid: 1001,
                rgid: 50,
                egid: 51
            }
        );
        assert_eq!(
            parse_status_ids(b"Uid:\t1\t1\t1\t1\n"),
            Err(ParseError::NoIds)
        );
        assert_eq!(
            parse_status_ids(b"Uid:\tx\nGid:\t1\t1\n"),
            Err(ParseError::NoIds)
        );
    }

    #[test]
    fn cmdline_forms() {
        assert_eq!(
            parse_cmdline(b"ffmpeg\0-i\0in.mp4\0"),
            vec!["ffmpeg", "-i", "in.mp4"]
        );
        assert_eq!(parse_cmdline(b"title rewritten"), vec!["title rewritten"]);
        assert_eq!(parse_cmdline(b""), Vec::<String>::new());
        assert_eq!(parse_cmdline(b"a\0\0b\0"), vec!["a", "", "b"]);
        assert_eq!(parse_cmdline(b"\xff\0"), vec!["\u{fffd}"]);
        assert_eq!(argv0(b"/usr/bin/ffmpeg\0-y\0"), b"/usr/bin/ffmpeg");
        assert_eq!(basename(b"/usr/bin/ffmpeg"), b"ffmpeg");
        assert_eq!(basename(b"ffmpeg"), b"ffmpeg");
        assert_eq!(basename(b"/x/"), b"");
        assert_eq!(
            strip_deleted(b"/usr/bin/ffmpeg (deleted)"),
            b"/usr/bin/ffmpeg"
        );
    }

    #[test]
    fn ns_link() {
        assert_eq!(parse_ns_link(b"pid:[4026531836]"), Some(4026531836));
        assert_eq!(parse_ns_link(b"pid:[x]"), None);
        assert_eq!(parse_ns_link(b"pid:"), None);
    }

    #[test]
    fn reads_own_process() {
        let mut r = ProcReader::open().unwrap();
        let me = sys::getpid();
        let st = r.stat(me).unwrap();
        assert_eq!(st.pid, me);
        let info = r.info(&st).unwrap();
        assert_eq!(info.uid, sys::geteuid());
        assert!(info.exe.is_some());
        assert!(!info.cmdline.is_empty());
        let now = sys::realtime_ms();
        assert!(info.started_at_ms <= now + 1000);
        let mut seen = false;
        let mut batch = vec![(0u32, 0u64); PID_BATCH];
        r.rewind_pids().unwrap();
        loop {
            let n = r.next_pid_batch(&mut batch).unwrap();
            if n == 0 {
                break;
            }
            seen |= batch[..n].iter().any(|&(pid, ino)| pid == me && ino != 0);
        }
        assert!(seen);
        assert!(matches!(r.stat(u32::MAX), Err(ReadError::Gone)));
    }

    #[test]
    fn started_at_agrees_with_btime() {
        let r = ProcReader::open().unwrap();
        let text = std::fs::read_to_string("/proc/stat").unwrap();
        let btime: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("btime "))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let ms = r.started_at_ms(0);
        assert!(ms.abs_diff(btime * 1000) <= 1500, "{ms} vs btime {btime}");
    }
}
