//! The daemon's side of heartbeats: the socket in the poll set, a bounded
//! drain per wakeup, the identity of every sender, the stall check at its
//! deadline, and the events, counters and metrics.
//!
//! Each datagram goes through [`crate::liveness::intake`] (credentials,
//! frame, spoof, global rate, identity, namespace, table); a newcomer is
//! admitted when a rule tracks it or its uid is allowed. Stalls are
//! checked only when the earliest deadline passed, and a stall candidate
//! is read once more from /proc so a process that ended is not reported as
//! stalled. What the wakeup found stalled is kept in [`Heart::stalls`] for
//! whatever acts on it (recovery).

use std::time::Duration;

use super::Daemon;
use crate::config::{Config, GroupRef};
use crate::discovery::RuleId;
use crate::liveness::beats::{Admission, Beats, Origin, Rates, Reject, Stall};
use crate::liveness::frame::{self, FRAME_LEN};
use crate::liveness::{identify_with, intake, Listener, ProcDir, Senders, DATAGRAMS_PER_WAKE};
use crate::log::{Logger, Val};
use crate::metrics::text::Exposition;
use crate::procfs::{ProcKey, ReadError};
use crate::sys::{self, CMSG_SPACE};
use crate::users::UserDb;

/// The cause a heartbeat stall is reported and handed on with.
pub const CAUSE: &str = "heartbeat";
/// At most one `beats_rejected` summary line in this long.
const REJECT_REPORT_NS: u64 = 10_000_000_000;
/// Where a group name is looked up.
const GROUP_FILE: &str = "/etc/group";

/// A stall handed to whatever acts on it: who, under which rule, why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StallNotice {
    pub key: ProcKey,
    pub rule: Option<RuleId>,
    pub cause: &'static str,
}

/// The listener, the senders' table and the buffers, all made at start.
pub struct Heart {
    listener: Listener,
    beats: Beats,
    allow_uids: Vec<u32>,
    proc_dir: ProcDir,
    buf: [u8; FRAME_LEN],
    control: [u8; CMSG_SPACE],
    found: Vec<Stall>,
    /// The stalls the last wakeup found.
    notices: Vec<StallNotice>,
    reported_rejects: u64,
    last_reject_report_ns: u64,
    last_reject: Option<(Reject, u32)>,
    recv_errors: u64,
}

impl Heart {
    pub fn fd(&self) -> i32 {
        self.listener.fd()
    }

    /// The stalls the last wakeup found (cause [`CAUSE`]), for recovery.
    /// Discovery saw `key` exit.
    pub fn ended(&mut self, key: &ProcKey) {
        self.beats.ended(key);
    }

    pub fn stalls(&self) -> &[StallNotice] {
        &self.notices
    }
}

