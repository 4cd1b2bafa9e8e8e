//! Discovery as an operator sees it: `reeve scan` reports who matches, and
//! `reeve watch` notices every target exactly once when it appears and once
//! when it goes, under load, across pid reuse, and never itself.
//!
//! Every daemon here is scoped to processes the test started: targets are
//! copies of /bin/sleep under a unique basename, matched by exe, and (where
//! they are direct children) filtered by `parent_pids: [test pid]`.

mod common;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

fn me() -> u32 {
    std::process::id()
}

fn euid() -> u64 {
    // SAFETY: geteuid/getegid cannot fail.
    unsafe { libc::geteuid() as u64 }
}

fn egid() -> u64 {
    // SAFETY: as above.
    unsafe { libc::getegid() as u64 }
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Tallies events named `event` by identity.
fn tally(events: &[Value], event: &str) -> HashMap<Ident, usize> {
    let mut m = HashMap::new();
    for v in events.iter().filter(|v| event_name(v) == event) {
        if let Some(id) = Ident::of_event(v) {
            *m.entry(id).or_insert(0) += 1;
        }
    }
    m
}

/// Identities whose count is not exactly one, for error messages.
fn not_once(ids: &[Ident], counts: &HashMap<Ident, usize>) -> Vec<(Ident, usize)> {
    ids.iter()
        .map(|id| (*id, counts.get(id).copied().unwrap_or(0)))
        .filter(|(_, n)| *n != 1)
        .collect()
}

// ---------------------------------------------------------------- scan ---

#[test]
fn scan_json_reports_identity() {
    let dir = TempDir::new("scan-identity");
    let mut procs = ProcGuard::new();
    let target = Target::new(dir.path());
    let ids: Vec<Ident> = (0..3).map(|_| target.spawn(&mut procs, "30")).collect();
    let cfg = config_for(&dir, "enc", &target.name, Some(&[me()]), "poll", "1s");
    let cfg_path = write_config(dir.path(), &cfg);

    let out = run_with_timeout(
        Command::new(REEVE)
            .args(["scan", "--json", "--config"])
            .arg(&cfg_path),
        WAIT,
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "scan: {}; stderr {}",
        out.status,
        stderr_of(&out)
    );
    let now = now_ms();
    let lines = json_lines(&out.stdout);
    let got: BTreeSet<u32> = lines
        .iter()
        .map(|v| v["pid"].as_u64().expect("pid is a number") as u32)
        .collect();
    let want: BTreeSet<u32> = ids.iter().map(|i| i.pid).collect();
    assert_eq!(got, want, "scanned pids; output:\n{lines:#?}");
    assert_eq!(lines.len(), 3, "one line per process:\n{lines:#?}");

    let my_ns = pid_ns_of("self");
    let path = target.path.to_str().unwrap();
    for v in &lines {
        let pid = v["pid"].as_u64().unwrap() as u32;
        let id = ids.iter().find(|i| i.pid == pid).unwrap();
        let ctx = format!("{v:#}");
        assert_eq!(v["ppid"], me(), "ppid: {ctx}");
        assert_eq!(v["uid"], euid(), "uid: {ctx}");
        assert_eq!(v["gid"], egid(), "gid: {ctx}");
        assert_eq!(v["start_ticks"], id.start_ticks, "start_ticks: {ctx}");
        assert_eq!(v["comm"], comm_of(&target.name), "comm: {ctx}");
        let exe = v["exe"].as_str().unwrap_or_else(|| panic!("exe: {ctx}"));
        assert!(exe.ends_with(&format!("/{}", target.name)), "exe: {ctx}");
        assert_eq!(exe, path, "exe: {ctx}");
        assert_eq!(v["cmdline"], json!([path, "30"]), "cmdline: {ctx}");
        assert_eq!(v["cwd"], dir.path().to_str().unwrap(), "cwd: {ctx}");
        assert_eq!(v["rule"], "enc", "rule: {ctx}");
        assert_eq!(v["pid_ns"], my_ns, "pid_ns: {ctx}");
        let started = v["started_at_ms"]
            .as_u64()
            .unwrap_or_else(|| panic!("started_at_ms: {ctx}"));
        assert!(
            started.abs_diff(now) < 10_000,
            "started_at_ms {started} is not within 10 s of now {now}: {ctx}"
        );
    }
}

#[test]
fn scan_never_lists_itself() {
    let dir_a = TempDir::new("scan-self-a");
    let dir_b = TempDir::new("scan-self-b");
    let mut procs = ProcGuard::new();
    let name = unique_name();
    let copy = dir_a.join(&name);
    copy_exe(Path::new(REEVE), &copy);
    // Positive control: a sleep under the same basename elsewhere.
    let control = Target::with_name(dir_b.path(), &name).spawn(&mut procs, "30");
    let cfg = json!({
        "targets": [{"name": "self", "match": {"exe": [name]}}],
        "discovery": {"mode": "poll", "scan_interval": "1s"},
        "state_dir": state_dir(&dir_a),
    });
    let cfg_path = write_config(dir_a.path(), &cfg);

    let (scanner, out) = run_with_timeout_pid(
        Command::new(&copy)
            .args(["scan", "--json", "--config"])
            .arg(&cfg_path),
        WAIT,
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "scan: {}; stderr {}",
        out.status,
        stderr_of(&out)
    );
    let lines = json_lines(&out.stdout);
    let pids: BTreeSet<u32> = lines
        .iter()
        .filter_map(|v| v["pid"].as_u64())
        .map(|p| p as u32)
        .collect();
    assert!(
        !pids.contains(&scanner),
        "reeve scan (pid {scanner}) listed itself:\n{lines:#?}"
    );
    assert_eq!(
        pids,
        BTreeSet::from([control.pid]),
        "only the control should be listed:\n{lines:#?}"
    );
}

// --------------------------------------------------------------- watch ---

fn discovers_and_notices_exit(mode: &str, source: &str) {
    let dir = TempDir::new(&format!("watch-{mode}"));
    let mut procs = ProcGuard::new();
    let target = Target::new(dir.path());
    let cfg = config_for(&dir, "enc", &target.name, Some(&[me()]), mode, "200ms");
    let mut d = Daemon::start(&write_config(dir.path(), &cfg), dir.path());

    let started = d.wait_started();
    assert_eq!(started["mode"], mode, "started: {started}");
    assert_eq!(started["pid"], d.pid, "started: {started}");
    assert_eq!(started["level"], "info", "started: {started}");
    assert_eq!(
        started["version"],
        env!("CARGO_PKG_VERSION"),
        "started: {started}"
    );
    assert_eq!(started["capacity"], 4096, "started: {started}");
    assert_eq!(started["state_dir"], cfg["state_dir"], "started: {started}");
    assert_eq!(
        started["cgroup_root"], "none: no rule sets limits or a pool",
        "started: {started}"
    );
    assert!(started["ts_ms"].is_u64(), "started: {started}");
    // Let the first scan pass, so that in netlink mode the target can only
    // be found through the connector before the next scan is due.
    d.wait_scans(1, WAIT);

    let spawned_ms = now_ms();
    let id = target.spawn(&mut procs, "30");
    let found = d.wait_event("discovered", id, WAIT);
    let latency = found["ts_ms"]
        .as_u64()
        .unwrap_or(0)
        .saturating_sub(spawned_ms);
    let ctx = format!("{found}\n{}", d.log_tail());
    assert_eq!(found["source"], source, "source: {ctx}");
    assert_eq!(found["rule"], "enc", "rule: {ctx}");
    assert_eq!(found["ppid"], me(), "ppid: {ctx}");
    assert_eq!(found["uid"], euid(), "uid: {ctx}");
    assert_eq!(found["comm"], comm_of(&target.name), "comm: {ctx}");
    assert_eq!(found["level"], "info", "level: {ctx}");

    let killed_ms = now_ms();
    procs.kill(id.pid);
    let gone = d.wait_event("exited", id, WAIT);
    let exit_latency = gone["ts_ms"]
        .as_u64()
        .unwrap_or(0)
        .saturating_sub(killed_ms);
    assert_eq!(gone["rule"], "enc", "exited: {gone}");
    assert_eq!(gone["comm"], comm_of(&target.name), "exited: {gone}");

    // A few more scans: nothing about this identity may be repeated.
    d.wait_scans(3, WAIT);
    let events = d.events();
    let disc = tally(&events, "discovered");
    let exit = tally(&events, "exited");
    assert_eq!(
        disc.get(&id),
        Some(&1),
        "discovered count\n{}",
        d.log_tail()
    );
    assert_eq!(exit.get(&id), Some(&1), "exited count\n{}", d.log_tail());
    assert_eq!(
        disc.len(),
        1,
        "only our target may be discovered\n{}",
        d.log_tail()
    );
    let pos = |e: &str| {
        events
            .iter()
            .position(|v| event_name(v) == e && id.matches(v))
            .unwrap()
    };
    assert!(pos("discovered") < pos("exited"), "order\n{}", d.log_tail());
    d.stop_ok();
    eprintln!(
        "[{mode}] discovered {latency} ms after spawn, exit logged {exit_latency} ms after kill \
         (log ts_ms, ms resolution), {} scans",
        d.count("scan")
    );
}

#[test]
fn watch_discovers_and_notices_exit_netlink() {
    discovers_and_notices_exit("netlink", "netlink");
}

#[test]
fn watch_discovers_and_notices_exit_poll() {
    discovers_and_notices_exit("poll", "scan");
}

#[test]
fn watch_discovers_preexisting_targets() {
    let dir = TempDir::new("watch-pre");
    let mut procs = ProcGuard::new();
    let target = Target::new(dir.path());
    let ids: Vec<Ident> = (0..3).map(|_| target.spawn(&mut procs, "30")).collect();
    let cfg = config_for(&dir, "pre", &target.name, Some(&[me()]), "auto", "200ms");
    let mut d = Daemon::start(&write_config(dir.path(), &cfg), dir.path());
    d.wait_started();
    for id in &ids {
        let v = d.wait_event("discovered", *id, WAIT);
        assert_eq!(v["source"], "scan", "{v}\n{}", d.log_tail());
        assert_eq!(v["rule"], "pre", "{v}");
    }
    d.wait_scans(3, WAIT);
    let events = d.events();
    let disc = tally(&events, "discovered");
    assert!(
        not_once(&ids, &disc).is_empty() && disc.len() == 3,
        "each pre-existing target discovered exactly once: {:?}\n{}",
        disc,
        d.log_tail()
    );

    // The scan event's shape: one per scan, info when it changed something.
    let scans: Vec<&Value> = events.iter().filter(|v| event_name(v) == "scan").collect();
    for s in &scans {
        for f in ["found", "new", "tracked", "gone", "duration_us"] {
            assert!(s[f].is_u64(), "scan.{f} should be a number: {s}");
        }
        let kind = s["kind"].as_str().unwrap_or("");
        // A netlink-mode rescan with no process created or ended since the
        // last scan is skipped and said as such.
        assert!(
            kind == "deep" || kind == "steady" || kind == "skipped",
            "scan.kind: {s}"
        );
        let changed = s["new"].as_u64().unwrap_or(0) + s["gone"].as_u64().unwrap_or(0) > 0;
        let level = if changed { "info" } else { "debug" };
        assert_eq!(s["level"], level, "scan level: {s}");
    }
    assert!(
        scans.iter().any(|s| s["new"].as_u64().unwrap_or(0) >= 3),
        "a scan should report the 3 new targets:\n{}",
        d.log_tail()
    );
    d.stop_ok();
}

#[test]
fn thousand_concurrent_targets() {
    const N: usize = 1000;
    let dir = TempDir::new("watch-1000");
    let mut procs = ProcGuard::new();
    let target = Target::new(dir.path());
    let cfg = config_for(&dir, "many", &target.name, Some(&[me()]), "auto", "500ms");
    let cfg_path = write_config(dir.path(), &cfg);

    let t0 = Instant::now();
    let mut ids: Vec<Ident> = (0..N / 2).map(|_| target.spawn(&mut procs, "60")).collect();
    let mut d = Daemon::start(&cfg_path, dir.path());
    d.wait_started();
    ids.extend((0..N - N / 2).map(|_| target.spawn(&mut procs, "60")));
    let spawned = t0.elapsed();
    let want: HashSet<Ident> = ids.iter().copied().collect();
    assert_eq!(want.len(), N);

    let t1 = Instant::now();
    let mut cursor = 0;
    let mut found: HashSet<Ident> = HashSet::new();
    d.wait_until(
        &format!("all {N} targets discovered"),
        Duration::from_secs(30),
        |d| {
            for v in d.since(&mut cursor) {
                if event_name(v) == "discovered" {
                    found.extend(Ident::of_event(v));
                }
            }
            want.is_subset(&found)
        },
    );
    let discovered_in = t1.elapsed();

    let t2 = Instant::now();
    procs.kill_all();
    let mut cursor = 0;
    let mut gone: HashSet<Ident> = HashSet::new();
    d.wait_until(
        &format!("all {N} targets exited"),
        Duration::from_secs(30),
        |d| {
            for v in d.since(&mut cursor) {
                if event_name(v) == "exited" {
                    gone.extend(Ident::of_event(v));
                }
            }
            want.is_subset(&gone)
        },
    );
    let exited_in = t2.elapsed();
    d.wait_scans(2, WAIT);

    let events = d.events();
    let disc = tally(&events, "discovered");
    let exit = tally(&events, "exited");
    let bad_disc = not_once(&ids, &disc);
    let bad_exit = not_once(&ids, &exit);
    assert!(
        bad_disc.is_empty(),
        "{} targets not discovered exactly once, e.g. {:?}",
        bad_disc.len(),
        &bad_disc[..bad_disc.len().min(10)]
    );
    assert!(
        bad_exit.is_empty(),
        "{} targets did not exit exactly once, e.g. {:?}",
        bad_exit.len(),
        &bad_exit[..bad_exit.len().min(10)]
    );
    assert_eq!(disc.len(), N, "discovered identities that are not ours");
    let by_source = |s: &str| {
        events
            .iter()
            .filter(|v| event_name(v) == "discovered" && v["source"] == s)
            .count()
    };
    let (netlink, scan) = (by_source("netlink"), by_source("scan"));
    d.stop_ok();
    eprintln!(
        "thousand: spawned {N} in {spawned:?}; all discovered {discovered_in:?} after the last \
         spawn (netlink {netlink}, scan {scan}); all exited noticed in {exited_in:?}; {} scans, \
         {} log lines",
        d.count("scan"),
        events.len()
    );
}

fn fork_exec_storm(mode: &str) {
    const TARGETS: usize = 150;
    const MIN_SCANS: usize = 1000;
    let durations = ["0.15", "0.3", "0.45", "0.6"];
    let dir = TempDir::new(&format!("storm-{mode}"));
    let mut procs = ProcGuard::new();
    let mut storm = ProcGuard::new();
    let target = Target::new(dir.path());
    let cfg = config_for(&dir, "storm", &target.name, Some(&[me()]), mode, "10ms");
    let mut d = Daemon::start(&write_config(dir.path(), &cfg), dir.path());
    let started = d.wait_started();
    assert_eq!(started["mode"], mode, "{started}");

    let t0 = Instant::now();
    let script = "i=0; while [ $i -lt 3000 ]; do /bin/true; i=$((i+1)); done";
    for _ in 0..2 {
        storm.push(spawn_retry(
            Command::new("/bin/sh")
                .args(["-c", script])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        ));
    }

    let deadline = t0 + Duration::from_secs(150);
    let mut ids: Vec<Ident> = Vec::new();
    let mut next_wave = Instant::now();
    let mut storm_done_at = None;
    loop {
        let now = Instant::now();
        if ids.len() < TARGETS && now >= next_wave {
            for k in 0..10 {
                let secs = durations[(ids.len() + k) % durations.len()];
                ids.push(target.spawn(&mut procs, secs));
            }
            next_wave = now + Duration::from_millis(250);
        }
        // Reap promptly: a zombie is still in /proc.
        procs.reap_exited();
        storm.reap_exited();
        if storm.is_empty() && storm_done_at.is_none() {
            storm_done_at = Some(t0.elapsed());
        }
        let scans = d.count("scan");
        if ids.len() >= TARGETS && storm.is_empty() && procs.is_empty() && scans >= MIN_SCANS {
            break;
        }
        d.check_alive("the storm to finish");
        if now >= deadline {
            panic!(
                "storm did not finish in time: targets spawned {}, still running {}, storm \
                 shells left {}, scans {scans}\n{}",
                ids.len(),
                procs.len(),
                storm.len(),
                d.log_tail()
            );
        }
        thread::sleep(Duration::from_millis(5));
    }
    let run_time = t0.elapsed();

    // Every target has exited by now; wait for reeve to say so.
    let want: HashSet<Ident> = ids.iter().copied().collect();
    let mut cursor = 0;
    let mut gone: HashSet<Ident> = HashSet::new();
    d.wait_until("every storm target exited", WAIT, |d| {
        for v in d.since(&mut cursor) {
            if event_name(v) == "exited" {
                gone.extend(Ident::of_event(v));
            }
        }
        want.is_subset(&gone)
    });
    d.wait_scans(5, WAIT);
    d.stop_ok();

    let events = d.events();
    let disc = tally(&events, "discovered");
    let exit = tally(&events, "exited");
    let scans = d.count("scan");
    let netlink = events
        .iter()
        .filter(|v| event_name(v) == "discovered" && v["source"] == "netlink")
        .count();
    let tracked_dups = d.count("already_tracked");
    eprintln!(
        "storm[{mode}]: {} targets, {} discovered ({netlink} via netlink), {} exited, {scans} \
         scans, {tracked_dups} already_tracked, storm of 2x3000 done after {:?}, run {run_time:?}",
        ids.len(),
        disc.values().sum::<usize>(),
        exit.values().sum::<usize>(),
        storm_done_at
    );
    let bad_disc = not_once(&ids, &disc);
    let bad_exit = not_once(&ids, &exit);
    assert!(
        bad_disc.is_empty(),
        "{} of {} targets not discovered exactly once: {:?}\n{}",
        bad_disc.len(),
        ids.len(),
        &bad_disc[..bad_disc.len().min(10)],
        d.log_tail()
    );
    assert!(
        bad_exit.is_empty(),
        "{} of {} targets did not exit exactly once: {:?}\n{}",
        bad_exit.len(),
        ids.len(),
        &bad_exit[..bad_exit.len().min(10)],
        d.log_tail()
    );
    // The targets ran to completion: an exit code, when reported, is 0.
    let bad_codes: Vec<&Value> = events
        .iter()
        .filter(|v| event_name(v) == "exited" && v.get("exit_code").is_some())
        .filter(|v| v["exit_code"] != 0)
        .collect();
    assert!(
        bad_codes.is_empty(),
        "targets that ran to completion reported a non-zero exit_code: {:?}",
        &bad_codes[..bad_codes.len().min(5)]
    );
    let twice: Vec<_> = disc.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "identities discovered twice: {twice:?}");
    let strangers: Vec<_> = disc.keys().filter(|k| !want.contains(k)).collect();
    assert!(
        strangers.is_empty(),
        "discovered non-targets: {strangers:?}"
    );
    assert!(scans >= MIN_SCANS, "only {scans} scans");
}

