//! Store benchmark: what durability costs the audit log and the state file.
//!
//! Three things are measured in one run, each in its own state directory
//! under one fresh temp directory that is removed at the end: audit-log
//! appends under each fsync policy, per append (CLI commands) and in group
//! commit (the daemon: one commit per loop wakeup), with throughput,
//! latency per append and the fdatasync calls the log counted itself;
//! whether an append costs more on a log of 1,000,000 events than on a log
//! of one, in steady state and for a fresh appender that finds its position
//! from the `events.seq` sidecar or, with the sidecar deleted, from the
//! log's tail; and the atomic save and the load of a state snapshot that
//! tracks 4,096 processes. Every appended line is checked to have landed
//! with the next sequence number, so a fast wrong answer cannot pass.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reeve::log::Val;
use reeve::state::{Counters, Governed, JobState, ProcState, State, STATE_FILE};
use reeve::store::{EventLog, FsyncPolicy, Loaded, LogOptions, StateDir};
use reeve::sys;

const ALWAYS_APPENDS: usize = 2_000;
const APPENDS: usize = 100_000;
/// Unmeasured appends first, so the log exists and its pages are warm.
const WARMUP_APPENDS: usize = 20;
const INTERVAL: Duration = Duration::from_secs(1);
/// Appends per simulated daemon wakeup in the group-commit runs.
const WAKEUP_APPENDS: usize = 10;
const BIG_LOG: u64 = 1_000_000;
const SIZE_APPENDS: usize = 10_000;
/// The steady comparison alternates blocks of this many appends between
/// the small and the big log, so drift lands on both alike.
const SIZE_BLOCK: usize = 500;
const OPEN_REPS: usize = 500;
const PROCESSES: u32 = 4096;
const SAVE_RUNS: usize = 50;
const LOAD_RUNS: usize = 50;
/// Big-log cost over small-log cost that still counts as the same within
/// noise.
const GOAL_SIZE_RATIO: f64 = 1.25;

const LOG_FILE: &str = "events.jsonl";
const SEQ_FILE: &str = "events.seq";

type Res<T> = Result<T, String>;

fn main() {
    if let Err(e) = run() {
        eprintln!("store bench: {e}");
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------------------
// helpers

/// A temporary directory removed with everything in it on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn create() -> Res<TempDir> {
        let name = format!(
            "reeve-bench-store-{}-{}",
            std::process::id(),
            sys::monotonic_ns()
        );
        let path = std::env::temp_dir().join(name);
        // create_dir, not create_dir_all: an existing directory is not ours.
        fs::create_dir(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn state_dir(path: &Path) -> Res<StateDir> {
    StateDir::open(path).map_err(|e| e.to_string())
}

fn open_log(dir: &StateDir, fsync: FsyncPolicy) -> Res<EventLog> {
    open_log_with(dir, fsync, false)
}

fn open_log_with(dir: &StateDir, fsync: FsyncPolicy, group_commit: bool) -> Res<EventLog> {
    let opts = LogOptions {
        fsync,
        // Never rotate: the big log must stay one file of 1,000,000 lines.
        rotate_bytes: 1 << 40,
        group_commit,
        ..LogOptions::default()
    };
    EventLog::open(dir, opts)
        .map_err(|e| format!("open event log in {}: {e}", dir.path().display()))
}

/// Appends one `discovered` event, as the daemon writes it, and checks it
/// landed with seq `expect`.
fn append(log: &mut EventLog, ts_ms: u64, i: u64, expect: u64) -> Res<()> {
    let fields = [
        ("pid", Val::U(10_000 + i % 4_000_000)),
        ("start_ticks", Val::U(1_000_000 + i)),
        ("rule", Val::S("ffmpeg")),
        ("comm", Val::B(b"ffmpeg")),
    ];
    match log.append(ts_ms, "discovered", &fields) {
        Ok(Some(seq)) if seq == expect => Ok(()),
        Ok(Some(seq)) => Err(format!("append landed as seq {seq}, expected {expect}")),
        Ok(None) => Err(format!(
            "append of seq {expect} was queued, not written: {}",
            log.take_error()
                .map_or_else(|| "no error reported".into(), |e| e.to_string())
        )),
        Err(e) => Err(format!("append of seq {expect}: {e}")),
    }
}

/// Flushes a file the bench wrote, so its background writeback does not
/// land inside a later measurement.
fn flush_file(path: &Path) -> Res<()> {
    fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| format!("fsync {}: {e}", path.display()))
}

fn elapsed_ns(t: Instant) -> u64 {
    t.elapsed().as_nanos() as u64
}

/// The filesystem under `path`, by statfs magic, because fsync figures
/// mean little on tmpfs.
fn fs_name(path: &Path) -> String {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return "unknown".into();
    };
    // SAFETY: statfs is plain old data, for which all zeroes is valid.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a struct we own; statfs
    // writes only into it.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return "unknown".into();
    }
    // f_type is i64 here and narrower on some architectures.
    #[allow(clippy::unnecessary_cast)]
    let magic = st.f_type as i64;
    match magic {
        0xEF53 => "ext4".into(),
        0x5846_5342 => "xfs".into(),
        0x9123_683E => "btrfs".into(),
        0x0102_1994 => "tmpfs (fsync is free here)".into(),
        0x794C_7630 => "overlayfs".into(),
        other => format!("fs magic {other:#x}"),
    }
}

