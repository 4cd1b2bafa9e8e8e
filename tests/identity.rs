//! Identity and records around every move, as an operator (or an attacker
//! racing pids) sees them: a pid recycled between reeve's identity check
//! and its write to cgroup.procs never leaves a stranger in the group;
//! pid 1, reeve and reeve's ancestors are never attached; the daemon does
//! not wait on a CLI command holding the records lock; pool records are
//! pruned; an attach without limits keeps a pool's limits; an unreadable
//! released.json stops auto-attach instead of undoing a detach; a FIFO in
//! jobs/ blocks neither a command nor the daemon; `reeve run` starts
//! nothing without its intent, and a crashed run's child is settled.
//!
//! Every test works in its own cgroup v2 subtree ([`Subtree`]) and only on
//! processes it started. The pid-recycling tests run reeve and their
//! processes inside a new pid namespace (`unshare --pid --fork
//! --mount-proc`), where `ns_last_pid` steers which pid the next fork gets,
//! and need a reeve built with `--features test-hooks` (the pause between
//! check and write); without it they fail, they do not skip.

mod common;

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::cgroup::*;
use common::*;
use serde_json::{json, Value};

/// Waits for `path` to exist; panics with `ctx()` after `timeout`.
fn wait_file(path: &Path, timeout: Duration, ctx: impl Fn() -> String) {
    let deadline = Instant::now() + timeout;
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} did not appear within {timeout:?}\n{}",
            path.display(),
            ctx()
        );
        thread::sleep(Duration::from_millis(10));
    }
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_default()
}

/// The `0::` line of a saved /proc/<pid>/cgroup.
fn v2_line(text: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or("")
        .trim()
        .to_string()
}

/// The job record of `group` in the test's state directory.
fn record(dir: &TempDir, group: &str) -> Option<Value> {
    let p = PathBuf::from(state_dir(dir)).join(format!("jobs/{group}.json"));
    let text = fs::read_to_string(p).ok()?;
    Some(serde_json::from_str(&text).expect("record is JSON"))
}

/// Runs inside the pid namespace (as its pid 1). Starts the victim (or a
/// family whose child is the victim), starts `reeve attach` paused before
/// the victim's write, kills and reaps the victim, makes the next pid the
/// victim's with ns_last_pid, starts a stranger that takes it, and lets
/// reeve go on. Everything it sees is written to files in `$out`.
const RECYCLE_SCRIPT: &str = r#"
reeve=$1 cfg=$2 hook=$3 out=$4 mode=$5 elsewhere=$6
wait_file() {
    n=0
    while [ ! -e "$1" ]; do
        n=$((n + 1))
        if [ $n -gt 3000 ]; then echo "timed out waiting for $1" >> "$out/log"; exit 3; fi
        sleep 0.01
    done
}
if [ "$mode" = single ]; then
    sleep 600 &
    root=$!
    victim=$root
else
    sh -c 'sleep 600 & echo $! > "$0.tmp"; mv "$0.tmp" "$0"; wait; exec sleep 600' "$out/child" &
    root=$!
    wait_file "$out/child"
    victim=$(cat "$out/child")
fi
echo "$root" > "$out/root"
echo "$victim" > "$out/victim"
REEVE_TEST_PAUSE_BEFORE_MOVE="$victim:$hook" "$reeve" attach --pid "$root" --job recycle \
    --config "$cfg" > "$out/attach.out" 2> "$out/attach.err" &
attach=$!
wait_file "$hook.paused"
kill -KILL "$victim"
if [ "$mode" = single ]; then wait "$victim"; fi
while [ -e "/proc/$victim" ]; do sleep 0.01; done
echo $((victim - 1)) > /proc/sys/kernel/ns_last_pid
sh -c 'echo $$ > "$0/cgroup.procs" && touch "$1" && exec sleep 600' "$elsewhere" "$out/stranger.placed" &
stranger=$!
echo "$stranger" > "$out/stranger"
wait_file "$out/stranger.placed"
touch "$hook.go"
wait "$attach"
echo $? > "$out/attach.rc"
cat "/proc/$stranger/cgroup" > "$out/stranger.cgroup"
cat "/proc/$root/cgroup" > "$out/root.cgroup"
touch "$out/done"
exec sleep 600
"#;