/// Opens the socket when the config has a `heartbeat` section. A socket
/// that cannot be opened stops the start with one line: a daemon whose
/// rules expect beats it cannot hear would report every sender stalled.
pub(super) fn open(config: &Config, log: &mut Logger) -> Result<Option<Heart>, String> {
    let Some(h) = &config.heartbeat else {
        return Ok(None);
    };
    let gid = match &h.group {
        None => None,
        Some(GroupRef::Gid(g)) => Some(*g),
        Some(GroupRef::Name(name)) => {
            let groups = UserDb::load_from(std::path::Path::new(GROUP_FILE)).map_err(|e| {
                format!("{GROUP_FILE}: cannot read: {e}; give heartbeat.group as a gid")
            })?;
            Some(groups.uid_of(name).ok_or_else(|| {
                format!(
                    "heartbeat.group: no group '{}' in {GROUP_FILE}; give a gid instead",
                    name.escape_debug()
                )
            })?)
        }
    };
    let listener = Listener::open(&h.socket, h.mode, gid).map_err(|e| e.to_string())?;
    let path = h.socket.display().to_string();
    let mode = format!("{:04o}", h.mode);
    log.info(
        "heartbeat_listening",
        &[
            ("socket", Val::S(&path)),
            ("mode", Val::S(&mode)),
            // Without a configured group the socket keeps reeve's own.
            ("gid", Val::U(gid.unwrap_or_else(sys::getegid).into())),
            ("capacity", Val::U(h.capacity as u64)),
            ("rate_per_pid", Val::U(h.rate_per_pid.into())),
            ("rate_global", Val::U(h.rate_global.into())),
            ("replaced_stale", Val::Bool(listener.replaced_stale)),
        ],
    );
    let rates = Rates {
        per_pid: h.rate_per_pid,
        global: h.rate_global,
    };
    Ok(Some(Heart {
        listener,
        beats: Beats::new(h.capacity, rates, sys::monotonic_ns()),
        allow_uids: h.allow_uids.iter().map(|u| u.uid).collect(),
        proc_dir: ProcDir::open().map_err(|e| format!("/proc: cannot open: {e}"))?,
        buf: [0; FRAME_LEN],
        control: [0; CMSG_SPACE],
        found: Vec::with_capacity(h.capacity),
        notices: Vec::with_capacity(h.capacity),
        reported_rejects: 0,
        last_reject_report_ns: 0,
        last_reject: None,
        recv_errors: 0,
    }))
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// What the daemon knows of senders: /proc through discovery's reader,
/// the tracked table, the rules and the allowed uids.
struct Known<'a> {
    proc_dir: &'a ProcDir,
    discovery: &'a mut crate::discovery::Discovery,
    config: &'a Config,
    allow_uids: &'a [u32],
    jobs: &'a crate::supervise::Supervisor,
}

impl Senders for Known<'_> {
    fn proc_inode(&mut self, pid: u32) -> Option<u64> {
        self.proc_dir.inode(pid)
    }

    fn identify(&mut self, pid: u32) -> Option<(ProcKey, u64)> {
        identify_with(self.discovery.reader(), pid)
    }

    /// A process a rule tracks (with the rule's `beat_timeout`), a
    /// supervised job's process (its beats make it ready), or one of an
    /// allowed uid.
    fn admit(&mut self, origin: Origin) -> Option<Admission> {
        let tracked = self
            .discovery
            .tracked()
            .get(&origin.key)
            .filter(|t| t.alive());
        if let Some(t) = tracked {
            let timeout = self
                .discovery
                .rule_index(t.rule)
                .and_then(|i| self.config.targets.get(i))
                .and_then(|r| r.beat_timeout);
            return Some(Admission {
                rule: Some(t.rule),
                timeout_ns: timeout.map_or(0, duration_ns),
                by_uid: false,
            });
        }
        if self.jobs.runs(origin.key) {
            return Some(Admission {
                rule: None,
                timeout_ns: 0,
                by_uid: false,
            });
        }
        self.allow_uids.contains(&origin.uid).then_some(Admission {
            rule: None,
            timeout_ns: 0,
            by_uid: true,
        })
    }
}

impl Daemon {
    /// The poll timeout shortened so a stall is reported on time.
    pub(super) fn beats_cap_wait(&self, wait_ms: i32) -> i32 {
        let Some(due) = self.heart.as_ref().and_then(|h| h.beats.next_due_ns()) else {
            return wait_ms;
        };
        let left = due.saturating_sub(sys::monotonic_ns()).div_ceil(1_000_000);
        wait_ms.min(left.min(i32::MAX as u64) as i32)
    }

    /// Hands the heartbeat stalls this wakeup found (their `stalled` events
    /// are logged) to their rules' `on_stall` actions, the same entry the
    /// progress watchdog uses.
    pub(super) fn heartbeat_stalls(&mut self) {
        let Some(heart) = self.heart.as_ref() else {
            return;
        };
        let now = sys::monotonic_ns();
        let view = self.auto.as_ref().map(|g| &g.view);
        for n in &heart.notices {
            // A sender admitted by uid belongs to no rule: no actions.
            if let Some(rule) = n.rule {
                self.live.on_stall(
                    n.key,
                    rule,
                    &self.config,
                    &mut self.discovery,
                    view,
                    now,
                    &mut self.log,
                );
            }
        }
    }

