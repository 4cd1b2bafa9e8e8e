//! reeve: a hardened, synchronous process supervisor for Linux encoder hosts.
//!
//! One single-threaded poll loop ([`daemon`]) owns all supervision state. It
//! learns about processes from [`discovery`] (netlink proc connector plus
//! /proc rescans), proves their identity with [`procfs::ProcKey`] (pid +
//! start time) and tracks them in the fixed-capacity [`table::SlotTable`].
//! All `unsafe` code lives in [`sys`]: every other module is compiled with
//! `unsafe_code` denied.

#![deny(unsafe_code)]

pub mod cgroup;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod digits;
pub mod discovery;
pub mod liveness;
pub mod log;
pub mod metrics;
pub mod notify;
pub mod placement;
pub mod procfs;
pub mod spawn;
pub mod state;
pub mod store;
#[allow(unsafe_code)]
pub mod sys;
pub mod table;
pub mod units;
pub mod users;

/// The test-skip helper shared with tests/common: under CI=true a test that
/// cannot run here fails instead of skipping.
#[cfg(test)]
#[path = "../tests/common/require.rs"]
mod require;
#[cfg(test)]
#[path = "../tests/common/tempdir.rs"]
mod tempdir;
