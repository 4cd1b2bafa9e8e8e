//! The crowd: idle CPU and wakeups of each daemon with 10,000 processes on
//! the host. Sleepers of the bench's (a copy of /bin/sleep under a name
//! unique to the run, which neither daemon's rules match) bring the host
//! to the target count, then each daemon runs alone for a window long
//! enough to hold reeve's default rescan interval. reeve runs with its
//! default discovery settings and its metrics endpoint on a free loopback
//! port, read before and after its window: what its safety net did
//! (steady scans, rescans skipped, deep scans) and what its start scan,
//! which is deep, cost at this size.
//!
//! Invariant: every sleeper is registered for undoing as soon as it is
//! spawned, dies with the bench (PR_SET_PDEATHSIG), and is killed by pid
//! and reaped before this phase returns.

use std::fs;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::{idle, kernel_forks, stop_sleepers, undo, Daemon, Execs, Idle, Kind, Res, Setup};

/// How long a sleeper sleeps if every other way of ending it failed.
const SLEEPER_SECS: &str = "3600";

/// A deep scan runs every this many rescan intervals (`DEEP_EVERY` in
/// src/daemon/mod.rs, not exported by the crate).
pub(crate) const DEEP_EVERY: u64 = 10;

/// One daemon's part of the crowd phase.
#[derive(Default)]
pub(crate) struct CrowdRun {
    pub(crate) idle: Idle,
    /// Host processes when the daemon was started, and at its window's
    /// start and end.
    pub(crate) procs_at_start: usize,
    pub(crate) procs: (usize, usize),
    /// The daemon's CPU from its exec until it was ready (cgrulesengd:
    /// its first probe placed; reeve: its start scan published), ns.
    pub(crate) start_cpu_ns: u64,
}

/// reeve's scan counters as its metrics endpoint published them.
#[derive(Clone, Copy, Default)]
pub(crate) struct Scans {
    pub(crate) deep: u64,
    pub(crate) steady: u64,
    pub(crate) skipped: u64,
    /// reeve_scan_duration_seconds: sum (s) and count.
    pub(crate) seconds: f64,
    pub(crate) count: u64,
}

pub(crate) struct Crowd {
    pub(crate) target: usize,
    pub(crate) sleepers: usize,
    pub(crate) sleeper_name: String,
    pub(crate) port: u16,
    pub(crate) cgre: CrowdRun,
    pub(crate) reeve: CrowdRun,
    /// reeve's counters just before and just after its window.
    pub(crate) before: Scans,
    pub(crate) after: Scans,
    /// The kernel's forks, threads included, from when reeve published
    /// its start scan to the end of its window: while none happen, reeve
    /// skips its steady rescans.
    pub(crate) forks_since_ready: Option<u64>,
}

pub(crate) fn run(s: &Setup, execs: &mut Execs, target: usize, window: Duration) -> Res<Crowd> {
    let sleepers = fill(s, execs, target)?;
    eprintln!(
        "govern bench: crowd: {sleepers} sleepers started, host at {} processes",
        count_procs()
    );
    let result = measure(s, execs, target, window, sleepers);
    let pids = take_sleepers();
    stop_sleepers(&pids, || {
        execs.drain();
        execs.at.clear();
    });
    result
}

fn measure(
    s: &Setup,
    execs: &mut Execs,
    target: usize,
    window: Duration,
    sleepers: usize,
) -> Res<Crowd> {
    let mut cgre = CrowdRun {
        procs_at_start: count_procs(),
        ..CrowdRun::default()
    };
    let d = Daemon::start(Kind::Cgre, "crowd", s, execs)?;
    cgre.start_cpu_ns = d.cpu_ns();
    cgre.procs.0 = count_procs();
    cgre.idle = idle(&d, execs, window);
    cgre.procs.1 = count_procs();
    d.stop();

    let port = free_port()?;
    s.write_reeve_config("crowd", Some(port))?;
    let mut reeve = CrowdRun {
        procs_at_start: count_procs(),
        ..CrowdRun::default()
    };
    let mut d = Daemon::spawn(Kind::Reeve, "crowd", s)?;
    // Ready once its start scan is published. Readiness is not a probe:
    // a probe's fork would move the kernel's fork counter and so keep the
    // first rescan from being skipped.
    let before = wait_first_scan(&mut d, port)?;
    let forks0 = kernel_forks();
    reeve.start_cpu_ns = d.cpu_ns();
    reeve.procs.0 = count_procs();
    reeve.idle = idle(&d, execs, window);
    reeve.procs.1 = count_procs();
    let forks_since_ready = kernel_forks().zip(forks0).map(|(b, a)| b.saturating_sub(a));
    let after = scans(port);
    d.stop();
    Ok(Crowd {
        target,
        sleepers,
        sleeper_name: s.sleeper_name.clone(),
        port,
        cgre,
        reeve,
        before,
        after: after?,
        forks_since_ready,
    })
}

