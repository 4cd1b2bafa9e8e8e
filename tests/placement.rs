//! The daemon's placements into a pool, as an operator sees them across a
//! crash and over time: a reeve killed between the written-ahead intent
//! and the move's confirmation is reconciled on restart from what the
//! kernel shows; a daemon that cannot append a move's intent (a full disk)
//! moves nothing; a pool that thousand processes passed through keeps a
//! bounded number of bytes on disk; `reeve status` shows the members the
//! daemon placed.
//!
//! Every test works in its own cgroup v2 subtree ([`Subtree`]) and only on
//! processes it started (copies of sleep under a unique name). The crash
//! test needs a reeve built with `--features test-hooks` (the pause before
//! a move); without it, it fails, it does not skip.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::cgroup::*;
use common::*;
use serde_json::{json, Value};

/// A watch config whose one rule sends processes named `name` to pool `pool`.
fn pool_config(dir: &TempDir, sub: &Subtree, name: &str, pool: &str) -> PathBuf {
    let mut cfg = config_for(dir, "place", name, None, "auto", "200ms");
    cfg["targets"][0]["pool"] = json!(pool);
    cfg["cgroup"] = json!({"root": sub.root()});
    write_config(dir.path(), &cfg)
}

/// The pool's entry in `reeve status --json`.
fn status_job(cfg: &Path, group: &str) -> Value {
    let out = reeve(&["status", "--json", "--config", cfg.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).expect("status is JSON");
    v["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .find(|j| j["group"] == json!(group))
        .cloned()
        .unwrap_or_else(|| panic!("no {group} in {v}"))
}

fn member_pids(job: &Value) -> Vec<u64> {
    job["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(|m| m["pid"].as_u64())
        .collect()
}

fn wait_path(path: &Path, d: &mut Daemon) {
    let deadline = Instant::now() + WAIT;
    while !path.exists() {
        assert!(Instant::now() < deadline, "{path:?}\n{}", d.log_tail());
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn restart_after_a_kill_between_intent_and_confirmation_reconciles() {
    if !cfg!(feature = "test-hooks") {
        panic!("needs reeve built with --features test-hooks (the pause before a move)");
    }
    let sub = Subtree::new();
    let dir = TempDir::new("place-crash");
    let mut procs = ProcGuard::new();
    let target = Target::new(dir.path());
    let cfg = pool_config(&dir, &sub, &target.name, "crash");
    let hook = dir.join("hook");
    // Only this test's daemons see the hook armed (the .arm file is the
    // test's own), so other tests in this binary are not paused.
    std::env::set_var(
        "REEVE_TEST_PAUSE_BEFORE_MOVE",
        format!("*:{}", hook.display()),
    );
    let mut d = Daemon::start(&cfg, dir.path());
    d.wait_started();
    // The first member prepares the pool and writes its record.
    let first = target.spawn(&mut procs, "60");
    d.wait_event("attached", first, WAIT);
    // The second joins through the journal: its intent is appended, and
    // the daemon is held before its cgroup.procs write.
    fs::write(hook.with_extension("arm"), "").expect("arm the hook");
    let second = target.spawn(&mut procs, "60");
    wait_path(&hook.with_extension("paused"), &mut d);
    assert_eq!(
        fs::read_to_string(hook.with_extension("paused")).expect("paused"),
        second.pid.to_string()
    );
    let from = cgroup_of(second.pid).expect("cgroup of the second");
    d.stop_with(libc::SIGKILL);
    let journal = PathBuf::from(state_dir(&dir)).join("jobs/pool.crash.journal");
    let text = fs::read_to_string(&journal).expect("the journal holds the intent");
    let pid = second.pid.to_string();
    assert!(
        text.lines()
            .any(|l| l.contains("\"intent\"") && l.contains(&pid)),
        "{text}"
    );
    assert!(
        !text
            .lines()
            .any(|l| l.contains("\"member\"") && l.contains(&pid)),
        "no confirmation: {text}"
    );
    // Folded by a reader, the intent shows as pending, not as a member.
    let job = status_job(&cfg, "pool.crash");
    assert!(!member_pids(&job).contains(&u64::from(second.pid)), "{job}");
    // The write lands (as the kernel takes a write that reeve issued just
    // before it died), and reeve restarts without the hook.
    let pool = sub.pool("crash");
    sub.move_into(&pool, second.pid);
    std::env::remove_var("REEVE_TEST_PAUSE_BEFORE_MOVE");
    let mut d = Daemon::start(&cfg, dir.path());
    d.wait_started();
    d.wait_event("adopted", second, WAIT);
    let job = status_job(&cfg, "pool.crash");
    let pids = member_pids(&job);
    assert!(pids.contains(&u64::from(second.pid)), "{job}");
    assert!(pids.contains(&u64::from(first.pid)), "{job}");
    assert_eq!(job["pending"], json!([]), "settled: {job}");
    let m = job["members"]
        .as_array()
        .expect("members")
        .iter()
        .find(|m| m["pid"] == json!(second.pid))
        .expect("second is a member");
    let original = m["original_cgroup"].as_str().expect("original_cgroup");
    assert_eq!(
        sub.rel(Path::new(original)),
        from,
        "the origin the intent named"
    );
    // Folded into the record and the journal emptied.
    assert_eq!(fs::metadata(&journal).map_or(0, |m| m.len()), 0);
    d.stop_ok();
}

#[test]
fn pool_bytes_on_disk_stay_bounded_over_a_thousand_members() {
    let sub = Subtree::new();
    let dir = TempDir::new("place-bound");
    let mut procs = ProcGuard::new();
    let target = Target::new(dir.path());
    let cfg = pool_config(&dir, &sub, &target.name, "churn");
    let mut d = Daemon::start(&cfg, dir.path());
    d.wait_started();
    let jobs = PathBuf::from(state_dir(&dir)).join("jobs");
    let bytes = || -> u64 {
        ["pool.churn.json", "pool.churn.journal"]
            .iter()
            .map(|f| fs::metadata(jobs.join(f)).map_or(0, |m| m.len()))
            .sum()
    };
    let mut most = 0;
    for _ in 0..20 {
        let batch: Vec<Ident> = (0..50).map(|_| target.spawn(&mut procs, "0.3")).collect();
        for id in &batch {
            d.wait_event("attached", *id, WAIT);
        }
        for id in &batch {
            procs.wait_exit(id.pid, WAIT);
        }
        most = most.max(bytes());
    }
    assert_eq!(d.count("attached"), 1000, "{}", d.log_tail());
    // The journal is folded past 64 KiB; what is left is a record of the
    // living members (none by now) and a journal under the bound plus one
    // wakeup's appends.
    assert!(most < 96 * 1024, "at most {most} bytes");
    let job = status_job(&cfg, "pool.churn");
    assert!(member_pids(&job).len() <= 1000, "{job}");
    d.stop_ok();
}

/// Runs in a private mount namespace: the state directory is a small
/// tmpfs (gone with the namespace), the daemon places a first target,
/// the disk fills (the pool's journal padded to a page boundary so its
/// next line needs a new page), and a second target comes.
const FULL_SCRIPT: &str = r#"
state=$1 reeve=$2 cfg=$3 target=$4 out=$5
mount -t tmpfs -o size=512k,mode=0700 reeve-test "$state" || exit 90
"$reeve" watch --config "$cfg" --log-format json 2> "$out/log" &
d=$!
wait_for() {
    n=0
    until grep "$1" "$out/log" | grep -q "$2"; do
        n=$((n + 1))
        if [ $n -gt 2000 ]; then echo "timed out waiting for $1 $2" > "$out/err"; kill -KILL $d; exit 3; fi
        sleep 0.01
    done
}
wait_for '"started"' '"pid"'
"$target" 60 &
a=$!
echo $a > "$out/a"
wait_for '"attached"' "\"pid\":$a,"
j="$state/jobs/pool.full.journal"
size=$(stat -c %s "$j")
pad=$(( (4096 - size % 4096) % 4096 ))
if [ $pad -gt 0 ]; then head -c $((pad - 1)) /dev/zero | tr '\0' ' ' >> "$j"; echo >> "$j"; fi
dd if=/dev/zero of="$state/fill" bs=4k 2>/dev/null
"$target" 60 &
b=$!
echo $b > "$out/b"
wait_for '"attach_failed"' "\"pid\":$b,"
cat "/proc/$b/cgroup" > "$out/b.cgroup"
cp "$j" "$out/journal"
kill -TERM $d
wait $d
kill -KILL $a $b
touch "$out/done"
"#;

#[test]
fn daemon_moves_nothing_when_the_intent_cannot_be_appended() {
    let sub = Subtree::new();
    let dir = TempDir::new("place-full");
    let target = Target::new(dir.path());
    let cfg = pool_config(&dir, &sub, &target.name, "full");
    let out = dir.join("out");
    fs::create_dir(&out).expect("mkdir out");
    let run = run_with_timeout(
        std::process::Command::new("unshare")
            .args(["--mount", "sh", "-c", FULL_SCRIPT, "_"])
            .arg(state_dir(&dir))
            .arg(REEVE)
            .arg(&cfg)
            .arg(&target.path)
            .arg(&out),
        Duration::from_secs(60),
    );
    let log = fs::read_to_string(out.join("log")).unwrap_or_default();
    assert!(out.join("done").exists(), "{run:?}\n{log}");
    let b: u32 = fs::read_to_string(out.join("b"))
        .expect("b")
        .trim()
        .parse()
        .expect("pid");
    let failed = log
        .lines()
        .find(|l| l.contains("\"attach_failed\"") && l.contains(&format!("\"pid\":{b},")))
        .expect("attach_failed for the second target");
    assert!(failed.contains("nothing was moved"), "{failed}");
    let cg = fs::read_to_string(out.join("b.cgroup")).expect("b.cgroup");
    assert!(!cg.contains("pool.full"), "stays where it was: {cg}");
    let journal = fs::read_to_string(out.join("journal")).expect("journal");
    assert!(!journal.contains(&format!("\"pid\":{b},")), "{journal}");
}
