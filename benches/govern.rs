//! Governance benchmark: `reeve watch` with a pool against libcgroup's
//! cgrulesengd, the closest peer (it listens on the same netlink proc
//! connector and writes the new process into a cgroup).
//!
//! Both daemons run alternately against one probe (benches/probe.c, built
//! static with `cc`, copied to a unique name per run): the probe reads
//! /proc/self/cgroup until it sees its group and prints the CLOCK_MONOTONIC
//! time of that read. The latency is that time minus the kernel's
//! timestamp of the probe's exec event (also CLOCK_MONOTONIC), which the
//! bench reads from its own proc-connector socket: the span from the event
//! both daemons act on to the moment the process sees itself placed,
//! measured in the probe. Cold runs leave 30 ms between probes; warm runs
//! keep a helper moving a dummy process between two private groups every
//! millisecond, so the kernel's move path stays warm and the daemon's own
//! share shows. The burst starts 300 probes at once (polling every 1 ms)
//! and reports the last one placed after the first exec. The pool-age
//! curve runs probes one after another through one pool and reports the
//! latency and the daemon's CPU (from /proc/<pid>/schedstat) at the 1st
//! members, around the 2,500th and at the end.
//!
//! Host changes, for this comparison only, all undone when the bench ends
//! however it ends (a drop guard, and a SIGINT/SIGTERM thread): one group
//! under the v1 cpu hierarchy (cgrulesengd 2.0 classifies into v1 here),
//! /etc/cgrules.conf (an existing one is restored), /etc/cgconfig.conf and
//! /etc/cgconfig.d (created empty only when missing; cgrulesengd will not
//! start without them), two subtrees of /sys/fs/cgroup/unified. Both
//! daemons' rules match only the probe's unique name. Only pids the bench
//! started are signalled, by pid. cgroup-tools is installed with apt-get
//! when missing. Never run in CI (it touches /etc and the v1 hierarchy).
//!
//! Each warm probe also gives the daemon's own lag beyond the floor: the
//! probe's placed time minus its first read (0 when the daemon placed it
//! before the probe could look).
//!
//! In each round each daemon also sits idle for a window (its CPU and
//! wakeups, all its threads, beside the process events the host sent
//! meanwhile, which every connector listener is woken for unless it
//! filters them) and then takes an exec storm of /bin/true run by the
//! bench (its CPU per 1,000 execs).
//!
//! Last, the crowd (benches/govern/crowd.rs): sleepers of the bench's
//! bring the host to 10,000 processes and each daemon sits idle alone for
//! a window that holds reeve's default rescan interval, reeve with its
//! default discovery settings; what reeve's safety net did then and the
//! cost of its deep scan are read from its metrics endpoint.
//!
//! Settings (environment): GOVERN_SAMPLES (probes per daemon, cold and
//! warm each; default 300), GOVERN_AGE (members through reeve's pool for
//! the age curve; default 20000, up to 100000), GOVERN_IDLE_SECS (the idle
//! window; default 30), GOVERN_STORM (execs in the storm; default 2000),
//! GOVERN_CROWD (the host's processes in the crowd phase; default 10000),
//! GOVERN_CROWD_SECS (its idle window per daemon; default 65).

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use reeve::discovery::netlink::{self, ProcConnector, ProcEvent};

#[path = "govern/crowd.rs"]
mod crowd;
#[path = "govern/host.rs"]
mod host;
#[path = "govern/report.rs"]
mod report;
#[path = "govern/warm.rs"]
mod warm;
use host::*;
use warm::Warm;

type Res<T> = Result<T, String>;