/// Whether reeve (built with this test) has the pause hook.
const HOOKS: bool = cfg!(feature = "test-hooks");

/// What one recycling run saw.
struct Recycled {
    root: u32,
    victim: u32,
    stranger: u32,
    rc: String,
    out: String,
    err: String,
    stranger_cgroup: String,
    root_cgroup: String,
}

/// Runs [`RECYCLE_SCRIPT`] in a new pid namespace whose processes start in
/// `origin` (inside the test's subtree); the stranger starts in
/// `elsewhere`, so where it lands shows which cgroup reeve moved it to.
fn recycle(dir: &TempDir, sub: &Subtree, origin: &Path, elsewhere: &Path, mode: &str) -> Recycled {
    if !HOOKS {
        panic!("this test needs the pause hook: run it with `cargo test --features test-hooks`");
    }
    let cfg = cli_config(dir, sub);
    let out = dir.join(&format!("ns-{mode}"));
    fs::create_dir(&out).expect("mkdir out");
    let script = dir.join(&format!("recycle-{mode}.sh"));
    fs::write(&script, RECYCLE_SCRIPT).expect("write script");
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).expect("chmod script");
    let hook = out.join("hook");
    let mut procs = ProcGuard::new();
    // The shell joins `origin` before it becomes unshare, so every process
    // of the namespace starts inside the test's subtree.
    let args: [OsString; 9] = [
        "_".into(),
        origin.into(),
        script.clone().into(),
        REEVE.into(),
        cfg.into(),
        hook.into(),
        out.clone().into(),
        mode.into(),
        elsewhere.into(),
    ];
    let child = spawn_retry(
        Command::new("sh")
            .arg("-c")
            .arg(
                r#"echo $$ > "$1/cgroup.procs" && exec unshare --pid --fork --mount-proc sh "$2" "$3" "$4" "$5" "$6" "$7" "$8""#,
            )
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(out.join("ns.stderr")).expect("stderr file")),
    );
    procs.push(child);
    let ctx = || {
        format!(
            "--- script log:\n{}--- ns stderr:\n{}--- attach stdout:\n{}--- attach stderr:\n{}",
            read(&out.join("log")),
            read(&out.join("ns.stderr")),
            read(&out.join("attach.out")),
            read(&out.join("attach.err"))
        )
    };
    wait_file(&out.join("done"), Duration::from_secs(60), ctx);
    let num = |name: &str| -> u32 {
        read(&out.join(name))
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} is not a pid\n{}", ctx()))
    };
    let r = Recycled {
        root: num("root"),
        victim: num("victim"),
        stranger: num("stranger"),
        rc: read(&out.join("attach.rc")).trim().to_string(),
        out: read(&out.join("attach.out")),
        err: read(&out.join("attach.err")),
        stranger_cgroup: v2_line(&read(&out.join("stranger.cgroup"))),
        root_cgroup: v2_line(&read(&out.join("root.cgroup"))),
    };
    assert_eq!(
        r.stranger,
        r.victim,
        "the stranger did not get the victim's pid; the test could not recycle it\n{}",
        ctx()
    );
    r
}

#[test]
fn recycled_pid_is_never_left_in_the_group() {
    let sub = Subtree::new();
    let dir = TempDir::new("id-recycle");
    let origin = sub.make_group("origin");
    let elsewhere = sub.make_group("elsewhere");
    let r = recycle(&dir, &sub, &origin, &elsewhere, "single");
    let ctx = format!("rc={} stdout:\n{}stderr:\n{}", r.rc, r.out, r.err);
    // The stranger's own cgroup cannot be read after the write replaced
    // it: reeve moves it to the victim's origin, as documented.
    assert_eq!(
        r.stranger_cgroup,
        sub.rel(&origin),
        "the stranger lands in the victim's origin, not its own\n{ctx}"
    );
    assert_eq!(r.rc, "1", "the attach failed: its process ended\n{ctx}");
    assert!(
        r.err.contains("took its pid") && r.err.contains("moved back"),
        "the error says a stranger was moved back\n{ctx}"
    );
    assert!(
        procs_of(&sub.job("recycle")).is_empty(),
        "nothing is left in the group\n{ctx}"
    );
    assert!(
        record(&dir, "job.recycle").is_none(),
        "a group this attach created and left empty has no record\n{ctx}"
    );
}

