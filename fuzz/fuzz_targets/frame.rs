//! Heartbeat frame decoder: any datagram is a frame or an error, never a
//! panic; a frame that decodes encodes back to the same bytes, and the
//! nonce order never holds both ways.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reeve::liveness::frame::{decode, encode, nonce_after};

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = decode(data) {
        assert_eq!(&encode(&f)[..], data);
        assert!(!(nonce_after(f.nonce, f.timestamp_ns) && nonce_after(f.timestamp_ns, f.nonce)));
    }
});
