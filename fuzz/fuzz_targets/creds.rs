//! Control-message parsers: any control part gives credentials with a
//! positive pid or an error, and a finite list of passed descriptors (at
//! most one per 4 bytes), never a panic or a read past the buffer.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = reeve::sys::parse_creds(data) {
        assert!(c.pid > 0 && c.pid <= i32::MAX as u32);
    }
    assert!(reeve::sys::passed_fds(data).count() <= data.len() / 4);
});
