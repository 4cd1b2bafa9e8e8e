//! Heartbeat benchmark: how many beats the listener verifies per second of
//! its own CPU, and how long after a sender's threshold `reeve watch`
//! reports the stall.
//!
//! 1. **Throughput.** 1,000 sender processes (this bench re-executed in
//!    sender mode, so every beat carries a distinct kernel-attested pid)
//!    each send their beats as fast as the socket takes them. The bench's
//!    main thread is the listener: poll(2), then `liveness::intake` on each
//!    datagram, the daemon's own path (credentials, frame, spoof check,
//!    global rate, identity from /proc/<pid>/stat, pid namespace, table,
//!    nonce, per-sender rate). Every beat must be accepted: a rejection
//!    fails the bench. Reported: beats verified, wall time, the listener
//!    thread's CPU time per beat and what that is in beats a second on one
//!    core (goal: 100,000).
//! 2. **Stall latency.** A real `reeve watch` with a rule that matches
//!    copies of reeve running `reeve beat --every 10ms` (a unique name,
//!    children of this bench only), `beat_timeout` 200ms. Each sender is
//!    stopped (SIGSTOP, by the pid this bench spawned) at a staggered time;
//!    the daemon's `stalled` event carries `silent_ms`, measured on its
//!    clock from the last accepted beat, so `silent_ms - 200` is the time
//!    from the threshold to the event. Reported: p50 and p99 (goal p99 within
//!    one sampling period, the 100 ms scan interval).
//!
//! `REEVE_BENCH_QUICK=1` sends a tenth of the beats and stops 20 senders
//! instead of 100.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reeve::liveness::beats::{Admission, Beats, Origin, Rates};
use reeve::liveness::frame::{encode, Frame, Status, PAYLOAD_LEN};
use reeve::liveness::{identify_with, intake, Listener, ProcDir, Senders};
use reeve::procfs::{ProcKey, ProcReader};
use reeve::sys;

const SENDERS: usize = 1_000;
const GOAL_BEATS_PER_SEC: f64 = 100_000.0;
const BEAT_TIMEOUT_MS: u64 = 200;
const SAMPLING_MS: u64 = 100;
const SENDER_ENV: &str = "REEVE_BEAT_BENCH_SENDER";

type Res<T> = Result<T, String>;

fn main() {
    if let Ok(spec) = std::env::var(SENDER_ENV) {
        std::process::exit(sender(&spec));
    }
    if let Err(e) = run() {
        eprintln!("beat bench: {e}");
        std::process::exit(1);
    }
}

/// Sender mode: `SOCKET,COUNT`. Sends COUNT beats on a connected, blocking
/// socket (a full listener queue puts the sender to sleep until there is
/// room, rather than spinning), then waits to be killed; exits 1 on a
/// failure.
fn sender(spec: &str) -> i32 {
    let Some((path, count)) = spec.rsplit_once(',') else {
        return 2;
    };
    let Ok(count) = count.parse::<u64>() else {
        return 2;
    };
    let sock = match std::os::unix::net::UnixDatagram::unbound()
        .and_then(|s| s.connect(path).map(|()| s))
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("beat bench sender: {path}: {e}");
            return 1;
        }
    };
    let mut r = [0u8; 8];
    if sys::getrandom(&mut r).is_err() {
        return 1;
    }
    let first = u64::from_le_bytes(r) >> 2;
    let pid = std::process::id();
    for nonce in first + 1..=first + count {
        let f = Frame {
            status: Status::Ok,
            pid,
            nonce,
            timestamp_ns: 0,
            payload: [0; PAYLOAD_LEN],
        };
        if let Err(e) = sock.send(&encode(&f)) {
            eprintln!("beat bench sender: {path}: {e}");
            return 1;
        }
    }
    // Alive until the bench has read every beat: the listener reads the
    // sender's identity from /proc, and a sender that ended is refused.
    std::thread::sleep(Duration::from_secs(600));
    0
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Res<TempDir> {
        let mut r = [0u8; 8];
        sys::getrandom(&mut r).map_err(|e| e.to_string())?;
        let p =
            std::env::temp_dir().join(format!("reeve-bench-{tag}-{:016x}", u64::from_le_bytes(r)));
        std::fs::create_dir(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Children killed (by their pid) and reaped on drop.
struct Kids(Vec<Child>);

impl Drop for Kids {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
        }
        for c in &mut self.0 {
            let _ = c.wait();
        }
    }
}

struct Open(ProcReader, ProcDir);

