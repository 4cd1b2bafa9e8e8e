//! The state snapshot and job records as reeve reads them back after a
//! restart: any bytes give a value or an error, and a value survives a
//! round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(mut s) = serde_json::from_slice::<reeve::state::State>(data) {
        s.normalise();
        let bytes = serde_json::to_vec(&s).expect("a state serializes");
        let again: reeve::state::State = serde_json::from_slice(&bytes).expect("and parses back");
        assert_eq!(again, s);
    }
    let _ = serde_json::from_slice::<reeve::placement::JobRecord>(data);
});
