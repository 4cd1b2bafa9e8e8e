//! reeve's JSON config: schema, embedded defaults and validation.
//!
//! A document is read into a `serde_json::Value` and walked by hand
//! (`walk`, `parse`), so every error names the field it is about
//! (`targets[1].match.comm[0]: ...`) and an unknown field is an error rather
//! than a silently ignored typo. A `Config` that exists is fully validated,
//! and [`Config::to_pretty_json`] prints it in the same schema (`print`) so
//! that it parses back to an equal `Config`. The embedded document
//! (deploy/reeve.json) makes `reeve watch` useful with no file.

mod heartbeat;
mod jobs;
mod liveness;
mod parse;
mod print;
mod walk;

pub use heartbeat::{GroupRef, HeartbeatSettings, DEFAULT_SOCKET as HEARTBEAT_SOCKET};
pub use jobs::{Backoff, JobSpec, Ready, Restart, RestartGuard, MAX_JOBS};
pub use liveness::{substitute, Action, Guard, Liveness, Signal, MAX_ACTIONS};

use crate::cgroup::Limits;
use crate::users::UserDb;
use serde::Serialize;
use std::ffi::OsString;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The hard maximum of `capacity` (the slot table's, defined there).
pub use crate::table::MAX_CAPACITY;
/// `capacity` when the config does not set it.
pub const DEFAULT_CAPACITY: usize = 4096;
/// The longest `comm` the kernel keeps (TASK_COMM_LEN - 1); a longer name is
/// truncated, so a longer pattern could never match.
pub const COMM_MAX: usize = 15;
/// The longest rule name. Rule names are unique and made of
/// `[A-Za-z0-9._-]` only, so a name is never changed to fit a job group.
pub const RULE_NAME_MAX: usize = 64;
/// The most target rules a config may hold (discovery keeps one bit per
/// rule for what a process's names matched).
pub const MAX_RULES: usize = 64;
/// The largest `min_age`: no process on a running host is older than
/// ten years.
pub const MAX_AGE: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// `discovery.scan_interval` bounds and default.
pub const MIN_SCAN_INTERVAL: Duration = Duration::from_millis(10);
pub const MAX_SCAN_INTERVAL: Duration = Duration::from_secs(3600);
pub const DEFAULT_SCAN_INTERVAL: Duration = Duration::from_secs(1);
/// `discovery.rescan_interval` default: in netlink mode the safety-net scan
/// of /proc runs this often (an overrun still rescans at once). Its bounds
/// are `scan_interval`'s, and it is never shorter than `scan_interval`.
pub const DEFAULT_RESCAN_INTERVAL: Duration = Duration::from_secs(60);
/// A config file larger than this is refused before parsing.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

const EMBEDDED: &str = include_str!("../../deploy/reeve.json");

/// The whole, validated configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Config {
    pub targets: Vec<Rule>,
    pub discovery: Discovery,
    pub capacity: usize,
    #[serde(serialize_with = "print::path")]
    pub state_dir: PathBuf,
    /// `cgroup.root`: where reeve's jobs and pools live in the cgroup v2
    /// hierarchy; `None` lets [`crate::cgroup::Hierarchy`] choose.
    #[serde(
        rename = "cgroup",
        serialize_with = "print::cgroup",
        skip_serializing_if = "Option::is_none"
    )]
    pub cgroup_root: Option<PathBuf>,
    pub log: LogSettings,
    /// The audit event log in the state directory.
    pub audit: AuditSettings,
    /// `metrics`: the metrics and health endpoint; `None` (no `metrics`
    /// object) serves nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsSettings>,
    /// `jobs`: commands the daemon starts and keeps running.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub jobs: Vec<JobSpec>,
    /// `heartbeat`: the heartbeat listener; `None` opens no socket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<HeartbeatSettings>,
}

/// `metrics.listen` when the `metrics` object does not set it: loopback
/// only, so nothing is exposed beyond the host unless the config says so.
pub const DEFAULT_METRICS_LISTEN: std::net::SocketAddr = std::net::SocketAddr::V4(
    std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 9188),
);

