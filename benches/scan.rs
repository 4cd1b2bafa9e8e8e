//! Discovery benchmark: reeve against the kernel's floor and the usual tools.
//!
//! One process table is built (1,000 background sleeps and 20 targets, each
//! a copy of /bin/sleep under a unique name) and four things are measured on
//! it in one run: an in-process cold and steady scan against a naive /proc
//! walk, `reeve scan` as a process against `pgrep -x`, exec-to-discovered
//! latency through the netlink proc connector, and the resident memory of
//! `reeve watch` tracking 1,020 processes.
//!
//! reeve never discovers its own descendants, so the in-process measurements
//! run in a worker: this binary re-executed with `REEVE_BENCH_WORKER` set, a
//! sibling of the targets rather than their parent, speaking JSON lines over
//! its stdin and stdout. Every process the bench starts is its direct child,
//! killed by the pid it was spawned as and reaped by a guard on drop; each
//! child also gets SIGKILL from the kernel if the bench itself dies.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus as ProcessStatus, Stdio};
use std::time::{Duration, Instant};

use reeve::config::{Filter, Match, Rule};
use reeve::discovery::netlink::{self, NetlinkError, ProcConnector, ProcEvent};
use reeve::discovery::{Discovery, ExitStatus, ScanKind, Sink, Source, Tracked};
use reeve::procfs::ProcKey;
use reeve::sys;
use reeve::table::Refusal;
use serde_json::{json, Value};

const BACKGROUND: usize = 1000;
const TARGETS: usize = 20;
const EXTRA_TARGETS: usize = 1000;
/// In-process scan rounds, process runs and netlink execs; the smoke plan
/// (`REEVE_BENCH_QUICK=1`) runs a tenth of each.
fn scan_rounds() -> usize {
    if goals::quick() {
        20
    } else {
        200
    }
}
const WARMUP_ROUNDS: usize = 5;
fn process_runs() -> usize {
    if goals::quick() {
        5
    } else {
        50
    }
}
fn execs() -> usize {
    if goals::quick() {
        100
    } else {
        1000
    }
}
const CAPACITY: usize = 4096;
/// The kernel keeps 15 bytes of a process name in comm.
const COMM_MAX: usize = 15;

const WORKER_ENV: &str = "REEVE_BENCH_WORKER";
const TARGET_ENV: &str = "REEVE_BENCH_TARGET";
/// Overrides where the static musl binary is looked for.
const MUSL_ENV: &str = "REEVE_BENCH_MUSL";

const GOAL_COLD_VS_NAIVE: f64 = 1.1;
const GOAL_STEADY_VS_COLD: f64 = 0.25;
const GOAL_PROCESS_VS_PGREP: f64 = 1.0;
const GOAL_P99_US: f64 = 2000.0;
const GOAL_RSS_KIB: u64 = 4096;

type Res<T> = Result<T, String>;

#[path = "support/scan_goals.rs"]
mod goals;

fn main() {
    let result = match std::env::var(WORKER_ENV).as_deref() {
        Ok("scan") => worker_scan(),
        Ok("netlink") => worker_netlink(),
        Ok("steady") => goals::worker_steady(),
        Ok(other) => Err(format!("unknown worker role '{other}'")),
        Err(_) => run(),
    };
    if let Err(e) = result {
        eprintln!("scan bench: {e}");
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------------------
// guards and process helpers

/// A temporary directory removed with everything in it on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn create(name: &str) -> Res<TempDir> {
        let path = std::env::temp_dir().join(name);
        fs::create_dir(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// One child, killed and reaped on drop. `Child::kill` never signals a
/// child that was already reaped, so the pid cannot have been reused.
struct Kid(Child);

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Many children: on drop all are killed first, then all are reaped.
#[derive(Default)]
struct Herd(Vec<Kid>);

impl Herd {
    fn spawn(&mut self, cmd: &mut Command) -> Res<u32> {
        let child = cmd.spawn().map_err(|e| format!("cannot spawn: {e}"))?;
        let pid = child.id();
        self.0.push(Kid(child));
        Ok(pid)
    }
}

impl Drop for Herd {
    fn drop(&mut self) {
        for k in &mut self.0 {
            let _ = k.0.kill();
        }
        for k in &mut self.0 {
            let _ = k.0.wait();
        }
    }
}

/// A command with stdio on /dev/null that the kernel kills if the bench
/// dies first.
fn command(path: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(path);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let parent = std::process::id();
    // SAFETY: the closure runs between fork and exec and calls only prctl
    // and getppid, which are async-signal-safe and touch no shared memory.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() as u32 != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    cmd
}

/// Waits for `child` at most `timeout` (through a pidfd, so the wake-up is
/// exact); on timeout kills and reaps it and fails.
fn wait_deadline(child: &mut Child, timeout: Duration) -> Res<ProcessStatus> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1;
    // the pid is our unreaped child, so it names that process.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id() as libc::c_int, 0) };
    if raw >= 0 {
        // SAFETY: `raw` is a fresh fd that nothing else owns.
        let pidfd = unsafe { OwnedFd::from_raw_fd(raw as RawFd) };
        let mut fds = [sys::poll_fd(pidfd.as_raw_fd())];
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "pid {} did not exit within {timeout:?}; killed",
                    child.id()
                ));
            }
            let n = sys::poll(&mut fds, ms(left)).map_err(|e| format!("poll: {e}"))?;
            if n > 0 {
                break;
            }
        }
    }
    child.wait().map_err(|e| format!("wait: {e}"))
}

