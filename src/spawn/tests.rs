//! `reeve run` against a fixture hierarchy: a directory of regular files
//! standing in for reeve's cgroup root, so what run writes, and what it
//! must not write, can be read back exactly.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::*;
use crate::cgroup::testutil::Fixture;
use crate::store::records::JobRecord;
use crate::units::{CpuLimit, SizeLimit};

/// A fixture root with every controller offered and enabled, and a state
/// directory for the records.
struct Host {
    fx: Fixture,
    h: Hierarchy,
    records: Records,
}

impl Host {
    fn new() -> Host {
        let fx = Fixture::new();
        let (h, state) = fx.host();
        let records = Records::open(&state).unwrap();
        Host { fx, h, records }
    }

    /// A group `name` holding `files`, as the kernel would show them.
    fn group(&self, name: &str, files: &[(&str, &str)]) -> PathBuf {
        for (file, text) in files {
            self.fx.file(&format!("reeve/{name}/{file}"), text);
        }
        self.h.root.join(name)
    }

    fn record_path(&self, name: &str) -> PathBuf {
        self.fx.path.join(format!("state/jobs/{name}.json"))
    }

    fn save(&self, name: &str, limits: &Limits, members: Vec<Member>) {
        let pool = name.starts_with("pool.");
        let mut r = JobRecord::new(name.into(), pool, &self.h.root.join(name), limits, 1);
        r.in_force = true;
        r.members = members;
        self.records.save(&r).unwrap();
    }