/// 1234567 as "1,234,567".
fn count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Microseconds with the precision the magnitude deserves.
fn us(x: f64) -> String {
    if x < 10.0 {
        format!("{x:.2}")
    } else if x < 1000.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.0}")
    }
}

// ---------------------------------------------------------------------------
// statistics

#[derive(Clone, Copy)]
struct Summary {
    p50: f64,
    p99: f64,
    max: f64,
    mean: f64,
}

/// Percentiles of nanosecond samples, in microseconds.
fn summarize(samples: &[u64]) -> Summary {
    let mut s = samples.to_vec();
    s.sort_unstable();
    let at = |p: f64| -> f64 {
        if s.is_empty() {
            return f64::NAN;
        }
        s[((s.len() - 1) as f64 * p).round() as usize] as f64 / 1e3
    };
    let total: u64 = s.iter().sum();
    Summary {
        p50: at(0.5),
        p99: at(0.99),
        max: at(1.0),
        mean: total as f64 / s.len().max(1) as f64 / 1e3,
    }
}

fn verdict(ratio: f64) -> &'static str {
    if ratio <= GOAL_SIZE_RATIO {
        "MET"
    } else {
        "MISSED"
    }
}

// ---------------------------------------------------------------------------
// 1. append under each fsync policy

struct Appends {
    policy: &'static str,
    n: usize,
    per_sec: f64,
    lat: Summary,
    syncs: u64,
}

/// `n` appends under `fsync`; with `group`, appends do not sync and a
/// commit follows every `group` appends (its cost is in the last append of
/// each group), as the daemon commits once per wakeup. fdatasyncs are the
/// log's own count, not an estimate.
fn bench_policy(
    root: &Path,
    label: &'static str,
    fsync: FsyncPolicy,
    group: Option<usize>,
    n: usize,
) -> Res<Appends> {
    let dir = state_dir(&root.join(format!("policy-{}", label.replace([' ', ','], "-"))))?;
    let mut log = open_log_with(&dir, fsync, group.is_some())?;
    let mut seq = 0;
    for i in 0..WARMUP_APPENDS as u64 {
        seq += 1;
        append(&mut log, sys::realtime_ms(), i, seq)?;
    }
    log.commit(sys::realtime_ms());
    let syncs_before = log.syncs();
    let mut samples = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n as u64 {
        seq += 1;
        let ts = sys::realtime_ms();
        let t = Instant::now();
        append(&mut log, ts, i, seq)?;
        match group {
            Some(g) if (i as usize + 1) % g == 0 => log.commit(sys::realtime_ms()),
            None if matches!(fsync, FsyncPolicy::Interval(_)) => log.commit(sys::realtime_ms()),
            _ => {}
        }
        samples.push(elapsed_ns(t));
    }
    log.commit(sys::realtime_ms());
    let wall = start.elapsed().as_secs_f64();
    let syncs = log.syncs() - syncs_before;
    // What the interval policy has not synced yet, as at shutdown; not
    // counted above.
    log.sync()
        .map_err(|e| format!("event log ({label}): {e}"))?;
    if let Some(e) = log.take_error() {
        return Err(format!("event log ({label}) reported: {e}"));
    }
    if log.sync_failures() > 0 {
        return Err(format!(
            "event log ({label}): {} fdatasync calls failed",
            log.sync_failures()
        ));
    }
    if fsync != FsyncPolicy::Never && reeve::store::durable_seq(dir.path()) != Some(seq) {
        return Err(format!(
            "event log ({label}): durable point {:?} after the final sync, expected {seq}",
            reeve::store::durable_seq(dir.path())
        ));
    }
    Ok(Appends {
        policy: label,
        n,
        per_sec: n as f64 / wall,
        lat: summarize(&samples),
        syncs,
    })
}

