//! reeve under a service manager: a fake NOTIFY_SOCKET (a Unix datagram
//! socket the test binds, by path or abstract name) receives READY=1 after
//! the first scan, WATCHDOG=1 at half of WATCHDOG_USEC and STOPPING=1 on
//! SIGTERM; the shipped systemd unit verifies and asks for all of it.
//!
//! Every daemon here matches only copies of /bin/sleep under a unique name
//! whose parent is this test process; every wait is bounded.

mod common;

use std::fs;
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn me() -> u32 {
    std::process::id()
}

/// Receives datagrams on a Unix socket until `pred` matches one.
fn recv_until(
    sock: &UnixDatagram,
    timeout: Duration,
    mut pred: impl FnMut(&str) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "timed out; notifications so far: {got:?}");
        sock.set_read_timeout(Some(left)).unwrap();
        match sock.recv(&mut buf) {
            Ok(n) => {
                let m = String::from_utf8_lossy(&buf[..n]).into_owned();
                let done = pred(&m);
                got.push(m);
                if done {
                    return got;
                }
            }
            Err(e) => panic!("recv: {e}; notifications so far: {got:?}"),
        }
    }
}

fn notify_daemon(
    dir: &TempDir,
    target: &Target,
    socket: &str,
    watchdog_usec: &str,
) -> (Child, std::path::PathBuf) {
    let cfg = config_for(dir, "enc", &target.name, Some(&[me()]), "auto", "300ms");
    let path = write_config(dir.path(), &cfg);
    let log = dir.join(&format!("reeve-{}.log", random_hex16()));
    let child = spawn_retry(
        Command::new(REEVE)
            .args([
                "watch",
                "--log-format",
                "json",
                "--log-level",
                "debug",
                "--config",
            ])
            .arg(&path)
            .env("NOTIFY_SOCKET", socket)
            .env("WATCHDOG_USEC", watchdog_usec)
            .env_remove("WATCHDOG_PID")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(fs::File::create(&log).unwrap())),
    );
    (child, log)
}

fn sigterm(child: &Child) {
    // SAFETY: plain kill(2) on the pid of a child we have not reaped yet.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
}

/// Kills and reaps a child by its pid on drop.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn notify_socket_gets_ready_watchdog_and_stopping() {
    use std::os::linux::net::SocketAddrExt;
    let dir = TempDir::new("metrics-notify");
    let target = Target::new(dir.path());
    // An abstract socket name, as systemd hands out ('@' in NOTIFY_SOCKET).
    let name = format!("reeve-test-notify-{}", random_hex16());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let sock = UnixDatagram::bind_addr(&addr).unwrap();
    let (child, log) = notify_daemon(&dir, &target, &format!("@{name}"), "400000");
    let mut child = Reaped(child);

    let got = recv_until(&sock, WAIT, |m| m.contains("READY=1"));
    assert_eq!(got.len(), 1, "READY=1 comes first: {got:?}");
    assert!(
        got[0].starts_with("READY=1\nSTATUS=watching 0 processes"),
        "{got:?}"
    );
    // The first scan is done (and logged) before READY is sent.
    let text = fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("\"event\":\"scan\""),
        "READY before the first scan:\n{text}"
    );

    // WATCHDOG_USEC=400 ms asks for a keep-alive every 200 ms.
    let began = Instant::now();
    let mut beats = 0;
    recv_until(&sock, Duration::from_secs(5), |m| {
        beats += usize::from(m.starts_with("WATCHDOG=1\nSTATUS=watching "));
        began.elapsed() >= Duration::from_millis(1500)
    });
    let secs = began.elapsed().as_secs_f64();
    let rate = beats as f64 / secs;
    assert!(
        (3.0..=7.5).contains(&rate),
        "{beats} keep-alives in {secs:.2} s"
    );

    sigterm(&child.0);
    recv_until(&sock, Duration::from_secs(10), |m| {
        m.starts_with("STOPPING=1")
    });
    let status = child.0.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "{}",
        fs::read_to_string(&log).unwrap()
    );
}

#[test]
fn without_watchdog_usec_no_keepalives_are_sent() {
    let dir = TempDir::new("metrics-nowatchdog");
    let target = Target::new(dir.path());
    let sock_path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let (child, _log) = notify_daemon(&dir, &target, sock_path.to_str().unwrap(), "");
    let child = Reaped(child);
    recv_until(&sock, WAIT, |m| m.contains("READY=1"));
    sock.set_read_timeout(Some(Duration::from_millis(1200)))
        .unwrap();
    let mut buf = [0u8; 256];
    match sock.recv(&mut buf) {
        Ok(n) => panic!(
            "unexpected notification {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "{e}"
        ),
    }
    drop(child);
}

#[test]
fn the_systemd_unit_verifies_and_asks_for_notify_and_a_watchdog() {
    let unit = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/reeve.service"))
        .expect("read deploy/reeve.service");
    for line in [
        "Type=notify",
        "NotifyAccess=main",
        "WatchdogSec=30s",
        "Delegate=yes",
    ] {
        assert!(
            unit.lines().any(|l| l == line),
            "{line} missing from the unit"
        );
    }
    if !have_systemd_analyze() {
        return;
    }
    // The unit names the installed path; verify it against the built binary.
    let dir = TempDir::new("metrics-unit");
    let path = write_file(
        dir.path(),
        "reeve.service",
        &unit.replace("/usr/local/bin/reeve", REEVE),
    );
    let out = run_with_timeout(
        Command::new("systemd-analyze").arg("verify").arg(&path),
        WAIT,
    );
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn have_systemd_analyze() -> bool {
    let found = Command::new("systemd-analyze")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    common::require(
        found,
        "systemd-analyze is missing; install Debian's systemd package",
    )
}
