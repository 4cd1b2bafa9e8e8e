//! Metrics and health: the supervision loop renders its counters into a
//! buffer of its own and publishes it; the endpoint's worker threads serve
//! what was last published (`http`).
//!
//! The loop never waits on the endpoint: it swaps its rendered buffer with
//! the published one under a mutex it only *try*-locks. When the HTTP
//! thread holds the mutex (it does so only to copy the body out, never
//! while talking to a client), the loop keeps its buffer, counts a
//! skipped publish and publishes at a later wakeup. `/healthz` is judged
//! by the HTTP thread from the last published facts and its own clock, so
//! a loop that stopped publishing turns unhealthy by itself.

pub mod http;
pub mod text;

use std::fmt;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, TryLockError};

/// A scan that has not completed for this many scan intervals makes the
/// daemon unhealthy.
pub const STALE_SCAN_INTERVALS: u64 = 3;
/// The least time between two publishes of the loop. The published time of
/// the last scan can be this much older than the loop's own, so health
/// allows it on top of the scan intervals.
pub const PUBLISH_EVERY_NS: u64 = 500_000_000;
/// The largest token file read.
const MAX_TOKEN_BYTES: u64 = 4096;

/// What `/healthz` judges, as the loop last published it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HealthFacts {
    /// Monotonic time of the last completed scan; 0 before the first.
    pub last_scan_ns: u64,
    pub scan_interval_ns: u64,
    /// The netlink socket failed and discovery fell back to polling.
    pub netlink_lost: bool,
    /// The last state snapshot write failed.
    pub state_failing: bool,
    /// The audit event log is failing.
    pub audit_failing: bool,
}

impl HealthFacts {
    /// `Ok` when healthy at monotonic time `now_ns`, else a one-line reason.
    pub fn judge(&self, now_ns: u64) -> Result<(), String> {
        if self.last_scan_ns == 0 {
            return Err("no scan has completed yet".to_string());
        }
        let limit = self
            .scan_interval_ns
            .saturating_mul(STALE_SCAN_INTERVALS)
            .saturating_add(PUBLISH_EVERY_NS);
        let age = now_ns.saturating_sub(self.last_scan_ns);
        if age > limit {
            return Err(format!(
                "no scan completed for {} ms (more than {STALE_SCAN_INTERVALS} scan intervals)",
                age / 1_000_000
            ));
        }
        if self.netlink_lost {
            return Err("the netlink socket is lost; discovery polls /proc".to_string());
        }
        if self.state_failing {
            return Err("state snapshot writes are failing".to_string());
        }
        if self.audit_failing {
            return Err("audit event log writes are failing".to_string());
        }
        Ok(())
    }
}

#[derive(Default)]
struct Published {
    body: String,
    facts: HealthFacts,
}

/// What the loop and the HTTP thread share.
pub struct Shared {
    published: Mutex<Published>,
    requests: AtomicU64,
    unauthorized: AtomicU64,
    accept_failures: AtomicU64,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Published> {
        // Published holds plain data that is valid whatever a panicking
        // holder left half-done; serving it beats serving nothing.
        self.published
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Copies the published body into `out`; false before the first
    /// publish.
    fn copy_body(&self, out: &mut String) -> bool {
        let p = self.lock();
        out.clear();
        out.push_str(&p.body);
        !out.is_empty()
    }

    fn health(&self) -> Result<(), String> {
        let facts = self.lock().facts;
        facts.judge(crate::sys::monotonic_ns())
    }

    fn count_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    fn count_unauthorized(&self) {
        self.unauthorized.fetch_add(1, Ordering::Relaxed);
    }

    fn count_accept_failure(&self) {
        self.accept_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Connections the endpoint could not accept (fd exhaustion, a client
    /// gone before it was taken).
    pub fn accept_failures(&self) -> u64 {
        self.accept_failures.load(Ordering::Relaxed)
    }

    /// Requests read whole, and those refused for a missing or wrong token.
    pub fn request_counts(&self) -> (u64, u64) {
        (
            self.requests.load(Ordering::Relaxed),
            self.unauthorized.load(Ordering::Relaxed),
        )
    }
}

/// The endpoint could not be set up.
#[derive(Debug)]
pub enum EndpointError {
    Bind(SocketAddr, std::io::Error),
    Token(PathBuf, String),
    Thread(std::io::Error),
}

impl fmt::Display for EndpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndpointError::Bind(a, e) => write!(
                f,
                "metrics.listen {a}: cannot listen: {e}; choose a free port, or remove the metrics object"
            ),
            EndpointError::Token(p, why) => write!(f, "{}: {why}", p.display()),
            EndpointError::Thread(e) => write!(f, "metrics endpoint: cannot start its thread: {e}"),
        }
    }
}

