//! The scan bench's goal phases, measured in one run on one host: idle cost
//! of `reeve watch` with 10,000 processes on the host (and the same daemon
//! rescanning every second, as netlink mode did before `rescan_interval`),
//! reeve's CPU per 1,000 exec events, steady-scan cost at 10,000 and 40,000
//! pids, `reeve watch` RSS at 40,000 pids, and `reeve scan` against
//! `pgrep -x` at 10,000 processes.
//!
//! cgrulesengd's figures are the ones issue 9 measured on a 2-core VM
//! (20 ms/min idle with 10,000 processes, 90 ms per 1,000 execs); the
//! govern bench runs cgrulesengd itself. To hold 40,000 pids the bench
//! raises kernel.pid_max and restores it on drop and on SIGINT, SIGTERM and
//! SIGHUP (the handler only calls open, write, close and _exit).

use super::*;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

const CGRULES_IDLE_MS_PER_MIN: f64 = 20.0;
const CGRULES_MS_PER_1000_EXECS: f64 = 90.0;
const GOAL_SCALE_RATIO: f64 = 4.5;
const GOAL_PGREP_RATIO: f64 = 0.25;
const PID_MAX_PATH: &str = "/proc/sys/kernel/pid_max";

/// Sizes of one run; `REEVE_BENCH_QUICK=1` is a smoke-sized plan that
/// still prints every goal line.
pub(crate) struct Plan {
    pub small: usize,
    pub large: usize,
    pub idle_window: Duration,
    pub rescan: &'static str,
    pub before_window: Duration,
    pub execs: usize,
    pub steady_rounds: usize,
}

pub(crate) fn quick() -> bool {
    std::env::var("REEVE_BENCH_QUICK").as_deref() == Ok("1")
}

pub(crate) fn plan() -> Plan {
    if quick() {
        Plan {
            small: 2_000,
            large: 8_000,
            idle_window: Duration::from_secs(6),
            rescan: "5s",
            before_window: Duration::from_secs(3),
            execs: 1_000,
            steady_rounds: 10,
        }
    } else {
        Plan {
            small: 10_000,
            large: 40_000,
            // One whole rescan interval and a little: the rescan's cost is in.
            idle_window: Duration::from_secs(62),
            rescan: "60s",
            before_window: Duration::from_secs(10),
            execs: 5_000,
            steady_rounds: 30,
        }
    }
}

// ------------------------------------------------------------ pid_max ---

#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicU8 = AtomicU8::new(0);
// An array of a const item, not an inline const: rust 1.77 (the declared
// minimum) has no inline consts.
static SAVED: [AtomicU8; 16] = [ZERO; 16];
static SAVED_LEN: AtomicUsize = AtomicUsize::new(0);

extern "C" fn restore_and_exit(_sig: libc::c_int) {
    let mut buf = [0u8; 16];
    let n = SAVED_LEN.load(Ordering::SeqCst).min(16);
    for (b, s) in buf.iter_mut().zip(&SAVED).take(n) {
        *b = s.load(Ordering::SeqCst);
    }
    // SAFETY: open, write, close and _exit are async-signal-safe; the path
    // is a NUL-terminated literal and `buf` holds `n` readable bytes.
    unsafe {
        let fd = libc::open(c"/proc/sys/kernel/pid_max".as_ptr(), libc::O_WRONLY);
        if fd >= 0 {
            libc::write(fd, buf.as_ptr().cast(), n);
            libc::close(fd);
        }
        libc::_exit(130);
    }
}

/// kernel.pid_max raised for the bench, restored on drop.
pub(crate) struct PidMax {
    saved: String,
}

