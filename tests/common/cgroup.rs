//! A private cgroup v2 subtree for one test on the host's hybrid layout
//! (v2 at /sys/fs/cgroup/unified, no controllers): created uniquely named,
//! and on drop every process in it is killed by pid (through a pidfd, after
//! checking it is still inside) and reaped, and every group removed.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::thread;
use std::time::{Duration, Instant};

use super::random_hex16;

/// Where the cgroup v2 hierarchy is mounted on this host.
pub const UNIFIED: &str = "/sys/fs/cgroup/unified";

/// Makes the test process the reaper of orphans it causes (the detached
/// `reeve run` child, a child whose `reeve run` was killed, the children of
/// a killed shell): pid 1 here does not reap, and a reaped orphan leaves no
/// zombie behind. Only pids the test kills are ever reaped by pid.
pub fn become_subreaper() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: prctl with integer arguments only.
        let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        assert_eq!(rc, 0, "prctl(PR_SET_CHILD_SUBREAPER) failed");
    });
}

/// The cgroup v2 path of a process relative to the mount (`0::` line).
pub fn cgroup_of(pid: u32) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|s| s.trim_end().to_string())
}

/// The pids in a group's cgroup.procs (empty when the group is gone).
pub fn procs_of(group: &Path) -> BTreeSet<u32> {
    fs::read_to_string(group.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Sends `sig` to `pid` through a pidfd, only if the process is (still)
/// inside the cgroup subtree `rel` when the pidfd is held. Returns whether
/// the signal was sent.
pub fn signal_if_in(pid: u32, rel: &str, sig: libc::c_int) -> bool {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) } as i32;
    if fd < 0 {
        return false;
    }
    // The pidfd pins the process: if it is still in the subtree now, the
    // signal below reaches that same process or none.
    let inside = cgroup_of(pid).is_some_and(|c| c == rel || c.starts_with(&format!("{rel}/")));
    let sent = inside
        // SAFETY: pidfd_send_signal on our own valid fd, no siginfo.
        && unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd,
                sig,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        } == 0;
    // SAFETY: closing the fd we opened.
    unsafe { libc::close(fd) };
    sent
}

/// Reaps `pid` if it is our child (a reparented orphan); waits up to
/// `timeout` for it to exit. Returns false if it is still running.
pub fn reap(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let mut status = 0;
        // SAFETY: waitpid on one specific pid with a valid status pointer.
        let r = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG) };
        if r != 0 {
            // Reaped, or not our child (its parent reaps it).
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// Every directory at or below `dir`, deepest first.
pub fn dirs_bottom_up(dir: &Path) -> Vec<PathBuf> {
    let mut all = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < all.len() {
        if let Ok(rd) = fs::read_dir(&all[i]) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    all.push(e.path());
                }
            }
        }
        i += 1;
    }
    all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    all
}

/// A uniquely named cgroup v2 subtree owned by one test. reeve's root is
/// `<subtree>/reeve`.
pub struct Subtree {
    pub path: PathBuf,
    /// The path relative to the mount, as /proc/<pid>/cgroup shows it.
    pub rel: String,
}

impl Subtree {
    pub fn new() -> Subtree {
        become_subreaper();
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
        assert!(
            mountinfo.lines().any(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                f.get(4) == Some(&UNIFIED) && l.contains(" - cgroup2 ")
            }),
            "these tests need cgroup2 mounted at {UNIFIED}"
        );
        let name = format!("reeve-test-{}", random_hex16());
        let path = Path::new(UNIFIED).join(&name);
        fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        Subtree {
            path,
            rel: format!("/{name}"),
        }
    }

    /// reeve's configured root.
    pub fn root(&self) -> PathBuf {
        self.path.join("reeve")
    }

    pub fn job(&self, name: &str) -> PathBuf {
        self.root().join(format!("job.{name}"))
    }

    pub fn pool(&self, name: &str) -> PathBuf {
        self.root().join(format!("pool.{name}"))
    }

    /// A group of the test's own, directly under the subtree.
    pub fn make_group(&self, name: &str) -> PathBuf {
        let p = self.path.join(name);
        fs::create_dir(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        p
    }

    /// `path` relative to the mount, as /proc/<pid>/cgroup shows it.
    pub fn rel(&self, path: &Path) -> String {
        let r = path.strip_prefix(UNIFIED).expect("path inside the mount");
        format!("/{}", r.display())
    }

    /// Job and pool groups under reeve's root.
    pub fn managed_groups(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.root())
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Moves one of the test's own processes into `group`.
    pub fn move_into(&self, group: &Path, pid: u32) {
        fs::write(group.join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("move {pid} into {}: {e}", group.display()));
    }
}

impl Drop for Subtree {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut killed = BTreeSet::new();
        loop {
            let pids: BTreeSet<u32> = dirs_bottom_up(&self.path)
                .iter()
                .flat_map(|d| procs_of(d))
                .collect();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                if signal_if_in(pid, &self.rel, libc::SIGKILL) {
                    killed.insert(pid);
                }
            }
            for &pid in &killed {
                reap(pid, Duration::ZERO);
            }
            if Instant::now() >= deadline {
                eprintln!("warning: processes remain in {}", self.path.display());
                break;
            }
            thread::sleep(Duration::from_millis(10));
        }
        for &pid in &killed {
            if !reap(pid, Duration::from_secs(2)) {
                eprintln!("warning: pid {pid} (killed) was not reaped");
            }
        }
        for dir in dirs_bottom_up(&self.path) {
            let until = Instant::now() + Duration::from_secs(5);
            while let Err(e) = fs::remove_dir(&dir) {
                if e.kind() == std::io::ErrorKind::NotFound {
                    break;
                }
                if Instant::now() >= until {
                    eprintln!("warning: rmdir {}: {e}", dir.display());
                    break;
                }
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// A config for the CLI commands: reeve's root in the subtree, a private
/// state dir, and a rule nothing matches.
pub fn cli_config(dir: &super::TempDir, sub: &Subtree) -> PathBuf {
    let cfg = serde_json::json!({
        "targets": [{
            "name": "unused",
            "match": {"exe": [format!("reeve-test-unused-{}", random_hex16())]},
        }],
        "state_dir": super::state_dir(dir),
        "cgroup": {"root": sub.root()},
    });
    super::write_config(dir.path(), &cfg)
}

/// A watch config with one rule matching `name` by exe and governing it
/// with `extra` (`pool`, `limits`), reeve's root in the subtree.
pub fn watch_config(
    dir: &super::TempDir,
    sub: &Subtree,
    rule: &str,
    name: &str,
    extra: serde_json::Value,
) -> PathBuf {
    let mut cfg = super::config_for(dir, rule, name, None, "auto", "200ms");
    for (k, v) in extra.as_object().expect("extra is an object") {
        cfg["targets"][0][k] = v.clone();
    }
    cfg["cgroup"] = serde_json::json!({"root": sub.root()});
    super::write_config(dir.path(), &cfg)
}
