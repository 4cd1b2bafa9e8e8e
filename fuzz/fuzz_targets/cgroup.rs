//! The cgroup files reeve reads: mountinfo, /proc/<pid>/cgroup, and the
//! flat-keyed and list files of a group, including the read-backs it
//! compares with what it wrote (cpu.max, memory.max, pids.max, io.max,
//! io.weight) and the counters it reports (cpu.stat, memory.events,
//! pids.current, pids.events). Every parser and comparison must return,
//! never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reeve::cgroup::{self, IoMax, IoRate, PidsLimit};

/// The io.max settings to compare a read-back with, from the input's first
/// bytes (so the fuzzer steers both sides of the comparison).
fn io_max(data: &[u8]) -> IoMax {
    let b = |i: usize| data.get(i).copied().unwrap_or(0);
    let rate = |i: usize| match b(i) % 3 {
        0 => None,
        1 => Some(IoRate::Max),
        _ => Some(IoRate::Value(u64::from(b(i + 1)) << (b(i + 2) % 56))),
    };
    IoMax {
        major: u32::from(b(0) % 4) * 4 + 4,
        minor: u32::from(b(1) % 4),
        rbps: rate(2),
        wbps: rate(5),
        riops: rate(8),
        wiops: rate(11),
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = cgroup::parse_mountinfo_cgroup2(data);
    let _ = cgroup::parse_proc_cgroup(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = cgroup::parse_flat_keyed(text);
        let _ = cgroup::parse_procs(text);
        let _ = cgroup::parse_populated(text);
        let _ = cgroup::parse_controllers(text);
        let _ = cgroup::cpu::parse_max(text);
        let _ = cgroup::cpu::verify_max(Some(50_000), 100_000, text);
        let _ = cgroup::cpu::verify_max(None, 100_000, text);
        let _ = cgroup::cpu::parse_stat(text);
        let _ = cgroup::memory::parse_size_file(text);
        let _ = cgroup::memory::parse_events(text);
        let _ = cgroup::pids::parse_current(text);
        let _ = cgroup::pids::parse_events_max(text);
        let _ = cgroup::pids::verify_max(PidsLimit::Max, text);
        let _ = cgroup::io::verify_max(&io_max(data), text);
        let _ = cgroup::io::verify_weight(100, text);
        let _ = cgroup::parse::parse_device(text);
        // A canonical cpu list is a fixed point.
        if let Ok(c) = cgroup::cpuset::canonicalize(text) {
            assert_eq!(cgroup::cpuset::canonicalize(&c).as_deref(), Ok(c.as_str()));
        }
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(text) {
            let _ = cgroup::limits_from_json(&v, "limits");
        }
    }
});