/// `metrics`: where `/metrics` and `/healthz` are served and who may read
/// them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MetricsSettings {
    pub listen: std::net::SocketAddr,
    /// A file holding a bearer token every request must present; read once
    /// at start (0600, reeve's own).
    #[serde(
        serialize_with = "print::opt_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub token_file: Option<PathBuf>,
}

/// `audit`: how the event log is made durable and how big it may grow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditSettings {
    /// `always` fsyncs every event; `interval` at most once per
    /// `fsync_interval`; `never` leaves it to the kernel.
    pub fsync: AuditFsync,
    #[serde(serialize_with = "print::duration")]
    pub fsync_interval: Duration,
    /// The log is rotated when it reaches this many bytes.
    #[serde(serialize_with = "print::bytes")]
    pub rotate_size: u64,
    /// Rotated generations kept (events.jsonl.1 .. .N).
    pub keep: u32,
}

impl Default for AuditSettings {
    fn default() -> AuditSettings {
        AuditSettings {
            fsync: AuditFsync::Always,
            fsync_interval: Duration::from_secs(1),
            rotate_size: 64 * 1024 * 1024,
            keep: 5,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditFsync {
    #[default]
    Always,
    Interval,
    Never,
}

impl Named for AuditFsync {
    const NAMES: &'static [(&'static str, Self)] = &[
        ("always", AuditFsync::Always),
        ("interval", AuditFsync::Interval),
        ("never", AuditFsync::Never),
    ];
}

impl Config {
    /// The event log options these settings mean.
    pub fn audit_options(&self) -> crate::store::LogOptions {
        let a = &self.audit;
        crate::store::LogOptions {
            fsync: match a.fsync {
                AuditFsync::Always => crate::store::FsyncPolicy::Always,
                AuditFsync::Interval => crate::store::FsyncPolicy::Interval(a.fsync_interval),
                AuditFsync::Never => crate::store::FsyncPolicy::Never,
            },
            rotate_bytes: a.rotate_size,
            keep: a.keep,
            ..crate::store::LogOptions::default()
        }
    }
}

/// One target rule: which processes it selects, who may be governed, and
/// how: the limits a matched process runs under, in its own job group or in
/// the shared `pool` group. A rule with neither only tracks. (The default
/// rule, with an empty name and matcher, exists for struct literals; no
/// parsed config holds it.)
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Rule {
    pub name: String,
    #[serde(rename = "match")]
    pub matcher: Match,
    pub filter: Filter,
    #[serde(
        serialize_with = "print::limits",
        skip_serializing_if = "Limits::is_empty"
    )]
    pub limits: Limits,
    /// A named group shared by every process of the rule; the limits are the
    /// pool's. `None` puts each process in a job group of its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// `stall_after`, `on_stall`, `on_exit`, `guard` (`liveness.rs`).
    #[serde(flatten)]
    pub liveness: Liveness,
    /// Silence longer than this from a process of the rule that beats is a
    /// stall; `None`: the rule expects no beats.
    #[serde(serialize_with = "print::age", skip_serializing_if = "Option::is_none")]
    pub beat_timeout: Option<Duration>,
}

/// What a process must look like; a process matches if any entry of any list
/// matches. `exe` and `argv0` entries are basenames.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Match {
    pub comm: Vec<String>,
    pub exe: Vec<String>,
    pub argv0: Vec<String>,
    pub cmdline_contains: Vec<String>,
}

/// Conditions a matched process must also meet; an empty list does not
/// restrict.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Filter {
    pub users: Vec<UserRef>,
    pub exclude_users: Vec<UserRef>,
    pub parent_pids: Vec<u32>,
    pub exclude_parent_pids: Vec<u32>,
    pub parent_comms: Vec<String>,
    pub exclude_parent_comms: Vec<String>,
    #[serde(serialize_with = "print::age", skip_serializing_if = "Option::is_none")]
    pub min_age: Option<Duration>,
    #[serde(serialize_with = "print::age", skip_serializing_if = "Option::is_none")]
    pub max_age: Option<Duration>,
    #[serde(serialize_with = "print::paths")]
    pub cwd_prefixes: Vec<PathBuf>,
}

/// A user as the config named it: by name (resolved when the config was
/// read) or by uid. Printed as the name if given, else the number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRef {
    pub name: Option<String>,
    pub uid: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Discovery {
    pub mode: DiscoveryMode,
    #[serde(serialize_with = "print::duration")]
    pub scan_interval: Duration,
    /// How often the safety-net scan runs while netlink reports events.
    #[serde(serialize_with = "print::duration")]
    pub rescan_interval: Duration,
}