impl Senders for Open {
    fn proc_inode(&mut self, pid: u32) -> Option<u64> {
        self.1.inode(pid)
    }
    fn identify(&mut self, pid: u32) -> Option<(ProcKey, u64)> {
        identify_with(&mut self.0, pid)
    }
    fn admit(&mut self, _: Origin) -> Option<Admission> {
        Some(Admission {
            rule: None,
            timeout_ns: 0,
            by_uid: true,
        })
    }
}

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "MET"
    } else {
        "MISSED"
    }
}

fn run() -> Res<()> {
    let quick = std::env::var_os("REEVE_BENCH_QUICK").is_some();
    throughput(if quick { 100 } else { 1_000 })?;
    stall_latency(if quick { 20 } else { 100 })?;
    // Figures from a loaded machine are upper bounds: say how loaded.
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("beat: load average {}", load.trim());
    Ok(())
}

fn throughput(per_sender: u64) -> Res<()> {
    let dir = TempDir::new("beat")?;
    let path = dir.0.join("hb.sock");
    let listener = Listener::open(&path, 0o600, None).map_err(|e| e.to_string())?;
    let total = SENDERS as u64 * per_sender;
    let rates = Rates {
        per_pid: 1_000_000,
        global: 10_000_000,
    };
    let mut beats = Beats::new(SENDERS * 2, rates, sys::monotonic_ns());
    let mut senders = Open(
        ProcReader::open().map_err(|e| e.to_string())?,
        ProcDir::open().map_err(|e| e.to_string())?,
    );
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let spec = format!("{},{per_sender}", path.display());
    let mut kids = Kids(Vec::with_capacity(SENDERS));
    let mut buf = [0u8; 64];
    let mut control = [0u8; sys::CMSG_SPACE];
    let mut accepted = 0u64;
    let mut cpu = 0u64;
    let began = Instant::now();
    let deadline = began + Duration::from_secs(300);
    let mut spawned = 0;
    while accepted < total {
        // Spawn in small batches between drains, so the socket never
        // overflows while the bench is busy starting processes.
        if spawned < SENDERS {
            for _ in 0..20.min(SENDERS - spawned) {
                let child = Command::new(&exe)
                    .env(SENDER_ENV, &spec)
                    .stdin(Stdio::null())
                    .spawn()
                    .map_err(|e| format!("spawn a sender: {e}"))?;
                kids.0.push(child);
                spawned += 1;
            }
        }
        let mut fds = [sys::poll_fd(listener.fd())];
        sys::poll(&mut fds, 100).map_err(|e| e.to_string())?;
        let t0 = thread_cpu_ns();
        while let Some(d) = listener
            .recv(&mut buf, &mut control)
            .map_err(|e| e.to_string())?
        {
            match intake(&mut beats, &d, &mut senders, sys::monotonic_ns()) {
                Ok(_) => accepted += 1,
                Err(r) => {
                    return Err(format!(
                        "a beat from pid {} was refused ({}); every beat here is valid",
                        r.pid,
                        r.reason.as_str()
                    ))
                }
            }
        }
        cpu += thread_cpu_ns() - t0;
        if Instant::now() > deadline {
            return Err(format!("only {accepted} of {total} beats after 300 s"));
        }
    }
    let wall = began.elapsed();
    for c in &mut kids.0 {
        if let Some(st) = c.try_wait().map_err(|e| e.to_string())? {
            return Err(format!("a sender ended before it was told to: {st}"));
        }
    }
    drop(kids);
    let per_beat_ns = cpu as f64 / accepted as f64;
    let per_core = 1e9 / per_beat_ns;
    println!(
        "beat: {accepted} beats from {SENDERS} sender processes verified in {:.2} s wall ({:.0} beats/s, bounded by the senders on this host)",
        wall.as_secs_f64(),
        accepted as f64 / wall.as_secs_f64()
    );
    println!(
        "beat: listener CPU {:.2} us per verified beat = {per_core:.0} beats/s on one core, goal >= {GOAL_BEATS_PER_SEC:.0} beats/s: {}",
        per_beat_ns / 1000.0,
        verdict(per_core >= GOAL_BEATS_PER_SEC)
    );
    println!(
        "beat: senders in the table {} (capacity {})",
        beats.len(),
        beats.capacity()
    );
    Ok(())
}

/// Lines of the daemon's JSON log.
fn log_events(path: &Path) -> Vec<serde_json::Value> {
    let mut text = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_string(&mut text);
    }
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn wait_for(what: &str, log: &Path, mut cond: impl FnMut(&[serde_json::Value]) -> bool) -> Res<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if cond(&log_events(log)) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "timed out waiting for {what} (log {})",
                log.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn count(events: &[serde_json::Value], name: &str, pids: &[u32]) -> usize {
    events
        .iter()
        .filter(|v| v["event"] == name)
        .filter(|v| {
            v["pid"]
                .as_u64()
                .is_some_and(|p| pids.contains(&(p as u32)))
        })
        .count()
}

