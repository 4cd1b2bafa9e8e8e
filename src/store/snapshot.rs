//! The state snapshot: one JSON document replaced atomically.
//!
//! Invariant: a reader finds either the previous complete file or the new
//! complete file, never a mix, whatever happens to reeve or the machine.
//! A write goes to a fresh temp file (O_CREAT|O_EXCL|O_NOFOLLOW, 0600),
//! is fsynced, renamed over the name, and the directory is fsynced; any
//! failure before the rename removes the temp file and leaves the previous
//! file as it was. A file that cannot be used on load (unreadable, corrupt,
//! a symlink, written by a newer reeve, or untrusted: another user's, with
//! another hard link, or writable by others) is renamed aside, never
//! deleted and never followed. [`peek_versioned`] reads the same way but
//! only reports what it cannot use, for the read-only commands.

use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::de::DeserializeOwned;

use super::{check_name, untrusted, Shown, StateDir, StoreError, OPEN_FLAGS};

/// A snapshot larger than this is not state reeve wrote.
const MAX_SNAPSHOT_BYTES: u64 = 64 << 20;

/// How many temp names a write tries when something already sits at one
/// (a stale temp file of an earlier process that had the same pid).
const TEMP_ATTEMPTS: u64 = 16;

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn temp_name(name: &str, pid: u32, n: u64) -> String {
    format!(".{name}.tmp.{pid}.{n}")
}

/// Replaces `dir/name` with `bytes` atomically (temp file, fsync, rename,
/// directory fsync). A failure before the rename leaves the previous file
/// intact and no temp file behind; a failure of the final directory fsync
/// means the new file is in place but not yet known to be durable. The
/// error names the file and the OS error.
pub fn write_atomic(dir: &StateDir, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
    check_name(name)?;
    let target = dir.path().join(name);
    let pid = std::process::id();
    let mut attempt = 0;
    let (tmp_path, mut file) = loop {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp_path = dir.path().join(temp_name(name, pid, n));
        // create_new is O_CREAT|O_EXCL: a symlink or file already at the
        // temp name fails the open instead of being followed or reused.
        let opened = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(OPEN_FLAGS)
            .open(&tmp_path);
        match opened {
            Ok(f) => break (tmp_path, f),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt + 1 < TEMP_ATTEMPTS => {
                attempt += 1;
            }
            Err(e) => return Err(StoreError::io("create temp file for", &target, e)),
        }
    };
    let written = file
        .write_all(bytes)
        .map_err(|e| StoreError::io("write", &target, e))
        .and_then(|()| {
            file.sync_all()
                .map_err(|e| StoreError::io("fsync", &target, e))
        })
        .and_then(|()| {
            std::fs::rename(&tmp_path, &target)
                .map_err(|e| StoreError::io("rename temp file over", &target, e))
        });
    drop(file);
    if let Err(e) = written {
        // The temp file is ours (created O_EXCL), so removing it is safe; if
        // even that fails, the leftover is a dot file nothing reads.
        let _ = std::fs::remove_file(&tmp_path);
        return Err(e);
    }
    dir.sync()
}

/// The outcome of loading a snapshot.
#[derive(Debug)]
pub enum Loaded<T> {
    /// No file: a first start.
    Missing,
    Ok(T),
    /// The file could not be used and was renamed to `moved_to`; `reason`
    /// is one line for the log.
    SetAside {
        reason: String,
        moved_to: PathBuf,
    },
    /// The file could not be used and could not be renamed aside either
    /// (or `name` is not a plain file name). It is still in place: the
    /// caller must not write a fresh snapshot over it.
    Unusable {
        reason: String,
    },
}

/// Loads `dir/name`: a JSON object whose `version` is a whole number no
/// greater than `current_version`, deserialized into `T`. Anything else is
/// renamed to `<name>.corrupt-<now_ms>` (`.newer-<now_ms>` for a newer
/// version) and reported, never deleted. Never panics on any bytes.
pub fn load_versioned<T: DeserializeOwned>(
    dir: &StateDir,
    name: &str,
    current_version: u32,
    now_ms: u64,
) -> Loaded<T> {
    if let Err(e) = check_name(name) {
        return Loaded::Unusable {
            reason: e.to_string(),
        };
    }
    let path = dir.path().join(name);
    let bytes = match read_snapshot(&path) {
        Ok(Some(b)) => b,
        Ok(None) => return Loaded::Missing,
        Err(reason) => return set_aside(&path, "corrupt", now_ms, reason),
    };
    match decode(&bytes, current_version) {
        Ok(v) => Loaded::Ok(v),
        Err(Rejected::Newer(reason)) => set_aside(&path, "newer", now_ms, reason),
        Err(Rejected::Corrupt(reason)) => set_aside(&path, "corrupt", now_ms, reason),
    }
}

