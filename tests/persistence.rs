//! Persistence as an operator sees it: the audit log stays one gap-free
//! sequence however many processes write to it and however long it grows,
//! and a full disk neither corrupts the state snapshot nor loses events
//! that can be written once space returns.
//!
//! Concurrency uses real processes: the test forks one writer process per
//! appender. The full-disk tests mount a small tmpfs, which needs root
//! (`common::require`: a failure under CI=true, a visible skip elsewhere).
//! The loop tests hold `events.lock` from another process (util-linux
//! `flock`) and give the daemon a full stderr pipe nobody reads.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::TempDir;
use reeve::log::Val;
use reeve::store::{
    load_versioned, read_events, write_atomic, EventLog, FsyncPolicy, Loaded, LogOptions, StateDir,
};
use serde_json::Value;

/// Every line of every generation, read raw (not through the reader, which
/// drops repeated seqs and so could hide a duplicate).
fn raw_events(dir: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if !name.starts_with("events.jsonl") {
            continue;
        }
        let text = fs::read_to_string(dir.join(&name)).unwrap();
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "{name} ends mid-line"
        );
        for line in text.lines() {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{name}: bad line {line:?}: {e}"));
            out.push(v);
        }
    }
    out.sort_by_key(|v| v["seq"].as_u64().unwrap());
    out
}

fn seqs(events: &[Value]) -> Vec<u64> {
    events.iter().map(|v| v["seq"].as_u64().unwrap()).collect()
}

/// Appends `count` events as writer `id`: what each writer process does.
fn append_as(dir: &Path, id: u64, count: u64) -> Result<(), String> {
    let d = StateDir::open(dir).map_err(|e| e.to_string())?;
    let opts = LogOptions {
        fsync: FsyncPolicy::Never,
        rotate_bytes: 64 * 1024,
        keep: 1000,
        queue_capacity: count as usize,
        // Short, so contention also exercises the queue.
        lock_timeout: Duration::from_millis(20),
        group_commit: false,
    };
    let mut log = EventLog::open(&d, opts).map_err(|e| e.to_string())?;
    for i in 0..count {
        log.append(
            common::now_ms(),
            "child",
            &[("child", Val::U(id)), ("i", Val::U(i))],
        )
        .map_err(|e| format!("append {i}: {e}"))?;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while log.pending() > 0 {
        if Instant::now() >= deadline {
            return Err("queue never drained".into());
        }
        log.flush_pending();
    }
    if log.lost() != 0 {
        return Err(format!("{} events lost", log.lost()));
    }
    match log.take_error() {
        Some(e) => Err(e.to_string()),
        None => Ok(()),
    }
}

/// Runs [`append_as`] in a forked child process and returns its pid. The
/// child touches no lock another thread of the harness could hold at the
/// fork (no environment, no captured output), reports a failure on fd 2
/// itself and leaves with `_exit`.
fn fork_appender(dir: &Path, id: u64, count: u64) -> libc::pid_t {
    // SAFETY: fork(2) has no memory preconditions; the child runs only
    // append_as (file I/O and allocation, both fork-safe with glibc) and
    // ends in _exit without unwinding into the harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let code = match std::panic::catch_unwind(|| append_as(dir, id, count)) {
            Ok(Ok(())) => 0,
            Ok(Err(e)) => {
                let msg = format!("writer {id}: {e}\n");
                // SAFETY: write(2) of a live buffer to fd 2.
                unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
                1
            }
            Err(_) => 2,
        };
        // SAFETY: ends the child without running the harness's exit path.
        unsafe { libc::_exit(code) };
    }
    pid
}