impl PidMax {
    pub fn at_least(want: usize) -> Res<PidMax> {
        let saved = fs::read_to_string(PID_MAX_PATH)
            .map_err(|e| format!("{PID_MAX_PATH}: {e}"))?
            .trim()
            .to_string();
        let now: usize = saved
            .parse()
            .map_err(|_| format!("{PID_MAX_PATH}: '{saved}'"))?;
        let guard = PidMax { saved };
        if now < want {
            for (slot, b) in SAVED.iter().zip(guard.saved.bytes()) {
                slot.store(b, Ordering::SeqCst);
            }
            SAVED_LEN.store(guard.saved.len().min(16), Ordering::SeqCst);
            for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
                // SAFETY: the handler only makes async-signal-safe calls.
                unsafe { libc::signal(sig, restore_and_exit as *const () as libc::sighandler_t) };
            }
            fs::write(PID_MAX_PATH, want.to_string())
                .map_err(|e| format!("raise {PID_MAX_PATH} to {want}: {e}"))?;
        }
        Ok(guard)
    }
}

impl Drop for PidMax {
    fn drop(&mut self) {
        if let Err(e) = fs::write(PID_MAX_PATH, &self.saved) {
            eprintln!(
                "scan bench: could not restore {PID_MAX_PATH} to {}: {e}; restore it by hand",
                self.saved
            );
        }
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            // SAFETY: restores the default disposition.
            unsafe { libc::signal(sig, libc::SIG_DFL) };
        }
    }
}

// ------------------------------------------------------- measurements ---

/// CPU time of `pid` in ns (schedstat's first field: user and system).
fn cpu_ns(pid: u32) -> Res<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .map_err(|e| format!("/proc/{pid}/schedstat: {e}"))?;
    s.split_whitespace()
        .next()
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| format!("/proc/{pid}/schedstat: '{s}'"))
}

fn status_field(pid: u32, field: &str) -> Res<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    status_kib(&s, field).ok_or_else(|| format!("/proc/{pid}/status: no {field}"))
}

/// Times the process went to sleep and was woken (each poll wakeup is one).
fn wakeups(pid: u32) -> Res<u64> {
    Ok(status_field(pid, "voluntary_ctxt_switches:")?
        + status_field(pid, "nonvoluntary_ctxt_switches:")?)
}

