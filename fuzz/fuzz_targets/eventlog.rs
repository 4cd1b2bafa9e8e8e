//! The audit log, as its writer and its reader meet it after a crash. The
//! input is `<sidecar> NUL <log>` (no NUL: no sidecar, all log): the bytes
//! become `events.seq` and `events.jsonl` in a fresh state directory. The
//! writer opens the log (sidecar parser, tail recovery and torn-tail
//! repair) and appends one event, which is written or refused, never
//! queued; the reader (`reeve
//! events`) skips and counts what it cannot decode, never panics, and
//! yields increasing seqs. The directory is removed after every input.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use reeve::log::Val;
use reeve::store::{read_events, EventLog, FsyncPolicy, LogOptions, StateDir};

fn read_back(path: &std::path::Path) {
    if let Ok(reader) = read_events(path, None) {
        let mut last: Option<u64> = None;
        for v in reader {
            let seq = v.get("seq").and_then(|s| s.as_u64());
            assert!(seq.is_some(), "a yielded event has a seq: {v}");
            assert!(seq > last, "seqs must increase: {seq:?} after {last:?}");
            last = seq;
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("reeve-fuzz-eventlog-{}", std::process::id()));
    // A leftover from an input that crashed the previous run is not ours to
    // keep.
    let _ = std::fs::remove_dir_all(&path);
    let dir = StateDir::open(&path).expect("a private state directory under TMPDIR");
    let log = match data.iter().position(|&b| b == 0) {
        Some(nul) => {
            std::fs::write(path.join("events.seq"), &data[..nul]).expect("write events.seq");
            &data[nul + 1..]
        }
        None => data,
    };
    std::fs::write(path.join("events.jsonl"), log).expect("write events.jsonl");

    read_back(&path);
    let opts = LogOptions {
        fsync: FsyncPolicy::Never,
        lock_timeout: Duration::from_millis(50),
        ..LogOptions::default()
    };
    let mut writer = EventLog::open(&dir, opts).expect("open the event log");
    // Nothing contends for this private log and the disk has room, so the
    // event is written, or, when the log refuses it (an exhausted seq), kept
    // in the queue with the reason: never lost, never silently.
    let landed = writer.append(1, "fuzz", &[("n", Val::U(1))]);
    match landed {
        Ok(Some(seq)) => assert!(seq > 0, "seq 0 is never written"),
        Ok(None) => {
            assert_eq!(writer.pending(), 1, "a refused event stays queued");
            assert!(writer.take_error().is_some(), "a refusal keeps its reason");
        }
        Err(e) => panic!("an append to a private log fails only on bad fields: {e}"),
    }
    drop(writer);
    read_back(&path);

    std::fs::remove_dir_all(&path).expect("remove the fuzz state directory");
});
