//! `heartbeat`: the listener's socket, who may write to it and how fast, and
//! the size of the senders' table; and a rule's `beat_timeout`.
//!
//! The section's presence turns the listener on (like `metrics`); absent,
//! no socket is opened and no rule may set `beat_timeout`. A group given by
//! name is resolved when the daemon opens the socket (the parser reads no
//! file but the config).

use super::walk::Node;
use super::{ConfigError, UserRef};
use crate::users::UserDb;
use serde::{Serialize, Serializer};
use std::path::PathBuf;
use std::time::Duration;

/// `heartbeat.socket` when not set.
pub const DEFAULT_SOCKET: &str = "/run/reeve/heartbeat.sock";
/// `heartbeat.mode` when not set: owner and group may write.
pub const DEFAULT_MODE: u32 = 0o660;
/// `heartbeat.rate_per_pid` when not set (beats a second, and burst).
pub const DEFAULT_RATE_PER_PID: u32 = 50;
/// `heartbeat.rate_global` when not set.
pub const DEFAULT_RATE_GLOBAL: u32 = 200_000;
/// `heartbeat.capacity` when not set, and its maximum.
pub const DEFAULT_SENDERS: usize = 4096;
pub const MAX_SENDERS: usize = 65_536;
/// `beat_timeout` bounds.
pub const MIN_BEAT_TIMEOUT: Duration = Duration::from_millis(10);
pub const MAX_BEAT_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// The socket's group: a name (resolved in /etc/group at start) or a gid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupRef {
    Name(String),
    Gid(u32),
}

impl Serialize for GroupRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            GroupRef::Name(n) => s.serialize_str(n),
            GroupRef::Gid(g) => s.serialize_u32(*g),
        }
    }
}

/// `heartbeat`: see docs/CONFIGURATION.md.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeartbeatSettings {
    #[serde(serialize_with = "super::print::path")]
    pub socket: PathBuf,
    /// Permission bits of the socket file.
    #[serde(serialize_with = "mode")]
    pub mode: u32,
    /// `None`: the socket keeps reeve's own group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<GroupRef>,
    /// Users whose processes may beat although no rule tracks them.
    pub allow_uids: Vec<UserRef>,
    pub rate_per_pid: u32,
    pub rate_global: u32,
    /// Senders held at once (the table is allocated at start).
    pub capacity: usize,
}

impl Default for HeartbeatSettings {
    fn default() -> HeartbeatSettings {
        HeartbeatSettings {
            socket: PathBuf::from(DEFAULT_SOCKET),
            mode: DEFAULT_MODE,
            group: None,
            allow_uids: Vec::new(),
            rate_per_pid: DEFAULT_RATE_PER_PID,
            rate_global: DEFAULT_RATE_GLOBAL,
            capacity: DEFAULT_SENDERS,
        }
    }
}

fn mode<S: Serializer>(m: &u32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{m:04o}"))
}

/// Reads the `heartbeat` object.
pub(super) fn settings(node: &Node, users: &UserDb) -> Result<HeartbeatSettings, ConfigError> {
    let obj = node.object(&[
        "socket",
        "mode",
        "group",
        "allow_uids",
        "rate_per_pid",
        "rate_global",
        "capacity",
    ])?;
    let d = HeartbeatSettings::default();
    let socket = obj.or("socket", socket_path, || d.socket.clone())?;
    let mode = obj.or("mode", socket_mode, || d.mode)?;
    let group = obj.or("group", |n| group(n).map(Some), || None)?;
    let allow_uids = obj.items("allow_uids", "user names or uids", |n| {
        super::parse::user_ref(n, users)
    })?;
    let rate = |n: &Node, max: u32| match u32::try_from(n.whole()?) {
        Ok(r) if (1..=max).contains(&r) => Ok(r),
        _ => Err(n.error(format!("must be between 1 and {max} beats a second"))),
    };
    let rate_per_pid = obj.or("rate_per_pid", |n| rate(n, 1_000_000), || d.rate_per_pid)?;
    let rate_global = obj.or("rate_global", |n| rate(n, 10_000_000), || d.rate_global)?;
    let capacity = obj.or(
        "capacity",
        |n| match usize::try_from(n.whole()?) {
            Ok(c) if (1..=MAX_SENDERS).contains(&c) => Ok(c),
            _ => Err(n.error(format!("must be between 1 and {MAX_SENDERS}"))),
        },
        || d.capacity,
    )?;
    Ok(HeartbeatSettings {
        socket,
        mode,
        group,
        allow_uids,
        rate_per_pid,
        rate_global,
        capacity,
    })
}

fn socket_path(n: &Node) -> Result<PathBuf, ConfigError> {
    let p = n.absolute_path()?;
    let len = p.as_os_str().len();
    if len > crate::sys::SOCKET_PATH_MAX {
        return Err(n.error(format!(
            "{len} bytes; a Unix socket path holds at most {}",
            crate::sys::SOCKET_PATH_MAX
        )));
    }
    if p.parent().is_none() {
        return Err(n.error("the socket needs a file name, not '/'"));
    }
    Ok(p)
}

