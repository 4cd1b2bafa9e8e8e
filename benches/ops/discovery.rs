//! The ops bench's exec-to-discovered measures: reeve's stderr read
//! through a pipe by a thread of the bench, the kernel's exec timestamps
//! from the bench's own proc connector, reeve's
//! `reeve_discovery_latency_seconds` read from `/metrics` around a window,
//! and the loop thread's schedstat; and the lines that print them.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::process::Command;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use reeve::discovery::netlink::{self, ProcConnector, ProcEvent};
use reeve::sys;

use super::{
    count_events, get, metric_sum, percentile, spawn_sleeper, verdict, Kids, Res,
    GOAL_DISCOVERED_US,
};

/// reeve's histogram of exec to discovered.
const LATENCY: &str = "reeve_discovery_latency_seconds";

/// reeve's stderr as a pipe, read by a thread of the bench that appends
/// every line to `log` and sends, for each `discovered` line, the pid and
/// CLOCK_MONOTONIC when the bench read it. The thread blocks in read(2),
/// so it wakes only when reeve writes. The pipe holds 1 MiB, so a burst
/// of discoveries (thousands of lines at start) fits while the thread
/// catches up, and reeve's non-blocking stderr drops nothing.
pub fn stderr_pipe(log: &Path) -> Res<(OwnedFd, Receiver<(u32, u64)>)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds, which become owned here and nowhere else.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("pipe2: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: both fds were just created by pipe2 and are owned once.
    let (read, write) = unsafe { (File::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: fcntl on a pipe fd we own.
    if unsafe { libc::fcntl(fds[1], libc::F_SETPIPE_SZ, 1 << 20) } < 0 {
        return Err(format!(
            "F_SETPIPE_SZ 1 MiB: {}",
            std::io::Error::last_os_error()
        ));
    }
    let mut out = File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let (tx, rx) = mpsc::channel();
    thread::Builder::new()
        .name("reeve-stderr".into())
        .spawn(move || {
            let mut read = read;
            let mut buf = vec![0u8; 1 << 16];
            let mut line = Vec::new();
            loop {
                let n = match read.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let at = sys::monotonic_ns();
                if out.write_all(&buf[..n]).is_err() {
                    return;
                }
                for &b in &buf[..n] {
                    if b != b'\n' {
                        line.push(b);
                        continue;
                    }
                    let text = String::from_utf8_lossy(&line);
                    if text.contains("\"event\":\"discovered\"") {
                        if let Some(pid) = json_u32(&text, "pid") {
                            // The receiver is gone only when the bench ends.
                            let _ = tx.send((pid, at));
                        }
                    }
                    line.clear();
                }
            }
        })
        .map_err(|e| format!("the stderr reader thread: {e}"))?;
    Ok((write, rx))
}

/// The unsigned value of `"key":` in a JSON log line.
fn json_u32(line: &str, key: &str) -> Option<u32> {
    let at = line.find(&format!("\"{key}\":"))? + key.len() + 3;
    let digits: String = line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// The kernel's exec timestamps (CLOCK_MONOTONIC), from the bench's own
/// proc connector socket.
pub struct Execs {
    pub conn: ProcConnector,
    pub at: HashMap<u32, u64>,
    pub overruns: u64,
}

impl Execs {
    fn drain(&mut self) {
        loop {
            match self.conn.recv() {
                Ok(Some(buf)) => {
                    for ev in netlink::events(buf).flatten() {
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

/// The end-to-end figures of one window, in us.
pub struct EndToEnd {
    us: Vec<u64>,
    /// Probes whose exec event the bench's socket did not get.
    no_event: usize,
}

/// Starts `execs` targets evenly over `window`; each is timed from the
/// kernel's timestamp of its exec (the bench's own connector) to the
/// moment the bench read its `discovered` line from reeve's stderr. The
/// targets join `probes`.
pub fn time_discovery(
    exe: &Path,
    execs: usize,
    window: Duration,
    probes: &mut Kids,
    found: &Receiver<(u32, u64)>,
    kernel: &mut Execs,
) -> Res<EndToEnd> {
    // Lines of earlier discoveries are not this window's.
    while found.try_recv().is_ok() {}
    kernel.drain();
    kernel.at.clear();
    let mut e2e = EndToEnd {
        us: Vec::new(),
        no_event: 0,
    };
    let per_exec = window / execs as u32;
    for _ in 0..execs {
        let t = Instant::now();
        let child = spawn_sleeper(exe)?;
        let pid = child.id();
        probes.0.push(child);
        let seen_ns = loop {
            match found.recv_timeout(Duration::from_secs(30)) {
                Ok((p, at)) if p == pid => break at,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!("probe {pid} was not discovered within 30 s"))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err("reeve's stderr closed (did it exit?)".into())
                }
            }
        };
        match kernel.take(pid) {
            Some(exec_ns) => e2e.us.push(seen_ns.saturating_sub(exec_ns) / 1000),
            None => e2e.no_event += 1,
        }
        if let Some(rest) = per_exec.checked_sub(t.elapsed()) {
            thread::sleep(rest);
        }
    }
    e2e.us.sort_unstable();
    Ok(e2e)
}

/// A histogram as `/metrics` shows it: cumulative counts per finite upper
/// bound (seconds), and the count of all.
#[derive(Clone, Default)]
struct Buckets {
    bounds: Vec<(f64, f64)>,
    count: f64,
}

impl Buckets {
    fn parse(body: &[u8], family: &str) -> Buckets {
        let mut h = Buckets::default();
        let prefix = format!("{family}_bucket{{le=\"");
        for line in String::from_utf8_lossy(body).lines() {
            let Some(rest) = line.strip_prefix(&prefix) else {
                continue;
            };
            let Some((le, value)) = rest.split_once("\"} ") else {
                continue;
            };
            let Ok(n) = value.parse::<f64>() else {
                continue;
            };
            match le {
                "+Inf" => h.count = n,
                le => {
                    if let Ok(b) = le.parse::<f64>() {
                        h.bounds.push((b, n));
                    }
                }
            }
        }
        h
    }

    /// The observations between `earlier` and `self`.
    fn since(&self, earlier: &Buckets) -> Buckets {
        let before = |b: f64| {
            earlier
                .bounds
                .iter()
                .find(|(e, _)| *e == b)
                .map_or(0.0, |(_, n)| *n)
        };
        Buckets {
            bounds: self
                .bounds
                .iter()
                .map(|&(b, n)| (b, n - before(b)))
                .collect(),
            count: self.count - earlier.count,
        }
    }

    fn within(&self, bound: f64) -> f64 {
        self.bounds
            .iter()
            .find(|(b, _)| *b == bound)
            .map_or(0.0, |(_, n)| *n)
    }

    /// The upper bound of the bucket holding the `q` quantile, in us, as
    /// text ("over" the last bound when it is in +Inf).
    fn quantile_us(&self, q: f64) -> String {
        let want = (self.count * q).ceil().max(1.0);
        match self.bounds.iter().find(|(_, n)| *n >= want) {
            Some((b, _)) => format!("{}us", (b * 1e6).round() as u64),
            None => format!(
                ">{}us",
                self.bounds
                    .last()
                    .map_or(0, |(b, _)| (b * 1e6).round() as u64)
            ),
        }
    }
}

/// `/metrics` once the published snapshot holds every discovery reeve has
/// logged. The loop publishes at most every 500 ms and only on a wakeup it
/// has anyway, so the bench gives it one: an exec of /bin/true, an event
/// reeve wakes for and ignores.
pub fn settled(addr: SocketAddr, log: &Path) -> Res<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        thread::sleep(Duration::from_millis(600));
        Command::new("/bin/true")
            .status()
            .map_err(|e| format!("/bin/true: {e}"))?;
        thread::sleep(Duration::from_millis(50));
        let body = get(addr, "/metrics")?;
        let published = metric_sum(&body, "reeve_discovered_total");
        let logged = count_events(log, "discovered");
        if published as usize == logged {
            return Ok(body);
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "/metrics showed {published} discovered, the log {logged}, after 15 s"
            ));
        }
    }
}

/// The loop thread's time on a CPU and waiting for one (ns), and the
/// times it ran, from its schedstat.
pub fn loop_schedstat(pid: u32) -> Res<[u64; 3]> {
    let path = format!("/proc/{pid}/task/{pid}/schedstat");
    let text = fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    let v: Vec<u64> = text
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    match v[..] {
        [run, wait, slices] => Ok([run, wait, slices]),
        _ => Err(format!("{path}: {text:?}")),
    }
}

/// One window's figures from reeve's side: the histogram's part for the
/// window, the safety-net rescans made and skipped in it, and the loop
/// thread's schedstat over it.
pub struct Window {
    hist: Buckets,
    scans: f64,
    skipped: f64,
    sched: [u64; 3],
    /// The loop's work per wakeup (reeve_loop_iteration_seconds).
    wakeups: Buckets,
    /// State snapshots written, and the seconds they took.
    saves: f64,
    save_s: f64,
}

pub fn window_figures(before: &[u8], after: &[u8], sched: ([u64; 3], [u64; 3])) -> Window {
    let d = |f: &str| metric_sum(after, f) - metric_sum(before, f);
    Window {
        hist: Buckets::parse(after, LATENCY).since(&Buckets::parse(before, LATENCY)),
        scans: d("reeve_scans_total"),
        skipped: d("reeve_scans_skipped_total"),
        sched: [0, 1, 2].map(|i| sched.1[i] - sched.0[i]),
        wakeups: Buckets::parse(after, "reeve_loop_iteration_seconds")
            .since(&Buckets::parse(before, "reeve_loop_iteration_seconds")),
        saves: d("reeve_state_saves_total"),
        save_s: d("reeve_state_save_seconds_sum"),
    }
}

/// The goal line of one window: reeve's own measure.
pub fn goal_line(label: &str, w: &Window, execs: usize) -> String {
    let goal_s = GOAL_DISCOVERED_US as f64 / 1e6;
    let share = if w.hist.count > 0.0 {
        w.hist.within(goal_s) / w.hist.count
    } else {
        0.0
    };
    // p99 <= 2 ms holds iff at least 99% are within the 2 ms bucket, and
    // every probe must be in the measure.
    let met = w.hist.count >= execs as f64 && share >= 0.99;
    format!(
        "ops: exec->discovered {label}: p50 {} p99 {} (bucket bounds), {:.1}% within {GOAL_DISCOVERED_US}us, of {} discoveries from {execs} execs   goal p99 <= {GOAL_DISCOVERED_US}us   {}",
        w.hist.quantile_us(0.5),
        w.hist.quantile_us(0.99),
        share * 100.0,
        w.hist.count,
        verdict(met)
    )
}

pub fn details_lines(label: &str, w: &Window, e2e: &EndToEnd) -> [String; 3] {
    [
        format!(
            "details: exec->discovered {label}, end to end (kernel's exec timestamp from the bench's own proc connector -> the bench read the discovered line from reeve's stderr pipe): p50 {}us p99 {}us max {}us ({} execs, {} without an exec event on the bench's socket)",
            percentile(&e2e.us, 0.5),
            percentile(&e2e.us, 0.99),
            e2e.us.last().copied().unwrap_or(0),
            e2e.us.len(),
            e2e.no_event,
        ),
        format!(
            "details: {label}, reeve's loop thread (schedstat): ran {:.1} ms, waited for a CPU {:.1} ms over {} runs ({:.0}us a run); safety-net rescans {} made, {} skipped",
            w.sched[0] as f64 / 1e6,
            w.sched[1] as f64 / 1e6,
            w.sched[2],
            w.sched[1] as f64 / 1e3 / w.sched[2].max(1) as f64,
            w.scans,
            w.skipped,
        ),
        format!(
            "details: {label}, reeve's loop (its /metrics): {} wakeups, {} of them working over 2.5 ms, {} over 10 ms, {} over 50 ms; {} state snapshots written, {:.1} ms in all ({:.1} ms each)",
            w.wakeups.count,
            w.wakeups.count - w.wakeups.within(0.0025),
            w.wakeups.count - w.wakeups.within(0.01),
            w.wakeups.count - w.wakeups.within(0.05),
            w.saves,
            w.save_s * 1e3,
            w.save_s * 1e3 / w.saves.max(1.0),
        ),
    ]
}
