//! The govern bench's printed table: one row per measure, cgrulesengd
//! beside reeve with the default audit policy and beside reeve with the
//! audit log never fsynced, each with its ratio to cgrulesengd; then what
//! reeve's safety net did in the crowd, and the run's misses.
//!
//! Invariant: every figure printed was measured in this run; a ratio
//! whose base is 0 prints as "–".

use reeve::config::DEFAULT_RESCAN_INTERVAL;

use super::crowd::{Crowd, Scans, DEEP_EVERY};
use super::{Figures, Idle, BURST, PROBE_TIMEOUT_MS};

/// Everything the report prints.
pub(crate) struct Run<'a> {
    pub(crate) figs: &'a mut [Figures; 3],
    pub(crate) samples: usize,
    pub(crate) age_total: usize,
    /// reeve's age pool record and journal on disk at the end.
    pub(crate) bytes: u64,
    pub(crate) overruns: u64,
    pub(crate) name: &'a str,
    pub(crate) crowd: &'a Crowd,
}

fn pct(v: &mut [u64], p: usize) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[(v.len() * p / 100).min(v.len() - 1)]
}

pub(crate) fn us(ns: u64) -> String {
    if ns >= 10_000_000 {
        format!("{:.0} ms", ns as f64 / 1e6)
    } else if ns >= 1_000_000 {
        format!("{:.2} ms", ns as f64 / 1e6)
    } else {
        format!("{:.1} µs", ns as f64 / 1e3)
    }
}

fn ratio(c: u64, x: u64) -> String {
    if c > 0 {
        format!("{:.2}×", x as f64 / c as f64)
    } else {
        "–".into()
    }
}

/// One table row; `n` is reeve with audit fsync never, when measured.
fn row(what: &str, c: u64, r: u64, n: Option<u64>) {
    let never = n.map_or("– | –".to_string(), |n| {
        format!("{} | {}", us(n), ratio(c, n))
    });
    println!(
        "| {what} | {} | {} | {} | {never} |",
        us(c),
        us(r),
        ratio(c, r)
    );
}

