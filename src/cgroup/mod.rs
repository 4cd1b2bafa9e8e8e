//! cgroup v2, written by hand: the hierarchy and reeve's subtree in it
//! ([`Hierarchy`]), controller enabling, job and pool groups ([`Group`]:
//! membership, kill, removal), and the limit files of each controller.
//!
//! Every value goes to the kernel in one write(2) and is read back and
//! compared, so a limit counts as in force only when the kernel shows it.
//! Every failure is a [`CgroupError`] naming the file, the data and the OS
//! error, with what the operator can do; nothing is dropped.

mod controllers;
pub mod cpu;
pub mod cpuset;
mod group;
mod held;
mod hierarchy;
pub mod io;
pub mod limits;
pub mod memory;
pub mod net;
pub mod parse;
mod paths;
pub mod pids;

#[cfg(test)]
mod host_tests;

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

pub use controllers::{available_controllers, parse_controllers};
pub use cpu::{stat as cpu_stat, CpuStat};
/// The test-hooks builds' pauses (the move's, and the signal's in
/// `recovery::signal`).
#[cfg(feature = "test-hooks")]
pub(crate) use group::hooks as test_hooks;
pub use group::{parse_populated, parse_procs, Group, MoveOutcome};
pub use held::{apply_exactly, held, reset_unwanted};
pub(crate) use held::{read_held, reset_file};
pub use hierarchy::Hierarchy;
pub use limits::{IoMax, IoRate, Limits, LimitsError, NetRate, PidsLimit};
pub use memory::{events as memory_events, MemoryEvents};
pub use parse::{apply_flag, limits_from_json, LIMIT_FLAGS};
pub use paths::{
    parse_mountinfo_cgroup2, parse_proc_cgroup, sanitize_job_name, validate_job_name, MAX_NAME_LEN,
};
pub use pids::{current as pids_current, events_max as pids_events_max};

/// A cgroup v2 controller that reeve sets limits with, or `Net`: the
/// cgroup BPF programs of network limits, which need no controller and are
/// not in [`Controller::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Controller {
    Cpu,
    Memory,
    Pids,
    Io,
    Cpuset,
    Net,
}

impl Controller {
    pub const ALL: [Controller; 5] = [
        Controller::Cpu,
        Controller::Memory,
        Controller::Pids,
        Controller::Io,
        Controller::Cpuset,
    ];

    /// The name in cgroup.controllers and cgroup.subtree_control.
    pub fn as_str(self) -> &'static str {
        match self {
            Controller::Cpu => "cpu",
            Controller::Memory => "memory",
            Controller::Pids => "pids",
            Controller::Io => "io",
            Controller::Cpuset => "cpuset",
            Controller::Net => "net",
        }
    }

    pub fn from_name(name: &str) -> Option<Controller> {
        Controller::ALL.into_iter().find(|c| c.as_str() == name)
    }
}

impl fmt::Display for Controller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What kind of failure a [`CgroupError`] is, for callers that react to
/// some of them (a vanished process is routine, a busy group is retried).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupErrorKind {
    /// No usable cgroup v2 hierarchy, or a root outside it.
    Hierarchy,
    /// A job or pool name that could point outside reeve's subtree.
    InvalidName,
    /// A controller that cannot be enabled where it is needed.
    ControllerUnavailable,
    /// Enabling controllers in a group that holds processes.
    InternalProcesses,
    /// A limit file is missing: its controller is not enabled for the group.
    NotEnabled,
    /// The kernel took a value but shows a different one.
    Mismatch,
    /// The process exited, or its pid now belongs to another process.
    ProcessGone,
    /// rmdir of a group that still has processes or child groups.
    Busy,
    /// cgroup.kill is missing (kernel older than 5.14).
    NoKill,
    /// A cgroup or /proc file whose contents did not parse.
    Parse,
    /// Any other failed read or write.
    Io,
}

/// A failed cgroup operation. Displays as one line:
/// `<path>: <what was done, with the data>[: <OS error>][; <what to do>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupError {
    pub kind: CgroupErrorKind,
    pub path: PathBuf,
    /// What was being done and with which data, e.g. `writing "250000 100000"`.
    pub what: String,
    /// The OS error number when a system call failed.
    pub errno: Option<i32>,
    /// What the operator can do; may be empty.
    pub hint: String,
}

