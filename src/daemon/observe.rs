//! What the loop tells the outside: the metrics it publishes for the
//! endpoint and the service manager's notifications.
//!
//! Everything here runs on the loop's thread with bounded work: a publish
//! renders the counters the loop already holds, reads a few small files of
//! its own process, and samples at most [`JOBS_PER_PUBLISH`] jobs' cgroup
//! files (round robin), at most once per [`PUBLISH_EVERY_NS`] and only on
//! wakeups the loop has anyway. Notifications are non-blocking datagrams.
//! Only `WATCHDOG_USEC` adds wakeups, at the cadence the service manager
//! asks for.

use std::collections::BTreeMap;
use std::path::Path;

use super::Daemon;
use crate::discovery::netlink::{Event, ProcEvent};
use crate::discovery::{ScanKind, ScanReport};
use crate::log::Val;
use crate::metrics::text::{Exposition, Histogram, LATENCY_BUCKETS};
use crate::metrics::{HealthFacts, Publisher};
use crate::notify::Notifier;
use crate::sys;

/// Jobs whose cgroup files one publish reads.
pub const JOBS_PER_PUBLISH: usize = 64;
use crate::metrics::PUBLISH_EVERY_NS;

pub(super) const NETLINK_KINDS: [&str; 6] = ["ack", "fork", "exec", "comm", "exit", "other"];

/// A job's usage as its cgroup files last showed it; `None` where the file
/// is absent (its controller is not enabled) or unreadable.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct JobSample {
    pub(super) cpu_usage_us: Option<u64>,
    pub(super) cpu_throttled_us: Option<u64>,
    pub(super) memory_current: Option<u64>,
    pub(super) memory_peak: Option<u64>,
    pub(super) oom_kills: Option<u64>,
    pub(super) pids_current: Option<u64>,
    /// Bytes passed and dropped by the job's network programs, per
    /// direction ([`crate::cgroup::net::Direction::BOTH`] order); read
    /// only for a job with network limits.
    pub(super) net: [Option<(u64, u64)>; 2],
}

/// Counters only the observer keeps, and the outside's handles.
pub struct Observer {
    pub publisher: Option<Publisher>,
    pub notify: Notifier,
    pub(super) scans: [u64; 2],
    /// Steady rescans skipped because nothing was created or released.
    pub(super) scans_skipped: u64,
    pub(super) last_found: u32,
    pub(super) scan_seconds: Histogram,
    pub(super) loop_seconds: Histogram,
    /// From the kernel's timestamp of a netlink event to discovery's
    /// decision that its process is a target.
    pub(super) discovery_latency: Histogram,
    pub(super) netlink_events: [u64; 6],
    pub overruns: u64,
    pub netlink_lost: bool,
    last_scan_ns: u64,
    woke_ns: u64,
    last_publish_ns: u64,
    next_watchdog_ns: u64,
    ready_sent: bool,
    pub(super) start_time_s: f64,
    pub(super) jobs: BTreeMap<String, JobSample>,
    job_cursor: usize,
    pub(super) file: String,
}

impl Observer {
    pub fn new(publisher: Option<Publisher>, notify: Notifier) -> Observer {
        Observer {
            publisher,
            notify,
            scans: [0; 2],
            scans_skipped: 0,
            last_found: 0,
            scan_seconds: Histogram::default(),
            loop_seconds: Histogram::default(),
            discovery_latency: Histogram::with_bounds(&LATENCY_BUCKETS),
            netlink_events: [0; 6],
            overruns: 0,
            netlink_lost: false,
            last_scan_ns: 0,
            woke_ns: 0,
            last_publish_ns: 0,
            next_watchdog_ns: 0,
            ready_sent: false,
            start_time_s: sys::realtime_ms() as f64 / 1000.0,
            jobs: BTreeMap::new(),
            job_cursor: 0,
            file: String::with_capacity(512),
        }
    }

    pub fn scanned(&mut self, r: &ScanReport) {
        self.scans[usize::from(r.kind == ScanKind::Steady)] += 1;
        self.last_found = r.found;
        self.scan_seconds.observe_us(r.duration_us);
        self.last_scan_ns = sys::monotonic_ns();
    }

    /// A due steady rescan found the host's counters unchanged: the
    /// safety net looked and had nothing to scan, which counts as a scan
    /// for health.
    pub fn scan_skipped(&mut self) {
        self.scans_skipped += 1;
        self.last_scan_ns = sys::monotonic_ns();
    }

    pub fn netlink_event(&mut self, ev: &Event) {
        let i = match ev.kind {
            ProcEvent::Ack { .. } => 0,
            ProcEvent::Fork { .. } => 1,
            ProcEvent::Exec { .. } => 2,
            ProcEvent::Comm { .. } => 3,
            ProcEvent::Exit { .. } => 4,
            ProcEvent::Other { .. } => 5,
        };
        self.netlink_events[i] += 1;
    }

