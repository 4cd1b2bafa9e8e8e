//! One cgroup directory and what reeve does with it: create, list and move
//! member processes, see whether it is populated, kill everything in it,
//! remove it.
//!
//! A pid is written to cgroup.procs only inside a pidfd bracket: the pidfd
//! is opened before the start time is checked against the expected
//! [`ProcKey`] and proves after the write that the process written was the
//! one checked; when it was not, the stranger is moved back out.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use super::{
    open_for_write, parse_flat_keyed, parse_u64, read_parsed, write_once, write_whole, CgroupError,
    CgroupErrorKind,
};
use crate::procfs::{ProcKey, ProcReader, ReadError};
use crate::sys;

/// What became of one [`Group::move_pid`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MoveOutcome {
    /// The process checked is in the group.
    Moved,
    /// The process had ended, or its pid belonged to another process,
    /// before anything was written.
    GoneBeforeWrite,
    /// The process ended between the check and the proof after the write;
    /// no other process was moved (or one that was is gone again).
    DiedInWindow,
    /// The process ended inside the bracket and another process, which took
    /// its pid, was found in the group and moved back to `to`.
    StrangerMovedBack { stranger: ProcKey, to: PathBuf },
    /// The process ended inside the bracket and another process, which took
    /// its pid, is in `group` (a move with nowhere to move it back to).
    StrangerLeft { stranger: ProcKey, group: PathBuf },
}

impl MoveOutcome {
    /// One line for a report: why a process is not in the group.
    pub fn describe(&self, key: ProcKey) -> String {
        match self {
            MoveOutcome::Moved => format!("process {key} moved"),
            MoveOutcome::GoneBeforeWrite => {
                format!("process {key} ended (or its pid was reused) before it was moved")
            }
            MoveOutcome::DiedInWindow => {
                format!("process {key} ended while it was being moved; no other process was moved")
            }
            MoveOutcome::StrangerMovedBack { stranger, to } => format!(
                "process {key} ended while it was being moved; process {stranger}, which took \
                 its pid, was found in the group and moved back to {}",
                to.display()
            ),
            MoveOutcome::StrangerLeft { stranger, group } => format!(
                "process {key} ended while it was being moved; process {stranger}, which took \
                 its pid, was moved to {} instead",
                group.display()
            ),
        }
    }
}

/// Hooks that only test builds compile: they hold a move between its
/// identity check and its write so a test can recycle the pid there.
#[cfg(feature = "test-hooks")]
pub(crate) mod hooks {
    use crate::procfs::ProcKey;
    use std::time::{Duration, Instant};

    /// `REEVE_TEST_PAUSE_BEFORE_MOVE=<pid>:<path>`: before writing `pid`,
    /// create `<path>.paused` and wait (at most 60 s) for `<path>.go`.
    /// `*` for the pid pauses the next move of any pid once `<path>.arm`
    /// exists (taking it away), for a process the test cannot name in
    /// advance.
    pub fn pause_before_move(key: ProcKey) {
        let Some(spec) = std::env::var_os("REEVE_TEST_PAUSE_BEFORE_MOVE") else {
            return;
        };
        let spec = spec.to_string_lossy().into_owned();
        let Some((pid, path)) = spec.split_once(':') else {
            return;
        };
        if pid == "*" {
            if std::fs::remove_file(format!("{path}.arm")).is_err() {
                return;
            }
        } else if pid.parse::<u32>().ok() != Some(key.pid) {
            return;
        }
        park(path, key.pid);
    }

