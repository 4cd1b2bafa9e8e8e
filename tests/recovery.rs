//! Liveness and recovery as an operator sees them from `reeve watch`: a
//! real ffmpeg stuck on a FIFO nobody writes is found stalled by the
//! progress watchdog within its threshold plus one sampling period and
//! ended by the rule's signal action; an action never reaches a process
//! that took a recycled pid; the restart-loop guard stops acting on a job
//! that keeps ending, and says so.
//!
//! `kill_job` is driven through the library on a group of the test's own
//! cgroup v2 subtree.
//!
//! Every daemon matches only this test's own processes (copies of ffmpeg
//! and sleep under unique names). The recycling test runs reeve and its
//! processes in a new pid namespace (`unshare --pid --fork --mount-proc`)
//! and needs a reeve built with `--features test-hooks` (the pause between
//! a signal's identity check and its send); without it it fails, it does
//! not skip.

mod common;

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// The progress watchdog's sampling tick (src/liveness/progress.rs).
const TICK_MS: u64 = 250;

fn ts(v: &Value) -> u64 {
    v["ts_ms"].as_u64().expect("ts_ms")
}

#[test]
fn a_real_ffmpeg_blocked_on_a_silent_fifo_is_stalled_and_ended_by_its_action() {
    let ffmpeg = Path::new("/usr/bin/ffmpeg");
    require(
        ffmpeg.exists(),
        "ffmpeg is not installed (apt-get install ffmpeg)",
    );
    let dir = TempDir::new("recovery-ffmpeg");
    let name = unique_name();
    let exe = dir.join(&name);
    copy_exe(ffmpeg, &exe);
    let fifo = dir.join("input.fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    let mut config = config_for(&dir, "encoder", &name, None, "auto", "100ms");
    config["targets"][0]["stall_after"] = json!("2s");
    config["targets"][0]["on_stall"] = json!({"signal": "TERM", "then": "KILL", "grace": "3s"});
    let cfg = write_config(dir.path(), &config);
    let mut reeve = Daemon::start(&cfg, dir.path());
    reeve.wait_started();
    let mut procs = ProcGuard::new();
    let child = spawn_retry(
        Command::new(&exe)
            .args(["-nostdin", "-hide_banner", "-loglevel", "error"])
            .args(["-f", "rawvideo", "-pix_fmt", "gray", "-s", "16x16", "-i"])
            .arg(&fifo)
            .args(["-f", "null", "-"])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let pid = procs.push(child);
    let start_ticks = read_start_ticks(pid).expect("stat of ffmpeg");
    let ident = Ident { pid, start_ticks };
    let found = reeve.wait_event("discovered", ident, WAIT);
    let stalled = reeve.wait_event("stalled", ident, Duration::from_secs(10));
    assert_eq!(stalled["cause"], "no_progress");
    assert_eq!(stalled["stall_after_ms"], 2000);
    let idle = stalled["idle_ms"].as_u64().unwrap();
    assert!(idle >= 2000, "{stalled}");
    // Watched from discovery: the baseline sample comes within one tick,
    // the verdict within one more (one process: a round is one tick).
    let latency = ts(&stalled) - ts(&found);
    assert!(
        latency <= 2000 + 2 * TICK_MS + 250,
        "stalled {latency} ms after discovery (threshold 2000 ms)\n{}",
        reeve.log_tail()
    );
    assert_eq!(
        reeve.about("stalled", ident),
        1,
        "one stalled per stall run"
    );
    let taken = reeve.wait_event("action_taken", ident, WAIT);
    assert_eq!(taken["signal"], "TERM");
    assert_eq!(taken["via"], "pidfd");
    assert_eq!(taken["trigger"], "stalled");
    // ffmpeg asks TERM to stop it cleanly, but its open() of the FIFO
    // restarts; the escalation ends it.
    let status = procs
        .wait_exit(pid, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("ffmpeg still runs\n{}", reeve.log_tail()));
    use std::os::unix::process::ExitStatusExt;
    assert!(
        matches!(status.signal(), Some(libc::SIGTERM | libc::SIGKILL)) || status.code().is_some(),
        "{status:?}"
    );
    reeve.wait_event("exited", ident, WAIT);
    reeve.stop_ok();
}

/// Runs inside the pid namespace (as its pid 1): starts the victim, then
/// reeve paused between the identity check of its signal and the send;
/// kills and reaps the victim, makes the next pid the victim's, starts a
/// stranger that takes it, lets reeve go on, and records what it sees.
const RECYCLE_SCRIPT: &str = r#"
reeve=$1 cfg=$2 hook=$3 out=$4 victim_exe=$5 stranger_exe=$6
wait_file() {
    n=0
    while [ ! -e "$1" ]; do
        n=$((n + 1))
        if [ $n -gt 3000 ]; then echo "timed out waiting for $1" >> "$out/log"; exit 3; fi
        sleep 0.01
    done
}
"$victim_exe" 600 &
victim=$!
echo "$victim" > "$out/victim"
REEVE_TEST_PAUSE_BEFORE_SIGNAL="$hook" "$reeve" watch --config "$cfg" \
    --log-format json --log-level debug 2> "$out/reeve.log" &
reeve_pid=$!
wait_file "$hook.paused"
kill -KILL "$victim"
wait "$victim"
echo $((victim - 1)) > /proc/sys/kernel/ns_last_pid
"$stranger_exe" 600 &
stranger=$!
echo "$stranger" > "$out/stranger"
touch "$hook.go"
# Longer than the rule's escalation grace: any signal would have landed.
sleep 3
if kill -0 "$stranger" 2>/dev/null; then echo alive > "$out/stranger.state"; fi
grep -E '^(State|SigPnd|ShdPnd):' "/proc/$stranger/status" > "$out/stranger.status"
kill -TERM "$reeve_pid"
wait "$reeve_pid"
echo $? > "$out/reeve.rc"
touch "$out/done"
"#;

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn an_action_never_reaches_a_process_that_took_a_recycled_pid() {
    if !cfg!(feature = "test-hooks") {
        panic!("this test needs the pause hook: run it with `cargo test --features test-hooks`");
    }
    let dir = TempDir::new("recovery-recycle");
    let victim = Target::new(dir.path());
    let stranger = Target::with_name(dir.path(), &format!("stranger-{}", random_hex16()));
    let mut config = config_for(&dir, "victims", &victim.name, None, "poll", "100ms");
    config["targets"][0]["stall_after"] = json!("1s");
    config["targets"][0]["on_stall"] = json!({"signal": "TERM", "then": "KILL", "grace": "1s"});
    let cfg = write_config(dir.path(), &config);
    let out = dir.join("ns");
    fs::create_dir(&out).expect("mkdir out");
    let script = dir.join("recycle.sh");
    fs::write(&script, RECYCLE_SCRIPT).expect("write script");
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).expect("chmod");
    let hook: PathBuf = out.join("hook");
    let args: [OsString; 7] = [
        script.clone().into(),
        REEVE.into(),
        cfg.into(),
        hook.into(),
        out.clone().into(),
        victim.path.clone().into(),
        stranger.path.clone().into(),
    ];
    let mut procs = ProcGuard::new();
    procs.push(spawn_retry(
        Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc", "sh"])
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(out.join("ns.stderr")).expect("stderr file")),
    ));
    let ctx = || {
        format!(
            "--- script log:\n{}--- ns stderr:\n{}--- reeve log:\n{}",
            read(&out.join("log")),
            read(&out.join("ns.stderr")),
            log_tail_of(&out.join("reeve.log"))
        )
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !out.join("done").exists() {
        assert!(
            Instant::now() < deadline,
            "the namespace did not finish\n{}",
            ctx()
        );
        thread::sleep(Duration::from_millis(20));
    }
    let victim_pid = read(&out.join("victim")).trim().to_string();
    let victim_num: u64 = victim_pid.parse().unwrap_or(0);
    let stranger_pid = read(&out.join("stranger")).trim().to_string();
    assert_eq!(
        victim_pid,
        stranger_pid,
        "the stranger did not get the victim's pid; the test could not recycle it\n{}",
        ctx()
    );
    assert_eq!(
        read(&out.join("stranger.state")).trim(),
        "alive",
        "the stranger died\n{}",
        ctx()
    );
    let status = read(&out.join("stranger.status"));
    for line in status
        .lines()
        .filter(|l| l.starts_with("SigPnd") || l.starts_with("ShdPnd"))
    {
        let mask = line.split_whitespace().nth(1).unwrap_or("");
        assert!(
            mask.chars().all(|c| c == '0'),
            "a signal is pending: {status}\n{}",
            ctx()
        );
    }
    let events = json_lines(read(&out.join("reeve.log")).as_bytes());
    let about = |name: &str| -> Vec<&Value> {
        events
            .iter()
            .filter(|v| event_name(v) == name && v["pid"] == victim_num)
            .collect()
    };
    assert_eq!(about("stalled").len(), 1, "{}", ctx());
    let refused = about("action_refused");
    assert_eq!(refused.len(), 1, "{}", ctx());
    assert_eq!(refused[0]["signal"], "TERM");
    assert!(
        refused[0]["reason"]
            .as_str()
            .unwrap()
            .contains("pid was reused"),
        "{}",
        ctx()
    );
    assert!(about("action_taken").is_empty(), "{}", ctx());
    assert!(about("action_escalated").is_empty(), "{}", ctx());
    assert_eq!(read(&out.join("reeve.rc")).trim(), "0", "{}", ctx());
}

#[test]
fn the_restart_loop_guard_stops_acting_on_a_job_that_keeps_ending() {
    let dir = TempDir::new("recovery-guard");
    let target = Target::new(dir.path());
    let marks = dir.join("hook-ran");
    let mut config = config_for(&dir, "crashy", &target.name, None, "auto", "50ms");
    config["targets"][0]["on_exit"] = json!({
        "exec": ["/bin/sh", "-c", "echo \"$1\" >> \"$0\"", marks.to_str().unwrap(), "{pid}"],
        "timeout": "5s",
    });
    config["targets"][0]["guard"] = json!({"max_actions": 2, "window": "10m", "debounce": "0s"});
    let cfg = write_config(dir.path(), &config);
    let mut reeve = Daemon::start(&cfg, dir.path());
    reeve.wait_started();
    let mut procs = ProcGuard::new();
    // A crash loop: the same program ends, is started again, ends again.
    for _ in 0..4 {
        let ident = target.spawn(&mut procs, "0.3");
        reeve.wait_event("discovered", ident, WAIT);
        reeve.wait_event("exited", ident, WAIT);
        procs.reap_exited();
    }
    reeve.wait_until("two hooks finished", WAIT, |d| {
        d.count("hook_finished") >= 2
    });
    let said = reeve.wait_for("actions_suppressed", WAIT, |v| {
        event_name(v) == "actions_suppressed" && v["level"] == "error"
    });
    assert_eq!(said["job"], "crashy");
    assert_eq!(said["max_actions"], 2);
    // Said once; the third and fourth exits are both suppressed.
    reeve.wait_until("both suppressed", WAIT, |d| {
        d.count("actions_suppressed") == 2
    });
    let loud = reeve
        .events()
        .iter()
        .filter(|v| event_name(v) == "actions_suppressed" && v["level"] == "error")
        .count();
    assert_eq!(loud, 1);
    assert_eq!(reeve.count("hook_finished"), 2);
    assert_eq!(read(&marks).lines().count(), 2, "{}", reeve.log_tail());
    reeve.stop_ok();
}

#[test]
fn check_config_shows_the_liveness_settings_and_names_a_bad_field() {
    let dir = TempDir::new("recovery-check");
    let mut config = config_for(&dir, "enc", "ffmpeg", None, "auto", "1s");
    config["targets"][0]["limits"] = json!({"pids": 64});
    config["targets"][0]["stall_after"] = json!("30s");
    config["targets"][0]["on_stall"] = json!({"signal": "TERM", "then": "KILL"});
    config["targets"][0]["on_exit"] = json!(["kill_job", {"exec": ["/bin/logger", "{job}"]}]);
    let cfg = write_config(dir.path(), &config);
    let out = reeve(&["check-config", cfg.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout).expect("check-config prints JSON");
    let rule = &printed["targets"][0];
    assert_eq!(rule["stall_after"], "30s");
    assert_eq!(
        rule["on_stall"],
        json!([{"signal": "TERM", "then": "KILL", "grace": "10s"}])
    );
    assert_eq!(
        rule["on_exit"],
        json!(["kill_job", {"exec": ["/bin/logger", "{job}"], "timeout": "10s"}])
    );
    assert_eq!(
        rule["guard"],
        json!({"max_actions": 5, "window": "10m", "debounce": "30s"})
    );
    config["targets"][0]["on_stall"] = json!({"signal": "TERM", "after": "1s"});
    let bad = write_config(dir.path(), &config);
    let out = reeve(&["check-config", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("targets[0].on_stall.after: unknown field"),
        "{err}"
    );
}

#[test]
fn kill_job_kills_every_process_of_the_job_group_and_nothing_else() {
    use reeve::config::{Action, Guard, LogFormat, LogLevel};
    use reeve::recovery::{Incident, Recovery};
    let sub = common::cgroup::Subtree::new();
    let group = sub.make_group("job.enc-kill");
    let outside = sub.make_group("elsewhere");
    let mut procs = ProcGuard::new();
    let dir = TempDir::new("recovery-killjob");
    let target = Target::new(dir.path());
    let members = [
        target.spawn(&mut procs, "300"),
        target.spawn(&mut procs, "300"),
    ];
    let bystander = target.spawn(&mut procs, "300");
    for m in &members {
        sub.move_into(&group, m.pid);
    }
    sub.move_into(&outside, bystander.pid);
    let mut reader = reeve::procfs::ProcReader::open().expect("open /proc");
    let mut log = reeve::log::Logger::new(LogFormat::Json, LogLevel::Error);
    let mut r = Recovery::new();
    let inc = Incident {
        key: reeve::procfs::ProcKey {
            pid: members[0].pid,
            start_ticks: members[0].start_ticks,
        },
        rule: "enc",
        job: "job.enc-kill",
        group: Some(&group),
        event: "stalled",
    };
    r.act(
        &inc,
        &[Action::KillJob],
        &Guard::default(),
        1,
        &mut reader,
        &mut log,
    );
    assert_eq!(r.stats().actions[2], [1, 0, 0, 0], "kill_job done once");
    use std::os::unix::process::ExitStatusExt;
    for m in &members {
        let status = procs
            .wait_exit(m.pid, Duration::from_secs(10))
            .expect("a member of the job survived cgroup.kill");
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    }
    thread::sleep(Duration::from_millis(100));
    assert!(procs.reap_exited().is_empty(), "the bystander was killed");
}