fn ms(d: Duration) -> i32 {
    d.as_millis().clamp(1, i32::MAX as u128) as i32
}

/// Newline-framed reading from a pipe with a deadline per line.
struct Lines {
    file: File,
    buf: Vec<u8>,
    eof: bool,
}

impl Lines {
    fn new(fd: OwnedFd) -> Lines {
        Lines {
            file: File::from(fd),
            buf: Vec::new(),
            eof: false,
        }
    }

    /// A complete line already buffered, without its newline.
    fn take(&mut self) -> Option<String> {
        let end = self.buf.iter().position(|&b| b == b'\n')?;
        let line = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.drain(..=end);
        Some(line)
    }

    /// Reads what is there now; call after poll says the fd is ready.
    fn fill(&mut self) -> Res<()> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self
            .file
            .read(&mut chunk)
            .map_err(|e| format!("pipe read: {e}"))?;
        if n == 0 {
            self.eof = true;
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    fn next(&mut self, timeout: Duration) -> Res<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.take() {
                return Ok(line);
            }
            if self.eof {
                return Err("the worker closed its output".into());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("no answer from the worker within {timeout:?}"));
            }
            let mut fds = [sys::poll_fd(self.file.as_raw_fd())];
            if sys::poll(&mut fds, ms(left)).map_err(|e| format!("poll: {e}"))? > 0 {
                self.fill()?;
            }
        }
    }
}

fn random_hex(bytes: usize) -> Res<String> {
    let mut b = vec![0u8; bytes];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| format!("cannot read /dev/urandom: {e}"))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

fn count_procs() -> usize {
    fs::read_dir("/proc").map_or(0, |d| {
        d.flatten()
            .filter(|e| e.file_name().to_str().is_some_and(is_pid))
            .count()
    })
}

fn is_pid(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// The like-for-like rule: the target's whole name is its comm (15
/// bytes), which is all the naive baseline and `pgrep -x` compare.
fn rules(target: &str) -> Vec<Rule> {
    vec![Rule {
        name: "bench".into(),
        matcher: Match {
            comm: vec![target.into()],
            ..Default::default()
        },
        filter: Filter::default(),
        ..Default::default()
    }]
}

fn emit(v: &Value) -> Res<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{v}")
        .and_then(|_| out.flush())
        .map_err(|e| format!("cannot write to the orchestrator: {e}"))
}

// ---------------------------------------------------------------------------
// statistics

