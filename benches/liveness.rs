//! The progress watchdog's cost and its stall detection latency, against
//! real processes: N sleepers (4,096; 512 with `REEVE_BENCH_QUICK=1`) that
//! the bench starts, watches and kills.
//!
//! - cost: one tick samples at most `SAMPLES_PER_TICK` processes (a stat
//!   and an io read each), whatever N; reported per tick and per process.
//!   Goal: a tick's p99 within a tenth of the tick period, so the watchdog
//!   takes at most 10% of one core however many processes are watched.
//! - latency: every sleeper is idle, so each stalls once; the time from
//!   the threshold (last progress seen + `stall_after`) to the verdict is
//!   at most one sampling round (`ceil(N / SAMPLES_PER_TICK)` ticks).
//!   Goal: p99 within one round. With a threshold shorter than a round
//!   (1 s here, a round of 4,096 is 4 s) every verdict comes at the next
//!   round's sample, about `round - stall_after` late.
//!
//! Prints one goal line per figure, ending in MET or MISSED.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reeve::discovery::RuleNames;
use reeve::liveness::progress::{Verdict, Watchdog, SAMPLES_PER_TICK, TICK};
use reeve::procfs::{ProcKey, ProcReader};

/// Kills and reaps every sleeper on drop, also when the bench panics.
struct Sleepers(Vec<Child>);

impl Drop for Sleepers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
        }
        for c in &mut self.0 {
            let _ = c.wait();
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn verdict(met: bool) -> &'static str {
    if met {
        "MET"
    } else {
        "MISSED"
    }
}

fn main() {
    let quick = std::env::var("REEVE_BENCH_QUICK").as_deref() == Ok("1");
    let n = if quick { 512 } else { 4096 };
    let mut reader = ProcReader::open().expect("open /proc");
    let mut sleepers = Sleepers(Vec::with_capacity(n));
    let mut keys = Vec::with_capacity(n);
    for _ in 0..n {
        let child = Command::new("sleep")
            .arg("600")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sleep");
        let key: ProcKey = reader.stat(child.id()).expect("stat of a sleeper").key();
        sleepers.0.push(child);
        keys.push(key);
    }
    let rule = RuleNames::default().intern("bench").expect("rule id");
    let tick_us = TICK.as_micros() as f64;
    let round_ticks = n.div_ceil(SAMPLES_PER_TICK);
    let round_ms = round_ticks as f64 * TICK.as_millis() as f64;

    // Cost: many ticks with a threshold no sleeper reaches.
    let mut w = Watchdog::new(n);
    for &k in &keys {
        w.watch(k, rule, Duration::from_secs(3600), 0);
    }
    let rounds = if quick { 10 } else { 20 };
    let mut tick_times = Vec::with_capacity(rounds * round_ticks);
    for _ in 0..rounds * round_ticks {
        let t = Instant::now();
        let sampled = w.sample(1, SAMPLES_PER_TICK, &mut reader, |_| {});
        tick_times.push(t.elapsed().as_secs_f64() * 1e6);
        assert_eq!(sampled, SAMPLES_PER_TICK.min(n));
    }
    assert_eq!(w.len(), n, "a sleeper left the watch list");
    tick_times.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&tick_times, 0.5), percentile(&tick_times, 0.99));
    let per = SAMPLES_PER_TICK.min(n) as f64;
    let goal_us = tick_us / 10.0;
    println!(
        "watchdog tick: {n} processes, {} per tick, p50 {p50:.0}us p99 {p99:.0}us per tick, \
         {:.1}us per process   goal p99 <= {goal_us:.0}us per tick   {}",
        SAMPLES_PER_TICK.min(n),
        p50 / per,
        verdict(p99 <= goal_us)
    );
    println!(
        "watchdog CPU share at this pace: {:.2}% of one core (p50 tick every {:.0} ms)",
        p50 / tick_us * 100.0,
        tick_us / 1000.0
    );

    // Latency: real time, real ticks, every sleeper stalls once.
    let stall_after = Duration::from_secs(1);
    let mut w = Watchdog::new(n);
    let start = reeve::sys::monotonic_ns();
    for &k in &keys {
        w.watch(k, rule, stall_after, start);
    }
    let mut over_ms = Vec::with_capacity(n);
    let until = Instant::now() + stall_after + Duration::from_millis(3 * round_ms as u64 + 500);
    while over_ms.len() < n && Instant::now() < until {
        let now = reeve::sys::monotonic_ns();
        w.tick(now, &mut reader, |v| {
            if let Verdict::Stalled {
                idle, stall_after, ..
            } = v
            {
                over_ms.push((idle - stall_after).as_secs_f64() * 1000.0);
            }
        });
        let next = w.deadline_ns().unwrap_or(now);
        std::thread::sleep(Duration::from_nanos(
            next.saturating_sub(reeve::sys::monotonic_ns()),
        ));
    }
    let stalls = over_ms.len();
    over_ms.sort_by(f64::total_cmp);
    let (l50, l99) = (percentile(&over_ms, 0.5), percentile(&over_ms, 0.99));
    println!(
        "stall latency: {stalls} of {n} stalled, past the threshold ({} ms) by p50 {l50:.0} ms \
         p99 {l99:.0} ms   goal p99 <= one sampling round ({round_ms:.0} ms) and every \
         process stalled   {}",
        stall_after.as_millis(),
        verdict(stalls == n && l99 <= round_ms)
    );
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average during the run: {}", load.trim());
}
