//! `reeve status` and `reeve events`: read-only views of the state
//! directory. They work whether or not a daemon runs, and never create,
//! chmod, modify or set aside anything: a file they cannot use is reported
//! and left where it is.

use std::fmt::Write as _;
use std::path::PathBuf;

use lexopt::prelude::*;
use serde_json::{json, Value};

use super::{load_config, print, CliError};
use crate::cgroup::Group;
use crate::log::iso8601;
use crate::placement::JobRecord;
use crate::state::{self, State};
use crate::store::records::{fold_journal, RECORD_VERSION};
use crate::store::{self, Shown, StateDir};
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
one job (NAME or job.NAME); --follow waits for new events and shows each
once it is durable (unless audit.fsync is \"never\"). A rotated generation
that cannot be read is skipped with a warning.
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
    let dir_problem = StateDir::inspect(dir).err().map(|e| e.to_string());
    let state: Result<Option<State>, String> =
        store::peek_versioned::<State>(dir, state::STATE_FILE, state::STATE_VERSION).map(|s| {
            s.map(|mut s| {
                s.normalise();
                s
            })
        });
    let (records, bad) = job_records(&dir.join("jobs"));
    let jobs: Vec<Value> = records
        .iter()
        .map(|r| {
            let group = Group::new(&r.cgroup);
            let procs = group.procs().ok();
            let net = net_counters(r);
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
                "net": net,
                "pending": r.pending,
            })
        })
        .collect();
    if as_json {
        let v = json!({
            "state_dir": dir,
            "state_dir_problem": dir_problem,
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
    if let Some(p) = &dir_problem {
        let _ = writeln!(out, "state directory: {p}");
    }
    match &state {
        Ok(Some(s)) => {
            let _ = writeln!(out, "state: saved {} ago", age(now, s.saved_at_ms));
            if !s.instance.is_empty() {
                let _ = writeln!(out, "instance: {}", s.instance);
            }
            if s.counters.seen_overflow > 0 {
                let _ = writeln!(
                    out,
                    "discovery: the seen-set was too small for this host's processes ({} pids not held; see the seen_set_full event); restart reeve after raising kernel.pid_max or capacity",
                    s.counters.seen_overflow
                );
            }
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
        if let Some(net) = j["net"].as_object() {
            let _ = writeln!(out, "    net: {}", net_text(net));
        }
    }
    for b in &bad {
        let _ = writeln!(out, "  unusable job record (left in place): {b}");
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

/// The passed and dropped byte counters of a job's network limits, read
/// from the buckets attached to its group; null when it has none set.
fn net_counters(r: &JobRecord) -> Value {
    if r.limits.net_tx.is_none() && r.limits.net_rx.is_none() {
        return Value::Null;
    }
    match crate::cgroup::net::buckets(&r.cgroup) {
        Ok(found) => {
            let mut out = serde_json::Map::new();
            for (dir, b) in crate::cgroup::net::Direction::BOTH.into_iter().zip(found) {
                if dir.wanted(&r.limits).is_none() && b.is_none() {
                    continue;
                }
                let v = b.map_or(
                    json!({"attached": false}),
                    |b| json!({"attached": true, "passed_bytes": b.passed, "dropped_bytes": b.dropped}),
                );
                out.insert(dir.key().to_string(), v);
            }
            Value::Object(out)
        }
        Err(e) => json!({"error": e.to_string()}),
    }
}

/// "net_tx passed=10485760 dropped=52428", or "net_rx not attached" for
/// a limit in the record without its program in the group.
fn net_text(net: &serde_json::Map<String, Value>) -> String {
    if let Some(e) = net.get("error").and_then(Value::as_str) {
        return format!("counters unreadable: {e}");
    }
    let mut parts = Vec::new();
    for (key, v) in net {
        match (v.get("passed_bytes"), v.get("dropped_bytes")) {
            (Some(p), Some(d)) => parts.push(format!("{key} passed={p} dropped={d}")),
            _ => parts.push(format!("{key} not attached")),
        }
    }
    parts.join(" ")
}

/// Every job record in `jobs`, read without changing anything; records
/// that cannot be used are named in the second list, one line each.
fn job_records(jobs: &std::path::Path) -> (Vec<JobRecord>, Vec<String>) {
    let mut out = Vec::new();
    let mut bad = Vec::new();
    let entries = match std::fs::read_dir(jobs) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (out, bad),
        Err(e) => {
            bad.push(format!("{}: cannot list it: {e}", Shown(jobs)));
            return (out, bad);
        }
    };
    for e in entries {
        let name = match e {
            Ok(e) => e.file_name().to_string_lossy().into_owned(),
            Err(e) => {
                bad.push(format!("{}: cannot list it: {e}", Shown(jobs)));
                break;
            }
        };
        if !name.ends_with(".json") || name.starts_with('.') || name == "released.json" {
            continue;
        }
        match store::peek_versioned::<JobRecord>(jobs, &name, RECORD_VERSION) {
            // The daemon's moves into a pool since its record was last
            // written are in the pool's journal.
            Ok(Some(mut r)) => match fold_journal(jobs, &mut r) {
                Ok(()) => out.push(r),
                Err(why) => bad.push(why.to_string()),
            },
            Ok(None) => {}
            Err(why) => bad.push(why),
        }
    }
    out.sort_by(|a, b| a.group.cmp(&b.group));
    (out, bad)
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
    // Following shows an event once the log's writers report it durable,
    // so what scrolls by survives a crash of the machine.
    let hold_back = follow && config.audit.fsync != crate::config::AuditFsync::Never;
    let dir = config.state_dir;
    if !dir.exists() {
        // Silence would look like an empty log; say which directory was
        // read (the config decides it), and go on: --follow waits for it.
        let from = config_path.as_deref().map_or_else(
            || "the embedded defaults".to_string(),
            |p| store::Shown(p).to_string(),
        );
        eprintln!(
            "reeve events: no state directory at {} yet (the state_dir of {from}; is that the daemon's config?)",
            store::Shown(&dir)
        );
    }
    let mut last = since;
    let mut warned = std::collections::HashSet::new();
    loop {
        let mut out = String::new();
        let mut skipped = 0;
        if dir.join("events.jsonl").exists() {
            let durable = if hold_back {
                store::durable_seq(&dir)
            } else {
                None
            };
            let mut reader =
                store::read_events(&dir, last).map_err(|e| CliError::Runtime(e.to_string()))?;
            for v in reader.by_ref() {
                let seq = v.get("seq").and_then(Value::as_u64);
                if let (Some(d), Some(s)) = (durable, seq) {
                    if s > d {
                        break;
                    }
                }
                if seq.is_some() {
                    last = seq;
                }
                if job.as_deref().map_or(true, |j| job_matches(&v, j)) {
                    render(&v, as_json, &mut out);
                }
            }
            skipped = reader.skipped();
            for w in reader.warnings() {
                if warned.insert(w.clone()) {
                    eprintln!("reeve: warning: {w}");
                }
            }
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