/// Bytes the process handed to write(2) and friends: logs, state, audit.
fn written(pid: u32) -> Res<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/io"))
        .map_err(|e| format!("/proc/{pid}/io: {e}"))?;
    s.lines()
        .find_map(|l| l.strip_prefix("wchar:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("/proc/{pid}/io: no wchar"))
}

#[derive(Clone, Copy)]
struct Sample {
    at: Instant,
    cpu_ns: u64,
    wakeups: u64,
    written: u64,
}

fn sample(pid: u32) -> Res<Sample> {
    Ok(Sample {
        at: Instant::now(),
        cpu_ns: cpu_ns(pid)?,
        wakeups: wakeups(pid)?,
        written: written(pid)?,
    })
}

struct Idle {
    cpu_ms_per_min: f64,
    wakeups_per_s: f64,
    written: u64,
    secs: f64,
    /// Datagrams the host sent every proc-connector listener (after the
    /// same filter reeve attaches) during the window: on a shared host
    /// "idle" is not quiet, and each one can wake reeve.
    host_events_per_s: f64,
}

/// Watches `pid` for `window` while counting what the proc connector
/// delivers to a listener of its own.
fn idle_window(pid: u32, window: Duration) -> Res<Idle> {
    let mut conn =
        ProcConnector::open(Duration::from_secs(1)).map_err(|e| format!("bench listener: {e}"))?;
    let a = sample(pid)?;
    let end = a.at + window;
    let mut events = 0u64;
    loop {
        loop {
            match conn.recv() {
                Ok(Some(_)) => events += 1,
                Ok(None) => break,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => continue,
                Err(e) => return Err(format!("bench listener: {e}")),
            }
        }
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let mut fds = [sys::poll_fd(conn.fd())];
        sys::poll(&mut fds, ms(left.min(Duration::from_millis(200))))
            .map_err(|e| format!("poll: {e}"))?;
    }
    let b = sample(pid)?;
    let secs = b.at.duration_since(a.at).as_secs_f64();
    Ok(Idle {
        cpu_ms_per_min: (b.cpu_ns - a.cpu_ns) as f64 / 1e6 / secs * 60.0,
        wakeups_per_s: (b.wakeups - a.wakeups) as f64 / secs,
        written: b.written - a.written,
        secs,
        host_events_per_s: events as f64 / secs,
    })
}

/// Spawns background sleeps until /proc lists `total` pids.
fn fill_to(herd: &mut Herd, bg: &Path, total: usize) -> Res<usize> {
    let have = count_procs();
    for _ in have..total {
        herd.spawn(&mut command(bg, &["3600"]))?;
    }
    Ok(count_procs())
}

/// A running `reeve watch` whose log is JSON in a file.
struct Watch {
    kid: Kid,
    pid: u32,
    log: PathBuf,
}

impl Watch {
    fn start(bin: &Path, config: &Path, log: PathBuf) -> Res<Watch> {
        let cfg = config.to_str().ok_or("config path is not UTF-8")?;
        let file = File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let kid = Kid(
            command(bin, &["watch", "--config", cfg, "--log-format", "json"])
                .stderr(file)
                .spawn()
                .map_err(|e| format!("cannot start {}: {e}", bin.display()))?,
        );
        let pid = kid.0.id();
        let w = Watch { kid, pid, log };
        w.wait_for("started", 1)?;
        // The first deep scan of the host, at info level unlogged when it
        // finds nothing, is over well within this.
        std::thread::sleep(Duration::from_millis(1500));
        Ok(w)
    }

    fn count(&self, event: &str) -> usize {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["event"] == event)
            .count()
    }

    fn wait_for(&self, event: &str, n: usize) -> Res<()> {
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.count(event) < n {
            if Instant::now() >= deadline {
                return Err(format!(
                    "reeve watch logged no {event} within 120 s:\n{}",
                    fs::read_to_string(&self.log).unwrap_or_default()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    fn stop(mut self) -> Res<()> {
        // SAFETY: kill(2) on our own child, not yet reaped.
        if unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGTERM) } != 0 {
            return Err(format!(
                "SIGTERM to {}: {}",
                self.pid,
                io::Error::last_os_error()
            ));
        }
        let st = wait_deadline(&mut self.kid.0, Duration::from_secs(10))?;
        if !st.success() {
            return Err(format!("reeve watch ended with {st}"));
        }
        Ok(())
    }
}

/// Steady scans in a worker (a sibling of the processes it scans).
pub(crate) fn worker_steady() -> Res<()> {
    let target = worker_target()?;
    let rounds: usize = std::env::var("REEVE_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let mut d = open(&rules(&target))?;
    let mut sink = Count::default();
    d.scan(ScanKind::Deep, &mut sink)
        .map_err(|e| format!("deep scan: {e}"))?;
    let mut ns = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        d.scan(ScanKind::Steady, &mut sink)
            .map_err(|e| format!("steady scan: {e}"))?;
        ns.push(t.elapsed().as_nanos() as u64);
    }
    emit(&json!({
        "steady_ns": ns,
        "seen_capacity": d.seen_capacity(),
        "seen_overflow": d.stats().seen_overflow,
        "listed": count_procs(),
    }))
}

struct Steady {
    median_us: f64,
    /// The least disturbed round: a scan's work is deterministic, so on a
    /// loaded host the minimum is the closest to its cost.
    min_us: f64,
    seen_capacity: u64,
    seen_overflow: u64,
    listed: u64,
}

fn steady(target: &str, rounds: usize) -> Res<Steady> {
    std::env::set_var("REEVE_BENCH_ROUNDS", rounds.to_string());
    let mut w = Worker::spawn("steady", target)?;
    let v = w.recv(Duration::from_secs(600))?;
    w.finish()?;
    let ns = samples(&v, "steady_ns")?;
    Ok(Steady {
        median_us: summarize(&ns, 1e3).median,
        min_us: ns.iter().min().copied().unwrap_or(0) as f64 / 1e3,
        seen_capacity: v["seen_capacity"].as_u64().unwrap_or(0),
        seen_overflow: v["seen_overflow"].as_u64().unwrap_or(0),
        listed: v["listed"].as_u64().unwrap_or(0),
    })
}

fn met(ok: bool) -> &'static str {
    if ok {
        "MET"
    } else {
        "NOT MET"
    }
}

pub(crate) struct Inputs<'a> {
    pub reeve: &'a Path,
    pub musl: Option<&'a Path>,
    pub bg: &'a Path,
    pub target: &'a str,
    pub comm: &'a str,
    pub scan_config: &'a Path,
    pub tmp: &'a Path,
}

pub(crate) fn run(inp: &Inputs) -> Res<()> {
    let plan = plan();
    let _pid_max = PidMax::at_least(plan.large + plan.large / 2)?;
    let mut herd = Herd::default();
    let watch_config = |name: &str, rescan: &str| -> Res<PathBuf> {
        let path = inp.tmp.join(format!("goal-{name}.json"));
        write_json(
            &path,
            &json!({
                "targets": [{"name": "bench", "match": {"comm": [inp.target]}}],
                "discovery": {"mode": "netlink", "scan_interval": "1s", "rescan_interval": rescan},
                "state_dir": inp.tmp.join(format!("state-goal-{name}")),
            }),
        )?;
        Ok(path)
    };
    let bin = inp.musl.unwrap_or(inp.reeve);

    eprintln!("scan bench: goals: filling the host to {} pids", plan.small);
    let small_pids = fill_to(&mut herd, inp.bg, plan.small)?;

    eprintln!(
        "scan bench: goals: idle reeve watch, {:.0} s window",
        plan.idle_window.as_secs_f64()
    );
    let w = Watch::start(
        bin,
        &watch_config("idle", plan.rescan)?,
        inp.tmp.join("goal-idle.log"),
    )?;
    // Past start-up: the first scan's discoveries are saved (the snapshot
    // is written at most once a second after a change), so the window
    // sees the daemon at rest, not its start.
    std::thread::sleep(Duration::from_millis(2500));
    let idle = idle_window(w.pid, plan.idle_window)?;

    eprintln!("scan bench: goals: {} execs of /bin/true", plan.execs);
    let before = cpu_ns(w.pid)?;
    let t = Instant::now();
    for _ in 0..plan.execs {
        let st = Command::new("/bin/true")
            .status()
            .map_err(|e| format!("/bin/true: {e}"))?;
        if !st.success() {
            return Err(format!("/bin/true ended with {st}"));
        }
    }
    let storm_secs = t.elapsed().as_secs_f64();
    // Let the daemon drain what is queued.
    std::thread::sleep(Duration::from_millis(500));
    let storm_ms = (cpu_ns(w.pid)? - before) as f64 / 1e6 / plan.execs as f64 * 1000.0;
    let overruns = w.count("netlink_overrun");
    w.stop()?;

    eprintln!("scan bench: goals: the same daemon rescanning every second");
    let w = Watch::start(
        bin,
        &watch_config("every-second", "1s")?,
        inp.tmp.join("goal-every-second.log"),
    )?;
    std::thread::sleep(Duration::from_millis(2500));
    let every_second = idle_window(w.pid, plan.before_window)?;
    w.stop()?;

    eprintln!("scan bench: goals: reeve scan vs pgrep at {small_pids} pids");
    let procs = bench_processes(inp.reeve, inp.musl, inp.scan_config, inp.comm, inp.tmp)?;
    eprintln!("scan bench: goals: steady scans at {small_pids} pids");
    let at_small = steady(inp.target, plan.steady_rounds)?;

    eprintln!("scan bench: goals: filling the host to {} pids", plan.large);
    let large_pids = fill_to(&mut herd, inp.bg, plan.large)?;
    eprintln!("scan bench: goals: steady scans at {large_pids} pids");
    let at_large = steady(inp.target, plan.steady_rounds)?;
    eprintln!("scan bench: goals: reeve watch RSS at {large_pids} pids");
    let w = Watch::start(
        bin,
        &watch_config("rss", plan.rescan)?,
        inp.tmp.join("goal-rss.log"),
    )?;
    std::thread::sleep(Duration::from_secs(1));
    let rss_kib = status_field(w.pid, "VmRSS:")?;
    let seen_full = w.count("seen_set_full");
    w.stop()?;
    drop(herd);

    let build = if inp.musl.is_some() { "musl" } else { "glibc" };
    let half = CGRULES_MS_PER_1000_EXECS / 2.0;
    let scale_ratio = at_large.min_us / at_small.min_us;
    let pids_ratio = at_large.listed as f64 / at_small.listed.max(1) as f64;
    let pgrep_ratio = procs.reeve.median / procs.pgrep.median;
    println!();
    println!(
        "reeve discovery goals ({build} daemon; {small_pids} and {large_pids} pids on the host{})",
        if quick() { "; QUICK smoke plan" } else { "" }
    );
    println!(
        "idle: CPU {:.1} ms/min (cgrulesengd 20 ms/min; every-second rescan {:.1} ms/min, {:.2}x of it)   goal <= {CGRULES_IDLE_MS_PER_MIN} ms/min   {}",
        idle.cpu_ms_per_min,
        every_second.cpu_ms_per_min,
        idle.cpu_ms_per_min / every_second.cpu_ms_per_min,
        met(idle.cpu_ms_per_min <= CGRULES_IDLE_MS_PER_MIN)
    );
    println!(
        "idle: wakeups {:.2}/s (every-second rescan {:.2}/s)   goal <= 1/s   {}",
        idle.wakeups_per_s,
        every_second.wakeups_per_s,
        met(idle.wakeups_per_s <= 1.0)
    );
    println!(
        "idle: bytes written {} in {:.0} s (every-second rescan {})   goal 0   {}",
        idle.written,
        idle.secs,
        every_second.written,
        met(idle.written == 0)
    );
    println!(
        "storm: CPU {storm_ms:.1} ms per 1,000 execs ({} execs in {storm_secs:.1} s; cgrulesengd 90 ms, {:.2}x of it)   goal <= {half:.0} ms   {}",
        plan.execs,
        storm_ms / CGRULES_MS_PER_1000_EXECS,
        met(storm_ms <= half)
    );
    println!(
        "scale: steady scan best of {} {:.0} us at {} pids, {:.0} us at {} pids: {scale_ratio:.2}x for {pids_ratio:.2}x the pids (medians {:.0} us, {:.0} us)   goal <= {GOAL_SCALE_RATIO}x   {}",
        plan.steady_rounds,
        at_small.min_us,
        at_small.listed,
        at_large.min_us,
        at_large.listed,
        at_small.median_us,
        at_large.median_us,
        met(scale_ratio <= GOAL_SCALE_RATIO && at_large.seen_overflow == 0)
    );
    println!(
        "scale: reeve watch RSS {rss_kib} KiB at {large_pids} pids, default capacity ({build})   goal <= 4096 KiB   {}",
        met(rss_kib <= 4096)
    );
    println!(
        "keep: reeve scan {:.2} ms vs pgrep -x {:.2} ms at {small_pids} pids: {pgrep_ratio:.2}x   goal <= {GOAL_PGREP_RATIO}x   {}",
        procs.reeve.median,
        procs.pgrep.median,
        met(pgrep_ratio <= GOAL_PGREP_RATIO)
    );
    println!(
        "details: the host sent {:.1} proc events/s (after the filter) during the idle window, {:.1}/s during the every-second one; idle window {:.0} s; storm overruns {overruns}; seen-set {} entries (overflow {} at {} pids, {} at {} pids; seen_set_full events in the RSS run {seen_full})",
        idle.host_events_per_s,
        every_second.host_events_per_s,
        idle.secs,
        at_large.seen_capacity,
        at_small.seen_overflow,
        at_small.listed,
        at_large.seen_overflow,
        at_large.listed
    );
    Ok(())
}
