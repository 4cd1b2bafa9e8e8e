//! The metrics endpoint's request head parser and token comparison: every
//! input returns, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reeve::metrics::http;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = http::parse_head(data) {
        if let Some(token) = req.bearer {
            assert!(http::token_matches(token, token));
        }
    }
    let (a, b) = data.split_at(data.len() / 2);
    assert_eq!(http::token_matches(a, b), a == b);
});