    /// Creates `<path>.paused` holding `pid`, then waits (at most 60 s) for
    /// `<path>.go`: where a test-hooks build holds an action so a test can
    /// recycle the pid (the move here, a signal in `recovery::signal`).
    pub fn park(path: &str, pid: u32) {
        if let Err(e) = std::fs::write(format!("{path}.paused"), pid.to_string()) {
            eprintln!("reeve: test hook: cannot create {path}.paused: {e}");
            return;
        }
        let go = std::path::PathBuf::from(format!("{path}.go"));
        let deadline = Instant::now() + Duration::from_secs(60);
        while !go.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

#[cfg(not(feature = "test-hooks"))]
mod hooks {
    #[inline(always)]
    pub fn pause_before_move(_: crate::procfs::ProcKey) {}
}

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

    /// Moves the process `key` into this group, bracketed by a pidfd:
    ///
    /// 1. a pidfd for `key.pid` is opened first: from now on it names the
    ///    process that held the pid at this instant, for that process's
    ///    whole life, and while it lives (or is an unreaped zombie) its pid
    ///    cannot be given to anyone else;
    /// 2. the start time in /proc/<pid>/stat is checked against `key`;
    /// 3. the pid is written to cgroup.procs (one write(2));
    /// 4. `pidfd_send_signal(pidfd, 0)` proves the pidfd's process still
    ///    exists. If it does, it held the pid from step 1 to step 4, so the
    ///    check in step 2 and the write in step 3 both reached it and no
    ///    other process. If it does not (ESRCH), it was reaped inside the
    ///    window and the write may have reached a stranger that took the
    ///    pid: see [`Group::evict_stranger`].
    ///
    /// `from` is where the process was before (the caller read it, and
    /// wrote it ahead in the job record); a stranger found in this group
    /// after the write is moved there. Without `from` (a move out of
    /// reeve's groups) a stranger is left where it is and reported. A
    /// failed system call is an error; everything else is a [`MoveOutcome`].
    pub fn move_pid(
        &self,
        key: ProcKey,
        from: Option<&Path>,
        reader: &mut ProcReader,
    ) -> Result<MoveOutcome, CgroupError> {
        let procs = self.path.join("cgroup.procs");
        let pid = key.pid.to_string();
        let what = format!("moving process {key} (writing {pid:?})");
        let mut file = open_for_write(&procs).map_err(|e| {
            let hint = if self.path.is_dir() {
                "reeve needs root, or a cgroup subtree delegated to it"
            } else {
                "the group does not exist; create it first"
            };
            CgroupError::os(CgroupErrorKind::Io, &procs, &what, &e, hint)
        })?;
        let pidfd = match sys::pidfd_open(key.pid) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                return Ok(MoveOutcome::GoneBeforeWrite)
            }
            // A thread id names a thread, not a process: writing it would
            // move the whole thread group of someone else's identity.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                return Err(CgroupError::os(
                    CgroupErrorKind::ProcessGone,
                    &procs,
                    format!("{what}: opening a pidfd"),
                    &e,
                    "the pid is not a process (a thread id?); nothing was moved",
                ))
            }
            Err(e) => {
                return Err(CgroupError::os(
                    CgroupErrorKind::Io,
                    &procs,
                    format!("{what}: opening a pidfd"),
                    &e,
                    "",
                ))
            }
        };
        match reader.stat(key.pid) {
            Ok(st) if st.start_ticks == key.start_ticks && !st.is_dead() => {}
            Ok(_) | Err(ReadError::Gone) => return Ok(MoveOutcome::GoneBeforeWrite),
            Err(e) => {
                return Err(CgroupError::new(
                    CgroupErrorKind::Io,
                    &procs,
                    format!("{what}: cannot check its identity: {e}"),
                    "",
                ))
            }
        }
        hooks::pause_before_move(key);
        let written = write_whole(&mut file, pid.as_bytes());
        let written = match written {
            Ok(()) => true,
            // Nobody held the pid at the write: nothing was moved.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => false,
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                return Err(CgroupError::os(
                    CgroupErrorKind::InternalProcesses,
                    &procs,
                    &what,
                    &e,
                    "this group has controllers enabled for child groups, so it cannot hold \
                     processes (the no-internal-processes rule); move the process into a leaf",
                ))
            }
            Err(e) => return Err(CgroupError::os(CgroupErrorKind::Io, &procs, &what, &e, "")),
        };
        match sys::pidfd_send_signal(&pidfd, 0) {
            // EPERM still means the process exists.
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                if !written {
                    return Ok(MoveOutcome::DiedInWindow);
                }
                return self.evict_stranger(key, from, reader);
            }
            Err(e) => {
                return Err(CgroupError::os(
                    CgroupErrorKind::Io,
                    &procs,
                    format!("{what}: proving the process is the one checked (pidfd)"),
                    &e,
                    "",
                ))
            }
        }
        // The pidfd's process held the pid throughout; if it is a zombie
        // now it ended in the window, and the write reached it or nothing.
        match reader.stat(key.pid) {
            Ok(st) if st.is_dead() => Ok(MoveOutcome::DiedInWindow),
            Ok(_) if written => Ok(MoveOutcome::Moved),
            // Alive, the pidfd's own, yet the kernel found nobody to move:
            // the kernel skips an exiting thread, so a leader thread that
            // exited while other threads run is refused this way. It runs
            // on, ungoverned, and that is an error, not an end.
            Ok(st) => Err(CgroupError::new(
                CgroupErrorKind::Io,
                &procs,
                format!(
                    "{what}: the kernel refused the move (ESRCH) though the process runs \
                     (state {}, {} threads); its leader thread has likely exited while \
                     other threads run",
                    st.state as char, st.num_threads
                ),
                "it runs outside the group, ungoverned",
            )),
            Err(ReadError::Gone) => Ok(MoveOutcome::DiedInWindow),
            Err(e) => Err(CgroupError::new(
                CgroupErrorKind::Io,
                &procs,
                format!("{what}: written, but its state cannot be read: {e}"),
                "",
            )),
        }
    }

    /// After a write whose process was reaped inside the bracket: whoever
    /// holds `gone.pid` now and is in this group is a stranger the write
    /// may have moved, and is moved to `from`.
    ///
    /// Limit: the stranger lands in `from`, the original cgroup of the
    /// process that was meant to move, not in its own. Its own group
    /// before the write cannot be read any more (the write replaced it,
    /// and nothing recorded it). It was created inside the bracket (the
    /// pid was free only after `gone` was reaped, after the pidfd was
    /// opened), so it has existed for the length of one move, but its
    /// parent may have put it anywhere first; a stranger that started in
    /// another service's group ends up in `from`, outside reeve's groups
    /// (under no limit of reeve's, but under whatever applies to `from`).
    /// The outcome names the stranger and `from`, so an operator can put
    /// it back. Taking it out of this group is what matters: no process
    /// is left under limits and a record meant for another. A child born to a member inside this group in the same
    /// instant with the same pid cannot be told apart, and is moved out
    /// too: reeve does not keep a process whose placement it cannot prove.
    /// The move back has its own bracket; a stranger that ends before it
    /// is moved back is no longer in the group, and one reaped during the
    /// move back is an error (the pid may have changed hands again).
    fn evict_stranger(
        &self,
        gone: ProcKey,
        from: Option<&Path>,
        reader: &mut ProcReader,
    ) -> Result<MoveOutcome, CgroupError> {
        let procs = self.path.join("cgroup.procs");
        let hand = "a process reeve did not check may be in this group: move it out by hand";
        // The stranger's own bracket: its pidfd is opened before anything
        // is read about it, and proved alive after the move back, so the
        // membership, the identity and the write all concern one process.
        let pidfd = match sys::pidfd_open(gone.pid) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                return Ok(MoveOutcome::DiedInWindow)
            }
            Err(e) => {
                let what = format!("opening a pidfd for pid {} after {gone} ended", gone.pid);
                return Err(CgroupError::os(CgroupErrorKind::Io, &procs, what, &e, hand));
            }
        };
        if !self.procs()?.contains(&gone.pid) {
            return Ok(MoveOutcome::DiedInWindow);
        }
        let stranger = match reader.stat(gone.pid) {
            Ok(st) => st.key(),
            Err(ReadError::Gone) => return Ok(MoveOutcome::DiedInWindow),
            Err(e) => {
                return Err(CgroupError::new(
                    CgroupErrorKind::Io,
                    &procs,
                    format!("reading the process that took pid {}: {e}", gone.pid),
                    hand,
                ))
            }
        };
        let Some(from) = from else {
            return Ok(MoveOutcome::StrangerLeft {
                stranger,
                group: self.path.clone(),
            });
        };
        let back = from.join("cgroup.procs");
        let what = format!(
            "moving process {stranger}, which took pid {} after {gone} ended, back to {}",
            gone.pid,
            from.display()
        );
        let fail = |e: &std::io::Error| CgroupError::os(CgroupErrorKind::Io, &back, &what, e, hand);
        let mut file = open_for_write(&back).map_err(|e| fail(&e))?;
        write_whole(&mut file, gone.pid.to_string().as_bytes()).map_err(|e| fail(&e))?;
        match sys::pidfd_send_signal(&pidfd, 0) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
            // Reaped in turn: the write may have reached a third process.
            // Two reuses of one pid within a move is beyond what pid_max
            // allows in practice, but it is said, not assumed away.
            Err(e) => {
                return Err(CgroupError::os(
                    CgroupErrorKind::Io,
                    &back,
                    format!("{what}: the pid changed hands again during the move back"),
                    &e,
                    "a process reeve did not check may have been moved there",
                ))
            }
        }
        Ok(MoveOutcome::StrangerMovedBack {
            stranger,
            to: from.to_path_buf(),
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
        let from = fx.dir().join("origin");
        let mut reader = ProcReader::open().unwrap();
        let me = reader.stat(sys::getpid()).unwrap().key();
        assert_eq!(
            g.move_pid(me, Some(&from), &mut reader),
            Ok(MoveOutcome::Moved)
        );
        assert_eq!(fx.read("cgroup.procs"), me.pid.to_string());
        assert_eq!(g.procs().unwrap(), vec![me.pid]);

        fx.file("cgroup.procs", "");
        let reused = ProcKey {
            pid: me.pid,
            start_ticks: me.start_ticks + 1,
        };
        let outcome = g.move_pid(reused, Some(&from), &mut reader).unwrap();
        assert_eq!(outcome, MoveOutcome::GoneBeforeWrite);
        assert!(outcome.describe(reused).contains("before it was moved"));
        assert_eq!(fx.read("cgroup.procs"), "", "nothing written");
        // Beyond the largest pid_max: no process can hold it.
        let vanished = ProcKey {
            pid: (1 << 22) + 1000,
            start_ticks: 1,
        };
        let outcome = g.move_pid(vanished, None, &mut reader).unwrap();
        assert_eq!(outcome, MoveOutcome::GoneBeforeWrite);

        let missing = Group::new(fx.dir().join("nope"));
        let err = missing.move_pid(me, Some(&from), &mut reader).unwrap_err();
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
