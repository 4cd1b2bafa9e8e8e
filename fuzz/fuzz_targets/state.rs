//! The state snapshot as a restarted daemon loads it: the bytes are written
//! to `state.json` in a fresh state directory and read back through
//! `State::load`, i.e. `store::load_versioned` with its version gate. Any
//! bytes give a state or a set-aside, never a panic; a loaded state is no
//! newer than the current version and survives a round trip; a rejected
//! file is renamed aside with its bytes intact, never deleted. Job records
//! are decoded too. The directory is removed after every input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reeve::state::{State, STATE_FILE, STATE_VERSION};
use reeve::store::{Loaded, StateDir};

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("reeve-fuzz-state-{}", std::process::id()));
    // A leftover from an input that crashed the previous run is not ours to
    // keep.
    let _ = std::fs::remove_dir_all(&path);
    let dir = StateDir::open(&path).expect("a private state directory under TMPDIR");
    std::fs::write(path.join(STATE_FILE), data).expect("write state.json");

    match State::load(&dir, 1_700_000_000_000) {
        Loaded::Ok(s) => {
            let v: serde_json::Value = serde_json::from_slice(data).expect("a loaded file is JSON");
            let version = v.get("version").and_then(|n| n.as_u64());
            assert!(
                version.is_some_and(|n| n <= u64::from(STATE_VERSION)),
                "the version gate let {version:?} through"
            );
            let bytes = serde_json::to_vec(&s).expect("a state serializes");
            let mut again: State = serde_json::from_slice(&bytes).expect("and parses back");
            again.normalise();
            assert_eq!(again, s);
        }
        Loaded::SetAside { moved_to, .. } => {
            assert!(
                !path.join(STATE_FILE).exists(),
                "set aside but still in place"
            );
            let kept = std::fs::read(&moved_to).expect("the set-aside file exists");
            assert_eq!(kept, data, "a set-aside file keeps its bytes");
        }
        Loaded::Unusable { reason } => panic!("a plain file in a private directory: {reason}"),
        Loaded::Missing => panic!("state.json was written, yet reported missing"),
    }
    let _ = serde_json::from_slice::<reeve::placement::JobRecord>(data);

    std::fs::remove_dir_all(&path).expect("remove the fuzz state directory");
});
