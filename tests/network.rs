//! Network limits as an operator sees them on this host (no traffic: the
//! VM tier proves the rate). `reeve run --net-tx` loads and attaches the
//! program and runs the command; the same run without the capability for
//! bpf(2) does not start the command, says why and what to do, and leaves
//! no program of reeve's attached.
//!
//! Each test works in its own subtree of /sys/fs/cgroup/unified
//! ([`Subtree`]) and removes it; the capability is dropped with
//! setpriv(1) for the reeve process only.

mod common;

use std::process::Command;
use std::time::Duration;

use common::cgroup::*;
use common::*;

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
