//! The proc connector's kernel filter in a running daemon: once discovery
//! tracks a set, the kernel drops the forks and exits of everyone else, and
//! nothing discovery needs is lost, also in the window between a target's
//! discovery and the filter that names it (a target that forks or exits at
//! once). The safety-net rescan is a minute away in every test here, so
//! only netlink events (or the recovery after a filter change) can explain
//! an event seen within seconds.
//!
//! Targets are copies of /bin/sh under a unique basename, matched by exe:
//! the daemon can only match processes this test started.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// Well under the rescan interval: an event inside this came from netlink.
const PROMPT: Duration = Duration::from_secs(5);

fn start(dir: &TempDir, name: &str) -> Daemon {
    let cfg = json!({
        "targets": [{"name": "shells", "match": {"exe": [name]}}],
        "discovery": {"mode": "netlink", "scan_interval": "1s", "rescan_interval": "60s"},
        "capacity": 4096,
        "state_dir": state_dir(dir),
    });
    let mut d = Daemon::start(&write_config(dir.path(), &cfg), dir.path());
    let started = d.wait_started();
    assert_eq!(started["mode"], "netlink", "{started}");
    // The first scan, after which discovery builds its first filter.
    d.wait_until("the first scan", WAIT, |d| d.count("scan") >= 1);
    d
}

fn shell(dir: &TempDir) -> (String, std::path::PathBuf) {
    let name = unique_name();
    let path = dir.path().join(&name);
    copy_exe(std::path::Path::new("/bin/sh"), &path);
    (name, path)
}

/// The children of `pid` (every thread's), once there are `n`.
fn children_of(pid: u32, n: usize) -> Vec<u32> {
    let deadline = Instant::now() + PROMPT;
    loop {
        let text =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        let kids: Vec<u32> = text
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        if kids.len() >= n {
            return kids;
        }
        assert!(
            Instant::now() < deadline,
            "{pid} has no {n} children: {kids:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The filter naming the tracked set stayed in force: a refused
/// replacement removes it (every event passes), which would let these
/// tests pass without it.
fn filter_held(d: &mut Daemon) {
    assert_eq!(d.count("netlink_filter_failed"), 0, "{}", d.log_tail());
    assert_eq!(d.count("netlink_failed"), 0, "{}", d.log_tail());
}

fn ident(pid: u32) -> Ident {
    Ident {
        pid,
        start_ticks: read_start_ticks(pid).expect("stat of a live child"),
    }
}

#[test]
fn targets_that_exit_at_once_are_seen_to_exit() {
    let dir = TempDir::new("kfilter-exit");
    let (name, path) = shell(&dir);
    let mut d = start(&dir, &name);
    let mut discovered = 0;
    for _ in 0..30 {
        let mut child = spawn_retry(
            Command::new(&path)
                .args(["-c", "exit 3"])
                .stdin(Stdio::null()),
        );
        let pid = child.id();
        child.wait().expect("wait for the short target");
        // A target gone before reeve read its stat is never discovered;
        // one that was discovered must be seen to end, promptly.
        d.refresh();
        let found = d
            .events()
            .into_iter()
            .find(|v| event_name(v) == "discovered" && v["pid"] == pid);
        if let Some(found) = found {
            discovered += 1;
            let id = Ident::of_event(&found).expect("identity of the event");
            d.wait_event("exited", id, PROMPT);
        }
    }
    eprintln!("{discovered} of 30 short targets were discovered, each seen to exit");
    assert!(
        discovered > 0,
        "no short target was discovered: nothing was shown"
    );
    filter_held(&mut d);
    d.stop_ok();
}

#[test]
fn forks_of_targets_are_discovered_at_once_and_later() {
    let dir = TempDir::new("kfilter-fork");
    let (name, path) = shell(&dir);
    let mut d = start(&dir, &name);
    // At once: the subshell is forked right after exec, inside the window
    // before the filter names the parent. Later: the fork waits for a
    // line, long after the filter names the parent.
    // (A background subshell's stdin is /dev/null; fd 3 is the pipe.)
    for (script, late) in [
        ("(read x <&3) & read y", false),
        ("read a; (read x <&3) & read y", true),
    ] {
        for _ in 0..8 {
            let mut child = spawn_retry(
                Command::new(&path)
                    .args(["-c", &format!("exec 3<&0; {script}")])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null()),
            );
            let parent = ident(child.id());
            d.wait_event("discovered", parent, PROMPT);
            let mut stdin = child.stdin.take().expect("stdin of the target");
            if late {
                stdin.write_all(b"go\n").expect("wake the target");
            }
            let kids = children_of(parent.pid, 1);
            let kid = ident(kids[0]);
            let found = d.wait_event("discovered", kid, PROMPT);
            assert_eq!(found["ppid"], parent.pid, "{found}");
            // Both end when stdin closes: each exit is seen.
            drop(stdin);
            child.wait().expect("wait for the target");
            d.wait_event("exited", parent, PROMPT);
            d.wait_event("exited", kid, PROMPT);
        }
    }
    filter_held(&mut d);
    d.stop_ok();
}

#[test]
fn an_exec_storm_of_others_leaves_tracked_targets_seen() {
    // Untracked forks and exits are dropped in the kernel; the tracked
    // target's own exit still arrives.
    let dir = TempDir::new("kfilter-storm");
    let (name, path) = shell(&dir);
    let mut d = start(&dir, &name);
    let mut target = spawn_retry(
        Command::new(&path)
            .args(["-c", "read x"])
            .stdin(Stdio::piped()),
    );
    let id = ident(target.id());
    d.wait_event("discovered", id, PROMPT);
    let storm = Command::new("/bin/sh")
        .args([
            "-c",
            "i=0; while [ $i -lt 500 ]; do /bin/true; i=$((i+1)); done",
        ])
        .status()
        .expect("run the storm");
    assert!(storm.success());
    drop(target.stdin.take());
    target.wait().expect("wait for the target");
    d.wait_event("exited", id, PROMPT);
    assert_eq!(d.count("discovered"), 1, "{}", d.log_tail());
    filter_held(&mut d);
    d.stop_ok();
}