#[test]
fn recycled_pid_in_a_family_is_moved_back_and_the_root_stays() {
    let sub = Subtree::new();
    let dir = TempDir::new("id-recycle-family");
    let origin = sub.make_group("origin");
    let elsewhere = sub.make_group("elsewhere");
    let r = recycle(&dir, &sub, &origin, &elsewhere, "family");
    let ctx = format!("rc={} stdout:\n{}stderr:\n{}", r.rc, r.out, r.err);
    let job = sub.rel(&sub.job("recycle"));
    assert_eq!(r.root_cgroup, job, "the family's root is attached\n{ctx}");
    assert_eq!(
        r.stranger_cgroup,
        sub.rel(&origin),
        "the stranger is not left in the group: it lands in the victim's origin, not its own\n{ctx}"
    );
    assert_eq!(r.rc, "0", "the root was attached\n{ctx}");
    let line = r
        .out
        .lines()
        .find(|l| l.starts_with(&format!("not moved: pid {}:", r.victim)))
        .unwrap_or_else(|| panic!("the report names the victim\n{ctx}"));
    assert!(line.contains("moved back"), "{line}");
    assert_eq!(procs_of(&sub.job("recycle")).len(), 1, "{ctx}");
    let rec = record(&dir, "job.recycle").expect("the job has a record");
    let members = rec["members"].as_array().expect("members");
    assert_eq!(members.len(), 1, "only the root is a member: {rec}");
    assert_eq!(members[0]["pid"], json!(r.root), "{rec}");
    assert!(rec.get("pending").is_none(), "no intent is left: {rec}");
}

/// Runs inside a pid namespace of its own, so that even a reeve that
/// failed to refuse would only ever move the test's own processes: its
/// pid 1 is this shell. Tries pid 1, reeve itself (the shell's pid after
/// exec) and reeve's parent.
const REFUSE_SCRIPT: &str = r#"
reeve=$1 cfg=$2 out=$3
"$reeve" attach --pid 1 --job nope --config "$cfg" 2> "$out/init.err"
echo $? > "$out/init.rc"
sh -c 'exec "$0" attach --pid $$ --job nope --config "$1"' "$reeve" "$cfg" 2> "$out/self.err"
echo $? > "$out/self.rc"
sh -c '"$0" attach --pid $$ --job nope --config "$1"; echo $? > "$2/parent.rc"' "$reeve" "$cfg" "$out" 2> "$out/parent.err"
touch "$out/done"
"#;

