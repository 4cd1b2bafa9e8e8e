//! The one temporary directory of the test suites: a fresh directory with
//! an unguessable name, removed with everything in it on drop.
//!
//! Shared by the integration tests (`tests/common`) and the unit tests in
//! src/ (`crate::tempdir`, under `cfg(test)`), so it depends on nothing but
//! std.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

/// A temporary directory removed (recursively) on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let mut buf = [0u8; 8];
        fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut buf))
            .expect("read /dev/urandom");
        let hex: String = buf.iter().map(|b| format!("{b:02x}")).collect();
        let path = std::env::temp_dir().join(format!("reeve-test-{tag}-{hex}"));
        fs::create_dir(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        // Canonical so that comparisons with /proc/<pid>/{cwd,exe} hold.
        let path = fs::canonicalize(&path).expect("canonicalize temp dir");
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    // The integration tests use it; the unit tests in src/ need only path().
    #[allow(dead_code)]
    pub fn join(&self, p: &str) -> PathBuf {
        self.path.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // A test's own directory: a failed removal leaves only files the
        // test made, under a name no one else uses.
        let _ = fs::remove_dir_all(&self.path);
    }
}
