//! The document parser: JSON bytes to a validated [`Config`]. Each function
//! reads one part of the schema (a rule, its matcher, filter, limits and
//! pool, discovery, cgroup, log) through the [`walk`](super::walk) readers,
//! checking every value as the kernel and the rest of reeve will use it.
//!
//! The first problem found is the error, and a document always gives the
//! same one.

use super::walk::Node;
use super::{
    default_state_dir, AuditSettings, Config, ConfigError, Discovery, DiscoveryMode, Filter,
    LogFormat, LogLevel, LogSettings, Match, MetricsSettings, Rule, UserRef, COMM_MAX,
    DEFAULT_CAPACITY, DEFAULT_RESCAN_INTERVAL, DEFAULT_SCAN_INTERVAL, MAX_AGE, MAX_CAPACITY,
    MAX_RULES, MAX_SCAN_INTERVAL, MIN_SCAN_INTERVAL, RULE_NAME_MAX,
};
use crate::cgroup::{self, Limits};
use crate::units::format_duration;
use crate::users::UserDb;
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

/// Parses a whole document; absent `targets` are `default_targets()`.
pub(super) fn document(
    bytes: &[u8],
    users: &UserDb,
    default_targets: fn() -> Vec<Rule>,
) -> Result<Config, ConfigError> {
    let bytes = bytes.strip_prefix("\u{feff}".as_bytes()).unwrap_or(bytes);
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| ConfigError::new("", e.to_string()))?;
    if let Some(path) = super::walk::first_duplicate_key(bytes) {
        return Err(ConfigError::new(
            path,
            "given twice; JSON keeps only the last, so write it once",
        ));
    }
    let top = Node::root(&value).object(&[
        "targets",
        "discovery",
        "capacity",
        "state_dir",
        "cgroup",
        "log",
        "audit",
        "metrics",
        "jobs",
        "heartbeat",
    ])?;
    let targets = top.or("targets", |n| rules(n, users), default_targets)?;
    let discovery = top.or("discovery", discovery, Discovery::default)?;
    let capacity = top.or("capacity", capacity, || DEFAULT_CAPACITY)?;
    let state_dir = top.or("state_dir", Node::absolute_path, default_state_dir)?;
    let cgroup_root = top.or("cgroup", cgroup_root, || None)?;
    let log = top.or("log", log_settings, LogSettings::default)?;
    let audit = top.or("audit", audit_settings, AuditSettings::default)?;
    let metrics = top.or("metrics", |n| metrics_settings(n).map(Some), || None)?;
    let jobs = top.or("jobs", super::jobs::jobs, Vec::new)?;
    let heartbeat = top.or(
        "heartbeat",
        |n| super::heartbeat::settings(n, users).map(Some),
        || None,
    )?;
    if heartbeat.is_none() {
        if let Some(i) = targets.iter().position(|r| r.beat_timeout.is_some()) {
            return Err(ConfigError::new(
                format!("targets[{i}].beat_timeout"),
                "needs a heartbeat section, which opens the socket beats arrive on",
            ));
        }
        if let Some(i) = jobs.iter().position(|j| j.ready.heartbeat) {
            return Err(ConfigError::new(
                format!("jobs[{i}].ready.heartbeat"),
                "needs a heartbeat section, which opens the socket beats arrive on",
            ));
        }
    }
    Ok(Config {
        targets,
        discovery,
        capacity,
        state_dir,
        cgroup_root,
        log,
        audit,
        metrics,
        jobs,
        heartbeat,
    })
}

fn metrics_settings(node: &Node) -> Result<MetricsSettings, ConfigError> {
    let obj = node.object(&["listen", "token_file"])?;
    let listen = obj.or(
        "listen",
        |n| {
            n.string()?.parse::<std::net::SocketAddr>().map_err(|_| {
                n.error(
                    "must be an IP address and port, such as \"127.0.0.1:9188\" or \"[::1]:9188\"",
                )
            })
        },
        || super::DEFAULT_METRICS_LISTEN,
    )?;
    let token_file = obj.or("token_file", |n| n.absolute_path().map(Some), || None)?;
    Ok(MetricsSettings { listen, token_file })
}

