//! SIGHUP with a rule whose limits changed: the groups the rule already
//! governs are given the new limits (or say why not), and their processes
//! are not moved, re-attached or signalled.
//!
//! The host's cgroup v2 tree has no controllers, so here a limit can never
//! be in force: what this shows is that the change reaches the existing
//! group and is reported (`limits_applied`, `limit_failed`). The qemu tier
//! (tests/vm/10-reload.sh) shows the new limit in force.

mod common;

use std::fs;

use common::cgroup::{cgroup_of, watch_config, Subtree};
use common::*;
use serde_json::{json, Value};

#[test]
fn reload_applies_changed_limits_to_existing_groups() {
    // SAFETY: geteuid has no preconditions.
    if !require(unsafe { libc::geteuid() } == 0, "needs root: cgroup moves") {
        return;
    }
    let dir = TempDir::new("reload");
    let sub = Subtree::new();
    let target = Target::new(dir.path());
    let mut procs = ProcGuard::new();
    let extra = json!({"pool": "enc", "limits": {"pids": 64}});
    let config = watch_config(&dir, &sub, "enc", &target.name, extra);
    let mut d = Daemon::start(&config, dir.path());
    d.wait_started();
    let id = target.spawn(&mut procs, "60");
    let attached = d.wait_event("attached", id, WAIT);
    let pool = sub.rel(&sub.pool("enc"));
    assert_eq!(
        cgroup_of(id.pid).as_deref(),
        Some(pool.as_str()),
        "{attached}"
    );

    // The same rule with another pids limit.
    let mut cfg: Value = serde_json::from_slice(&fs::read(&config).unwrap()).unwrap();
    cfg["targets"][0]["limits"] = json!({"pids": 128});
    fs::write(&config, serde_json::to_vec(&cfg).unwrap()).unwrap();
    let mut cursor = d.events_ref().len();
    // SAFETY: kill(2) of the daemon we started, by its pid.
    assert_eq!(unsafe { libc::kill(d.pid as i32, libc::SIGHUP) }, 0);
    let reloaded = d.wait_for("config_reloaded", WAIT, |v| {
        event_name(v) == "config_reloaded"
    });
    assert_eq!(reloaded["jobs_relimited"], 1, "{reloaded}");
    let applied = d.wait_for("limits_applied", WAIT, |v| {
        event_name(v) == "limits_applied" && v["job"] == "pool.enc"
    });
    // No controller on this host: the new limit is not in force, and that
    // is said, never silently dropped.
    assert_eq!(applied["in_force"], false, "{applied}");
    d.wait_for("limit_failed of pool.enc after the reload", WAIT, |v| {
        event_name(v) == "limit_failed" && v["job"] == "pool.enc"
    });
    d.wait_scans(2, WAIT);
    let after = d.since(&mut cursor).to_vec();
    for v in &after {
        assert!(
            !(matches!(event_name(v), "attached" | "adopted" | "exited") && id.matches(v)),
            "the governed process is left alone by the reload: {v}\n{}",
            d.log_tail()
        );
    }
    assert_eq!(cgroup_of(id.pid).as_deref(), Some(pool.as_str()));
    d.stop_ok();
}
