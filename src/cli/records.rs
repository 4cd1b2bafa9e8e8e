//! `reeve status` and `reeve events`: read-only views of the state
//! directory. They work whether or not a daemon runs, and never modify or
//! set aside what they read.

use std::fmt::Write as _;
use std::path::PathBuf;

use lexopt::prelude::*;
use serde_json::{json, Value};

use super::{load_config, print, CliError};
use crate::cgroup::Group;
use crate::log::iso8601;
use crate::placement::Records;
use crate::state::{self, State};
use crate::store;
use crate::sys;

pub const STATUS_USAGE: &str = "\
usage: reeve status [--config FILE] [--json]

Shows whether the daemon runs, every job with its cgroup, processes and
limits (and whether they are in force), and the tracked processes, from the
state directory. Works with or without a running daemon.
";

pub const EVENTS_USAGE: &str = "\
usage: reeve events [--since SEQ] [--job NAME] [--follow] [--json] [--config FILE]

Prints the audit event log across its rotated generations, oldest first.
--since SEQ starts after that sequence number; --job keeps the events of
one job (NAME or job.NAME); --follow waits for new events.
";

fn age(now_ms: u64, then_ms: u64) -> String {
    let s = now_ms.saturating_sub(then_ms) / 1000;
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

pub fn status(p: &mut lexopt::Parser) -> Result<(), CliError> {
    let mut config_path: Option<PathBuf> = None;
    let mut as_json = false;
    while let Some(arg) = p.next()? {
        match arg {
            Long("config") => config_path = Some(p.value()?.into()),
            Long("json") => as_json = true,
            Short('h') | Long("help") => return print(STATUS_USAGE),
            other => return Err(other.unexpected().into()),
        }
    }
    let config = load_config(config_path.as_deref())?;
    let dir = &config.state_dir;
    let now = sys::realtime_ms();
    let daemon = state::running_daemon(dir);
    let state_file = dir.join(state::STATE_FILE);
    let state: Result<Option<State>, String> = match std::fs::read(&state_file) {
        Ok(bytes) => serde_json::from_slice::<State>(&bytes)
            .map(|mut s| {
                s.normalise();
                Some(s)
            })
            .map_err(|e| format!("{}: unreadable: {e}", state_file.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", state_file.display())),
    };
    let (records, bad) = if dir.join("jobs").is_dir() {
        Records::open(dir).map_or((Vec::new(), Vec::new()), |r| r.all())
    } else {
        (Vec::new(), Vec::new())
    };
    let jobs: Vec<Value> = records
        .iter()
        .map(|r| {
            let group = Group::new(&r.cgroup);
            let procs = group.procs().ok();
            json!({
                "group": r.group,
                "cgroup": r.cgroup,
                "pool": r.pool,
                "exists": r.cgroup.is_dir(),
                "procs": procs,
                "limits": r.limits,
                "limits_text": r.limits.describe(),
                "in_force": r.in_force,
                "problems": r.problems,
                "created_ms": r.created_ms,
                "members": r.members,
            })
        })
        .collect();
    if as_json {
        let v = json!({
            "state_dir": dir,
            "daemon": {"running": daemon.is_some(), "pid": daemon},
            "state": state.as_ref().ok().cloned().flatten(),
            "state_error": state.as_ref().err(),
            "jobs": jobs,
            "unreadable_job_records": bad,
        });
        return print(&format!("{v}\n"));
    }
    let mut out = String::new();
    let _ = match daemon {
        Some(0) => writeln!(out, "daemon: running (state directory {})", dir.display()),
        Some(pid) => writeln!(
            out,
            "daemon: running, pid {pid} (state directory {})",
            dir.display()
        ),
        None => writeln!(
            out,
            "daemon: not running (state directory {})",
            dir.display()
        ),
    };
    match &state {
        Ok(Some(s)) => {
            let _ = writeln!(out, "state: saved {} ago", age(now, s.saved_at_ms));
        }
        Ok(None) => out.push_str("state: none saved yet\n"),
        Err(e) => {
            let _ = writeln!(out, "state: {e}");
        }
    }
    let _ = writeln!(out, "jobs: {}", records.len());
    for (r, j) in records.iter().zip(&jobs) {
        let procs = j["procs"]
            .as_array()
            .map_or("gone".to_string(), |a| a.len().to_string());
        let limits = if r.limits.is_empty() {
            "none".to_string()
        } else if r.in_force {
            format!("{} (in force)", r.limits.describe())
        } else {
            format!("{} (NOT in force)", r.limits.describe())
        };
        let _ = writeln!(
            out,
            "  {:<28} procs={:<4} age={:<5} limits={}  {}",
            r.group,
            procs,
            age(now, r.created_ms),
            limits,
            r.cgroup.display()
        );
        for p in &r.problems {
            let _ = writeln!(out, "    problem: {p}");
        }
    }
    for b in &bad {
        let _ = writeln!(out, "  unreadable job record: {b}");
    }
    if let Ok(Some(s)) = &state {
        let live: Vec<_> = s.processes.iter().filter(|p| p.exited_ms == 0).collect();
        let _ = writeln!(out, "processes: {} tracked", live.len());
        for p in live {
            let _ = writeln!(
                out,
                "  pid={:<8} rule={:<16} comm={:<16} age={}",
                p.pid,
                p.rule,
                p.comm,
                age(now, p.discovered_ms)
            );
        }
    }
    print(&out)
}

fn job_matches(v: &Value, job: &str) -> bool {
    let Some(j) = v.get("job").and_then(Value::as_str) else {
        return false;
    };
    j == job || j.split_once('.').is_some_and(|(_, n)| n == job)
}

fn render(v: &Value, as_json: bool, out: &mut String) {
    if as_json {
        let _ = writeln!(out, "{v}");
        return;
    }
    let seq = v.get("seq").and_then(Value::as_u64).unwrap_or(0);
    let ts = v.get("ts_ms").and_then(Value::as_u64).unwrap_or(0);
    let event = v.get("event").and_then(Value::as_str).unwrap_or("?");
    let _ = write!(out, "{seq:>6} ");
    iso8601(out, ts);
    let _ = write!(out, " {event}");
    if let Some(obj) = v.as_object() {
        for (k, val) in obj {
            if matches!(k.as_str(), "seq" | "ts_ms" | "event") {
                continue;
            }
            match val {
                Value::String(s) if !s.contains(' ') && !s.is_empty() => {
                    let _ = write!(out, " {k}={s}");
                }
                other => {
                    let _ = write!(out, " {k}={other}");
                }
            }
        }
    }
    out.push('\n');
}

pub fn events(p: &mut lexopt::Parser) -> Result<(), CliError> {
    let mut config_path: Option<PathBuf> = None;
    let mut as_json = false;
    let mut follow = false;
    let mut since: Option<u64> = None;
    let mut job: Option<String> = None;
    while let Some(arg) = p.next()? {
        match arg {
            Long("config") => config_path = Some(p.value()?.into()),
            Long("json") => as_json = true,
            Long("follow") => follow = true,
            Long("job") => job = Some(p.value()?.string()?),
            Long("since") => {
                let v = p.value()?.string()?;
                since = Some(v.parse().map_err(|_| {
                    CliError::Usage(format!("--since needs a sequence number, not '{v}'"))
                })?);
            }
            Short('h') | Long("help") => return print(EVENTS_USAGE),
            other => return Err(other.unexpected().into()),
        }
    }
    let config = load_config(config_path.as_deref())?;
    let dir = config.state_dir;
    let mut last = since;
    loop {
        let mut out = String::new();
        let mut skipped = 0;
        if dir.join("events.jsonl").exists() {
            let mut reader =
                store::read_events(&dir, last).map_err(|e| CliError::Runtime(e.to_string()))?;
            for v in reader.by_ref() {
                if let Some(seq) = v.get("seq").and_then(Value::as_u64) {
                    last = Some(seq);
                }
                if job.as_deref().map_or(true, |j| job_matches(&v, j)) {
                    render(&v, as_json, &mut out);
                }
            }
            skipped = reader.skipped();
        }
        print(&out)?;
        if skipped > 0 {
            eprintln!("reeve: {skipped} undecodable lines in the event log were skipped");
        }
        if !follow {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}
