//! SIGHUP: re-reading the config file. A file that does not load changes
//! nothing; settings sized or opened once at start are named when they
//! differ and keep their running values until a restart. New rules apply
//! to new discoveries; a rule's changed limits are queued for the groups it
//! already governs (`autoattach/relimit.rs`), which are otherwise left
//! alone.

use super::{autoattach, Daemon};
use crate::config::Config;
use crate::log::Val;
use crate::users::UserDb;

/// The settings a reload cannot change, named as the config writes them,
/// that differ between the running config and `new`. They are sized or
/// opened once at start: the slot table, the netlink socket, the state
/// directory and its lock, the audit log, the cgroup hierarchy.
fn restart_only_changes(running: &Config, new: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    if running.state_dir != new.state_dir {
        out.push("state_dir");
    }
    if running.cgroup_root != new.cgroup_root {
        out.push("cgroup.root");
    }
    if running.audit != new.audit {
        out.push("audit");
    }
    if running.capacity != new.capacity {
        out.push("capacity");
    }
    if running.discovery.mode != new.discovery.mode {
        out.push("discovery.mode");
    }
    if running.metrics != new.metrics {
        out.push("metrics");
    }
    if running.jobs != new.jobs {
        out.push("jobs");
    }
    if running.heartbeat != new.heartbeat {
        out.push("heartbeat");
    }
    out
}

impl Daemon {
    /// SIGHUP: re-read the config file. A bad file changes nothing.
    pub(super) fn reload(&mut self) {
        let Some(path) = self.config_path.clone() else {
            self.log.info(
                "config_reload_skipped",
                &[(
                    "reason",
                    Val::S("running on the embedded defaults; there is no file to re-read"),
                )],
            );
            return;
        };
        // Without a readable /etc/passwd (a scratch container) user names
        // cannot resolve: a config naming one fails with an error that names
        // the user, and numeric uids work. Nothing is lost by going on.
        let users = UserDb::load().unwrap_or_else(|_| UserDb::from_passwd(""));
        let new = match Config::load(&path, &users) {
            Ok(c) => c,
            Err(e) => {
                self.log.error(
                    "config_reload_failed",
                    &[
                        ("path", Val::S(&path.display().to_string())),
                        ("error", Val::S(&e.to_string())),
                        ("action", Val::S("keeping the running config")),
                    ],
                );
                return;
            }
        };
        let queued = self.to_attach.iter().chain(&self.ended).map(|w| w.1);
        if let Err(e) = self.discovery.set_rules(&new.targets, queued) {
            self.log.error(
                "config_reload_failed",
                &[
                    ("path", Val::S(&path.display().to_string())),
                    ("error", Val::S(&e.to_string())),
                    (
                        "action",
                        Val::S("keeping the running config; restart reeve"),
                    ),
                ],
            );
            return;
        }
        let fixed = restart_only_changes(&self.config, &new);
        if !fixed.is_empty() {
            self.log.warn(
                "config_reload_partial",
                &[
                    ("settings", Val::S(&fixed.join(","))),
                    (
                        "effect",
                        Val::S("these keep their running values until reeve restarts"),
                    ),
                ],
            );
        }
        self.log.set(
            self.overrides.format.unwrap_or(new.log.format),
            self.overrides.level.unwrap_or(new.log.level),
        );
        let rules = new.targets.len();
        // Existing jobs whose rule now asks for other limits get them
        // (written, read back, recorded) from the next wakeup on.
        let relimit = match self.auto.as_mut() {
            Some(gov) => gov.queue_relimit(&self.config.targets, &new.targets),
            None => 0,
        };
        let old = &self.config;
        self.config = Config {
            capacity: old.capacity,
            discovery: crate::config::Discovery {
                mode: old.discovery.mode,
                scan_interval: new.discovery.scan_interval,
                rescan_interval: new.discovery.rescan_interval,
            },
            state_dir: old.state_dir.clone(),
            cgroup_root: old.cgroup_root.clone(),
            audit: old.audit.clone(),
            metrics: old.metrics.clone(),
            jobs: old.jobs.clone(),
            heartbeat: old.heartbeat.clone(),
            ..new
        };
        self.need_deep = true;
        self.live
            .reloaded(&self.config, &self.discovery, &mut self.log);
        if self.auto.is_none() {
            // Rules that govern may be new in this config.
            self.auto = autoattach::AutoAttach::new(&self.config, &mut self.log);
        }
        self.log.info(
            "config_reloaded",
            &[
                ("path", Val::S(&path.display().to_string())),
                ("rules", Val::U(rules as u64)),
                ("jobs_relimited", Val::U(relimit as u64)),
            ],
        );
    }
}