// ---------------------------------------------------------------------------
// 2. append cost against log size

struct SizeCost {
    build_secs: f64,
    big_bytes: u64,
    small: Summary,
    small_per_sec: f64,
    big: Summary,
    big_per_sec: f64,
    open_small: Summary,
    open_big: Summary,
    tail_small: Summary,
    tail_big: Summary,
}

/// A fresh appender on `dir`: open and first append, timed together.
fn time_open_append(dir: &StateDir, i: u64, expect: u64) -> Res<u64> {
    let t = Instant::now();
    let mut log = open_log(dir, FsyncPolicy::Never)?;
    append(&mut log, sys::realtime_ms(), i, expect)?;
    let dt = elapsed_ns(t);
    drop(log);
    Ok(dt)
}

fn remove_sidecar(dir: &StateDir) -> Res<()> {
    let p = dir.path().join(SEQ_FILE);
    fs::remove_file(&p).map_err(|e| format!("remove {}: {e}", p.display()))
}

fn bench_size(root: &Path) -> Res<SizeCost> {
    let big_dir = state_dir(&root.join("big"))?;
    let small_dir = state_dir(&root.join("small"))?;

    eprintln!("store bench: building a log of {} events", count(BIG_LOG));
    let mut big = open_log(&big_dir, FsyncPolicy::Never)?;
    let t = Instant::now();
    let ts = sys::realtime_ms();
    for i in 0..BIG_LOG {
        append(&mut big, ts + i / 1000, i, i + 1)?;
    }
    let build_secs = t.elapsed().as_secs_f64();
    let big_path = big_dir.path().join(LOG_FILE);
    flush_file(&big_path)?;
    let big_bytes = fs::metadata(&big_path)
        .map_err(|e| format!("{}: {e}", big_path.display()))?
        .len();
    let mut big_seq = BIG_LOG;

    let mut small = open_log(&small_dir, FsyncPolicy::Never)?;
    append(&mut small, sys::realtime_ms(), 0, 1)?;
    let mut small_seq = 1;

    eprintln!(
        "store bench: {} appends on each log, interleaved",
        count(SIZE_APPENDS as u64)
    );
    let mut small_ns = Vec::with_capacity(SIZE_APPENDS);
    let mut big_ns = Vec::with_capacity(SIZE_APPENDS);
    let (mut small_wall, mut big_wall) = (0u64, 0u64);
    for block in 0..SIZE_APPENDS / SIZE_BLOCK {
        for side in 0..2 {
            let on_big = (block + side) % 2 == 1;
            let (log, seq, samples, wall) = if on_big {
                (&mut big, &mut big_seq, &mut big_ns, &mut big_wall)
            } else {
                (&mut small, &mut small_seq, &mut small_ns, &mut small_wall)
            };
            let start = Instant::now();
            for _ in 0..SIZE_BLOCK {
                *seq += 1;
                let ts = sys::realtime_ms();
                let t = Instant::now();
                append(log, ts, *seq, *seq)?;
                samples.push(elapsed_ns(t));
            }
            *wall += elapsed_ns(start);
        }
    }
    drop(big);
    drop(small);

    eprintln!("store bench: {OPEN_REPS} fresh appenders on each log, via sidecar and tail");
    let mut open_small = Vec::with_capacity(OPEN_REPS);
    let mut open_big = Vec::with_capacity(OPEN_REPS);
    let mut tail_small = Vec::with_capacity(OPEN_REPS);
    let mut tail_big = Vec::with_capacity(OPEN_REPS);
    for rep in 0..OPEN_REPS {
        for side in 0..2 {
            // Each timed appender follows an untimed one on the same log, as
            // the daemon's appender follows a CLI command's: the sidecar it
            // finds was just written and the code path is equally warm.
            if (rep + side) % 2 == 1 {
                big_seq += 1;
                time_open_append(&big_dir, big_seq, big_seq)?;
                big_seq += 1;
                open_big.push(time_open_append(&big_dir, big_seq, big_seq)?);
                remove_sidecar(&big_dir)?;
                big_seq += 1;
                tail_big.push(time_open_append(&big_dir, big_seq, big_seq)?);
            } else {
                // A log of exactly one event, written by another appender.
                let dir = state_dir(&root.join(format!("small-open-{rep}")))?;
                let mut first = open_log(&dir, FsyncPolicy::Never)?;
                append(&mut first, sys::realtime_ms(), 0, 1)?;
                drop(first);
                open_small.push(time_open_append(&dir, 1, 2)?);
                remove_sidecar(&dir)?;
                tail_small.push(time_open_append(&dir, 2, 3)?);
                fs::remove_dir_all(dir.path())
                    .map_err(|e| format!("remove {}: {e}", dir.path().display()))?;
            }
        }
    }

    Ok(SizeCost {
        build_secs,
        big_bytes,
        small: summarize(&small_ns),
        small_per_sec: small_ns.len() as f64 / (small_wall as f64 / 1e9),
        big: summarize(&big_ns),
        big_per_sec: big_ns.len() as f64 / (big_wall as f64 / 1e9),
        open_small: summarize(&open_small),
        open_big: summarize(&open_big),
        tail_small: summarize(&tail_small),
        tail_big: summarize(&tail_big),
    })
}

