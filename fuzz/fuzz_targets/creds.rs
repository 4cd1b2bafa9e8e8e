//! SCM_CREDENTIALS control-message parser: any control part gives
//! credentials with a positive pid or an error, never a panic or a read
//! past the buffer.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = reeve::sys::parse_creds(data) {
        assert!(c.pid > 0 && c.pid <= i32::MAX as u32);
    }
});
