//! The one way a test says it cannot run here.
//!
//! A test whose precondition does not hold (not root, no tmpfs, no python3,
//! no ffmpeg, no cgroup2 mount) calls [`require`]. Under `CI=true` a missing
//! precondition is a failure: CI proves every tier or fails. Elsewhere the
//! test is skipped with a line on the real stderr, which the test harness
//! does not capture, so a local run shows what it did not check.
//!
//! This file is shared by the integration tests (`tests/common`) and the
//! unit tests in src/ (`crate::require`, under `cfg(test)`), and so depends
//! on nothing but std.

use std::io::Write;

/// True when the run is CI's: `CI=true` in the environment.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Returns `held`. When it is false: panics under `CI=true`, and otherwise
/// prints `SKIPPED <test>: <why>` to the process's stderr and returns false,
/// for the caller to return from the test.
///
/// ```ignore
/// if !require(is_root(), "needs root for the netlink proc connector") {
///     return;
/// }
/// ```
#[track_caller]
pub fn require(held: bool, why: &str) -> bool {
    if held {
        return true;
    }
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    let at = std::panic::Location::caller();
    if under_ci() {
        panic!("{test} cannot run here and CI=true forbids skipping: {why} ({at})");
    }
    let line = format!("\nSKIPPED {test}: {why} ({at}); under CI=true this fails\n");
    // The harness captures print!/eprint!, not writes to the stderr handle.
    // A skip line that cannot be written is not worth failing the test for.
    let _ = std::io::stderr().write_all(line.as_bytes());
    false
}
