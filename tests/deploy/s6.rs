//! deploy/s6/reeve under a real s6-svscan: the service dir exactly as
//! shipped, in a private mount namespace where /usr/local/bin holds the
//! reeve under test and /etc/reeve/reeve.json a config scoped to this
//! test's target and cgroup subtree (an overlay on /etc; nothing on the host
//! changes). reeve is killed with SIGKILL; s6 starts it again and the new
//! daemon re-adopts the governed target without moving it.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::common::cgroup::{cgroup_of, Subtree};
use super::common::*;
use super::{have, is_root, repo};

/// s6-svscan on a private scan directory; on drop it is told to stop
/// (`s6-svscanctl -t`, which brings its services down with SIGTERM) and, if
/// it does not, killed by the pid we started.
struct Scan {
    child: Option<Child>,
    dir: PathBuf,
}

impl Scan {
    fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }
}

impl Drop for Scan {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let stopped = Command::new("s6-svscanctl")
            .arg("-t")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        while stopped && Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        eprintln!("s6-svscan {} did not stop; killing it", child.id());
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The pid s6 reports for the service, once it is up.
fn service_pid(service: &Path) -> Option<u32> {
    let out = Command::new("s6-svstat")
        .args(["-o", "up,pid"])
        .arg(service)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut words = text.split_whitespace();
    match (words.next(), words.next()) {
        (Some("true"), Some(pid)) => pid.parse().ok().filter(|&p| p > 0),
        _ => None,
    }
}

/// Field 4 of /proc/<pid>/stat.
fn ppid(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// SIGKILL to `pid` through a pidfd, only if it is the service's process:
/// its parent is an s6-supervise whose parent is our s6-svscan.
fn kill_service(pid: u32, scan: u32) {
    // SAFETY: pidfd_open takes a pid and flags, returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) } as i32;
    assert!(fd >= 0, "pidfd_open({pid})");
    let supervise = ppid(pid).expect("reeve's parent");
    let ours = ppid(supervise) == Some(scan)
        && fs::read_to_string(format!("/proc/{supervise}/comm"))
            .is_ok_and(|c| c.trim() == "s6-supervise");
    // SAFETY: pidfd_send_signal on our own fd, no siginfo.
    let sent = ours
        && unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd,
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        } == 0;
    // SAFETY: closing the fd we opened.
    unsafe { libc::close(fd) };
    assert!(sent, "pid {pid} is not our s6 service's process");
}

fn events(log: &Path) -> Vec<Value> {
    fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect()
}

fn wait_for(log: &Path, what: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let ev = events(log);
        if pred(&ev) {
            return ev;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            fs::read_to_string(log).unwrap_or_default()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn s6_restarts_a_killed_reeve_which_re_adopts() {
    if !require(
        is_root(),
        "needs root: mount namespace, netlink, cgroup moves",
    ) || !require(
        ["s6-svscan", "s6-svstat", "s6-svscanctl", "unshare"]
            .iter()
            .all(|c| have(c)),
        "needs s6 (Debian: s6) and unshare (util-linux)",
    ) {
        return;
    }
    let dir = TempDir::new("s6");
    let sub = Subtree::new();
    let target = Target::new(dir.path());
    let mut cfg = config_for(&dir, "enc", &target.name, None, "auto", "200ms");
    cfg["targets"][0]["pool"] = json!("enc");
    cfg["cgroup"] = json!({"root": sub.root()});
    cfg["log"] = json!({"format": "json", "level": "info"});
    let config = write_config(dir.path(), &cfg);

    // The service dir as shipped.
    let scandir = dir.join("scan");
    let service = scandir.join("reeve");
    fs::create_dir_all(&service).expect("mkdir service");
    for entry in fs::read_dir(repo().join("deploy/s6/reeve")).expect("deploy/s6/reeve") {
        let from = entry.expect("entry").path();
        let to = service.join(from.file_name().unwrap());
        fs::copy(&from, &to).expect("copy service file");
        let mode = fs::metadata(&from).unwrap().permissions().mode();
        fs::set_permissions(&to, fs::Permissions::from_mode(mode)).expect("chmod");
    }
    let etc = dir.join("etc");
    fs::create_dir(&etc).expect("mkdir etc");
    let log = dir.join("s6.log");
    let out = fs::File::create(&log).expect("create log");
    let err = out.try_clone().expect("dup log");
    let child = spawn_retry(
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-euc"])
            .arg(
                r#"mount -t tmpfs -o size=64m,mode=0755 reeve-s6-bin /usr/local/bin
                cp "$1" /usr/local/bin/reeve
                mount -t tmpfs -o size=1m,mode=0755 reeve-s6-etc "$2"
                mkdir -p "$2/upper/reeve" "$2/work"
                cp "$3" "$2/upper/reeve/reeve.json"
                mount -t overlay -o lowerdir=/etc,upperdir="$2/upper",workdir="$2/work" reeve-s6-etc /etc
                exec s6-svscan "$4""#,
            )
            .arg("sh")
            .args([Path::new(REEVE), &etc, &config, &scandir])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err),
    );
    let scan = Scan {
        child: Some(child),
        dir: scandir.clone(),
    };
    let mut procs = ProcGuard::new();

    // reeve comes up under s6 and governs a target started behind its back.
    wait_for(&log, "started", |ev| {
        ev.iter().any(|v| event_name(v) == "started")
    });
    let first = service_pid(&service).expect("s6-svstat: reeve is up");
    let id = target.spawn(&mut procs, "60");
    wait_for(&log, "attached", |ev| {
        ev.iter()
            .any(|v| event_name(v) == "attached" && id.matches(v))
    });
    let pool = sub.rel(&sub.pool("enc"));
    assert_eq!(cgroup_of(id.pid).as_deref(), Some(pool.as_str()));
    // Let the snapshot (written at most once a second) hold the target.
    thread::sleep(Duration::from_millis(1500));

    kill_service(first, scan.pid());
    let deadline = Instant::now() + WAIT;
    let second = loop {
        match service_pid(&service) {
            Some(p) if p != first => break p,
            _ => {}
        }
        assert!(Instant::now() < deadline, "s6 did not restart reeve");
        thread::sleep(Duration::from_millis(50));
    };
    let ev = wait_for(&log, "a second start and the target adopted", |ev| {
        let Some(restart) = ev
            .iter()
            .enumerate()
            .filter(|(_, v)| event_name(v) == "started")
            .nth(1)
            .map(|(i, _)| i)
        else {
            return false;
        };
        ev[restart..]
            .iter()
            .any(|v| event_name(v) == "adopted" && id.matches(v))
    });
    let text = fs::read_to_string(&log).unwrap_or_default();
    let started: Vec<&Value> = ev.iter().filter(|v| event_name(v) == "started").collect();
    assert_eq!(started.len(), 2, "{text}");
    assert_eq!(
        started[1]["pid"], second,
        "the restarted reeve is s6's: {text}"
    );
    assert_eq!(
        ev.iter()
            .filter(|v| event_name(v) == "attached" && id.matches(v))
            .count(),
        1,
        "re-adopted, not attached again: {text}"
    );
    assert_eq!(
        cgroup_of(id.pid).as_deref(),
        Some(pool.as_str()),
        "the target stayed in its pool: {text}"
    );
    drop(scan);
    // s6-svscanctl -t brought the service down with SIGTERM.
    let ev = events(&log);
    assert!(
        ev.iter().any(|v| event_name(v) == "stopped"),
        "reeve stopped cleanly when s6 stopped: {}",
        fs::read_to_string(&log).unwrap_or_default()
    );
}