fn rules(node: &Node, users: &UserDb) -> Result<Vec<Rule>, ConfigError> {
    let items = node.list("target rules")?;
    if items.is_empty() {
        return Err(node.error("at least one target rule is needed"));
    }
    if items.len() > MAX_RULES {
        return Err(node.error(format!(
            "{} rules; at most {MAX_RULES} are allowed",
            items.len()
        )));
    }
    // A rule's name is its identity (logs, job groups, reloads): unique.
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut out = Vec::with_capacity(items.len());
    for item in &items {
        let rule = rule(item, users)?;
        let at = format!("{}.name", item.path);
        if let Some(first) = seen.get(&rule.name) {
            return Err(ConfigError::new(at, format!("duplicate of {first}")));
        }
        seen.insert(rule.name.clone(), at);
        out.push(rule);
    }
    Ok(out)
}

fn rule(node: &Node, users: &UserDb) -> Result<Rule, ConfigError> {
    let mut fields = vec!["name", "match", "filter", "limits", "pool", "beat_timeout"];
    fields.extend(super::liveness::FIELDS);
    let obj = node.object(&fields)?;
    let name_node = obj.require("name")?;
    let name = name_node.string()?;
    if !valid_rule_name(name) {
        return Err(name_node.error(format!(
            "'{}' is not a valid rule name (use 1 to {RULE_NAME_MAX} of A-Z a-z 0-9 . _ -, \
             other than '.' and '..')",
            name.escape_debug()
        )));
    }
    let matcher = matcher(&obj.require("match")?)?;
    let filter = obj.or("filter", |n| filter(n, users), Filter::default)?;
    let limits = obj.or("limits", limits, Limits::default)?;
    let pool = obj.or("pool", |n| pool(n).map(Some), || None)?;
    let beat_timeout = obj.or(
        "beat_timeout",
        |n| super::heartbeat::beat_timeout(n).map(Some),
        || None,
    )?;
    let own_job = pool.is_none() && !limits.is_empty();
    let liveness = super::liveness::parse(&obj, own_job, pool.as_deref(), beat_timeout.is_some())?;
    Ok(Rule {
        name: name.to_string(),
        matcher,
        filter,
        limits,
        pool,
        liveness,
        beat_timeout,
    })
}

pub(super) fn valid_rule_name(name: &str) -> bool {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
    (1..=RULE_NAME_MAX).contains(&name.len())
        && name.bytes().all(allowed)
        && name != "."
        && name != ".."
}

fn matcher(node: &Node) -> Result<Match, ConfigError> {
    let obj = node.object(&["comm", "exe", "argv0", "cmdline_contains"])?;
    let m = Match {
        comm: obj.strings("comm", check_comm)?,
        exe: obj.strings("exe", check_basename)?,
        argv0: obj.strings("argv0", check_basename)?,
        cmdline_contains: obj.strings("cmdline_contains", |_| Ok(()))?,
    };
    if m.comm.is_empty() && m.exe.is_empty() && m.argv0.is_empty() && m.cmdline_contains.is_empty()
    {
        return Err(node.error(
            "needs at least one non-empty list among comm, exe, argv0 and cmdline_contains",
        ));
    }
    Ok(m)
}

fn check_comm(comm: &str) -> Result<(), String> {
    check_parent_comm(comm).map_err(|m| format!("{m}; match it with exe or argv0"))
}

fn check_parent_comm(comm: &str) -> Result<(), String> {
    if comm.len() > COMM_MAX {
        return Err(format!(
            "'{}' is longer than {COMM_MAX} bytes, the kernel's comm limit",
            comm.escape_debug()
        ));
    }
    check_no_nul(comm)
}

fn check_basename(name: &str) -> Result<(), String> {
    if name.contains('/') {
        let base = name.rsplit('/').find(|p| !p.is_empty()).unwrap_or("ffmpeg");
        return Err(format!(
            "'{}' contains '/'; exe and argv0 match the file name only, such as '{}'",
            name.escape_debug(),
            base.escape_debug()
        ));
    }
    check_no_nul(name)
}

