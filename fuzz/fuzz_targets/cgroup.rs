//! The cgroup files reeve reads: mountinfo, /proc/<pid>/cgroup, and the
//! flat-keyed and list files of a group. Every parser must return, never
//! panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reeve::cgroup;

fuzz_target!(|data: &[u8]| {
    let _ = cgroup::parse_mountinfo_cgroup2(data);
    let _ = cgroup::parse_proc_cgroup(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = cgroup::parse_flat_keyed(text);
        let _ = cgroup::parse_procs(text);
        let _ = cgroup::parse_populated(text);
        let _ = cgroup::parse_controllers(text);
        let _ = cgroup::cpu::parse_max(text);
        let _ = cgroup::cpu::parse_stat(text);
        let _ = cgroup::memory::parse_size_file(text);
        let _ = cgroup::memory::parse_events(text);
        // A canonical cpu list is a fixed point.
        if let Ok(c) = cgroup::cpuset::canonicalize(text) {
            assert_eq!(cgroup::cpuset::canonicalize(&c).as_deref(), Ok(c.as_str()));
        }
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(text) {
            let _ = cgroup::limits_from_json(&v, "limits");
        }
    }
});