    /// Handling `ev` discovered `n` targets (a fork of a target can bring
    /// its child, an exec or a rename the process itself). The kernel
    /// stamps events with CLOCK_MONOTONIC (`ktime_get_ns`), the clock of
    /// [`sys::monotonic_ns`], so the difference is the time from the
    /// kernel's report to discovery's decision.
    pub fn discovered_from(&mut self, ev: &Event, n: u64) {
        let ns = sys::monotonic_ns().saturating_sub(ev.timestamp_ns);
        for _ in 0..n {
            self.discovery_latency.observe_ns(ns);
        }
    }

    /// Poll returned: the wakeup's work starts.
    pub fn woke(&mut self) {
        self.woke_ns = sys::monotonic_ns();
    }

    /// `wait_ms` shortened so the next watchdog keep-alive is on time.
    pub fn cap_wait(&self, wait_ms: i32) -> i32 {
        if self.notify.watchdog_every().is_none() || !self.ready_sent {
            return wait_ms;
        }
        let left = self.next_watchdog_ns.saturating_sub(sys::monotonic_ns());
        let left_ms = left.div_ceil(1_000_000).min(i32::MAX as u64) as i32;
        wait_ms.min(left_ms)
    }

    /// Tells the service manager reeve is stopping.
    pub fn stopping(&mut self, log: &mut crate::log::Logger) {
        self.send(
            log,
            "STOPPING=1\nSTATUS=stopping; tracked processes keep running",
        );
    }

    fn send(&mut self, log: &mut crate::log::Logger, msg: &str) {
        if let Err(e) = self.notify.send(msg) {
            log.warn(
                "notify_failed",
                &[
                    ("message", Val::S(msg.lines().next().unwrap_or(""))),
                    ("error", Val::S(&e.to_string())),
                    ("failures", Val::U(self.notify.failures)),
                    (
                        "effect",
                        Val::S("the service manager may not see this state; the next keep-alive retries"),
                    ),
                ],
            );
        }
    }

    fn sample_jobs(&mut self, jobs: &BTreeMap<String, crate::state::JobState>) {
        self.jobs.retain(|name, _| jobs.contains_key(name));
        if self.job_cursor >= jobs.len() {
            self.job_cursor = 0;
        }
        let take = JOBS_PER_PUBLISH.min(jobs.len());
        for (name, job) in jobs.iter().cycle().skip(self.job_cursor).take(take) {
            let s = sample_job(job, &mut self.file);
            match self.jobs.get_mut(name) {
                Some(slot) => *slot = s,
                None => {
                    self.jobs.insert(name.clone(), s);
                }
            }
        }
        self.job_cursor += take;
    }
}

fn read_u64(dir: &Path, file: &str, buf: &mut String) -> Option<u64> {
    read_small(&dir.join(file), buf)?;
    buf.trim().parse().ok()
}

/// Reads a small file into `buf`; `None` when it is absent or unreadable
/// (a metric without a value is left out, not invented).
fn read_small(path: &Path, buf: &mut String) -> Option<()> {
    use std::io::Read;
    buf.clear();
    let f = std::fs::File::open(path).ok()?;
    f.take(64 * 1024).read_to_string(buf).ok()?;
    Some(())
}

fn sample_job(job: &crate::state::JobState, buf: &mut String) -> JobSample {
    let dir = job.cgroup.as_path();
    let cpu = crate::cgroup::cpu_stat(dir).ok();
    let mem = crate::cgroup::memory_events(dir).ok();
    // bpf(2) queries, no file: only for a job whose limits name the
    // network, so a host without network limits makes none.
    let mut net = [None; 2];
    if job.limits.net_tx.is_some() || job.limits.net_rx.is_some() {
        // An unreadable bucket leaves the series out, as an unreadable
        // cgroup file does; `reeve status` says why.
        if let Ok(found) = crate::cgroup::net::buckets(dir) {
            net = found.map(|b| b.map(|b| (b.passed, b.dropped)));
        }
    }
    JobSample {
        net,
        cpu_usage_us: cpu.map(|c| c.usage_usec),
        cpu_throttled_us: cpu.map(|c| c.throttled_usec),
        memory_current: read_u64(dir, "memory.current", buf),
        memory_peak: read_u64(dir, "memory.peak", buf),
        oom_kills: mem.map(|m| m.oom_kill),
        pids_current: read_u64(dir, "pids.current", buf),
    }
}