const V1_CPU: &str = "/sys/fs/cgroup/cpu";
const UNIFIED: &str = "/sys/fs/cgroup/unified";
const RULES: &str = "/etc/cgrules.conf";
const CGCONFIG: &str = "/etc/cgconfig.conf";
const CGCONFIG_D: &str = "/etc/cgconfig.d";
const CGRED_SOCKET: &str = "/var/run/cgred.socket";
const BURST: usize = 300;
const COLD_GAP: Duration = Duration::from_millis(30);
const WARM_GAP: Duration = Duration::from_millis(2);
const PROBE_TIMEOUT_MS: &str = "5000";
/// reeve's pools, one config and state directory each: the default audit
/// policy, the age curve, the audit log never fsynced, and the crowd's
/// idle window (its config gains a metrics endpoint when it starts).
const REEVE_POOLS: [&str; 4] = ["bench", "age", "never", "crowd"];

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` (and test harness probing)
    }
    block_stop_signals();
    thread::spawn(|| {
        let sig = wait_stop_signal();
        eprintln!("govern bench: signal {sig}: undoing host changes");
        undo_all();
        std::process::exit(130);
    });
    let result = run();
    undo_all();
    if let Err(e) = result {
        eprintln!("govern bench: {e}");
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------------------
// daemons

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Cgre,
    Reeve,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Cgre => "cgrulesengd",
            Kind::Reeve => "reeve",
        }
    }
}

struct Daemon {
    child: Child,
    kind: Kind,
    pool: &'static str,
}

impl Daemon {
    /// Starts the daemon and returns once it placed a probe.
    fn start(kind: Kind, pool: &'static str, s: &Setup, execs: &mut Execs) -> Res<Daemon> {
        let mut d = Daemon::spawn(kind, pool, s)?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if probe(s, &d, execs, 0).is_ok() {
                return Ok(d);
            }
            d.alive()?;
            if Instant::now() > deadline {
                return Err(format!("{} placed no probe within 20 s", kind.name()));
            }
        }
    }

    fn spawn(kind: Kind, pool: &'static str, s: &Setup) -> Res<Daemon> {
        let mut cmd = match kind {
            Kind::Cgre => {
                undo(|u| u.cgred_socket = true);
                let mut c = Command::new("cgrulesengd");
                c.args(["-n", "-Q"]);
                c
            }
            Kind::Reeve => {
                let mut c = Command::new(env!("CARGO_BIN_EXE_reeve"));
                c.arg("watch").arg("--config").arg(s.reeve_config(pool));
                c
            }
        };
        let log = fs::File::create(s.tmp.join(format!("{}.log", kind.name())))
            .map_err(|e| format!("daemon log: {e}"))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| format!("starting {}: {e}", kind.name()))?;
        undo(|u| u.pids.push(child.id()));
        Ok(Daemon { child, kind, pool })
    }

    /// An error once the daemon has exited (its log is in the bench's
    /// temporary directory).
    fn alive(&mut self) -> Res<()> {
        match self.child.try_wait() {
            Ok(Some(st)) => {
                forget_pid(self.child.id());
                Err(format!("{} exited: {st}", self.kind.name()))
            }
            Ok(None) => Ok(()),
            Err(e) => Err(format!("{}: wait: {e}", self.kind.name())),
        }
    }

    /// Voluntary plus involuntary context switches of all the daemon's
    /// threads: how often it was woken.
    fn wakeups(&self) -> u64 {
        per_thread(self.child.id(), |task| {
            fs::read_to_string(task.join("status"))
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum()
        })
    }

    /// CPU time of all the daemon's threads, in ns (schedstat's first
    /// field: time on a CPU).
    fn cpu_ns(&self) -> u64 {
        per_thread(self.child.id(), |task| {
            fs::read_to_string(task.join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        })
    }

    fn stop(mut self) {
        let pid = self.child.id();
        stop_pid(pid);
        let _ = self.child.try_wait(); // reaped by stop_pid
        forget_pid(pid);
        if self.kind == Kind::Cgre && Path::new(CGRED_SOCKET).exists() {
            // Its socket, left when it was stopped; none existed before.
            let _ = fs::remove_file(CGRED_SOCKET);
        }
    }
}

/// A figure summed over every thread of `pid` (/proc/<pid>/task/*).
fn per_thread(pid: u32, read: impl Fn(&Path) -> u64) -> u64 {
    fs::read_dir(format!("/proc/{pid}/task"))
        .map_or(0, |rd| rd.flatten().map(|t| read(&t.path())).sum())
}

/// The kernel's exec timestamps, from the bench's own connector socket.
struct Execs {
    conn: ProcConnector,
    at: HashMap<u32, u64>,
    overruns: u64,
    /// Process events read, of every kind the connector filter keeps.
    events: u64,
}

impl Execs {
    fn drain(&mut self) {
        loop {
            match self.conn.recv() {
                Ok(Some(buf)) => {
                    for ev in netlink::events(buf).flatten() {
                        self.events += 1;
                        if let ProcEvent::Exec { pid, tgid } = ev.kind {
                            if pid == tgid {
                                self.at.insert(pid, ev.timestamp_ns);
                            }
                        }
                    }
                }
                Ok(None) => return,
                Err(_) => self.overruns += 1,
            }
        }
    }

    fn take(&mut self, pid: u32) -> Option<u64> {
        self.drain();
        self.at.remove(&pid)
    }
}

fn needle(s: &Setup, d: &Daemon) -> String {
    match d.kind {
        Kind::Cgre => format!("cpu:/{}\n", s.v1_group),
        Kind::Reeve => format!(
            "0::/{}/pool.{}\n",
            s.v2_root
                .file_name()
                .map_or(String::new(), |n| n.to_string_lossy().into()),
            d.pool
        ),
    }
}

fn spawn_probe(s: &Setup, d: &Daemon, poll_us: u32) -> Res<Child> {
    Command::new(&s.probe)
        .arg(needle(s, d))
        .arg(poll_us.to_string())
        .arg(PROBE_TIMEOUT_MS)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("probe: {e}"))
}

/// The probe's exec event, placed time and first read, in ns of
/// CLOCK_MONOTONIC.
fn finish_probe(child: Child, execs: &mut Execs) -> Res<(u64, u64, u64)> {
    let pid = child.id();
    let out = child
        .wait_with_output()
        .map_err(|e| format!("probe: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut times = text.split_whitespace().map(str::parse::<u64>);
    let (Some(Ok(placed)), Some(Ok(first))) = (times.next(), times.next()) else {
        return Err(format!("probe {pid} was not placed ({})", text.trim()));
    };
    let exec = execs
        .take(pid)
        .ok_or_else(|| format!("no exec event for probe {pid}"))?;
    Ok((exec, placed, first))
}

/// exec→placed and exec→first read of one probe.
fn probe(s: &Setup, d: &Daemon, execs: &mut Execs, poll_us: u32) -> Res<(u64, u64)> {
    let child = spawn_probe(s, d, poll_us)?;
    let (exec, placed, first) = finish_probe(child, execs)?;
    execs.at.clear();
    Ok((placed.saturating_sub(exec), first.saturating_sub(exec)))
}

// ---------------------------------------------------------------------------
// measurement

#[derive(Default)]
struct Figures {
    cold: Vec<u64>,
    warm: Vec<u64>,
    /// exec→the probe's first read, warm: what no daemon can beat here.
    floor: Vec<u64>,
    /// The probe's placed time − its first read, warm: the daemon's own
    /// lag beyond the floor (0 when placed before the probe could look).
    lag: Vec<u64>,
    burst_last: Vec<u64>,
    misses: usize,
    /// (window label, latencies, daemon CPU ns per placement)
    age: Vec<(String, Vec<u64>, u64)>,
    /// Per round: the idle window.
    idle: Vec<Idle>,
    /// Per round: CPU ns per 1,000 execs of the storm.
    storm: Vec<u64>,
}

fn series(
    s: &Setup,
    d: &Daemon,
    execs: &mut Execs,
    n: usize,
    gap: Duration,
    f: &mut Figures,
    warm: bool,
) {
    for _ in 0..n {
        match probe(s, d, execs, 0) {
            Ok((l, first)) if warm => {
                f.warm.push(l);
                f.floor.push(first);
                f.lag.push(l.saturating_sub(first));
            }
            Ok((l, _)) => f.cold.push(l),
            Err(_) => f.misses += 1,
        }
        thread::sleep(gap);
    }
}

fn burst(s: &Setup, d: &Daemon, execs: &mut Execs, f: &mut Figures) -> Res<()> {
    execs.drain();
    execs.at.clear();
    let mut children = Vec::with_capacity(BURST);
    for _ in 0..BURST {
        children.push(spawn_probe(s, d, 1000)?);
    }
    let mut first_exec = u64::MAX;
    let mut last_placed = 0;
    for c in children {
        match finish_probe(c, execs) {
            Ok((e, p, _)) => {
                first_exec = first_exec.min(e);
                last_placed = last_placed.max(p);
            }
            Err(_) => f.misses += 1,
        }
    }
    execs.at.clear();
    f.burst_last.push(last_placed.saturating_sub(first_exec));
    Ok(())
}

/// One idle window of one daemon.
#[derive(Clone, Copy, Default)]
struct Idle {
    /// The daemon's CPU, ns per minute.
    cpu_per_min: u64,
    /// The daemon's wakeups per second (×1000).
    wakeups_milli: u64,
    /// The host's process events per second (×1000) meanwhile, as the
    /// bench's own connector socket received them.
    events_milli: u64,
    /// The kernel's forks meanwhile, threads included (/proc/stat
    /// `processes`), when it could be read.
    forks: Option<u64>,
    secs: f64,
}

/// The kernel's fork counter: /proc/stat `processes`.
fn kernel_forks() -> Option<u64> {
    fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("processes ")?.trim().parse().ok())
}

/// The bench's connector drained for `d`, with nothing else done.
fn wait_draining(execs: &mut Execs, d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        thread::sleep(
            Duration::from_millis(200).min(end.saturating_duration_since(Instant::now())),
        );
        execs.drain();
        execs.at.clear();
    }
}

/// The daemon left alone for `window`, after 2 s for what came before
/// (a burst's exits and their records) to settle.
fn idle(d: &Daemon, execs: &mut Execs, window: Duration) -> Idle {
    wait_draining(execs, Duration::from_secs(2));
    let events0 = execs.events;
    let (w0, c0, f0, t0) = (d.wakeups(), d.cpu_ns(), kernel_forks(), Instant::now());
    wait_draining(execs, window);
    let secs = t0.elapsed().as_secs_f64();
    let (w1, c1, f1) = (d.wakeups(), d.cpu_ns(), kernel_forks());
    Idle {
        cpu_per_min: (c1.saturating_sub(c0) as f64 / secs * 60.0) as u64,
        wakeups_milli: (w1.saturating_sub(w0) as f64 / secs * 1000.0) as u64,
        events_milli: ((execs.events - events0) as f64 / secs * 1000.0) as u64,
        forks: f1.zip(f0).map(|(b, a)| b.saturating_sub(a)),
        secs,
    }
}

/// The daemon left alone for `window`, then `execs` runs of /bin/true.
fn idle_and_storm(
    d: &Daemon,
    execs: &mut Execs,
    window: Duration,
    storm: usize,
    f: &mut Figures,
) -> Res<()> {
    f.idle.push(idle(d, execs, window));
    let c0 = d.cpu_ns();
    for _ in 0..storm {
        let st = Command::new("/bin/true")
            .status()
            .map_err(|e| format!("/bin/true: {e}"))?;
        if !st.success() {
            return Err(format!("/bin/true ended with {st}"));
        }
    }
    // What is queued is handled before the CPU is read.
    thread::sleep(Duration::from_millis(300));
    execs.drain();
    execs.at.clear();
    f.storm
        .push(d.cpu_ns().saturating_sub(c0) * 1000 / storm.max(1) as u64);
    Ok(())
}

/// Members through the pool one after another; windows of latency and
/// daemon CPU at the given member indexes.
fn age(s: &Setup, d: &Daemon, execs: &mut Execs, total: usize, f: &mut Figures) {
    let mut windows = vec![(0usize, 200usize), (2400, 2600)];
    if total > 2800 {
        windows.push((total - 200, total));
    }
    let mut i = 0;
    for (from, to) in windows {
        while i < from {
            if probe(s, d, execs, 0).is_err() {
                f.misses += 1;
            }
            i += 1;
        }
        let cpu0 = d.cpu_ns();
        let mut lat = Vec::new();
        while i < to {
            match probe(s, d, execs, 0) {
                Ok((l, _)) => lat.push(l),
                Err(_) => f.misses += 1,
            }
            i += 1;
        }
        let cpu = d.cpu_ns().saturating_sub(cpu0) / (to - from) as u64;
        f.age
            .push((format!("members {}..{}", from + 1, to), lat, cpu));
    }
}

fn run() -> Res<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("needs root (netlink connector, /etc, cgroups)".into());
    }
    ensure_cgrulesengd()?;
    no_other_cgrulesengd()?;
    let samples = env_usize("GOVERN_SAMPLES", 300);
    let age_total = env_usize("GOVERN_AGE", 20_000).clamp(2_600, 100_000);
    let s = setup()?;
    let conn = ProcConnector::open(Duration::from_secs(2))?;
    let mut execs = Execs {
        conn,
        at: HashMap::new(),
        overruns: 0,
        events: 0,
    };
    let idle_window = Duration::from_secs(env_usize("GOVERN_IDLE_SECS", 30) as u64);
    let storm = env_usize("GOVERN_STORM", 2000);
    let crowd_window = Duration::from_secs(env_usize("GOVERN_CROWD_SECS", 65) as u64);
    // cgrulesengd, reeve, reeve with audit fsync never.
    let mut figs = [Figures::default(), Figures::default(), Figures::default()];
    let started = Instant::now();
    // Two rounds, each daemon alone in turn, so drift lands on both.
    for round in 0..2 {
        let order = if round == 0 {
            [
                (Kind::Cgre, "bench", 0),
                (Kind::Reeve, "bench", 1),
                (Kind::Reeve, "never", 2),
            ]
        } else {
            [
                (Kind::Reeve, "never", 2),
                (Kind::Reeve, "bench", 1),
                (Kind::Cgre, "bench", 0),
            ]
        };
        for (kind, pool, at) in order {
            let f = &mut figs[at];
            let d = Daemon::start(kind, pool, &s, &mut execs)?;
            series(&s, &d, &mut execs, samples / 2, COLD_GAP, f, false);
            let w = Warm::start(&s)?;
            series(&s, &d, &mut execs, samples / 2, WARM_GAP, f, true);
            burst(&s, &d, &mut execs, f)?;
            w.stop();
            idle_and_storm(&d, &mut execs, idle_window, storm, f)?;
            d.stop();
            eprintln!(
                "govern bench: round {round} {} ({pool}) done at {:?}",
                kind.name(),
                started.elapsed()
            );
        }
    }
    // The pool-age curve: a fresh pool for reeve, warm path.
    for kind in [Kind::Cgre, Kind::Reeve] {
        let f = &mut figs[kind as usize];
        let d = Daemon::start(kind, "age", &s, &mut execs)?;
        let w = Warm::start(&s)?;
        let total = if kind == Kind::Reeve {
            age_total
        } else {
            2_600
        };
        age(&s, &d, &mut execs, total, f);
        w.stop();
        d.stop();
        eprintln!(
            "govern bench: age {} done at {:?}",
            kind.name(),
            started.elapsed()
        );
    }
    let bytes: u64 = ["pool.age.json", "pool.age.journal"]
        .iter()
        .map(|f| fs::metadata(s.tmp.join("state-age/jobs").join(f)).map_or(0, |m| m.len()))
        .sum();
    let crowd = crowd::run(
        &s,
        &mut execs,
        env_usize("GOVERN_CROWD", 10_000),
        crowd_window,
    )?;
    eprintln!("govern bench: crowd done at {:?}", started.elapsed());
    report::print(report::Run {
        figs: &mut figs,
        samples,
        age_total,
        bytes,
        overruns: execs.overruns,
        name: &s.probe_name,
        crowd: &crowd,
    });
    Ok(())
}
