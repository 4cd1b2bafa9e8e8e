//! The metric families the daemon exports, rendered from what the loop
//! holds. docs/METRICS.md lists every name written here; a per-job family
//! has one series per governed job or pool, labelled `group` with the
//! group's name (`job` is the label Prometheus gives every target), so its
//! size is bounded by the slot table's capacity.

use super::observe::NETLINK_KINDS;
use super::Daemon;
use crate::metrics::text::Exposition;
use crate::metrics::Publisher;

impl Daemon {
    pub(super) fn render(&mut self, e: &mut Exposition<'_>, p: &Publisher) {
        let o = &mut self.obs;
        e.family("reeve_build_info", "gauge", "reeve's version; always 1.");
        e.sample(
            "reeve_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))],
            1.0,
        );
        e.single(
            "reeve_start_time_seconds",
            "gauge",
            "When this reeve started, in seconds since the epoch.",
            o.start_time_s,
        );
        let (rss, cpu, fds) = super::observe::own_usage(&mut o.file);
        let own = [
            (
                "reeve_resident_memory_bytes",
                "gauge",
                "reeve's resident memory.",
                rss,
            ),
            (
                "reeve_cpu_seconds_total",
                "counter",
                "CPU time reeve used (user and system).",
                cpu,
            ),
            (
                "reeve_open_fds",
                "gauge",
                "File descriptors reeve holds open.",
                fds,
            ),
        ];
        for (name, kind, help, v) in own {
            if let Some(v) = v {
                e.single(name, kind, help, v);
            }
        }
        e.histogram(
            "reeve_loop_iteration_seconds",
            "Work the supervision loop did per wakeup, from poll's return to the end of the wakeup's work.",
            &o.loop_seconds,
        );

        self.render_beats(e);
        let o = &mut self.obs;

        // Discovery.
        let st = self.discovery.stats();
        e.family("reeve_scans_total", "counter", "Completed /proc scans by kind (deep reads every process; a deep scan after the first is a rescan).");
        e.sample("reeve_scans_total", &[("kind", "deep")], o.scans[0] as f64);
        e.sample(
            "reeve_scans_total",
            &[("kind", "steady")],
            o.scans[1] as f64,
        );
        e.single(
            "reeve_scans_skipped_total",
            "counter",
            "Safety-net rescans not made because the kernel's fork and thread counts showed no process created or ended since the last scan.",
            o.scans_skipped as f64,
        );
        e.histogram(
            "reeve_scan_duration_seconds",
            "How long each /proc scan took.",
            &o.scan_seconds,
        );
        let c = |e: &mut Exposition<'_>, n, h, v: u64| e.single(n, "counter", h, v as f64);
        let g = |e: &mut Exposition<'_>, n, h, v: f64| e.single(n, "gauge", h, v);
        g(
            e,
            "reeve_scan_processes_found",
            "Live tracked processes the last scan saw.",
            o.last_found.into(),
        );
        g(
            e,
            "reeve_tracked_processes",
            "Live processes tracked now.",
            self.discovery.live().into(),
        );
        c(
            e,
            "reeve_discovered_total",
            "Target processes discovered (new attachments start here).",
            st.discovered,
        );
        e.histogram(
            "reeve_discovery_latency_seconds",
            "Time from the kernel's timestamp of a proc connector event (an exec, a rename, a target's fork) to discovery's decision that its process is a target. Targets found by a /proc scan have no event time and are not counted here.",
            &o.discovery_latency,
        );
        c(
            e,
            "reeve_exited_total",
            "Tracked processes seen to end.",
            st.exited,
        );
        c(
            e,
            "reeve_proc_read_errors_total",
            "/proc reads that failed for a reason other than the process leaving.",
            st.read_errors,
        );
        c(
            e,
            "reeve_seen_overflow_total",
            "Pids not indexed because the seen-set was full.",
            st.seen_overflow,
        );
        e.family(
            "reeve_netlink_events_total",
            "counter",
            "Proc connector events received, by type.",
        );
        for (kind, n) in NETLINK_KINDS.iter().zip(o.netlink_events) {
            e.sample("reeve_netlink_events_total", &[("type", kind)], n as f64);
        }
        c(
            e,
            "reeve_netlink_overruns_total",
            "Times the kernel dropped proc connector events (each triggers a rescan).",
            o.overruns,
        );
        c(
            e,
            "reeve_netlink_foreign_total",
            "Datagrams on the proc connector socket from a sender other than the kernel, skipped.",
            self.connector.as_ref().map_or(0, |c| c.foreign()),
        );
        g(
            e,
            "reeve_netlink_up",
            "1 while discovery listens to the proc connector, 0 when it polls /proc.",
            if self.connector.is_some() { 1.0 } else { 0.0 },
        );

        // The slot table.
        let t = self.discovery.tracked().stats();
        g(
            e,
            "reeve_table_capacity",
            "Slots in the table of tracked identities (the config's capacity).",
            self.discovery.tracked().capacity() as f64,
        );
        c(
            e,
            "reeve_table_capacity_exceeded_total",
            "Targets refused because the table was full.",
            t.refused_full,
        );
        c(
            e,
            "reeve_table_probe_exhausted_total",
            "Targets refused because the bounded probe found no slot.",
            t.refused_probe,
        );
        c(
            e,
            "reeve_table_evictions_total",
            "Ended identities evicted to make room.",
            t.evictions,
        );
        c(
            e,
            "reeve_table_invariant_violations_total",
            "Inconsistencies the table found in itself (each is repaired by a rebuild).",
            t.inconsistencies,
        );
        c(
            e,
            "reeve_lifecycle_refused_total",
            "Lifecycle steps refused because the identity was not in a state that allows them.",
            st.illegal_steps,
        );

        // Governance and the jobs.
        let (jobs, deferred) = match self.auto.as_ref() {
            Some(a) => (Some(&a.view.jobs), a.deferred),
            None => (None, 0),
        };
        g(
            e,
            "reeve_governance_enabled",
            "1 when some rule governs and governance is set up.",
            if jobs.is_some() { 1.0 } else { 0.0 },
        );
        c(
            e,
            "reeve_attach_deferrals_total",
            "Attach or cleanup work put back because the records lock was held.",
            deferred,
        );
        g(
            e,
            "reeve_attach_queued",
            "Identities waiting to be attached.",
            self.to_attach.len() as f64,
        );
        let jobs = jobs.map(|j| j.iter()).into_iter().flatten();
        let not_in_force = jobs.clone().filter(|(_, j)| !j.in_force).count();
        g(
            e,
            "reeve_jobs",
            "Governed jobs and pools.",
            jobs.clone().count() as f64,
        );
        g(
            e,
            "reeve_jobs_limits_not_in_force",
            "Governed jobs whose limits are not all in force.",
            not_in_force as f64,
        );
        e.family(
            "reeve_job_limits_in_force",
            "gauge",
            "1 when every limit of the job is in force, else 0.",
        );
        for (name, j) in jobs.clone() {
            e.sample(
                "reeve_job_limits_in_force",
                &[("group", name)],
                if j.in_force { 1.0 } else { 0.0 },
            );
        }
        e.family(
            "reeve_job_limit_failures",
            "gauge",
            "Limits of the job that could not be applied or verified.",
        );
        for (name, j) in jobs.clone() {
            e.sample(
                "reeve_job_limit_failures",
                &[("group", name)],
                j.problems.len() as f64,
            );
        }
        // The configured limits, so dashboards can set usage against them.
        e.family(
            "reeve_job_cpu_limit_cores",
            "gauge",
            "The job's CPU limit in CPUs (absent when it has none).",
        );
        for (name, j) in jobs.clone() {
            if let Some(crate::units::CpuLimit::Millicores(m)) = j.limits.cpu {
                e.sample(
                    "reeve_job_cpu_limit_cores",
                    &[("group", name)],
                    m as f64 / 1000.0,
                );
            }
        }
        e.family(
            "reeve_job_memory_max_bytes",
            "gauge",
            "The job's memory limit (absent when it has none).",
        );
        for (name, j) in jobs.clone() {
            if let Some(crate::units::SizeLimit::Bytes(b)) = j.limits.memory {
                e.sample("reeve_job_memory_max_bytes", &[("group", name)], b as f64);
            }
        }
        type Pick = fn(&super::observe::JobSample) -> Option<u64>;
        let per_job: [(&str, &str, &str, f64, Pick); 6] = [
            (
                "reeve_job_cpu_usage_seconds_total",
                "counter",
                "CPU time of the job's cgroup (cpu.stat usage_usec).",
                1e-6,
                |s| s.cpu_usage_us,
            ),
            (
                "reeve_job_cpu_throttled_seconds_total",
                "counter",
                "Time the job was throttled by its CPU quota (cpu.stat throttled_usec).",
                1e-6,
                |s| s.cpu_throttled_us,
            ),
            (
                "reeve_job_memory_current_bytes",
                "gauge",
                "Memory the job's cgroup uses (memory.current).",
                1.0,
                |s| s.memory_current,
            ),
            (
                "reeve_job_memory_peak_bytes",
                "gauge",
                "The most memory the job's cgroup used (memory.peak).",
                1.0,
                |s| s.memory_peak,
            ),
            (
                "reeve_job_oom_kills_total",
                "counter",
                "Processes of the job killed by the OOM killer (memory.events oom_kill).",
                1.0,
                |s| s.oom_kills,
            ),
            (
                "reeve_job_pids_current",
                "gauge",
                "Tasks in the job's cgroup (pids.current).",
                1.0,
                |s| s.pids_current,
            ),
        ];
        for (name, kind, help, scale, pick) in per_job {
            e.family(name, kind, help);
            for (job, s) in &o.jobs {
                if let Some(v) = pick(s) {
                    e.sample(name, &[("group", job)], v as f64 * scale);
                }
            }
        }

        // Network limits: per direction, what the job's programs passed
        // and dropped.
        let net = [
            (
                "reeve_job_net_passed_bytes_total",
                "Bytes the job's network limit passed (IP packets, headers included).",
            ),
            (
                "reeve_job_net_dropped_bytes_total",
                "Bytes the job's network limit dropped for being over budget.",
            ),
        ];
        for (i, (name, help)) in net.into_iter().enumerate() {
            e.family(name, "counter", help);
            for (job, s) in &o.jobs {
                for (dir, v) in crate::cgroup::net::Direction::BOTH.iter().zip(s.net) {
                    if let Some((passed, dropped)) = v {
                        let direction = dir.key().trim_start_matches("net_");
                        let bytes = [passed, dropped][i];
                        e.sample(
                            name,
                            &[("group", job), ("direction", direction)],
                            bytes as f64,
                        );
                    }
                }
            }
        }

        // The store.
        let per = &self.persist;
        c(
            e,
            "reeve_state_saves_total",
            "State snapshots written.",
            per.saves,
        );
        c(
            e,
            "reeve_state_save_failures_total",
            "State snapshot writes that failed.",
            per.save_failures,
        );
        e.histogram(
            "reeve_state_save_seconds",
            "How long each state snapshot took to serialise and write (off the loop, on the reeve-save thread).",
            &per.save_seconds,
        );
        c(
            e,
            "reeve_audit_append_failures_total",
            "Audit events that could not be appended at all.",
            self.log.audit_failures(),
        );
        g(
            e,
            "reeve_audit_last_seq",
            "Sequence number of the last audit event appended.",
            self.log.last_audit_seq() as f64,
        );
        if let Some(a) = self.log.audit_mut() {
            g(
                e,
                "reeve_audit_queued_events",
                "Audit events waiting in memory to be written.",
                a.pending() as f64,
            );
            c(
                e,
                "reeve_audit_fdatasyncs_total",
                "fdatasync calls on the audit log.",
                a.syncs(),
            );
            c(
                e,
                "reeve_audit_sync_failures_total",
                "fdatasync calls on the audit log that failed.",
                a.sync_failures(),
            );
            c(
                e,
                "reeve_audit_write_refusals_total",
                "Audit writes the disk refused (each left its event queued).",
                a.refusals(),
            );
            c(
                e,
                "reeve_audit_lost_events_total",
                "Audit events dropped because the queue was full.",
                a.lost(),
            );
        }
        c(
            e,
            "reeve_log_write_failures_total",
            "Log lines that could not be written to stderr.",
            self.log.failed_writes(),
        );
        c(
            e,
            "reeve_log_dropped_total",
            "Log lines dropped because stderr was not read.",
            self.log.log_dropped(),
        );

        // The endpoint and the service manager.
        let (requests, unauthorized) = p.shared().request_counts();
        c(
            e,
            "reeve_metrics_requests_total",
            "HTTP requests read whole by the metrics endpoint.",
            requests,
        );
        c(
            e,
            "reeve_metrics_unauthorized_total",
            "HTTP requests refused for a missing or wrong token.",
            unauthorized,
        );
        c(
            e,
            "reeve_metrics_accept_failures_total",
            "Connections the metrics endpoint could not accept.",
            p.shared().accept_failures(),
        );
        c(
            e,
            "reeve_metrics_publish_skipped_total",
            "Publishes put off because the endpoint was copying the last one.",
            p.skipped,
        );
        c(
            e,
            "reeve_notify_failures_total",
            "Service manager notifications that could not be sent.",
            self.obs.notify.failures,
        );
        self.render_jobs(e);
        self.live.render(e);
    }
}