fn socket_mode(n: &Node) -> Result<u32, ConfigError> {
    let text = n.string()?;
    let bad = || n.error("expected octal permission bits such as \"0660\"");
    if text.is_empty() || text.len() > 4 || !text.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(bad());
    }
    let m = u32::from_str_radix(text, 8).map_err(|_| bad())?;
    if m & 0o200 == 0 {
        return Err(n.error("the owner (reeve) needs write permission (0200)"));
    }
    if m & 0o002 != 0 {
        return Err(
            n.error("lets every user on the host write beats; use a group (\"group\") instead")
        );
    }
    Ok(m)
}

fn group(n: &Node) -> Result<GroupRef, ConfigError> {
    match n.value {
        serde_json::Value::String(name) if !name.is_empty() && !name.contains(['\0', ':']) => {
            Ok(GroupRef::Name(name.clone()))
        }
        serde_json::Value::Number(_) => match u32::try_from(n.whole()?) {
            Ok(g) if g != u32::MAX => Ok(GroupRef::Gid(g)),
            _ => Err(n.error("a gid must be between 0 and 4294967294")),
        },
        _ => Err(n.error("expected a group name or a gid")),
    }
}

/// A rule's `beat_timeout`.
pub(super) fn beat_timeout(n: &Node) -> Result<Duration, ConfigError> {
    let d = n.duration()?;
    if d < MIN_BEAT_TIMEOUT || d > MAX_BEAT_TIMEOUT {
        return Err(n.error(format!(
            "{} is out of range (allowed: 10ms to 24h)",
            crate::units::format_duration(d)
        )));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{parse_ok, users};
    use super::super::Config;
    use super::*;

    #[test]
    fn defaults_fields_and_round_trip() {
        assert_eq!(parse_ok("{}").heartbeat, None);
        let c = parse_ok(r#"{"heartbeat":{}}"#);
        assert_eq!(c.heartbeat, Some(HeartbeatSettings::default()));
        let doc = r#"{"heartbeat":{"socket":"/run/x/b.sock","mode":"0620","group":"video",
            "allow_uids":["encoder",7],"rate_per_pid":5,"rate_global":900,"capacity":16},
            "targets":[{"name":"a","match":{"comm":["a"]},"beat_timeout":"2s"}]}"#;
        let c = parse_ok(doc);
        let h = c.heartbeat.clone().unwrap();
        assert_eq!(h.socket, PathBuf::from("/run/x/b.sock"));
        assert_eq!(h.mode, 0o620);
        assert_eq!(h.group, Some(GroupRef::Name("video".into())));
        assert_eq!(
            h.allow_uids.iter().map(|u| u.uid).collect::<Vec<_>>(),
            [1001, 7]
        );
        assert_eq!((h.rate_per_pid, h.rate_global, h.capacity), (5, 900, 16));
        assert_eq!(c.targets[0].beat_timeout, Some(Duration::from_secs(2)));
        let printed = c.to_pretty_json();
        assert!(printed.contains(r#""mode": "0620""#), "{printed}");
        assert!(printed.contains(r#""beat_timeout": "2s""#), "{printed}");
        assert_eq!(parse_ok(&printed), c);
        let gid = parse_ok(r#"{"heartbeat":{"group":44}}"#);
        assert_eq!(gid.heartbeat.unwrap().group, Some(GroupRef::Gid(44)));
    }

    #[test]
    fn bad_values_name_their_field() {
        let long = format!(r#"{{"heartbeat":{{"socket":"/{}"}}}}"#, "s".repeat(120));
        let cases = [
            (r#"{"heartbeat":{"port":1}}"#.to_string(), "heartbeat.port"),
            (r#"{"heartbeat":{"socket":"rel"}}"#.into(), "heartbeat.socket"),
            (long, "heartbeat.socket"),
            (r#"{"heartbeat":{"mode":"0666"}}"#.into(), "heartbeat.mode"),
            (r#"{"heartbeat":{"mode":"0460"}}"#.into(), "heartbeat.mode"),
            (r#"{"heartbeat":{"mode":"rw"}}"#.into(), "heartbeat.mode"),
            (r#"{"heartbeat":{"mode":660}}"#.into(), "heartbeat.mode"),
            (r#"{"heartbeat":{"group":""}}"#.into(), "heartbeat.group"),
            (r#"{"heartbeat":{"group":-1}}"#.into(), "heartbeat.group"),
            (r#"{"heartbeat":{"allow_uids":["nobody-here"]}}"#.into(), "heartbeat.allow_uids[0]"),
            (r#"{"heartbeat":{"rate_per_pid":0}}"#.into(), "heartbeat.rate_per_pid"),
            (r#"{"heartbeat":{"rate_global":0}}"#.into(), "heartbeat.rate_global"),
            (r#"{"heartbeat":{"capacity":0}}"#.into(), "heartbeat.capacity"),
            (r#"{"heartbeat":{"capacity":70000}}"#.into(), "heartbeat.capacity"),
            (
                r#"{"heartbeat":{},"targets":[{"name":"a","match":{"comm":["a"]},"beat_timeout":"1ms"}]}"#.into(),
                "targets[0].beat_timeout",
            ),
            (
                r#"{"targets":[{"name":"a","match":{"comm":["a"]},"beat_timeout":"1s"}]}"#.into(),
                "targets[0].beat_timeout",
            ),
        ];
        for (doc, path) in cases {
            let e = Config::from_json(doc.as_bytes(), &users()).expect_err(&doc);
            assert_eq!(e.path, path, "{doc}: {e}");
            assert!(!e.to_string().contains('\n'));
        }
    }
}