/// Reads `dir/name` like [`load_versioned`] but changes nothing: a file
/// that cannot be used is reported (`Err`, one line naming it) and left in
/// place. `Ok(None)` when there is no file.
pub fn peek_versioned<T: DeserializeOwned>(
    dir: &Path,
    name: &str,
    current_version: u32,
) -> Result<Option<T>, String> {
    check_name(name).map_err(|e| e.to_string())?;
    let path = dir.join(name);
    let unusable = |why: String| format!("{}: {why}", Shown(&path));
    let Some(bytes) = read_snapshot(&path).map_err(unusable)? else {
        return Ok(None);
    };
    match decode(&bytes, current_version) {
        Ok(v) => Ok(Some(v)),
        Err(Rejected::Newer(why) | Rejected::Corrupt(why)) => Err(unusable(why)),
    }
}

/// `Ok(None)` when there is no file; `Err(reason)` when there is one that
/// cannot be read as a snapshot.
fn read_snapshot(path: &Path) -> Result<Option<Vec<u8>>, String> {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(OPEN_FLAGS)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err("it is a symbolic link, which reeve never follows".into())
        }
        Err(e) => return Err(format!("cannot open it: {e}")),
    };
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot inspect it: {e}"))?;
    if !meta.file_type().is_file() {
        return Err("it is not a regular file".into());
    }
    if let Some(why) = untrusted(&meta) {
        return Err(why);
    }
    if meta.len() > MAX_SNAPSHOT_BYTES {
        return Err(format!(
            "it is {} bytes, more than the {MAX_SNAPSHOT_BYTES} a snapshot can be",
            meta.len()
        ));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_SNAPSHOT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read it: {e}"))?;
    if bytes.len() as u64 > MAX_SNAPSHOT_BYTES {
        return Err("it grew past the largest size a snapshot can be".into());
    }
    Ok(Some(bytes))
}

enum Rejected {
    Corrupt(String),
    Newer(String),
}

fn decode<T: DeserializeOwned>(bytes: &[u8], current_version: u32) -> Result<T, Rejected> {
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| Rejected::Corrupt(format!("it is not valid JSON: {e}")))?;
    let version = match value.as_object().map(|o| o.get("version")) {
        None => return Err(Rejected::Corrupt("it is not a JSON object".into())),
        Some(None) => return Err(Rejected::Corrupt("it has no \"version\" field".into())),
        Some(Some(v)) => v,
    };
    let Some(version) = version.as_u64() else {
        return Err(Rejected::Corrupt(format!(
            "its version {version} is not a whole number"
        )));
    };
    if version > u64::from(current_version) {
        return Err(Rejected::Newer(format!(
            "it has version {version}, newer than this reeve's {current_version}"
        )));
    }
    serde_json::from_value(value)
        .map_err(|e| Rejected::Corrupt(format!("it does not match the state schema: {e}")))
}

