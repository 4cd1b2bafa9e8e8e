//! One cgroup directory and what reeve does with it: create, list and move
//! member processes, see whether it is populated, kill everything in it,
//! remove it.
//!
//! A pid is written to cgroup.procs only right after its start time was
//! checked against the expected [`ProcKey`], with the file already open, so
//! a reused pid is never moved.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use super::{
    open_for_write, parse_flat_keyed, parse_u64, read_parsed, write_once, write_whole, CgroupError,
    CgroupErrorKind,
};
use crate::procfs::{ProcKey, ProcReader, ReadError};

/// A cgroup v2 group, by path. Holds no file descriptors.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Group {
    path: PathBuf,
}

impl Group {
    pub fn new(path: impl Into<PathBuf>) -> Group {
        Group { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates the group (and missing parents) with mode 0755. An existing
    /// group is fine.
    pub fn create(&self) -> Result<(), CgroupError> {
        match std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&self.path)
        {
            Ok(()) => Ok(()),
            Err(e) => Err(CgroupError::os(
                CgroupErrorKind::Io,
                &self.path,
                "creating the group",
                &e,
                "reeve needs root, or a cgroup subtree delegated to it",
            )),
        }
    }

    /// The pids in cgroup.procs.
    pub fn procs(&self) -> Result<Vec<u32>, CgroupError> {
        read_parsed(&self.path, "cgroup.procs", parse_procs)
    }

    /// Moves the process `key` into this group. The identity is checked
    /// immediately before the one write(2) of the pid, with cgroup.procs
    /// already open; a process that exited or whose pid was reused is a
    /// [`CgroupErrorKind::ProcessGone`] error.
    pub fn move_pid(&self, key: ProcKey, reader: &mut ProcReader) -> Result<(), CgroupError> {
        let procs = self.path.join("cgroup.procs");
        let pid = key.pid.to_string();
        let what = format!("moving process {key} (writing {pid:?})");
        let gone = |detail: &str| {
            CgroupError::new(
                CgroupErrorKind::ProcessGone,
                &procs,
                format!("{what}: {detail}"),
                "",
            )
        };
        let mut file = open_for_write(&procs).map_err(|e| {
            let hint = if self.path.is_dir() {
                "reeve needs root, or a cgroup subtree delegated to it"
            } else {
                "the group does not exist; create it first"
            };
            CgroupError::os(CgroupErrorKind::Io, &procs, &what, &e, hint)
        })?;
        match reader.stat(key.pid) {
            Ok(st) if st.start_ticks == key.start_ticks => {}
            Ok(_) | Err(ReadError::Gone) => {
                return Err(gone("process is gone or its pid was reused"))
            }
            Err(e) => {
                return Err(CgroupError::new(
                    CgroupErrorKind::Io,
                    &procs,
                    format!("{what}: cannot check its identity: {e}"),
                    "",
                ))
            }
        }
        write_whole(&mut file, pid.as_bytes()).map_err(|e| match e.raw_os_error() {
            Some(libc::ESRCH) => gone("process exited"),
            Some(libc::EBUSY) => CgroupError::os(
                CgroupErrorKind::InternalProcesses,
                &procs,
                &what,
                &e,
                "this group has controllers enabled for child groups, so it cannot hold \
                 processes (the no-internal-processes rule); move the process into a leaf",
            ),
            _ => CgroupError::os(CgroupErrorKind::Io, &procs, &what, &e, ""),
        })
    }

    /// Whether any process is in the group or below it (cgroup.events).
    pub fn populated(&self) -> Result<bool, CgroupError> {
        read_parsed(&self.path, "cgroup.events", parse_populated)
    }

    /// Kills every process in the group and below it with one write of "1"
    /// to cgroup.kill (kernel 5.14 and later).
    pub fn kill(&self) -> Result<(), CgroupError> {
        let file = self.path.join("cgroup.kill");
        write_once(&file, b"1").map_err(|e| {
            if e.raw_os_error() != Some(libc::ENOENT) {
                return CgroupError::os(CgroupErrorKind::Io, &file, "writing \"1\"", &e, "");
            }
            if !self.path.is_dir() {
                return CgroupError::os(
                    CgroupErrorKind::Io,
                    &file,
                    "writing \"1\"",
                    &e,
                    "the group does not exist",
                );
            }
            CgroupError::os(
                CgroupErrorKind::NoKill,
                &file,
                "writing \"1\"",
                &e,
                "this kernel has no cgroup.kill (it arrived in Linux 5.14): signal the \
                 processes one by one instead",
            )
        })
    }

    /// Removes the group. A group that is already gone counts as removed;
    /// one that still holds processes or child groups is an error.
    pub fn remove(&self) -> Result<(), CgroupError> {
        match std::fs::remove_dir(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Err(CgroupError::os(
                CgroupErrorKind::Busy,
                &self.path,
                "removing the group",
                &e,
                "it still holds processes or child groups: kill or move them first",
            )),
            Err(e) => Err(CgroupError::os(
                CgroupErrorKind::Io,
                &self.path,
                "removing the group",
                &e,
                "",
            )),
        }
    }
}

/// Parses cgroup.procs: one pid per line.
pub fn parse_procs(text: &str) -> Result<Vec<u32>, String> {
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            parse_u64(l)
                .and_then(|v| u32::try_from(v).ok())
                .ok_or_else(|| format!("{l:?} is not a pid"))
        })
        .collect()
}

