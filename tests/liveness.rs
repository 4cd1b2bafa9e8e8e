//! Heartbeats as a user sees them: real Unix datagram sockets in a private
//! temporary directory, the kernel's credentials, and one `reeve watch`
//! whose rule matches only a uniquely named copy of reeve that this test
//! starts (`reeve beat --every`), filtered by this test's pid as parent.
//!
//! The listener-level tests drive `reeve::liveness::intake` directly with
//! frames this process (or a child it spawned) sends.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{event_name, Ident, ProcGuard, TempDir};
use reeve::liveness::beats::{Admission, Beats, Origin, Rates, Reject};
use reeve::liveness::frame::{encode, Frame, Status, PAYLOAD_LEN};
use reeve::liveness::{identify_with, intake, Listener, ProcDir, Refused, Senders, Taken};
use reeve::procfs::{ProcKey, ProcReader};
use reeve::sys;
use serde_json::json;

/// Every sender may beat; identities are read from /proc.
struct Open(ProcReader, ProcDir);

impl Senders for Open {
    fn proc_inode(&mut self, pid: u32) -> Option<u64> {
        self.1.inode(pid)
    }
    fn identify(&mut self, pid: u32) -> Option<(ProcKey, u64)> {
        identify_with(&mut self.0, pid)
    }
    fn admit(&mut self, _: Origin) -> Option<Admission> {
        Some(Admission {
            rule: None,
            timeout_ns: 0,
            by_uid: true,
        })
    }
}

struct Bench {
    _dir: TempDir,
    path: std::path::PathBuf,
    listener: Listener,
    beats: Beats,
    senders: Open,
    tx: std::os::fd::OwnedFd,
}

impl Bench {
    fn new(tag: &str) -> Bench {
        let dir = TempDir::new(tag);
        let path = dir.join("hb.sock");
        let listener = Listener::open(&path, 0o600, None).unwrap();
        let rates = Rates {
            per_pid: 1000,
            global: 100_000,
        };
        Bench {
            path,
            listener,
            beats: Beats::new(64, rates, sys::monotonic_ns()),
            senders: Open(ProcReader::open().unwrap(), ProcDir::open().unwrap()),
            tx: sys::unix_dgram_client().unwrap(),
            _dir: dir,
        }
    }

    fn send(&self, bytes: &[u8]) {
        let c = std::ffi::CString::new(self.path.to_str().unwrap()).unwrap();
        assert_eq!(sys::unix_send_to(&self.tx, &c, bytes).unwrap(), bytes.len());
    }

