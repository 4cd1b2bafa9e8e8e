//! Network limits as an operator sees them on this host (no traffic: the
//! VM tier proves the rate). `reeve run --net-tx` loads and attaches the
//! program and runs the command; the same run without the capability for
//! bpf(2) does not start the command, says why and what to do, and leaves
//! no program of reeve's attached. `reeve watch` exports the programs'
//! counters on its metrics endpoint (127.0.0.1, a port the kernel picks).
//!
//! Each test works in its own subtree of /sys/fs/cgroup/unified
//! ([`Subtree`]) and removes it; the capability is dropped with
//! setpriv(1) for the reeve process only.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::cgroup::*;
use common::*;
use serde_json::json;

const QUICK: Duration = Duration::from_secs(20);

/// Skips (or under CI fails) where the host lacks what the test needs.
fn host_ready() -> bool {
    let why = if reeve::sys::geteuid() != 0 {
        "not root"
    } else if Command::new("setpriv").arg("--version").output().is_err() {
        "setpriv(1) (util-linux) is not installed"
    } else {
        return true;
    };
    common::require(false, why)
}

#[test]
fn run_without_the_bpf_capability_fails_closed_and_leaves_no_program() {
    if !host_ready() {
        return;
    }
    let sub = Subtree::new();
    let dir = TempDir::new("net-nocap");
    let cfg = cli_config(&dir, &sub);
    let cfg = cfg.to_str().unwrap();
    let marker = dir.join("ran");
    let script = format!("echo ran > {}", marker.display());

    let out = run_with_timeout(
        Command::new("setpriv")
            .args(["--bounding-set=-all", "--inh-caps=-all", REEVE])
            .args(["run", "--config", cfg, "--job", "nocap", "--net-tx", "2M"])
            .args(["--", "/bin/sh", "-c", &script]),
        QUICK,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        !marker.exists(),
        "the command ran without its limit\n{stderr}"
    );
    assert!(
        stderr.contains("net_tx") && stderr.contains("CAP_BPF"),
        "the error names the limit and the capability\n{stderr}"
    );
    let group = sub.job("nocap");
    if group.exists() {
        assert_eq!(
            reeve::cgroup::net::buckets(&group).unwrap(),
            [None, None],
            "no program of reeve's is left attached"
        );
    }

    // With the capability the same run puts the limit in force and runs.
    let out = run_with_timeout(
        Command::new(REEVE)
            .args(["run", "--config", cfg, "--job", "withcap", "--net-tx", "2M"])
            .args(["--", "/bin/sh", "-c", &script]),
        QUICK,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(marker.exists(), "the command did not run\n{stderr}");
    assert!(
        !sub.job("withcap").exists(),
        "the job group is removed\n{stderr}"
    );
}

/// The body of `GET /metrics` from `addr`, or why not.
fn metrics(addr: SocketAddr) -> Result<String, String> {
    let e = |e: std::io::Error| e.to_string();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(e)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(e)?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: reeve\r\nConnection: close\r\n\r\n")
        .map_err(e)?;
    let mut body = String::new();
    s.read_to_string(&mut body).map_err(e)?;
    Ok(body)
}

#[test]
fn watch_exports_the_counters_of_a_network_limited_job() {
    if !host_ready() {
        return;
    }
    let sub = Subtree::new();
    let dir = TempDir::new("net-metrics");
    let mut procs = ProcGuard::new();
    let target = Target::new(dir.path());
    let me = [std::process::id()];
    let mut cfg = config_for(&dir, "enc", &target.name, Some(&me), "auto", "200ms");
    cfg["targets"][0]["limits"] = json!({"net_tx": "1G"});
    cfg["cgroup"] = json!({"root": sub.root()});
    cfg["metrics"] = json!({"listen": "127.0.0.1:0"});
    let path = write_config(dir.path(), &cfg);
    let mut d = Daemon::start(&path, dir.path());
    let ev = d.wait_for("metrics_listening", WAIT, |v| {
        event_name(v) == "metrics_listening"
    });
    let addr: SocketAddr = ev["address"].as_str().unwrap().parse().unwrap();
    let id = target.spawn(&mut procs, "30");
    let attached = d.wait_event("attached", id, WAIT);
    assert_eq!(attached["in_force"], true, "{attached}");
    let job = attached["job"].as_str().unwrap().to_string();

    let series = |name: &str, dir: &str| format!("{name}{{group=\"{job}\",direction=\"{dir}\"}} ");
    let passed = series("reeve_job_net_passed_bytes_total", "tx");
    let deadline = Instant::now() + WAIT;
    let body = loop {
        let body = metrics(addr).unwrap_or_default();
        if body.contains(&passed) {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "no {passed}within {WAIT:?}:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        body.contains(&series("reeve_job_net_dropped_bytes_total", "tx")),
        "{body}"
    );
    // No net_rx limit: no rx series.
    assert!(
        !body.contains(&series("reeve_job_net_passed_bytes_total", "rx")),
        "{body}"
    );
    procs.kill_all();
    d.stop_ok();
}
