//! The host tier: real cgroup v2 membership on this machine's hierarchy.
//!
//! It touches only a uniquely named subtree (`<mount>/reeve-test-<hex>`)
//! and only a `sleep` it spawned itself; a drop guard kills and reaps that
//! process and removes the subtree even when an assertion fails. It never
//! writes a controller into an existing group.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use super::*;
use crate::procfs::ProcReader;
use crate::require::require;
use crate::sys;
use crate::units::CpuLimit;

/// Owns the test subtree and the spawned process.
struct HostTree {
    top: PathBuf,
    sleeper: Option<Child>,
}

impl Drop for HostTree {
    fn drop(&mut self) {
        if let Some(mut child) = self.sleeper.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Ok(entries) = std::fs::read_dir(&self.top) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    let _ = std::fs::remove_dir(entry.path());
                }
            }
        }
        let _ = std::fs::remove_dir(&self.top);
    }
}

fn random_hex() -> String {
    let mut h = RandomState::new().build_hasher();
    h.write_u32(sys::getpid());
    h.write_u64(sys::monotonic_ns());
    format!("{:016x}", h.finish())
}

fn host_hierarchy() -> Option<Hierarchy> {
    if !require(sys::geteuid() == 0, "needs root to create cgroups") {
        return None;
    }
    match Hierarchy::detect(None) {
        Ok(h) if h.mount.join("cgroup.procs").exists() => Some(h),
        Ok(h) => {
            let why = format!("{} is not a cgroup2 mount", h.mount.display());
            require(false, &why);
            None
        }
        Err(e) => {
            require(false, &format!("no cgroup2 hierarchy: {e}"));
            None
        }
    }
}

#[test]
fn membership_kill_and_removal_on_the_host_hierarchy() {
    let Some(host) = host_hierarchy() else {
        return;
    };
    assert!(host.root.starts_with(&host.mount));
    let mut tree = HostTree {
        top: host.mount.join(format!("reeve-test-{}", random_hex())),
        sleeper: None,
    };
    let h = Hierarchy {
        mount: host.mount.clone(),
        root: tree.top.clone(),
        delegated: false,
    };
    h.enter_supervisor_leaf().unwrap();
    Group::new(&h.root).create().unwrap();
    let job = Group::new(h.job_path("sleep").unwrap());
    job.create().unwrap();
    assert!(!job.populated().unwrap());

    let child = Command::new("sleep").arg("30").spawn().unwrap();
    let pid = child.id();
    tree.sleeper = Some(child);
    let mut reader = ProcReader::open().unwrap();
    let key = reader.stat(pid).unwrap().key();
    let original = h.process_cgroup(pid).unwrap();
    assert!(original.starts_with(&h.mount));

    assert_eq!(
        job.move_pid(key, Some(&original), &mut reader).unwrap(),
        MoveOutcome::Moved
    );
    assert_eq!(job.procs().unwrap(), vec![pid]);
    assert!(job.populated().unwrap());
    assert_eq!(h.process_cgroup(pid).unwrap(), job.path());
    let stale = crate::procfs::ProcKey {
        pid,
        start_ticks: key.start_ticks + 1,
    };
    let outcome = Group::new(&original)
        .move_pid(stale, Some(job.path()), &mut reader)
        .unwrap();
    assert_eq!(outcome, MoveOutcome::GoneBeforeWrite);
    assert_eq!(h.process_cgroup(pid).unwrap(), job.path(), "not moved");

    // A group with a member cannot be removed.
    let err = job.remove().unwrap_err();
    assert_eq!(err.kind, CgroupErrorKind::Busy, "{err}");
    assert!(err.to_string().contains("still holds processes"), "{err}");

    // Controllers this host does not offer are refused before any write.
    let offered = available_controllers(&h.mount).unwrap();
    if !offered.contains(&Controller::Memory) {
        let err = h
            .enable_controllers(job.path(), &[Controller::Memory])
            .unwrap_err();
        assert_eq!(err.kind, CgroupErrorKind::ControllerUnavailable);
        let text = err.to_string();
        assert!(
            text.contains("controller 'memory' is not available"),
            "{text}"
        );
        assert!(text.contains(&h.mount.join("cgroup.controllers").display().to_string()));
        eprintln!("host says: {text}");
        assert_eq!(
            std::fs::read_to_string(h.root.join("cgroup.subtree_control")).unwrap(),
            ""
        );
    }
    if !job.path().join("cpu.max").exists() {
        let limits = Limits {
            cpu: Some(CpuLimit::Millicores(1000)),
            ..Limits::default()
        };
        let applied = apply(job.path(), &limits);
        let err = applied[0].result.as_ref().unwrap_err();
        assert_eq!(err.kind, CgroupErrorKind::NotEnabled, "{err}");
        eprintln!("host says: {err}");
    }

    // Back to where it came from.
    Group::new(&original)
        .move_pid(key, Some(job.path()), &mut reader)
        .unwrap();
    assert_eq!(h.process_cgroup(pid).unwrap(), original);
    assert!(job.procs().unwrap().is_empty());
    assert!(!job.populated().unwrap());

    // cgroup.kill ends everything in the group.
    job.move_pid(key, Some(&original), &mut reader).unwrap();
    job.kill().unwrap();
    let status = tree.sleeper.take().map(|mut c| c.wait().unwrap());
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.and_then(|s| s.signal()), Some(libc::SIGKILL));
    wait_unpopulated(job.path());

    job.remove().unwrap();
    Group::new(&h.root).remove().unwrap();
    assert!(!h.root.exists());
}

