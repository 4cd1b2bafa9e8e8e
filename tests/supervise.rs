//! Supervised jobs as an operator sees them: the daemon starts the
//! config's jobs, restarts them as their policy says, stops a crash loop
//! and says so, and after `kill -9` of the daemon a restarted daemon adopts
//! the running job instead of starting it a second time. As PID 1 (a new
//! PID namespace made by util-linux `unshare`), it reaps orphans and stops
//! its jobs on SIGTERM with an exit status that says how that went.
//!
//! Every job runs in the test's own cgroup subtree (tests/common/cgroup.rs),
//! whose drop kills and reaps whatever is left in it; the job programs are
//! copies of /bin/sleep under unique names, so counting instances on the
//! host counts only this test's.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::cgroup::{procs_of, Subtree};
use common::{event_name, Daemon, Target, TempDir, WAIT};
use serde_json::{json, Value};

/// A config with `jobs`, reeve's root in the subtree, and a rule nothing
/// matches (discovery idles).
fn jobs_config(dir: &TempDir, sub: &Subtree, jobs: Value) -> std::path::PathBuf {
    jobs_config_with(dir, sub, jobs, json!({}))
}

/// [`jobs_config`] with the top-level fields of `extra` added.
fn jobs_config_with(dir: &TempDir, sub: &Subtree, jobs: Value, extra: Value) -> std::path::PathBuf {
    let mut cfg = json!({
        "targets": [{
            "name": "unused",
            "match": {"exe": [format!("reeve-test-unused-{}", common::random_hex16())]},
        }],
        "discovery": {"mode": "poll", "scan_interval": "200ms", "rescan_interval": "200ms"},
        "state_dir": common::state_dir(dir),
        "cgroup": {"root": sub.root()},
        "jobs": jobs,
    });
    for (k, v) in extra.as_object().unwrap() {
        cfg[k] = v.clone();
    }
    common::write_config(dir.path(), &cfg)
}

/// The value of an unlabelled sample in `/metrics` at `addr`.
fn scrape(addr: &str, series: &str) -> Option<f64> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: reeve\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn about_job<'a>(events: &'a [Value], event: &str, job: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|v| event_name(v) == event && v["job"] == job)
        .collect()
}

/// Live processes on the host running the executable `exe` (a unique
/// copy per test: comm alone is cut to 15 bytes, which all the copies
/// share).
fn instances(exe: &Path) -> Vec<u32> {
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let state = stat[close + 1..].split_whitespace().next().unwrap_or("");
        let runs = fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|p| p == exe);
        if runs && state != "Z" {
            out.push(pid);
        }
    }
    out
}

#[test]
fn jobs_are_started_and_restarted_per_policy() {
    let dir = TempDir::new("supervise-policy");
    let sub = Subtree::new();
    let exit = |code: u32| json!(["/bin/sh", "-c", format!("sleep 0.1; exit {code}")]);
    let fast = json!({"initial": "20ms", "max": "40ms"});
    let cfg = jobs_config(
        &dir,
        &sub,
        json!([
            {"name": "always-ok", "command": exit(0), "restart": "always", "backoff": fast},
            {"name": "onfail-ok", "command": exit(0), "restart": "on-failure", "backoff": fast},
            {"name": "onfail-bad", "command": exit(3), "restart": "on-failure", "backoff": fast},
            {"name": "never-bad", "command": exit(3), "restart": "never", "backoff": fast},
        ]),
    );
    let mut d = Daemon::start(&cfg, dir.path());
    d.wait_started();
    d.wait_until("three starts of each restarting job", WAIT, |d| {
        let ev = d.events_ref();
        about_job(ev, "job_launched", "always-ok").len() >= 3
            && about_job(ev, "job_launched", "onfail-bad").len() >= 3
            && about_job(ev, "job_exited", "onfail-ok").len() == 1
            && about_job(ev, "job_exited", "never-bad").len() == 1
    });
    // Long enough for a wrongly restarted job to start again (backoff ≤ 40 ms).
    thread::sleep(Duration::from_millis(500));
    let ev = d.events();
    for (job, status) in [("onfail-ok", "exit 0"), ("never-bad", "exit 3")] {
        assert_eq!(
            about_job(&ev, "job_launched", job).len(),
            1,
            "{job} is not started again\n{}",
            d.log_tail()
        );
        let exited = about_job(&ev, "job_exited", job);
        assert_eq!(exited[0]["status"], status, "{job}");
        assert_eq!(exited[0]["next"], "held", "{job}");
    }
    for (job, status) in [("always-ok", "exit 0"), ("onfail-bad", "exit 3")] {
        let exited = about_job(&ev, "job_exited", job);
        assert!(exited
            .iter()
            .all(|v| v["status"] == status && v["next"] == "restart"));
        assert!(!about_job(&ev, "job_restarting", job).is_empty());
    }
    // Each start ran in the job's own group and session.
    let launched = about_job(&ev, "job_launched", "onfail-ok")[0];
    assert_eq!(
        launched["cgroup"].as_str().unwrap(),
        sub.job("onfail-ok").to_str().unwrap()
    );
    d.stop_ok();
}