/// How new processes are found: `netlink` (proc connector, needs root),
/// `poll` (periodic /proc scans only) or `auto` (netlink, else poll).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DiscoveryMode {
    #[default]
    Auto,
    Netlink,
    Poll,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: LogLevel,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Log severities, least severe first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Debug,
    #[default]
    Info,
    Warn,
    Error,
}

/// Names and values of a config enum, in one table per enum.
trait Named: Copy + 'static {
    const NAMES: &'static [(&'static str, Self)];
}

impl Named for DiscoveryMode {
    const NAMES: &'static [(&'static str, Self)] = &[
        ("auto", DiscoveryMode::Auto),
        ("netlink", DiscoveryMode::Netlink),
        ("poll", DiscoveryMode::Poll),
    ];
}

impl Named for LogFormat {
    const NAMES: &'static [(&'static str, Self)] =
        &[("text", LogFormat::Text), ("json", LogFormat::Json)];
}

impl Named for LogLevel {
    const NAMES: &'static [(&'static str, Self)] = &[
        ("debug", LogLevel::Debug),
        ("info", LogLevel::Info),
        ("warn", LogLevel::Warn),
        ("error", LogLevel::Error),
    ];
}

impl Default for Discovery {
    fn default() -> Discovery {
        Discovery {
            mode: DiscoveryMode::Auto,
            scan_interval: DEFAULT_SCAN_INTERVAL,
            rescan_interval: DEFAULT_RESCAN_INTERVAL,
        }
    }
}

impl LogLevel {
    /// Parses "debug", "info", "warn" or "error".
    pub fn from_name(name: &str) -> Option<LogLevel> {
        from_name(name)
    }

    /// The name as the config writes it.
    pub fn as_str(self) -> &'static str {
        name_of(self)
    }
}

impl LogFormat {
    /// Parses "text" or "json".
    pub fn from_name(name: &str) -> Option<LogFormat> {
        from_name(name)
    }

    /// The name as the config writes it.
    pub fn as_str(self) -> &'static str {
        name_of(self)
    }
}

impl DiscoveryMode {
    /// Parses "auto", "netlink" or "poll".
    pub fn from_name(name: &str) -> Option<DiscoveryMode> {
        from_name(name)
    }

    /// The name as the config writes it.
    pub fn as_str(self) -> &'static str {
        name_of(self)
    }
}

fn from_name<T: Named>(name: &str) -> Option<T> {
    T::NAMES.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
}

fn name_of<T: Named + PartialEq>(value: T) -> &'static str {
    let entry = T::NAMES.iter().find(|(_, v)| *v == value);
    entry.map_or("", |(n, _)| *n)
}

