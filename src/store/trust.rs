//! Which files in the state directory reeve may use, and how names are
//! shown in messages.
//!
//! Invariant: a file another user owns, that has another hard link (it may
//! be someone else's file linked in) or that others can write is never
//! read or written as reeve's own; it is moved aside, never deleted (it is
//! evidence). A path in a message never spans two lines.

use std::fmt;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::StoreError;

/// A path as one line: control characters (a newline in a planted file
/// name) are shown escaped, so a message never splits or forges a line.
pub struct Shown<'a>(pub &'a Path);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0.to_string_lossy();
        if !text.chars().any(char::is_control) {
            return f.write_str(&text);
        }
        for c in text.chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

/// Why a file in the state directory must not be used, if it must not:
/// another user owns it, it has another hard link (it may be someone
/// else's file linked in), or others can write it.
pub fn untrusted(meta: &std::fs::Metadata) -> Option<String> {
    let euid = crate::sys::geteuid();
    if meta.uid() != euid {
        return Some(format!(
            "it is owned by uid {}, not by reeve's uid {euid}",
            meta.uid()
        ));
    }
    if meta.is_file() && meta.nlink() > 1 {
        return Some(format!(
            "it has {} hard links; a state file has exactly one",
            meta.nlink()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Some(format!(
            "its mode {:04o} lets other users write it",
            meta.mode() & 0o7777
        ));
    }
    None
}

/// A file found [`untrusted`] and renamed out of the way.
#[derive(Debug, Clone)]
pub struct SetAside {
    pub path: PathBuf,
    pub moved_to: PathBuf,
    pub reason: String,
}

/// Renames `path` to `<name>.untrusted-<now_ms>` when it is a regular file
/// that must not be used (never deleting it: it is evidence), so the
/// caller creates a fresh one. `Ok(None)` when it is missing or fine.
pub(crate) fn set_aside_if_untrusted(
    path: &Path,
    now_ms: u64,
) -> Result<Option<SetAside>, StoreError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::io("inspect", path, e)),
    };
    if !meta.is_file() {
        // Symlinks and the like are refused where they are opened.
        return Ok(None);
    }
    let Some(reason) = untrusted(&meta) else {
        return Ok(None);
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for k in 0u32..100 {
        let aside = if k == 0 {
            format!("{name}.untrusted-{now_ms}")
        } else {
            format!("{name}.untrusted-{now_ms}-{k}")
        };
        let moved_to = path.with_file_name(aside);
        match std::fs::symlink_metadata(&moved_to) {
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io("inspect", &moved_to, e)),
        }
        std::fs::rename(path, &moved_to)
            .map_err(|e| StoreError::io("set aside untrusted file", path, e))?;
        return Ok(Some(SetAside {
            path: path.to_path_buf(),
            moved_to,
            reason,
        }));
    }
    Err(StoreError::Refused {
        path: path.to_path_buf(),
        reason: "the file cannot be used and no free name is left to set it aside",
    })
}
