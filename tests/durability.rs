//! Durability as an operator sees it: reeve can be SIGKILLed at any moment
//! and a restart neither loses, duplicates nor re-attaches what it governs;
//! one daemon owns a state directory; a restart restores what it tracked
//! without rediscovering it and reports what ended while it was down; a
//! state file it cannot use is set aside, never deleted; its files are
//! private and a planted symlink is never written through; `reeve status`
//! and `reeve events` show the daemon and the audit log as they are.
//!
//! Every daemon here matches only the test's uniquely named copies of
//! /bin/sleep (by exe basename, children of the test process) and keeps its
//! state in the test's own temporary directory. Tests that govern work in
//! their own cgroup v2 subtree `/sys/fs/cgroup/unified/reeve-test-<16 hex>`
//! ([`Subtree`]); on drop it kills (by pid, through a pidfd, after checking
//! the process is inside the subtree) whatever is left in it and removes
//! its groups bottom-up. Only processes the test started are touched.

mod common;

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::cgroup::*;
use common::*;
use serde_json::{json, Value};

// ------------------------------------------------------------ helpers ---

fn me() -> u32 {
    std::process::id()
}

/// Whether `id` is still that process and running (not a zombie).
fn running(id: Ident) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{}/stat", id.pid)) else {
        return false;
    };
    let Some(close) = stat.rfind(')') else {
        return false;
    };
    let state = stat[close + 1..].split_ascii_whitespace().next();
    !matches!(state, Some("Z" | "X" | "x")) && read_start_ticks(id.pid) == Some(id.start_ticks)
}

/// xorshift64*: reproducible from the printed seed, no crates.
struct Rng(u64);

