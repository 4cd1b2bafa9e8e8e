//! [`ProcReader`]: one /proc directory fd and fixed buffers, allocated
//! once, through which every file of every process is read.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use serde::Serialize;

use super::activity::{parse_loadavg_threads, Activity, ForksFinder};
use super::{
    parse_cmdline, parse_io, parse_ns_link, parse_stat, parse_status_ids, strip_deleted,
    IoCounters, ReadError, Stat, StatusIds,
};
use crate::digits::parse_u32;
use crate::sys;

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
    /// One read(2) in the common case: the kernel renders the one-line
    /// record whole, so a short read ending in a newline is all of it (and
    /// the parser requires field 23, so a cut record cannot pass).
    pub fn stat(&mut self, pid: u32) -> Result<Stat, ReadError> {
        let mut p = [0u8; PATH_BUF];
        let n = sys::read_record_at(
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

    /// The rchar and wchar counters of /proc/<pid>/io (read into the
    /// status buffer: the file is a few hundred bytes).
    pub fn io(&mut self, pid: u32) -> Result<IoCounters, ReadError> {
        let mut p = [0u8; PATH_BUF];
        let path = proc_path(&mut p, pid, b"io");
        let n = sys::read_file_at(&self.dir, path, &mut self.status_buf)?;
        parse_io(&self.status_buf[..n]).map_err(ReadError::Parse)
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

    /// The host's fork and thread counters (see [`super::activity`]);
    /// `None` when either file is missing or unreadable (a fixture /proc,
    /// a kernel that renders them otherwise), which callers treat as
    /// "something may have changed".
    ///
    /// Forks are read before threads, and the order matters: a fork after
    /// the forks read moves the next forks reading, and a task released
    /// after the threads read lowers the next threads reading. Read the
    /// other way round, a fork between the two reads and a release after
    /// them would cancel out in the thread count while the forks reading
    /// already held the fork, and two equal readings would hide both.
    ///
    /// Both files must be the kernel's procfs: a container's LXCFS serves
    /// its own /proc/stat and /proc/loadavg (FUSE), whose counts need not
    /// move when the host's processes do.
    pub fn activity(&mut self) -> Option<Activity> {
        let file = sys::open_read_at(&self.dir, c"stat").ok()?;
        if !sys::is_procfs(&file).ok()? {
            return None;
        }
        let mut finder = ForksFinder::default();
        while finder.found().is_none() {
            let n = sys::read_fd(file.as_raw_fd(), &mut self.status_buf).ok()?;
            if n == 0 {
                break;
            }
            finder.feed(&self.status_buf[..n]);
        }
        let forks = finder.found()?;
        let file = sys::open_read_at(&self.dir, c"loadavg").ok()?;
        if !sys::is_procfs(&file).ok()? {
            return None;
        }
        let n = sys::read_fd(file.as_raw_fd(), &mut self.stat_buf).ok()?;
        let threads = parse_loadavg_threads(&self.stat_buf[..n])?;
        Some(Activity { forks, threads })
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
    let d = crate::digits::format_u32(&mut digits, pid);
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