#[test]
fn restart_loop_guard_stops_a_crash_looping_job_and_says_so() {
    let dir = TempDir::new("supervise-guard");
    let sub = Subtree::new();
    let cfg = jobs_config_with(
        &dir,
        &sub,
        json!([{
            "name": "crasher",
            "command": ["/bin/sh", "-c", "exit 7"],
            "backoff": {"initial": "10ms", "max": "20ms"},
            "restart_guard": {"starts": 3, "window": "1m"},
        }]),
        json!({"metrics": {"listen": "127.0.0.1:0"}}),
    );
    let mut d = Daemon::start(&cfg, dir.path());
    let listening = d.wait_for("metrics_listening", WAIT, |v| {
        event_name(v) == "metrics_listening"
    });
    let addr = listening["address"].as_str().unwrap().to_string();
    let guard = d.wait_for("job_restart_loop", WAIT, |v| {
        event_name(v) == "job_restart_loop" && v["job"] == "crasher"
    });
    assert_eq!(guard["level"], "error");
    assert_eq!(guard["starts"], 3);
    thread::sleep(Duration::from_millis(300));
    let ev = d.events();
    assert_eq!(
        about_job(&ev, "job_launched", "crasher").len(),
        3,
        "exactly `starts` starts, then none\n{}",
        d.log_tail()
    );
    assert_eq!(about_job(&ev, "job_restart_loop", "crasher").len(), 1);
    // The guard is counted, as are the starts it allowed.
    d.wait_until("the guard's counter in /metrics", WAIT, |_| {
        scrape(&addr, "reeve_supervised_restart_loops_total") == Some(1.0)
    });
    assert_eq!(scrape(&addr, "reeve_supervised_starts_total"), Some(3.0));
    assert_eq!(scrape(&addr, "reeve_supervised_running"), Some(0.0));
    d.stop_ok();
    let left = about_job(d.events_ref(), "job_left", "crasher")[0].clone();
    assert!(left["state"]
        .as_str()
        .unwrap()
        .contains("restart-loop guard"));
}

