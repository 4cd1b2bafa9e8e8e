//! Governance as an operator sees it: `reeve run` starts a command inside
//! its job group from the first instruction, in its own session, and hands
//! back the command's status; `attach` and `detach` move a whole process
//! family in and back out; a requested limit that cannot be in force stops
//! the command from starting; `reeve watch` attaches what its rules govern
//! and adopts what is already governed.
//!
//! This host has a cgroup v1 hybrid layout with the v2 hierarchy at
//! /sys/fs/cgroup/unified and no v2 controllers, so limits can never be in
//! force here (the VM tier proves enforcement). Every test works in its own
//! subtree `/sys/fs/cgroup/unified/reeve-test-<16 hex>` ([`Subtree`]), points
//! reeve at `<subtree>/reeve`, and on drop kills (by pid, through a pidfd,
//! after checking the process is inside the subtree) and reaps every
//! process in it, then removes every group bottom-up. Nothing outside the
//! subtree is written, and only processes the test started are touched.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::cgroup::*;
use common::*;
use serde_json::{json, Value};

/// Deadline for a reeve command that should finish at once.
const QUICK: Duration = Duration::from_secs(20);

// ------------------------------------------------------------ helpers ---

/// The fields of /proc/<pid>/stat after the comm, starting with field 3
/// (state): index 0 = state, 1 = ppid, 2 = pgrp, 3 = session.
fn stat_after_comm(stat: &str) -> Vec<String> {
    let close = stat.rfind(')').expect("')' in stat");
    stat[close + 1..]
        .split_ascii_whitespace()
        .map(str::to_string)
        .collect()
}

fn stat_of(pid: u32) -> Option<Vec<String>> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(stat_after_comm(&text))
}

/// Running (exists and is neither a zombie nor dead).
fn alive(pid: u32) -> bool {
    stat_of(pid).is_some_and(|f| !matches!(f[0].as_str(), "Z" | "X" | "x"))
}

/// A signal set from /proc/<pid>/status (`SigBlk`, `SigIgn`, ...).
fn sigset(pid: u32, key: &str) -> u64 {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(":"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
}

/// The bit of `sig` in a /proc signal set.
fn bit(sig: libc::c_int) -> u64 {
    1 << (sig - 1)
}

/// Polls `group` until it holds at least `n` processes.
fn wait_procs(group: &Path, n: usize, timeout: Duration) -> BTreeSet<u32> {
    let deadline = Instant::now() + timeout;
    loop {
        let got = procs_of(group);
        if got.len() >= n {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "{} did not hold {n} processes within {timeout:?} (has {got:?})",
            group.display()
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// Polls until `cond` holds; panics with `what` after `timeout`.
fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?}: {what}"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// What a finished reeve command did.
struct Ran {
    pid: u32,
    status: ExitStatus,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl Ran {
    fn ctx(&self) -> String {
        format!(
            "reeve (pid {}) {}\n--- stdout:\n{}--- stderr:\n{}---",
            self.pid, self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `reeve ARGS` with stdout and stderr in files (a detached child may
/// keep inherited pipes open), killing it by pid after `timeout`.
fn run_reeve(dir: &TempDir, args: &[OsString], timeout: Duration) -> Ran {
    let tag = random_hex16();
    let out_path = dir.join(&format!("run-{tag}.stdout"));
    let err_path = dir.join(&format!("run-{tag}.stderr"));
    let started = Instant::now();
    let mut child = spawn_retry(
        Command::new(REEVE)
            .args(args)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out_path).expect("stdout file"))
            .stderr(fs::File::create(&err_path).expect("stderr file")),
    );
    let pid = child.id();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if started.elapsed() < timeout => thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "reeve {args:?} did not finish within {timeout:?}\n--- stdout:\n{}--- stderr:\n{}",
                    fs::read_to_string(&out_path).unwrap_or_default(),
                    fs::read_to_string(&err_path).unwrap_or_default()
                );
            }
        }
    };
    let elapsed = started.elapsed();
    Ran {
        pid,
        status,
        stdout: fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: fs::read_to_string(&err_path).unwrap_or_default(),
        elapsed,
    }
}

/// Builds an argument vector from anything path- or string-like.
macro_rules! args {
    ($($a:expr),* $(,)?) => {
        [$(OsString::from($a)),*]
    };
}

/// A foreground `reeve run` under `procs`, with stderr in a file.
struct Foreground {
    pid: u32,
    stderr_path: PathBuf,
}

impl Foreground {
    fn start(procs: &mut ProcGuard, dir: &TempDir, args: &[OsString]) -> Foreground {
        let stderr_path = dir.join(&format!("fg-{}.stderr", random_hex16()));
        let child = spawn_retry(
            Command::new(REEVE)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(fs::File::create(&stderr_path).expect("stderr file")),
        );
        Foreground {
            pid: procs.push(child),
            stderr_path,
        }
    }

    fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

/// `key=value` pairs of one output line.
fn kv(line: &str) -> HashMap<String, String> {
    line.split_ascii_whitespace()
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Whether reeve named the group `kind.name` either by its name or by its
/// directory name (`job.x`); the contract says NAME, the code prints the
/// directory name.
fn names(got: &str, kind: &str, name: &str) -> bool {
    got == name || got == format!("{kind}.{name}")
}

/// Whether a reported cgroup is `path` (absolute, or relative to the mount).
fn is_group(got: &str, sub: &Subtree, path: &Path) -> bool {
    Path::new(got) == path || got == sub.rel(path)
}

/// Non-empty lines of a text.
fn lines_of(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.trim().is_empty()).collect()
}

// ---------------------------------------------------------------- run ---

#[test]
fn run_places_child_before_exec() {
    let sub = Subtree::new();
    let dir = TempDir::new("gov-run-place");
    let cfg = cli_config(&dir, &sub);
    // Builtins only, so /proc/self is the shell reeve started, and reading
    // its cgroup is the first thing it does.
    let script = "while IFS= read -r l; do echo \"cg $l\"; done < /proc/self/cgroup; \
                  IFS= read -r s < /proc/self/stat; echo \"stat $s\"; echo \"pid $$\"";
    let ran = run_reeve(
        &dir,
        &args!["run", "--config", &cfg, "--job", "j", "--", "/bin/sh", "-c", script],
        QUICK,
    );
    let ctx = ran.ctx();
    assert_eq!(ran.status.code(), Some(0), "exit status\n{ctx}");

    let cg = ran
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("cg 0::"))
        .unwrap_or_else(|| panic!("no 0:: line in the child's /proc/self/cgroup\n{ctx}"));
    assert_eq!(
        cg,
        sub.rel(&sub.job("j")),
        "the child's first look at its cgroup\n{ctx}"
    );

    let pid: u32 = ran
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("pid "))
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pid line\n{ctx}"));
    let stat = ran
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("stat "))
        .unwrap_or_else(|| panic!("no stat line\n{ctx}"));
    let own_pid: u32 = stat
        .split_ascii_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("odd stat {stat:?}"));
    assert_eq!(own_pid, pid, "stat was read by the shell itself\n{ctx}");
    let f = stat_after_comm(stat);
    assert_eq!(f[1], ran.pid.to_string(), "ppid is reeve\n{ctx}");
    assert_eq!(f[3], pid.to_string(), "session id == pid (setsid)\n{ctx}");
    assert_eq!(f[2], pid.to_string(), "process group == pid\n{ctx}");

    assert!(
        ran.stderr.contains("ended: exit 0"),
        "stderr should say `reeve: job j ended: exit 0`\n{ctx}"
    );
    assert!(
        !sub.job("j").exists(),
        "the empty job group is removed after the run\n{ctx}"
    );
}

