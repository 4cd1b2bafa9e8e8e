//! /proc/<pid>/cmdline and /proc/<pid>/status parsers: any bytes give a
//! `Result`, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = reeve::procfs::parse_cmdline(data);
    let _ = reeve::procfs::parse_status_ids(data);
});