/// Parses the `populated` line of cgroup.events.
pub fn parse_populated(text: &str) -> Result<bool, String> {
    let pairs = parse_flat_keyed(text)?;
    match super::flat_require(&pairs, "populated")? {
        0 => Ok(false),
        1 => Ok(true),
        n => Err(format!("populated is {n}, not 0 or 1")),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::Fixture;
    use super::*;
    use crate::sys;

    #[test]
    fn parses_procs_and_events() {
        assert_eq!(parse_procs("1\n22\n333\n"), Ok(vec![1, 22, 333]));
        assert_eq!(parse_procs(""), Ok(vec![]));
        assert!(parse_procs("1\nx\n").unwrap_err().contains("\"x\""));
        assert!(parse_procs("4294967296\n").is_err());
        assert!(parse_procs(" 1\n").is_err());
        assert_eq!(parse_populated("populated 1\nfrozen 0\n"), Ok(true));
        assert_eq!(parse_populated("populated 0\nfrozen 1\n"), Ok(false));
        assert!(parse_populated("frozen 0\n").is_err());
        assert!(parse_populated("populated 2\n").is_err());
        assert!(parse_populated("populated\n").is_err());
    }

    #[test]
    fn move_checks_identity_before_writing() {
        let fx = Fixture::new();
        fx.file("cgroup.procs", "");
        let g = Group::new(fx.dir());
        let mut reader = ProcReader::open().unwrap();
        let me = reader.stat(sys::getpid()).unwrap().key();
        g.move_pid(me, &mut reader).unwrap();
        assert_eq!(fx.read("cgroup.procs"), me.pid.to_string());
        assert_eq!(g.procs().unwrap(), vec![me.pid]);

        fx.file("cgroup.procs", "");
        let reused = ProcKey {
            pid: me.pid,
            start_ticks: me.start_ticks + 1,
        };
        let err = g.move_pid(reused, &mut reader).unwrap_err();
        assert_eq!(err.kind, CgroupErrorKind::ProcessGone);
        assert!(
            err.to_string().contains("gone or its pid was reused"),
            "{err}"
        );
        assert_eq!(fx.read("cgroup.procs"), "", "nothing written");
        let vanished = ProcKey {
            pid: u32::MAX,
            start_ticks: 1,
        };
        let err = g.move_pid(vanished, &mut reader).unwrap_err();
        assert_eq!(err.kind, CgroupErrorKind::ProcessGone);

        let missing = Group::new(fx.dir().join("nope"));
        let err = missing.move_pid(me, &mut reader).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
    }

    #[test]
    fn populated_kill_and_remove_on_fixtures() {
        let fx = Fixture::new();
        let g = Group::new(fx.dir().join("job.a"));
        g.create().unwrap();
        g.create().unwrap();
        fx.file("job.a/cgroup.events", "populated 1\nfrozen 0\n");
        assert!(g.populated().unwrap());

        let err = g.kill().unwrap_err();
        assert_eq!(err.kind, CgroupErrorKind::NoKill);
        assert!(err.to_string().contains("5.14"), "{err}");
        fx.file("job.a/cgroup.kill", "");
        g.kill().unwrap();
        assert_eq!(fx.read("job.a/cgroup.kill"), "1");

        let err = g.remove().unwrap_err();
        assert!(err.to_string().contains("removing the group"), "{err}");
        std::fs::remove_file(fx.dir().join("job.a/cgroup.kill")).unwrap();
        std::fs::remove_file(fx.dir().join("job.a/cgroup.events")).unwrap();
        g.remove().unwrap();
        g.remove().unwrap();
        let err = g.kill().unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
        let err = g.populated().unwrap_err();
        assert_eq!(err.errno, Some(libc::ENOENT));
    }
}