#[test]
fn run_exit_status_and_signals() {
    let sub = Subtree::new();
    let dir = TempDir::new("gov-run-status");
    let cfg = cli_config(&dir, &sub);

    let ran = run_reeve(
        &dir,
        &args!["run", "--config", &cfg, "--job", "seven", "--", "/bin/sh", "-c", "exit 7"],
        QUICK,
    );
    assert_eq!(ran.status.code(), Some(7), "exit 7\n{}", ran.ctx());
    assert!(
        ran.stderr.contains("ended: exit 7"),
        "end line\n{}",
        ran.ctx()
    );
    assert!(!sub.job("seven").exists(), "group left\n{}", ran.ctx());

    let ran = run_reeve(
        &dir,
        &args![
            "run",
            "--config",
            &cfg,
            "--job",
            "term",
            "--",
            "/bin/sh",
            "-c",
            "kill -TERM $$"
        ],
        QUICK,
    );
    assert_eq!(
        ran.status.code(),
        Some(143),
        "killed by SIGTERM\n{}",
        ran.ctx()
    );
    assert!(
        ran.stderr.contains("killed by signal 15"),
        "end line\n{}",
        ran.ctx()
    );
    assert!(!sub.job("term").exists(), "group left\n{}", ran.ctx());

    let missing = dir.join("nonexistent");
    let ran = run_reeve(
        &dir,
        &args!["run", "--config", &cfg, "--job", "missing", "--", &missing],
        QUICK,
    );
    assert_eq!(ran.status.code(), Some(127), "not found\n{}", ran.ctx());
    assert_eq!(
        lines_of(&ran.stderr).len(),
        1,
        "exactly one stderr line\n{}",
        ran.ctx()
    );
    assert!(!sub.job("missing").exists(), "group left\n{}", ran.ctx());

    let plain = write_file(dir.path(), "not-executable", "#!/bin/sh\nexit 0\n");
    fs::set_permissions(&plain, fs::Permissions::from_mode(0o644)).expect("chmod 644");
    let ran = run_reeve(
        &dir,
        &args!["run", "--config", &cfg, "--job", "noexec", "--", &plain],
        QUICK,
    );
    assert_eq!(
        ran.status.code(),
        Some(126),
        "not executable\n{}",
        ran.ctx()
    );
    assert_eq!(
        lines_of(&ran.stderr).len(),
        1,
        "exactly one stderr line\n{}",
        ran.ctx()
    );
    assert!(!sub.job("noexec").exists(), "group left\n{}", ran.ctx());
    assert!(
        sub.managed_groups().is_empty(),
        "no job group is left: {:?}",
        sub.managed_groups()
    );
}