    /// Runs `argv` in the foreground; returns the result and the events
    /// as name -> field -> text.
    #[allow(clippy::type_complexity)]
    fn run(
        &self,
        place: Placement,
        limits: Limits,
        argv: &[&str],
    ) -> (
        Result<i32, RunError>,
        Vec<(String, HashMap<String, String>)>,
    ) {
        let spec = RunSpec {
            place,
            limits,
            detach: false,
            argv: argv.iter().map(OsString::from).collect(),
        };
        let mut events = Vec::new();
        let mut on_event = |name: &str, fields: &[(&str, Val<'_>)]| {
            let fields = fields
                .iter()
                .map(|(k, v)| {
                    let text = match v {
                        Val::U(n) => n.to_string(),
                        Val::I(n) => n.to_string(),
                        Val::S(s) => s.to_string(),
                        Val::B(b) => String::from_utf8_lossy(b).into_owned(),
                        Val::Bool(b) => b.to_string(),
                    };
                    (k.to_string(), text)
                })
                .collect();
            events.push((name.to_string(), fields));
        };
        let result = run(&self.h, &self.records, &spec, &mut on_event);
        (result, events)
    }
}

fn memory(bytes: u64) -> Limits {
    Limits {
        memory: Some(SizeLimit::Bytes(bytes)),
        ..Limits::default()
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

#[test]
fn a_running_job_is_refused_before_anything_is_written() {
    let host = Host::new();
    let group = host.group(
        "job.enc1",
        &[
            ("cgroup.procs", "4242\n"),
            ("cgroup.events", "populated 1\nfrozen 0\n"),
            ("memory.max", "max\n"),
            ("memory.high", "max\n"),
            ("memory.swap.max", "max\n"),
        ],
    );
    host.save("job.enc1", &Limits::default(), Vec::new());
    let record = std::fs::read(host.record_path("job.enc1")).unwrap();

    let (result, events) = host.run(Placement::Job("enc1".into()), memory(100 << 20), &["true"]);
    let err = result.unwrap_err();
    assert!(matches!(err, RunError::Busy(_)), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("job.enc1") && text.contains("nothing was changed"),
        "{text}"
    );
    assert!(!text.contains('\n'));
    assert_eq!(
        read(&group.join("memory.max")),
        "max\n",
        "the running job's limit"
    );
    assert_eq!(std::fs::read(host.record_path("job.enc1")).unwrap(), record);
    assert!(events.is_empty(), "{events:?}");
}

#[test]
fn a_group_without_a_record_is_not_reeves_to_use() {
    let host = Host::new();
    let group = host.group(
        "job.foreign",
        &[
            ("cgroup.procs", ""),
            ("cgroup.events", "populated 0\nfrozen 0\n"),
            ("memory.max", "max\n"),
        ],
    );
    let (result, events) = host.run(Placement::Job("foreign".into()), memory(1 << 30), &["true"]);
    let err = result.unwrap_err();
    assert!(matches!(err, RunError::NotOurs(_)), "{err}");
    assert!(err.to_string().contains("no record"), "{err}");
    assert_eq!(read(&group.join("memory.max")), "max\n");
    assert!(!host.record_path("job.foreign").exists());
    assert!(events.is_empty());
}

#[test]
fn an_unreadable_record_is_set_aside_not_replaced() {
    let host = Host::new();
    let group = host.group(
        "job.torn",
        &[
            ("cgroup.procs", ""),
            ("cgroup.events", "populated 0\nfrozen 0\n"),
            ("memory.max", "max\n"),
        ],
    );
    std::fs::write(host.record_path("job.torn"), "{\"version\": 1, \"gro").unwrap();
    let (result, events) = host.run(Placement::Job("torn".into()), memory(1 << 30), &["true"]);
    let err = result.unwrap_err();
    assert!(matches!(err, RunError::Records(_)), "{err}");
    assert!(err.to_string().contains("job.torn"), "{err}");
    assert_eq!(read(&group.join("memory.max")), "max\n");
    assert!(events.is_empty());
}

#[test]
fn new_pool_limits_reset_dropped_ones_and_the_record_holds_the_read_back() {
    let host = Host::new();
    let group = host.group(
        "pool.p",
        &[
            ("cgroup.procs", ""),
            ("cgroup.events", "populated 1\nfrozen 0\n"),
            ("memory.max", "1073741824\n"),
            ("memory.high", "max\n"),
            ("memory.swap.max", "max\n"),
            ("cpu.max", "max 100000\n"),
            ("cpu.weight", "100\n"),
            ("pids.max", "max\n"),
        ],
    );
    // Another member that still runs (this test process: records drop
    // members whose process has ended).
    let me = crate::procfs::ProcReader::open()
        .unwrap()
        .stat(crate::sys::getpid())
        .unwrap()
        .key();
    let other = Member {
        pid: me.pid,
        start_ticks: me.start_ticks,
        original_cgroup: host.h.mount.clone(),
    };
    host.save("pool.p", &memory(1 << 30), vec![other.clone()]);
    let half = Limits {
        cpu: Some(CpuLimit::Millicores(500)),
        ..Limits::default()
    };
    let (result, events) = host.run(Placement::Pool("p".into()), half.clone(), &["true"]);
    assert_eq!(result.unwrap(), 0);
    assert_eq!(
        read(&group.join("memory.max")),
        "max",
        "dropped limit reset"
    );
    assert_eq!(read(&group.join("cpu.max")), "50000 100000");

    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["job_started", "job_ended"]);
    let started = &events[0].1;
    assert_eq!(started["limit_reset"], "memory.max");
    assert_eq!(started["limits"], "cpu=50%");
    assert_eq!(started["record"], "saved");
    assert_eq!(events[1].1["exit_code"], "0");

    let r = host.records.load("pool.p").unwrap().unwrap();
    assert_eq!(r.limits, half, "the record holds what the kernel holds");
    assert!(r.in_force);
    assert_eq!(
        r.members,
        vec![other],
        "the ended command left the pool's record"
    );
    assert!(group.is_dir(), "a pool stays");
}

#[test]
fn joining_a_pool_without_limits_keeps_its_budget() {
    let host = Host::new();
    let group = host.group(
        "pool.q",
        &[
            ("cgroup.procs", ""),
            ("cgroup.events", "populated 1\nfrozen 0\n"),
            ("memory.max", "1073741824\n"),
            ("pids.max", "64\n"),
        ],
    );
    host.save("pool.q", &Limits::default(), Vec::new());
    let (result, events) = host.run(Placement::Pool("q".into()), Limits::default(), &["true"]);
    assert_eq!(result.unwrap(), 0);
    assert_eq!(read(&group.join("memory.max")), "1073741824\n");
    assert_eq!(read(&group.join("pids.max")), "64\n");
    assert!(!events[0].1.contains_key("limit_reset"));
    let r = host.records.load("pool.q").unwrap().unwrap();
    assert_eq!(
        r.limits,
        Limits {
            pids: Some(cgroup::PidsLimit::Count(64)),
            ..memory(1 << 30)
        },
        "the record says what the kernel holds, not what this run asked"
    );
}

#[test]
fn a_refused_pool_run_leaves_the_record_saying_what_the_kernel_holds() {
    let host = Host::new();
    // The pool's group shows no cpu.max: the cpu limit cannot be in force.
    let group = host.group(
        "pool.r",
        &[
            ("cgroup.procs", ""),
            ("cgroup.events", "populated 1\nfrozen 0\n"),
            ("memory.max", "1073741824\n"),
        ],
    );
    host.save("pool.r", &memory(1 << 30), Vec::new());
    let cpu = Limits {
        cpu: Some(CpuLimit::Millicores(500)),
        ..Limits::default()
    };
    let (result, events) = host.run(Placement::Pool("r".into()), cpu, &["true"]);
    let err = result.unwrap_err();
    assert!(matches!(err, RunError::NotInForce { .. }), "{err}");
    assert!(err.to_string().contains("cpu.max"), "{err}");
    assert!(events.is_empty());
    // memory.max was reset before the cpu limit failed: the record says so.
    assert_eq!(read(&group.join("memory.max")), "max");
    let r = host.records.load("pool.r").unwrap().unwrap();
    assert_eq!(r.limits, Limits::default());
    assert!(!r.in_force);
    assert!(
        r.problems.iter().any(|p| p.contains("cpu.max")),
        "{:?}",
        r.problems
    );
}

#[test]
fn errors_are_one_line_with_their_exit_codes() {
    let enoent = RunError::Spawn {
        program: "x".into(),
        err: io::Error::from_raw_os_error(libc::ENOENT),
        cleanup: Some("the new group was not removed: /g: removing: busy".into()),
    };
    assert_eq!(enoent.exit_code(), 127);
    let text = enoent.to_string();
    assert!(text.starts_with("cannot run 'x': "), "{text}");
    assert!(text.ends_with("; the new group was not removed: /g: removing: busy"));
    let eacces = RunError::Spawn {
        program: "x".into(),
        err: io::Error::from_raw_os_error(libc::EACCES),
        cleanup: None,
    };
    assert_eq!(eacces.exit_code(), 126);
    assert_eq!(RunError::NoCommand.exit_code(), 2);
    let id = RunError::Identity {
        pid: 9,
        why: "process is gone".into(),
    };
    assert_eq!(id.exit_code(), 1);
    assert!(id.to_string().starts_with("/proc/9/stat: "));
}
