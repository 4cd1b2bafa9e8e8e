//! The per-process /proc files beside stat: cmdline, status (effective
//! ids), and the namespace and exe link targets. Any bytes give a value or
//! an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = reeve::procfs::parse_cmdline(data);
    let _ = reeve::procfs::parse_status_ids(data);
    let _ = reeve::procfs::parse_ns_link(data);
    let _ = reeve::procfs::strip_deleted(data);
});
