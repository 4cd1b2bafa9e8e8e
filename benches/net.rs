//! Network bench: the per-packet cost of reeve's `net_tx` program.
//!
//! An unlimited loopback TCP transfer from a sender in a group with the
//! program attached at a rate it never reaches (`16G/burst=16G`) against
//! the same transfer from a sender in a group without it. Both groups are
//! children of one uniquely named subtree of this host's cgroup v2 mount,
//! made, limited and removed by the bench. The sender is one worker (this
//! bench re-executed with `REEVE_BENCH_WORKER=netsend`), moved into the
//! group of the next transfer before it opens that transfer's socket (a
//! socket is charged to the group it was opened in), so both kinds run in
//! the same process; the receiver is this process, outside both groups,
//! and measures from the first byte to the end. With two CPUs or more the
//! receiver runs on CPU 0 and the sender on CPU 1, so the scheduler's
//! placement is the same for both kinds. Short transfers alternate (A B,
//! then B A) so the host's drifting load lands on both alike; the goal
//! compares medians. The program's own counters must show it passed
//! the limited transfers and dropped nothing, so a run where the program
//! was not in the path cannot pass for a cheap one.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use reeve::cgroup::{self, Hierarchy, Limits, NetRate};
use reeve::sys;

/// Interleaved pairs of transfers, and each transfer's length.
const PAIRS: usize = 40;
const BLOCK: Duration = Duration::from_millis(300);
const QUICK_PAIRS: usize = 3;
const QUICK_BLOCK: Duration = Duration::from_millis(100);
/// The most throughput the program may cost.
const GOAL_LOSS_PCT: f64 = 3.0;
/// A rate and burst no loopback transfer reaches: the program passes all.
const HIGH: u64 = 16 << 30;

type Res<T> = Result<T, String>;

fn main() {
    if std::env::var_os("REEVE_BENCH_WORKER").is_some_and(|w| w == "netsend") {
        if let Err(e) = worker() {
            eprintln!("net bench worker: {e}");
            std::process::exit(1);
        }
        return;
    }
    if let Err(e) = run() {
        eprintln!("net bench: {e}");
        std::process::exit(1);
    }
}

/// The sender: for each line "PORT MILLIS" on stdin, connects to
/// 127.0.0.1:PORT, writes for MILLIS ms, closes, and answers "BYTES".
fn worker() -> Res<()> {
    pin(1)?;
    let buf = vec![0u8; 1 << 16];
    let mut out = std::io::stdout().lock();
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|e| format!("reading a command: {e}"))?;
        let (port, ms) = line
            .split_once(' ')
            .and_then(|(p, m)| Some((p.parse::<u16>().ok()?, m.parse::<u64>().ok()?)))
            .ok_or_else(|| format!("bad command {line:?}"))?;
        let mut s = TcpStream::connect(("127.0.0.1", port))
            .map_err(|e| format!("connecting to port {port}: {e}"))?;
        let end = Instant::now() + Duration::from_millis(ms);
        let mut bytes = 0u64;
        while Instant::now() < end {
            bytes += s.write(&buf).map_err(|e| format!("writing: {e}"))? as u64;
        }
        drop(s);
        writeln!(out, "{bytes}")
            .and_then(|()| out.flush())
            .map_err(|e| format!("answering: {e}"))?;
    }
    Ok(())
}

/// The bench's subtree and its workers; on drop the workers are killed
/// (they are this process's unreaped children, so their pids name them)
/// and the groups removed, programs detached first.
struct Setup {
    top: PathBuf,
    workers: Vec<Worker>,
}

type Worker = (Child, ChildStdin, BufReader<ChildStdout>);

/// Pins the calling process to `cpu` when the host has more than one.
fn pin(cpu: usize) -> Res<()> {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        return Ok(());
    }
    // SAFETY: an all-zero cpu_set_t is the empty set; CPU_SET writes inside it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is below CPU_SETSIZE (0 or 1).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 is the calling thread; `set` is a valid cpu_set_t of the size passed.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(format!(
            "sched_setaffinity to CPU {cpu}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Moves the worker into `group`; it is this process's unreaped child, so
