//! Durable state: the state directory, the atomic state snapshot
//! ([`snapshot`]) and the append-only audit event log ([`eventlog`]).
//!
//! reeve's own death must cost nothing, so everything here either lands
//! whole or not at all: a snapshot replaces its predecessor only through
//! temp file, fsync, rename and directory fsync; an event line is written
//! whole or cut back off. Every file is created 0600 and opened
//! O_NOFOLLOW|O_CLOEXEC inside a directory owned by the effective uid that
//! nobody else can write, so a planted symlink is refused, never followed,
//! and a file reeve's user does not own, that has another link, or that
//! others can write is never used ([`untrusted`]). Nothing a reader finds
//! on disk can make it panic, and the read-only paths ([`StateDir::inspect`])
//! change nothing on disk.

pub mod eventlog;
mod reader;
pub mod records;
pub mod snapshot;
mod trust;

use std::fmt;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub use eventlog::{durable_seq, EventLog, FsyncPolicy, LogOptions};
pub use reader::{read_events, EventReader};
pub use snapshot::{load_versioned, peek_versioned, write_atomic, Loaded};
pub(crate) use trust::set_aside_if_untrusted;
pub use trust::{untrusted, SetAside, Shown};

/// Why a store operation failed. Displayed as one line that names the file
/// and, where there is one, what to do about it.
#[derive(Debug)]
pub enum StoreError {
    /// A system call on `path` failed.
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// Something is in the way that reeve will not use (a symlink, a
    /// non-directory, a device); `reason` says what it is.
    Refused { path: PathBuf, reason: &'static str },
    /// The state directory belongs to another user.
    NotOwner {
        path: PathBuf,
        owner: u32,
        euid: u32,
    },
    /// Users other than its owner can write the state directory, so they
    /// could have planted files in it.
    OpenToOthers { path: PathBuf, mode: u32 },
    /// A caller passed a value the store cannot use (a file name with a
    /// slash, an option of zero).
    Invalid(String),
}

impl StoreError {
    pub(crate) fn io(op: &'static str, path: &Path, source: io::Error) -> StoreError {
        StoreError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }

