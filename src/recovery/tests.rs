//! Recovery against real processes: hooks (timeout, output, environment,
//! placeholders, no shell), signals and the guard, with every outcome read
//! back from the audit log the events land in.

use super::*;
use crate::config::{LogFormat, LogLevel};
use crate::store::{read_events, EventLog, FsyncPolicy, LogOptions, StateDir};
use crate::tempdir::TempDir;
use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A logger whose info-and-above events land in `dir`'s audit log.
fn logger(dir: &TempDir) -> Logger {
    let state = StateDir::open(&dir.join("state")).unwrap();
    let opts = LogOptions {
        fsync: FsyncPolicy::Never,
        ..LogOptions::default()
    };
    let mut log = Logger::new(LogFormat::Text, LogLevel::Error);
    log.set_audit(EventLog::open(&state, opts).unwrap());
    log
}

fn events(dir: &TempDir, name: &str) -> Vec<Value> {
    read_events(&dir.join("state"), None)
        .unwrap()
        .filter(|v| v["event"] == name)
        .collect()
}

fn incident<'a>(key: ProcKey, event: &'a str) -> Incident<'a> {
    Incident {
        key,
        rule: "enc",
        job: "job.enc",
        group: None,
        event,
    }
}

fn exec(argv: &[&str], timeout: Duration) -> Action {
    Action::Exec {
        argv: argv.iter().map(|a| a.to_string()).collect(),
        timeout,
    }
}

/// Services `r` until no hook runs (at most 10 s).
fn run_hooks(r: &mut Recovery, log: &mut Logger) {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        r.service(crate::sys::monotonic_ns(), log);
        if r.hooks.running() == 0 {
            return;
        }
        assert!(Instant::now() < until, "hooks still running");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn no_guard() -> Guard {
    Guard {
        max_actions: 64,
        window: Duration::from_secs(1),
        debounce: Duration::ZERO,
    }
}

const ME: ProcKey = ProcKey {
    pid: 4242,
    start_ticks: 7,
};

#[test]
fn a_hanging_hook_is_killed_at_its_timeout_with_its_group_and_output_kept() {
    let dir = TempDir::new("hook-timeout");
    let mut log = logger(&dir);
    let mut reader = ProcReader::open().unwrap();
    let mut r = Recovery::new();
    let pidfile = dir.join("grandchild");
    // The hook leaves a grandchild in its group, says something on both
    // pipes, then hangs.
    let script = format!(
        "sleep 300 & echo $! > {}; echo before-hang; echo oops >&2; exec sleep 300",
        pidfile.display()
    );
    let t0 = Instant::now();
    r.act(
        &incident(ME, "stalled"),
        &[exec(
            &["/bin/sh", "-c", &script],
            Duration::from_millis(500),
        )],
        &no_guard(),
        crate::sys::monotonic_ns(),
        &mut reader,
        &mut log,
    );
    assert_eq!(r.hooks.running(), 1);
    run_hooks(&mut r, &mut log);
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(5),
        "{took:?}"
    );
    let ev = events(&dir, "hook_timed_out");
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0]["stdout"], "before-hang\n");
    assert_eq!(ev[0]["stderr"], "oops\n");
    assert_eq!(ev[0]["signal"], libc::SIGKILL);
    assert_eq!(ev[0]["timeout_ms"], 500);
    assert_eq!(ev[0]["pid"], 4242);
    assert_eq!(ev[0]["trigger"], "stalled");
    let grandchild: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // Killed with its group (it is reparented, so it may linger as a
    // zombie of init for a moment, but it never runs on).
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let state = reader.stat(grandchild).map(|s| s.state);
        if !matches!(state, Ok(b'S' | b'R' | b'D')) {
            break;
        }
        assert!(Instant::now() < until, "the hook's grandchild still runs");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(r.stats().hooks.timed_out, 1);
}