// ---------------------------------------------------------------------------
// 3. state snapshot

struct Snapshot {
    bytes: u64,
    encode: Summary,
    save: Summary,
    load: Summary,
}

fn tracked_state(now: u64) -> State {
    State {
        version: 1,
        saved_at_ms: now,
        daemon_pid: std::process::id(),
        started_ms: now - 3_600_000,
        processes: (0..PROCESSES)
            .map(|i| ProcState {
                pid: 100_000 + i,
                start_ticks: 5_000_000 + u64::from(i) * 37,
                rule: "ffmpeg".into(),
                comm: "ffmpeg".into(),
                ppid: 1_000 + i % 64,
                uid: 1_000,
                discovered_ms: now - 3_000_000 + u64::from(i) * 500,
                exited_ms: 0,
                last_seen_ms: now,
                // Every process governed in its own job: the largest state.
                governed: Some(Governed {
                    job: format!("job.ffmpeg-{}", 100_000 + i),
                    cgroup: PathBuf::from(format!(
                        "/sys/fs/cgroup/reeve/job.ffmpeg-{}",
                        100_000 + i
                    )),
                    original_cgroup: Some(PathBuf::from(
                        "/sys/fs/cgroup/system.slice/encoder.service",
                    )),
                    attached_ms: now - 3_000_000 + u64::from(i) * 500,
                }),
            })
            .collect(),
        jobs: (0..PROCESSES)
            .map(|i| JobState {
                group: format!("job.ffmpeg-{}", 100_000 + i),
                cgroup: PathBuf::from(format!("/sys/fs/cgroup/reeve/job.ffmpeg-{}", 100_000 + i)),
                pool: false,
                limits: Default::default(),
                in_force: true,
                problems: Vec::new(),
            })
            .collect(),
        counters: Counters::default(),
        audit_seq: 0,
        instance: String::new(),
    }
}