fn stall_latency(n: usize) -> Res<()> {
    let dir = TempDir::new("beat-stall")?;
    let mut r = [0u8; 8];
    sys::getrandom(&mut r).map_err(|e| e.to_string())?;
    let name = format!("ffmpeg-reeve-bench-{:016x}", u64::from_le_bytes(r));
    let beater = dir.0.join(&name);
    std::fs::copy(env!("CARGO_BIN_EXE_reeve"), &beater).map_err(|e| e.to_string())?;
    let socket = dir.0.join("hb.sock");
    let state = dir.0.join("state");
    std::fs::create_dir(&state).map_err(|e| e.to_string())?;
    std::fs::set_permissions(&state, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .map_err(|e| e.to_string())?;
    let config = serde_json::json!({
        "targets": [{
            "name": "beating",
            "match": {"exe": [name]},
            "filter": {"parent_pids": [std::process::id()]},
            "beat_timeout": format!("{BEAT_TIMEOUT_MS}ms"),
        }],
        "discovery": {"mode": "auto", "scan_interval": format!("{SAMPLING_MS}ms"),
                      "rescan_interval": format!("{SAMPLING_MS}ms")},
        "state_dir": state,
        "audit": {"fsync": "never"},
        "heartbeat": {"socket": socket, "mode": "0600", "rate_per_pid": 1000},
    });
    let config_path = dir.0.join("config.json");
    std::fs::write(&config_path, config.to_string()).map_err(|e| e.to_string())?;
    let log = dir.0.join("reeve.log");
    let err = std::fs::File::create(&log).map_err(|e| e.to_string())?;
    let mut daemon = Kids(vec![Command::new(env!("CARGO_BIN_EXE_reeve"))
        .args(["watch", "--log-format", "json", "--config"])
        .arg(&config_path)
        .stdin(Stdio::null())
        .stderr(Stdio::from(err))
        .spawn()
        .map_err(|e| e.to_string())?]);
    wait_for("heartbeat_listening", &log, |ev| {
        ev.iter().any(|v| v["event"] == "heartbeat_listening")
    })?;
    let mut kids = Kids(Vec::with_capacity(n));
    for _ in 0..n {
        kids.0.push(
            Command::new(&beater)
                .args(["beat", "--every", "10ms", "--socket"])
                .arg(&socket)
                .stdin(Stdio::null())
                // A full socket queue (EAGAIN) is retried at the next beat;
                // its notes on stderr are not the bench's output.
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| e.to_string())?,
        );
    }
    let pids: Vec<u32> = kids.0.iter().map(|c| c.id()).collect();
    wait_for("every sender discovered", &log, |ev| {
        count(ev, "discovered", &pids) == n
    })?;
    // Each sender beats through at least one timeout before it is stopped.
    std::thread::sleep(Duration::from_millis(2 * BEAT_TIMEOUT_MS));
    for (i, &pid) in pids.iter().enumerate() {
        // Staggered so the stalls do not share one wakeup.
        std::thread::sleep(Duration::from_millis(7 + (i as u64 * 13) % 23));
        // SAFETY: kill(2) on a child this bench spawned and has not reaped.
        unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
    }
    wait_for("every sender stalled", &log, |ev| {
        count(ev, "stalled", &pids) == n
    })?;
    let mut late: Vec<u64> = log_events(&log)
        .iter()
        .filter(|v| v["event"] == "stalled")
        .filter_map(|v| v["silent_ms"].as_u64())
        .map(|s| s.saturating_sub(BEAT_TIMEOUT_MS))
        .collect();
    late.sort_unstable();
    let at = |q: f64| late[((late.len() as f64 - 1.0) * q).round() as usize];
    let (p50, p99) = (at(0.5), at(0.99));
    println!(
        "beat: stall detection latency (threshold to event, {n} senders, beat_timeout {BEAT_TIMEOUT_MS}ms, ms resolution): p50 {p50} ms, p99 {p99} ms, max {} ms, goal p99 <= {SAMPLING_MS} ms: {}",
        late[late.len() - 1],
        verdict(p99 <= SAMPLING_MS)
    );
    drop(kids);
    // SAFETY: kill(2) on the daemon this bench spawned and has not reaped.
    unsafe { libc::kill(daemon.0[0].id() as i32, libc::SIGTERM) };
    let st = daemon.0[0].wait().map_err(|e| e.to_string())?;
    daemon.0.clear();
    if !st.success() {
        return Err(format!("reeve watch exited {st}; log {}", log.display()));
    }
    Ok(())
}