fn wait_unpopulated(group: &Path) {
    for _ in 0..200 {
        if !Group::new(group).populated().unwrap() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    panic!("{} stayed populated", group.display());
}

/// Sets an extended attribute with python3 (the test needs setxattr(2),
/// which reeve itself never calls); false when that is not possible.
fn set_xattr(path: &Path, name: &str, value: &str) -> bool {
    let script = "import os, sys; os.setxattr(sys.argv[1], sys.argv[2], sys.argv[3].encode())";
    Command::new("python3")
        .args(["-c", script])
        .arg(path)
        .args([name, value])
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn delegation_mark_on_a_real_group() {
    let Some(host) = host_hierarchy() else {
        return;
    };
    let tree = HostTree {
        top: host.mount.join(format!("reeve-test-{}", random_hex())),
        sleeper: None,
    };
    let svc = tree.top.join("svc");
    Group::new(&svc).create().unwrap();
    assert_eq!(hierarchy::is_delegated(&svc), Ok(false));
    if !require(
        set_xattr(&svc, "trusted.delegate", "1"),
        "cannot set trusted.delegate (needs python3 and root)",
    ) {
        return;
    }
    assert_eq!(hierarchy::is_delegated(&svc), Ok(true));
    let mountinfo = std::fs::read("/proc/self/mountinfo").unwrap();
    let rel = svc.strip_prefix(&host.mount).unwrap().display().to_string();
    let own = format!("0::/{rel}\n");
    let h = Hierarchy::choose(&mountinfo, own.as_bytes(), None, hierarchy::is_delegated).unwrap();
    assert_eq!((h.root.as_path(), h.delegated), (svc.as_path(), true));
    let own = format!("0::/{rel}/supervisor\n");
    let h = Hierarchy::choose(&mountinfo, own.as_bytes(), None, hierarchy::is_delegated).unwrap();
    assert_eq!((h.root.as_path(), h.delegated), (svc.as_path(), true));
}

#[test]
fn detects_this_host() {
    let Some(h) = host_hierarchy() else {
        return;
    };
    let own = h.process_cgroup(sys::getpid()).unwrap();
    assert!(own.starts_with(&h.mount));
    if !h.delegated {
        assert_eq!(h.root, h.mount.join("reeve"));
    }
    let err = h.process_cgroup(u32::MAX).unwrap_err();
    assert_eq!(err.kind, CgroupErrorKind::ProcessGone);
}