#[test]
fn run_forwards_sigterm() {
    let sub = Subtree::new();
    let dir = TempDir::new("gov-run-sigterm");
    let mut procs = ProcGuard::new();
    let cfg = cli_config(&dir, &sub);
    let target = Target::new(dir.path());
    let fg = Foreground::start(
        &mut procs,
        &dir,
        &args![
            "run",
            "--config",
            &cfg,
            "--job",
            "t",
            "--",
            &target.path,
            "30"
        ],
    );
    let child = *wait_procs(&sub.job("t"), 1, QUICK)
        .iter()
        .next()
        .expect("one child");
    // The child joins the group just before exec: wait for the exec.
    wait_until("the job's process is the command", QUICK, || {
        fs::read_link(format!("/proc/{child}/exe")).ok().as_deref() == Some(target.path.as_path())
    });

    // The command starts with the signals reeve forwards deliverable:
    // neither blocked (reeve blocks them for its signalfd) nor ignored.
    let forwarded = [libc::SIGHUP, libc::SIGINT, libc::SIGQUIT, libc::SIGTERM]
        .into_iter()
        .fold(0, |m, s| m | bit(s));
    let (blocked, ignored) = (sigset(child, "SigBlk"), sigset(child, "SigIgn"));
    assert!(
        blocked & forwarded == 0 && ignored & forwarded == 0,
        "the command inherited reeve's signal state: SigBlk {blocked:016x} SigIgn \
         {ignored:016x} (HUP INT QUIT TERM = {forwarded:016x} must be neither)"
    );

    // SAFETY: kill(2) on the pid of our unreaped child.
    unsafe { libc::kill(fg.pid as libc::pid_t, libc::SIGTERM) };
    let status = procs
        .wait_exit(fg.pid, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("reeve ignored SIGTERM\n{}", fg.stderr()));
    assert_eq!(
        status.code(),
        Some(143),
        "reeve's exit after SIGTERM: {status}\n{}",
        fg.stderr()
    );
    assert!(
        !alive(child),
        "the child {child} survived the forwarded SIGTERM\n{}",
        fg.stderr()
    );
    assert!(
        fg.stderr().contains("killed by signal 15"),
        "end line names SIGTERM\n{}",
        fg.stderr()
    );
    wait_until("job group t removed", Duration::from_secs(5), || {
        !sub.job("t").exists()
    });
}

#[test]
fn kill9_of_run_leaves_child() {
    let sub = Subtree::new();
    let dir = TempDir::new("gov-run-kill9");
    let mut procs = ProcGuard::new();
    let cfg = cli_config(&dir, &sub);
    let target = Target::new(dir.path());
    let fg = Foreground::start(
        &mut procs,
        &dir,
        &args![
            "run",
            "--config",
            &cfg,
            "--job",
            "k",
            "--",
            &target.path,
            "30"
        ],
    );
    let child = *wait_procs(&sub.job("k"), 1, QUICK)
        .iter()
        .next()
        .expect("one child");
    let before = read_start_ticks(child).expect("child stat");

    let status = procs.kill(fg.pid).expect("reeve was running");
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "reeve status {status}"
    );
    thread::sleep(Duration::from_millis(300));

    assert!(
        alive(child) && read_start_ticks(child) == Some(before),
        "kill -9 of reeve run took the child {child} with it\n{}",
        fg.stderr()
    );
    assert_eq!(
        procs_of(&sub.job("k")),
        BTreeSet::from([child]),
        "the child stays in its job group"
    );
    assert_eq!(cgroup_of(child), Some(sub.rel(&sub.job("k"))));
    let f = stat_of(child).expect("child stat");
    assert_eq!(f[3], child.to_string(), "the child leads its own session");

    // Cleanup of our own child (started through our reeve run), by pid.
    assert!(
        signal_if_in(child, &sub.rel, libc::SIGKILL),
        "could not kill {child}"
    );
    assert!(reap(child, Duration::from_secs(5)), "{child} still running");
}

#[test]
fn detach_mode_prints_pid_and_keeps_group() {
    let sub = Subtree::new();
    let dir = TempDir::new("gov-run-detach");
    let cfg = cli_config(&dir, &sub);
    let target = Target::new(dir.path());
    let ran = run_reeve(
        &dir,
        &args![
            "run",
            "--config",
            &cfg,
            "--job",
            "d",
            "--detach",
            "--",
            &target.path,
            "30"
        ],
        QUICK,
    );
    let ctx = ran.ctx();
    assert_eq!(ran.status.code(), Some(0), "exit status\n{ctx}");
    assert!(
        ran.elapsed < Duration::from_secs(5),
        "--detach returns at once, took {:?}\n{ctx}",
        ran.elapsed
    );
    let out = lines_of(&ran.stdout);
    assert_eq!(out.len(), 1, "one stdout line\n{ctx}");
    assert!(out[0].starts_with("pid="), "line starts with pid=\n{ctx}");
    let f = kv(out[0]);
    let pid: u32 = f
        .get("pid")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("pid=\n{ctx}"));
    assert!(
        names(f.get("job").map_or("", String::as_str), "job", "d"),
        "job=\n{ctx}"
    );
    assert!(
        is_group(
            f.get("cgroup").map_or("", String::as_str),
            &sub,
            &sub.job("d")
        ),
        "cgroup= should be {}\n{ctx}",
        sub.job("d").display()
    );

    assert!(alive(pid), "the detached child {pid} runs\n{ctx}");
    assert_eq!(
        fs::read_link(format!("/proc/{pid}/exe")).ok().as_deref(),
        Some(target.path.as_path()),
        "pid= is the command\n{ctx}"
    );
    assert!(
        procs_of(&sub.job("d")).contains(&pid),
        "pid {pid} in job.d/cgroup.procs\n{ctx}"
    );
    let st = stat_of(pid).expect("stat");
    assert_eq!(st[3], pid.to_string(), "own session\n{ctx}");
}