/// its pid cannot name another process.
fn place(w: &Worker, group: &Path) -> Res<()> {
    let procs = group.join("cgroup.procs");
    fs::write(&procs, w.0.id().to_string())
        .map_err(|e| format!("{}: moving the worker: {e}", procs.display()))
}

impl Drop for Setup {
    fn drop(&mut self) {
        for (child, _, _) in &mut self.workers {
            if let Err(e) = child.kill().and_then(|()| child.wait().map(|_| ())) {
                eprintln!("net bench: stopping worker {}: {e}", child.id());
            }
        }
        for name in ["limited", "plain"] {
            let g = self.top.join(name);
            if let Err(e) = cgroup::net::remove(&g) {
                eprintln!("net bench: {e}");
            }
            if let Err(e) = fs::remove_dir(&g) {
                eprintln!("net bench: removing {}: {e}", g.display());
            }
        }
        if let Err(e) = fs::remove_dir(&self.top) {
            eprintln!("net bench: removing {}: {e}", self.top.display());
        }
    }
}

fn mkdir(p: &Path) -> Res<()> {
    fs::create_dir(p).map_err(|e| format!("{}: {e}", p.display()))
}

/// The sender, started outside both groups.
fn spawn_worker() -> Res<Worker> {
    let exe = std::env::current_exe().map_err(|e| format!("finding this bench's binary: {e}"))?;
    let mut child = Command::new(exe)
        .env("REEVE_BENCH_WORKER", "netsend")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting a worker: {e}"))?;
    match (child.stdin.take(), child.stdout.take()) {
        (Some(i), Some(o)) => Ok((child, i, BufReader::new(o))),
        _ => {
            if let Err(e) = child.kill().and_then(|()| child.wait().map(|_| ())) {
                eprintln!("net bench: stopping worker {}: {e}", child.id());
            }
            Err("worker without pipes".to_string())
        }
    }
}