impl CgroupError {
    pub fn new(
        kind: CgroupErrorKind,
        path: impl Into<PathBuf>,
        what: impl Into<String>,
        hint: impl Into<String>,
    ) -> CgroupError {
        CgroupError {
            kind,
            path: path.into(),
            what: what.into(),
            errno: None,
            hint: hint.into(),
        }
    }

    /// An error from a failed system call. An error without an OS number
    /// (a short write, bad UTF-8) is described in `what` instead.
    pub fn os(
        kind: CgroupErrorKind,
        path: impl Into<PathBuf>,
        what: impl Into<String>,
        err: &std::io::Error,
        hint: impl Into<String>,
    ) -> CgroupError {
        let mut what = what.into();
        if err.raw_os_error().is_none() {
            what = format!("{what}: {err}");
        }
        CgroupError {
            kind,
            path: path.into(),
            what,
            errno: err.raw_os_error(),
            hint: hint.into(),
        }
    }
}

impl fmt::Display for CgroupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.what)?;
        if let Some(errno) = self.errno {
            write!(f, ": {}", std::io::Error::from_raw_os_error(errno))?;
        }
        if !self.hint.is_empty() {
            write!(f, "; {}", self.hint)?;
        }
        Ok(())
    }
}

impl std::error::Error for CgroupError {}

/// The most reeve reads of one cgroup file (a cgroup.procs of 100k pids).
const READ_CAP: u64 = 1 << 20;

/// Opens an existing file for writing. Never creates: a missing cgroup file
/// means a missing controller or group, and must stay an error.
pub(crate) fn open_for_write(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .truncate(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// Writes `data` with one write(2); a write that takes less is an error,
/// because the kernel parses each write(2) as a whole value.
pub(crate) fn write_whole(file: &mut File, data: &[u8]) -> std::io::Result<()> {
    let n = loop {
        match file.write(data) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => break other?,
        }
    };
    if n != data.len() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::WriteZero,
            format!("short write: {n} of {} bytes taken", data.len()),
        ));
    }
    Ok(())
}

pub(crate) fn write_once(path: &Path, data: &[u8]) -> std::io::Result<()> {
    write_whole(&mut open_for_write(path)?, data)
}

/// Reads a whole cgroup or /proc file as text, at most [`READ_CAP`] bytes.
pub(crate) fn read_text(path: &Path) -> Result<String, CgroupError> {
    let fail = |e: &std::io::Error| CgroupError::os(CgroupErrorKind::Io, path, "reading", e, "");
    let file = File::open(path).map_err(|e| fail(&e))?;
    // Room for the usual file up front: from an empty buffer, read_to_end
    // grows from 32 bytes, one read(2) per doubling.
    let mut buf = Vec::with_capacity(4096);
    file.take(READ_CAP + 1)
        .read_to_end(&mut buf)
        .map_err(|e| fail(&e))?;
    if buf.len() as u64 > READ_CAP {
        return Err(CgroupError::new(
            CgroupErrorKind::Parse,
            path,
            format!("reading: larger than {READ_CAP} bytes"),
            "",
        ));
    }
    String::from_utf8(buf)
        .map_err(|_| CgroupError::new(CgroupErrorKind::Parse, path, "reading: not UTF-8 text", ""))
}

/// Reads `group/file` and parses it with `parse`; a parse failure names
/// the file and what did not parse.
pub(crate) fn read_parsed<T>(
    group: &Path,
    file: &str,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, CgroupError> {
    let path = group.join(file);
    let text = read_text(&path)?;
    parse(&text).map_err(|why| CgroupError::new(CgroupErrorKind::Parse, &path, why, ""))
}

/// Digits only: no sign, no spaces, no overflow.
pub(crate) fn parse_u64(s: &str) -> Option<u64> {
    crate::digits::parse_u64(s.as_bytes())
}

/// Parses a flat-keyed cgroup file ("populated 1\nfrozen 0\n") into
/// key/number pairs. Every non-empty line must be `key number`.
pub fn parse_flat_keyed(text: &str) -> Result<Vec<(&str, u64)>, String> {
    let mut pairs = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let mut fields = line.split(' ');
        match (
            fields.next(),
            fields.next().and_then(parse_u64),
            fields.next(),
        ) {
            (Some(key), Some(value), None) if !key.is_empty() => pairs.push((key, value)),
            _ => return Err(format!("line {line:?} is not \"key number\"")),
        }
    }
    Ok(pairs)
}