#[test]
fn hooks_get_a_cleared_environment_literal_arguments_and_lossy_bounded_output() {
    let dir = TempDir::new("hook-env");
    let mut log = logger(&dir);
    let mut reader = ProcReader::open().unwrap();
    let mut r = Recovery::new();
    std::env::set_var("REEVE_TEST_SECRET_ENV", "leaked");
    let actions = [
        exec(&["/usr/bin/env"], Duration::from_secs(5)),
        exec(
            &[
                "/bin/echo",
                "{pid};touch /tmp/x",
                "$(id)",
                "`id`",
                "{rule}/{job}/{event}",
            ],
            Duration::from_secs(5),
        ),
        // 10,000 bytes, some not UTF-8, and a non-zero exit.
        exec(
            &[
                "/bin/sh",
                "-c",
                "head -c 10000 /dev/zero | tr '\\0' 'a'; printf '\\377' >&2; exit 3",
            ],
            Duration::from_secs(5),
        ),
    ];
    r.act(
        &incident(ME, "exited"),
        &actions,
        &no_guard(),
        crate::sys::monotonic_ns(),
        &mut reader,
        &mut log,
    );
    run_hooks(&mut r, &mut log);
    let ev = events(&dir, "hook_finished");
    assert_eq!(ev.len(), 3, "{ev:?}");
    let by = |p: &str| ev.iter().find(|e| e["program"] == p).unwrap().clone();
    let env = by("/usr/bin/env");
    let vars: Vec<&str> = env["stdout"]
        .as_str()
        .unwrap()
        .lines()
        .map(|l| l.split('=').next().unwrap())
        .collect();
    let mut sorted = vars.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        [
            "PATH",
            "REEVE_EVENT",
            "REEVE_JOB",
            "REEVE_PID",
            "REEVE_RULE",
            "REEVE_START_TICKS"
        ],
        "{env}"
    );
    assert!(env["stdout"].as_str().unwrap().contains("REEVE_PID=4242\n"));
    assert_eq!(env["exit_code"], 0);
    let echo = by("/bin/echo");
    assert_eq!(
        echo["stdout"],
        "4242;touch /tmp/x $(id) `id` enc/job.enc/exited\n"
    );
    let sh = by("/bin/sh");
    assert_eq!(sh["exit_code"], 3);
    assert_eq!(sh["stdout"].as_str().unwrap().len(), hooks::CAPTURE);
    assert_eq!(sh["stdout_truncated"], true);
    assert_eq!(sh["stderr"], "\u{fffd}");
    assert_eq!(sh["stderr_truncated"], false);
    let stats = r.stats().hooks;
    assert_eq!((stats.started, stats.succeeded, stats.failed), (3, 2, 1));
}

#[test]
fn more_hooks_than_places_queue_then_refuse() {
    let dir = TempDir::new("hook-queue");
    let mut log = logger(&dir);
    let mut reader = ProcReader::open().unwrap();
    let mut r = Recovery::new();
    let many: Vec<Action> = (0..hooks::MAX_RUNNING + hooks::QUEUE + 2)
        .map(|_| exec(&["/bin/true"], Duration::from_secs(5)))
        .collect();
    for chunk in many.chunks(crate::config::MAX_ACTIONS) {
        r.act(
            &incident(ME, "stalled"),
            chunk,
            &no_guard(),
            crate::sys::monotonic_ns(),
            &mut reader,
            &mut log,
        );
    }
    assert_eq!(r.hooks.running(), hooks::MAX_RUNNING);
    run_hooks(&mut r, &mut log);
    assert_eq!(events(&dir, "hook_refused").len(), 2);
    assert_eq!(
        events(&dir, "hook_finished").len(),
        hooks::MAX_RUNNING + hooks::QUEUE
    );
    let missing = exec(&["/nonexistent/hook"], Duration::from_secs(1));
    r.act(
        &incident(ME, "stalled"),
        &[missing],
        &no_guard(),
        crate::sys::monotonic_ns(),
        &mut reader,
        &mut log,
    );
    let failed = events(&dir, "hook_failed");
    assert_eq!(failed.len(), 1);
    assert!(failed[0]["error"]
        .as_str()
        .unwrap()
        .contains("/nonexistent/hook: cannot start"));
}