// ------------------------------------------------------ attach/detach ---

#[test]
fn attach_moves_family_and_detach_restores() {
    let sub = Subtree::new();
    let dir = TempDir::new("gov-attach");
    let mut procs = ProcGuard::new();
    let cfg = cli_config(&dir, &sub);
    let target = Target::new(dir.path());
    let orig = sub.make_group("orig");

    let script = format!(
        "read x; '{s}' 60 & '{s}' 60 & wait",
        s = target.path.display()
    );
    let mut shell = spawn_retry(
        Command::new("/bin/sh")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let mut stdin = shell.stdin.take().expect("stdin pipe");
    let sh = procs.push(shell);
    sub.move_into(&orig, sh);
    assert_eq!(cgroup_of(sh), Some(sub.rel(&orig)));
    {
        use std::io::Write;
        stdin.write_all(b"go\n").expect("release the shell");
    }
    let family = wait_procs(&orig, 3, QUICK);
    assert_eq!(family.len(), 3, "sh and its two sleeps: {family:?}");
    let kids: Vec<u32> = family.iter().copied().filter(|&p| p != sh).collect();
    for &k in &kids {
        assert_eq!(
            stat_of(k).expect("stat")[1],
            sh.to_string(),
            "{k} is sh's child"
        );
    }

    let ran = run_reeve(
        &dir,
        &args![
            "attach",
            "--config",
            &cfg,
            "--pid",
            sh.to_string(),
            "--job",
            "fam"
        ],
        QUICK,
    );
    let ctx = ran.ctx();
    assert_eq!(ran.status.code(), Some(0), "attach without limits\n{ctx}");
    let line = lines_of(&ran.stdout)
        .into_iter()
        .find(|l| l.starts_with("attached "))
        .unwrap_or_else(|| panic!("no `attached` line\n{ctx}"));
    let f = kv(line);
    assert_eq!(f.get("pid"), Some(&sh.to_string()), "pid=\n{ctx}");
    assert!(
        names(f.get("job").map_or("", String::as_str), "job", "fam"),
        "job=\n{ctx}"
    );
    assert!(
        is_group(
            f.get("cgroup").map_or("", String::as_str),
            &sub,
            &sub.job("fam")
        ),
        "cgroup=\n{ctx}"
    );
    assert_eq!(
        f.get("moved").map(String::as_str),
        Some("3"),
        "moved=\n{ctx}"
    );
    assert_eq!(
        procs_of(&sub.job("fam")),
        family,
        "the whole family is in job.fam\n{ctx}"
    );
    assert!(
        procs_of(&orig).is_empty(),
        "orig is empty after attach\n{ctx}"
    );

    let ran = run_reeve(
        &dir,
        &args!["detach", "--config", &cfg, "--job", "fam"],
        QUICK,
    );
    let ctx = ran.ctx();
    assert_eq!(ran.status.code(), Some(0), "detach\n{ctx}");
    let line = lines_of(&ran.stdout)
        .into_iter()
        .find(|l| l.starts_with("detached "))
        .unwrap_or_else(|| panic!("no `detached` line\n{ctx}"));
    let f = kv(line);
    assert!(
        names(f.get("job").map_or("", String::as_str), "job", "fam"),
        "job=\n{ctx}"
    );
    assert_eq!(
        f.get("moved").map(String::as_str),
        Some("3"),
        "moved=\n{ctx}"
    );
    assert_eq!(
        procs_of(&orig),
        family,
        "every process is back where it came from\n{ctx}"
    );
    assert!(!sub.job("fam").exists(), "job.fam is removed\n{ctx}");
    for &p in &family {
        assert!(alive(p), "{p} keeps running after detach\n{ctx}");
    }
    // Cleanup: the guard kills sh; its sleeps, orphaned to this process,
    // are killed and reaped by the subtree guard (they are in orig).
    drop(stdin);
}

// --------------------------------------------------------- fail closed ---

#[test]
fn fail_closed_without_controllers() {
    let sub = Subtree::new();
    let dir = TempDir::new("gov-fail-closed");
    let cfg = cli_config(&dir, &sub);
    let target = Target::new(dir.path());

    // Watch /proc for the uniquely named command while reeve decides.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = {
        let stop = stop.clone();
        let path = target.path.clone();
        thread::spawn(move || {
            let mut seen = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(rd) = fs::read_dir("/proc") {
                    for e in rd.flatten() {
                        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                            continue;
                        };
                        if fs::read_link(format!("/proc/{pid}/exe")).ok().as_deref()
                            == Some(path.as_path())
                        {
                            seen.push(pid);
                        }
                    }
                }
            }
            seen
        })
    };
    let ran = run_reeve(
        &dir,
        &args![
            "run",
            "--config",
            &cfg,
            "--job",
            "m",
            "--memory",
            "64M",
            "--",
            &target.path,
            "1"
        ],
        QUICK,
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = seen.join().expect("watcher thread");
    let ctx = ran.ctx();
    assert_eq!(ran.status.code(), Some(1), "fail closed\n{ctx}");
    assert!(
        ran.stderr.contains("memory"),
        "stderr names the memory controller\n{ctx}"
    );
    assert!(seen.is_empty(), "the command ran anyway: {seen:?}\n{ctx}");
    assert!(!sub.job("m").exists(), "no job group left\n{ctx}");

    // A marker proves the command never ran its first instruction.
    for (flag, value, controller) in [
        ("--memory", "64M", "memory"),
        ("--cpu", "50%", "cpu"),
        ("--pids", "10", "pids"),
    ] {
        let marker = dir.join(&format!("ran-{controller}"));
        let script = write_file(
            dir.path(),
            &format!("{}-{controller}", unique_name()),
            &format!("#!/bin/sh\n: > '{}'\nexec sleep 1\n", marker.display()),
        );
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).expect("chmod");
        let job = format!("fc-{controller}");
        let ran = run_reeve(
            &dir,
            &args!["run", "--config", &cfg, "--job", &job, flag, value, "--", &script],
            QUICK,
        );
        let ctx = ran.ctx();
        assert_eq!(
            ran.status.code(),
            Some(1),
            "{flag} {value}: fail closed\n{ctx}"
        );
        assert!(
            ran.stderr.contains(controller),
            "{flag}: stderr names the {controller} controller\n{ctx}"
        );
        assert!(
            !marker.exists(),
            "{flag}: the command ran although its limit is not in force\n{ctx}"
        );
        assert!(!sub.job(&job).exists(), "{flag}: no job group left\n{ctx}");
    }
    assert!(
        sub.managed_groups().is_empty(),
        "no job group is left: {:?}",
        sub.managed_groups()
    );
}