/// The value of `key` in flat-keyed pairs, or an error naming the key.
pub(crate) fn flat_require(pairs: &[(&str, u64)], key: &str) -> Result<u64, String> {
    flat_get(pairs, key).ok_or_else(|| format!("no {key:?} line"))
}

pub(crate) fn flat_get(pairs: &[(&str, u64)], key: &str) -> Option<u64> {
    pairs.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
}

/// One limit file written for a group: what reeve wanted and whether the
/// kernel shows it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub controller: Controller,
    /// The file name within the group, e.g. "cpu.max".
    pub file: String,
    /// The exact text written.
    pub wanted: String,
    pub result: Result<(), CgroupError>,
    /// The write put the kernel's default back: the limit set no longer
    /// names this file, and it held something else.
    pub reset: bool,
}

/// Writes every limit in `limits` into `group` and reads each back. One
/// entry per write; a failed entry does not stop the others, so the caller
/// sees every problem at once. Files `limits` does not name are left alone
/// (see [`reset_unwanted`]).
pub fn apply(group: &Path, limits: &Limits) -> Vec<Applied> {
    let mut out = Vec::new();
    cpuset::apply(group, limits, &mut out);
    cpu::apply(group, limits, &mut out);
    memory::apply(group, limits, &mut out);
    pids::apply(group, limits, &mut out);
    io::apply(group, limits, &mut out);
    net::apply(group, limits, &mut out);
    out
}

/// True when every limit was written and reads back as wanted.
pub fn in_force(applied: &[Applied]) -> bool {
    applied.iter().all(|a| a.result.is_ok())
}

/// Writes `wanted` to `group/file` in one write(2), reads the file back and
/// checks it with `verify` (which knows how the kernel normalises the
/// value). A verify failure says how the read-back differs.
pub(crate) fn write_then_verify(
    group: &Path,
    controller: Controller,
    file: &str,
    wanted: String,
    verify: impl FnOnce(&str) -> Result<(), String>,
) -> Applied {
    let path = group.join(file);
    let result = write_once(&path, wanted.as_bytes())
        .map_err(|e| write_error(group, controller, file, &wanted, &e))
        .and_then(|()| read_text(&path))
        .and_then(|got| {
            verify(&got).map_err(|why| {
                CgroupError::new(
                    CgroupErrorKind::Mismatch,
                    &path,
                    format!(
                        "wrote {wanted:?} but it reads back {:?} ({why})",
                        got.trim_end()
                    ),
                    "the kernel holds another value than reeve wrote: another manager may be \
                     writing this group, or a parent group's limit applies; reeve reports the \
                     limit as not in force",
                )
            })
        });
    Applied {
        controller,
        file: file.to_string(),
        wanted,
        result,
        reset: false,
    }
}

/// Read-back check for files that hold one number ("100\n").
pub(crate) fn verify_number(wanted: u64, got: &str) -> Result<(), String> {
    match parse_u64(got.trim_end()) {
        Some(v) if v == wanted => Ok(()),
        Some(v) => Err(format!("{v}, not {wanted}")),
        None => Err("not a number".to_string()),
    }
}

/// The error for a failed write of a limit file, with what to do about it.
fn write_error(
    group: &Path,
    controller: Controller,
    file: &str,
    wanted: &str,
    e: &std::io::Error,
) -> CgroupError {
    let path = group.join(file);
    let what = format!("writing {wanted:?}");
    let errno = e.raw_os_error().unwrap_or(0);
    if errno == libc::ENOENT && !group.is_dir() {
        let hint = "the group does not exist; create it before applying limits";
        return CgroupError::os(CgroupErrorKind::Io, path, what, e, hint);
    }
    if errno == libc::ENOENT {
        let hint = missing_file_hint(controller, file);
        return CgroupError::os(CgroupErrorKind::NotEnabled, path, what, e, hint);
    }
    let hint = match errno {
        libc::EINVAL | libc::ERANGE => rejected_hint(file),
        libc::ENODEV => "no such block device on this host: use the MAJ:MIN of a whole disk \
                         as lsblk shows it (e.g. 8:0)"
            .to_string(),
        libc::EACCES | libc::EPERM => "permission denied: reeve must run as root or own a \
                                       delegated subtree"
            .to_string(),
        libc::EOPNOTSUPP => "the group does not support this file (a threaded group?)".to_string(),
        _ => String::new(),
    };
    CgroupError::os(CgroupErrorKind::Io, path, what, e, hint)
}

