//! What network limits read from outside: the verifier's log (kernel
//! text), a bucket map's value (kernel bytes), and the limit text
//! (config, command line). Every parser must return, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reeve::cgroup::net::{self, bucket::Bucket, bucket::VALUE_SIZE};

fuzz_target!(|data: &[u8]| {
    let tail = net::log_tail(data);
    assert!(!tail.contains('\n'), "the log tail is one line");
    if let Ok(value) = <[u8; VALUE_SIZE]>::try_from(&data[..VALUE_SIZE.min(data.len())]) {
        // A map value reads as six words and writes back the same bytes.
        assert_eq!(Bucket::from_bytes(&value).to_bytes(), value);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        // A parsed limit prints as text that parses to the same limit.
        if let Ok(rate) = reeve::cgroup::parse::parse_net(text) {
            assert_eq!(reeve::cgroup::parse::parse_net(&rate.to_string()), Ok(rate));
        }
    }
});