// --------------------------------------------------------------- watch ---

#[test]
fn watch_adopts_run_job() {
    let sub = Subtree::new();
    let dir = TempDir::new("gov-watch");
    let mut procs = ProcGuard::new();
    let target = Target::new(dir.path());
    let cfg = watch_config(&dir, &sub, "enc", &target.name, json!({"pool": "enc"}));
    let mut d = Daemon::start(&cfg, dir.path());
    let started = d.wait_started();
    assert_eq!(
        started["cgroup_root"].as_str(),
        Some(sub.root().to_str().expect("UTF-8 test path")),
        "started names the cgroup root: {started}"
    );
    assert!(started["state_dir"].is_string(), "started: {started}");
    d.wait_scans(1, WAIT);

    // A target started behind reeve's back is attached to the pool.
    let id = target.spawn(&mut procs, "30");
    let ev = d.wait_for(&format!("attached or attach_failed of {id:?}"), WAIT, |v| {
        matches!(event_name(v), "attached" | "attach_failed") && id.matches(v)
    });
    let ctx = format!("{ev}\n{}", d.log_tail());
    assert_eq!(event_name(&ev), "attached", "{ctx}");
    assert_eq!(ev["rule"], "enc", "rule: {ctx}");
    assert!(
        names(ev["job"].as_str().unwrap_or(""), "pool", "enc"),
        "job: {ctx}"
    );
    assert!(
        is_group(ev["cgroup"].as_str().unwrap_or(""), &sub, &sub.pool("enc")),
        "cgroup: {ctx}"
    );
    assert_eq!(ev["in_force"], true, "no limits asked, so in force: {ctx}");
    assert_eq!(cgroup_of(id.pid), Some(sub.rel(&sub.pool("enc"))), "{ctx}");
    assert!(procs_of(&sub.pool("enc")).contains(&id.pid), "{ctx}");

    // A job made by `reeve run` is adopted, not moved.
    let ran = run_reeve(
        &dir,
        &args![
            "run",
            "--config",
            &cfg,
            "--job",
            "r",
            "--detach",
            "--",
            &target.path,
            "30"
        ],
        QUICK,
    );
    assert_eq!(ran.status.code(), Some(0), "run --detach\n{}", ran.ctx());
    let rpid: u32 = lines_of(&ran.stdout)
        .first()
        .and_then(|l| kv(l).get("pid").and_then(|p| p.parse().ok()))
        .unwrap_or_else(|| panic!("pid= line\n{}", ran.ctx()));
    let rid = Ident {
        pid: rpid,
        start_ticks: read_start_ticks(rpid).expect("run child stat"),
    };
    let ev = d.wait_for(&format!("adopted of {rid:?}"), WAIT, |v| {
        matches!(event_name(v), "adopted" | "attached" | "attach_failed") && rid.matches(v)
    });
    let ctx = format!("{ev}\n{}", d.log_tail());
    assert_eq!(event_name(&ev), "adopted", "{ctx}");
    assert!(
        names(ev["job"].as_str().unwrap_or(""), "job", "r"),
        "job: {ctx}"
    );
    d.wait_scans(2, WAIT);
    assert_eq!(d.about("attached", rid), 0, "{}", d.log_tail());
    assert_eq!(d.about("attach_failed", rid), 0, "{}", d.log_tail());
    assert_eq!(
        cgroup_of(rpid),
        Some(sub.rel(&sub.job("r"))),
        "the run job stays in job.r\n{}",
        d.log_tail()
    );

    // Shutdown moves nothing.
    // Every identity took only the lifecycle steps the table allows
    // (queued -> governed, queued -> adopted).
    let refused: Vec<Value> = d
        .events()
        .into_iter()
        .filter(|v| event_name(v) == "lifecycle_refused")
        .collect();
    assert!(refused.is_empty(), "{refused:?}\n{}", d.log_tail());
    d.stop_ok();
    assert_eq!(cgroup_of(id.pid), Some(sub.rel(&sub.pool("enc"))));
    assert_eq!(cgroup_of(rpid), Some(sub.rel(&sub.job("r"))));
    assert!(alive(id.pid) && alive(rpid));
}

// -------------------------------------------------------------- ffmpeg ---

/// The first `name` on PATH.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