#[test]
fn concurrent_writers_get_unique_contiguous_seqs() {
    const CHILDREN: u64 = 16;
    const EACH: u64 = 500;
    let t = TempDir::new("persist-concurrent");
    let dir = t.join("state");
    StateDir::open(&dir).unwrap();
    let pids: Vec<libc::pid_t> = (0..CHILDREN)
        .map(|id| fork_appender(&dir, id, EACH))
        .collect();
    // Every child is reaped before anything is asserted.
    let statuses: Vec<(libc::pid_t, i32)> = pids
        .iter()
        .map(|&pid| {
            let mut status = 0;
            // SAFETY: waitpid on our own child with a valid status pointer.
            let r = unsafe { libc::waitpid(pid, &mut status, 0) };
            assert_eq!(r, pid, "waitpid {pid}: {}", std::io::Error::last_os_error());
            (pid, status)
        })
        .collect();
    for (pid, status) in statuses {
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "writer process {pid} failed (wait status {status:#x}); its error is on stderr"
        );
    }

    let events = raw_events(&dir);
    let total = CHILDREN * EACH;
    assert_eq!(seqs(&events), (1..=total).collect::<Vec<_>>());
    // Each writer's own events keep their order.
    let mut per_child: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for v in &events {
        per_child
            .entry(v["child"].as_u64().unwrap())
            .or_default()
            .push(v["i"].as_u64().unwrap());
    }
    assert_eq!(per_child.len() as u64, CHILDREN);
    for (id, is) in per_child {
        assert_eq!(is, (0..EACH).collect::<Vec<_>>(), "child {id}");
    }
    assert!(
        dir.join("events.jsonl.1").exists(),
        "the run was meant to rotate"
    );
    let mut r = read_events(&dir, None).unwrap();
    let read: Vec<u64> = r.by_ref().map(|v| v["seq"].as_u64().unwrap()).collect();
    assert_eq!(read, (1..=total).collect::<Vec<_>>());
    assert_eq!(r.skipped(), 0);
}