/// One transfer from the worker `w`, in `group`: bytes per second at the
/// receiver.
fn transfer(listener: &TcpListener, w: &mut Worker, group: &Path, block: Duration) -> Res<f64> {
    place(w, group)?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    writeln!(w.1, "{port} {}", block.as_millis())
        .and_then(|()| w.1.flush())
        .map_err(|e| format!("commanding the worker: {e}"))?;
    let (mut s, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
    let mut buf = vec![0u8; 1 << 16];
    let mut bytes = 0u64;
    let mut first = None;
    loop {
        let n = s.read(&mut buf).map_err(|e| format!("receiving: {e}"))?;
        if n == 0 {
            break;
        }
        first.get_or_insert_with(Instant::now);
        bytes += n as u64;
    }
    let secs = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
    let mut answer = String::new();
    w.2.read_line(&mut answer)
        .map_err(|e| format!("reading the worker's answer: {e}"))?;
    let sent: u64 = answer
        .trim()
        .parse()
        .map_err(|_| format!("worker answered {answer:?}"))?;
    if sent != bytes || secs <= 0.0 {
        return Err(format!(
            "worker sent {sent} bytes, receiver got {bytes} in {secs} s"
        ));
    }
    Ok(bytes as f64 / secs)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn gbs(b: f64) -> String {
    format!("{:.3} GB/s", b / 1e9)
}

fn run() -> Res<()> {
    let started = Instant::now();
    let quick = std::env::var_os("REEVE_BENCH_QUICK").is_some();
    let (pairs, block) = if quick {
        (QUICK_PAIRS, QUICK_BLOCK)
    } else {
        (PAIRS, BLOCK)
    };
    if sys::geteuid() != 0 {
        return Err("needs root (cgroup moves and bpf(2))".to_string());
    }
    let h = Hierarchy::detect(None).map_err(|e| e.to_string())?;
    let top = h.mount.join(format!(
        "reeve-bench-net-{}-{}",
        sys::getpid(),
        sys::monotonic_ns()
    ));
    mkdir(&top)?;
    let mut setup = Setup {
        top: top.clone(),
        workers: Vec::new(),
    };
    let (plain, limited) = (top.join("plain"), top.join("limited"));
    mkdir(&plain)?;
    mkdir(&limited)?;
    let high = Limits {
        net_tx: Some(NetRate {
            bytes_per_sec: HIGH,
            burst: HIGH,
        }),
        ..Limits::default()
    };
    let applied = cgroup::apply_exactly(&limited, &high);
    if !cgroup::in_force(&applied) {
        let why: Vec<String> = applied
            .iter()
            .filter_map(|a| a.result.as_ref().err().map(|e| e.to_string()))
            .collect();
        return Err(format!("net_tx not in force: {}", why.join("; ")));
    }
    pin(0)?;
    setup.workers.push(spawn_worker()?);
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| format!("binding a receiver: {e}"))?;

    // One unmeasured transfer each: connections, pages and caches warm.
    let groups = [&plain, &limited];
    let w = &mut setup.workers[0];
    for g in groups {
        transfer(&listener, w, g, block)?;
    }
    let [before, _] = cgroup::net::buckets(&limited).map_err(|e| e.to_string())?;
    let before = before.ok_or("the limited group shows no net_tx program")?;
    let (mut without, mut with, mut paired) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..pairs {
        let order = if i % 2 == 0 { [0, 1] } else { [1, 0] };
        let mut r = [0.0; 2];
        for k in order {
            r[k] = transfer(&listener, w, groups[k], block)?;
        }
        without.push(r[0]);
        with.push(r[1]);
        paired.push(r[1] / r[0]);
    }
    let [after, _] = cgroup::net::buckets(&limited).map_err(|e| e.to_string())?;
    let after = after.ok_or("the limited group lost its net_tx program")?;
    let passed = after.passed - before.passed;
    let dropped = after.dropped - before.dropped;
    let sent_with: f64 = with.iter().sum::<f64>() * block.as_secs_f64();
    if passed == 0 || (passed as f64) < sent_with * 0.5 || dropped != 0 {
        return Err(format!(
            "the program was not in the path as it should be: it passed {passed} bytes \
             (about {sent_with:.0} sent) and dropped {dropped}"
        ));
    }

    let (m0, m1) = (median(&without), median(&with));
    let ratio = m1 / m0;
    let loss = (1.0 - ratio) * 100.0;
    let verdict = if loss <= GOAL_LOSS_PCT {
        "MET"
    } else {
        "MISSED"
    };
    println!(
        "reeve net_tx program cost (loopback TCP, {pairs} interleaved pairs of {} ms transfers; \
         host cgroup v2 subtree, kernel {})",
        block.as_millis(),
        fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    );
    let (min0, max0) = range(&without);
    let (min1, max1) = range(&with);
    println!(
        "without program    median {}  range {} .. {}",
        gbs(m0),
        gbs(min0),
        gbs(max0)
    );
    println!(
        "with program       median {}  range {} .. {}",
        gbs(m1),
        gbs(min1),
        gbs(max1)
    );
    println!(
        "net program: throughput with the program {ratio:.3}x of without (loss {loss:.1}%)   \
         goal loss <= {GOAL_LOSS_PCT}%   {verdict}"
    );
    println!(
        "details: median of the per-pair ratios {:.3}x; the program passed {passed} bytes and \
         dropped {dropped} during the measured transfers (16G/burst=16G)",
        median(&paired)
    );
    let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("details: load average at the end {}", load.trim());
    println!(
        "details: total bench time {:.1}s",
        started.elapsed().as_secs_f64()
    );
    drop(setup);
    Ok(())
}

fn range(v: &[f64]) -> (f64, f64) {
    v.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), &x| {
        (lo.min(x), hi.max(x))
    })
}
