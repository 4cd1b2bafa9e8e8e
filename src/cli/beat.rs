//! `reeve beat`: send heartbeats to a running `reeve watch`.
//!
//! A beat vouches for the process that sends it: the frame carries
//! `reeve beat`'s own pid and the daemon checks it against the kernel's
//! credentials. So a one-shot `reeve beat` says "a process of this user
//! could still run a command", and `reeve beat --every D` is a long-lived
//! beating process that a script runs alongside its work (a rule matching
//! it, with a `beat_timeout`, then says when the script's process tree
//! stops it or when it stops on its own). It ends on SIGTERM or SIGINT
//! with a last `stopping` beat, and on its own when its parent exits, so
//! it never outlives the script that started it.

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::Duration;

use lexopt::prelude::*;

use super::{load_config, print, CliError};
use crate::liveness::client::Client;
use crate::liveness::frame::{Status, PAYLOAD_LEN};
use crate::sys;

pub(super) const BEAT_USAGE: &str = "\
usage: reeve beat [--status STATUS] [--every DURATION] [--socket PATH]
                  [--config FILE] [--note TEXT]

Sends a heartbeat for this process to the daemon's heartbeat socket. The
daemon checks the kernel's credentials: a beat always vouches for the
process that sends it, here `reeve beat` itself.

options:
  --status STATUS    ok (default), degraded, critical or stopping
  --every DURATION   keep beating at this interval (such as 5s) until
                     SIGTERM or SIGINT (a last beat says stopping) or
                     until the parent process exits
  --socket PATH      the socket (default: heartbeat.socket of --config,
                     else /run/reeve/heartbeat.sock)
  --config FILE      read the socket path from this config
  --note TEXT        up to 32 bytes carried in the beat's payload
";

/// The shortest `--every`: faster beats only cost the daemon's rate limit.
const MIN_EVERY: Duration = Duration::from_millis(10);

pub(super) fn beat(p: &mut lexopt::Parser) -> Result<i32, CliError> {
    let mut status = Status::Ok;
    let mut every: Option<Duration> = None;
    let mut socket: Option<PathBuf> = None;
    let mut config: Option<PathBuf> = None;
    let mut payload = [0u8; PAYLOAD_LEN];
    while let Some(arg) = p.next()? {
        match arg {
            Long("status") => {
                let v = p.value()?.string()?;
                status = Status::from_name(&v).ok_or_else(|| {
                    CliError::Usage(format!(
                        "--status: unknown status '{}' (use ok, degraded, critical or stopping)",
                        v.escape_debug()
                    ))
                })?;
            }
            Long("every") => {
                let v = p.value()?.string()?;
                let d = crate::units::parse_duration(&v)
                    .map_err(|e| CliError::Usage(format!("--every: {e}")))?;
                if d < MIN_EVERY {
                    return Err(CliError::Usage("--every: at least 10ms".into()));
                }
                every = Some(d);
            }
            Long("socket") => socket = Some(p.value()?.into()),
            Long("config") => config = Some(p.value()?.into()),
            Long("note") => {
                let v = p.value()?.string()?;
                if v.len() > PAYLOAD_LEN {
                    return Err(CliError::Usage(format!(
                        "--note: {} bytes; at most {PAYLOAD_LEN}",
                        v.len()
                    )));
                }
                payload[..v.len()].copy_from_slice(v.as_bytes());
            }
            Short('h') | Long("help") => return print(BEAT_USAGE).map(|()| 0),
            other => return Err(other.unexpected().into()),
        }
    }
    let socket = match (socket, config) {
        (Some(s), _) => s,
        (None, Some(c)) => load_config(Some(&c))?
            .heartbeat
            .map(|h| h.socket)
            .ok_or_else(|| {
                CliError::Config(format!(
                    "{}: has no heartbeat section; the daemon opens no socket",
                    c.display()
                ))
            })?,
        (None, None) => PathBuf::from(crate::config::HEARTBEAT_SOCKET),
    };
    let mut client = Client::new(&socket).map_err(|e| CliError::Runtime(e.to_string()))?;
    let Some(every) = every else {
        client
            .beat(status, payload)
            .map_err(|e| CliError::Runtime(e.to_string()))?;
        return Ok(0);
    };
    beat_every(&mut client, status, payload, every)
}

/// Beats until a terminating signal (then one `stopping` beat) or until
/// the parent exits. A failed send is said once per run of failures and
/// retried at the next beat: the daemon may be restarting.
fn beat_every(
    client: &mut Client,
    status: Status,
    payload: [u8; PAYLOAD_LEN],
    every: Duration,
) -> Result<i32, CliError> {
    let signals = sys::signalfd_for(&[libc::SIGTERM, libc::SIGINT])
        .map_err(|e| CliError::Runtime(format!("cannot set up signal handling: {e}")))?;
    let parent = std::os::unix::process::parent_id();
    let wait_ms = every.as_millis().min(i32::MAX as u128) as i32;
    let mut failing = false;
    loop {
        match client.beat(status, payload) {
            Ok(()) if failing => {
                eprintln!("reeve beat: beats are delivered again");
                failing = false;
            }
            Ok(()) => {}
            Err(e) if !failing => {
                eprintln!("reeve: {e}; retrying every beat");
                failing = true;
            }
            Err(_) => {}
        }
        let mut fds = [sys::poll_fd(signals.as_raw_fd())];
        sys::poll(&mut fds, wait_ms).map_err(|e| CliError::Runtime(format!("poll: {e}")))?;
        if sys::is_readable(&fds[0]) {
            let sig = sys::read_signal(&signals)
                .map_err(|e| CliError::Runtime(format!("reading signals: {e}")))?;
            if sig.is_some() {
                // The daemon must not read the silence that follows as a
                // stall; a failure here is the same silence, said on stderr.
                if let Err(e) = client.beat(Status::Stopping, payload) {
                    eprintln!("reeve: {e}");
                }
                return Ok(0);
            }
        }
        if std::os::unix::process::parent_id() != parent {
            return Ok(0);
        }
    }
}