const ENCODE: [&str; 12] = [
    "-hide_banner",
    "-loglevel",
    "error",
    "-f",
    "lavfi",
    "-i",
    "testsrc2=size=320x240:rate=25",
    "-t",
    "3",
    "-f",
    "null",
    "-",
];

#[test]
fn real_ffmpeg() {
    let Some(ffmpeg) = on_path("ffmpeg") else {
        common::require(false, "ffmpeg is not installed (Debian package ffmpeg)");
        return;
    };
    let sub = Subtree::new();
    let dir = TempDir::new("gov-ffmpeg");
    let mut procs = ProcGuard::new();

    // Through reeve run.
    let cfg = cli_config(&dir, &sub);
    let mut a = args!["run", "--config", &cfg, "--job", "ff", "--", &ffmpeg].to_vec();
    a.extend(ENCODE.iter().map(OsString::from));
    let ran = run_reeve(&dir, &a, Duration::from_secs(120));
    let ctx = ran.ctx();
    assert_eq!(ran.status.code(), Some(0), "ffmpeg under reeve run\n{ctx}");
    assert!(ran.stderr.contains("ended: exit 0"), "end line\n{ctx}");
    assert!(!sub.job("ff").exists(), "job.ff removed\n{ctx}");

    // Started directly and auto-attached by reeve watch.
    let name = unique_name();
    let copy = dir.join(&name);
    copy_exe(&ffmpeg, &copy);
    let cfg = watch_config(&dir, &sub, "ff", &name, json!({"pool": "ff"}));
    let mut d = Daemon::start(&cfg, dir.path());
    d.wait_started();
    d.wait_scans(1, WAIT);
    let err_path = dir.join("ffmpeg.stderr");
    let child = spawn_retry(
        Command::new(&copy)
            .arg("-re")
            .args(ENCODE)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&err_path).expect("stderr file")),
    );
    let pid = child.id();
    let id = Ident {
        pid,
        start_ticks: read_start_ticks(pid).expect("ffmpeg stat"),
    };
    procs.push(child);
    let ev = d.wait_for(&format!("attached or attach_failed of {id:?}"), WAIT, |v| {
        matches!(event_name(v), "attached" | "attach_failed") && id.matches(v)
    });
    let ctx = format!("{ev}\n{}", d.log_tail());
    assert_eq!(event_name(&ev), "attached", "{ctx}");
    assert!(
        names(ev["job"].as_str().unwrap_or(""), "pool", "ff"),
        "{ctx}"
    );
    let cg = cgroup_of(pid);
    assert!(alive(pid), "ffmpeg (-re, 3 s) still encodes: {ctx}");
    assert_eq!(cg, Some(sub.rel(&sub.pool("ff"))), "while it runs: {ctx}");

    let status = procs
        .wait_exit(pid, Duration::from_secs(60))
        .expect("ffmpeg finished");
    assert!(
        status.success(),
        "ffmpeg in pool.ff: {status}; stderr {}",
        fs::read_to_string(&err_path).unwrap_or_default()
    );
    let gone = d.wait_event("exited", id, WAIT);
    if let Some(code) = gone.get("exit_code") {
        assert_eq!(code, 0, "{gone}");
    }
    d.stop_ok();
}

/// `reeve detach` releases a process for good: a daemon that discovers it
/// afresh later (no saved state) leaves it where the operator put it.
#[test]
fn detached_process_is_not_reattached() {
    let sub = Subtree::new();
    let dir = TempDir::new("gov-release");
    let mut procs = ProcGuard::new();
    let target = Target::new(dir.path());
    let cfg = watch_config(&dir, &sub, "rel", &target.name, json!({"pool": "rel"}));
    let id = target.spawn(&mut procs, "60");
    let mut d = Daemon::start(&cfg, dir.path());
    d.wait_started();
    d.wait_event("attached", id, WAIT);
    d.stop_ok();

    let ran = run_reeve(
        &dir,
        &args!["detach", "--config", &cfg, "--pool", "rel"],
        QUICK,
    );
    assert_eq!(ran.status.code(), Some(0), "detach\n{}", ran.ctx());
    assert_ne!(cgroup_of(id.pid), Some(sub.rel(&sub.pool("rel"))));

    // Forget the daemon's state so the target is discovered anew.
    let state_dir = PathBuf::from(state_dir(&dir));
    fs::remove_file(state_dir.join("state.json")).expect("remove state.json");
    let mut d = Daemon::start(&cfg, dir.path());
    d.wait_started();
    let ev = d.wait_for(&format!("a decision about {id:?}"), WAIT, |v| {
        matches!(event_name(v), "attached" | "not_attached" | "adopted") && id.matches(v)
    });
    assert_eq!(event_name(&ev), "not_attached", "{ev}\n{}", d.log_tail());
    d.wait_scans(3, WAIT);
    assert_ne!(cgroup_of(id.pid), Some(sub.rel(&sub.pool("rel"))));
    d.stop_ok();
}

// ------------------------------------------------- run: check and state ---