fn missing_file_hint(controller: Controller, file: &str) -> String {
    let extra = match file {
        "cpu.max" => " (cpu.max also needs a kernel with CONFIG_CFS_BANDWIDTH)",
        "memory.swap.max" => {
            " (memory.swap.max also needs swap accounting: CONFIG_MEMCG_SWAP, and \
             swapaccount=1 on kernels before 5.8)"
        }
        "io.max" => " (io.max also needs CONFIG_BLK_DEV_THROTTLING)",
        "io.weight" => " (io.weight also needs CONFIG_BLK_CGROUP_IOCOST)",
        _ => "",
    };
    format!(
        "the {controller} controller is not enabled for this group: it must be listed in the \
         parent's cgroup.subtree_control, which reeve writes when the parent's \
         cgroup.controllers offers it{extra}"
    )
}

fn rejected_hint(file: &str) -> String {
    let why = match file {
        "cpu.max" => {
            "the quota must be at least 1ms and the period between 1ms and 1s, and a parent \
             group's cpu.max may forbid more"
        }
        "cpuset.cpus" => {
            "the CPUs must be online and within the parent's cpuset.cpus.effective \
             (see /sys/devices/system/cpu/online)"
        }
        "io.max" => "check the device numbers and that each value is a whole number or max",
        "cpu.weight" | "io.weight" => "a weight is 1 to 10000",
        "pids.max" => "pids.max is a whole number up to 4194304 or max",
        _ => "check the value",
    };
    format!("the kernel rejected the value: {why}")
}

#[cfg(test)]
pub(crate) mod testutil {
    use std::path::{Path, PathBuf};

    use crate::tempdir::TempDir;

    /// Lines copied from this build host's /proc/self/mountinfo.
    pub const HOST_MOUNTINFO: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
23 27 0:22 / /sys rw,relatime - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    /// This build host's /proc/self/cgroup.
    pub const HOST_CGROUP: &str = "9:name=systemd:/\n8:pids:/\n\
        4:memory:/process_api/c935437e20191b7c0f5e477eb7d23858\n1:cpu:/\n0::/\n";

    /// A fixture directory standing in for a cgroup: the files a kernel
    /// would show, as regular files, in the suite's one temporary
    /// directory (removed on drop).
    pub struct Fixture {
        pub path: PathBuf,
        _dir: TempDir,
    }

    impl Fixture {
        pub fn new() -> Fixture {
            let dir = TempDir::new("cgroup-fixture");
            Fixture {
                path: dir.path().to_path_buf(),
                _dir: dir,
            }
        }

        /// Creates `name` (and its parent directories) holding `text`.
        pub fn file(&self, name: &str, text: &str) -> &Fixture {
            let p = self.path.join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
            self
        }

        pub fn read(&self, name: &str) -> String {
            std::fs::read_to_string(self.path.join(name)).unwrap()
        }

        pub fn dir(&self) -> &Path {
            &self.path
        }

        /// Makes this fixture a host: reeve's root at `reeve/` with every
        /// controller offered and enabled, delegated (nothing above it is
        /// written), and a private state directory at `state/`. Returns the
        /// hierarchy and the state directory.
        pub fn host(&self) -> (super::Hierarchy, PathBuf) {
            use std::os::unix::fs::PermissionsExt;
            let all = "cpuset cpu io memory pids\n";
            self.file("reeve/cgroup.controllers", all)
                .file("reeve/cgroup.subtree_control", all);
            let h = super::Hierarchy {
                mount: self.path.clone(),
                root: self.path.join("reeve"),
                delegated: true,
            };
            let state = self.path.join("state");
            std::fs::create_dir(&state).unwrap();
            std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
            (h, state)
        }
    }
}

#[cfg(test)]
mod tests;
