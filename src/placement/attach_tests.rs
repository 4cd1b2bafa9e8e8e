//! `attach` against a fixture hierarchy (regular files standing in for
//! reeve's cgroup root): what it reports about the limits it wrote.

use std::process::{Command, Stdio};

use super::*;
use crate::cgroup::testutil::Fixture;
use crate::units::{CpuLimit, SizeLimit};

#[test]
fn attach_reports_the_limits_it_reset() {
    let fx = Fixture::new();
    let (h, state) = fx.host();
    for (file, text) in [
        ("cgroup.procs", ""),
        ("cgroup.events", "populated 1\nfrozen 0\n"),
        ("memory.max", "1073741824\n"),
        ("memory.high", "max\n"),
        ("memory.swap.max", "max\n"),
        ("cpu.max", "max 100000\n"),
        ("cpu.weight", "100\n"),
        ("pids.max", "max\n"),
    ] {
        fx.file(&format!("reeve/pool.p/{file}"), text);
    }
    let records = Records::open(&state).unwrap();
    let memory = Limits {
        memory: Some(SizeLimit::Bytes(1 << 30)),
        ..Limits::default()
    };
    let mut r = JobRecord::new("pool.p".into(), true, &h.root.join("pool.p"), &memory, 1);
    r.in_force = true;
    records.save(&r).unwrap();
    // A process of the test's own, written into the fixture's file only.
    let mut child = Command::new("sleep")
        .arg("30")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut reader = ProcReader::open().unwrap();
    let key = identify(&mut reader, child.id()).unwrap();
    let half = Limits {
        cpu: Some(CpuLimit::Millicores(500)),
        ..Limits::default()
    };
    let held = records.lock().unwrap();
    let report = attach(
        &h,
        &held,
        &mut reader,
        key,
        &Placement::Pool("p".into()),
        &half,
        1,
    );
    drop(held);
    let _ = child.kill();
    let _ = child.wait();
    let report = report.unwrap();
    assert_eq!(report.reset, ["memory.max"]);
    assert_eq!(report.moved, [key]);
}