fn check_no_nul(text: &str) -> Result<(), String> {
    if text.contains('\0') {
        return Err("must not contain a NUL byte".to_string());
    }
    Ok(())
}

fn filter(node: &Node, users: &UserDb) -> Result<Filter, ConfigError> {
    let obj = node.object(&[
        "users",
        "exclude_users",
        "parent_pids",
        "exclude_parent_pids",
        "parent_comms",
        "exclude_parent_comms",
        "min_age",
        "max_age",
        "cwd_prefixes",
    ])?;
    let user = |n: &Node| user_ref(n, users);
    let f = Filter {
        users: obj.items("users", "user names or uids", user)?,
        exclude_users: obj.items("exclude_users", "user names or uids", user)?,
        parent_pids: obj.items("parent_pids", "pids", pid)?,
        exclude_parent_pids: obj.items("exclude_parent_pids", "pids", pid)?,
        parent_comms: obj.strings("parent_comms", check_parent_comm)?,
        exclude_parent_comms: obj.strings("exclude_parent_comms", check_parent_comm)?,
        min_age: obj.or("min_age", |n| n.duration().map(Some), || None)?,
        max_age: obj.or("max_age", |n| n.duration().map(Some), || None)?,
        cwd_prefixes: obj.items("cwd_prefixes", "absolute paths", Node::absolute_path)?,
    };
    check_ages(&f, &obj)?;
    Ok(f)
}

/// Refuses ages no process can meet: a `max_age` of zero (every process
/// is older), a `min_age` beyond [`MAX_AGE`] (no host has been up that
/// long), a `min_age` above the `max_age`.
fn check_ages(f: &Filter, obj: &super::walk::Object) -> Result<(), ConfigError> {
    if let (Some(max), Some(at)) = (f.max_age, obj.get("max_age")) {
        if max.is_zero() {
            return Err(at.error(
                "0s matches no process (every process is older); remove it or give a positive age",
            ));
        }
    }
    if let (Some(min), Some(at)) = (f.min_age, obj.get("min_age")) {
        if min > MAX_AGE {
            return Err(at.error(format!(
                "{} is more than {}; no process on a running host is that old",
                format_duration(min),
                format_duration(MAX_AGE)
            )));
        }
        if let Some(max) = f.max_age.filter(|&max| min > max) {
            return Err(at.error(format!(
                "{} is more than max_age {}",
                format_duration(min),
                format_duration(max)
            )));
        }
    }
    Ok(())
}

pub(super) fn user_ref(node: &Node, users: &UserDb) -> Result<UserRef, ConfigError> {
    match node.value {
        Value::String(name) => match users.uid_of(name) {
            Some(uid) => Ok(UserRef {
                name: Some(name.clone()),
                uid,
            }),
            None => Err(node.error(format!(
                "unknown user '{}' (not in /etc/passwd; give the uid as a number instead)",
                name.escape_debug()
            ))),
        },
        Value::Number(_) => {
            let uid = node.whole()?;
            match u32::try_from(uid) {
                Ok(uid) if uid != u32::MAX => Ok(UserRef { name: None, uid }),
                _ => Err(node.error("a uid must be between 0 and 4294967294")),
            }
        }
        _ => Err(node.error("expected a user name or a uid")),
    }
}

fn pid(node: &Node) -> Result<u32, ConfigError> {
    match node.whole()? {
        pid @ 1..=0x7fff_ffff => Ok(pid as u32),
        _ => Err(node.error("a pid must be between 1 and 2147483647")),
    }
}

/// A rule's `limits`, checked by the same parser as the command line's
/// limit flags; its errors carry the full path (`targets[0].limits.cpu`).
pub(super) fn limits(node: &Node) -> Result<Limits, ConfigError> {
    cgroup::limits_from_json(node.value, &node.path).map_err(|e| ConfigError {
        path: e.path,
        message: e.message,
    })
}

/// A pool name, which becomes the cgroup directory `pool.<name>`.
fn pool(node: &Node) -> Result<String, ConfigError> {
    let name = node.string()?;
    cgroup::validate_job_name(name).map_err(|why| {
        node.error(format!(
            "'{}' is not a valid pool name: {why} (use 1 to {} of A-Z a-z 0-9 . _ -)",
            name.escape_debug(),
            cgroup::MAX_NAME_LEN
        ))
    })?;
    Ok(name.to_string())
}