#[test]
fn a_job_outlives_kill_9_of_the_daemon_and_is_adopted_not_started_twice() {
    let dir = TempDir::new("supervise-adopt");
    let sub = Subtree::new();
    let prog = Target::new(dir.path());
    let cfg = jobs_config(
        &dir,
        &sub,
        json!([{"name": "enc", "command": [prog.path, "300"]}]),
    );
    let mut first = Daemon::start(&cfg, dir.path());
    first.wait_started();
    let launched = first.wait_for("job_launched", WAIT, |v| {
        event_name(v) == "job_launched" && v["job"] == "enc"
    });
    let pid = launched["pid"].as_u64().unwrap() as u32;
    let ticks = launched["start_ticks"].as_u64().unwrap();
    assert_eq!(
        procs_of(&sub.job("enc")).into_iter().collect::<Vec<_>>(),
        [pid]
    );
    // Its own session: the job is the leader.
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let sid: u32 = after.split_whitespace().nth(3).unwrap().parse().unwrap();
    assert_eq!(sid, pid, "the job leads its own session");

    first.stop_with(libc::SIGKILL);
    thread::sleep(Duration::from_millis(200));
    assert_eq!(instances(&prog.path), [pid], "the job outlives the daemon");

    let mut second = Daemon::start(&cfg, dir.path());
    second.wait_started();
    let adopted = second.wait_for("job_adopted", WAIT, |v| {
        event_name(v) == "job_adopted" && v["job"] == "enc"
    });
    assert_eq!(adopted["pid"], pid);
    assert_eq!(adopted["start_ticks"], ticks);
    // Several wakeups later, still one instance, the same one.
    second.wait_scans(3, WAIT);
    let ev = second.events();
    assert!(
        about_job(&ev, "job_launched", "enc").is_empty(),
        "a second daemon must not start the job again\n{}",
        second.log_tail()
    );
    assert_eq!(instances(&prog.path), [pid]);
    assert_eq!(
        procs_of(&sub.job("enc")).into_iter().collect::<Vec<_>>(),
        [pid]
    );

    // The adopted job's end is seen through its pidfd; its status cannot be.
    common::cgroup::signal_if_in(pid, &sub.rel(&sub.job("enc")), libc::SIGKILL);
    let exited = second.wait_for("job_exited", WAIT, |v| {
        event_name(v) == "job_exited" && v["job"] == "enc"
    });
    assert!(exited["status"].as_str().unwrap().starts_with("unknown"));
    assert_eq!(exited["next"], "restart");
    common::cgroup::reap(pid, Duration::from_secs(2));
    let relaunched = second.wait_for("job_launched after the adopted one ended", WAIT, |v| {
        event_name(v) == "job_launched" && v["job"] == "enc"
    });
    assert_ne!(relaunched["pid"], pid);
    second.stop_ok();
}

/// `reeve watch` as PID 1 of a new PID namespace, with its own /proc
/// (`unshare --pid --fork --mount-proc`), logging JSON into a file.
struct Pid1 {
    unshare: std::process::Child,
    log_path: std::path::PathBuf,
}

