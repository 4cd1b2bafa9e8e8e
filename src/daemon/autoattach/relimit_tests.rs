//! Re-limiting after a reload, against a fixture hierarchy (regular files
//! standing in for reeve's cgroup root, every controller offered): which
//! groups a changed rule reaches, what is written and read back, what the
//! record and the snapshot then say, and a held records lock.

use std::collections::HashMap;
use std::fs;

use super::super::{AutoAttach, Outcome};
use super::Relimited;
use crate::cgroup::testutil::Fixture;
use crate::cgroup::Limits;
use crate::config::{LogFormat, LogLevel, Rule};
use crate::log::Logger;
use crate::placement::{Protected, Records};
use crate::procfs::ProcReader;
use crate::state::{GovernanceView, Governed, JobState};
use crate::store::records::JobRecord;
use crate::units::{CpuLimit, SizeLimit};

const MIB: u64 = 1 << 20;

fn memory(mib: u64) -> Limits {
    Limits {
        memory: Some(SizeLimit::Bytes(mib * MIB)),
        ..Limits::default()
    }
}

fn rule(name: &str, pool: Option<&str>, limits: Limits) -> Rule {
    Rule {
        name: name.into(),
        pool: pool.map(Into::into),
        limits,
        ..Rule::default()
    }
}

/// A governed group in the fixture: its limit files, a record with
/// `limits`, and an entry in the daemon's view.
fn group(fx: &Fixture, gov: &mut AutoAttach, name: &str, limits: &Limits) {
    for (file, text) in [
        ("cgroup.procs", "4242\n"),
        ("cgroup.events", "populated 1\nfrozen 0\n"),
        ("memory.max", "max\n"),
        ("memory.high", "max\n"),
        ("memory.swap.max", "max\n"),
        ("cpu.max", "max 100000\n"),
        ("cpu.weight", "100\n"),
        ("pids.max", "max\n"),
    ] {
        fx.file(&format!("reeve/{name}/{file}"), text);
    }
    let path = gov.h.root.join(name);
    let mut r = JobRecord::new(name.into(), name.starts_with("pool."), &path, limits, 1);
    r.in_force = true;
    gov.records.save(&r).unwrap();
    gov.view.jobs.insert(
        name.into(),
        JobState {
            group: name.into(),
            cgroup: path.clone(),
            pool: r.pool,
            limits: limits.clone(),
            in_force: true,
            problems: Vec::new(),
        },
    );
}

fn governance(fx: &Fixture) -> AutoAttach {
    let (h, state) = fx.host();
    let mut reader = ProcReader::open().unwrap();
    let protected = Protected::of_self(&mut reader).unwrap();
    AutoAttach {
        h,
        records: Records::open(&state).unwrap(),
        reader,
        view: GovernanceView::default(),
        deferred: 0,
        released_broken: false,
        ready: HashMap::new(),
        protected,
        to_compact: Vec::new(),
        to_relimit: Vec::new(),
    }
}

fn quiet() -> Logger {
    Logger::new(LogFormat::Json, LogLevel::Error)
}

#[test]
fn a_changed_pool_budget_is_written_read_back_and_recorded() {
    let fx = Fixture::new();
    let mut gov = governance(&fx);
    group(&fx, &mut gov, "pool.live", &memory(1024));
    let old = [rule("live", Some("live"), memory(1024))];
    let new = [rule("live", Some("live"), memory(512))];
    assert_eq!(gov.queue_relimit(&old, &new), 1);
    assert!(gov.relimit_pending());
    assert_eq!(gov.relimit_some(&mut quiet()), Outcome::Done);
    assert!(!gov.relimit_pending());

    let written = fs::read_to_string(fx.dir().join("reeve/pool.live/memory.max")).unwrap();
    assert_eq!(written.trim(), (512 * MIB).to_string());
    let record = gov.records.load("pool.live").unwrap().unwrap();
    assert_eq!(record.limits, memory(512), "the record holds the read-back");
    assert!(record.in_force);
    let job = &gov.view.jobs["pool.live"];
    assert_eq!(job.limits, memory(512), "the snapshot says so too");
    assert!(job.in_force);
}