/// The `cgroup` object: `root`, the directory reeve's groups live under.
/// Without it the hierarchy is detected.
fn cgroup_root(node: &Node) -> Result<Option<PathBuf>, ConfigError> {
    let obj = node.object(&["root"])?;
    obj.or("root", |n| n.absolute_path().map(Some), || None)
}

fn discovery(node: &Node) -> Result<Discovery, ConfigError> {
    let obj = node.object(&["mode", "scan_interval", "rescan_interval"])?;
    let scan = obj.or("scan_interval", scan_interval, || DEFAULT_SCAN_INTERVAL)?;
    let rescan = obj.or("rescan_interval", scan_interval, || {
        DEFAULT_RESCAN_INTERVAL.max(scan)
    })?;
    if let Some(node) = obj.get("rescan_interval").filter(|_| rescan < scan) {
        return Err(node.error(
            format!(
                "{} is shorter than scan_interval ({}); the safety-net rescan cannot run more often than the polling scan",
                format_duration(rescan),
                format_duration(scan)
            ),
        ));
    }
    Ok(Discovery {
        mode: obj.or("mode", Node::choice, DiscoveryMode::default)?,
        scan_interval: scan,
        rescan_interval: rescan,
    })
}

fn scan_interval(node: &Node) -> Result<Duration, ConfigError> {
    let d = node.duration()?;
    if !(MIN_SCAN_INTERVAL..=MAX_SCAN_INTERVAL).contains(&d) {
        return Err(node.error(format!(
            "{} is out of range (allowed: {} to {})",
            format_duration(d),
            format_duration(MIN_SCAN_INTERVAL),
            format_duration(MAX_SCAN_INTERVAL)
        )));
    }
    Ok(d)
}

fn capacity(node: &Node) -> Result<usize, ConfigError> {
    match usize::try_from(node.whole()?) {
        Ok(n) if (1..=MAX_CAPACITY).contains(&n) => Ok(n),
        _ => Err(node.error(format!("must be between 1 and {MAX_CAPACITY}, the maximum"))),
    }
}

fn audit_settings(node: &Node) -> Result<AuditSettings, ConfigError> {
    let obj = node.object(&["fsync", "fsync_interval", "rotate_size", "keep"])?;
    let d = AuditSettings::default();
    let keep = obj.or(
        "keep",
        |n| match u32::try_from(n.whole()?) {
            Ok(k) if (1..=1000).contains(&k) => Ok(k),
            _ => Err(n.error("must be between 1 and 1000")),
        },
        || d.keep,
    )?;
    let rotate_size = obj.or(
        "rotate_size",
        |n| match crate::units::parse_size(n.string()?) {
            Ok(crate::units::SizeLimit::Bytes(b)) if b >= 64 * 1024 => Ok(b),
            Ok(_) => Err(n.error("must be a size of at least 64K")),
            Err(e) => Err(n.error(e.to_string())),
        },
        || d.rotate_size,
    )?;
    let fsync_interval = obj.or(
        "fsync_interval",
        |n| {
            let v = n.duration()?;
            if v < Duration::from_millis(10) || v > Duration::from_secs(3600) {
                return Err(n.error("must be between 10ms and 1h"));
            }
            Ok(v)
        },
        || d.fsync_interval,
    )?;
    Ok(AuditSettings {
        fsync: obj.or("fsync", Node::choice, || d.fsync)?,
        fsync_interval,
        rotate_size,
        keep,
    })
}

