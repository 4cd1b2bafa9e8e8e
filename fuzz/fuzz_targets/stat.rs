//! /proc/<pid>/stat parser: any bytes give a `Result`, never a panic, and
//! parsing is a pure function of its input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let first = reeve::procfs::parse_stat(data).ok();
    let again = reeve::procfs::parse_stat(data).ok();
    assert_eq!(first, again);
});