impl Rng {
    fn from_clock() -> Rng {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Rng((nanos ^ u64::from(me()).rotate_left(32)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// A watch config matching `name` (children of the test only).
fn watch_config(dir: &TempDir, name: &str, interval: &str) -> Value {
    config_for(dir, "enc", name, Some(&[me()]), "auto", interval)
}

/// The same, governing matches in `pool.p` under the subtree's root.
fn pool_config(dir: &TempDir, sub: &Subtree, name: &str, interval: &str) -> Value {
    let mut cfg = watch_config(dir, name, interval);
    cfg["targets"][0]["pool"] = json!("p");
    cfg["cgroup"] = json!({"root": sub.root()});
    cfg
}

fn state_path(cfg: &Value) -> PathBuf {
    PathBuf::from(cfg["state_dir"].as_str().expect("state_dir in config"))
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `reeve ARGS... --config CFG`, asserted to exit 0; returns stdout.
fn reeve_ok(args: &[&str], cfg: &Path) -> String {
    let out = run_with_timeout(
        Command::new(REEVE).args(args).arg("--config").arg(cfg),
        WAIT,
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "reeve {args:?}: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        stderr_of(&out)
    );
    assert!(
        !stderr_of(&out).contains("undecodable"),
        "reeve {args:?} skipped lines: {}",
        stderr_of(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The audit log generations in `dir`, oldest first: `events.jsonl.N` ..
/// `events.jsonl.1`, then `events.jsonl`.
fn audit_files(dir: &Path) -> Vec<PathBuf> {
    let mut gens: Vec<(u64, PathBuf)> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            if name == "events.jsonl" {
                Some((0, e.path()))
            } else {
                let n = name.strip_prefix("events.jsonl.")?.parse().ok()?;
                Some((n, e.path()))
            }
        })
        .collect();
    gens.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
    gens.into_iter().map(|(_, p)| p).collect()
}

/// Every line of every audit log generation, read raw and in file order;
/// panics on a line that is not a JSON object or a file that ends mid-line.
fn raw_audit(dir: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    for path in audit_files(dir) {
        let bytes = fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        assert!(
            bytes.is_empty() || bytes.ends_with(b"\n"),
            "{} ends mid-line: ...{:?}",
            path.display(),
            String::from_utf8_lossy(&bytes[bytes.len().saturating_sub(200)..])
        );
        let text = String::from_utf8(bytes)
            .unwrap_or_else(|e| panic!("{} is not UTF-8: {e}", path.display()));
        for (i, line) in text.lines().enumerate() {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| {
                panic!("{}:{}: not JSON ({e}): {line:?}", path.display(), i + 1)
            });
            assert!(
                v.is_object() && v["seq"].is_u64() && v["ts_ms"].is_u64() && v["event"].is_string(),
                "{}:{}: not an audit record: {line}",
                path.display(),
                i + 1
            );
            out.push(v);
        }
    }
    out
}

fn seqs(events: &[Value]) -> Vec<u64> {
    events.iter().filter_map(|v| v["seq"].as_u64()).collect()
}

/// Asserts `events` are numbered 1, 2, 3, ... in order: no gap, no repeat.
fn assert_gap_free(events: &[Value], what: &str) {
    let got = seqs(events);
    for (i, s) in got.iter().enumerate() {
        let want = i as u64 + 1;
        if *s != want {
            let lo = i.saturating_sub(3);
            let hi = (i + 3).min(events.len());
            panic!(
                "{what}: line {} has seq {s}, expected {want} ({} lines in all); around it:\n{}",
                i + 1,
                events.len(),
                events[lo..hi]
                    .iter()
                    .map(Value::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
}

/// Events named `event` in `events`, by identity.
fn tally(events: &[Value], event: &str) -> HashMap<Ident, usize> {
    let mut m = HashMap::new();
    for v in events.iter().filter(|v| event_name(v) == event) {
        if let Some(id) = Ident::of_event(v) {
            *m.entry(id).or_insert(0) += 1;
        }
    }
    m
}

fn count(events: &[Value], event: &str) -> usize {
    events.iter().filter(|v| event_name(v) == event).count()
}

/// The events about `id`, one per line, for failure messages.
fn history(events: &[Value], id: Ident) -> String {
    events
        .iter()
        .filter(|v| id.matches(v))
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .mode()
        & 0o7777
}

/// The saved state file, parsed.
fn load_state(dir: &Path) -> Value {
    let path = dir.join("state.json");
    let bytes = fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "{} is not JSON ({e}): {}",
            path.display(),
            String::from_utf8_lossy(&bytes)
        )
    })
}

/// Names in `dir` starting with `prefix`.
fn names_with(dir: &Path, prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect();
    v.sort();
    v
}

// ------------------------------------------------------------- crashes ---

/// 100 SIGKILLs at random moments while targets come and go: the audit log
/// stays one gap-free sequence, nothing is attached twice, every state file
/// loads, and every running target ends up in its pool.
#[test]
fn kill9_restart_100_times() {
    const ROUNDS: usize = 100;
    let started = Instant::now();
    let sub = Subtree::new();
    let dir = TempDir::new("dur-kill9");
    let mut procs = ProcGuard::new();
    let target = Target::new(dir.path());
    let cfg = pool_config(&dir, &sub, &target.name, "50ms");
    let sdir = state_path(&cfg);
    let cfg_path = write_config(dir.path(), &cfg);
    let pool_rel = sub.rel(&sub.pool("p"));

    let mut rng = Rng::from_clock();
    println!("kill9_restart_100_times: seed {:#x}", rng.0);
    let mut live: HashMap<u32, Ident> = HashMap::new();
    let mut spawned = 0usize;
    let mut killed_targets = 0usize;
    let mut logs = Vec::new();

    for _ in 0..ROUNDS {
        let mut d = Daemon::start(&cfg_path, dir.path());
        logs.push(d.log_path.clone());
        let run = Duration::from_millis(rng.range(50, 400));
        let t0 = Instant::now();
        let mut at: Vec<Duration> = (0..rng.range(1, 3))
            .map(|_| Duration::from_millis(rng.next() % run.as_millis() as u64))
            .collect();
        at.sort();
        let kill_at = (rng.next() % 3 == 0)
            .then(|| Duration::from_millis(rng.next() % run.as_millis() as u64));
        let mut kill_done = false;
        while t0.elapsed() < run {
            while at.first().is_some_and(|t| t0.elapsed() >= *t) {
                at.remove(0);
                let secs = rng.range(2, 5).to_string();
                let id = target.spawn(&mut procs, &secs);
                live.insert(id.pid, id);
                spawned += 1;
            }
            if !kill_done && kill_at.is_some_and(|t| t0.elapsed() >= t) {
                kill_done = true;
                let mut pids: Vec<u32> = live.keys().copied().collect();
                pids.sort();
                if !pids.is_empty() {
                    let pid = pids[(rng.next() % pids.len() as u64) as usize];
                    procs.kill(pid);
                    live.remove(&pid);
                    killed_targets += 1;
                }
            }
            for pid in procs.reap_exited() {
                live.remove(&pid);
            }
            thread::sleep(Duration::from_millis(5));
        }
        let status = d.stop_with(libc::SIGKILL);
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "the daemon should have died of SIGKILL, not {status}\n{}",
            d.log_tail()
        );
    }

    // Two more targets while no daemon runs: only a fresh scan finds them.
    for _ in 0..2 {
        let id = target.spawn(&mut procs, "5");
        live.insert(id.pid, id);
        spawned += 1;
    }
    for pid in procs.reap_exited() {
        live.remove(&pid);
    }

    let mut d = Daemon::start(&cfg_path, dir.path());
    logs.push(d.log_path.clone());
    d.wait_started();
    d.wait_until(
        "every running target to be in pool.p",
        WAIT,
        |_: &mut Daemon| {
            for pid in procs.reap_exited() {
                live.remove(&pid);
            }
            live.values()
                .all(|id| !running(*id) || cgroup_of(id.pid).as_deref() == Some(&pool_rel))
        },
    );
    // Let a scan pass after the last check, so the final state is settled.
    d.wait_scans(2, WAIT);
    let before_stop: Vec<Ident> = live.values().copied().collect();
    d.stop_ok();
    // Targets still running now ran through the whole last daemon's life.
    let survivors: Vec<Ident> = before_stop.into_iter().filter(|id| running(*id)).collect();

    // The audit log, read raw ...
    let raw = raw_audit(&sdir);
    assert!(!raw.is_empty(), "the audit log is empty");
    assert_gap_free(&raw, "events.jsonl read raw");
    // ... and through `reeve events --json`.
    let listed = json_lines(reeve_ok(&["events", "--json"], &cfg_path).as_bytes());
    assert_gap_free(&listed, "reeve events --json");
    assert_eq!(
        listed.len(),
        raw.len(),
        "reeve events --json and the files disagree on the number of events"
    );
    assert_eq!(listed, raw, "reeve events --json differs from the files");

    let attached = tally(&raw, "attached");
    let twice: Vec<(&Ident, &usize)> = attached.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "identities attached more than once: {twice:?}\n{}",
        twice
            .iter()
            .map(|(id, _)| format!("--- {id:?}\n{}", history(&raw, **id)))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let set_aside: Vec<&Value> = raw
        .iter()
        .filter(|v| matches!(event_name(v), "state_set_aside" | "state_unusable"))
        .collect();
    assert!(
        set_aside.is_empty(),
        "a state file reeve wrote itself could not be loaded: {set_aside:?}"
    );
    let aside_files = names_with(&sdir, "state.json.");
    assert!(
        aside_files.is_empty(),
        "state files set aside: {aside_files:?}"
    );
    let failures: Vec<&Value> = raw
        .iter()
        .filter(|v| matches!(event_name(v), "state_save_failed" | "audit_log_failed"))
        .collect();
    assert!(failures.is_empty(), "durability failures: {failures:?}");

    let adopted = tally(&raw, "adopted");
    let state = load_state(&sdir);
    let tracked: HashMap<Ident, &Value> = state["processes"]
        .as_array()
        .expect("processes in state.json")
        .iter()
        .filter_map(|p| Some((Ident::of_event(p)?, p)))
        .collect();
    for id in &survivors {
        let hist = history(&raw, *id);
        assert_eq!(
            cgroup_of(id.pid).as_deref(),
            Some(pool_rel.as_str()),
            "running target {id:?} is not in pool.p; its events:\n{hist}"
        );
        assert!(
            attached.get(id).copied().unwrap_or(0) + adopted.get(id).copied().unwrap_or(0) >= 1,
            "running target {id:?} is in pool.p but was never attached or adopted:\n{hist}"
        );
        let p = tracked.get(id).unwrap_or_else(|| {
            panic!(
                "running target {id:?} is missing from the final state.json; its events:\n{hist}"
            )
        });
        assert_eq!(
            p["exited_ms"], 0,
            "running target {id:?} is recorded as exited: {p}"
        );
    }

    // A crash in the middle of a snapshot write leaves its temp file.
    let leftovers: Vec<String> = names_with(&sdir, ".")
        .into_iter()
        .filter(|n| n.contains(".tmp."))
        .collect();
    println!(
        "kill9_restart_100_times: state dir after the run: {:?}; {} leftover temp files {:?}",
        names_with(&sdir, ""),
        leftovers.len(),
        &leftovers[..leftovers.len().min(5)]
    );

    // A discovery logged by a daemon that dies before its next snapshot is
    // reconciled from the audit log by the next one, not repeated.
    let rediscovered = tally(&raw, "discovered")
        .values()
        .filter(|n| **n > 1)
        .count();
    assert_eq!(
        rediscovered, 0,
        "identities discovered more than once across restarts"
    );
    // A live exit seen by a daemon that dies before its next snapshot must
    // not be reported again by the next one: the snapshot names the last
    // audit seq it knew, and the events after it are reconciled on load.
    let exited_twice: Vec<Ident> = tally(&raw, "exited")
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(id, _)| id)
        .collect();
    if let Some(id) = exited_twice.first() {
        panic!(
            "kill9_restart_100_times: {} identities have more than one `exited`; e.g. {id:?}:\n{}",
            exited_twice.len(),
            history(&raw, *id)
        );
    }
    let failed: Vec<String> = raw
        .iter()
        .filter(|v| event_name(v) == "attach_failed")
        .map(Value::to_string)
        .collect();
    println!(
        "kill9_restart_100_times: {rediscovered} identities discovered more than once; \
         attach_failed: {failed:?}"
    );

    let starts = count(&raw, "started");
    let loads: Vec<&Value> = raw
        .iter()
        .filter(|v| event_name(v) == "state_loaded")
        .collect();
    println!(
        "kill9_restart_100_times: {} daemons ({} SIGKILLed), {} started events, {} state loads \
         ({} restored, {} ended while down), restarts counter {}; {} events; {} attached \
         identities, {} adopted events ({} from cgroup), {} discovered, {} exited, {} \
         attach_failed; targets {spawned} spawned, {killed_targets} killed by the test, {} \
         running at the end; {:.1} s",
        logs.len(),
        ROUNDS,
        starts,
        loads.len(),
        loads
            .iter()
            .filter_map(|v| v["restored"].as_u64())
            .sum::<u64>(),
        loads
            .iter()
            .filter_map(|v| v["ended"].as_u64())
            .sum::<u64>(),
        state["counters"]["restarts"],
        raw.len(),
        attached.len(),
        count(&raw, "adopted"),
        raw.iter()
            .filter(|v| event_name(v) == "adopted" && v["source"] == "cgroup")
            .count(),
        count(&raw, "discovered"),
        count(&raw, "exited"),
        count(&raw, "attach_failed"),
        survivors.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        starts > ROUNDS / 2,
        "only {starts} of {} daemons got as far as `started`",
        ROUNDS + 1
    );
}

// ---------------------------------------------------------------- lock ---

#[test]
fn second_daemon_refuses() {
    let dir = TempDir::new("dur-lock");
    let target = Target::new(dir.path());
    let cfg = watch_config(&dir, &target.name, "200ms");
    let sdir = state_path(&cfg);
    let cfg_path = write_config(dir.path(), &cfg);
    let mut d = Daemon::start(&cfg_path, dir.path());
    d.wait_started();

    let t0 = Instant::now();
    let out = run_with_timeout(
        Command::new(REEVE)
            .args(["watch", "--config"])
            .arg(&cfg_path)
            .args(["--log-format", "json"]),
        WAIT,
    );
    let err = stderr_of(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a second reeve watch on the same state dir: {}\nstderr:\n{err}",
        out.status
    );
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one stderr line expected:\n{err}");
    let holder = format!("pid {}", d.pid);
    assert!(
        lines[0].contains(&holder),
        "the refusal should name the holder ({holder}): {err}"
    );
    println!(
        "second_daemon_refuses: refused in {:?}: {}",
        t0.elapsed(),
        lines[0]
    );

    // The first daemon is unharmed and still the only one on record.
    d.wait_scans(2, WAIT);
    let lock = fs::read_to_string(sdir.join("reeve.lock")).expect("read reeve.lock");
    assert_eq!(lock.trim(), d.pid.to_string(), "reeve.lock holds the pid");
    d.stop_ok();
    let raw = raw_audit(&sdir);
    assert_gap_free(&raw, "events.jsonl");
    assert_eq!(
        count(&raw, "started"),
        1,
        "the refused daemon must not have logged `started`:\n{raw:#?}"
    );
}

// ------------------------------------------------------------- restore ---

#[test]
fn restart_restores_without_rediscovery() {
    let dir = TempDir::new("dur-restore");
    let mut procs = ProcGuard::new();
    let target = Target::new(dir.path());
    let cfg = watch_config(&dir, &target.name, "100ms");
    let sdir = state_path(&cfg);
    let cfg_path = write_config(dir.path(), &cfg);
    let id = target.spawn(&mut procs, "60");

    let mut d1 = Daemon::start(&cfg_path, dir.path());
    d1.wait_event("discovered", id, WAIT);
    d1.stop_ok();
    let saved = load_state(&sdir);
    assert!(
        saved["processes"]
            .as_array()
            .is_some_and(|a| a.iter().any(|p| id.matches(p) && p["exited_ms"] == 0)),
        "state.json after shutdown should list {id:?} as running: {saved:#}"
    );

    // A restart restores it silently.
    let mut d2 = Daemon::start(&cfg_path, dir.path());
    let loaded = d2.wait_for("state_loaded", WAIT, |v| event_name(v) == "state_loaded");
    assert!(
        loaded["restored"].as_u64().unwrap_or(0) >= 1,
        "state_loaded should restore {id:?}: {loaded}\n{}",
        d2.log_tail()
    );
    d2.wait_scans(3, WAIT);
    assert_eq!(
        d2.about("discovered", id),
        0,
        "{id:?} was rediscovered after a restart\n{}",
        d2.log_tail()
    );
    d2.stop_ok();
    let raw = raw_audit(&sdir);
    assert_eq!(
        tally(&raw, "discovered").get(&id).copied().unwrap_or(0),
        1,
        "one `discovered` for {id:?} in the audit log:\n{}",
        history(&raw, id)
    );

    // It ends while no daemon runs: the next start says so.
    procs.kill(id.pid);
    let mut d3 = Daemon::start(&cfg_path, dir.path());
    let ev = d3.wait_event("exited", id, WAIT);
    assert_eq!(
        ev["reason"],
        "ended while reeve was not running",
        "exited: {ev}\n{}",
        d3.log_tail()
    );
    let loaded = d3.wait_for("state_loaded", WAIT, |v| event_name(v) == "state_loaded");
    assert!(
        loaded["ended"].as_u64().unwrap_or(0) >= 1,
        "state_loaded should count {id:?} as ended: {loaded}"
    );
    d3.wait_scans(2, WAIT);
    assert_eq!(d3.about("discovered", id), 0, "{}", d3.log_tail());
    assert_eq!(d3.about("exited", id), 1, "{}", d3.log_tail());
    d3.stop_ok();

    let raw = raw_audit(&sdir);
    assert_gap_free(&raw, "events.jsonl");
    let exits: Vec<&Value> = raw
        .iter()
        .filter(|v| event_name(v) == "exited" && id.matches(v))
        .collect();
    assert_eq!(exits.len(), 1, "one `exited` in the audit log: {exits:?}");
    assert_eq!(exits[0]["reason"], "ended while reeve was not running");
    assert_eq!(count(&raw, "state_loaded"), 2, "{raw:#?}");
    let state = load_state(&sdir);
    assert!(
        !state["processes"]
            .as_array()
            .is_some_and(|a| a.iter().any(|p| id.matches(p) && p["exited_ms"] == 0)),
        "{id:?} ended but state.json still has it running: {state:#}"
    );
}

// -------------------------------------------------------- bad state ---

/// Plants `bytes` as state.json, starts reeve, and checks the file is set
/// aside as `state.json.<kind>-*` with its bytes intact while the daemon
/// carries on discovering.
fn state_is_set_aside(bytes: &[u8], kind: &str) {
    let dir = TempDir::new(&format!("dur-aside-{kind}"));
    let mut procs = ProcGuard::new();
    let target = Target::new(dir.path());
    let cfg = watch_config(&dir, &target.name, "100ms");
    let sdir = state_path(&cfg);
    let cfg_path = write_config(dir.path(), &cfg);
    let planted = sdir.join("state.json");
    fs::write(&planted, bytes).expect("plant state.json");
    fs::set_permissions(&planted, fs::Permissions::from_mode(0o600)).expect("chmod state.json");

    let mut d = Daemon::start(&cfg_path, dir.path());
    let ev = d.wait_for("state_set_aside", WAIT, |v| {
        matches!(
            event_name(v),
            "state_set_aside" | "state_loaded" | "state_unusable"
        )
    });
    let ctx = format!("{ev}\n{}", d.log_tail());
    assert_eq!(event_name(&ev), "state_set_aside", "{ctx}");
    assert_eq!(ev["level"], "warn", "{ctx}");
    let moved_to = PathBuf::from(ev["moved_to"].as_str().unwrap_or(""));
    let aside = names_with(&sdir, &format!("state.json.{kind}-"));
    assert_eq!(
        aside.len(),
        1,
        "one state.json.{kind}-* file: {aside:?}\n{ctx}"
    );
    assert_eq!(
        moved_to
            .file_name()
            .map(|n| n.to_string_lossy().into_owned()),
        Some(aside[0].clone()),
        "moved_to names the file: {ctx}"
    );
    assert_eq!(
        fs::read(sdir.join(&aside[0])).expect("read the set-aside file"),
        bytes,
        "the set-aside file keeps the original bytes"
    );
    let suffix = &aside[0][format!("state.json.{kind}-").len()..];
    assert!(
        suffix
            .split('-')
            .next()
            .is_some_and(|ms| ms.parse::<u64>().is_ok()),
        "state.json.{kind}-<ms>: {}",
        aside[0]
    );

    // Business as usual: a full scan finds a new target.
    let id = target.spawn(&mut procs, "30");
    d.wait_event("discovered", id, WAIT);
    d.stop_ok();
    let state = load_state(&sdir);
    assert_eq!(state["version"], 1, "a fresh state.json: {state:#}");
    assert!(
        state["processes"]
            .as_array()
            .is_some_and(|a| a.iter().any(|p| id.matches(p))),
        "the fresh state lists {id:?}: {state:#}"
    );
    assert_eq!(
        fs::read(sdir.join(&aside[0])).expect("read the set-aside file"),
        bytes,
        "the set-aside file is untouched by the run"
    );
    let raw = raw_audit(&sdir);
    assert_gap_free(&raw, "events.jsonl");
    assert_eq!(count(&raw, "state_set_aside"), 1, "audited once");
}

#[test]
fn corrupt_and_newer_state_are_set_aside() {
    let mut garbage = b"{\"version\": 1, \"processes\": [{\"pid\": 12".to_vec();
    garbage.extend_from_slice(&[0xff, 0xfe, 0, 1, b'\n', 0x80]);
    state_is_set_aside(&garbage, "corrupt");
    let newer = json!({
        "version": 99,
        "saved_at_ms": now_ms(),
        "daemon_pid": 1,
        "started_ms": now_ms(),
        "processes": [],
        "counters": {},
        "from_the_future": {"x": 1},
    });
    state_is_set_aside(
        serde_json::to_string_pretty(&newer).unwrap().as_bytes(),
        "newer",
    );
}

// --------------------------------------------------------- permissions ---

/// `reeve watch` on `cfg` until it exits by itself or has started, found
/// `id` and been stopped with SIGTERM. Returns the exit status, whether it
/// had started, and its stderr.
fn watch_briefly(cfg: &Path, dir: &Path, id: Ident) -> (ExitStatus, bool, String) {
    let log = dir.join(format!("watch-{}.log", random_hex16()));
    let mut child: Child = spawn_retry(
        Command::new(REEVE)
            .args(["watch", "--config"])
            .arg(cfg)
            .args(["--log-format", "json", "--log-level", "debug"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(fs::File::create(&log).expect("create log"))),
    );
    let deadline = Instant::now() + WAIT;
    let mut started = false;
    let mut signalled = false;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return (
                status,
                started,
                fs::read_to_string(&log).unwrap_or_default(),
            );
        }
        let text = fs::read_to_string(&log).unwrap_or_default();
        started |= text.contains("\"event\":\"started\"");
        let found = json_lines_lossy(&text)
            .iter()
            .any(|v| event_name(v) == "discovered" && id.matches(v));
        if found && !signalled {
            // SAFETY: kill(2) on the pid of our child, not yet reaped.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            signalled = true;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("reeve watch neither exited nor found {id:?} in time\n{text}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// The JSON objects among complete lines of `text`.
fn json_lines_lossy(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(Value::is_object)
        .collect()
}

#[test]
fn permissions_and_symlinks() {
    // After a run: a private directory of private files.
    let dir = TempDir::new("dur-perm");
    let mut procs = ProcGuard::new();
    let target = Target::new(dir.path());
    let id = target.spawn(&mut procs, "60");
    let cfg = watch_config(&dir, &target.name, "100ms");
    let sdir = state_path(&cfg);
    // A loose directory is tightened, not trusted.
    fs::set_permissions(&sdir, fs::Permissions::from_mode(0o755)).unwrap();
    let cfg_path = write_config(dir.path(), &cfg);
    let mut d = Daemon::start(&cfg_path, dir.path());
    d.wait_event("discovered", id, WAIT);
    d.stop_ok();
    assert_eq!(mode_of(&sdir), 0o700, "state dir mode");
    for name in ["state.json", "events.jsonl", "reeve.lock"] {
        let p = sdir.join(name);
        assert!(
            fs::symlink_metadata(&p).is_ok_and(|m| m.is_file()),
            "{name} is a regular file"
        );
        assert_eq!(mode_of(&p), 0o600, "{name} mode");
    }
    let mut loose = Vec::new();
    for d in dirs_bottom_up(&sdir) {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let m = mode_of(&e.path());
            if m & 0o077 != 0 {
                loose.push(format!("{} {m:o}", e.path().display()));
            }
        }
    }
    assert!(
        loose.is_empty(),
        "files in the state dir readable by others: {loose:?}"
    );

    // A symlink planted at each store file is never written through.
    let outside = TempDir::new("dur-perm-outside");
    for name in ["events.jsonl", "state.json", "reeve.lock", "events.seq"] {
        let case = TempDir::new("dur-perm-link");
        let cfg = watch_config(&case, &target.name, "100ms");
        let sdir = state_path(&cfg);
        let cfg_path = write_config(case.path(), &cfg);
        let precious = outside.join(&format!("precious-{name}"));
        let content = format!("precious {name} {}\n", random_hex16());
        fs::write(&precious, &content).unwrap();
        fs::set_permissions(&precious, fs::Permissions::from_mode(0o644)).unwrap();
        let before = fs::metadata(&precious).unwrap();
        let link = sdir.join(name);
        symlink(&precious, &link).unwrap();

        let (status, started, log) = watch_briefly(&cfg_path, case.path(), id);
        let text = fs::read_to_string(&precious).expect("the link target still exists");
        assert_eq!(
            text, content,
            "reeve wrote through a symlink at {name}\nexit {status}\n{log}"
        );
        let after = fs::metadata(&precious).unwrap();
        assert_eq!(
            (after.mode() & 0o7777, after.len()),
            (before.mode() & 0o7777, before.len()),
            "the link target's mode or size changed ({name})"
        );
        if status.code() == Some(1) {
            let said = log.contains(name) || log.contains("symbolic link");
            assert!(
                said && !started,
                "a refusal over {name} should name it and come before `started`:\n{log}"
            );
            println!(
                "permissions_and_symlinks: {name}: refused to start: {}",
                log.trim()
            );
        } else {
            assert_eq!(
                status.code(),
                Some(0),
                "reeve with a symlink at {name}: {status}\n{log}"
            );
            let link_now = fs::symlink_metadata(&link);
            println!(
                "permissions_and_symlinks: {name}: started and stopped; {name} is now {}; \
                 warnings: {:?}",
                match &link_now {
                    Ok(m) if m.file_type().is_symlink() => "still the symlink",
                    Ok(m) if m.is_file() => "a regular file",
                    Ok(_) => "something else",
                    Err(_) => "gone",
                },
                json_lines_lossy(&log)
                    .iter()
                    .filter(|v| matches!(v["level"].as_str(), Some("warn" | "error")))
                    .map(Value::to_string)
                    .collect::<Vec<_>>()
            );
        }
    }
}

// ----------------------------------------------------------- commands ---

#[test]
fn status_and_events_commands() {
    let sub = Subtree::new();
    let dir = TempDir::new("dur-status");
    let mut procs = ProcGuard::new();
    let target = Target::new(dir.path());
    let cfg = pool_config(&dir, &sub, &target.name, "100ms");
    let sdir = state_path(&cfg);
    let cfg_path = write_config(dir.path(), &cfg);

    let mut d = Daemon::start(&cfg_path, dir.path());
    d.wait_started();
    let id = target.spawn(&mut procs, "60");
    let ev = d.wait_for(&format!("attached of {id:?}"), WAIT, |v| {
        matches!(event_name(v), "attached" | "attach_failed") && id.matches(v)
    });
    assert_eq!(event_name(&ev), "attached", "{ev}\n{}", d.log_tail());
    assert_eq!(ev["job"], "pool.p", "{ev}");

    // Running: the daemon's pid, the pool with the target in it, and
    // (within the flush interval) the target in the saved state.
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        let s: Value = serde_json::from_str(&reeve_ok(&["status", "--json"], &cfg_path))
            .expect("status --json is JSON");
        let listed = s["state"]["processes"]
            .as_array()
            .is_some_and(|a| a.iter().any(|p| id.matches(p)));
        if listed || Instant::now() >= deadline {
            assert!(listed, "state never listed {id:?}: {s:#}");
            break s;
        }
        thread::sleep(Duration::from_millis(100));
    };
    let ctx = format!("{status:#}");
    assert_eq!(status["daemon"]["running"], true, "{ctx}");
    assert_eq!(status["daemon"]["pid"], d.pid, "{ctx}");
    let jobs = status["jobs"].as_array().expect("jobs array");
    let pool = jobs
        .iter()
        .find(|j| j["group"] == "pool.p")
        .unwrap_or_else(|| panic!("no pool.p job: {ctx}"));
    assert!(
        pool["procs"]
            .as_array()
            .is_some_and(|a| a.iter().any(|p| p.as_u64() == Some(id.pid.into()))),
        "pool.p procs should hold {}: {ctx}",
        id.pid
    );
    let text = reeve_ok(&["status"], &cfg_path);
    assert!(
        text.contains(&format!("pid {}", d.pid)) && text.contains("pool.p"),
        "status text:\n{text}"
    );

    d.stop_ok();
    let status: Value = serde_json::from_str(&reeve_ok(&["status", "--json"], &cfg_path))
        .expect("status --json is JSON");
    assert_eq!(status["daemon"]["running"], false, "{status:#}");
    assert!(status["daemon"]["pid"].is_null(), "{status:#}");
    let text = reeve_ok(&["status"], &cfg_path);
    assert!(text.contains("not running"), "status text:\n{text}");

    // events: all, --since, --job.
    let raw = raw_audit(&sdir);
    assert_gap_free(&raw, "events.jsonl");
    let all = json_lines(reeve_ok(&["events", "--json"], &cfg_path).as_bytes());
    assert_eq!(all, raw, "reeve events --json prints the whole log");
    let n = raw
        .iter()
        .find(|v| event_name(v) == "attached")
        .and_then(|v| v["seq"].as_u64())
        .expect("attached in the audit log")
        - 1;
    let since = json_lines(
        reeve_ok(&["events", "--json", "--since", &n.to_string()], &cfg_path).as_bytes(),
    );
    let want: Vec<Value> = raw
        .iter()
        .filter(|v| v["seq"].as_u64().unwrap() > n)
        .cloned()
        .collect();
    assert!(!since.is_empty());
    assert_eq!(since, want, "--since {n}");
    let last = raw.len().to_string();
    assert!(
        reeve_ok(&["events", "--json", "--since", &last], &cfg_path)
            .trim()
            .is_empty(),
        "--since the last seq prints nothing"
    );

    let want: Vec<Value> = raw
        .iter()
        .filter(|v| v["job"] == "pool.p")
        .cloned()
        .collect();
    assert!(
        want.iter()
            .any(|v| event_name(v) == "attached" && id.matches(v)),
        "the attach is an event of pool.p"
    );
    for job in ["p", "pool.p"] {
        let got = json_lines(reeve_ok(&["events", "--json", "--job", job], &cfg_path).as_bytes());
        assert_eq!(got, want, "--job {job}");
    }
    let text = reeve_ok(&["events", "--job", "p"], &cfg_path);
    assert_eq!(
        text.lines().count(),
        want.len(),
        "--job p (text) prints one line per event:\n{text}"
    );
    let both = json_lines(
        reeve_ok(
            &["events", "--json", "--job", "p", "--since", &n.to_string()],
            &cfg_path,
        )
        .as_bytes(),
    );
    assert!(both
        .iter()
        .all(|v| v["job"] == "pool.p" && v["seq"].as_u64().unwrap() > n));
    assert_eq!(
        both.len(),
        want.iter()
            .filter(|v| v["seq"].as_u64().unwrap() > n)
            .count()
    );
}

// ---------------------------------------------------------------- idle ---

/// (inode, mtime in ns, size) of `path`.
fn stamp(path: &Path) -> (u64, i64, u64) {
    let m = fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (
        m.ino(),
        m.mtime() * 1_000_000_000 + m.mtime_nsec(),
        m.size(),
    )
}

/// With nothing to do, a daemon writes nothing: after its first snapshot
/// neither state.json nor the audit log (nor its sidecar) changes, however
/// many scans run.
#[test]
fn an_idle_daemon_writes_nothing() {
    let dir = TempDir::new("dur-idle");
    // A target rule whose name no process carries.
    let target = Target::new(dir.path());
    let cfg = watch_config(&dir, &target.name, "100ms");
    let sdir = state_path(&cfg);
    let mut d = Daemon::start(&write_config(dir.path(), &cfg), dir.path());
    d.wait_started();
    d.wait_scans(3, WAIT);
    let files = ["state.json", "events.jsonl", "events.seq"];
    let before: Vec<_> = files.iter().map(|f| stamp(&sdir.join(f))).collect();
    // More than two flush intervals of scans.
    d.wait_scans(25, WAIT);
    let after: Vec<_> = files.iter().map(|f| stamp(&sdir.join(f))).collect();
    for (i, f) in files.iter().enumerate() {
        assert_eq!(
            before[i],
            after[i],
            "{f} was written while the daemon was idle\n{}",
            d.log_tail()
        );
    }
    d.stop_ok();
}

// ------------------------------------------------------ ended while down ---

/// A target discovered after the last snapshot (its `discovered` is in
/// the audit log, the snapshot does not have it) that ends while reeve is
/// down gets its `exited` when reeve starts again.
#[test]
fn a_discovery_after_the_last_snapshot_gets_its_exit_after_a_crash() {
    for attempt in 1..=5 {
        let dir = TempDir::new("dur-after-snap");
        let mut procs = ProcGuard::new();
        let target = Target::new(dir.path());
        let cfg = watch_config(&dir, &target.name, "200ms");
        let sdir = state_path(&cfg);
        let cfg_path = write_config(dir.path(), &cfg);
        let mut d = Daemon::start(&cfg_path, dir.path());
        d.wait_started();
        // Past the flush interval, so the first discovery is saved at
        // once and the second, right after it, has to wait a second.
        thread::sleep(Duration::from_millis(1200));
        let first = target.spawn(&mut procs, "60");
        d.wait_event("discovered", first, WAIT);
        let second = target.spawn(&mut procs, "60");
        let deadline = Instant::now() + WAIT;
        while !raw_audit(&sdir)
            .iter()
            .any(|v| event_name(v) == "discovered" && second.matches(v))
        {
            assert!(Instant::now() < deadline, "{}", d.log_tail());
            thread::sleep(Duration::from_millis(2));
        }
        d.stop_with(libc::SIGKILL);
        let saved = load_state(&sdir);
        let in_snapshot = saved["processes"]
            .as_array()
            .is_some_and(|a| a.iter().any(|p| second.matches(p)));
        if in_snapshot {
            eprintln!("attempt {attempt}: the snapshot caught up before the kill; again");
            continue;
        }
        procs.kill(second.pid);

        let mut d2 = Daemon::start(&cfg_path, dir.path());
        let ev = d2.wait_event("exited", second, WAIT);
        assert_eq!(ev["reason"], "ended while reeve was not running", "{ev}");
        d2.wait_scans(3, WAIT);
        assert_eq!(d2.about("exited", second), 1, "{}", d2.log_tail());
        assert_eq!(d2.about("exited", first), 0, "{}", d2.log_tail());
        d2.stop_ok();
        let raw = raw_audit(&sdir);
        assert_gap_free(&raw, "events.jsonl");
        assert_eq!(tally(&raw, "exited").get(&second), Some(&1), "{raw:#?}");
        return;
    }
    panic!("in 5 attempts the snapshot always caught up before the kill");
}

/// A per-process job whose process ended while reeve was down is removed
/// at the next start, group and record, with the same `job_removed` as
/// when reeve sees the exit itself.
#[test]
fn a_job_whose_process_ended_while_reeve_was_down_is_removed_at_start() {
    let sub = Subtree::new();
    let dir = TempDir::new("dur-job-down");
    let mut procs = ProcGuard::new();
    let target = Target::new(dir.path());
    let mut cfg = watch_config(&dir, &target.name, "200ms");
    cfg["targets"][0]["limits"] = json!({"pids": 64});
    cfg["cgroup"] = json!({"root": sub.root()});
    let sdir = state_path(&cfg);
    let cfg_path = write_config(dir.path(), &cfg);

    let mut d = Daemon::start(&cfg_path, dir.path());
    d.wait_started();
    let id = target.spawn(&mut procs, "60");
    let ev = d.wait_for(&format!("attached of {id:?}"), WAIT, |v| {
        matches!(event_name(v), "attached" | "attach_failed") && id.matches(v)
    });
    assert_eq!(event_name(&ev), "attached", "{ev}\n{}", d.log_tail());
    let job = ev["job"].as_str().expect("job name").to_string();
    assert!(job.starts_with("job."), "{ev}");
    let group = sub.root().join(&job);
    let record = sdir.join("jobs").join(format!("{job}.json"));
    assert!(group.is_dir() && record.is_file(), "{ev}");
    d.stop_with(libc::SIGKILL);
    procs.kill(id.pid);

    let mut d2 = Daemon::start(&cfg_path, dir.path());
    d2.wait_event("exited", id, WAIT);
    d2.wait_for(&format!("job_removed of {job}"), WAIT, |v| {
        event_name(v) == "job_removed" && v["job"] == job.as_str()
    });
    d2.stop_ok();
    assert!(!group.exists(), "{} is still there", group.display());
    assert!(!record.exists(), "{} is still there", record.display());
    let raw = raw_audit(&sdir);
    assert_eq!(
        raw.iter()
            .filter(|v| event_name(v) == "job_removed" && v["job"] == job.as_str())
            .count(),
        1,
        "{raw:#?}"
    );
}

// ----------------------------------------------------- hostile files ---

/// A state directory others can write is refused (one line that says how
/// to fix it, JSON with --log-format json, the mode left alone); files in
/// the state directory that are linked in or writable by others are set
/// aside with an event, never used, and what they point at is untouched.
#[test]
fn open_state_dirs_are_refused_and_untrusted_files_set_aside() {
    let dir = TempDir::new("dur-untrusted");
    let mut procs = ProcGuard::new();
    let target = Target::new(dir.path());
    let cfg = watch_config(&dir, &target.name, "100ms");
    let sdir = state_path(&cfg);
    let cfg_path = write_config(dir.path(), &cfg);

    fs::set_permissions(&sdir, fs::Permissions::from_mode(0o777)).unwrap();
    for format in ["text", "json"] {
        let out = run_with_timeout(
            Command::new(REEVE)
                .args(["watch", "--config"])
                .arg(&cfg_path)
                .args(["--log-format", format]),
            WAIT,
        );
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(1), "{format}: {err}");
        assert_eq!(err.lines().count(), 1, "{format}: one line: {err:?}");
        assert!(
            err.contains(&format!("chmod 0700 {}", sdir.display())),
            "{format}: {err}"
        );
        if format == "json" {
            let v: Value = serde_json::from_str(err.trim()).expect("a JSON line");
            assert_eq!(v["event"], "watch_failed", "{v}");
        }
    }
    assert_eq!(mode_of(&sdir), 0o777, "refused, not tightened");
    fs::set_permissions(&sdir, fs::Permissions::from_mode(0o700)).unwrap();

    // A state.json hard-linked to a file elsewhere, an audit log others
    // can write.
    let outside = dir.join("outside.json");
    fs::write(&outside, br#"{"version":1,"processes":[]}"#).unwrap();
    fs::hard_link(&outside, sdir.join("state.json")).unwrap();
    let planted = "{\"seq\":999,\"ts_ms\":1,\"event\":\"forged\"}\n";
    fs::write(sdir.join("events.jsonl"), planted).unwrap();
    fs::set_permissions(sdir.join("events.jsonl"), fs::Permissions::from_mode(0o666)).unwrap();

    let id = target.spawn(&mut procs, "60");
    let mut d = Daemon::start(&cfg_path, dir.path());
    let aside = d.wait_for("state_set_aside", WAIT, |v| {
        event_name(v) == "state_set_aside"
    });
    assert!(
        aside["reason"]
            .as_str()
            .unwrap_or("")
            .contains("hard links"),
        "{aside}"
    );
    let log_aside = d.wait_for("file_set_aside", WAIT, |v| {
        event_name(v) == "file_set_aside"
    });
    assert!(
        log_aside["reason"]
            .as_str()
            .unwrap_or("")
            .contains("other users write"),
        "{log_aside}"
    );
    d.wait_event("discovered", id, WAIT);
    d.stop_ok();
    assert_eq!(
        fs::read(&outside).unwrap(),
        br#"{"version":1,"processes":[]}"#,
        "the linked file is untouched"
    );
    assert_eq!(
        fs::metadata(&outside).unwrap().nlink(),
        2,
        "moved, not removed"
    );
    let fresh = fs::read_to_string(sdir.join("events.jsonl")).unwrap();
    assert!(
        !fresh.contains("forged"),
        "the planted log was used: {fresh}"
    );
    let moved = names_with(&sdir, "events.jsonl.untrusted-");
    assert_eq!(moved.len(), 1, "{moved:?}");
    assert_eq!(fs::read_to_string(sdir.join(&moved[0])).unwrap(), planted);
}

/// A path with a newline in it gives a one-line error.
#[test]
fn names_in_errors_stay_on_one_line() {
    let dir = TempDir::new("dur-newline");
    let target = Target::new(dir.path());
    let mut cfg = watch_config(&dir, &target.name, "100ms");
    let evil = dir.join("evil\nstate");
    fs::write(&evil, b"not a directory").unwrap();
    cfg["state_dir"] = json!(evil);
    let cfg_path = write_config(dir.path(), &cfg);
    let out = run_with_timeout(
        Command::new(REEVE)
            .args(["watch", "--config"])
            .arg(&cfg_path)
            .args(["--log-format", "text"]),
        WAIT,
    );
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err:?}");
    assert!(err.contains("evil\\nstate"), "{err}");
}

// ------------------------------------------------------ read-only views ---

/// Every entry under `dir` with its mode, size and mtime.
fn tree(dir: &Path) -> Vec<(PathBuf, u32, u64, i64)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let m = fs::symlink_metadata(&d).unwrap();
        out.push((
            d.clone(),
            m.mode(),
            m.size(),
            m.mtime_nsec() + m.mtime() * 1_000_000_000,
        ));
        if m.is_dir() {
            for e in fs::read_dir(&d).unwrap() {
                todo.push(e.unwrap().path());
            }
        }
    }
    out.sort();
    out
}

/// `reeve status` and `reeve events` change nothing in the state
/// directory (no chmod, nothing set aside): they report an unusable state
/// file and job record, and `events` skips an unusable rotated generation
/// with a warning instead of failing.
#[test]
fn status_and_events_change_nothing() {
    let dir = TempDir::new("dur-readonly");
    let target = Target::new(dir.path());
    let cfg = watch_config(&dir, &target.name, "100ms");
    let sdir = state_path(&cfg);
    let cfg_path = write_config(dir.path(), &cfg);
    fs::set_permissions(&sdir, fs::Permissions::from_mode(0o750)).unwrap();
    fs::write(sdir.join("state.json"), b"{\"version\":1,").unwrap();
    fs::create_dir(sdir.join("jobs")).unwrap();
    fs::write(sdir.join("jobs/job.broken.json"), b"nope").unwrap();
    fs::write(
        sdir.join("events.jsonl"),
        "{\"seq\":3,\"ts_ms\":1,\"event\":\"a\"}\n{\"seq\":4,\"ts_ms\":2,\"event\":\"b\"}\n",
    )
    .unwrap();
    // A rotated generation that cannot be used: writable by others.
    let bad_gen = sdir.join("events.jsonl.1");
    fs::write(&bad_gen, "{\"seq\":1,\"ts_ms\":0,\"event\":\"x\"}\n").unwrap();
    fs::set_permissions(&bad_gen, fs::Permissions::from_mode(0o666)).unwrap();
    let before = tree(&sdir);

    let out = run_with_timeout(
        Command::new(REEVE)
            .args(["status", "--config"])
            .arg(&cfg_path),
        WAIT,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr_of(&out));
    assert!(text.contains("state.json"), "names the state file:\n{text}");
    assert!(
        text.contains("job.broken.json"),
        "names the record:\n{text}"
    );
    let out = run_with_timeout(
        Command::new(REEVE)
            .args(["status", "--json", "--config"])
            .arg(&cfg_path),
        WAIT,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let s: Value = serde_json::from_slice(&out.stdout).expect("status --json is JSON");
    assert!(s["state_error"].is_string(), "{s:#}");

    let out = run_with_timeout(
        Command::new(REEVE)
            .args(["events", "--json", "--config"])
            .arg(&cfg_path),
        WAIT,
    );
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let got: Vec<u64> = json_lines(&out.stdout)
        .iter()
        .filter_map(|v| v["seq"].as_u64())
        .collect();
    assert_eq!(got, vec![3, 4]);
    assert!(
        err.contains("events.jsonl.1") && err.contains("warning"),
        "{err}"
    );

    assert_eq!(tree(&sdir), before, "the state directory changed");
}