#[test]
fn run_starts_command_with_default_signal_state() {
    let sub = Subtree::new();
    let dir = TempDir::new("gov-run-sigstate");
    let mut procs = ProcGuard::new();
    let cfg = cli_config(&dir, &sub);
    let target = Target::new(dir.path());
    // A shell's background job starts with SIGINT and SIGQUIT ignored, and
    // exec keeps SIG_IGN: reeve inherits both here.
    let script = format!(
        "trap '' INT QUIT; exec '{}' run --config '{}' --job s -- '{}' 30",
        Path::new(REEVE).display(),
        cfg.display(),
        target.path.display()
    );
    let reeve = procs.push(spawn_retry(
        Command::new("/bin/sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    ));
    let child = *wait_procs(&sub.job("s"), 1, QUICK)
        .iter()
        .next()
        .expect("one child");
    wait_until("reeve exec'd", QUICK, || {
        fs::read_link(format!("/proc/{reeve}/exe")).is_ok_and(|p| p == Path::new(REEVE))
    });
    let reeve_ignored = sigset(reeve, "SigIgn");
    assert!(
        reeve_ignored & (bit(libc::SIGINT) | bit(libc::SIGQUIT)) != 0,
        "the test's premise: reeve inherits ignored INT/QUIT (SigIgn {reeve_ignored:016x})"
    );
    // The child joins the group just before exec: wait for the exec.
    wait_until("the job's process is the command", QUICK, || {
        fs::read_link(format!("/proc/{child}/exe")).ok().as_deref() == Some(target.path.as_path())
    });
    // sleep changes no disposition and blocks nothing itself.
    let (ignored, blocked) = (sigset(child, "SigIgn"), sigset(child, "SigBlk"));
    assert_eq!(
        (ignored, blocked),
        (0, 0),
        "the command inherited signal state: SigIgn {ignored:016x} SigBlk {blocked:016x}"
    );

    // SAFETY: kill(2) on the pid of our unreaped child (the shell exec'd reeve).
    unsafe { libc::kill(reeve as libc::pid_t, libc::SIGTERM) };
    let status = procs
        .wait_exit(reeve, Duration::from_secs(10))
        .expect("reeve ended after SIGTERM");
    assert_eq!(
        status.code(),
        Some(143),
        "the command died of the forwarded SIGTERM"
    );
}

/// The events of a test's audit log (`<state_dir>/events.jsonl`).
fn audit_events(dir: &TempDir) -> Vec<Value> {
    json_lines(&fs::read(dir.join("state/events.jsonl")).unwrap_or_default())
}

/// The audit events named `event` about job group `job`.
fn job_events<'a>(events: &'a [Value], event: &str, job: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|v| event_name(v) == event && v["job"] == job)
        .collect()
}

#[test]
fn run_refuses_a_running_job_before_writing_anything() {
    let sub = Subtree::new();
    let dir = TempDir::new("gov-run-busy");
    let mut procs = ProcGuard::new();
    let cfg = cli_config(&dir, &sub);
    let target = Target::new(dir.path());
    let fg = Foreground::start(
        &mut procs,
        &dir,
        &args![
            "run",
            "--config",
            &cfg,
            "--job",
            "enc1",
            "--",
            &target.path,
            "30"
        ],
    );
    wait_procs(&sub.job("enc1"), 1, QUICK);
    let record = dir.join("state/jobs/job.enc1.json");
    wait_until("the first run's record", QUICK, || {
        job_events(&audit_events(&dir), "job_started", "job.enc1").len() == 1
    });
    let bytes = fs::read(&record).expect("record of the running job");
    let mtime = fs::metadata(&record)
        .and_then(|m| m.modified())
        .expect("mtime");
    let events_before = audit_events(&dir).len();

    let ran = run_reeve(
        &dir,
        &args![
            "run",
            "--config",
            &cfg,
            "--job",
            "enc1",
            "--memory",
            "100M",
            "--",
            "/bin/true"
        ],
        QUICK,
    );
    let ctx = ran.ctx();
    assert_eq!(ran.status.code(), Some(1), "refused\n{ctx}");
    let err = lines_of(&ran.stderr);
    assert_eq!(err.len(), 1, "one error line\n{ctx}");
    assert!(
        err[0].contains("job.enc1")
            && err[0].contains("running")
            && err[0].contains("nothing was changed"),
        "the line says the job is running and nothing changed\n{ctx}"
    );
    assert_eq!(
        fs::read(&record).expect("record"),
        bytes,
        "record bytes\n{ctx}"
    );
    assert_eq!(
        fs::metadata(&record)
            .and_then(|m| m.modified())
            .expect("mtime"),
        mtime,
        "record rewritten\n{ctx}"
    );
    let after = audit_events(&dir);
    let new: Vec<&str> = after[events_before..].iter().map(event_name).collect();
    assert_eq!(
        new,
        ["run_refused"],
        "the refused run logs its refusal and nothing else: {:?}",
        &after[events_before..]
    );
    assert!(
        !after.iter().any(|v| event_name(v) == "limit_failed"),
        "a limit write was attempted: {after:?}"
    );
    assert_eq!(
        procs_of(&sub.job("enc1")).len(),
        1,
        "the running job is untouched"
    );

    // SAFETY: kill(2) on the pid of our unreaped child.
    unsafe { libc::kill(fg.pid as libc::pid_t, libc::SIGTERM) };
    procs
        .wait_exit(fg.pid, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("reeve ignored SIGTERM\n{}", fg.stderr()));
}

#[test]
fn run_refuses_a_group_that_is_not_reeves() {
    let sub = Subtree::new();
    let dir = TempDir::new("gov-run-foreign");
    let cfg = cli_config(&dir, &sub);
    // Someone else's group under reeve's root, with no record.
    fs::create_dir_all(sub.job("foreign")).expect("mkdir foreign group");
    let ran = run_reeve(
        &dir,
        &args![
            "run",
            "--config",
            &cfg,
            "--job",
            "foreign",
            "--",
            "/bin/true"
        ],
        QUICK,
    );
    let ctx = ran.ctx();
    assert_eq!(ran.status.code(), Some(1), "refused\n{ctx}");
    assert_eq!(lines_of(&ran.stderr).len(), 1, "one error line\n{ctx}");
    assert!(ran.stderr.contains("no record"), "{ctx}");
    assert!(
        sub.job("foreign").is_dir(),
        "the foreign group is left alone\n{ctx}"
    );
    assert!(
        !dir.join("state/jobs/job.foreign.json").exists(),
        "no record was made\n{ctx}"
    );
}

/// Runs `reeve ARGS` with stdout or stderr (or both) a pipe whose reading
/// end is closed before reeve writes anything; returns the exit status.
fn run_with_closed(dir: &TempDir, args: &[OsString], stdout: bool, stderr: bool) -> ExitStatus {
    let log = dir.join(&format!("closed-{}.log", random_hex16()));
    let mut cmd = Command::new(REEVE);
    cmd.args(args).stdin(Stdio::null());
    cmd.stdout(if stdout {
        Stdio::piped()
    } else {
        Stdio::from(fs::File::create(&log).expect("log"))
    });
    cmd.stderr(if stderr {
        Stdio::piped()
    } else {
        Stdio::from(fs::File::create(&log).expect("log"))
    });
    let mut child = spawn_retry(&mut cmd);
    drop(child.stdout.take());
    drop(child.stderr.take());
    let deadline = Instant::now() + QUICK;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("reeve {args:?} hung with a closed stream");
        }
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn run_records_the_end_when_stdout_or_stderr_is_closed() {
    let sub = Subtree::new();
    let dir = TempDir::new("gov-run-epipe");
    let cfg = cli_config(&dir, &sub);
    for (job, stdout, stderr) in [
        ("out", true, false),
        ("err", false, true),
        ("both", true, true),
    ] {
        let status = run_with_closed(
            &dir,
            &args![
                "run",
                "--config",
                &cfg,
                "--job",
                job,
                "--",
                "/bin/sh",
                "-c",
                "echo a; echo b; sleep 0.2"
            ],
            stdout,
            stderr,
        );
        let group = format!("job.{job}");
        let events = audit_events(&dir);
        let ended = job_events(&events, "job_ended", &group);
        assert_eq!(
            ended.len(),
            1,
            "{job}: one job_ended (reeve ended with {status}): {events:?}"
        );
        let code = ended[0]["exit_code"].as_i64().expect("exit_code");
        assert_eq!(
            status.code().map(i64::from),
            Some(code),
            "{job}: reeve's exit is the command's status, recorded as {code}"
        );
        if stdout {
            // The command's own stdout is the closed pipe: it dies of
            // SIGPIPE (default disposition) at its first echo.
            assert_eq!(code, 128 + libc::SIGPIPE as i64, "{job}: {:?}", ended[0]);
        } else {
            assert_eq!(code, 0, "{job}: {:?}", ended[0]);
        }
        if stderr {
            assert!(
                ended[0]["output_lost"].as_u64() >= Some(1),
                "{job}: reeve's end line to the closed stderr is counted: {:?}",
                ended[0]
            );
        }
        assert!(
            !sub.job(job).exists(),
            "{job}: job group removed after the end"
        );
        assert!(
            !dir.join(&format!("state/jobs/{group}.json")).exists(),
            "{job}: record removed after the end"
        );
    }

    // Detached, reeve's only output is the pid line.
    let status = run_with_closed(
        &dir,
        &args![
            "run",
            "--config",
            &cfg,
            "--job",
            "det",
            "--detach",
            "--",
            "/bin/sleep",
            "30"
        ],
        true,
        false,
    );
    assert_eq!(
        status.code(),
        Some(0),
        "--detach with stdout closed: {status}"
    );
    let events = audit_events(&dir);
    let started = job_events(&events, "job_started", "job.det");
    assert_eq!(started.len(), 1, "{events:?}");
    assert_eq!(
        started[0]["output_lost"], 1,
        "the lost pid= line is said: {:?}",
        started[0]
    );
}

#[test]
fn a_refused_attach_or_run_is_in_the_audit_log() {
    let sub = Subtree::new();
    let dir = TempDir::new("gov-refused");
    let cfg = cli_config(&dir, &sub);
    let cfg = cfg.to_str().expect("utf-8 path");
    let out = reeve(&["attach", "--pid", "1", "--config", cfg]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    // A job group reeve has no record of: not reeve's to use.
    fs::create_dir_all(sub.root().join("job.foreign")).unwrap();
    let out = reeve(&["run", "--job", "foreign", "--config", cfg, "--", "true"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    fs::remove_dir(sub.root().join("job.foreign")).unwrap();
    let events = audit_events(&dir);
    let attach: Vec<&Value> = events
        .iter()
        .filter(|v| event_name(v) == "attach_refused")
        .collect();
    assert_eq!(attach.len(), 1, "{events:?}");
    assert_eq!(attach[0]["pid"], 1);
    assert!(
        attach[0]["reason"].as_str().unwrap_or("").contains("init"),
        "{:?}",
        attach[0]
    );
    let run = job_events(&events, "run_refused", "job.foreign");
    assert_eq!(run.len(), 1, "{events:?}");
}