pub(crate) fn print(run: Run<'_>) {
    let Run {
        figs,
        samples,
        age_total,
        bytes,
        overruns,
        name,
        crowd,
    } = run;
    let [c, r, n] = figs;
    println!();
    println!(
        "govern bench: probe {name}, {samples} probes per daemon cold and warm, burst {BURST}"
    );
    println!("latency = probe's first read of /proc/self/cgroup showing its group (measured in the probe) − kernel timestamp of its exec event (read by the bench from the proc connector)");
    println!();
    println!("| measure | cgrulesengd | reeve (default audit: fsync always) | reeve / cgrulesengd | reeve, audit fsync never | never / cgrulesengd |");
    println!("|---|---|---|---|---|---|");
    for (label, p, cold) in [
        ("cold p50", 50, true),
        ("cold p99", 99, true),
        ("warm p50", 50, false),
        ("warm p99", 99, false),
    ] {
        let pick = |f: &mut Figures| {
            if cold {
                pct(&mut f.cold, p)
            } else {
                pct(&mut f.warm, p)
            }
        };
        let (cv, rv, nv) = (pick(c), pick(r), pick(n));
        row(&format!("exec→placed {label}"), cv, rv, Some(nv));
    }
    let (cv, rv, nv) = (
        pct(&mut c.floor, 50),
        pct(&mut r.floor, 50),
        pct(&mut n.floor, 50),
    );
    row(
        "exec→probe's first read, warm p50 (the floor)",
        cv,
        rv,
        Some(nv),
    );
    for p in [50, 99] {
        let (cv, rv, nv) = (pct(&mut c.lag, p), pct(&mut r.lag, p), pct(&mut n.lag, p));
        row(
            &format!("daemon's own lag beyond the floor, warm p{p} (per probe: placed − the probe's first read; 0 when placed before it)"),
            cv,
            rv,
            Some(nv),
        );
    }
    let runs = c
        .burst_last
        .len()
        .min(r.burst_last.len())
        .min(n.burst_last.len());
    for i in 0..runs {
        row(
            &format!(
                "burst of {BURST}: last placed after first exec (run {})",
                i + 1
            ),
            c.burst_last[i],
            r.burst_last[i],
            Some(n.burst_last[i]),
        );
    }
    for i in 0..c.idle.len().min(r.idle.len()).min(n.idle.len()) {
        let (ci, ri, ni) = (c.idle[i], r.idle[i], n.idle[i]);
        let (cc, cw, ev) = (ci.cpu_per_min, ci.wakeups_milli, ci.events_milli);
        let (rc, rw, rev) = (ri.cpu_per_min, ri.wakeups_milli, ri.events_milli);
        let (nc, nw, nev) = (ni.cpu_per_min, ni.wakeups_milli, ni.events_milli);
        let r2 = |a: u64, b: u64| ratio(a, b);
        println!(
            "| idle CPU (run {}; the host's process events/s in each window: {:.1}, {:.1}, {:.1}) | {} | {} | {} | {} | {} |",
            i + 1,
            ev as f64 / 1000.0,
            rev as f64 / 1000.0,
            nev as f64 / 1000.0,
            per_min(cc),
            per_min(rc),
            r2(cc, rc),
            per_min(nc),
            r2(cc, nc)
        );
        println!(
            "| idle wakeups (run {}) | {} | {} | {} | {} | {} |",
            i + 1,
            per_s(cw),
            per_s(rw),
            r2(cw, rw),
            per_s(nw),
            r2(cw, nw)
        );
    }
    for i in 0..c.storm.len().min(r.storm.len()).min(n.storm.len()) {
        row(
            &format!("storm: CPU per 1,000 execs of /bin/true (run {})", i + 1),
            c.storm[i],
            r.storm[i],
            Some(n.storm[i]),
        );
    }
    let k = c.age.len().min(r.age.len());
    for i in 0..k {
        let (label, cl, ccpu) = &mut c.age[i];
        let (_, rl, rcpu) = &mut r.age[i];
        row(
            &format!("pool age, warm p50, {label}"),
            pct(cl, 50),
            pct(rl, 50),
            None,
        );
        row(
            &format!("pool age, daemon CPU per placement, {label}"),
            *ccpu,
            *rcpu,
            None,
        );
    }
    for (label, rl, rcpu) in r.age.iter_mut().skip(k) {
        println!(
            "| pool age, warm p50 / p99 / CPU per placement, {label} (reeve only) | – | {} / {} / {} | | | |",
            us(pct(rl, 50)),
            us(pct(rl, 99)),
            us(*rcpu)
        );
    }
    crowd_rows(crowd);
    println!();
    println!(
        "reeve pool: {age_total} members through it; record + journal on disk at the end: {bytes} bytes"
    );
    println!(
        "probes not placed within {PROBE_TIMEOUT_MS} ms: cgrulesengd {}, reeve {}, reeve (never) {}; bench connector overruns: {overruns}",
        c.misses, r.misses, n.misses
    );
    let placed_first = |f: &Figures| f.lag.iter().filter(|&&l| l == 0).count();
    println!(
        "warm probes placed before their first read (lag 0): cgrulesengd {} of {}, reeve {} of {}, reeve (never) {} of {}",
        placed_first(c),
        c.lag.len(),
        placed_first(r),
        r.lag.len(),
        placed_first(n),
        n.lag.len()
    );
    crowd_notes(crowd);
}

fn per_min(ns: u64) -> String {
    format!("{:.1} ms/min", ns as f64 / 1e6)
}

fn per_s(milli: u64) -> String {
    format!("{:.2}/s", milli as f64 / 1000.0)
}