/// Reads a bearer token: a regular file owned by reeve's user, mode 0600
/// or stricter, one line of printable ASCII.
pub fn read_token(path: &Path) -> Result<Vec<u8>, EndpointError> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let err = |why: String| EndpointError::Token(path.to_path_buf(), why);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| err(format!("cannot open the token file: {e}")))?;
    let meta = file
        .metadata()
        .map_err(|e| err(format!("cannot stat the token file: {e}")))?;
    if !meta.is_file() {
        return Err(err(
            "not a regular file; give the path of a token file".into()
        ));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(err(format!(
            "mode {:04o} lets others read the token; chmod 600 it",
            meta.mode() & 0o7777
        )));
    }
    if meta.uid() != crate::sys::geteuid() {
        return Err(err("owned by another user; chown it to reeve's user".into()));
    }
    let mut bytes = Vec::new();
    file.take(MAX_TOKEN_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| err(format!("cannot read the token file: {e}")))?;
    let token = std::str::from_utf8(&bytes).map(str::trim).unwrap_or("");
    if bytes.len() as u64 > MAX_TOKEN_BYTES
        || token.len() < 16
        || !token.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(err(
            "the token must be 16 to 4096 printable ASCII characters on one line".into(),
        ));
    }
    Ok(token.as_bytes().to_vec())
}

/// The loop's side: its render buffer and the handle to what is served.
pub struct Publisher {
    shared: Arc<Shared>,
    buf: String,
    pub addr: SocketAddr,
    /// Publishes put off because the HTTP thread held the snapshot.
    pub skipped: u64,
    pub published: u64,
}

impl Publisher {
    /// Binds `addr` and starts the endpoint's worker threads.
    pub fn start(addr: SocketAddr, token: Option<Vec<u8>>) -> Result<Publisher, EndpointError> {
        let listener = TcpListener::bind(addr).map_err(|e| EndpointError::Bind(addr, e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| EndpointError::Bind(addr, e))?;
        let shared = Arc::new(Shared {
            published: Mutex::new(Published::default()),
            requests: AtomicU64::new(0),
            unauthorized: AtomicU64::new(0),
            accept_failures: AtomicU64::new(0),
        });
        let token = Arc::new(token);
        // Each worker lowers its own priority before it serves anyone, so a
        // scrape flood takes only the CPU the watch loop leaves; a worker
        // that could not is a start-up error, not a silent competitor.
        let (lowered, results) = std::sync::mpsc::channel();
        for i in 0..http::WORKERS {
            let listener = listener.try_clone().map_err(EndpointError::Thread)?;
            let (shared, token) = (Arc::clone(&shared), Arc::clone(&token));
            let lowered = lowered.clone();
            std::thread::Builder::new()
                .name(format!("reeve-http-{i}"))
                .spawn(move || {
                    let result = crate::sys::lower_thread_priority();
                    let ok = result.is_ok();
                    if lowered.send(result).is_ok() && ok {
                        http::serve(listener, shared, token);
                    }
                })
                .map_err(EndpointError::Thread)?;
        }
        drop(lowered);
        for _ in 0..http::WORKERS {
            match results.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(EndpointError::Thread(e)),
                Err(_) => {
                    return Err(EndpointError::Thread(std::io::Error::other(
                        "an endpoint worker ended before it started serving",
                    )))
                }
            }
        }
        Ok(Publisher {
            shared,
            buf: String::with_capacity(64 * 1024),
            addr,
            skipped: 0,
            published: 0,
        })
    }

    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    /// The render buffer, emptied; fill it, then [`Publisher::publish`].
    pub fn buffer(&mut self) -> &mut String {
        self.buf.clear();
        &mut self.buf
    }

    /// Swaps the rendered buffer in, unless the HTTP thread holds the
    /// snapshot: then nothing waits, the publish is counted as skipped and
    /// false is returned.
    pub fn publish(&mut self, facts: HealthFacts) -> bool {
        let mut p = match self.shared.published.try_lock() {
            Ok(p) => p,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => {
                self.skipped += 1;
                return false;
            }
        };
        std::mem::swap(&mut p.body, &mut self.buf);
        p.facts = facts;
        drop(p);
        self.published += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_reasons() {
        let s = 1_000_000_000;
        let mut f = HealthFacts::default();
        assert!(f.judge(5 * s).unwrap_err().contains("no scan"));
        f.last_scan_ns = 10 * s;
        f.scan_interval_ns = s;
        assert!(f.judge(13 * s).is_ok());
        assert!(f.judge(13 * s + PUBLISH_EVERY_NS).is_ok());
        assert!(f.judge(14 * s).unwrap_err().contains("3 scan intervals"));
        f.state_failing = true;
        assert!(f.judge(11 * s).unwrap_err().contains("state snapshot"));
        f.state_failing = false;
        f.netlink_lost = true;
        assert!(f.judge(11 * s).unwrap_err().contains("netlink"));
    }

    #[test]
    fn publish_never_waits_for_the_reader() {
        let mut p = Publisher::start("127.0.0.1:0".parse().unwrap(), None).unwrap();
        p.buffer().push_str("a 1\n");
        assert!(p.publish(HealthFacts::default()));
        let shared = Arc::clone(&p.shared);
        let held = shared.published.lock().unwrap();
        p.buffer().push_str("a 2\n");
        assert!(!p.publish(HealthFacts::default()));
        assert_eq!(p.skipped, 1);
        drop(held);
        assert!(p.publish(HealthFacts::default()));
        let mut out = String::new();
        assert!(p.shared.copy_body(&mut out));
        assert_eq!(out, "a 2\n");
    }
}