#[derive(Clone, Copy)]
struct Summary {
    median: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

/// Percentiles of nanosecond samples, in `unit` nanoseconds.
fn summarize(samples: &[u64], unit: f64) -> Summary {
    let mut s = samples.to_vec();
    s.sort_unstable();
    let at = |p: f64| -> f64 {
        if s.is_empty() {
            return f64::NAN;
        }
        let i = ((s.len() - 1) as f64 * p).round() as usize;
        s[i] as f64 / unit
    };
    Summary {
        median: at(0.5),
        p90: at(0.9),
        p99: at(0.99),
        max: at(1.0),
    }
}

/// "MET" or how far a value is past its upper bound.
fn verdict(value: f64, bound: f64, unit: &str) -> String {
    if value <= bound {
        "MET".into()
    } else {
        format!("MISSED by {:.2}{unit}", value - bound)
    }
}

fn verdict_below(value: f64, bound: f64, unit: &str) -> String {
    if value < bound {
        "MET".into()
    } else {
        format!("MISSED by {:.2}{unit}", value - bound)
    }
}

// ---------------------------------------------------------------------------
// workers (run as children of the orchestrator, siblings of the targets)

#[derive(Default)]
struct Count {
    discovered: u32,
    exited: u32,
    refused: u32,
}

impl Sink for Count {
    fn discovered(&mut self, _: ProcKey, _: &Tracked, _: &str, _: Source) {
        self.discovered += 1;
    }
    fn exited(&mut self, _: ProcKey, _: &Tracked, _: &str, _: Option<ExitStatus>) {
        self.exited += 1;
    }
    fn already_tracked(&mut self, _: ProcKey, _: Source) {}
    fn refused(&mut self, _: ProcKey, _: &str, _: Refusal) {
        self.refused += 1;
    }
}

/// comm is everything between the first '(' and the last ')'.
fn stat_comm(stat: &[u8]) -> Option<&[u8]> {
    let open = stat.iter().position(|&b| b == b'(')?;
    let close = stat.iter().rposition(|&b| b == b')')?;
    stat.get(open + 1..close)
}

/// The floor: list /proc, read every stat, compare comm. Returns (matches,
/// pids listed).
fn naive_scan(comm: &[u8]) -> (usize, usize) {
    let mut found = 0;
    let mut listed = 0;
    let Ok(dir) = fs::read_dir("/proc") else {
        return (0, 0);
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        listed += 1;
        let Ok(stat) = fs::read(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if stat_comm(&stat) == Some(comm) {
            found += 1;
        }
    }
    (found, listed)
}

fn worker_target() -> Res<String> {
    std::env::var(TARGET_ENV).map_err(|_| format!("{TARGET_ENV} is not set"))
}

fn open(rules: &[Rule]) -> Res<Discovery> {
    Discovery::new(rules, CAPACITY).map_err(|e| format!("cannot open /proc: {e}"))
}

/// One deep scan by a fresh Discovery; only the scan is timed.
fn cold_scan(rules: &[Rule]) -> Res<u64> {
    let mut d = open(rules)?;
    let mut sink = Count::default();
    let t = Instant::now();
    let r = d.scan(ScanKind::Deep, &mut sink);
    let dt = t.elapsed().as_nanos() as u64;
    r.map_err(|e| format!("cold scan: {e}"))?;
    if sink.discovered != TARGETS as u32 {
        return Err(format!(
            "a cold scan discovered {} targets, expected {TARGETS}",
            sink.discovered
        ));
    }
    Ok(dt)
}

fn worker_scan() -> Res<()> {
    let target = worker_target()?;
    let comm = &target.as_bytes()[..target.len().min(COMM_MAX)];
    let rules = rules(&target);
    // The same targets named by exe basename: one readlink of
    // /proc/<pid>/exe per process, which neither baseline pays.
    let exe_rules = vec![Rule {
        name: "bench".into(),
        matcher: Match {
            exe: vec![String::from_utf8_lossy(comm).into_owned()],
            ..Default::default()
        },
        filter: Filter::default(),
        ..Default::default()
    }];
    let mut steady = open(&rules)?;
    let mut first = Count::default();
    steady
        .scan(ScanKind::Deep, &mut first)
        .map_err(|e| format!("deep scan: {e}"))?;
    if first.discovered != TARGETS as u32 {
        return Err(format!(
            "the first deep scan discovered {} targets, expected {TARGETS}",
            first.discovered
        ));
    }
    let mut naive_ns = Vec::with_capacity(scan_rounds());
    let mut cold_ns = Vec::with_capacity(scan_rounds());
    let mut cold_exe_ns = Vec::with_capacity(scan_rounds());
    let mut steady_ns = Vec::with_capacity(scan_rounds());
    let (mut naive_min, mut naive_max, mut listed) = (usize::MAX, 0, 0);
    let mut steady_events = 0u32;
    let mut steady_found = 0u32;
    for round in 0..WARMUP_ROUNDS + scan_rounds() {
        let keep = round >= WARMUP_ROUNDS;
        // Rotating the order cancels drift and cache effects between variants.
        for step in 0..4 {
            match (round + step) % 4 {
                0 => {
                    let t = Instant::now();
                    let (found, n) = naive_scan(comm);
                    let dt = t.elapsed().as_nanos() as u64;
                    naive_min = naive_min.min(found);
                    naive_max = naive_max.max(found);
                    listed = n;
                    if keep {
                        naive_ns.push(dt);
                    }
                }
                1 => {
                    let dt = cold_scan(&rules)?;
                    if keep {
                        cold_ns.push(dt);
                    }
                }
                2 => {
                    let dt = cold_scan(&exe_rules)?;
                    if keep {
                        cold_exe_ns.push(dt);
                    }
                }
                _ => {
                    let mut sink = Count::default();
                    let t = Instant::now();
                    let r = steady.scan(ScanKind::Steady, &mut sink);
                    let dt = t.elapsed().as_nanos() as u64;
                    let r = r.map_err(|e| format!("steady scan: {e}"))?;
                    steady_events += sink.discovered + sink.exited + sink.refused;
                    steady_found = r.found;
                    if keep {
                        steady_ns.push(dt);
                    }
                }
            }
        }
    }
    emit(&json!({
        "naive_ns": naive_ns,
        "cold_ns": cold_ns,
        "cold_exe_ns": cold_exe_ns,
        "steady_ns": steady_ns,
        "naive_found_min": naive_min,
        "naive_found_max": naive_max,
        "listed": listed,
        "steady_found": steady_found,
        "steady_events": steady_events,
    }))
}

/// Records when each pid was discovered.
#[derive(Default)]
struct Stamp {
    at: HashMap<u32, u64>,
}

impl Sink for Stamp {
    fn discovered(&mut self, key: ProcKey, _: &Tracked, _: &str, _: Source) {
        let now = sys::monotonic_ns();
        self.at.insert(key.pid, now);
    }
    fn exited(&mut self, _: ProcKey, _: &Tracked, _: &str, _: Option<ExitStatus>) {}
    fn already_tracked(&mut self, _: ProcKey, _: Source) {}
    fn refused(&mut self, _: ProcKey, _: &str, _: Refusal) {}
}

/// Discovers through netlink while the orchestrator execs targets one at a
/// time: it writes a pid per line, this answers with that pid's latency.
fn worker_netlink() -> Res<()> {
    let target = worker_target()?;
    let mut conn = match ProcConnector::open(Duration::from_secs(1)) {
        Ok(c) => c,
        Err(e) => return emit(&json!({ "error": e })),
    };
    let rules = rules(&target);
    let mut d = open(&rules)?;
    let mut sink = Stamp::default();
    let first = d
        .scan(ScanKind::Deep, &mut sink)
        .map_err(|e| format!("deep scan: {e}"))?;
    sink.at.clear();
    emit(&json!({ "ready": true, "deep_new": first.new }))?;

    let stdin = io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| format!("dup stdin: {e}"))?;
    let mut input = Lines::new(stdin);
    // Exec event per tgid: (kernel timestamp, when the datagram was read).
    let mut exec_at: HashMap<u32, (u64, u64)> = HashMap::new();
    let mut waiting: Option<(u32, Instant)> = None;
    let (mut events, mut overruns, mut malformed) = (0u64, 0u64, 0u64);
    loop {
        if waiting.is_none() {
            if let Some(line) = input.take() {
                if line == "end" {
                    return emit(&json!({
                        "done": true,
                        "events": events,
                        "overruns": overruns,
                        "malformed": malformed,
                    }));
                }
                let pid: u32 = line
                    .trim()
                    .parse()
                    .map_err(|_| format!("bad request line '{line}'"))?;
                waiting = Some((pid, Instant::now() + Duration::from_secs(2)));
            } else if input.eof {
                return Err("the orchestrator closed stdin".into());
            }
        }
        if let Some((pid, deadline)) = waiting {
            if let Some(found) = sink.at.remove(&pid) {
                let exec = exec_at.remove(&pid);
                let latency = exec.map(|(at, _)| found.saturating_sub(at));
                let delivery = exec.map(|(at, received)| received.saturating_sub(at));
                emit(&json!({ "pid": pid, "latency_ns": latency, "delivery_ns": delivery }))?;
                waiting = None;
                continue;
            }
            if Instant::now() >= deadline {
                emit(&json!({ "pid": pid, "timeout": true }))?;
                waiting = None;
                continue;
            }
        }
        let mut fds = [
            sys::poll_fd(conn.fd()),
            sys::poll_fd(input.file.as_raw_fd()),
        ];
        sys::poll(&mut fds, 100).map_err(|e| format!("poll: {e}"))?;
        if fds[0].revents != 0 {
            loop {
                match conn.recv() {
                    Ok(Some(dgram)) => {
                        let received = sys::monotonic_ns();
                        for ev in netlink::events(dgram) {
                            match ev {
                                Ok(ev) => {
                                    events += 1;
                                    if let ProcEvent::Exec { tgid, .. } = ev.kind {
                                        exec_at.insert(tgid, (ev.timestamp_ns, received));
                                    }
                                    d.handle_event(&ev, &mut sink);
                                }
                                Err(NetlinkError::Overrun) => overruns += 1,
                                Err(_) => malformed += 1,
                            }
                        }
                    }
                    Ok(None) => break,
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                        overruns += 1;
                        d.scan(ScanKind::Deep, &mut sink)
                            .map_err(|e| format!("rescan: {e}"))?;
                    }
                    Err(e) => return Err(format!("netlink receive: {e}")),
                }
            }
            if exec_at.len() > 100_000 {
                exec_at.clear();
            }
        }
        if fds[1].revents != 0 {
            input.fill()?;
        }
    }
}