fn log_settings(node: &Node) -> Result<LogSettings, ConfigError> {
    let obj = node.object(&["format", "level"])?;
    Ok(LogSettings {
        format: obj.or("format", Node::choice, LogFormat::default)?,
        level: obj.or("level", Node::choice, LogLevel::default)?,
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::{parse_ok, users, FULL};
    use super::*;
    use crate::cgroup::{IoRate, PidsLimit};
    use crate::units::{CpuLimit, SizeLimit};

    #[test]
    fn audit_settings() {
        let c = parse_ok(
            r#"{"audit":{"fsync":"interval","fsync_interval":"250ms","rotate_size":"16M","keep":3}}"#,
        );
        assert_eq!(c.audit.fsync, crate::config::AuditFsync::Interval);
        assert_eq!(c.audit.fsync_interval, Duration::from_millis(250));
        assert_eq!(c.audit.rotate_size, 16 << 20);
        assert_eq!(c.audit.keep, 3);
        let again = parse_ok(&c.to_pretty_json());
        assert_eq!(again, c);
        assert_eq!(parse_ok("{}").audit, AuditSettings::default());
        for (doc, path) in [
            (r#"{"audit":{"fsync":"sometimes"}}"#, "audit.fsync"),
            (r#"{"audit":{"keep":0}}"#, "audit.keep"),
            (r#"{"audit":{"rotate_size":"1K"}}"#, "audit.rotate_size"),
            (
                r#"{"audit":{"fsync_interval":"1ms"}}"#,
                "audit.fsync_interval",
            ),
            (r#"{"audit":{"colour":1}}"#, "audit.colour"),
        ] {
            let e = Config::from_json(doc.as_bytes(), &users()).unwrap_err();
            assert_eq!(e.path, path, "{doc}: {e}");
        }
    }

    #[test]
    fn full_document_parses_and_resolves_users() {
        let c = parse_ok(FULL);
        let f = &c.targets[0].filter;
        let named = |name: &str, uid| UserRef {
            name: Some(name.to_string()),
            uid,
        };
        let numbered = |uid| UserRef { name: None, uid };
        assert_eq!(
            f.users,
            [named("encoder", 1001), numbered(1001), numbered(0)]
        );
        assert_eq!(f.exclude_users, [named("root", 0)]);
        assert_eq!(f.parent_pids, [1]);
        assert_eq!(f.min_age, Some(Duration::ZERO));
        assert_eq!(f.max_age, Some(Duration::from_secs(3600)));
        let prefixes: Vec<_> = f.cwd_prefixes.iter().map(|p| p.to_str().unwrap()).collect();
        assert_eq!(prefixes, ["/srv/encode", "/", "/tmp/x"]);
        assert_eq!(c.targets[1].matcher.argv0, ["gst-launch-1.0"]);
        assert_eq!(c.targets[1].filter, Filter::default());
        assert_eq!(c.discovery.mode, DiscoveryMode::Netlink);
        assert_eq!(c.discovery.scan_interval, Duration::from_millis(1500));
        assert_eq!(c.discovery.rescan_interval, Duration::from_secs(60));
        assert_eq!(c.capacity, MAX_CAPACITY);
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/reeve"));
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.log.level, LogLevel::Debug);
    }

    #[test]
    fn full_document_sets_governance() {
        let c = parse_ok(FULL);
        let l = &c.targets[0].limits;
        assert_eq!(l.cpu, Some(CpuLimit::Millicores(2500)));
        assert_eq!(l.cpu_period_us, Some(50_000));
        assert_eq!(l.memory, Some(SizeLimit::Bytes(4 << 30)));
        assert_eq!(l.swap, Some(SizeLimit::Bytes(0)));
        assert_eq!(l.pids, Some(PidsLimit::Count(64)));
        assert_eq!(l.cpuset.as_deref(), Some("0-3,5"));
        assert_eq!(l.io.len(), 2);
        assert_eq!(l.io[1].wbps, Some(IoRate::Value(1_048_577)));
        assert_eq!(c.targets[0].pool, None);
        let pooled = &c.targets[1];
        assert_eq!(pooled.pool.as_deref(), Some("live.encoders"));
        assert_eq!(pooled.limits.cpu, Some(CpuLimit::Millicores(15)));
        assert_eq!(pooled.limits.pids, Some(PidsLimit::Max));
        assert_eq!(pooled.limits.memory, Some(SizeLimit::Max));
        assert_eq!(
            c.cgroup_root,
            Some(PathBuf::from("/sys/fs/cgroup/encoders"))
        );
        assert_eq!(parse_ok(r#"{"cgroup":{}}"#).cgroup_root, None);
        let empty = parse_ok(r#"{"targets":[{"name":"a","match":{"comm":["a"]},"limits":{}}]}"#);
        assert!(empty.targets[0].limits.is_empty());
    }

    /// Bad documents with the path and (part of) the message each must give.
    #[rustfmt::skip]
    fn bad_documents() -> Vec<(String, &'static str, &'static str)> {
        let rule = |body: &str| format!(r#"{{"targets":[{{"name":"a","match":{{"comm":["a"]}}}},{body}]}}"#);
        let filter = |body: &str| rule(&format!(r#"{{"name":"b","match":{{"comm":["b"]}},"filter":{body}}}"#));
        vec![
            ("{\"tragets\": []}".into(), "tragets", "unknown field (expected one of: targets, discovery, capacity, state_dir, cgroup, log, audit, metrics, jobs, heartbeat)"),
            (r#"{"metrics":{"listen":"localhost:9188"}}"#.into(), "metrics.listen", "must be an IP address and port"),
            (r#"{"metrics":{"listen":"127.0.0.1"}}"#.into(), "metrics.listen", "must be an IP address and port"),
            (r#"{"metrics":{"token_file":"token"}}"#.into(), "metrics.token_file", "not an absolute path"),
            (r#"{"metrics":{"port":9188}}"#.into(), "metrics.port", "unknown field (expected one of: listen, token_file)"),
            (filter(r#"{"usres":[]}"#), "targets[1].filter.usres", "unknown field (expected one of: users,"),
            (rule(r#"{"name":"b","match":{"comm":["b"]},"extra":1}"#), "targets[1].extra", "unknown field (expected one of: name, match, filter, limits, pool, beat_timeout, stall_after, on_stall, on_exit, guard)"),
            ("[]".into(), "", "expected an object"),
            (r#"{"targets":{}}"#.into(), "targets", "expected a list of target rules"),
            (r#"{"targets":[]}"#.into(), "targets", "at least one target rule is needed"),
            (rule(r#"{"name":"b","match":{"comm":"b"}}"#), "targets[1].match.comm", "expected a list of strings"),
            (rule(r#"{"name":"b","match":{"comm":["b",7]}}"#), "targets[1].match.comm[1]", "expected a string"),
            (rule(r#"{"name":5,"match":{"comm":["b"]}}"#), "targets[1].name", "expected a string"),
            (rule(r#"{"match":{"comm":["b"]}}"#), "targets[1]", "missing required field 'name'"),
            (rule(r#"{"name":"b"}"#), "targets[1]", "missing required field 'match'"),
            (rule(r#"{"name":"a","match":{"comm":["b"]}}"#), "targets[1].name", "duplicate of targets[0].name"),
            (r#"{"capacity":1,"targets":[],"capacity":2}"#.into(), "capacity", "given twice; JSON keeps only the last"),
            (r#"{"targets":[{"name":"a","match":{"comm":["a"]}}],"targets":[{"name":"b","match":{"comm":["b"]}}]}"#.into(), "targets", "given twice"),
            (rule(r#"{"name":"b","match":{"comm":["b"],"comm":["c"]}}"#), "targets[1].match.comm", "given twice"),
            (filter(r#"{"max_age":"0s"}"#), "targets[1].filter.max_age", "0s matches no process"),
            (filter(r#"{"max_age":"0ms","min_age":"0s"}"#), "targets[1].filter.max_age", "matches no process"),
            (filter(r#"{"min_age":"100000h"}"#), "targets[1].filter.min_age", "no process on a running host is that old"),
            (format!(r#"{{"targets":[{}]}}"#, (0..65).map(|i| format!(r#"{{"name":"r{i}","match":{{"comm":["x"]}}}}"#)).collect::<Vec<_>>().join(",")), "targets", "65 rules; at most 64"),
            (rule(r#"{"name":"../x","match":{"comm":["b"]}}"#), "targets[1].name", "'../x' is not a valid rule name"),
            (rule(r#"{"name":"","match":{"comm":["b"]}}"#), "targets[1].name", "is not a valid rule name"),
            (rule(r#"{"name":"..","match":{"comm":["b"]}}"#), "targets[1].name", "is not a valid rule name"),
            (rule(&format!(r#"{{"name":"{}","match":{{"comm":["b"]}}}}"#, "n".repeat(65))), "targets[1].name", "is not a valid rule name"),
            (rule(r#"{"name":"b","match":{"comm":[],"exe":[]}}"#), "targets[1].match", "needs at least one non-empty list"),
            (rule(r#"{"name":"b","match":{"exe":[""]}}"#), "targets[1].match.exe[0]", "must not be empty"),
            (rule(r#"{"name":"b","match":{"comm":["gst-launch-1.0-x"]}}"#), "targets[1].match.comm[0]", "'gst-launch-1.0-x' is longer than 15 bytes, the kernel's comm limit; match it with exe or argv0"),
            (rule(r#"{"name":"b","match":{"exe":["/usr/bin/ffmpeg"]}}"#), "targets[1].match.exe[0]", "contains '/'; exe and argv0 match the file name only, such as 'ffmpeg'"),
            (rule(r#"{"name":"b","match":{"argv0":["./enc"]}}"#), "targets[1].match.argv0[0]", "contains '/'"),
            (filter(r#"{"users":["encoder",1001,"bob"]}"#), "targets[1].filter.users[2]", "unknown user 'bob'"),
            (filter(r#"{"exclude_users":[true]}"#), "targets[1].filter.exclude_users[0]", "expected a user name or a uid"),
            (filter(r#"{"users":[-1]}"#), "targets[1].filter.users[0]", "expected a whole number"),
            (filter(r#"{"users":[4294967295]}"#), "targets[1].filter.users[0]", "a uid must be between"),
            (filter(r#"{"parent_pids":[0]}"#), "targets[1].filter.parent_pids[0]", "a pid must be between 1 and"),
            (filter(r#"{"parent_pids":[1.5]}"#), "targets[1].filter.parent_pids[0]", "expected a whole number"),
            (filter(r#"{"parent_comms":["a-very-long-parent"]}"#), "targets[1].filter.parent_comms[0]", "the kernel's comm limit"),
            (filter(r#"{"min_age":"5"}"#), "targets[1].filter.min_age", "\"5\": missing unit (use us, ms, s, m or h)"),
            (filter(r#"{"max_age":5}"#), "targets[1].filter.max_age", "expected a duration string"),
            (filter(r#"{"min_age":"2m","max_age":"1m"}"#), "targets[1].filter.min_age", "2m is more than max_age 1m"),
            (filter(r#"{"cwd_prefixes":["srv/encode"]}"#), "targets[1].filter.cwd_prefixes[0]", "'srv/encode' is not an absolute path"),
            (filter(r#"{"cwd_prefixes":["/srv/../etc"]}"#), "targets[1].filter.cwd_prefixes[0]", "has a '.' or '..' part"),
            (filter("[]"), "targets[1].filter", "expected an object"),
            (r#"{"discovery":{"scan_interval":"5ms"}}"#.into(), "discovery.scan_interval", "5ms is out of range (allowed: 10ms to 1h)"),
            (r#"{"discovery":{"scan_interval":"2h"}}"#.into(), "discovery.scan_interval", "out of range"),
            (r#"{"discovery":{"scan_interval":"1 s"}}"#.into(), "discovery.scan_interval", "unknown unit ' s'"),
            (r#"{"discovery":{"rescan_interval":"2h"}}"#.into(), "discovery.rescan_interval", "out of range"),
            (r#"{"discovery":{"scan_interval":"5s","rescan_interval":"2s"}}"#.into(), "discovery.rescan_interval", "shorter than scan_interval (5s)"),
            (r#"{"discovery":{"mode":"inotify"}}"#.into(), "discovery.mode", "unknown value 'inotify' (expected one of: auto, netlink, poll)"),
            (r#"{"capacity":0}"#.into(), "capacity", "must be between 1 and 262144"),
            (r#"{"capacity":262145}"#.into(), "capacity", "must be between 1 and 262144, the maximum"),
            (r#"{"capacity":"4096"}"#.into(), "capacity", "expected a whole number"),
            (r#"{"state_dir":"state"}"#.into(), "state_dir", "not an absolute path"),
            (r#"{"log":{"level":"verbose"}}"#.into(), "log.level", "unknown value 'verbose' (expected one of: debug, info, warn, error)"),
            (r#"{"log":{"format":"xml"}}"#.into(), "log.format", "expected one of: text, json"),
            (r#"{"log":{"colour":true}}"#.into(), "log.colour", "unknown field (expected one of: format, level)"),
            (rule(r#"{"name":"b","match":{"comm":["b"]},"limits":{"memory":"lots"}}"#), "targets[1].limits.memory", "lots"),
            (rule(r#"{"name":"b","match":{"comm":["b"]},"limits":{"memory":"0"}}"#), "targets[1].limits.memory", "a memory limit of zero"),
            (rule(r#"{"name":"b","match":{"comm":["b"]},"limits":{"cpu_period":"50ms"}}"#), "targets[1].limits.cpu_period", "without a CPU limit"),
            (rule(r#"{"name":"b","match":{"comm":["b"]},"limits":{"io":[{"device":"8:0"}]}}"#), "targets[1].limits.io[0]", "no limit for device 8:0"),
            (rule(r#"{"name":"b","match":{"comm":["b"]},"limits":{"colour":1}}"#), "targets[1].limits.colour", "unknown limit"),
            (rule(r#"{"name":"b","match":{"comm":["b"]},"limits":[]}"#), "targets[1].limits", "expected an object of limits"),
            (r#"{"targets":[{"name":"a","match":{"comm":["a"]},"pool":"../x"}]}"#.into(), "targets[0].pool", "'../x' is not a valid pool name: '/' is not allowed"),
            (r#"{"targets":[{"name":"a","match":{"comm":["a"]},"pool":""}]}"#.into(), "targets[0].pool", "is not a valid pool name: empty"),
            (r#"{"targets":[{"name":"a","match":{"comm":["a"]},"pool":7}]}"#.into(), "targets[0].pool", "expected a string"),
            (r#"{"cgroup":{"root":"encoders"}}"#.into(), "cgroup.root", "'encoders' is not an absolute path"),
            (r#"{"cgroup":{"root":"/sys/fs/cgroup/../x"}}"#.into(), "cgroup.root", "has a '.' or '..' part"),
            (r#"{"a\nb":1}"#.into(), "a\\nb", "unknown field"),
            (r#"{"cgroup":{"bogus":1}}"#.into(), "cgroup.bogus", "unknown field (expected one of: root)"),
            (r#"{"cgroup":"/sys/fs/cgroup"}"#.into(), "cgroup", "expected an object"),
            ("{\"capacity\": 1,}".into(), "", "trailing comma at line 1 column 16"),
            ("".into(), "", "EOF while parsing"),
        ]
    }

    #[test]
    fn each_bad_document_names_its_field() {
        for (doc, path, message) in bad_documents() {
            let err = Config::from_json(doc.as_bytes(), &users()).expect_err(&doc);
            assert_eq!(err.path, path, "{doc} -> {err}");
            assert!(err.message.contains(message), "{doc} -> {err}");
            assert!(!err.to_string().contains('\n'), "{err}");
        }
    }

    #[test]
    fn odd_documents_never_panic() {
        let docs = [
            "null",
            "1",
            "\"x\"",
            "{\"targets\":null}",
            "{\"targets\":[null]}",
            "{\"targets\":[{\"name\":\"a\",\"match\":null}]}",
            "\u{feff}{}",
            "{\"state_dir\":\"/\\u0000\"}",
            "{\"capacity\":1e3}",
            "{\"capacity\":-1}",
            "{\"capacity\":18446744073709551616}",
            "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
        ];
        for doc in docs {
            let _ = Config::from_json(doc.as_bytes(), &users());
        }
        let deep = "[".repeat(100_000);
        assert!(Config::from_json(deep.as_bytes(), &users()).is_err());
        assert!(Config::from_json("\u{feff}{}".as_bytes(), &users()).is_ok());
        assert!(Config::from_json(&[0xff, 0xfe], &users()).is_err());
    }
}
