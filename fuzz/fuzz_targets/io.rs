//! /proc/<pid>/io parser: any bytes give a `Result`, never a panic; parsing
//! is a pure function of its input, and a parsed value's counters appear in
//! the input as written.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let first = reeve::procfs::parse_io(data);
    assert_eq!(first, reeve::procfs::parse_io(data));
    if let Ok(io) = first {
        let text = String::from_utf8_lossy(data);
        assert!(text.contains(&io.rchar.to_string()));
        assert!(text.contains(&io.wchar.to_string()));
    }
});