// ---------------------------------------------------------------------------
// orchestrator

struct Worker {
    kid: Kid,
    stdin: ChildStdin,
    out: Lines,
}

impl Worker {
    fn spawn(role: &str, target: &str) -> Res<Worker> {
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let mut cmd = command(&exe, &[]);
        cmd.env(WORKER_ENV, role)
            .env(TARGET_ENV, target)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start the {role} worker: {e}"))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let kid = Kid(child);
        let (Some(stdin), Some(stdout)) = (stdin, stdout) else {
            return Err("worker pipes missing".into());
        };
        Ok(Worker {
            kid,
            stdin,
            out: Lines::new(OwnedFd::from(stdout)),
        })
    }

    fn send(&mut self, line: &str) -> Res<()> {
        writeln!(self.stdin, "{line}")
            .and_then(|_| self.stdin.flush())
            .map_err(|e| format!("cannot write to the worker: {e}"))
    }

    fn recv(&mut self, timeout: Duration) -> Res<Value> {
        let line = self.out.next(timeout)?;
        serde_json::from_str(&line).map_err(|e| format!("bad worker line '{line}': {e}"))
    }

    fn finish(mut self) -> Res<()> {
        let status = wait_deadline(&mut self.kid.0, Duration::from_secs(10))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("the worker ended with {status}"))
        }
    }
}

fn samples(v: &Value, field: &str) -> Res<Vec<u64>> {
    v[field]
        .as_array()
        .ok_or_else(|| format!("worker result lacks {field}"))?
        .iter()
        .map(|x| x.as_u64().ok_or_else(|| format!("bad sample in {field}")))
        .collect()
}

struct InProcess {
    naive: Summary,
    cold: Summary,
    cold_exe: Summary,
    steady: Summary,
    listed: u64,
    notes: Vec<String>,
}