/// Host processes: the numeric entries of /proc (one per thread group).
pub(crate) fn count_procs() -> usize {
    fs::read_dir("/proc").map_or(0, |d| {
        d.flatten()
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            })
            .count()
    })
}

/// Starts sleepers until the host holds `target` processes (counted again
/// after each batch, since the host's own come and go); returns how many.
fn fill(s: &Setup, execs: &mut Execs, target: usize) -> Res<usize> {
    let mut started = 0;
    for _ in 0..4 {
        let have = count_procs();
        if have >= target {
            break;
        }
        for i in 0..target - have {
            let child = sleeper(&s.sleeper)
                .spawn()
                .map_err(|e| format!("{}: {e} (after {started} sleepers)", s.sleeper.display()))?;
            let pid = child.id();
            undo(|u| u.sleepers.push(pid));
            started += 1;
            if i % 32 == 31 {
                execs.drain();
                execs.at.clear();
            }
        }
    }
    Ok(started)
}

/// A sleeper the kernel kills if the bench dies first.
fn sleeper(path: &Path) -> Command {
    let mut cmd = Command::new(path);
    cmd.arg(SLEEPER_SECS)
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
            // The bench died before the prctl: nothing would kill this one.
            if libc::getppid() as u32 != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    cmd
}

fn take_sleepers() -> Vec<u32> {
    let mut pids = Vec::new();
    undo(|u| pids = std::mem::take(&mut u.sleepers));
    pids
}

/// A loopback port free now (the kernel's pick, released for reeve).
fn free_port() -> Res<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| format!("127.0.0.1:0: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("127.0.0.1:0: {e}"))
}

/// Polls reeve's endpoint until it publishes a completed deep scan.
fn wait_first_scan(d: &mut Daemon, port: u16) -> Res<Scans> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let last = match scans(port) {
            Ok(sc) if sc.deep >= 1 => return Ok(sc),
            Ok(_) => "no deep scan yet".to_string(),
            Err(e) => e,
        };
        d.alive()?;
        if Instant::now() > deadline {
            return Err(format!("reeve published no scan within 60 s: {last}"));
        }
        thread::sleep(Duration::from_millis(100));
    }
}

fn scans(port: u16) -> Res<Scans> {
    let text = scrape(port)?;
    let get = |key: &str| {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(key)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .ok_or_else(|| format!("127.0.0.1:{port}/metrics: no {key}"))
    };
    Ok(Scans {
        deep: get("reeve_scans_total{kind=\"deep\"}")? as u64,
        steady: get("reeve_scans_total{kind=\"steady\"}")? as u64,
        skipped: get("reeve_scans_skipped_total")? as u64,
        seconds: get("reeve_scan_duration_seconds_sum")?,
        count: get("reeve_scan_duration_seconds_count")? as u64,
    })
}

/// GET /metrics, bounded: 2 s to connect, 2 s per read or write.
fn scrape(port: u16) -> Res<String> {
    let at = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let err = |e: io::Error| format!("127.0.0.1:{port}/metrics: {e}");
    let mut c = TcpStream::connect_timeout(&at, Duration::from_secs(2)).map_err(err)?;
    c.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(err)?;
    c.set_write_timeout(Some(Duration::from_secs(2)))
        .map_err(err)?;
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .map_err(err)?;
    let mut text = String::new();
    c.take(4 << 20).read_to_string(&mut text).map_err(err)?;
    if !text.starts_with("HTTP/1.1 200") {
        let status = text.lines().next().unwrap_or("");
        return Err(format!("127.0.0.1:{port}/metrics: answered {status:?}"));
    }
    Ok(text)
}