#[test]
fn attach_refuses_init_reeve_and_its_ancestors() {
    let sub = Subtree::new();
    let dir = TempDir::new("id-refuse");
    let cfg = cli_config(&dir, &sub);
    let origin = sub.make_group("origin");
    let out = dir.join("refuse");
    fs::create_dir(&out).expect("mkdir out");
    let script = dir.join("refuse.sh");
    fs::write(&script, REFUSE_SCRIPT).expect("write script");
    let mut procs = ProcGuard::new();
    let args: [OsString; 6] = [
        "_".into(),
        origin.clone().into(),
        script.into(),
        REEVE.into(),
        cfg.into(),
        out.clone().into(),
    ];
    procs.push(spawn_retry(
        Command::new("sh")
            .arg("-c")
            .arg(r#"echo $$ > "$1/cgroup.procs" && exec unshare --pid --fork --mount-proc sh "$2" "$3" "$4" "$5""#)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(out.join("ns.stderr")).expect("stderr file")),
    ));
    wait_file(&out.join("done"), WAIT, || read(&out.join("ns.stderr")));
    for (case, why) in [
        ("init", "pid 1"),
        ("self", "reeve itself"),
        ("parent", "ancestor of reeve"),
    ] {
        let rc = read(&out.join(format!("{case}.rc")));
        let err = read(&out.join(format!("{case}.err")));
        assert_eq!(rc.trim(), "1", "{case}: exit status; stderr: {err}");
        assert!(
            err.contains("refusing") && err.contains(why),
            "{case}: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{case}: one line: {err}");
    }
    assert!(
        sub.managed_groups().is_empty(),
        "{:?}",
        sub.managed_groups()
    );
}

/// `reeve attach --pid PID ARGS...` with the test's config; its output.
fn attach(cfg: &Path, pid: u32, args: &[&str]) -> std::process::Output {
    let pid = pid.to_string();
    let cfg = cfg.to_str().expect("utf-8 path");
    let mut all = vec!["attach", "--pid", pid.as_str(), "--config", cfg];
    all.extend_from_slice(args);
    reeve(&all)
}

/// A `sleep` of the test's own.
fn sleeper(procs: &mut ProcGuard) -> u32 {
    procs.push(spawn_retry(
        Command::new("sleep")
            .arg("60")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    ))
}

#[test]
fn daemon_defers_attach_while_a_command_holds_the_records_lock() {
    let sub = Subtree::new();
    let dir = TempDir::new("id-lock");
    let mut procs = ProcGuard::new();
    let target = Target::new(dir.path());
    let cfg = watch_config(&dir, &sub, "lock", &target.name, json!({"pool": "lock"}));
    let mut d = Daemon::start(&cfg, dir.path());
    d.wait_started();
    let lock = PathBuf::from(state_dir(&dir)).join("jobs/.lock");
    let held = dir.join("held");
    // Another process holds jobs/.lock for 4 s, as a slow or suspended
    // `reeve attach` would.
    let holder = procs.push(spawn_retry(
        Command::new("flock")
            .arg("-x")
            .arg(&lock)
            .args(["sh", "-c", "touch \"$0\"; sleep 4"])
            .arg(&held)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    ));
    wait_file(&held, WAIT, || d.log_tail());
    let since = Instant::now();
    let first = target.spawn(&mut procs, "60");
    d.wait_event("discovered", first, Duration::from_secs(2));
    thread::sleep(Duration::from_millis(300));
    let second = target.spawn(&mut procs, "60");
    // Discovery goes on while the lock is held; the attach waits queued.
    d.wait_event("discovered", second, Duration::from_secs(2));
    d.wait_event("attach_deferred", first, Duration::from_secs(1));
    assert!(
        since.elapsed() < Duration::from_millis(3500),
        "discovery kept pace while the lock was held ({:?})",
        since.elapsed()
    );
    assert_eq!(d.count("attached"), 0, "nothing attached under a held lock");
    assert!(alive_child(holder), "the lock is still held");
    // Released: both land, in order, on a later wakeup.
    procs.wait_exit(holder, Duration::from_secs(10));
    d.wait_event("attached", first, WAIT);
    d.wait_event("attached", second, WAIT);
    let pool = sub.pool("lock");
    assert_eq!(cgroup_of(first.pid), Some(sub.rel(&pool)));
    assert_eq!(cgroup_of(second.pid), Some(sub.rel(&pool)));
    // Held again, with an attach queued behind it: SIGTERM is served
    // within one scan interval (200 ms) while the lock is still held.
    let held = dir.join("held-again");
    let holder = procs.push(spawn_retry(
        Command::new("flock")
            .arg("-x")
            .arg(&lock)
            .args(["sh", "-c", "touch \"$0\"; sleep 3"])
            .arg(&held)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    ));
    wait_file(&held, WAIT, || d.log_tail());
    let third = target.spawn(&mut procs, "60");
    d.wait_event("attach_deferred", third, WAIT);
    let asked = Instant::now();
    d.stop();
    let served = asked.elapsed();
    assert!(alive_child(holder), "the lock was still held at the exit");
    assert!(
        served < Duration::from_millis(200),
        "SIGTERM served in {served:?}, over one scan interval, under a held lock\n{}",
        d.log_tail()
    );
    d.stop_ok();
    procs.wait_exit(holder, Duration::from_secs(10));
}

/// Whether `pid` (a child of the test) has not exited.
fn alive_child(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        let state = s.rsplit_once(')').map(|(_, r)| r.trim_start());
        !state.is_some_and(|r| r.starts_with('Z'))
    })
}

