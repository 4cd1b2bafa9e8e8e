//! Exec hooks, run asynchronously from the loop.
//!
//! A hook is an argv (never a shell) started with a cleared environment
//! (PATH and the `REEVE_*` variables only), `/` as its directory, stdin
//! from /dev/null, every signal at its default, in a process group of its
//! own. Its stdout and stderr are non-blocking pipes the loop reads when
//! poll(2) says so, keeping the first [`CAPTURE`] bytes of each; its end is
//! seen through its pidfd. At its timeout its whole process group is
//! killed; when its leader ends, whatever it left in its group is killed
//! too, before the leader is reaped (so the group id cannot have been
//! reused). At most [`MAX_RUNNING`] run at once; up to [`QUEUE`] more wait
//! in order; beyond that a hook is refused and counted.
//!
//! Invariant: nothing here waits. Reaping is `try_wait` (WNOHANG) after the
//! pidfd said the hook ended; pipe reads stop at EAGAIN.

use std::collections::VecDeque;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::log::{Logger, Val};
use crate::sys;

/// Hooks running at once.
pub const MAX_RUNNING: usize = 4;
/// Hooks waiting for a free place.
pub const QUEUE: usize = 16;
/// Bytes of stdout and of stderr kept per hook.
pub const CAPTURE: usize = 4096;
/// The pollfds the running hooks need (pidfd, stdout, stderr each).
pub const POLL_FDS: usize = 3 * MAX_RUNNING;
/// PATH given to hooks when reeve's own has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What a hook is about: the incident it was started for.
#[derive(Debug, Clone)]
pub struct Label {
    pub pid: u32,
    pub start_ticks: u64,
    pub rule: String,
    pub job: String,
    pub event: String,
}

/// A hook to start.
#[derive(Debug, Clone)]
pub struct Request {
    /// Placeholders already substituted.
    pub argv: Vec<String>,
    pub timeout: Duration,
    pub label: Label,
}

/// How hooks ended, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HookStats {
    pub started: u64,
    pub succeeded: u64,
    /// Exited non-zero or killed by a signal before their timeout.
    pub failed: u64,
    pub timed_out: u64,
    /// Could not be started (spawn error).
    pub spawn_failed: u64,
    /// Queue full, or reeve stopping.
    pub refused: u64,
}

/// One output pipe and what was kept of it.
struct Capture<R> {
    pipe: Option<R>,
    bytes: Vec<u8>,
    truncated: bool,
}

struct Running {
    child: Child,
    pidfd: Option<OwnedFd>,
    out: Capture<std::process::ChildStdout>,
    err: Capture<std::process::ChildStderr>,
    started_ns: u64,
    deadline_ns: u64,
    timed_out: bool,
    req: Request,
}

impl Running {
    /// Reads what stdout and stderr hold now (see [`drain`]).
    fn drain_output(&mut self, scratch: &mut [u8]) {
        let (out, err) = (&mut self.out, &mut self.err);
        drain(&mut out.pipe, &mut out.bytes, &mut out.truncated, scratch);
        drain(&mut err.pipe, &mut err.bytes, &mut err.truncated, scratch);
    }
}

/// The running and waiting hooks.
pub struct Hooks {
    running: Vec<Running>,
    /// Hooks killed before they ran (their pipes could not be made
    /// non-blocking), reaped by `service` without waiting.
    dying: Vec<Child>,
    queue: VecDeque<Request>,
    scratch: Box<[u8]>,
    path: String,
    stats: HookStats,
}

impl Default for Hooks {
    fn default() -> Hooks {
        Hooks::new()
    }
}