fn set_aside<T>(path: &Path, kind: &str, now_ms: u64, reason: String) -> Loaded<T> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let name = name.unwrap_or_default();
    // Never replace an earlier set-aside file: probe for a free name.
    for k in 0u32..100 {
        let aside = if k == 0 {
            format!("{name}.{kind}-{now_ms}")
        } else {
            format!("{name}.{kind}-{now_ms}-{k}")
        };
        let moved_to = path.with_file_name(aside);
        match std::fs::symlink_metadata(&moved_to) {
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Loaded::Unusable {
                    reason: format!(
                        "{} {reason}, and {} cannot be checked: {e}",
                        Shown(path),
                        Shown(&moved_to)
                    ),
                }
            }
        }
        // rename(2) moves a symlink itself, never its target.
        return match std::fs::rename(path, &moved_to) {
            Ok(()) => Loaded::SetAside {
                reason: format!("{}: {reason}", Shown(path)),
                moved_to,
            },
            Err(e) => Loaded::Unusable {
                reason: format!(
                    "{}: {reason}, and it cannot be renamed aside: {e}",
                    Shown(path)
                ),
            },
        };
    }
    Loaded::Unusable {
        reason: format!(
            "{}: {reason}, and no free name is left to set it aside",
            Shown(path)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testdir::TempDir;
    use super::*;
    use std::os::unix::fs::{symlink, MetadataExt};

    #[derive(Debug, serde::Deserialize, PartialEq)]
    struct State {
        version: u32,
        jobs: Vec<String>,
    }

    fn state_dir(tag: &str) -> (TempDir, StateDir) {
        let t = TempDir::new(tag);
        let d = StateDir::open(&t.path().join("state")).unwrap();
        (t, d)
    }

    fn entries(d: &StateDir) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn write_then_load_round_trips_0600() {
        let (_t, d) = state_dir("roundtrip");
        write_atomic(&d, "state.json", br#"{"version":1,"jobs":["a"]}"#).unwrap();
        write_atomic(&d, "state.json", br#"{"version":2,"jobs":["a","b"]}"#).unwrap();
        let p = d.path().join("state.json");
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        assert_eq!(entries(&d), vec!["state.json"], "no temp file is left");
        match load_versioned::<State>(&d, "state.json", 2, 1) {
            Loaded::Ok(s) => assert_eq!(s.jobs, vec!["a", "b"]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn missing_is_missing() {
        let (_t, d) = state_dir("missing");
        assert!(matches!(
            load_versioned::<State>(&d, "state.json", 1, 1),
            Loaded::Missing
        ));
    }

    #[test]
    fn corrupt_is_renamed_not_deleted() {
        let (_t, d) = state_dir("corrupt");
        let cases: [&[u8]; 7] = [
            b"{\"version\":1,\"jobs\":[\"a\"",
            b"[1,2]",
            b"{\"jobs\":[]}",
            b"{\"version\":-1,\"jobs\":[]}",
            b"{\"version\":1.5,\"jobs\":[]}",
            b"{\"version\":1,\"jobs\":7}",
            b"\xff\xfe\x00garbage",
        ];
        for (i, bytes) in cases.iter().enumerate() {
            let p = d.path().join("state.json");
            std::fs::write(&p, bytes).unwrap();
            let now = 1000 + i as u64;
            match load_versioned::<State>(&d, "state.json", 1, now) {
                Loaded::SetAside { reason, moved_to } => {
                    assert!(reason.contains("state.json"), "{reason}");
                    assert!(!reason.contains('\n'), "{reason}");
                    assert_eq!(moved_to, d.path().join(format!("state.json.corrupt-{now}")));
                    assert_eq!(std::fs::read(&moved_to).unwrap(), *bytes);
                    assert!(!p.exists());
                }
                other => panic!("case {i}: {other:?}"),
            }
        }
    }

    #[test]
    fn set_aside_never_replaces_an_earlier_one() {
        let (_t, d) = state_dir("aside-twice");
        let p = d.path().join("state.json");
        std::fs::write(&p, b"one").unwrap();
        let _ = load_versioned::<State>(&d, "state.json", 1, 7);
        std::fs::write(&p, b"two").unwrap();
        match load_versioned::<State>(&d, "state.json", 1, 7) {
            Loaded::SetAside { moved_to, .. } => {
                assert_eq!(moved_to, d.path().join("state.json.corrupt-7-1"))
            }
            other => panic!("{other:?}"),
        }
        let first = std::fs::read(d.path().join("state.json.corrupt-7")).unwrap();
        assert_eq!(first, b"one");
    }

    #[test]
    fn newer_version_is_set_aside() {
        let (_t, d) = state_dir("newer");
        let body = br#"{"version":3,"jobs":[],"future":true}"#;
        write_atomic(&d, "state.json", body).unwrap();
        match load_versioned::<State>(&d, "state.json", 2, 55) {
            Loaded::SetAside { reason, moved_to } => {
                assert!(reason.contains("newer"), "{reason}");
                assert_eq!(moved_to, d.path().join("state.json.newer-55"));
                assert_eq!(std::fs::read(moved_to).unwrap(), body);
            }
            other => panic!("{other:?}"),
        }
        // A version beyond u32 is newer too, not an overflow.
        write_atomic(&d, "state.json", br#"{"version":99999999999,"jobs":[]}"#).unwrap();
        assert!(matches!(
            load_versioned::<State>(&d, "state.json", 2, 56),
            Loaded::SetAside { .. }
        ));
    }

    #[test]
    fn symlinked_state_is_set_aside_not_followed() {
        let (t, d) = state_dir("symlink-load");
        let target = t.path().join("elsewhere.json");
        std::fs::write(&target, br#"{"version":1,"jobs":["planted"]}"#).unwrap();
        symlink(&target, d.path().join("state.json")).unwrap();
        match load_versioned::<State>(&d, "state.json", 1, 9) {
            Loaded::SetAside { reason, moved_to } => {
                assert!(reason.contains("symbolic link"), "{reason}");
                assert!(std::fs::symlink_metadata(&moved_to)
                    .unwrap()
                    .file_type()
                    .is_symlink());
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            std::fs::read(&target).unwrap(),
            br#"{"version":1,"jobs":["planted"]}"#
        );
    }

    #[test]
    fn symlink_at_name_is_replaced_not_written_through() {
        let (t, d) = state_dir("symlink-write");
        let target = t.path().join("victim");
        std::fs::write(&target, b"victim").unwrap();
        symlink(&target, d.path().join("state.json")).unwrap();
        write_atomic(&d, "state.json", br#"{"version":1,"jobs":[]}"#).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"victim");
        let meta = std::fs::symlink_metadata(d.path().join("state.json")).unwrap();
        assert!(meta.file_type().is_file());
    }

    #[test]
    fn symlink_at_temp_name_is_not_followed() {
        let (t, d) = state_dir("symlink-temp");
        write_atomic(&d, "state.json", br#"{"version":1,"jobs":["old"]}"#).unwrap();
        let target = t.path().join("victim");
        std::fs::write(&target, b"victim").unwrap();
        // Plant links at every temp name the next writes can pick, well past
        // what other tests running in parallel can consume.
        let pid = std::process::id();
        let start = TEMP_COUNTER.load(Ordering::Relaxed);
        for n in start..start + 400 {
            symlink(&target, d.path().join(temp_name("state.json", pid, n))).unwrap();
        }
        let err = write_atomic(&d, "state.json", br#"{"version":1,"jobs":["new"]}"#).unwrap_err();
        assert!(err.to_string().contains("state.json"), "{err}");
        assert_eq!(std::fs::read(&target).unwrap(), b"victim");
        assert_eq!(
            std::fs::read(d.path().join("state.json")).unwrap(),
            br#"{"version":1,"jobs":["old"]}"#
        );
        // A single stale entry at the next name is stepped over.
        for n in start..start + 400 {
            let _ = std::fs::remove_file(d.path().join(temp_name("state.json", pid, n)));
        }
        let next = TEMP_COUNTER.load(Ordering::Relaxed);
        symlink(&target, d.path().join(temp_name("state.json", pid, next))).unwrap();
        write_atomic(&d, "state.json", br#"{"version":1,"jobs":["new"]}"#).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"victim");
        assert_eq!(
            std::fs::read(d.path().join("state.json")).unwrap(),
            br#"{"version":1,"jobs":["new"]}"#
        );
    }

    #[test]
    fn bad_names_are_refused() {
        let (_t, d) = state_dir("names");
        assert!(write_atomic(&d, "../escape", b"{}").is_err());
        assert!(matches!(
            load_versioned::<State>(&d, "a/b", 1, 1),
            Loaded::Unusable { .. }
        ));
    }

    #[test]
    fn decode_never_panics_on_prefixes() {
        let good = br#"{"version":1,"jobs":["a\u0000b","\ud800"],"x":[[[[{}]]]]}"#;
        for end in 0..=good.len() {
            let _ = decode::<State>(&good[..end], 1);
        }
        let deep = "[".repeat(100_000);
        assert!(decode::<State>(deep.as_bytes(), 1).is_err());
    }
}