#[test]
fn the_guard_stops_acting_after_max_actions_and_says_so_once() {
    let dir = TempDir::new("guard");
    let mut log = logger(&dir);
    let mut reader = ProcReader::open().unwrap();
    let mut r = Recovery::new();
    let g = Guard {
        max_actions: 2,
        window: Duration::from_secs(60),
        debounce: Duration::from_secs(10),
    };
    let now = crate::sys::monotonic_ns();
    // A crash loop: a new process of the same job each time.
    for i in 0..5u32 {
        let key = ProcKey {
            pid: 5000 + i,
            start_ticks: 1,
        };
        r.act(
            &incident(key, "exited"),
            &[exec(&["/bin/true"], Duration::from_secs(5))],
            &g,
            now + u64::from(i),
            &mut reader,
            &mut log,
        );
    }
    run_hooks(&mut r, &mut log);
    assert_eq!(events(&dir, "hook_finished").len(), 2);
    let said = events(&dir, "actions_suppressed");
    assert_eq!(said.len(), 1, "said once per episode: {said:?}");
    assert_eq!(said[0]["job"], "job.enc");
    assert_eq!(said[0]["max_actions"], 2);
    assert_eq!(r.stats().suppressed, 3);
    // The same process again within the debounce.
    let key = ProcKey {
        pid: 6000,
        start_ticks: 1,
    };
    let other = Incident {
        job: "job.other",
        ..incident(key, "stalled")
    };
    let hook = [exec(&["/bin/true"], Duration::from_secs(5))];
    r.act(&other, &hook, &g, now, &mut reader, &mut log);
    r.act(&other, &hook, &g, now + 1, &mut reader, &mut log);
    run_hooks(&mut r, &mut log);
    assert_eq!(r.stats().debounced, 1);
    assert_eq!(events(&dir, "action_debounced").len(), 1);
}

#[test]
fn a_signal_with_escalation_ends_a_process_that_ignores_the_first() {
    let dir = TempDir::new("escalate");
    let mut log = logger(&dir);
    let mut reader = ProcReader::open().unwrap();
    let mut r = Recovery::new();
    let mut child = Command::new("/bin/sh")
        .args(["-c", "trap '' TERM; echo ready; exec sleep 300"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Read;
        let mut b = [0u8; 6];
        child.stdout.as_mut().unwrap().read_exact(&mut b).unwrap();
    }
    let key = reader.stat(child.id()).unwrap().key();
    let action = Action::Signal {
        signal: Signal(libc::SIGTERM),
        then: Some(Signal(libc::SIGKILL)),
        grace: Duration::from_millis(200),
    };
    let t0 = crate::sys::monotonic_ns();
    r.act(
        &incident(key, "stalled"),
        std::slice::from_ref(&action),
        &no_guard(),
        t0,
        &mut reader,
        &mut log,
    );
    assert_eq!(r.deadline_ns(t0), Some(t0 + 200_000_000));
    r.service(t0 + 100_000_000, &mut log);
    assert!(
        child.try_wait().unwrap().is_none(),
        "TERM is ignored; no KILL yet"
    );
    r.service(t0 + 200_000_000, &mut log);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
    let taken = events(&dir, "action_taken");
    assert_eq!(taken[0]["signal"], "TERM");
    assert_eq!(taken[0]["via"], "pidfd");
    assert_eq!(events(&dir, "action_escalated").len(), 1);
    // The same identity, now gone: refused, nothing sent.
    r.act(
        &incident(key, "stalled"),
        &[action],
        &no_guard(),
        t0 + 1,
        &mut reader,
        &mut log,
    );
    assert_eq!(events(&dir, "action_refused").len(), 1);
    assert_eq!(r.stats().actions[SIGNAL], [1, 0, 1, 0]);
    assert_eq!(r.stats().actions[ESCALATION], [1, 0, 0, 0]);
}

#[test]
fn kill_job_without_a_group_is_refused() {
    let dir = TempDir::new("killjob");
    let mut log = logger(&dir);
    let mut reader = ProcReader::open().unwrap();
    let mut r = Recovery::new();
    r.act(
        &incident(ME, "stalled"),
        &[Action::KillJob],
        &no_guard(),
        0,
        &mut reader,
        &mut log,
    );
    let ev = events(&dir, "action_refused");
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0]["action"], "kill_job");
    assert_eq!(r.stats().actions[KILL_JOB][REFUSED], 1);
}