    /// One wakeup's heartbeat work: drain the socket (when poll said it is
    /// readable), then check for stalls when one can be due.
    pub(super) fn beats_wakeup(&mut self, readable: bool) {
        let Some(mut heart) = self.heart.take() else {
            return;
        };
        heart.notices.clear();
        if readable {
            self.drain_beats(&mut heart);
        }
        self.check_stalls(&mut heart);
        self.report_rejects(&mut heart);
        self.heart = Some(heart);
    }

    fn drain_beats(&mut self, heart: &mut Heart) {
        for _ in 0..DATAGRAMS_PER_WAKE {
            let Heart {
                listener,
                buf,
                control,
                ..
            } = heart;
            let d = match listener.recv(buf, control) {
                Ok(Some(d)) => d,
                Ok(None) => return,
                Err(e) => {
                    heart.recv_errors += 1;
                    self.log.error(
                        "heartbeat_failed",
                        &[
                            ("error", Val::S(&e.to_string())),
                            ("errors", Val::U(heart.recv_errors)),
                            ("action", Val::S("the rest waits for the next wakeup")),
                        ],
                    );
                    return;
                }
            };
            let now = sys::monotonic_ns();
            let mut senders = Known {
                proc_dir: &heart.proc_dir,
                discovery: &mut self.discovery,
                config: &self.config,
                allow_uids: &heart.allow_uids,
                jobs: &self.jobs,
            };
            match intake(&mut heart.beats, &d, &mut senders, now) {
                Ok(t) => {
                    let (key, a) = (t.origin.key, t.accepted);
                    self.jobs.beat_from(key, &mut self.log);
                    if let Some(silent) = a.resumed_after_ns {
                        self.beat_event("resumed", key, a.rule, silent, t.frame.status);
                    } else if let Some(was) = a.status_was {
                        let rule = a.rule.map_or("", |r| self.discovery.rule_name(r));
                        self.log.info(
                            "beat_status",
                            &[
                                ("pid", Val::U(key.pid.into())),
                                ("start_ticks", Val::U(key.start_ticks)),
                                ("rule", Val::S(rule)),
                                ("status", Val::S(t.frame.status.as_str())),
                                ("was", Val::S(was.as_str())),
                            ],
                        );
                    }
                }
                Err(r) => heart.last_reject = Some((r.reason, r.pid)),
            }
        }
    }

    fn check_stalls(&mut self, heart: &mut Heart) {
        let now = sys::monotonic_ns();
        heart.found.clear();
        let reader = self.discovery.reader();
        // A candidate is read once more: the same identity still there and
        // not a zombie is stalled; one that ended is not. A read that fails
        // for another reason (no memory, no fds) proves nothing: the stall
        // is reported, since its actions act only through a pidfd opened
        // after their own identity check.
        let alive = |key: ProcKey| match reader.stat(key.pid) {
            Ok(s) => s.key() == key && !s.is_dead(),
            Err(ReadError::Gone) => false,
            Err(_) => true,
        };
        heart.beats.check(now, alive, &mut heart.found);
        for i in 0..heart.found.len() {
            let s = heart.found[i];
            self.beat_event("stalled", s.key, s.rule, s.silent_ns, s.status);
            heart.notices.push(StallNotice {
                key: s.key,
                rule: s.rule,
                cause: CAUSE,
            });
        }
    }