#[test]
fn fork_exec_storm_netlink() {
    fork_exec_storm("netlink");
}

#[test]
fn fork_exec_storm_poll() {
    fork_exec_storm("poll");
}

// ------------------------------------------------------------ pid reuse ---

const REUSE_SCRIPT: &str = r#"
LOG='@LOG@'
REEVE='@REEVE@'
CONF='@CONF@'
T='@T@'
NT='@NT@'
# has EVENT PID [TICKS]: the log has EVENT about PID (and TICKS).
has() {
  if [ -n "${3:-}" ]; then
    grep -E "\"event\": *\"$1\"" "$LOG" | grep -E "\"pid\": *$2([^0-9]|\$)" \
      | grep -Eq "\"start_ticks\": *$3([^0-9]|\$)"
  else
    grep -E "\"event\": *\"$1\"" "$LOG" | grep -Eq "\"pid\": *$2([^0-9]|\$)"
  fi
}
# waitfor DESC CMD...: up to 200 x 50 ms.
waitfor() {
  desc=$1; shift
  i=0
  while [ $i -lt 200 ]; do
    if "$@"; then return 0; fi
    sleep 0.05
    i=$((i+1))
  done
  echo "TIMEOUT $desc"
  return 1
}
ticks() { cut -d' ' -f22 "/proc/$1/stat"; }