/// Reads what `pipe` holds now (stopping at EAGAIN, end of file, or after
/// 64 KiB so one chatty hook cannot hold the loop), keeping the first
/// [`CAPTURE`] bytes in `keep`.
fn drain<R: Read>(
    pipe: &mut Option<R>,
    keep: &mut Vec<u8>,
    truncated: &mut bool,
    scratch: &mut [u8],
) {
    let Some(p) = pipe.as_mut() else { return };
    let mut budget: usize = 64 * 1024;
    while budget > 0 {
        match p.read(scratch) {
            Ok(0) => {
                *pipe = None;
                return;
            }
            Ok(n) => {
                budget = budget.saturating_sub(n);
                let room = CAPTURE.saturating_sub(keep.len());
                keep.extend_from_slice(&scratch[..n.min(room)]);
                if n > room {
                    *truncated = true;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // A read error on our own pipe: stop reading it; the outcome
            // still reports what was captured, marked truncated.
            Err(_) => {
                *truncated = true;
                *pipe = None;
                return;
            }
        }
    }
}

impl Hooks {
    pub fn new() -> Hooks {
        let path = std::env::var("PATH")
            .ok()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| DEFAULT_PATH.to_string());
        Hooks {
            running: Vec::with_capacity(MAX_RUNNING),
            dying: Vec::with_capacity(MAX_RUNNING),
            queue: VecDeque::with_capacity(QUEUE),
            scratch: vec![0; 16 * 1024].into_boxed_slice(),
            path,
            stats: HookStats::default(),
        }
    }

    pub fn stats(&self) -> HookStats {
        self.stats
    }

    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// Starts `req` now, or queues it; a full queue refuses it (an event).
    pub fn submit(&mut self, req: Request, now_ns: u64, log: &mut Logger) {
        if self.running.len() + self.dying.len() < MAX_RUNNING {
            self.start(req, now_ns, log);
        } else if self.queue.len() < QUEUE {
            self.queue.push_back(req);
        } else {
            self.stats.refused += 1;
            refused(log, &req, "hook queue full: too many hooks at once");
        }
    }

    fn start(&mut self, req: Request, now_ns: u64, log: &mut Logger) {
        if req.argv.is_empty() {
            self.stats.spawn_failed += 1;
            failed(log, &req, "a hook needs a program (its argv is empty)");
            return;
        }
        let l = &req.label;
        let mut cmd = Command::new(&req.argv[0]);
        cmd.args(&req.argv[1..])
            .env_clear()
            .env("PATH", &self.path)
            .env("REEVE_PID", l.pid.to_string())
            .env("REEVE_START_TICKS", l.start_ticks.to_string())
            .env("REEVE_RULE", &l.rule)
            .env("REEVE_JOB", &l.job)
            .env("REEVE_EVENT", &l.event)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        sys::hook_state_before_exec(&mut cmd);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                self.stats.spawn_failed += 1;
                let error = format!("{}: cannot start: {e}", req.argv[0]);
                failed(log, &req, &error);
                return;
            }
        };
        let out = child.stdout.take();
        let err = child.stderr.take();
        let nonblocking = [
            out.as_ref().map(|p| p.as_raw_fd()),
            err.as_ref().map(|p| p.as_raw_fd()),
        ];
        for fd in nonblocking.into_iter().flatten() {
            if let Err(e) = sys::set_nonblocking(fd) {
                // A blocking pipe would stall the loop on a read: kill the
                // hook rather than read it.
                let error = format!(
                    "{}: cannot make its output pipe non-blocking: {e}",
                    req.argv[0]
                );
                self.stats.spawn_failed += 1;
                failed(log, &req, &error);
                if let Err(e) = sys::kill_process_group(child.id(), libc::SIGKILL) {
                    log.error(
                        "hook_kill_failed",
                        &[
                            ("hook_pid", Val::U(child.id().into())),
                            ("error", Val::S(&e.to_string())),
                        ],
                    );
                }
                // Reaped later by `service` (try_wait): the loop never waits
                // for a child, not even one that was sent SIGKILL. At most
                // MAX_RUNNING wait here; a spawn never starts past that.
                self.dying.push(child);
                return;
            }
        }
        // The child is not reaped before we do, so its pid is still its own.
        // Without a pidfd (a kernel before 5.3) nothing is lost: the end is
        // found by try_wait every 100 ms, and only the clean-up of what the
        // hook left in its group is skipped (see `service`).
        let pidfd = sys::pidfd_open(child.id()).ok();
        self.stats.started += 1;
        let hook_pid = child.id();
        log.info(
            "hook_started",
            &[
                ("pid", Val::U(l.pid.into())),
                ("start_ticks", Val::U(l.start_ticks)),
                ("rule", Val::S(&l.rule)),
                ("job", Val::S(&l.job)),
                ("trigger", Val::S(&l.event)),
                ("program", Val::S(&req.argv[0])),
                ("hook_pid", Val::U(hook_pid.into())),
            ],
        );
        let deadline_ns =
            now_ns.saturating_add(u64::try_from(req.timeout.as_nanos()).unwrap_or(u64::MAX));
        self.running.push(Running {
            child,
            pidfd,
            out: Capture {
                pipe: out,
                bytes: Vec::with_capacity(CAPTURE),
                truncated: false,
            },
            err: Capture {
                pipe: err,
                bytes: Vec::with_capacity(CAPTURE),
                truncated: false,
            },
            started_ns: now_ns,
            deadline_ns,
            timed_out: false,
            req,
        });
    }

    /// Whether `pid` is a running hook's: its owner reaps it.
    pub fn runs(&self, pid: u32) -> bool {
        self.running.iter().any(|r| r.child.id() == pid) || self.dying.iter().any(|c| c.id() == pid)
    }

    /// Fills `out` with the fds the loop polls for the running hooks (-1
    /// for unused places, which poll(2) skips).
    pub fn poll_fds(&self, out: &mut [libc::pollfd]) {
        for p in out.iter_mut() {
            *p = sys::poll_fd(-1);
        }
        for (i, h) in self.running.iter().enumerate() {
            let fds = [
                h.pidfd.as_ref().map(|f| f.as_raw_fd()),
                h.out.pipe.as_ref().map(|p| p.as_raw_fd()),
                h.err.pipe.as_ref().map(|p| p.as_raw_fd()),
            ];
            for (j, fd) in fds.into_iter().enumerate() {
                if let Some(slot) = out.get_mut(3 * i + j) {
                    *slot = sys::poll_fd(fd.unwrap_or(-1));
                }
            }
        }
    }

    /// When the loop must come back: the earliest timeout, every 100 ms
    /// while a hook has no pidfd (its end is then found by try_wait), at
    /// once when a queued hook can start.
    pub fn deadline_ns(&self, now_ns: u64) -> Option<u64> {
        if !self.queue.is_empty() && self.running.len() + self.dying.len() < MAX_RUNNING {
            return Some(now_ns);
        }
        // A killed hook that has not been reaped: looked at every 100 ms.
        let dying = (!self.dying.is_empty()).then_some(now_ns + 100_000_000);
        self.running
            .iter()
            .filter_map(|h| match (&h.pidfd, h.timed_out) {
                (Some(_), false) => Some(h.deadline_ns),
                // Killed: its pidfd, in the poll set, says when it is gone
                // (a hook stuck in D state must not make the loop spin).
                (Some(_), true) => None,
                (None, _) => Some(h.deadline_ns.min(now_ns + 100_000_000)),
            })
            .chain(dying)
            .min()
    }

    /// Reads output, kills hooks past their timeout, finishes those that
    /// ended (an event each) and starts queued ones. Never waits.
    pub fn service(&mut self, now_ns: u64, log: &mut Logger) {
        // Killed before they ran: reaped once they have ended.
        self.dying
            .retain_mut(|c| !matches!(c.try_wait(), Ok(Some(_)) | Err(_)));
        let mut i = 0;
        while i < self.running.len() {
            let h = &mut self.running[i];
            h.drain_output(&mut self.scratch);
            if !h.timed_out && now_ns >= h.deadline_ns {
                h.timed_out = true;
                if let Err(e) = sys::kill_process_group(h.child.id(), libc::SIGKILL) {
                    log.warn(
                        "hook_kill_failed",
                        &[
                            ("hook_pid", Val::U(h.child.id().into())),
                            ("error", Val::S(&e.to_string())),
                        ],
                    );
                }
            }
            let ended = match &h.pidfd {
                Some(fd) => {
                    let mut p = [sys::poll_fd(fd.as_raw_fd())];
                    matches!(sys::poll(&mut p, 0), Ok(n) if n > 0)
                }
                // Without a pidfd, try_wait below finds the end.
                None => true,
            };
            if ended {
                // Stragglers of its group go before the leader is reaped,
                // while the group id is still the leader's. Only with a
                // pidfd, which proved the leader ended. ESRCH: nothing was
                // left; any other error is said.
                let stragglers = if h.pidfd.is_some() {
                    sys::kill_process_group(h.child.id(), libc::SIGKILL)
                } else {
                    Ok(())
                };
                if let Err(e) = stragglers {
                    if e.raw_os_error() != Some(libc::ESRCH) {
                        log.warn(
                            "hook_kill_failed",
                            &[
                                ("hook_pid", Val::U(h.child.id().into())),
                                ("error", Val::S(&e.to_string())),
                            ],
                        );
                    }
                }
                match h.child.try_wait() {
                    Ok(Some(status)) => {
                        let h = self.running.swap_remove(i);
                        self.finish(h, status, now_ns, log);
                        continue;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        let h = self.running.swap_remove(i);
                        let error = format!("{}: cannot reap: {e}", h.req.argv[0]);
                        self.stats.failed += 1;
                        failed(log, &h.req, &error);
                        continue;
                    }
                }
            }
            i += 1;
        }
        while self.running.len() + self.dying.len() < MAX_RUNNING {
            let Some(req) = self.queue.pop_front() else {
                break;
            };
            self.start(req, now_ns, log);
        }
    }

    fn finish(
        &mut self,
        mut h: Running,
        status: std::process::ExitStatus,
        now_ns: u64,
        log: &mut Logger,
    ) {
        use std::os::unix::process::ExitStatusExt;
        h.drain_output(&mut self.scratch);
        let l = &h.req.label;
        let duration_ms = now_ns.saturating_sub(h.started_ns) / 1_000_000;
        let timeout_ms = h.req.timeout.as_millis() as u64;
        let stdout = String::from_utf8_lossy(&h.out.bytes);
        let stderr = String::from_utf8_lossy(&h.err.bytes);
        let how = match (status.code(), status.signal()) {
            (Some(c), _) => ("exit_code", Val::I(c.into())),
            (None, Some(s)) => ("signal", Val::I(s.into())),
            (None, None) => ("exit_code", Val::I(-1)),
        };
        let fields = [
            ("pid", Val::U(l.pid.into())),
            ("start_ticks", Val::U(l.start_ticks)),
            ("rule", Val::S(&l.rule)),
            ("job", Val::S(&l.job)),
            ("trigger", Val::S(&l.event)),
            ("program", Val::S(&h.req.argv[0])),
            ("hook_pid", Val::U(h.child.id().into())),
            how,
            ("duration_ms", Val::U(duration_ms)),
            ("timeout_ms", Val::U(timeout_ms)),
            ("stdout", Val::S(&stdout)),
            ("stdout_truncated", Val::Bool(h.out.truncated)),
            ("stderr", Val::S(&stderr)),
            ("stderr_truncated", Val::Bool(h.err.truncated)),
        ];
        if h.timed_out {
            self.stats.timed_out += 1;
            log.warn("hook_timed_out", &fields);
        } else if status.success() {
            self.stats.succeeded += 1;
            log.info("hook_finished", &fields);
        } else {
            self.stats.failed += 1;
            log.warn("hook_finished", &fields);
        }
    }

    /// At daemon stop: kills every running hook's group and reaps it
    /// (SIGKILL ends our own children promptly; waits at most `within`),
    /// and refuses what is queued. Each gets its event.
    pub fn shutdown(&mut self, within: Duration, log: &mut Logger) {
        for req in std::mem::take(&mut self.queue) {
            self.stats.refused += 1;
            refused(log, &req, "reeve is stopping");
        }
        for h in &mut self.running {
            h.timed_out = true;
            h.deadline_ns = 0;
            if let Err(e) = sys::kill_process_group(h.child.id(), libc::SIGKILL) {
                log.warn(
                    "hook_kill_failed",
                    &[
                        ("hook_pid", Val::U(h.child.id().into())),
                        ("error", Val::S(&e.to_string())),
                    ],
                );
            }
        }
        let until = sys::monotonic_ns().saturating_add(within.as_nanos() as u64);
        while !self.running.is_empty() && sys::monotonic_ns() < until {
            self.service(sys::monotonic_ns(), log);
            if !self.running.is_empty() {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        for h in self.running.drain(..) {
            failed(
                log,
                &h.req,
                "still running after SIGKILL when reeve stopped",
            );
        }
    }
}

fn refused(log: &mut Logger, req: &Request, reason: &str) {
    let l = &req.label;
    log.error(
        "hook_refused",
        &[
            ("pid", Val::U(l.pid.into())),
            ("start_ticks", Val::U(l.start_ticks)),
            ("rule", Val::S(&l.rule)),
            ("job", Val::S(&l.job)),
            ("trigger", Val::S(&l.event)),
            (
                "program",
                Val::S(req.argv.first().map_or("", |p| p.as_str())),
            ),
            ("reason", Val::S(reason)),
        ],
    );
}

fn failed(log: &mut Logger, req: &Request, error: &str) {
    let l = &req.label;
    log.error(
        "hook_failed",
        &[
            ("pid", Val::U(l.pid.into())),
            ("start_ticks", Val::U(l.start_ticks)),
            ("rule", Val::S(&l.rule)),
            ("job", Val::S(&l.job)),
            ("trigger", Val::S(&l.event)),
            ("error", Val::S(error)),
        ],
    );
}