    fn beat_event(
        &mut self,
        event: &str,
        key: ProcKey,
        rule: Option<RuleId>,
        silent_ns: u64,
        status: frame::Status,
    ) {
        let rule = rule.map_or("", |r| self.discovery.rule_name(r));
        let timeout = self
            .config
            .targets
            .iter()
            .find(|r| r.name == rule)
            .and_then(|r| r.beat_timeout)
            .map_or(0, |d| d.as_millis() as u64);
        let fields = [
            ("pid", Val::U(key.pid.into())),
            ("start_ticks", Val::U(key.start_ticks)),
            ("rule", Val::S(rule)),
            ("cause", Val::S(CAUSE)),
            ("silent_ms", Val::U(silent_ns / 1_000_000)),
            ("beat_timeout_ms", Val::U(timeout)),
            ("last_status", Val::S(status.as_str())),
        ];
        if event == "stalled" {
            self.log.warn("stalled", &fields);
        } else {
            self.log.info("resumed", &fields);
        }
    }

    /// One summary line for refused datagrams, at most every 10 s, so a
    /// hostile sender cannot flood the log; the counters hold every one.
    fn report_rejects(&mut self, heart: &mut Heart) {
        let total: u64 = heart.beats.stats.rejected.iter().sum();
        let now = sys::monotonic_ns();
        if total == heart.reported_rejects
            || now.saturating_sub(heart.last_reject_report_ns) < REJECT_REPORT_NS
        {
            return;
        }
        let (reason, pid) = heart.last_reject.map_or(("", 0), |(r, p)| (r.as_str(), p));
        self.log.warn(
            "beats_rejected",
            &[
                ("count", Val::U(total - heart.reported_rejects)),
                ("total", Val::U(total)),
                ("last_reason", Val::S(reason)),
                ("last_pid", Val::U(pid.into())),
                ("see", Val::S("reeve_heartbeat_rejected_total by reason")),
            ],
        );
        heart.reported_rejects = total;
        heart.last_reject_report_ns = now;
    }

    /// The heartbeat families of the metrics exposition.
    pub(super) fn render_beats(&self, e: &mut Exposition<'_>) {
        let Some(heart) = &self.heart else {
            return;
        };
        let st = &heart.beats.stats;
        let c = |e: &mut Exposition<'_>, n, h, v: u64| e.single(n, "counter", h, v as f64);
        c(
            e,
            "reeve_heartbeats_total",
            "Heartbeats accepted.",
            st.accepted,
        );
        c(
            e,
            "reeve_heartbeats_untracked_total",
            "Heartbeats accepted from processes no rule tracks (admitted by heartbeat.allow_uids).",
            st.accepted_by_uid,
        );
        e.family(
            "reeve_heartbeat_rejected_total",
            "counter",
            "Datagrams on the heartbeat socket not taken as beats, by reason.",
        );
        for r in Reject::ALL {
            e.sample(
                "reeve_heartbeat_rejected_total",
                &[("reason", r.as_str())],
                st.rejected(r) as f64,
            );
        }
        c(
            e,
            "reeve_heartbeat_stalls_total",
            "Silence runs reported as stalled (cause heartbeat).",
            st.stalls,
        );
        c(
            e,
            "reeve_heartbeat_resumes_total",
            "Stalled senders that beat again.",
            st.resumes,
        );
        c(
            e,
            "reeve_heartbeat_evictions_total",
            "Senders removed from the full table to make room (ended or long silent).",
            st.evicted,
        );
        c(
            e,
            "reeve_heartbeat_receive_errors_total",
            "Reads of the heartbeat socket that failed.",
            heart.recv_errors,
        );
        let g = |e: &mut Exposition<'_>, n, h, v: usize| e.single(n, "gauge", h, v as f64);
        g(
            e,
            "reeve_heartbeat_senders",
            "Senders in the heartbeat table.",
            heart.beats.len(),
        );
        g(
            e,
            "reeve_heartbeat_senders_capacity",
            "Size of the heartbeat table (heartbeat.capacity).",
            heart.beats.capacity(),
        );
        g(
            e,
            "reeve_heartbeat_stalled",
            "Senders stalled now.",
            heart.beats.stalled(),
        );
    }
}