#[test]
fn pool_record_drops_members_that_ended() {
    let sub = Subtree::new();
    let dir = TempDir::new("id-prune");
    let cfg = cli_config(&dir, &sub);
    let mut procs = ProcGuard::new();
    let first = sleeper(&mut procs);
    let out = attach(&cfg, first, &["--pool", "prune"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    procs.kill(first);
    let second = sleeper(&mut procs);
    let out = attach(&cfg, second, &["--pool", "prune"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let rec = record(&dir, "pool.prune").expect("pool record");
    let pids: Vec<u64> = rec["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(|m| m["pid"].as_u64())
        .collect();
    assert_eq!(pids, vec![u64::from(second)], "{rec}");
}

#[test]
fn attach_to_a_pool_without_limits_keeps_its_limits() {
    let sub = Subtree::new();
    let dir = TempDir::new("id-keep");
    let cfg = cli_config(&dir, &sub);
    let mut procs = ProcGuard::new();
    let first = sleeper(&mut procs);
    // No controllers on this host: the limit is not in force, and the
    // record says so (it holds what the kernel enforces, read back; the
    // fixture tests in src/ prove the kept budget with limit files).
    let out = attach(&cfg, first, &["--pool", "keep", "--pids", "50"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let before = record(&dir, "pool.keep").expect("pool record");
    assert_eq!(before["in_force"], json!(false), "{before}");
    let second = sleeper(&mut procs);
    let out = attach(&cfg, second, &["--pool", "keep"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let after = record(&dir, "pool.keep").expect("pool record");
    assert_eq!(
        after["limits"], before["limits"],
        "an attach without limits keeps the pool's"
    );
    assert_eq!(cgroup_of(second), Some(sub.rel(&sub.pool("keep"))));
}

#[test]
fn unreadable_released_list_stops_auto_attach() {
    let sub = Subtree::new();
    let dir = TempDir::new("id-released");
    let mut procs = ProcGuard::new();
    let target = Target::new(dir.path());
    let cfg = watch_config(&dir, &sub, "rel", &target.name, json!({"pool": "rel"}));
    let jobs = PathBuf::from(state_dir(&dir)).join("jobs");
    fs::create_dir(&jobs).expect("mkdir jobs");
    fs::set_permissions(&jobs, fs::Permissions::from_mode(0o700)).expect("chmod jobs");
    let released = jobs.join("released.json");
    fs::write(&released, "[{\"pid\": 12, \"start_ti").expect("write released.json");
    let mut d = Daemon::start(&cfg, dir.path());
    d.wait_started();
    let id = target.spawn(&mut procs, "60");
    let ev = d.wait_for("released_unreadable", WAIT, |v| {
        event_name(v) == "released_unreadable"
    });
    assert!(
        ev.to_string().contains("released.json"),
        "the event names the file: {ev}"
    );
    d.wait_scans(3, WAIT);
    assert_eq!(d.count("attached"), 0, "{}", d.log_tail());
    assert_eq!(
        d.count("released_unreadable"),
        1,
        "said once per failure run"
    );
    assert_ne!(cgroup_of(id.pid), Some(sub.rel(&sub.pool("rel"))));
    // Repaired: the queued attach goes through on a later wakeup.
    fs::write(&released, "[]").expect("repair released.json");
    d.wait_event("attached", id, WAIT);
    assert_eq!(cgroup_of(id.pid), Some(sub.rel(&sub.pool("rel"))));
    d.stop_ok();
}

#[test]
fn attach_moves_nothing_when_its_intent_cannot_be_written() {
    let sub = Subtree::new();
    let dir = TempDir::new("id-ahead");
    let cfg = cli_config(&dir, &sub);
    let mut procs = ProcGuard::new();
    let origin = sub.make_group("origin");
    let pid = sleeper(&mut procs);
    sub.move_into(&origin, pid);
    // A full disk under the state directory, in a private mount namespace
    // (the tmpfs vanishes with it): the job record cannot be written.
    let state = state_dir(&dir);
    let rc = dir.join("attach.rc");
    let script = r#"
mount -t tmpfs -o size=256k,mode=0700 reeve-test "$1" || exit 90
mkdir -m 700 "$1/jobs" || exit 91
dd if=/dev/zero of="$1/fill" bs=4k 2>/dev/null
"$2" attach --pid "$3" --job ahead --config "$4"
echo $? > "$5"
"#;
    let out = run_with_timeout(
        Command::new("unshare")
            .args(["--mount", "sh", "-c", script, "_"])
            .arg(&state)
            .arg(REEVE)
            .arg(pid.to_string())
            .arg(&cfg)
            .arg(&rc),
        WAIT,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        cgroup_of(pid),
        Some(sub.rel(&origin)),
        "the process stays where it was: {err}"
    );
    assert!(procs_of(&sub.job("ahead")).is_empty(), "{err}");
    assert_eq!(read(&rc).trim(), "1", "{out:?}");
    assert!(err.contains("nothing was moved"), "{err}");
}

#[test]
fn detach_moves_nothing_back_when_its_intent_cannot_be_written() {
    let sub = Subtree::new();
    let dir = TempDir::new("id-detach-ahead");
    let cfg = cli_config(&dir, &sub);
    let mut procs = ProcGuard::new();
    let origin = sub.make_group("origin");
    let pid = sleeper(&mut procs);
    sub.move_into(&origin, pid);
    // Attached with room on the disk, then the disk fills (a tmpfs in a
    // private mount namespace) and detach runs.
    let state = state_dir(&dir);
    let rc = dir.join("rc");
    let script = r#"
mount -t tmpfs -o size=256k,mode=0700 reeve-test "$1" || exit 90
"$2" attach --pid "$3" --job back --config "$4" > /dev/null || exit 92
dd if=/dev/zero of="$1/fill" bs=4k 2>/dev/null
"$2" detach --job back --config "$4"
echo $? > "$5"
"#;
    let out = run_with_timeout(
        Command::new("unshare")
            .args(["--mount", "sh", "-c", script, "_"])
            .arg(&state)
            .arg(REEVE)
            .arg(pid.to_string())
            .arg(&cfg)
            .arg(&rc),
        WAIT,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        cgroup_of(pid),
        Some(sub.rel(&sub.job("back"))),
        "the process stays in its group, as its record says: {out:?}"
    );
    assert_eq!(read(&rc).trim(), "1", "{out:?}");
    assert!(err.contains("nothing was moved"), "{err}");
}

#[test]
fn run_starts_nothing_when_its_intent_cannot_be_written() {
    let sub = Subtree::new();
    let dir = TempDir::new("id-run-ahead");
    let cfg = cli_config(&dir, &sub);
    // A full disk under the state directory, in a private mount namespace
    // (the tmpfs vanishes with it): the run's intent cannot be written.
    let state = state_dir(&dir);
    let rc = dir.join("run.rc");
    let started = dir.join("started");
    let script = r#"
mount -t tmpfs -o size=256k,mode=0700 reeve-test "$1" || exit 90
mkdir -m 700 "$1/jobs" || exit 91
dd if=/dev/zero of="$1/fill" bs=4k 2>/dev/null
"$2" run --job ahead --config "$3" -- touch "$4"
echo $? > "$5"
"#;
    let out = run_with_timeout(
        Command::new("unshare")
            .args(["--mount", "sh", "-c", script, "_"])
            .arg(&state)
            .arg(REEVE)
            .arg(&cfg)
            .arg(&started)
            .arg(&rc),
        WAIT,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(read(&rc).trim(), "1", "{out:?}");
    assert!(!started.exists(), "the command must not start: {err}");
    assert!(err.contains("was not started"), "{err}");
    assert!(
        !sub.job("ahead").exists(),
        "the group this run created is removed: {err}"
    );
}

#[test]
fn run_intent_left_by_a_crash_is_settled_from_the_group() {
    let sub = Subtree::new();
    let dir = TempDir::new("id-run-settle");
    let cfg = cli_config(&dir, &sub);
    let mut procs = ProcGuard::new();
    let origin = sub.make_group("origin");
    let first = sleeper(&mut procs);
    let out = attach(&cfg, first, &["--pool", "crash"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    // A `reeve run` that died between its child joining the pool and its
    // record: the record names only the run, the child is in the group.
    let child = sleeper(&mut procs);
    let pool = sub.pool("crash");
    sub.move_into(&pool, child);
    let path = PathBuf::from(state_dir(&dir)).join("jobs/pool.crash.json");
    let mut rec = record(&dir, "pool.crash").expect("pool record");
    rec["pending_runs"] = json!([{
        "pid": 999_999, "start_ticks": 0, "from": origin, "to": pool,
    }]);
    fs::write(&path, rec.to_string()).expect("write record");
    let third = sleeper(&mut procs);
    let out = attach(&cfg, third, &["--pool", "crash"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let rec = record(&dir, "pool.crash").expect("pool record");
    let member = rec["members"]
        .as_array()
        .expect("members")
        .iter()
        .find(|m| m["pid"] == json!(child))
        .unwrap_or_else(|| panic!("the run's child is a member: {rec}"));
    assert_eq!(member["original_cgroup"], json!(origin), "{rec}");
    assert!(rec.get("pending_runs").is_none(), "settled: {rec}");
}

#[test]
fn fifos_in_the_jobs_directory_block_neither_attach_nor_the_daemon() {
    let sub = Subtree::new();
    let dir = TempDir::new("id-fifo");
    let mut procs = ProcGuard::new();
    let jobs = PathBuf::from(state_dir(&dir)).join("jobs");
    fs::create_dir_all(&jobs).expect("mkdir jobs");
    fs::set_permissions(
        jobs.parent().expect("state"),
        fs::Permissions::from_mode(0o700),
    )
    .expect("chmod state");
    fs::set_permissions(&jobs, fs::Permissions::from_mode(0o700)).expect("chmod jobs");
    for name in [".lock", "released.json"] {
        let st = Command::new("mkfifo")
            .arg(jobs.join(name))
            .status()
            .expect("mkfifo");
        assert!(st.success(), "mkfifo {name}");
    }
    // `reeve attach`: refused at once (run_with_timeout kills it by pid
    // and fails the test if it blocks).
    let cfg = cli_config(&dir, &sub);
    let pid = sleeper(&mut procs);
    let out = attach(&cfg, pid, &["--job", "fifo"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        err.contains(".lock") && err.contains("not a regular file"),
        "{err}"
    );
    // The daemon: the attach fails and is said; SIGTERM is still served.
    let target = Target::new(dir.path());
    let cfg = watch_config(&dir, &sub, "fifo", &target.name, json!({"pool": "fifo"}));
    let mut d = Daemon::start(&cfg, dir.path());
    d.wait_started();
    let id = target.spawn(&mut procs, "60");
    let ev = d.wait_event("attach_failed", id, WAIT);
    assert!(ev.to_string().contains("not a regular file"), "{ev}");
    d.stop_ok();
}

/// A python3 whose main thread exits (pthread_exit) while another thread
/// runs: its leader is a zombie, the process lives on.
const LEADER_EXITS: &str = r#"
import ctypes, threading, time
threading.Thread(target=lambda: time.sleep(60)).start()
time.sleep(0.1)
ctypes.CDLL(None).pthread_exit(None)
"#;

#[test]
fn attach_moves_a_process_whose_leader_thread_exited() {
    let has_python = Command::new("python3")
        .args(["-c", ""])
        .status()
        .is_ok_and(|s| s.success());
    if !require(has_python, "needs python3 to make a leader thread exit") {
        return;
    }
    let sub = Subtree::new();
    let dir = TempDir::new("id-leader");
    let cfg = cli_config(&dir, &sub);
    let mut procs = ProcGuard::new();
    let pid = procs.push(spawn_retry(
        Command::new("python3")
            .args(["-c", LEADER_EXITS])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    ));
    let status = format!("/proc/{pid}/status");
    let deadline = Instant::now() + WAIT;
    while !read(Path::new(&status)).contains("State:\tZ") {
        assert!(Instant::now() < deadline, "{}", read(Path::new(&status)));
        thread::sleep(Duration::from_millis(10));
    }
    assert!(read(Path::new(&status)).contains("Threads:\t2"));
    let out = attach(&cfg, pid, &["--job", "leader"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "a live process is moved: {out:?}"
    );
    // The kernel moves the live threads; the exited leader's own
    // /proc/<pid>/cgroup keeps the old group, so the threads are checked.
    let job = sub.rel(&sub.job("leader"));
    let mut live = 0;
    for t in fs::read_dir(format!("/proc/{pid}/task")).expect("tasks") {
        let t = t.expect("task").path();
        if read(&t.join("status")).contains("State:\tZ") {
            continue;
        }
        live += 1;
        assert_eq!(v2_line(&read(&t.join("cgroup"))), job, "{}", t.display());
    }
    assert_eq!(live, 1, "one live thread");
    procs.kill(pid);
}