    /// The errno behind the failure, if it came from the kernel.
    pub fn os_error(&self) -> Option<i32> {
        match self {
            StoreError::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    /// True when the filesystem is out of space or quota.
    pub fn is_disk_full(&self) -> bool {
        matches!(self.os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
    }
}

/// What an errno means for an operator, beyond the kernel's wording.
fn hint(errno: Option<i32>) -> &'static str {
    match errno {
        Some(libc::ENOSPC) => "; the disk is full: free space on it",
        Some(libc::EDQUOT) => "; the disk quota is exhausted",
        Some(libc::EROFS) => "; the filesystem is read-only",
        Some(libc::ELOOP) => "; it is a symbolic link, which reeve never follows",
        Some(libc::EEXIST) => "; something already exists at that name and is left alone",
        Some(libc::EIO) => "; the device reported an I/O error",
        _ => "",
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Io { op, path, source } => write!(
                f,
                "cannot {op} {}: {source}{}",
                Shown(path),
                hint(source.raw_os_error())
            ),
            StoreError::Refused { path, reason } => {
                write!(f, "refusing {}: {reason}", Shown(path))
            }
            StoreError::NotOwner { path, owner, euid } => write!(
                f,
                "state directory {} is owned by uid {owner}, not by reeve's effective uid \
                 {euid}; chown it or choose another state directory",
                Shown(path)
            ),
            StoreError::OpenToOthers { path, mode } => write!(
                f,
                "state directory {} has mode {mode:04o}: other users can write it and plant \
                 files; check what is in it, then run chmod 0700 {}",
                Shown(path),
                Shown(path)
            ),
            StoreError::Invalid(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The directory that holds reeve's durable state: owned by the effective
/// uid, writable by nobody else, never a symlink.
#[derive(Debug)]
pub struct StateDir {
    path: PathBuf,
    /// An O_DIRECTORY handle, used to fsync the directory after renames.
    handle: File,
    tightened: bool,
}

impl StateDir {
    /// Opens (creating it 0700, and missing parents 0755) the state
    /// directory. A directory others can write is refused (files may have
    /// been planted in it; the error says how to fix it); one that others
    /// can only read or search is tightened to 0700 and
    /// [`StateDir::tightened`] reports it.
    pub fn open(path: &Path) -> Result<StateDir, StoreError> {
        match std::fs::symlink_metadata(path) {
            Ok(meta) => check_kind(path, &meta)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => create_dir(path)?,
            Err(e) => return Err(StoreError::io("inspect state directory", path, e)),
        }
        let (handle, mode) = Self::open_checked(path)?;
        let tightened = mode & 0o077 != 0;
        if mode != 0o700 {
            handle
                .set_permissions(std::fs::Permissions::from_mode(0o700))
                .map_err(|e| StoreError::io("chmod 0700 state directory", path, e))?;
        }
        Ok(StateDir {
            path: path.to_path_buf(),
            handle,
            tightened,
        })
    }

    /// Opens an existing state directory for reading only (`reeve status`,
    /// `reeve events`): the same checks as [`StateDir::open`], but nothing
    /// is created or changed. `Ok(None)` when it does not exist.
    pub fn inspect(path: &Path) -> Result<Option<StateDir>, StoreError> {
        match std::fs::symlink_metadata(path) {
            Ok(meta) => check_kind(path, &meta)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io("inspect state directory", path, e)),
        }
        let (handle, _) = Self::open_checked(path)?;
        Ok(Some(StateDir {
            path: path.to_path_buf(),
            handle,
            tightened: false,
        }))
    }

    /// Opens the directory and checks the opened directory itself (so a
    /// swap of the path after the first look changes nothing): a
    /// directory, owned by the effective uid, not writable by others.
    /// Returns its permission bits.
    fn open_checked(path: &Path) -> Result<(File, u32), StoreError> {
        let handle = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| StoreError::io("open state directory", path, e))?;
        let meta = handle
            .metadata()
            .map_err(|e| StoreError::io("inspect state directory", path, e))?;
        check_kind(path, &meta)?;
        let euid = crate::sys::geteuid();
        if meta.uid() != euid {
            return Err(StoreError::NotOwner {
                path: path.to_path_buf(),
                owner: meta.uid(),
                euid,
            });
        }
        let mode = meta.mode() & 0o7777;
        if mode & 0o022 != 0 {
            return Err(StoreError::OpenToOthers {
                path: path.to_path_buf(),
                mode,
            });
        }
        Ok((handle, mode))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True when the directory had group/other permissions and was
    /// tightened to 0700; the caller logs that.
    pub fn tightened(&self) -> bool {
        self.tightened
    }

    /// fsync of the directory, making renames and creations in it durable.
    pub(crate) fn sync(&self) -> Result<(), StoreError> {
        self.handle
            .sync_all()
            .map_err(|e| StoreError::io("fsync directory", &self.path, e))
    }

    /// A second handle on the same directory (for a thread that writes
    /// into it).
    pub fn try_clone(&self) -> Result<StateDir, StoreError> {
        Ok(StateDir {
            path: self.path.clone(),
            handle: self.try_clone_handle()?,
            tightened: self.tightened,
        })
    }

    pub(crate) fn try_clone_handle(&self) -> Result<File, StoreError> {
        self.handle
            .try_clone()
            .map_err(|e| StoreError::io("duplicate handle of", &self.path, e))
    }
}

fn check_kind(path: &Path, meta: &std::fs::Metadata) -> Result<(), StoreError> {
    let ft = meta.file_type();
    if ft.is_symlink() {
        return Err(StoreError::Refused {
            path: path.to_path_buf(),
            reason: "the state directory is a symbolic link; point reeve at the real directory",
        });
    }
    if !ft.is_dir() {
        return Err(StoreError::Refused {
            path: path.to_path_buf(),
            reason: "the state directory path exists and is not a directory",
        });
    }
    Ok(())
}

fn create_dir(path: &Path) -> Result<(), StoreError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .map_err(|e| StoreError::io("create parent of state directory", parent, e))?;
    }
    match DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => Ok(()),
        // Another process created it first; the caller inspects it as usual.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::io("create state directory", path, e)),
    }
}

/// Rejects anything but a plain file name, so a name can never leave the
/// state directory or hide as a dot file.
pub(crate) fn check_name(name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && !name.contains('/')
        && !name.contains('\0');
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "invalid state file name {name:?}: it must be a plain file name, not starting with '.'"
        )))
    }
}

/// Open flags shared by every store file: never follow a symlink, never
/// leak the fd into a child, never block on a FIFO planted at the name.
pub(crate) const OPEN_FLAGS: libc::c_int = libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK;

/// Opens (creating it 0600 if missing) a store file for reading and
/// writing, refusing a symlink, anything but a regular file, and a file
/// that is [`untrusted`].
pub(crate) fn open_private(path: &Path, append: bool) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(!append)
        .append(append)
        .create(true)
        .mode(0o600)
        .custom_flags(OPEN_FLAGS)
        .open(path)?;
    ensure_regular(&file)?;
    Ok(file)
}

/// Opens an existing store file read-only, refusing a symlink, anything
/// but a regular file, and a file that is [`untrusted`].
pub(crate) fn open_read(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(OPEN_FLAGS)
        .open(path)?;
    ensure_regular(&file)?;
    Ok(file)
}

fn ensure_regular(file: &File) -> io::Result<()> {
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    match untrusted(&meta) {
        None => Ok(()),
        Some(why) => Err(io::Error::new(io::ErrorKind::PermissionDenied, why)),
    }
}

/// Errors that mean "the disk refused now, try again later" rather than
/// "this can never work".
pub(crate) fn is_disk_refusal(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOSPC) | Some(libc::EDQUOT) | Some(libc::EIO)
    )
}