"$REEVE" watch --config "$CONF" --log-format json --log-level debug 2>"$LOG" &
R=$!
echo "REEVE $R"
waitfor started grep -Eq '"event": *"started"' "$LOG" || exit 3

"$T" 30 &
P=$!
S1=$(ticks $P)
echo "T1 $P $S1"
waitfor discovered1 has discovered $P $S1 || exit 4
kill -KILL $P
wait $P
waitfor exited1 has exited $P $S1 || exit 5

# Reuse P for a process that is not a target.
echo $((P-1)) > /proc/sys/kernel/ns_last_pid
"$NT" 30 &
Q=$!
if [ "$Q" = "$P" ]; then echo "REUSED $P"; else echo "NOTREUSED got $Q"; fi
S2=$(ticks $Q)
echo "NT $Q $S2"
sleep 1
kill -KILL $Q
wait $Q

# Reuse P again, for a target under the first target's name.
echo $((P-1)) > /proc/sys/kernel/ns_last_pid
"$T" 30 &
P3=$!
if [ "$P3" = "$P" ]; then echo "REUSED2 $P"; else echo "NOTREUSED2 got $P3"; fi
S3=$(ticks $P3)
echo "T3 $P3 $S3"
waitfor discovered3 has discovered $P3 $S3 || exit 6
sleep 0.5

