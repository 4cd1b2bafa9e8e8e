//! The audit event log as `reeve events` reads it: arbitrary bytes in
//! events.jsonl (torn lines, garbage, huge numbers) are skipped and
//! counted, never a panic, and whatever is yielded has increasing seqs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;

fn dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("reeve-fuzz-eventlog-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&d);
    d
}

fuzz_target!(|data: &[u8]| {
    let d = dir();
    if std::fs::write(d.join("events.jsonl"), data).is_err() {
        return;
    }
    if let Ok(reader) = reeve::store::read_events(&d, None) {
        let mut last: Option<u64> = None;
        for v in reader {
            let seq = v.get("seq").and_then(|s| s.as_u64());
            assert!(seq.is_some(), "a yielded event has a seq: {v}");
            assert!(seq > last, "seqs must increase: {seq:?} after {last:?}");
            last = seq;
        }
    }
});