#[cfg(test)]
pub(crate) mod testdir {
    //! The suite's one temporary directory, under the name the store's
    //! tests use.
    pub use crate::tempdir::TempDir;
}

#[cfg(test)]
mod tests {
    use super::testdir::TempDir;
    use super::*;
    use std::os::unix::fs::symlink;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn creates_dir_0700_and_parents() {
        let t = TempDir::new("create");
        let p = t.path().join("a/b/state");
        let d = StateDir::open(&p).unwrap();
        assert_eq!(d.path(), p);
        assert!(!d.tightened());
        assert_eq!(mode(&p), 0o700);
        assert_eq!(mode(&t.path().join("a")) & 0o700, 0o700);
        // Opening again is fine and changes nothing.
        let d = StateDir::open(&p).unwrap();
        assert!(!d.tightened());
    }

    #[test]
    fn tightens_readable_dir_and_says_so() {
        let t = TempDir::new("tighten");
        let p = t.path().join("state");
        std::fs::create_dir(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        let d = StateDir::open(&p).unwrap();
        assert!(d.tightened());
        assert_eq!(mode(&p), 0o700);
    }

    #[test]
    fn refuses_dir_others_can_write_and_says_how_to_fix_it() {
        let t = TempDir::new("writable");
        for m in [0o777, 0o1777, 0o720, 0o702] {
            let p = t.path().join(format!("state-{m:o}"));
            std::fs::create_dir(&p).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(m)).unwrap();
            let err = StateDir::open(&p).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, StoreError::OpenToOthers { .. }), "{msg}");
            assert!(
                msg.contains(&format!("chmod 0700 {}", p.display())),
                "{msg}"
            );
            assert!(!msg.contains('\n'), "{msg}");
            assert_eq!(mode(&p), m, "left as it was");
            assert!(StateDir::inspect(&p).is_err());
        }
    }

    #[test]
    fn inspect_changes_nothing() {
        let t = TempDir::new("inspect");
        let p = t.path().join("state");
        assert!(StateDir::inspect(&p).unwrap().is_none());
        assert!(!p.exists(), "inspect does not create");
        std::fs::create_dir(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(StateDir::inspect(&p).unwrap().is_some());
        assert_eq!(mode(&p), 0o755, "inspect does not tighten");
    }

    #[test]
    fn untrusted_files_are_not_opened() {
        let t = TempDir::new("untrusted");
        let d = StateDir::open(&t.path().join("state")).unwrap();
        let a = d.path().join("a");
        std::fs::write(&a, b"x").unwrap();
        std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o600)).unwrap();
        open_read(&a).unwrap();
        std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o622)).unwrap();
        let err = open_read(&a).unwrap_err();
        assert!(err.to_string().contains("other users write"), "{err}");
        std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::hard_link(&a, t.path().join("elsewhere")).unwrap();
        let err = open_private(&a, true).unwrap_err();
        assert!(err.to_string().contains("hard links"), "{err}");
    }

    #[test]
    fn paths_with_control_characters_show_on_one_line() {
        let e = StoreError::io(
            "open",
            Path::new("/s/evil\nname\t"),
            io::Error::from_raw_os_error(libc::ENOENT),
        );
        let s = e.to_string();
        assert!(!s.contains('\n') && !s.contains('\t'), "{s}");
        assert!(s.contains("/s/evil\\nname\\t"), "{s}");
    }

    #[test]
    fn refuses_symlink_and_file() {
        let t = TempDir::new("refuse");
        let real = t.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o755)).unwrap();
        let link = t.path().join("link");
        symlink(&real, &link).unwrap();
        let err = StateDir::open(&link).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        // The link's target was not touched.
        assert_eq!(mode(&real), 0o755);

        let file = t.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let err = StateDir::open(&file).unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");
    }

    #[test]
    fn refuses_dir_of_another_owner() {
        let t = TempDir::new("owner");
        let p = t.path().join("state");
        std::fs::create_dir(&p).unwrap();
        let other = crate::sys::geteuid().wrapping_add(4242);
        let chowned = std::os::unix::fs::chown(&p, Some(other), None).is_ok();
        if !crate::require::require(chowned, "cannot chown (needs root)") {
            return;
        }
        let err = StateDir::open(&p).unwrap_err();
        assert!(matches!(err, StoreError::NotOwner { .. }), "{err}");
        assert!(err.to_string().contains("owned by uid"), "{err}");
    }

    #[test]
    fn names_are_plain() {
        for bad in ["", ".hidden", "a/b", "../x", "a\0b"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        check_name("state.json").unwrap();
    }

    #[test]
    fn disk_full_error_says_so() {
        let e = StoreError::io(
            "write",
            Path::new("/s/state.json"),
            io::Error::from_raw_os_error(libc::ENOSPC),
        );
        let s = e.to_string();
        assert!(
            s.contains("/s/state.json") && s.contains("disk is full"),
            "{s}"
        );
        assert!(e.is_disk_full());
    }
}