fn bench_state(root: &Path) -> Res<Snapshot> {
    let dir = state_dir(&root.join("state"))?;
    let now = sys::realtime_ms();
    let state = tracked_state(now);

    let mut encode = Vec::with_capacity(SAVE_RUNS);
    for _ in 0..SAVE_RUNS {
        let t = Instant::now();
        let bytes = serde_json::to_vec_pretty(&state).map_err(|e| e.to_string())?;
        encode.push(elapsed_ns(t));
        std::hint::black_box(bytes);
    }

    for _ in 0..3 {
        state.save(&dir).map_err(|e| format!("save state: {e}"))?;
    }
    let mut save = Vec::with_capacity(SAVE_RUNS);
    for _ in 0..SAVE_RUNS {
        let t = Instant::now();
        state.save(&dir).map_err(|e| format!("save state: {e}"))?;
        save.push(elapsed_ns(t));
    }
    let path = dir.path().join(STATE_FILE);
    let bytes = fs::metadata(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();

    let mut load = Vec::with_capacity(LOAD_RUNS);
    for _ in 0..LOAD_RUNS {
        let t = Instant::now();
        let loaded = State::load(&dir, now);
        let dt = elapsed_ns(t);
        match loaded {
            Loaded::Ok(s) if s == state => {}
            Loaded::Ok(s) => {
                return Err(format!(
                    "the loaded state differs from the saved one ({} processes)",
                    s.processes.len()
                ))
            }
            other => return Err(format!("load state: {other:?}")),
        }
        load.push(dt);
    }
    Ok(Snapshot {
        bytes,
        encode: summarize(&encode),
        save: summarize(&save),
        load: summarize(&load),
    })
}

// ---------------------------------------------------------------------------
// report

fn row(name: &str, per_sec: Option<f64>, s: &Summary, note: &str) {
    let rate = per_sec.map_or_else(|| "-".to_string(), |r| count(r.round() as u64));
    println!(
        "{name:<44}{rate:>10}{:>10}{:>10}{:>10}   {note}",
        us(s.p50),
        us(s.p99),
        us(s.max)
    );
}

fn ratio_row(name: &str, big: &Summary, small: &Summary) -> f64 {
    let p50 = big.p50 / small.p50;
    let mean = big.mean / small.mean;
    println!(
        "{:<44}p50 {p50:.2}x  mean {mean:.2}x   goal p50 <= {GOAL_SIZE_RATIO}x   {}",
        format!("  ratio 1,000,000 vs 1 event ({name})"),
        verdict(p50)
    );
    p50
}

fn run() -> Res<()> {
    let started = Instant::now();
    let tmp = TempDir::create()?;
    let root = tmp.0.as_path();

    eprintln!("store bench: 1/3 appends under each fsync policy");
    let mut policies = Vec::new();
    for (label, fsync, group, n) in [
        (
            "always, per append",
            FsyncPolicy::Always,
            None,
            ALWAYS_APPENDS,
        ),
        (
            "always, group commit",
            FsyncPolicy::Always,
            Some(WAKEUP_APPENDS),
            ALWAYS_APPENDS * WAKEUP_APPENDS,
        ),
        (
            "interval 1s",
            FsyncPolicy::Interval(INTERVAL),
            Some(1),
            APPENDS,
        ),
        ("never", FsyncPolicy::Never, None, APPENDS),
    ] {
        policies.push(bench_policy(root, label, fsync, group, n)?);
    }
    eprintln!("store bench: 2/3 append cost against log size");
    let size = bench_size(root)?;
    eprintln!("store bench: 3/3 state save and load with {PROCESSES} processes");
    let snap = bench_state(root)?;

    println!();
    println!(
        "reeve store benchmark ({} on {}; latencies per operation in microseconds)",
        root.display(),
        fs_name(root)
    );
    println!(
        "{:<44}{:>10}{:>10}{:>10}{:>10}",
        "", "ops/s", "p50", "p99", "max"
    );
    for p in &policies {
        row(
            &format!("append, fsync {} ({})", p.policy, count(p.n as u64)),
            Some(p.per_sec),
            &p.lat,
            &format!(
                "fdatasyncs measured: {} ({:.3} per append)",
                count(p.syncs),
                p.syncs as f64 / p.n as f64
            ),
        );
    }
    let n = count(SIZE_APPENDS as u64);
    row(
        &format!("append on a log of 1 event ({n})"),
        Some(size.small_per_sec),
        &size.small,
        "fsync never",
    );
    row(
        &format!("append on a log of 1,000,000 events ({n})"),
        Some(size.big_per_sec),
        &size.big,
        "fsync never",
    );
    let r_steady = ratio_row("steady", &size.big, &size.small);
    row(
        "open + first append via sidecar, 1 event",
        None,
        &size.open_small,
        &format!("{OPEN_REPS} runs"),
    );
    row(
        "open + first append via sidecar, 1,000,000",
        None,
        &size.open_big,
        &format!("{OPEN_REPS} runs"),
    );
    let r_open = ratio_row("sidecar", &size.open_big, &size.open_small);
    row(
        "open + first append, no sidecar, 1 event",
        None,
        &size.tail_small,
        &format!("{OPEN_REPS} runs, tail recovery"),
    );
    row(
        "open + first append, no sidecar, 1,000,000",
        None,
        &size.tail_big,
        &format!("{OPEN_REPS} runs, tail recovery"),
    );
    let r_tail = ratio_row("tail", &size.tail_big, &size.tail_small);
    row(
        &format!("state save, {} processes", count(u64::from(PROCESSES))),
        None,
        &snap.save,
        &format!("{SAVE_RUNS} runs, {} bytes", count(snap.bytes)),
    );
    row(
        &format!("state load, {} processes", count(u64::from(PROCESSES))),
        None,
        &snap.load,
        &format!("{LOAD_RUNS} runs"),
    );
    let worst = r_steady.max(r_open).max(r_tail);
    println!(
        "goal: append cost independent of log size (every 1,000,000/1 p50 ratio <= {GOAL_SIZE_RATIO}x): worst {worst:.2}x, {}",
        verdict(worst)
    );

    println!();
    println!(
        "details: each append is one `discovered` event with 4 fields; {WARMUP_APPENDS} unmeasured appends precede each policy run; group commit = {WAKEUP_APPENDS} appends then one EventLog::commit, as one daemon wakeup; interval commits after every append and syncs once a second; fdatasyncs are EventLog::syncs()"
    );
    for p in &policies {
        println!(
            "details: fsync {}: mean {}us over {} appends",
            p.policy,
            us(p.lat.mean),
            count(p.n as u64)
        );
    }
    println!(
        "details: big log built in {:.1}s ({} events/s), {} bytes, fsynced before measuring; steady appends alternate in blocks of {SIZE_BLOCK}",
        size.build_secs,
        count((BIG_LOG as f64 / size.build_secs).round() as u64),
        count(size.big_bytes)
    );
    println!(
        "details: steady append mean {}us on 1 event, {}us on 1,000,000; the small log ends at {} events",
        us(size.small.mean),
        us(size.big.mean),
        count(1 + SIZE_APPENDS as u64)
    );
    println!(
        "details: open + first append = EventLog::open and one append by a fresh appender, right after another appender wrote; no sidecar = events.seq deleted first, so the position comes from the log's tail"
    );
    println!(
        "details: state save = JSON encoding (p50 {}us, p99 {}us) + temp file write, fsync, rename, directory fsync",
        us(snap.encode.p50),
        us(snap.encode.p99)
    );
    let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "details: load average at the end {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "details: total bench time {:.1}s",
        started.elapsed().as_secs_f64()
    );
    drop(tmp);
    Ok(())
}
