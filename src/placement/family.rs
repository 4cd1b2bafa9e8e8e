//! A process's family: it and its living descendants, parents first, read
//! from the children files of /proc (or one pass over every process where
//! the kernel has none), each parent's children read while a pidfd proves
//! the parent is still the one checked.

use crate::procfs::{ProcKey, ProcReader, ReadError};
use crate::sys;

/// `root` and its living descendants, parents before children. The
/// children files of /proc name them directly; a kernel without those
/// costs one pass over every process instead.
///
/// A parent's children file is read while a pidfd on the parent is held,
/// with its start time checked after the pidfd was opened and the pidfd
/// proved alive after the read: the pid cannot have been reused in
/// between, so the children listed are that parent's. A parent that ended
/// meanwhile contributes no children. A parent whose children cannot be
/// listed for any other reason (or a child that cannot be read) is put in
/// `gaps` with why: the family may then be incomplete, and the caller
/// says so.
pub fn family(
    reader: &mut ProcReader,
    root: ProcKey,
    gaps: &mut Vec<(ProcKey, String)>,
) -> Vec<ProcKey> {
    let mut out = vec![root];
    let mut i = 0;
    let gap = |k: ProcKey, what: String| (k, format!("its children were not listed: {what}"));
    while i < out.len() {
        let parent = out[i];
        i += 1;
        let pidfd = match sys::pidfd_open(parent.pid) {
            Ok(fd) => fd,
            // The parent ended: it has no children to move.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => continue,
            Err(e) => {
                gaps.push(gap(parent, format!("opening a pidfd: {e}")));
                continue;
            }
        };
        match reader.stat(parent.pid) {
            Ok(s) if s.start_ticks == parent.start_ticks => {}
            Ok(_) | Err(ReadError::Gone) => continue,
            Err(e) => {
                gaps.push(gap(parent, format!("reading its identity: {e}")));
                continue;
            }
        }
        let children = match reader.children(parent.pid) {
            Ok(Some(c)) => c,
            Ok(None) => return family_by_scan(reader, root, gaps),
            Err(ReadError::Gone) => continue, // the parent ended meanwhile
            Err(e) => {
                gaps.push(gap(parent, e.to_string()));
                continue;
            }
        };
        match sys::pidfd_send_signal(&pidfd, 0) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => continue, // reaped while read
            Err(e) => {
                gaps.push(gap(
                    parent,
                    format!("proving the parent alive (pidfd): {e}"),
                ));
                continue;
            }
        }
        for pid in children {
            match reader.stat(pid) {
                Ok(s) => {
                    if is_child(&s, parent) && !out.contains(&s.key()) {
                        out.push(s.key());
                    }
                }
                Err(ReadError::Gone) => {}
                Err(e) => gaps.push(gap(parent, format!("reading child pid {pid}: {e}"))),
            }
        }
    }
    out
}

/// A living child of `parent`. A child cannot have started before its
/// parent, which also rejects a stale ppid that names a reused pid.
fn is_child(s: &crate::procfs::Stat, parent: ProcKey) -> bool {
    !s.is_dead()
        && s.ppid == parent.pid
        && s.pid != parent.pid
        && s.start_ticks >= parent.start_ticks
}

fn family_by_scan(
    reader: &mut ProcReader,
    root: ProcKey,
    gaps: &mut Vec<(ProcKey, String)>,
) -> Vec<ProcKey> {
    let mut all = Vec::new();
    let mut batch = vec![(0u32, 0u64); crate::procfs::PID_BATCH];
    let listed = reader.rewind_pids().and_then(|()| loop {
        let n = reader.next_pid_batch(&mut batch)?;
        if n == 0 {
            break Ok(());
        }
        for &(pid, _) in &batch[..n] {
            match reader.stat(pid) {
                Ok(s) => all.push(s),
                Err(ReadError::Gone) => {}
                Err(e) => gaps.push((root, format!("descendant search: reading pid {pid}: {e}"))),
            }
        }
    });
    if let Err(e) = listed {
        gaps.push((root, format!("its descendants were not all listed: {e}")));
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        for s in &all {
            if is_child(s, parent) && !out.contains(&s.key()) {
                out.push(s.key());
            }
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::identify;
    use std::process::{Command, Stdio};

    #[test]
    fn family_from_children_files_matches_a_full_scan() {
        // A shell with two children of its own, killed by pid at the end.
        let mut sh = Command::new("/bin/sh")
            .args(["-c", "sleep 30 & sleep 30 & wait"])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let mut reader = ProcReader::open().unwrap();
        let root = identify(&mut reader, sh.id()).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let fam = loop {
            let f = family(&mut reader, root, &mut Vec::new());
            if f.len() == 3 || std::time::Instant::now() > deadline {
                break f;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let mut gaps = Vec::new();
        let mut scanned = family_by_scan(&mut reader, root, &mut gaps);
        assert!(gaps.is_empty(), "{gaps:?}");
        let mut got = fam.clone();
        got.sort();
        scanned.sort();
        for k in &fam[1..] {
            // The test's own grandchildren, listed as the shell's children
            // just now (the shell is not reaped yet), signalled via pidfd.
            // The pidfd is opened before the identity check, so the signal
            // reaches the process checked or none.
            if let Ok(fd) = crate::sys::pidfd_open(k.pid) {
                if matches!(reader.stat(k.pid), Ok(s) if s.start_ticks == k.start_ticks) {
                    let _ = crate::sys::pidfd_send_signal(&fd, libc::SIGKILL);
                }
            }
        }
        let _ = sh.kill();
        let _ = sh.wait();
        assert_eq!(fam.len(), 3, "{fam:?}");
        assert_eq!(fam[0], root);
        assert_eq!(got, scanned);
    }
}