    /// Takes the one datagram that waits.
    fn take(&mut self) -> Result<Taken, Refused> {
        let mut buf = [0u8; 64];
        let mut control = [0u8; sys::CMSG_SPACE];
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(d) = self.listener.recv(&mut buf, &mut control).unwrap() {
                return intake(&mut self.beats, &d, &mut self.senders, sys::monotonic_ns());
            }
            assert!(Instant::now() < deadline, "no datagram arrived");
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

fn frame(pid: u32, nonce: u64) -> [u8; 64] {
    encode(&Frame {
        status: Status::Ok,
        pid,
        nonce,
        timestamp_ns: 0,
        payload: [0; PAYLOAD_LEN],
    })
}

#[test]
fn spoofed_frames_are_rejected_and_counted() {
    let mut b = Bench::new("beat-spoof");
    let mut guard = ProcGuard::new();
    let child = guard.push(
        Command::new("/bin/sleep")
            .arg("30")
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let me = std::process::id();
    // Another process's pid (a child of this test), then pid 1's number.
    for pid in [child, 1] {
        b.send(&frame(pid, 1));
        let r = b.take().unwrap_err();
        assert_eq!(r.reason, Reject::Spoof, "frame for pid {pid}");
        assert_eq!(r.pid, me, "the kernel names the real sender");
    }
    b.send(&frame(me, 1));
    let t = b.take().unwrap();
    assert_eq!(t.origin.key.pid, me);
    assert_eq!(
        Some(t.origin.key.start_ticks),
        common::read_start_ticks(me),
        "keyed by pid and start time"
    );
    assert_eq!(b.beats.stats.rejected(Reject::Spoof), 2);
    assert_eq!(b.beats.stats.accepted, 1);
    // Garbage is refused for its own reason, with no /proc read.
    b.send(b"short");
    assert_eq!(b.take().unwrap_err().reason, Reject::Size);
    let mut bad = frame(me, 2);
    bad[0] = b'X';
    b.send(&bad);
    assert_eq!(b.take().unwrap_err().reason, Reject::Magic);
    let mut v2 = frame(me, 2);
    v2[4] = 2;
    b.send(&v2);
    assert_eq!(b.take().unwrap_err().reason, Reject::Version);
    assert_eq!(b.beats.stats.rejected(Reject::Size), 1);
}

#[test]
fn replayed_and_out_of_order_nonces_are_rejected() {
    let mut b = Bench::new("beat-nonce");
    let me = std::process::id();
    let steps = [
        (100, Ok(())),
        (100, Err(Reject::Replay)),
        (99, Err(Reject::OutOfOrder)),
        (101, Ok(())),
        (50, Err(Reject::OutOfOrder)),
        (102, Ok(())),
    ];
    for (nonce, want) in steps {
        b.send(&frame(me, nonce));
        let got = b.take().map(|_| ()).map_err(|r| r.reason);
        assert_eq!(got, want, "nonce {nonce}");
    }
    assert_eq!(b.beats.stats.rejected(Reject::Replay), 1);
    assert_eq!(b.beats.stats.rejected(Reject::OutOfOrder), 2);
    assert_eq!(b.beats.stats.accepted, 3);
}

#[test]
fn the_c_example_compiles_and_its_beat_is_accepted() {
    let cc = Command::new("cc").arg("--version").output();
    common::require(
        cc.is_ok_and(|o| o.status.success()),
        "a C compiler (`cc`) to build docs/clients/beat.c",
    );
    let mut b = Bench::new("beat-c");
    let exe = b._dir.join("beat");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/clients/beat.c");
    let out = Command::new("cc")
        .args(["-Wall", "-Werror", "-O2", "-o"])
        .arg(&exe)
        .arg(&src)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut guard = ProcGuard::new();
    // Three beats 300 ms apart: the sender is alive when its first is read.
    let pid = guard.push(
        Command::new(&exe)
            .arg(&b.path)
            .args(["degraded", "3", "300"])
            .spawn()
            .unwrap(),
    );
    let t = b.take().unwrap();
    assert_eq!(t.origin.key.pid, pid);
    assert_eq!(t.frame.status, Status::Degraded);
    assert!(t.accepted.new);
    let second = b.take().unwrap();
    assert_eq!(second.frame.nonce, t.frame.nonce + 1);
    let status = guard.wait_exit(pid, Duration::from_secs(10)).unwrap();
    assert!(status.success());
}

/// A copy of reeve under a unique name, so the rule matches only it.
fn beater(dir: &TempDir) -> std::path::PathBuf {
    let path = dir.join(&common::unique_name());
    common::copy_exe(Path::new(common::REEVE), &path);
    path
}

#[test]
fn a_stall_fires_once_per_silence_run_and_resumed_follows_through_watch() {
    let dir = TempDir::new("beat-watch");
    let exe = beater(&dir);
    let name = exe.file_name().unwrap().to_str().unwrap().to_string();
    let socket = dir.join("hb.sock");
    let me = std::process::id();
    let config = json!({
        "targets": [{
            "name": "beating",
            "match": {"exe": [name]},
            "filter": {"parent_pids": [me]},
            // Long enough that a loaded 2-core host never starves a
            // beating sender past it; the bench measures latency closely.
            "beat_timeout": "800ms",
        }],
        "discovery": {"mode": "auto", "scan_interval": "100ms", "rescan_interval": "100ms"},
        "capacity": 256,
        "state_dir": common::state_dir(&dir),
        "heartbeat": {"socket": socket.to_str().unwrap(), "mode": "0600", "capacity": 64},
    });
    let config = common::write_config(dir.path(), &config);
    let mut d = common::Daemon::start(&config, dir.path());
    let started = d.wait_started();
    let instance = started["instance"].as_str().unwrap_or("").to_string();
    assert_eq!(instance.len(), 16, "{started}");
    assert!(instance.bytes().all(|b| b.is_ascii_hexdigit()), "{started}");
    d.wait_for("heartbeat_listening", common::WAIT, |v| {
        event_name(v) == "heartbeat_listening"
    });

    let mut guard = ProcGuard::new();
    let child = common::spawn_retry(
        Command::new(&exe)
            .args(["beat", "--every", "50ms", "--socket"])
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null()),
    );
    let pid = guard.push(child);
    let ident = Ident {
        pid,
        start_ticks: common::read_start_ticks(pid).unwrap(),
    };
    d.wait_event("discovered", ident, common::WAIT);
    // Beating: no stall for several timeouts.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(d.about("stalled", ident), 0, "{}", d.log_tail());

    let signal = |sig| {
        // SAFETY: kill(2) on the pid of a child this test spawned and has
        // not reaped (the guard holds it).
        assert_eq!(unsafe { libc::kill(pid as i32, sig) }, 0);
    };
    let stopped_at = Instant::now();
    signal(libc::SIGSTOP);
    let stalled = d.wait_event("stalled", ident, common::WAIT);
    let latency = stopped_at.elapsed();
    assert_eq!(stalled["cause"], "heartbeat", "{stalled}");
    assert_eq!(stalled["rule"], "beating", "{stalled}");
    assert!(stalled["silent_ms"].as_u64().unwrap() >= 800, "{stalled}");
    assert_eq!(stalled["beat_timeout_ms"], 800, "{stalled}");
    assert!(
        latency < Duration::from_millis(800 + 1200),
        "stall reported {latency:?} after the sender stopped (timeout 800ms)"
    );
    // Silence goes on for several timeouts: still one `stalled`.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(d.about("stalled", ident), 1, "{}", d.log_tail());
    assert_eq!(d.about("resumed", ident), 0);

    signal(libc::SIGCONT);
    let resumed = d.wait_event("resumed", ident, common::WAIT);
    assert_eq!(resumed["cause"], "heartbeat", "{resumed}");
    assert!(resumed["silent_ms"].as_u64().unwrap() >= 2500, "{resumed}");

    // A new silence run is a new stall.
    signal(libc::SIGSTOP);
    d.wait_until("a second stalled", common::WAIT, |d| {
        d.about("stalled", ident) == 2
    });
    signal(libc::SIGCONT);
    d.wait_until("a second resumed", common::WAIT, |d| {
        d.about("resumed", ident) == 2
    });

    // SIGTERM: `reeve beat` says stopping and exits; that silence is no stall.
    signal(libc::SIGTERM);
    let status = guard.wait_exit(pid, Duration::from_secs(10)).unwrap();
    assert!(status.success(), "{status:?}");
    std::thread::sleep(Duration::from_millis(2000));
    assert_eq!(d.about("stalled", ident), 2, "{}", d.log_tail());
    d.stop_ok();
    let stopped = d
        .events()
        .into_iter()
        .find(|v| event_name(v) == "stopped")
        .unwrap();
    assert_eq!(stopped["instance"], instance.as_str());
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(Path::new(&common::state_dir(&dir)).join("state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["instance"], instance.as_str());
    assert!(!socket.exists(), "a clean stop removes the socket");
}

#[test]
fn watch_refuses_a_socket_path_that_is_not_a_socket() {
    let dir = TempDir::new("beat-notsock");
    let socket = common::write_file(dir.path(), "plain", "data");
    let config = json!({
        "targets": [{"name": "x", "match": {"exe": [common::unique_name()]}}],
        "discovery": {"mode": "poll"},
        "state_dir": common::state_dir(&dir),
        "heartbeat": {"socket": socket.to_str().unwrap()},
    });
    let config = common::write_config(dir.path(), &config);
    let out = common::run_with_timeout(
        Command::new(common::REEVE)
            .args(["watch", "--config"])
            .arg(&config),
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("exists and is not a socket"), "{err}");
    assert_eq!(std::fs::read(&socket).unwrap(), b"data");
}

#[test]
fn reeve_beat_says_what_is_wrong_in_one_line() {
    let dir = TempDir::new("beat-cli");
    let missing = dir.join("none.sock");
    let out = common::reeve(&["beat", "--socket", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("cannot send a beat"), "{err}");
    assert!(err.contains("is `reeve watch` running"), "{err}");
    let out = common::reeve(&["beat", "--status", "sleepy"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown status 'sleepy'"));
    let out = common::reeve(&["beat", "--every", "1ms"]);
    assert_eq!(out.status.code(), Some(2));
    // A one-shot beat to a listening socket is sent and exits 0.
    let path = dir.join("hb.sock");
    let listener = Listener::open(&path, 0o600, None).unwrap();
    let out = common::reeve(&[
        "beat",
        "--status",
        "degraded",
        "--note",
        "frame=42",
        "--socket",
        path.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut buf = [0u8; 64];
    let mut control = [0u8; sys::CMSG_SPACE];
    let d = listener.recv(&mut buf, &mut control).unwrap().unwrap();
    let f = reeve::liveness::frame::decode(d.bytes).unwrap();
    assert_eq!(f.status, Status::Degraded);
    assert_eq!(&f.payload[..8], b"frame=42");
    assert_eq!(d.creds.unwrap().pid, f.pid);
}
