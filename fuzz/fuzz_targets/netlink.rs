//! Proc connector datagram parser: any datagram yields a finite sequence of
//! `Result` items, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for ev in reeve::discovery::netlink::events(data) {
        let _ = ev;
    }
});