/// The crowd's rows of the table (reeve with the default audit policy
/// only).
fn crowd_rows(w: &Crowd) {
    let (c, r) = (&w.cgre, &w.reeve);
    let least = c.procs.0.min(c.procs.1).min(r.procs.0).min(r.procs.1);
    let (ci, ri): (Idle, Idle) = (c.idle, r.idle);
    println!(
        "| idle CPU with ≥{least} processes on the host ({:.0} s window each; the host's process events/s in each window: {:.1}, {:.1}) | {} | {} | {} | – | – |",
        ci.secs.min(ri.secs),
        ci.events_milli as f64 / 1000.0,
        ri.events_milli as f64 / 1000.0,
        per_min(ci.cpu_per_min),
        per_min(ri.cpu_per_min),
        ratio(ci.cpu_per_min, ri.cpu_per_min)
    );
    println!(
        "| idle wakeups with ≥{least} processes on the host | {} | {} | {} | – | – |",
        per_s(ci.wakeups_milli),
        per_s(ri.wakeups_milli),
        ratio(ci.wakeups_milli, ri.wakeups_milli)
    );
    row(
        &format!("CPU from exec to ready with ≥{least} processes on the host (cgrulesengd: first probe placed; reeve: start scan published)"),
        c.start_cpu_ns,
        r.start_cpu_ns,
        None,
    );
}

/// What the crowd was, and what reeve's safety net did and costs at its
/// size.
fn crowd_notes(w: &Crowd) {
    let (c, r, b, a) = (&w.cgre, &w.reeve, w.before, w.after);
    let rescan = DEFAULT_RESCAN_INTERVAL.as_secs();
    println!();
    println!(
        "crowd: {} sleepers (copies of /bin/sleep named {}, which neither daemon's rules match) for a target of {} processes; host processes (numeric entries of /proc) when each daemon started, and at the start and end of its window: cgrulesengd {}, {} and {}; reeve {}, {} and {}",
        w.sleepers,
        w.sleeper_name,
        w.target,
        c.procs_at_start,
        c.procs.0,
        c.procs.1,
        r.procs_at_start,
        r.procs.0,
        r.procs.1
    );
    println!(
        "each daemon alone; CPU (schedstat) and wakeups (context switches) summed over all its threads; reeve with default discovery (netlink; safety-net rescan every {rescan} s, every {DEEP_EVERY}th rescan deep) and its metrics endpoint on 127.0.0.1:{}, read just before and just after its window",
        w.port
    );
    let d = |f: fn(&Scans) -> u64| f(&a).saturating_sub(f(&b));
    println!(
        "reeve's safety net in its {:.1} s window: steady scans {}, rescans skipped (the kernel's fork and thread counters unchanged) {}, deep scans {}; scan time in the window {:.2} ms over {} scans",
        r.idle.secs,
        d(|s| s.steady),
        d(|s| s.skipped),
        d(|s| s.deep),
        (a.seconds - b.seconds) * 1e3,
        d(|s| s.count)
    );
    let forks = |f: Option<u64>| f.map_or("unreadable".to_string(), |n| n.to_string());
    println!(
        "the kernel's forks, threads included (/proc/stat processes), in reeve's window: {}; from when reeve published its start scan to its window's end: {} (a steady rescan is skipped only when none happened since the last scan began, and the thread count is unchanged)",
        forks(r.idle.forks),
        forks(w.forks_since_ready)
    );
    let deep_ns = if b.count > 0 {
        (b.seconds / b.count as f64 * 1e9) as u64
    } else {
        0
    };
    let which = if b.count == 1 && b.deep == 1 {
        "its start scan (deep)".to_string()
    } else {
        format!(
            "the mean of the {} scans before its window ({} deep, {} steady)",
            b.count, b.deep, b.steady
        )
    };
    println!(
        "deep scan with {} processes on the host when reeve started: {which} took {} of wall time (reeve_scan_duration_seconds sum / count = {:.6} s / {})",
        r.procs_at_start,
        us(deep_ns),
        b.seconds,
        b.count
    );
    let amortised = deep_ns * 60 / (DEEP_EVERY * rescan).max(1);
    println!(
        "one deep scan every {} min ({DEEP_EVERY} × {rescan} s) adds {} amortised (wall time, an upper bound of its CPU); reeve's idle cost with it: {} (its window, with the scans above) + {} = {}, against cgrulesengd's {} ({})",
        DEEP_EVERY * rescan / 60,
        per_min(amortised),
        per_min(r.idle.cpu_per_min),
        per_min(amortised),
        per_min(r.idle.cpu_per_min + amortised),
        per_min(c.idle.cpu_per_min),
        ratio(c.idle.cpu_per_min, r.idle.cpu_per_min + amortised)
    );
}