fn bench_in_process(target: &str) -> Res<InProcess> {
    let mut w = Worker::spawn("scan", target)?;
    let v = w.recv(Duration::from_secs(120))?;
    w.finish()?;
    let us = 1e3;
    let mut notes = Vec::new();
    let (lo, hi) = (
        v["naive_found_min"].as_u64().unwrap_or(0),
        v["naive_found_max"].as_u64().unwrap_or(0),
    );
    if lo != TARGETS as u64 || hi != TARGETS as u64 {
        notes.push(format!(
            "note: the naive baseline matched {lo}..{hi} processes by comm, expected {TARGETS} \
             (another run's targets share the 15-byte comm?)"
        ));
    }
    let steady_events = v["steady_events"].as_u64().unwrap_or(0);
    if steady_events > 0 {
        notes.push(format!(
            "note: steady scans reported {steady_events} discoveries/exits (the table changed)"
        ));
    }
    let steady_found = v["steady_found"].as_u64().unwrap_or(0);
    if steady_found != TARGETS as u64 {
        notes.push(format!(
            "note: the last steady scan saw {steady_found} tracked processes, expected {TARGETS}"
        ));
    }
    Ok(InProcess {
        naive: summarize(&samples(&v, "naive_ns")?, us),
        cold: summarize(&samples(&v, "cold_ns")?, us),
        cold_exe: summarize(&samples(&v, "cold_exe_ns")?, us),
        steady: summarize(&samples(&v, "steady_ns")?, us),
        listed: v["listed"].as_u64().unwrap_or(0),
        notes,
    })
}

/// Runs a command once with stdout to a file; returns its stdout.
fn capture(bin: &Path, args: &[&str], out_path: &Path) -> Res<String> {
    let out = File::create(out_path).map_err(|e| format!("{}: {e}", out_path.display()))?;
    let mut kid = Kid(command(bin, args)
        .stdout(out)
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?);
    let status = wait_deadline(&mut kid.0, Duration::from_secs(10))?;
    let text = fs::read_to_string(out_path).map_err(|e| format!("{}: {e}", out_path.display()))?;
    if !status.success() {
        return Err(format!("{} {args:?} ended with {status}", bin.display()));
    }
    Ok(text)
}

fn check_lines(what: &str, text: &str, want: usize) -> Res<()> {
    let n = text.lines().count();
    if n == want {
        Ok(())
    } else {
        Err(format!(
            "{what} printed {n} lines, expected {want}:\n{text}"
        ))
    }
}

/// One timed run of a whole process, spawn to reap.
fn time_run(bin: &Path, args: &[&str]) -> Res<u64> {
    let t = Instant::now();
    let mut kid = Kid(Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?);
    let status = wait_deadline(&mut kid.0, Duration::from_secs(10))?;
    let dt = t.elapsed().as_nanos() as u64;
    if !status.success() {
        return Err(format!("{} {args:?} ended with {status}", bin.display()));
    }
    Ok(dt)
}

struct Processes {
    pgrep: Summary,
    reeve: Summary,
    musl: Option<Summary>,
}

fn bench_processes(
    reeve: &Path,
    musl: Option<&Path>,
    config: &Path,
    comm: &str,
    tmp: &Path,
) -> Res<Processes> {
    let pgrep = Path::new("/usr/bin/pgrep");
    let cfg = config.to_str().ok_or("config path is not UTF-8")?;
    let scan_args = ["scan", "--config", cfg];
    let json_args = ["scan", "--config", cfg, "--json"];
    let pgrep_args = ["-x", comm];
    let out = tmp.join("capture.txt");
    let mut bins: Vec<(&Path, &[&str])> = vec![(pgrep, &pgrep_args[..]), (reeve, &scan_args[..])];
    if let Some(m) = musl {
        bins.push((m, &scan_args[..]));
    }
    for (bin, _) in &bins[1..] {
        check_lines(
            &format!("{} scan", bin.display()),
            &capture(bin, &scan_args, &out)?,
            TARGETS + 1,
        )?;
        check_lines(
            &format!("{} scan --json", bin.display()),
            &capture(bin, &json_args, &out)?,
            TARGETS,
        )?;
    }
    check_lines("pgrep -x", &capture(pgrep, &pgrep_args, &out)?, TARGETS)?;

    let mut times: Vec<Vec<u64>> = vec![Vec::with_capacity(process_runs()); bins.len()];
    for run in 0..process_runs() + 2 {
        for step in 0..bins.len() {
            let i = (run + step) % bins.len();
            let (bin, args) = bins[i];
            let dt = time_run(bin, args)?;
            if run >= 2 {
                times[i].push(dt);
            }
        }
    }
    let ms = 1e6;
    Ok(Processes {
        pgrep: summarize(&times[0], ms),
        reeve: summarize(&times[1], ms),
        musl: times.get(2).map(|t| summarize(t, ms)),
    })
}

struct Latency {
    summary: Option<Summary>,
    /// Exec to the datagram being read: kernel delivery and our wake-up.
    delivery: Option<Summary>,
    /// The datagram being read to discovered: reeve's handling.
    handling: Option<Summary>,
    measured: usize,
    timeouts: usize,
    no_exec_event: usize,
    info: String,
}