impl Pid1 {
    fn start(cfg: &Path, dir: &TempDir) -> Option<Pid1> {
        let have_unshare = Path::new("/usr/bin/unshare").exists();
        if !common::require(have_unshare, "util-linux unshare makes the PID namespace") {
            return None;
        }
        let log_path = dir.join("pid1.log");
        let log = fs::File::create(&log_path).unwrap();
        let unshare = common::spawn_retry(
            Command::new("/usr/bin/unshare")
                .args(["--pid", "--fork", "--mount-proc", "--"])
                .arg(common::REEVE)
                .args(["watch", "--config"])
                .arg(cfg)
                .args(["--log-format", "json", "--log-level", "debug"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::from(log)),
        );
        let pid1 = Pid1 { unshare, log_path };
        let started = pid1.wait_event("started", |_| true);
        assert_eq!(started["pid"], 1, "reeve runs as PID 1 of the namespace");
        Some(pid1)
    }

    fn events(&self) -> Vec<Value> {
        common::json_lines(&fs::read(&self.log_path).unwrap_or_default())
    }

    fn tail(&self) -> String {
        common::log_tail_of(&self.log_path)
    }

    fn wait_event(&self, name: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let found = self
                .events()
                .into_iter()
                .find(|v| event_name(v) == name && pred(v));
            if let Some(v) = found {
                return v;
            }
            assert!(Instant::now() < deadline, "no {name}\n{}", self.tail());
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM to reeve (the one child of unshare) from outside the
    /// namespace, then its exit status (unshare passes it on).
    fn sigterm_and_wait(&mut self) -> std::process::ExitStatus {
        let children =
            fs::read_to_string(format!("/proc/{0}/task/{0}/children", self.unshare.id())).unwrap();
        let reeve_pid: i32 = children.split_whitespace().next().unwrap().parse().unwrap();
        // SAFETY: kill(2) on reeve, the unreaped child of our own unshare child.
        assert_eq!(unsafe { libc::kill(reeve_pid, libc::SIGTERM) }, 0);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(s) = self.unshare.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "reeve as PID 1 did not stop\n{}",
                self.tail()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Pid1 {
    fn drop(&mut self) {
        // Killing unshare's child (PID 1 of the namespace) ends the whole
        // namespace; unshare itself then exits.
        if let Ok(None) = self.unshare.try_wait() {
            let _ = self.unshare.kill();
            let _ = self.unshare.wait();
        }
    }
}

/// As PID 1, reeve reaps the orphans a job leaves (its children
/// double-fork, so their children are reparented to PID 1 and end there),
/// and SIGTERM stops the job, then reeve, with status 0.
#[test]
fn as_pid_1_reeve_reaps_orphans_and_stops_its_jobs_on_sigterm() {
    let dir = TempDir::new("supervise-pid1");
    let sub = Subtree::new();
    let script = "for i in 1 2 3; do (sleep 0.1 &); done; exec sleep 300";
    let cfg = jobs_config(
        &dir,
        &sub,
        json!([{"name": "init-job", "command": ["/bin/sh", "-c", script], "stop_timeout": "5s"}]),
    );
    let Some(mut reeve) = Pid1::start(&cfg, &dir) else {
        return;
    };
    reeve.wait_event("job_launched", |_| true);
    reeve.wait_event("orphans_reaped", |v| v["total"].as_u64() >= Some(3));
    let status = reeve.sigterm_and_wait();
    assert_eq!(status.code(), Some(0), "{}", reeve.tail());
    let ev = reeve.events();
    assert_eq!(
        about_job(&ev, "job_stopping", "init-job").len(),
        1,
        "{}",
        reeve.tail()
    );
    let exited = about_job(&ev, "job_exited", "init-job");
    assert_eq!(exited.last().unwrap()["status"], "signal 15");
    assert_eq!(exited.last().unwrap()["next"], "stopped");
    assert!(about_job(&ev, "job_killed", "init-job").is_empty());
    assert!(procs_of(&sub.job("init-job")).is_empty());
}

/// As PID 1, a job that ignores the forwarded SIGTERM is killed through its
/// pidfd after its stop_timeout, and reeve's exit status says the stop was
/// not clean.
#[test]
fn as_pid_1_a_job_that_ignores_sigterm_is_killed_and_the_exit_status_says_so() {
    let dir = TempDir::new("supervise-pid1-kill");
    let sub = Subtree::new();
    let armed = dir.join("armed");
    let script = format!(
        "trap '' TERM; : > {}; while :; do sleep 0.05; done",
        armed.display()
    );
    let cfg = jobs_config(
        &dir,
        &sub,
        json!([{"name": "stubborn", "command": ["/bin/sh", "-c", script], "stop_timeout": "300ms"}]),
    );
    let Some(mut reeve) = Pid1::start(&cfg, &dir) else {
        return;
    };
    reeve.wait_event("job_launched", |_| true);
    // Only once the job ignores SIGTERM does the stop have to kill it.
    let deadline = Instant::now() + WAIT;
    while !armed.exists() {
        assert!(Instant::now() < deadline, "the job never set its trap");
        thread::sleep(Duration::from_millis(20));
    }
    let status = reeve.sigterm_and_wait();
    assert_eq!(status.code(), Some(1), "{}", reeve.tail());
    let ev = reeve.events();
    assert_eq!(
        about_job(&ev, "job_killed", "stubborn").len(),
        1,
        "{}",
        reeve.tail()
    );
    let exited = about_job(&ev, "job_exited", "stubborn");
    assert_eq!(exited.last().unwrap()["status"], "signal 9");
    assert_eq!(exited.last().unwrap()["killed"], true);
}

/// A job whose limits cannot be put in force is not started (CPU 4095
/// exists on no host this runs on, and this host's cgroup v2 has no
/// cpuset controller either); one without limits is, and reports readiness
/// after its delay.
#[test]
fn a_job_starts_only_with_its_limits_in_force_and_is_ready_after_its_delay() {
    let dir = TempDir::new("supervise-limits");
    let sub = Subtree::new();
    let prog = Target::new(dir.path());
    let cfg = jobs_config(
        &dir,
        &sub,
        json!([
            {"name": "fenced", "command": [&prog.path, "300"], "limits": {"cpuset": "4095"},
             "backoff": {"initial": "5s", "max": "5s"}},
            {"name": "plain", "command": [&prog.path, "300"], "ready": {"delay": "400ms"}},
        ]),
    );
    let mut d = Daemon::start(&cfg, dir.path());
    d.wait_started();
    let failed = d.wait_for("job_launch_failed", WAIT, |v| {
        event_name(v) == "job_launch_failed" && v["job"] == "fenced"
    });
    assert!(
        failed["reason"].as_str().unwrap().contains("in force"),
        "{failed}"
    );
    let ready = d.wait_for("job_ready", WAIT, |v| {
        event_name(v) == "job_ready" && v["job"] == "plain"
    });
    let ev = d.events();
    let launched = about_job(&ev, "job_launched", "plain")[0];
    let waited = ready["ts_ms"].as_u64().unwrap() - launched["ts_ms"].as_u64().unwrap();
    assert!(
        waited >= 400,
        "ready {waited} ms after the start, before its delay"
    );
    assert!(about_job(&ev, "job_launched", "fenced").is_empty());
    assert!(procs_of(&sub.job("fenced")).is_empty());
    assert_eq!(instances(&prog.path).len(), 1);
    d.stop_ok();
}

/// `ready.heartbeat`: a job is ready at its first verified beat, and only
/// then. The beating job is reeve's own `beat --every` (a beat vouches for
/// the process that sends it, which is the job's); a job that never beats
/// is never ready.
#[test]
fn a_job_ready_by_heartbeat_is_ready_at_its_first_beat_only() {
    let dir = TempDir::new("supervise-ready-beat");
    let sub = Subtree::new();
    let silent = Target::new(dir.path());
    let socket = dir.path().join("beat.sock");
    let sock = socket.to_str().unwrap();
    let cfg = jobs_config_with(
        &dir,
        &sub,
        json!([
            {"name": "beating", "command": [common::REEVE, "beat", "--every", "100ms", "--socket", sock],
             "ready": {"heartbeat": true}},
            {"name": "silent", "command": [&silent.path, "300"], "ready": {"heartbeat": true}},
        ]),
        json!({"heartbeat": {"socket": sock, "mode": "0600", "capacity": 64}}),
    );
    let mut d = Daemon::start(&cfg, dir.path());
    d.wait_started();
    let ready = d.wait_for("job_ready of beating", WAIT, |v| {
        event_name(v) == "job_ready" && v["job"] == "beating"
    });
    assert_eq!(ready["by"], "heartbeat", "{ready}");
    let ev = d.events();
    let launched = about_job(&ev, "job_launched", "beating")[0];
    assert_eq!(launched["pid"], ready["pid"], "the job's own process beat");
    // Well past the beating job's readiness, the silent one is not ready.
    thread::sleep(Duration::from_millis(500));
    let ev = d.events();
    assert!(about_job(&ev, "job_launched", "silent").len() == 1);
    assert!(
        about_job(&ev, "job_ready", "silent").is_empty(),
        "a job that never beat is ready"
    );
    d.stop_ok();
}