/// reeve's own resident bytes, cpu seconds and open fds.
pub(super) fn own_usage(buf: &mut String) -> (Option<f64>, Option<f64>, Option<f64>) {
    let rss = read_small(Path::new("/proc/self/status"), buf).and_then(|()| {
        let line = buf.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024.0)
    });
    let cpu = read_small(Path::new("/proc/self/stat"), buf).and_then(|()| {
        let rest = &buf[buf.rfind(')')? + 1..];
        let mut f = rest.split_whitespace().skip(11);
        let ticks: u64 = f.next()?.parse::<u64>().ok()? + f.next()?.parse::<u64>().ok()?;
        let hz = sys::clock_ticks_per_sec().ok()?;
        Some(ticks as f64 / hz as f64)
    });
    let fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| d.count().saturating_sub(1) as f64);
    (rss, cpu, fds)
}

/// Starts the metrics endpoint (when the config has a `metrics` object)
/// and reads the service manager's environment. An endpoint that cannot
/// listen stops the start: the operator asked for it.
pub fn start(
    config: &crate::config::Config,
    log: &mut crate::log::Logger,
) -> Result<Observer, String> {
    let publisher = match &config.metrics {
        None => None,
        Some(m) => {
            let token = match &m.token_file {
                Some(path) => Some(crate::metrics::read_token(path).map_err(|e| e.to_string())?),
                None => None,
            };
            if token.is_none() && !m.listen.ip().is_loopback() {
                log.warn(
                    "metrics_exposed",
                    &[
                        ("listen", Val::S(&m.listen.to_string())),
                        ("effect", Val::S("anyone who reaches this address can read reeve's metrics; set metrics.token_file")),
                    ],
                );
            }
            let p = Publisher::start(m.listen, token).map_err(|e| e.to_string())?;
            log.info(
                "metrics_listening",
                &[
                    ("address", Val::S(&p.addr.to_string())),
                    (
                        "token",
                        Val::S(if m.token_file.is_some() {
                            "required"
                        } else {
                            "none"
                        }),
                    ),
                ],
            );
            Some(p)
        }
    };
    let (notify, problem) = Notifier::from_env();
    if let Some(why) = problem {
        log.warn("notify_unavailable", &[("error", Val::S(&why))]);
    }
    Ok(Observer::new(publisher, notify))
}

impl Daemon {
    /// After a wakeup's work: publish metrics (rate-limited), say READY
    /// once the first scan is done, keep the watchdog fed.
    pub(super) fn observe_wakeup(&mut self) {
        let now = sys::monotonic_ns();
        if self.obs.woke_ns != 0 {
            let us = now.saturating_sub(self.obs.woke_ns) / 1000;
            self.obs.loop_seconds.observe_us(us);
        }
        let first = !self.obs.ready_sent && self.obs.last_scan_ns != 0;
        if self.obs.publisher.is_some()
            && (first || now.saturating_sub(self.obs.last_publish_ns) >= PUBLISH_EVERY_NS)
        {
            self.publish_metrics();
            self.obs.last_publish_ns = now;
        }
        if first {
            self.obs.ready_sent = true;
            let msg = format!("READY=1\n{}", self.status_line());
            self.obs.send(&mut self.log, &msg);
        }
        if let Some(every) = self.obs.notify.watchdog_every() {
            if self.obs.ready_sent && now >= self.obs.next_watchdog_ns {
                self.obs.next_watchdog_ns = now.saturating_add(every.as_nanos() as u64);
                // The status rides on the keep-alive: current without a
                // wakeup of its own.
                let msg = format!("WATCHDOG=1\n{}", self.status_line());
                self.obs.send(&mut self.log, &msg);
            }
        }
    }

    /// `STATUS=` for `systemctl status`: one line.
    fn status_line(&self) -> String {
        let mode = self.mode_name();
        let live = self.discovery.live();
        let jobs = self.auto.as_ref().map_or(0, |a| a.view.jobs.len());
        let unhealthy = if self.persist.save_failing {
            "; state writes failing"
        } else if self.obs.netlink_lost {
            "; netlink lost, polling"
        } else {
            ""
        };
        format!("STATUS=watching {live} processes, {jobs} jobs, discovery by {mode}{unhealthy}")
    }

    fn publish_metrics(&mut self) {
        if let Some(gov) = self.auto.as_ref() {
            let jobs = &gov.view.jobs;
            self.obs.sample_jobs(jobs);
        }
        let facts = HealthFacts {
            last_scan_ns: self.obs.last_scan_ns,
            // The pace in force: in netlink mode scans are the safety
            // net, one per rescan_interval.
            scan_interval_ns: self.scan_interval_ns(),
            netlink_lost: self.obs.netlink_lost,
            state_failing: self.persist.save_failing,
            audit_failing: self.persist.audit_failing(),
        };
        let Some(mut p) = self.obs.publisher.take() else {
            return;
        };
        let mut out = std::mem::take(p.buffer());
        self.render(&mut Exposition { out: &mut out }, &p);
        *p.buffer() = out;
        p.publish(facts);
        self.obs.publisher = Some(p);
    }
}