fn bench_netlink(target_path: &Path, target: &str) -> Res<Latency> {
    let mut w = Worker::spawn("netlink", target)?;
    let ready = w.recv(Duration::from_secs(30))?;
    if let Some(e) = ready["error"].as_str() {
        w.finish()?;
        return Ok(Latency {
            summary: None,
            delivery: None,
            handling: None,
            measured: 0,
            timeouts: 0,
            no_exec_event: 0,
            info: format!("proc connector unavailable: {e}"),
        });
    }
    let mut lat = Vec::with_capacity(execs());
    let mut delivery = Vec::with_capacity(execs());
    let mut handling = Vec::with_capacity(execs());
    let (mut timeouts, mut no_exec_event) = (0, 0);
    for _ in 0..execs() {
        let mut kid = Kid(command(target_path, &["600"])
            .spawn()
            .map_err(|e| format!("cannot spawn a target: {e}"))?);
        let pid = kid.0.id();
        w.send(&pid.to_string())?;
        let v = w.recv(Duration::from_secs(5))?;
        if v["pid"].as_u64() != Some(u64::from(pid)) {
            return Err(format!("worker answered {v} for pid {pid}"));
        }
        if v["timeout"].as_bool() == Some(true) {
            timeouts += 1;
        } else if let Some(ns) = v["latency_ns"].as_u64() {
            lat.push(ns);
            let d = v["delivery_ns"].as_u64().unwrap_or(0);
            delivery.push(d);
            handling.push(ns.saturating_sub(d));
        } else {
            no_exec_event += 1;
        }
        let _ = kid.0.kill();
        wait_deadline(&mut kid.0, Duration::from_secs(5))?;
    }
    w.send("end")?;
    let done = w.recv(Duration::from_secs(10))?;
    w.finish()?;
    Ok(Latency {
        summary: (!lat.is_empty()).then(|| summarize(&lat, 1e3)),
        delivery: (!delivery.is_empty()).then(|| summarize(&delivery, 1e3)),
        handling: (!handling.is_empty()).then(|| summarize(&handling, 1e3)),
        measured: lat.len(),
        timeouts,
        no_exec_event,
        info: format!(
            "{} netlink events handled, {} overruns, {} malformed",
            done["events"], done["overruns"], done["malformed"]
        ),
    })
}

struct Rss {
    rss_kib: u64,
    hwm_kib: u64,
    anon_kib: u64,
    file_kib: u64,
    mode: String,
}

fn status_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Event counts in a JSON log: (discovered, scan, started mode).
fn read_log(path: &Path) -> (usize, usize, String) {
    let text = fs::read_to_string(path).unwrap_or_default();
    let (mut discovered, mut scans, mut mode) = (0, 0, String::new());
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        match v["event"].as_str() {
            Some("discovered") => discovered += 1,
            Some("scan") => scans += 1,
            Some("started") => mode = v["mode"].as_str().unwrap_or("?").to_string(),
            _ => {}
        }
    }
    (discovered, scans, mode)
}

fn measure_watch(bin: &Path, config: &Path, log_path: &Path, expect: usize) -> Res<Rss> {
    let cfg = config.to_str().ok_or("config path is not UTF-8")?;
    let log = File::create(log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
    let args = [
        "watch",
        "--config",
        cfg,
        "--log-format",
        "json",
        "--log-level",
        "debug",
    ];
    let mut kid = Kid(command(bin, &args)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?);
    let pid = kid.0.id();
    let died = |kid: &mut Kid| -> Res<()> {
        match kid.0.try_wait() {
            Ok(Some(st)) => Err(format!(
                "reeve watch ended early with {st}; log:\n{}",
                fs::read_to_string(log_path).unwrap_or_default()
            )),
            _ => Ok(()),
        }
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let scans_then = loop {
        std::thread::sleep(Duration::from_millis(50));
        died(&mut kid)?;
        let (discovered, scans, _) = read_log(log_path);
        if discovered >= expect {
            break scans;
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "reeve watch discovered {discovered} of {expect} within 60 s"
            ));
        }
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        std::thread::sleep(Duration::from_millis(50));
        died(&mut kid)?;
        if read_log(log_path).1 >= scans_then + 2 {
            break;
        }
        if Instant::now() >= deadline {
            return Err("reeve watch did not scan twice within 10 s".into());
        }
    }
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("cannot read /proc/{pid}/status: {e}"))?;
    let rss_kib = status_kib(&status, "VmRSS:").ok_or("no VmRSS")?;
    let hwm_kib = status_kib(&status, "VmHWM:").ok_or("no VmHWM")?;
    let anon_kib = status_kib(&status, "RssAnon:").unwrap_or(0);
    let file_kib = status_kib(&status, "RssFile:").unwrap_or(0);
    // SAFETY: kill(2) on our own child, not yet reaped, so the pid is its.
    if unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) } != 0 {
        return Err(format!("SIGTERM to {pid}: {}", io::Error::last_os_error()));
    }
    let st = wait_deadline(&mut kid.0, Duration::from_secs(5))?;
    if !st.success() {
        return Err(format!("reeve watch ended with {st} after SIGTERM"));
    }
    let (discovered, _, mode) = read_log(log_path);
    if discovered != expect {
        return Err(format!(
            "reeve watch discovered {discovered} processes, expected {expect}"
        ));
    }
    Ok(Rss {
        rss_kib,
        hwm_kib,
        anon_kib,
        file_kib,
        mode,
    })
}