kill -TERM $R
wait $R
echo "REEVE_EXIT $?"
kill -KILL $P3
wait $P3
echo DONE
"#;

/// `KEY a b` lines of the script's stdout.
fn script_field(stdout: &str, key: &str) -> Option<Vec<String>> {
    stdout.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next() == Some(key)).then(|| it.map(str::to_string).collect())
    })
}

#[test]
fn pid_reuse_in_new_pid_namespace() {
    let dir = TempDir::new("pid-reuse");
    let target = Target::new(dir.path());
    let other = Target::new(dir.path());
    let log = dir.join("reeve.log");
    // No parent filter: inside the namespace (with its own /proc) only the
    // script's processes exist at all.
    let cfg = json!({
        "targets": [{"name": "reuse", "match": {"exe": [target.name]}}],
        "discovery": {"mode": "auto", "scan_interval": "100ms", "rescan_interval": "100ms"},
        "state_dir": state_dir(&dir),
    });
    let cfg_path = write_config(dir.path(), &cfg);
    let script = REUSE_SCRIPT
        .replace("@LOG@", log.to_str().unwrap())
        .replace("@REEVE@", REEVE)
        .replace("@CONF@", cfg_path.to_str().unwrap())
        .replace("@T@", target.path.to_str().unwrap())
        .replace("@NT@", other.path.to_str().unwrap());
    let script_path = write_file(dir.path(), "reuse.sh", &script);

    // --kill-child: if unshare dies, the namespace's init dies, and with it
    // everything inside.
    let out = run_with_timeout(
        Command::new("unshare")
            .args(["--pid", "--fork", "--kill-child", "--mount-proc", "sh"])
            .arg(&script_path),
        Duration::from_secs(90),
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let ctx = format!(
        "script exit {}\nstdout:\n{stdout}\nstderr:\n{}\n{}",
        out.status,
        stderr_of(&out),
        log_tail_of(&log)
    );
    assert_eq!(out.status.code(), Some(0), "{ctx}");
    assert!(stdout.contains("DONE"), "{ctx}");
    let field = |k: &str| script_field(&stdout, k).unwrap_or_else(|| panic!("no {k}: {ctx}"));
    let num = |s: &String| {
        s.parse::<u64>()
            .unwrap_or_else(|_| panic!("number {s:?}: {ctx}"))
    };
    assert!(
        script_field(&stdout, "REUSED").is_some() && script_field(&stdout, "REUSED2").is_some(),
        "the kernel did not hand out the same pid again (ns_last_pid): {ctx}"
    );
    let t1 = field("T1");
    let nt = field("NT");
    let t3 = field("T3");
    let p = num(&t1[0]) as u32;
    let first = Ident {
        pid: p,
        start_ticks: num(&t1[1]),
    };
    let stranger = Ident {
        pid: num(&nt[0]) as u32,
        start_ticks: num(&nt[1]),
    };
    let second = Ident {
        pid: num(&t3[0]) as u32,
        start_ticks: num(&t3[1]),
    };
    assert_eq!(stranger.pid, p, "{ctx}");
    assert_eq!(second.pid, p, "{ctx}");
    assert_ne!(second.start_ticks, first.start_ticks, "{ctx}");
    assert_eq!(
        field("REEVE_EXIT"),
        vec!["0".to_string()],
        "reeve exit after TERM: {ctx}"
    );

    let text = fs::read(&log).expect("read log");
    let events = json_lines(&text);
    let named = |e: &'static str| events.iter().filter(move |v| event_name(v) == e);

    let started = named("started")
        .next()
        .unwrap_or_else(|| panic!("no started: {ctx}"));
    assert_eq!(
        started["mode"], "poll",
        "auto mode in a pid namespace: {ctx}"
    );
    let fallback = named("discovery_mode")
        .next()
        .unwrap_or_else(|| panic!("no discovery_mode event: {ctx}"));
    assert_eq!(fallback["mode"], "poll", "{fallback}");
    assert_eq!(fallback["level"], "warn", "{fallback}");
    assert!(fallback["reason"].is_string(), "{fallback}");
    assert_eq!(named("stopped").count(), 1, "{ctx}");

    let disc = tally(&events, "discovered");
    let exit = tally(&events, "exited");
    assert_eq!(
        disc.get(&first),
        Some(&1),
        "first target discovered once: {ctx}"
    );
    assert_eq!(
        exit.get(&first),
        Some(&1),
        "first target exited once: {ctx}"
    );
    assert_eq!(
        disc.get(&second),
        Some(&1),
        "second target discovered once: {ctx}"
    );
    assert_eq!(
        disc.keys().copied().collect::<BTreeSet<_>>(),
        BTreeSet::from([first, second]),
        "nothing else discovered (the non-target at the reused pid least of all): {ctx}"
    );
    let about_stranger: Vec<&Value> = events
        .iter()
        .filter(|v| stranger.matches(v))
        .filter(|v| !matches!(event_name(v), "scan" | "already_tracked"))
        .collect();
    assert!(
        about_stranger.is_empty(),
        "events about the non-target {stranger:?}: {about_stranger:#?}"
    );
    let index = |e: &str, id: Ident| {
        events
            .iter()
            .position(|v| event_name(v) == e && id.matches(v))
            .unwrap()
    };
    assert!(
        index("exited", first) < index("discovered", second),
        "the reused pid was discovered before the first holder's exit was logged: {ctx}"
    );
    assert!(
        !exit.contains_key(&second),
        "the second target's exit was logged though reeve stopped first: {ctx}"
    );
    eprintln!(
        "pid reuse: pid {p} held by {first:?}, then non-target {stranger:?}, then {second:?}"
    );
}

// ------------------------------------------------------- self-exclusion ---

#[test]
fn self_exclusion_daemon() {
    let dir_a = TempDir::new("self-daemon-a");
    let dir_b = TempDir::new("self-daemon-b");
    let mut procs = ProcGuard::new();
    let name = unique_name();
    let copy = dir_a.join(&name);
    copy_exe(Path::new(REEVE), &copy);
    let control = Target::with_name(dir_b.path(), &name);
    let before = control.spawn(&mut procs, "30");
    // The daemon is a child of the test too, so the parent filter does not
    // exclude it: only self-exclusion does.
    let cfg = config_for(&dir_a, "self", &name, Some(&[me()]), "auto", "100ms");
    let mut d = Daemon::start_exe(&copy, &write_config(dir_a.path(), &cfg), dir_a.path());
    let started = d.wait_started();
    assert_eq!(started["pid"], d.pid, "{started}");
    d.wait_event("discovered", before, WAIT);
    let after = control.spawn(&mut procs, "30");
    d.wait_event("discovered", after, WAIT);
    d.wait_scans(5, WAIT);
    let own: Vec<Value> = d
        .events()
        .into_iter()
        .filter(|v| event_name(v) == "discovered" && v["pid"] == d.pid)
        .collect();
    assert!(own.is_empty(), "the daemon discovered itself: {own:#?}");
    assert_eq!(
        d.count("discovered"),
        2,
        "only the two controls\n{}",
        d.log_tail()
    );
    d.stop_ok();
}

// -------------------------------------------------------------- min_age ---

#[test]
fn min_age_delays_discovery() {
    let dir = TempDir::new("min-age");
    let mut procs = ProcGuard::new();
    let target = Target::new(dir.path());
    let mut cfg = config_for(&dir, "aged", &target.name, Some(&[me()]), "auto", "100ms");
    cfg["targets"][0]["filter"]["min_age"] = json!("1s");
    let mut d = Daemon::start(&write_config(dir.path(), &cfg), dir.path());
    d.wait_started();
    let id = target.spawn(&mut procs, "30");
    let t0 = Instant::now();
    d.wait_event("discovered", id, WAIT);
    let age = t0.elapsed();
    assert!(
        age >= Duration::from_millis(900),
        "discovered after {age:?}, before min_age 1s\n{}",
        d.log_tail()
    );
    assert!(
        age <= Duration::from_secs(5),
        "discovered only after {age:?} (min_age 1s, scans every 100ms)\n{}",
        d.log_tail()
    );
    d.wait_scans(3, WAIT);
    assert_eq!(d.about("discovered", id), 1, "{}", d.log_tail());
    d.stop_ok();
}

// ------------------------------------------------- exec after discovery ---

/// A process that reeve has already seen as a non-target (a wrapper shell)
/// and that then execs the target keeps its pid and start time; it must
/// still be discovered once it matches.
fn discovers_exec_of_seen_process(mode: &str, source: &str) {
    let dir = TempDir::new(&format!("exec-late-{mode}"));
    let mut procs = ProcGuard::new();
    let target = Target::new(dir.path());
    let cfg = config_for(&dir, "late", &target.name, Some(&[me()]), mode, "50ms");
    let mut d = Daemon::start(&write_config(dir.path(), &cfg), dir.path());
    d.wait_started();
    let child = spawn_retry(
        Command::new("/bin/sh")
            .args(["-c", "sleep 0.5; exec \"$0\" 30"])
            .arg(&target.path)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let pid = child.id();
    let id = Ident {
        pid,
        start_ticks: read_start_ticks(pid).expect("stat of the wrapper"),
    };
    procs.push(child);
    let t0 = Instant::now();
    // Several scans see the wrapper shell before it execs.
    let v = d.wait_event("discovered", id, WAIT);
    let after = t0.elapsed();
    assert!(
        after >= Duration::from_millis(400),
        "discovered after {after:?}, before the exec: {v}"
    );
    assert_eq!(v["source"], source, "{v}\n{}", d.log_tail());
    assert_eq!(v["comm"], comm_of(&target.name), "{v}\n{}", d.log_tail());
    procs.kill(pid);
    d.wait_event("exited", id, WAIT);
    d.wait_scans(3, WAIT);
    assert_eq!(d.about("discovered", id), 1, "{}", d.log_tail());
    assert_eq!(d.about("exited", id), 1, "{}", d.log_tail());
    d.stop_ok();
}

#[test]
fn watch_discovers_exec_of_seen_process_poll() {
    discovers_exec_of_seen_process("poll", "scan");
}

#[test]
fn watch_discovers_exec_of_seen_process_netlink() {
    discovers_exec_of_seen_process("netlink", "netlink");
}

// ------------------------------------------------------ logging, signals ---

#[test]
fn watch_sigint_stops_cleanly_and_info_level_hides_debug() {
    let dir = TempDir::new("sigint");
    let mut procs = ProcGuard::new();
    let target = Target::new(dir.path());
    let cfg = config_for(&dir, "int", &target.name, Some(&[me()]), "auto", "100ms");
    let cfg_path = write_config(dir.path(), &cfg);
    let mut d = Daemon::start_opts(Path::new(REEVE), &cfg_path, dir.path(), "json", "info");
    d.wait_started();
    let id = target.spawn(&mut procs, "30");
    d.wait_event("discovered", id, WAIT);
    // Let a few quiet (debug-level) scans happen.
    thread::sleep(Duration::from_millis(500));
    let status = d.stop_with(libc::SIGINT);
    assert_eq!(
        status.code(),
        Some(0),
        "exit after SIGINT: {status}\n{}",
        d.log_tail()
    );
    assert_eq!(d.count("stopped"), 1, "{}", d.log_tail());
    assert!(
        d.bad_lines().is_empty(),
        "non-JSON lines: {:?}",
        d.bad_lines()
    );
    let debug: Vec<Value> = d
        .events()
        .into_iter()
        .filter(|v| v["level"] == "debug")
        .collect();
    assert!(
        debug.is_empty(),
        "debug events at --log-level info: {:?}",
        &debug[..debug.len().min(5)]
    );
    let levels: BTreeSet<String> = d
        .events()
        .iter()
        .map(|v| v["level"].as_str().unwrap_or("?").to_string())
        .collect();
    assert!(
        levels
            .iter()
            .all(|l| ["info", "warn", "error"].contains(&l.as_str())),
        "levels: {levels:?}"
    );
}

#[test]
fn watch_text_log_format() {
    let dir = TempDir::new("text-log");
    let mut procs = ProcGuard::new();
    let target = Target::new(dir.path());
    let cfg = config_for(&dir, "txt", &target.name, Some(&[me()]), "auto", "100ms");
    let cfg_path = write_config(dir.path(), &cfg);
    let mut d = Daemon::start_opts(Path::new(REEVE), &cfg_path, dir.path(), "text", "info");
    let log = d.log_path.clone();
    let text = || fs::read_to_string(&log).unwrap_or_default();
    let deadline = Instant::now() + WAIT;
    while !text().contains("start") {
        assert!(Instant::now() < deadline, "no start line:\n{}", text());
        thread::sleep(Duration::from_millis(20));
    }
    let id = target.spawn(&mut procs, "30");
    let pid = id.pid.to_string();
    let mentions_pid = |t: &str| {
        t.lines()
            .any(|l| l.split(|c: char| !c.is_ascii_digit()).any(|w| w == pid))
    };
    while !mentions_pid(&text()) {
        assert!(
            Instant::now() < deadline,
            "no line mentions the target pid {pid}:\n{}",
            text()
        );
        thread::sleep(Duration::from_millis(20));
    }
    let status = d.stop();
    let t = text();
    assert_eq!(status.code(), Some(0), "{status}\n{t}");
    assert!(t.contains("stopped"), "no `stopped` line:\n{t}");
    assert!(
        t.lines().all(|l| serde_json::from_str::<Value>(l).is_err()),
        "--log-format text printed JSON:\n{t}"
    );
}

// ------------------------------------------------------- netlink overrun ---

/// A stopped daemon cannot drain its netlink socket; a fork/exec storm
/// then overflows the kernel-side buffer and events are lost. On resuming,
/// reeve must see the overrun, rescan /proc at once, and find the targets
/// whose exec events were dropped. The scan interval is an hour, so only
/// the overrun rescan can find them.
#[test]
fn netlink_overrun_triggers_an_immediate_rescan() {
    let dir = TempDir::new("overrun");
    let mut procs = ProcGuard::new();
    let mut storm = ProcGuard::new();
    let target = Target::new(dir.path());
    let cfg = config_for(
        &dir,
        "overrun",
        &target.name,
        Some(&[me()]),
        "netlink",
        "1h",
    );
    let mut d = Daemon::start(&write_config(dir.path(), &cfg), dir.path());
    d.wait_started();
    d.wait_for("the first scan", Duration::from_secs(20), |v| {
        event_name(v) == "scan"
    });

    // SAFETY: kill(2) on the daemon's pid, which this test spawned and has
    // not reaped, so the pid cannot have been reused.
    assert_eq!(unsafe { libc::kill(d.pid as i32, libc::SIGSTOP) }, 0);
    // Renames of a process leader: comm events, which the kernel filter
    // keeps (a rename can make a process a target), about 40,000 of them
    // against a receive buffer that holds some 16,000.
    let script = "i=0; while [ $i -lt 20000 ]; do echo n$i > /proc/self/comm; i=$((i+1)); done";
    for _ in 0..2 {
        storm.push(spawn_retry(
            Command::new("/bin/sh")
                .args(["-c", script])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while !storm.is_empty() {
        storm.reap_exited();
        assert!(Instant::now() < deadline, "the storm did not finish");
        thread::sleep(Duration::from_millis(20));
    }
    // These exec after the buffer filled: their events are dropped.
    let late: Vec<Ident> = (0..5).map(|_| target.spawn(&mut procs, "60")).collect();
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(d.pid as i32, libc::SIGCONT) }, 0);

    d.wait_for("a netlink_overrun event", Duration::from_secs(30), |v| {
        event_name(v) == "netlink_overrun"
    });
    for id in &late {
        let v = d.wait_event("discovered", *id, Duration::from_secs(30));
        assert_eq!(v["source"], "scan", "found by the rescan: {v}");
    }
    let deep = d
        .events()
        .iter()
        .filter(|v| event_name(v) == "scan" && v["kind"] == "deep")
        .count();
    assert!(
        deep >= 2,
        "a deep rescan after the overrun (deep scans: {deep})"
    );
    d.stop_ok();
}

// ------------------------------------------------------------- reload ---

/// SIGHUP re-reads the config file: new rules apply to processes already
/// running, and a broken file is refused while the running config stays.
#[test]
fn sighup_reloads_rules_and_refuses_a_bad_file() {
    let dir = TempDir::new("reload");
    let mut procs = ProcGuard::new();
    let first = Target::new(dir.path());
    let second = Target::new(dir.path());
    let cfg_path = write_config(
        dir.path(),
        &config_for(&dir, "one", &first.name, Some(&[me()]), "auto", "100ms"),
    );
    let mut d = Daemon::start(&cfg_path, dir.path());
    d.wait_started();
    let b = second.spawn(&mut procs, "60");
    d.wait_scans(3, Duration::from_secs(20));
    assert!(
        !d.events()
            .iter()
            .any(|v| event_name(v) == "discovered" && b.matches(v)),
        "not a target yet"
    );

    fs::write(&cfg_path, "{ not json").unwrap();
    // SAFETY: kill(2) on the daemon this test spawned and has not reaped.
    assert_eq!(unsafe { libc::kill(d.pid as i32, libc::SIGHUP) }, 0);
    d.wait_for("config_reload_failed", Duration::from_secs(20), |v| {
        event_name(v) == "config_reload_failed"
    });
    d.check_alive("a bad config must not stop the daemon");

    let new = config_for(&dir, "two", &second.name, Some(&[me()]), "auto", "100ms");
    fs::write(&cfg_path, new.to_string()).unwrap();
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(d.pid as i32, libc::SIGHUP) }, 0);
    d.wait_for("config_reloaded", Duration::from_secs(20), |v| {
        event_name(v) == "config_reloaded"
    });
    let v = d.wait_event("discovered", b, Duration::from_secs(20));
    assert_eq!(v["rule"], "two", "{v}");
    d.stop_ok();
}

/// Sends SIGHUP to the daemon under test and waits for the reload's outcome.
fn reload(d: &mut Daemon, outcome: &str) -> Value {
    let mut cursor = d.events().len();
    // SAFETY: kill(2) on the daemon this test spawned and has not reaped.
    assert_eq!(unsafe { libc::kill(d.pid as i32, libc::SIGHUP) }, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found = d
            .since(&mut cursor)
            .iter()
            .find(|v| matches!(event_name(v), "config_reloaded" | "config_reload_failed"))
            .cloned();
        if let Some(v) = found {
            assert_eq!(event_name(&v), outcome, "{v}\n{}", d.log_tail());
            return v;
        }
        d.check_alive("reload");
        assert!(
            Instant::now() < deadline,
            "no reload outcome\n{}",
            d.log_tail()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Rules keep their identity across a reload that reorders them and one
/// that removes one: exits are logged under the rule that tracked the
/// process, attaches get their own rule's limits, a removed rule's job
/// group is still removed when its process ends, and nothing attaches
/// under a removed rule.
#[test]
fn sighup_reorder_and_removal_keep_rule_identity() {
    let sub = common::cgroup::Subtree::new();
    let dir = TempDir::new("reload-ids");
    let mut procs = ProcGuard::new();
    let ta = Target::new(dir.path());
    let tb = Target::new(dir.path());
    let rule_a = json!({
        "name": "A", "match": {"exe": [ta.name]},
        "filter": {"parent_pids": [me()]}, "limits": {"pids": 50},
    });
    let rule_b = json!({
        "name": "B", "match": {"exe": [tb.name]}, "filter": {"parent_pids": [me()]},
    });
    let config = |targets: Value| {
        json!({
            "targets": targets,
            "discovery": {"mode": "auto", "scan_interval": "100ms", "rescan_interval": "100ms"},
            "state_dir": state_dir(&dir),
            "cgroup": {"root": sub.root()},
        })
    };
    let cfg_path = write_config(dir.path(), &config(json!([rule_a, rule_b])));
    let mut d = Daemon::start(&cfg_path, dir.path());
    d.wait_started();
    let a1 = ta.spawn(&mut procs, "60");
    let b1 = tb.spawn(&mut procs, "60");
    let job_of = |id: Ident| format!("job.A-{}-{}", id.pid, id.start_ticks);
    let v = d.wait_event("attached", a1, WAIT);
    assert_eq!(
        (v["rule"].as_str(), v["job"].as_str()),
        (Some("A"), Some(&*job_of(a1))),
        "{v}"
    );
    let v = d.wait_event("discovered", b1, WAIT);
    assert_eq!(v["rule"], "B", "{v}");

    // Reordered: B first, A second.
    fs::write(&cfg_path, config(json!([rule_b, rule_a])).to_string()).unwrap();
    reload(&mut d, "config_reloaded");
    procs.kill(b1.pid);
    let v = d.wait_event("exited", b1, WAIT);
    assert_eq!(v["rule"], "B", "an exit after the reorder: {v}");
    let a2 = ta.spawn(&mut procs, "60");
    let v = d.wait_event("attached", a2, WAIT);
    assert_eq!(v["rule"], "A", "{v}");
    assert_eq!(v["job"].as_str(), Some(&*job_of(a2)), "{v}");
    assert!(
        v["limits"].as_str().unwrap_or("").contains("50"),
        "A's limits: {v}"
    );
    procs.kill(a1.pid);
    let v = d.wait_event("exited", a1, WAIT);
    assert_eq!(v["rule"], "A", "{v}");
    d.wait_for("job_removed of a1", WAIT, |v| {
        event_name(v) == "job_removed" && v["job"].as_str() == Some(&*job_of(a1))
    });

    // A removed: its process still ends under A and its group goes.
    fs::write(&cfg_path, config(json!([rule_b])).to_string()).unwrap();
    reload(&mut d, "config_reloaded");
    let a3 = ta.spawn(&mut procs, "60");
    procs.kill(a2.pid);
    let v = d.wait_event("exited", a2, WAIT);
    assert_eq!(v["rule"], "A", "an exit after A was removed: {v}");
    d.wait_for("job_removed of a2", WAIT, |v| {
        event_name(v) == "job_removed" && v["job"].as_str() == Some(&*job_of(a2))
    });
    assert!(
        !sub.root().join(job_of(a2)).exists(),
        "a2's job group leaked"
    );
    d.wait_scans(3, WAIT);
    assert_eq!(d.about("discovered", a3), 0, "no rule names a3 now");
    assert_eq!(d.about("attached", a3), 0);
    d.stop_ok();
}

/// Attaches still queued when a reload reorders the rules keep their
/// rule: every target of the governing rule is attached under it with its
/// limits, none under the rule that now sits at its old index.
#[test]
fn sighup_with_attaches_queued_keeps_their_rule() {
    const TARGETS: usize = 120;
    let sub = common::cgroup::Subtree::new();
    let dir = TempDir::new("reload-queued");
    let mut procs = ProcGuard::new();
    let ta = Target::new(dir.path());
    let tb = Target::new(dir.path());
    let rule_a = json!({
        "name": "A", "match": {"exe": [ta.name]},
        "filter": {"parent_pids": [me()]}, "limits": {"pids": 50},
    });
    let rule_b = json!({
        "name": "B", "match": {"exe": [tb.name]}, "filter": {"parent_pids": [me()]},
    });
    let config = |targets: Value| {
        json!({
            "targets": targets,
            "discovery": {"mode": "auto", "scan_interval": "100ms", "rescan_interval": "100ms"},
            "state_dir": state_dir(&dir),
            "cgroup": {"root": sub.root()},
        })
    };
    let cfg_path = write_config(dir.path(), &config(json!([rule_a, rule_b])));
    let mut d = Daemon::start(&cfg_path, dir.path());
    d.wait_started();
    // The reordered file waits on disk until the SIGHUP.
    fs::write(&cfg_path, config(json!([rule_b, rule_a])).to_string()).unwrap();
    let ids: Vec<Ident> = (0..TARGETS).map(|_| ta.spawn(&mut procs, "60")).collect();
    reload(&mut d, "config_reloaded");
    let queued_at_reload = ids
        .iter()
        .filter(|&&id| d.about("attached", id) == 0)
        .count();
    for &id in &ids {
        let v = d.wait_for(&format!("attach decision about {id:?}"), WAIT, |v| {
            matches!(event_name(v), "attached" | "attach_failed") && id.matches(v)
        });
        assert_eq!(event_name(&v), "attached", "{v}");
        assert_eq!(v["rule"], "A", "{v}");
        assert!(v["limits"].as_str().unwrap_or("").contains("50"), "{v}");
    }
    eprintln!("{queued_at_reload} of {TARGETS} attaches were still queued at the reload");
    d.stop_ok();
}

/// Per-process jobs of a rule with a 64-character name: two targets get
/// two jobs (the whole identity is in each name), and a restarted daemon
/// with no snapshot finds the rule again from the group's name, so the
/// exit is logged under it and the job is removed.
#[test]
fn long_rule_name_jobs_stay_apart_and_are_adopted_after_restart() {
    let sub = common::cgroup::Subtree::new();
    let dir = TempDir::new("long-rule");
    let mut procs = ProcGuard::new();
    let target = Target::new(dir.path());
    let long = format!("enc-{}", "x".repeat(60));
    assert_eq!(long.len(), 64);
    let cfg = json!({
        "targets": [{
            "name": long, "match": {"exe": [target.name]},
            "filter": {"parent_pids": [me()]}, "limits": {"pids": 40},
        }],
        "discovery": {"mode": "auto", "scan_interval": "100ms", "rescan_interval": "100ms"},
        "state_dir": state_dir(&dir),
        "cgroup": {"root": sub.root()},
    });
    let cfg_path = write_config(dir.path(), &cfg);
    let mut d = Daemon::start(&cfg_path, dir.path());
    d.wait_started();
    let a = target.spawn(&mut procs, "60");
    let b = target.spawn(&mut procs, "60");
    let ja = d.wait_event("attached", a, WAIT)["job"].clone();
    let jb = d.wait_event("attached", b, WAIT)["job"].clone();
    assert_ne!(ja, jb, "two processes, two jobs");
    for (j, id) in [(&ja, a), (&jb, b)] {
        let j = j.as_str().unwrap_or("");
        assert!(j.len() <= 4 + 64, "{j}");
        assert!(
            j.ends_with(&format!("-{}-{}", id.pid, id.start_ticks)),
            "{j}"
        );
    }
    d.stop_ok();

    // Without the snapshot, only the group names say which rule made them.
    let state = std::path::PathBuf::from(state_dir(&dir)).join("state.json");
    fs::remove_file(&state).unwrap();
    let mut d = Daemon::start(&cfg_path, dir.path());
    d.wait_started();
    let v = d.wait_event("adopted", a, WAIT);
    assert_eq!(v["job"], ja, "{v}");
    d.wait_scans(2, WAIT);
    procs.kill(a.pid);
    let v = d.wait_event("exited", a, WAIT);
    assert_eq!(v["rule"], long.as_str(), "{v}");
    d.wait_for("job_removed of a", WAIT, |v| {
        event_name(v) == "job_removed" && v["job"] == ja
    });
    assert!(
        !sub.root().join(ja.as_str().unwrap()).exists(),
        "a's job is gone"
    );
    assert!(
        sub.root().join(jb.as_str().unwrap()).exists(),
        "b's job stays"
    );
    d.stop_ok();
}

/// A reload names every setting it cannot change; they keep their
/// running values (the state stays in the first state directory).
#[test]
fn sighup_names_settings_that_need_a_restart() {
    let dir = TempDir::new("reload-partial");
    let target = Target::new(dir.path());
    let mut cfg = config_for(&dir, "p", &target.name, Some(&[me()]), "auto", "100ms");
    let cfg_path = write_config(dir.path(), &cfg);
    let mut d = Daemon::start(&cfg_path, dir.path());
    d.wait_started();
    // Only the scan interval and the rules: nothing to warn about.
    cfg["discovery"]["scan_interval"] = json!("150ms");
    cfg["discovery"]["rescan_interval"] = json!("150ms");
    fs::write(&cfg_path, cfg.to_string()).unwrap();
    reload(&mut d, "config_reloaded");
    assert_eq!(d.count("config_reload_partial"), 0);

    let other_state = dir.join("other-state");
    cfg["state_dir"] = json!(other_state);
    cfg["cgroup"] = json!({"root": "/sys/fs/cgroup/unified/reeve-never-made"});
    cfg["audit"] = json!({"keep": 2});
    cfg["capacity"] = json!(128);
    cfg["discovery"]["mode"] = json!("poll");
    fs::write(&cfg_path, cfg.to_string()).unwrap();
    reload(&mut d, "config_reloaded");
    let v = d.wait_for("config_reload_partial", WAIT, |v| {
        event_name(v) == "config_reload_partial"
    });
    assert_eq!(
        v["settings"], "state_dir,cgroup.root,audit,capacity,discovery.mode",
        "{v}"
    );
    assert_eq!(v["level"], "warn", "{v}");
    d.stop_ok();
    assert!(!other_state.exists(), "the state directory is not switched");
    let state = std::path::PathBuf::from(state_dir(&dir)).join("state.json");
    assert!(
        state.exists(),
        "state saved where it was: {}",
        state.display()
    );
}

/// A SIGHUP that finds a FIFO where the config was changes nothing and
/// does not stop the loop: scans go on and the rules still hold.
#[test]
fn sighup_with_a_fifo_for_config_does_not_block() {
    let dir = TempDir::new("reload-fifo");
    let mut procs = ProcGuard::new();
    let target = Target::new(dir.path());
    let cfg = config_for(&dir, "f", &target.name, Some(&[me()]), "auto", "100ms");
    let cfg_path = write_config(dir.path(), &cfg);
    let mut d = Daemon::start(&cfg_path, dir.path());
    d.wait_started();
    fs::remove_file(&cfg_path).unwrap();
    let made = Command::new("mkfifo").arg(&cfg_path).status().unwrap();
    assert!(made.success());
    let v = reload(&mut d, "config_reload_failed");
    assert!(
        v["error"]
            .as_str()
            .unwrap_or("")
            .contains("not a regular file (a FIFO)"),
        "{v}"
    );
    d.wait_scans(3, Duration::from_secs(10));
    let id = target.spawn(&mut procs, "60");
    let v = d.wait_event("discovered", id, WAIT);
    assert_eq!(v["rule"], "f", "{v}");
    d.stop_ok();
}

// -------------------------------------------------------- events --follow ---

/// `reeve events --follow` prints events as they are appended.
#[test]
fn events_follow_tails_the_audit_log() {
    let dir = TempDir::new("follow");
    let mut procs = ProcGuard::new();
    let target = Target::new(dir.path());
    let cfg_path = write_config(
        dir.path(),
        &config_for(&dir, "f", &target.name, Some(&[me()]), "auto", "100ms"),
    );
    let mut d = Daemon::start(&cfg_path, dir.path());
    d.wait_started();
    let out_path = dir.join("follow.out");
    let out = fs::File::create(&out_path).unwrap();
    let follower = spawn_retry(
        Command::new(env!("CARGO_BIN_EXE_reeve"))
            .args(["events", "--follow", "--json", "--config"])
            .arg(&cfg_path)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::null()),
    );
    let follower_pid = procs.push(follower);
    let id = target.spawn(&mut procs, "60");
    d.wait_event("discovered", id, Duration::from_secs(20));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = fs::read_to_string(&out_path).unwrap_or_default();
        let lines = json_lines(text.as_bytes());
        if lines
            .iter()
            .any(|v| event_name(v) == "discovered" && id.matches(v))
        {
            assert!(lines.iter().all(|v| v["seq"].is_u64()), "{text}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "follow never printed it:\n{text}"
        );
        thread::sleep(Duration::from_millis(50));
    }
    procs.kill(follower_pid);
    d.stop_ok();
}