/// The seq a newcomer finds costs the same after a million events as after
/// one: only the sidecar or the log's tail is read. Timings are printed,
/// not asserted; REEVE_SCALE_EVENTS overrides the default size.
#[test]
fn sequence_stays_right_at_scale() {
    let n: u64 = std::env::var("REEVE_SCALE_EVENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let t = TempDir::new("persist-scale");
    let d = StateDir::open(&t.join("state")).unwrap();
    let opts = LogOptions {
        fsync: FsyncPolicy::Never,
        ..LogOptions::default()
    };
    let fields = |i: u64| [("pid", Val::U(4000 + i % 1000)), ("rule", Val::S("ffmpeg"))];

    let mut log = EventLog::open(&d, opts.clone()).unwrap();
    assert_eq!(log.append(1, "first", &fields(0)).unwrap(), Some(1));
    let start = Instant::now();
    assert_eq!(log.append(2, "second", &fields(1)).unwrap(), Some(2));
    let early = start.elapsed();

    let bulk = Instant::now();
    for i in 3..=n {
        assert_eq!(log.append(i, "bulk", &fields(i)).unwrap(), Some(i));
    }
    let bulk = bulk.elapsed();
    let start = Instant::now();
    assert_eq!(log.append(n + 1, "late", &fields(n)).unwrap(), Some(n + 1));
    let late = start.elapsed();
    drop(log);
    if n > 1_000_000 - 1 {
        assert!(
            d.path().join("events.jsonl.1").exists(),
            "64 MiB reached, rotated"
        );
    }

    // A newcomer (as a CLI command is) trusts the sidecar ...
    let mut other = EventLog::open(&d, opts.clone()).unwrap();
    let start = Instant::now();
    assert_eq!(other.append(0, "newcomer", &[]).unwrap(), Some(n + 2));
    let newcomer = start.elapsed();
    drop(other);
    // ... and without one reads only the tail.
    fs::remove_file(d.path().join("events.seq")).unwrap();
    let mut other = EventLog::open(&d, opts).unwrap();
    let start = Instant::now();
    assert_eq!(other.append(0, "no-sidecar", &[]).unwrap(), Some(n + 3));
    let recovered = start.elapsed();

    let tail: Vec<u64> = read_events(d.path(), Some(n - 5))
        .unwrap()
        .map(|v| v["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(tail, (n - 4..=n + 3).collect::<Vec<_>>());
    eprintln!(
        "scale: {n} appends in {bulk:?} ({:?} each); append after 1 event {early:?}, \
         after {n} {late:?}; newcomer {newcomer:?}; newcomer without sidecar {recovered:?}",
        bulk / n as u32
    );
}

/// A tmpfs mounted for one test, unmounted on drop.
struct Mount(PathBuf);

impl Mount {
    /// None when the tmpfs cannot be mounted here (see [`common::require`]).
    fn tmpfs(at: &Path, size: &str) -> Option<Mount> {
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .output();
        let why = match &out {
            Ok(o) if o.status.success() => return Some(Mount(at.to_path_buf())),
            Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
            Err(e) => format!("cannot run mount: {e}"),
        };
        common::require(false, &format!("cannot mount a tmpfs (needs root): {why}"));
        None
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// Writes `path` until the filesystem refuses; returns the bytes written.
fn fill(path: &Path) -> u64 {
    let mut f = fs::File::create(path).unwrap();
    let chunk = [0x5au8; 4096];
    let mut written = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("fill {}: {e}", path.display()),
        }
    }
    written
}

#[derive(Debug, serde::Deserialize, PartialEq)]
struct State {
    version: u32,
    jobs: Vec<String>,
}

#[test]
fn full_disk_keeps_old_state_and_queues_events() {
    let t = TempDir::new("persist-full");
    let mnt = t.join("mnt");
    fs::create_dir(&mnt).unwrap();
    let Some(_mount) = Mount::tmpfs(&mnt, "256k") else {
        return;
    };
    let old = br#"{"version":1,"jobs":["enc-1"]}"#;
    let pad = "p".repeat(200);
    {
        let d = StateDir::open(&mnt).unwrap();
        write_atomic(&d, "state.json", old).unwrap();
        let mut log = EventLog::open(&d, LogOptions::default()).unwrap();
        assert_eq!(log.append(1, "start", &[]).unwrap(), Some(1));

        let filled = fill(&mnt.join("filler"));
        assert!(filled > 0);

        // A state larger than the space left fails clearly, changing nothing.
        let mut big = br#"{"version":1,"jobs":[""#.to_vec();
        big.extend(std::iter::repeat(b'x').take(512 * 1024));
        big.extend_from_slice(br#""]}"#);
        let err = write_atomic(&d, "state.json", &big).unwrap_err();
        let msg = err.to_string();
        assert!(err.is_disk_full(), "{msg}");
        assert!(
            msg.contains("state.json") && msg.contains("disk is full"),
            "{msg}"
        );
        assert_eq!(fs::read(mnt.join("state.json")).unwrap(), old);
        let leftovers: Vec<_> = fs::read_dir(&mnt)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp."))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");

        // Appends fill what slack the log's last page had, then queue.
        let mut results = Vec::new();
        for i in 0..100u64 {
            let r = log
                .append(
                    10 + i,
                    "while_full",
                    &[("i", Val::U(i)), ("pad", Val::S(&pad))],
                )
                .unwrap();
            results.push(r);
        }
        let landed = results.iter().take_while(|r| r.is_some()).count();
        assert!(
            results[landed..].iter().all(Option::is_none),
            "once one is queued, later ones queue behind it: {results:?}"
        );
        let queued = log.pending();
        assert_eq!(queued, 100 - landed);
        assert!(queued > 0, "the disk never refused");
        assert_eq!(log.lost(), 0);
        let err = log.take_error().expect("the refusal is reported");
        assert!(err.is_disk_full(), "{err}");
        // No partial line was left behind.
        assert_eq!(
            seqs(&raw_events(&mnt)),
            (1..=1 + landed as u64).collect::<Vec<_>>()
        );
        assert_eq!(log.flush_pending(), 0);

        fs::remove_file(mnt.join("filler")).unwrap();
        assert_eq!(log.flush_pending(), queued);
        assert_eq!(log.pending(), 0);
        assert_eq!(log.append(500, "after", &[]).unwrap(), Some(102));

        let events = raw_events(&mnt);
        assert_eq!(seqs(&events), (1..=102).collect::<Vec<_>>());
        let order: Vec<u64> = events[1..101]
            .iter()
            .map(|v| v["i"].as_u64().unwrap())
            .collect();
        assert_eq!(order, (0..100).collect::<Vec<_>>());

        match load_versioned::<State>(&d, "state.json", 1, 0) {
            Loaded::Ok(s) => assert_eq!(s.jobs, vec!["enc-1"]),
            other => panic!("{other:?}"),
        }
        // With space back, snapshots work again.
        write_atomic(&d, "state.json", br#"{"version":1,"jobs":["enc-2"]}"#).unwrap();
    }
}

/// The daemon on a full disk: supervision goes on (targets are still
/// discovered, the log on stderr says what failed), the previous state
/// file stays intact, and the audit events queued while the disk was full
/// land, in order and without gaps, once space returns.
#[test]
fn daemon_on_a_full_disk_keeps_supervising() {
    use common::{config_for, event_name, write_config, Daemon, ProcGuard, Target};
    let t = TempDir::new("persist-daemon-full");
    let mnt = t.join("state");
    fs::create_dir(&mnt).unwrap();
    let Some(_mount) = Mount::tmpfs(&mnt, "512k") else {
        return;
    };
    let mut procs = ProcGuard::new();
    let target = Target::new(t.path());
    let mut cfg = config_for(
        &t,
        "full",
        &target.name,
        Some(&[std::process::id()]),
        "auto",
        "100ms",
    );
    cfg["state_dir"] = Value::String(mnt.display().to_string());
    let mut d = Daemon::start(&write_config(t.path(), &cfg), t.path());
    d.wait_started();
    let first = target.spawn(&mut procs, "60");
    d.wait_event("discovered", first, Duration::from_secs(20));
    // Wait for a snapshot that holds the first target.
    let deadline = Instant::now() + Duration::from_secs(20);
    let before = loop {
        let text = fs::read_to_string(mnt.join("state.json")).unwrap_or_default();
        if text.contains(&format!("\"pid\":{}", first.pid)) {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "no snapshot with the first target"
        );
        std::thread::sleep(Duration::from_millis(50));
    };

    let filler = mnt.join("filler");
    fill(&filler);
    // The log's last page still has room; another writer uses it up (in
    // smaller and smaller lines) so the daemon's next line is refused.
    {
        let d = StateDir::open(&mnt).unwrap();
        let mut other = EventLog::open(&d, LogOptions::default()).unwrap();
        for pad in [1000, 100, 10, 0] {
            let pad = "p".repeat(pad);
            while other
                .append(common::now_ms(), "pad", &[("pad", Val::S(&pad))])
                .unwrap()
                .is_some()
            {}
            // Whatever it queued is dropped with it: padding only.
            other = EventLog::open(&d, LogOptions::default()).unwrap();
        }
    }
    let second = target.spawn(&mut procs, "60");
    // Supervision continues: the second target is discovered.
    d.wait_event("discovered", second, Duration::from_secs(20));
    d.wait_for("a report of the full disk", Duration::from_secs(20), |v| {
        event_name(v) == "audit_log_failed"
    });
    // Many wakeups retry the queue while the disk stays full: the failure
    // is said once for the whole run, not once per retry.
    d.wait_scans(15, Duration::from_secs(20));
    assert_eq!(
        d.count("audit_log_failed"),
        1,
        "one report per failure run\n{}",
        d.log_tail()
    );
    // The previous state file is intact (a complete, parseable snapshot).
    let during = fs::read_to_string(mnt.join("state.json")).unwrap();
    assert_eq!(during, before, "state.json changed while the disk was full");

    fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let events: Vec<Value> = read_events(&mnt, None).unwrap().collect();
        let landed = events
            .iter()
            .any(|v| v["event"] == "discovered" && v["pid"] == second.pid);
        let recovered = events
            .iter()
            .position(|v| v["event"] == "audit_log_recovered");
        if landed && recovered.is_some() {
            let seqs: Vec<u64> = events.iter().filter_map(|v| v["seq"].as_u64()).collect();
            let want: Vec<u64> = (1..=seqs.len() as u64).collect();
            assert_eq!(seqs, want, "contiguous seqs after the disk recovered");
            // The events that waited land first, then the one line that
            // says the log is back; no failure report reaches the file.
            let second_at = events
                .iter()
                .position(|v| v["event"] == "discovered" && v["pid"] == second.pid);
            assert!(second_at < recovered, "{events:#?}");
            assert!(
                !events.iter().any(|v| v["event"] == "audit_log_failed"),
                "failure reports were queued into the log: {events:#?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "queued events never landed");
        std::thread::sleep(Duration::from_millis(100));
    }
    d.stop_ok();
    let after = fs::read_to_string(mnt.join("state.json")).unwrap();
    assert!(
        after.contains(&format!("\"pid\":{}", second.pid)),
        "state caught up"
    );
    assert_eq!(d.count("audit_log_failed"), 1, "{}", d.log_tail());
    assert_eq!(d.count("audit_log_recovered"), 1, "{}", d.log_tail());
}

// ------------------------------------------- nothing stalls the watch loop

/// `flock -x -o FILE sleep SECS` from util-linux: another process holding
/// the audit log's lock. Killed (by pid) and reaped on drop.
struct LockHolder {
    child: std::process::Child,
    acquired: Instant,
}

impl LockHolder {
    fn hold(path: &Path, secs: u32) -> LockHolder {
        use std::io::BufRead;
        let mut child = Command::new("flock")
            .args(["-x", "-o"])
            .arg(path)
            .args(["sh", "-c", &format!("echo locked; exec sleep {secs}")])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("flock from util-linux (Debian package util-linux)");
        let out = child.stdout.take().expect("flock stdout");
        let mut line = String::new();
        std::io::BufReader::new(out)
            .read_line(&mut line)
            .expect("read from flock");
        assert_eq!(line.trim(), "locked", "flock did not take the lock");
        LockHolder {
            child,
            acquired: Instant::now(),
        }
    }

    fn wait(&mut self) {
        self.child.wait().expect("wait for flock");
    }
}

impl Drop for LockHolder {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn send_signal(pid: u32, sig: libc::c_int) {
    // SAFETY: plain kill(2) on the pid of a child this test started and
    // has not reaped.
    let r = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(r, 0, "kill {pid}");
}

/// Another process holds `events.lock` for 5 s while targets start and a
/// SIGTERM arrives: discovery goes on (stderr shows each `discovered`
/// during the hold, while none of them is in the file yet), the SIGTERM is
/// served within one scan interval, and everything queued lands in
/// `events.jsonl`, in order and gap-free, once the lock is released.
#[test]
fn a_held_audit_lock_stalls_neither_discovery_nor_shutdown() {
    use common::{config_for, event_name, write_config, Daemon, ProcGuard, Target};
    const HOLD_SECS: u32 = 5;
    let scan_interval = Duration::from_secs(1);
    let t = TempDir::new("persist-held-lock");
    let mut procs = ProcGuard::new();
    let target = Target::new(t.path());
    let cfg = config_for(
        &t,
        "held",
        &target.name,
        Some(&[std::process::id()]),
        "auto",
        "1s",
    );
    let sdir = PathBuf::from(cfg["state_dir"].as_str().unwrap());
    let mut d = Daemon::start(&write_config(t.path(), &cfg), t.path());
    d.wait_started();
    let mut holder = LockHolder::hold(&sdir.join("events.lock"), HOLD_SECS);

    let ids: Vec<_> = (0..3).map(|_| target.spawn(&mut procs, "60")).collect();
    for id in &ids {
        d.wait_event("discovered", *id, Duration::from_secs(HOLD_SECS.into()));
    }
    let discovered_by = holder.acquired.elapsed();
    let held_still = Duration::from_secs(HOLD_SECS.into()) - Duration::from_millis(1500);
    assert!(
        discovered_by < held_still,
        "discovery took {discovered_by:?} under the held lock\n{}",
        d.log_tail()
    );
    let on_disk = raw_events(&sdir);
    for id in &ids {
        assert!(
            !on_disk.iter().any(|v| id.matches(v)),
            "{id:?} reached events.jsonl through a held lock"
        );
    }

    let sent = Instant::now();
    send_signal(d.pid, libc::SIGTERM);
    d.wait_for("stopped", scan_interval, |v| event_name(v) == "stopped");
    let served = sent.elapsed();
    assert!(
        holder.acquired.elapsed() < Duration::from_secs(HOLD_SECS.into()),
        "the lock was released before the check; the test proves nothing"
    );
    assert!(served <= scan_interval, "SIGTERM served after {served:?}");

    holder.wait();
    let status = d.stop();
    assert_eq!(status.code(), Some(0), "{}", d.log_tail());
    let events = raw_events(&sdir);
    assert_eq!(
        seqs(&events),
        (1..=events.len() as u64).collect::<Vec<_>>(),
        "gap-free"
    );
    for id in &ids {
        assert_eq!(
            events
                .iter()
                .filter(|v| v["event"] == "discovered" && id.matches(v))
                .count(),
            1,
            "{id:?} landed once after the lock was released: {events:#?}"
        );
    }
    let names: Vec<&str> = events.iter().filter_map(|v| v["event"].as_str()).collect();
    assert_eq!(names.last(), Some(&"stopped"), "{names:?}");
    assert!(d.count("audit_events_lost") == 0, "{}", d.log_tail());
}

/// fd 2 is a pipe that is full and that nobody reads: the daemon starts,
/// discovers and records (the audit log shows it) as if stderr were fine;
/// once someone reads, every line that comes out is whole JSON and the
/// last one says it stopped.
#[test]
fn a_stderr_nobody_reads_stalls_nothing() {
    use common::{config_for, write_config, ProcGuard, Target, REEVE};
    use std::io::Read;
    use std::os::fd::{FromRawFd, OwnedFd};
    let t = TempDir::new("persist-stderr");
    let mut procs = ProcGuard::new();
    let target = Target::new(t.path());
    let cfg = config_for(
        &t,
        "quiet",
        &target.name,
        Some(&[std::process::id()]),
        "auto",
        "100ms",
    );
    let sdir = PathBuf::from(cfg["state_dir"].as_str().unwrap());
    let cfg_path = write_config(t.path(), &cfg);

    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two fds into the array it is given.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both fds were just created and are owned by nothing else.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let mut writer = fs::File::from(write_end);
    // SAFETY: F_GETPIPE_SZ on a pipe fd we own.
    let capacity = unsafe { libc::fcntl(fds[1], libc::F_GETPIPE_SZ) };
    assert!(capacity > 0);
    let filler = [b'#'; 63].iter().chain(b"\n").copied().collect::<Vec<u8>>();
    for _ in 0..capacity as usize / filler.len() {
        writer.write_all(&filler).unwrap();
    }
    let mut child = Command::new(REEVE)
        .args(["watch", "--config"])
        .arg(&cfg_path)
        .args(["--log-format", "json", "--log-level", "debug"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(OwnedFd::from(writer)))
        .spawn()
        .unwrap();
    let pid = child.id();
    let reap = |child: &mut std::process::Child| {
        if let Ok(None) = child.try_wait() {
            let _ = child.kill();
            let _ = child.wait();
        }
    };

    let id = target.spawn(&mut procs, "60");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let events = if sdir.join("events.jsonl").exists() {
            raw_events(&sdir)
        } else {
            Vec::new()
        };
        if events
            .iter()
            .any(|v| v["event"] == "discovered" && id.matches(v))
        {
            break;
        }
        if Instant::now() >= deadline {
            reap(&mut child);
            panic!("with stderr stalled, nothing was discovered: {events:#?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        fs::File::from(read_end).read_to_end(&mut out).unwrap();
        out
    });
    send_signal(pid, libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() >= deadline {
            reap(&mut child);
            panic!("reeve did not exit after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
    let out = String::from_utf8(reader.join().unwrap()).unwrap();
    let lines: Vec<&str> = out.lines().filter(|l| !l.starts_with('#')).collect();
    let parsed: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    let names: Vec<&str> = parsed.iter().filter_map(|v| v["event"].as_str()).collect();
    assert!(names.contains(&"discovered"), "{names:?}");
    assert_eq!(names.last(), Some(&"stopped"), "{names:?}");
    let started = parsed
        .iter()
        .find(|v| v["event"] == "started")
        .expect("a started line");
    assert_eq!(started["stderr"], "private", "{started}");
}

/// `reeve events --follow` shows an event once a writer reports it
/// durable: lines appended in a group commit stay hidden until the commit.
#[test]
fn follow_shows_events_once_they_are_durable() {
    use common::{config_for, write_config, REEVE};
    use std::io::{BufRead, BufReader};
    let t = TempDir::new("persist-follow");
    let cfg = config_for(&t, "f", "reeve-test-nothing", None, "poll", "1s");
    let sdir = PathBuf::from(cfg["state_dir"].as_str().unwrap());
    let cfg_path = write_config(t.path(), &cfg);
    let d = StateDir::open(&sdir).unwrap();
    let mut log = EventLog::open(
        &d,
        LogOptions {
            group_commit: true,
            ..LogOptions::default()
        },
    )
    .unwrap();
    log.append(common::now_ms(), "first", &[]).unwrap();
    log.commit(common::now_ms());
    log.append(common::now_ms(), "second", &[]).unwrap();

    let mut child = Command::new(REEVE)
        .args(["events", "--follow", "--json", "--config"])
        .arg(&cfg_path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let next = |within: Duration| -> Option<Value> {
        rx.recv_timeout(within)
            .ok()
            .map(|l| serde_json::from_str(&l).unwrap())
    };
    let first = next(Duration::from_secs(10));
    let early = next(Duration::from_secs(1));
    log.commit(common::now_ms());
    let second = next(Duration::from_secs(10));
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(first.map(|v| v["event"].clone()), Some("first".into()));
    assert!(early.is_none(), "shown before it was durable: {early:?}");
    assert_eq!(second.map(|v| v["event"].clone()), Some("second".into()));
}