fn write_json(path: &Path, v: &Value) -> Res<()> {
    fs::write(path, v.to_string()).map_err(|e| format!("{}: {e}", path.display()))
}

fn run() -> Res<()> {
    let started = Instant::now();
    let others = count_procs().saturating_sub(1);
    let hex = random_hex(6)?;
    debug_assert_eq!(hex.len(), 12);
    let tmp = TempDir::create(&format!("reeve-bench-{hex}"))?;
    let bg_path = tmp.0.join(format!("bg-reeve-bench-{hex}"));
    // 3 + 12 = 15 bytes: the whole name fits in comm, so it is unique to
    // this run for reeve's comm rule and for pgrep -x alike.
    let target = format!("ffb{hex}");
    let target_path = tmp.0.join(&target);
    let comm = &target[..COMM_MAX];
    for p in [&bg_path, &target_path] {
        fs::copy("/bin/sleep", p)
            .map_err(|e| format!("copy /bin/sleep to {}: {e}", p.display()))?;
    }
    let scan_config = tmp.0.join("scan.json");
    write_json(
        &scan_config,
        &json!({"targets": [{"name": "bench", "match": {"comm": [target]}}]}),
    )?;
    // One config and one private state directory per daemon, so each
    // starts cold: a shared state would let the second restore the first's
    // processes without discovering them.
    let watch_config = |variant: &str| -> Res<PathBuf> {
        let path = tmp.0.join(format!("watch-{variant}.json"));
        write_json(
            &path,
            &json!({
                "targets": [{"name": "bench", "match": {"comm": [target]}}],
                // Scans at the polling pace: the phase waits for two of them.
                "discovery": {"scan_interval": "1s", "rescan_interval": "1s"},
                "state_dir": tmp.0.join(format!("state-{variant}")),
            }),
        )?;
        Ok(path)
    };
    let reeve = PathBuf::from(env!("CARGO_BIN_EXE_reeve"));
    let musl_path = std::env::var_os(MUSL_ENV).map_or_else(
        || {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("target/x86_64-unknown-linux-musl/release/reeve")
        },
        PathBuf::from,
    );
    let musl = musl_path.is_file().then_some(musl_path.as_path());

    eprintln!("scan bench: spawning {BACKGROUND} background processes and {TARGETS} targets");
    let mut herd = Herd::default();
    for _ in 0..BACKGROUND {
        herd.spawn(&mut command(&bg_path, &["600"]))?;
    }
    for _ in 0..TARGETS {
        herd.spawn(&mut command(&target_path, &["600"]))?;
    }

    eprintln!(
        "scan bench: 1/4 in-process scans ({} rounds)",
        scan_rounds()
    );
    let inproc = bench_in_process(&target)?;
    eprintln!(
        "scan bench: 2/4 reeve scan vs pgrep ({} runs each)",
        process_runs()
    );
    let procs = bench_processes(&reeve, musl, &scan_config, comm, &tmp.0)?;
    eprintln!(
        "scan bench: 3/4 netlink exec->discovered ({} execs)",
        execs()
    );
    let latency = bench_netlink(&target_path, &target)?;

    eprintln!("scan bench: 4/4 reeve watch RSS with {EXTRA_TARGETS} more targets");
    let mut extra = Herd::default();
    for _ in 0..EXTRA_TARGETS {
        extra.spawn(&mut command(&target_path, &["600"]))?;
    }
    let tracked = TARGETS + EXTRA_TARGETS;
    let rss_glibc = measure_watch(
        &reeve,
        &watch_config("glibc")?,
        &tmp.0.join("watch-glibc.log"),
        tracked,
    )?;
    let rss_musl = match musl {
        Some(m) => Some(measure_watch(
            m,
            &watch_config("musl")?,
            &tmp.0.join("watch-musl.log"),
            tracked,
        )?),
        None => None,
    };
    drop(extra);

    let cold_ratio = inproc.cold.median / inproc.naive.median;
    let steady_ratio = inproc.steady.median / inproc.cold.median;
    let proc_ratio = procs.reeve.median / procs.pgrep.median;

    println!();
    println!(
        "reeve scan benchmark ({BACKGROUND} background + {TARGETS} targets, {others} other processes; {} pids in /proc during scans)",
        inproc.listed
    );
    println!(
        "{:<32}{:>10}{:>10}{:>9}   {:<20}",
        "", "median", "p90", "ratio", "goal"
    );
    println!(
        "{:<32}{:>8.0}us{:>8.0}us",
        "naive baseline", inproc.naive.median, inproc.naive.p90
    );
    println!(
        "{:<32}{:>8.0}us{:>8.0}us{:>8.2}x   {:<20}{}",
        "reeve cold scan",
        inproc.cold.median,
        inproc.cold.p90,
        cold_ratio,
        format!("<= {GOAL_COLD_VS_NAIVE}x naive"),
        verdict(cold_ratio, GOAL_COLD_VS_NAIVE, "x")
    );
    println!(
        "{:<32}{:>8.0}us{:>8.0}us{:>8.2}x   {:<20}{}",
        "reeve steady scan",
        inproc.steady.median,
        inproc.steady.p90,
        steady_ratio,
        format!("<= {GOAL_STEADY_VS_COLD}x cold"),
        verdict(steady_ratio, GOAL_STEADY_VS_COLD, "x")
    );
    println!(
        "{:<32}{:>8.2}ms{:>8.2}ms",
        format!("pgrep -x {comm}"),
        procs.pgrep.median,
        procs.pgrep.p90
    );
    println!(
        "{:<32}{:>8.2}ms{:>8.2}ms{:>8.2}x   {:<20}{}",
        "reeve scan (process, glibc)",
        procs.reeve.median,
        procs.reeve.p90,
        proc_ratio,
        format!("< {GOAL_PROCESS_VS_PGREP}x pgrep"),
        verdict_below(proc_ratio, GOAL_PROCESS_VS_PGREP, "x")
    );
    match procs.musl {
        Some(m) => {
            let r = m.median / procs.pgrep.median;
            println!(
                "{:<32}{:>8.2}ms{:>8.2}ms{:>8.2}x   {:<20}{}",
                "reeve scan (process, musl)",
                m.median,
                m.p90,
                r,
                format!("< {GOAL_PROCESS_VS_PGREP}x pgrep"),
                verdict_below(r, GOAL_PROCESS_VS_PGREP, "x")
            );
        }
        None => println!(
            "{:<32}not built ({})",
            "reeve scan (process, musl)",
            musl_path.display()
        ),
    }
    match latency.summary {
        Some(s) => println!(
            "{:<32}p50 {:.0}us  p99 {:.0}us  max {:.0}us   goal p99 <= {GOAL_P99_US:.0}us   {}",
            "netlink exec->discovered",
            s.median,
            s.p99,
            s.max,
            verdict(s.p99, GOAL_P99_US, "us")
        ),
        None => println!("{:<32}{}", "netlink exec->discovered", latency.info),
    }
    let rss_verdict = |r: &Rss| verdict(r.rss_kib as f64, GOAL_RSS_KIB as f64, " KiB");
    let musl_rss = rss_musl
        .as_ref()
        .map_or("n/a (not built)".to_string(), |r| {
            format!("{} KiB (musl, {})", r.rss_kib, rss_verdict(r))
        });
    println!(
        "{:<32}{} KiB (glibc, {})  {musl_rss}   goal <= {GOAL_RSS_KIB} KiB",
        format!("reeve watch RSS ({tracked} tracked)"),
        rss_glibc.rss_kib,
        rss_verdict(&rss_glibc),
    );
    println!();
    println!(
        "details: {} interleaved rounds per in-process variant; {} interleaved runs per process",
        scan_rounds(),
        process_runs()
    );
    println!(
        "details: reeve cold scan with an exe rule instead (one readlink of /proc/<pid>/exe per process, which the baselines do not do): median {:.0}us p90 {:.0}us ({:.2}x naive)",
        inproc.cold_exe.median,
        inproc.cold_exe.p90,
        inproc.cold_exe.median / inproc.naive.median
    );
    println!(
        "details: naive p99 {:.0}us, cold p99 {:.0}us, steady p99 {:.0}us",
        inproc.naive.p99, inproc.cold.p99, inproc.steady.p99
    );
    if let (Some(d), Some(h)) = (latency.delivery, latency.handling) {
        println!(
            "details: netlink exec->read p50 {:.0}us p99 {:.0}us max {:.0}us; read->discovered p50 {:.0}us p99 {:.0}us max {:.0}us",
            d.median, d.p99, d.max, h.median, h.p99, h.max
        );
    }
    println!(
        "details: netlink {} of {} execs measured, {} timed out, {} without an exec event; {}",
        latency.measured,
        execs(),
        latency.timeouts,
        latency.no_exec_event,
        latency.info
    );
    println!(
        "details: reeve watch (glibc) mode {}, VmRSS {} KiB (anon {}, file {}), VmHWM {} KiB",
        rss_glibc.mode,
        rss_glibc.rss_kib,
        rss_glibc.anon_kib,
        rss_glibc.file_kib,
        rss_glibc.hwm_kib
    );
    if let Some(r) = &rss_musl {
        println!(
            "details: reeve watch (musl) mode {}, VmRSS {} KiB (anon {}, file {}), VmHWM {} KiB",
            r.mode, r.rss_kib, r.anon_kib, r.file_kib, r.hwm_kib
        );
    }
    for n in &inproc.notes {
        println!("{n}");
    }
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
    goals::run(&goals::Inputs {
        reeve: &reeve,
        musl,
        bg: &bg_path,
        target: &target,
        comm,
        scan_config: &scan_config,
        tmp: &tmp.0,
    })?;
    drop(herd);
    drop(tmp);
    Ok(())
}