/// A config problem: the field path (`targets[0].filter.users[2]`, empty for
/// the document as a whole) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl ConfigError {
    fn new(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Parses and validates a config document. `users` resolves user names.
    /// Absent fields take their defaults; absent `targets` are the embedded
    /// default rules.
    pub fn from_json(bytes: &[u8], users: &UserDb) -> Result<Config, ConfigError> {
        parse::document(bytes, users, || Config::embedded().targets)
    }

    /// The embedded defaults (deploy/reeve.json, compiled in). A unit test
    /// proves the document valid and equal to `Config::builtin`, which is
    /// the fallback should that ever not hold.
    pub fn embedded() -> Config {
        parse::document(EMBEDDED.as_bytes(), &UserDb::default(), builtin_targets)
            .unwrap_or_else(|_| Config::builtin())
    }

    /// The embedded defaults, built in code.
    fn builtin() -> Config {
        Config {
            targets: builtin_targets(),
            discovery: Discovery::default(),
            capacity: DEFAULT_CAPACITY,
            state_dir: default_state_dir(),
            cgroup_root: None,
            log: LogSettings::default(),
            audit: AuditSettings::default(),
            metrics: None,
            jobs: Vec::new(),
            heartbeat: None,
        }
    }

    /// Loads a config file. Errors carry no file name; the caller adds it.
    /// Only a regular file (or a symlink to one) is read: a FIFO would
    /// block the reader (the daemon's loop, on SIGHUP) until someone
    /// writes to it, and a device or directory is never a config. The
    /// file is opened non-blocking and checked again after the open, so a
    /// file swapped for a FIFO in between is refused too.
    pub fn load(path: &Path, users: &UserDb) -> Result<Config, ConfigError> {
        use std::os::unix::fs::OpenOptionsExt;
        let cannot_read = |e: std::io::Error| ConfigError::new("", format!("cannot read: {e}"));
        let meta = std::fs::metadata(path).map_err(cannot_read)?;
        check_regular(&meta)?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
            .open(path)
            .map_err(cannot_read)?;
        check_regular(&file.metadata().map_err(cannot_read)?)?;
        let mut bytes = Vec::new();
        file.take(MAX_CONFIG_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(cannot_read)?;
        if bytes.len() as u64 > MAX_CONFIG_BYTES {
            return Err(ConfigError::new(
                "",
                "larger than 1 MiB; a reeve config is a few kilobytes",
            ));
        }
        Config::from_json(&bytes, users)
    }

    /// The config as a JSON document in the same schema, every default
    /// spelled out.
    pub fn to_pretty_json(&self) -> String {
        // Every field serializes infallibly (paths are printed lossily), so
        // the fallback is never taken; it still yields valid JSON.
        serde_json::to_string_pretty(self)
            .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }).to_string())
    }
}

/// Refuses anything but a regular file, naming what it is.
fn check_regular(meta: &std::fs::Metadata) -> Result<(), ConfigError> {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    let what = if t.is_file() {
        return Ok(());
    } else if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else {
        "not a file"
    };
    Err(ConfigError::new(
        "",
        format!("not a regular file ({what}); give the path of a JSON file"),
    ))
}

fn builtin_targets() -> Vec<Rule> {
    let rule = |name: &str, program: &str| Rule {
        name: name.to_string(),
        matcher: Match {
            comm: vec![program.to_string()],
            exe: vec![program.to_string()],
            ..Match::default()
        },
        ..Rule::default()
    };
    vec![
        rule("ffmpeg", "ffmpeg"),
        rule("gst-launch", "gst-launch-1.0"),
    ]
}

/// Where state lives when the config does not say: /var/lib/reeve for root,
/// else `$XDG_STATE_HOME/reeve`, `$HOME/.local/state/reeve`, or
/// `/tmp/reeve-<uid>`, taking the first whose variable is a clean absolute
/// path.
pub fn default_state_dir() -> PathBuf {
    state_dir_for(
        Some(crate::sys::geteuid()),
        std::env::var_os("XDG_STATE_HOME"),
        std::env::var_os("HOME"),
    )
}

fn state_dir_for(euid: Option<u32>, xdg: Option<OsString>, home: Option<OsString>) -> PathBuf {
    if euid == Some(0) {
        return PathBuf::from("/var/lib/reeve");
    }
    let usable = |v: Option<OsString>| v?.to_str().and_then(|s| clean_absolute(s).ok());
    if let Some(dir) = usable(xdg) {
        return dir.join("reeve");
    }
    if let Some(dir) = usable(home) {
        return dir.join(".local/state/reeve");
    }
    match euid {
        Some(uid) => PathBuf::from(format!("/tmp/reeve-{uid}")),
        None => PathBuf::from("/tmp/reeve"),
    }
}

/// `s` as an absolute path without `.` or `..` parts, repeated or trailing
/// slashes removed ("/" stays "/"); else the reason it is not one.
fn clean_absolute(s: &str) -> Result<PathBuf, String> {
    if !s.starts_with('/') {
        return Err(format!("'{}' is not an absolute path", s.escape_debug()));
    }
    if s.contains('\0') {
        return Err("a path cannot contain a NUL byte".to_string());
    }
    let parts: Vec<&str> = s.split('/').filter(|p| !p.is_empty()).collect();
    if parts.iter().any(|p| *p == "." || *p == "..") {
        return Err(format!(
            "'{}' has a '.' or '..' part; write the path without them",
            s.escape_debug()
        ));
    }
    Ok(PathBuf::from(format!("/{}", parts.join("/"))))
}
#[cfg(test)]
mod tests;