#[test]
fn each_job_of_a_changed_rule_gets_the_new_set_and_others_are_left_alone() {
    let fx = Fixture::new();
    let mut gov = governance(&fx);
    let cpu = |m| Limits {
        cpu: Some(CpuLimit::Millicores(m)),
        ..Limits::default()
    };
    // Two per-process jobs of `enc`, one of `other`, known to the view
    // only through their processes (an adopted job whose record was
    // unusable) for one of them.
    group(&fx, &mut gov, "job.enc-10-1", &cpu(1000));
    group(&fx, &mut gov, "job.enc-11-1", &cpu(1000));
    group(&fx, &mut gov, "job.other-12-1", &cpu(1000));
    gov.view.jobs.remove("job.enc-11-1");
    gov.view.procs.insert(
        crate::procfs::ProcKey {
            pid: 11,
            start_ticks: 1,
        },
        Governed {
            job: "job.enc-11-1".into(),
            cgroup: gov.h.root.join("job.enc-11-1"),
            original_cgroup: None,
            attached_ms: 1,
        },
    );
    let old = [rule("enc", None, cpu(1000)), rule("other", None, cpu(1000))];
    // The new set names memory, no longer cpu: cpu goes back to the
    // kernel's default ("the limits are the group's whole set").
    let new = [
        rule("enc", None, memory(256)),
        rule("other", None, cpu(1000)),
    ];
    assert_eq!(gov.queue_relimit(&old, &new), 2);
    assert_eq!(gov.relimit_some(&mut quiet()), Outcome::Done);
    for job in ["job.enc-10-1", "job.enc-11-1"] {
        let dir = fx.dir().join("reeve").join(job);
        let mem = fs::read_to_string(dir.join("memory.max")).unwrap();
        assert_eq!(mem.trim(), (256 * MIB).to_string(), "{job}");
        let cpu_max = fs::read_to_string(dir.join("cpu.max")).unwrap();
        assert!(
            cpu_max.starts_with("max"),
            "{job}: cpu reset, got {cpu_max:?}"
        );
        assert_eq!(gov.records.load(job).unwrap().unwrap().limits, memory(256));
    }
    let untouched = fs::read_to_string(fx.dir().join("reeve/job.other-12-1/memory.max")).unwrap();
    assert_eq!(
        untouched.trim(),
        "max",
        "a rule that did not change is not written"
    );
}

#[test]
fn unchanged_rules_moved_pools_and_budget_keeping_pools_queue_nothing() {
    let fx = Fixture::new();
    let mut gov = governance(&fx);
    group(&fx, &mut gov, "pool.live", &memory(1024));
    let same = [rule("live", Some("live"), memory(1024))];
    assert_eq!(gov.queue_relimit(&same, &same), 0, "nothing changed");
    let moved = [rule("live", Some("elsewhere"), memory(64))];
    assert_eq!(
        gov.queue_relimit(&same, &moved),
        0,
        "new members go to the new pool"
    );
    let keeps = [rule("live", Some("live"), Limits::default())];
    assert_eq!(
        gov.queue_relimit(&same, &keeps),
        0,
        "a pool rule without limits keeps the pool's budget"
    );
    let gone: [Rule; 0] = [];
    assert_eq!(gov.queue_relimit(&same, &gone), 0, "a removed rule");
}

#[test]
fn a_limit_that_does_not_read_back_is_not_in_force() {
    let fx = Fixture::new();
    let mut gov = governance(&fx);
    group(&fx, &mut gov, "pool.live", &memory(1024));
    // The kernel (here: the fixture) has no memory.max for this group.
    fs::remove_file(fx.dir().join("reeve/pool.live/memory.max")).unwrap();
    let mut log = quiet();
    let got = gov.relimit(&mut log, "pool.live", &memory(512));
    assert_eq!(got, Relimited::Applied { in_force: false });
    let record = gov.records.load("pool.live").unwrap().unwrap();
    assert!(!record.in_force);
    assert!(!record.problems.is_empty(), "the record says why");
    assert!(
        !gov.view.jobs["pool.live"].in_force,
        "status says not in force"
    );
}

#[test]
fn a_held_records_lock_keeps_the_group_queued() {
    let fx = Fixture::new();
    let mut gov = governance(&fx);
    group(&fx, &mut gov, "pool.live", &memory(1024));
    let old = [rule("live", Some("live"), memory(1024))];
    let new = [rule("live", Some("live"), memory(512))];
    gov.queue_relimit(&old, &new);
    // A command holding jobs/.lock: another open file description.
    let other = Records::open(&fx.dir().join("state")).unwrap();
    let held = other.lock().unwrap();
    assert_eq!(gov.relimit_some(&mut quiet()), Outcome::Retry);
    assert!(gov.relimit_pending(), "still queued");
    let still = fs::read_to_string(fx.dir().join("reeve/pool.live/memory.max")).unwrap();
    assert_eq!(
        still.trim(),
        "max",
        "nothing written while the lock is held"
    );
    drop(held);
    assert_eq!(gov.relimit_some(&mut quiet()), Outcome::Done);
    assert!(!gov.relimit_pending());
}

#[test]
fn a_group_that_ended_is_skipped() {
    let fx = Fixture::new();
    let mut gov = governance(&fx);
    assert_eq!(
        gov.relimit(&mut quiet(), "job.enc-1-1", &memory(1)),
        Relimited::Gone
    );
}
