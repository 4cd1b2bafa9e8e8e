//! reeve's JSON config: schema, embedded defaults and validation.
//!
//! A document is read into a `serde_json::Value` and walked by hand, so every
//! error names the field it is about (`targets[1].match.comm[0]: ...`) and an
//! unknown field is an error rather than a silently ignored typo. A `Config`
//! that exists is fully validated, and [`Config::to_pretty_json`] prints it in
//! the same schema so that it parses back to an equal `Config`. The embedded
//! document (deploy/reeve.json) makes `reeve watch` useful with no file.

use crate::units::{format_duration, parse_duration};
use crate::users::UserDb;
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};
use std::collections::HashSet;
use std::ffi::OsString;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The hard maximum of `capacity`, the number of processes reeve tracks at
/// once. The slot table is allocated at this size or less at start-up and
/// never grows; a process beyond it is refused, counted and logged.
pub const MAX_CAPACITY: usize = 262_144;
/// `capacity` when the config does not set it.
pub const DEFAULT_CAPACITY: usize = 4096;
/// The longest `comm` the kernel keeps (TASK_COMM_LEN - 1); a longer name is
/// truncated, so a longer pattern could never match.
pub const COMM_MAX: usize = 15;
/// The longest rule name.
pub const RULE_NAME_MAX: usize = 64;
/// `discovery.scan_interval` bounds and default.
pub const MIN_SCAN_INTERVAL: Duration = Duration::from_millis(10);
pub const MAX_SCAN_INTERVAL: Duration = Duration::from_secs(3600);
pub const DEFAULT_SCAN_INTERVAL: Duration = Duration::from_secs(1);
/// A config file larger than this is refused before parsing.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

const EMBEDDED: &str = include_str!("../deploy/reeve.json");

/// The whole, validated configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Config {
    pub targets: Vec<Rule>,
    pub discovery: Discovery,
    pub capacity: usize,
    #[serde(serialize_with = "path_text")]
    pub state_dir: PathBuf,
    pub log: LogSettings,
}

/// One target rule: which processes it selects, and who may be governed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    pub name: String,
    #[serde(rename = "match")]
    pub matcher: Match,
    pub filter: Filter,
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
    #[serde(serialize_with = "age_text", skip_serializing_if = "Option::is_none")]
    pub min_age: Option<Duration>,
    #[serde(serialize_with = "age_text", skip_serializing_if = "Option::is_none")]
    pub max_age: Option<Duration>,
    #[serde(serialize_with = "paths_text")]
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
    #[serde(serialize_with = "duration_text")]
    pub scan_interval: Duration,
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
        parse(bytes, users, || Config::embedded().targets)
    }

    /// The embedded defaults (deploy/reeve.json, compiled in). A unit test
    /// proves the document valid and equal to [`Config::builtin`], which is
    /// the fallback should that ever not hold.
    pub fn embedded() -> Config {
        parse(EMBEDDED.as_bytes(), &UserDb::default(), builtin_targets)
            .unwrap_or_else(|_| Config::builtin())
    }

    /// The embedded defaults, built in code.
    fn builtin() -> Config {
        Config {
            targets: builtin_targets(),
            discovery: Discovery::default(),
            capacity: DEFAULT_CAPACITY,
            state_dir: default_state_dir(),
            log: LogSettings::default(),
        }
    }

    /// Loads a config file. Errors carry no file name; the caller adds it.
    pub fn load(path: &Path, users: &UserDb) -> Result<Config, ConfigError> {
        let cannot_read = |e: std::io::Error| ConfigError::new("", format!("cannot read: {e}"));
        let file = std::fs::File::open(path).map_err(cannot_read)?;
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

fn builtin_targets() -> Vec<Rule> {
    let rule = |name: &str, program: &str| Rule {
        name: name.to_string(),
        matcher: Match {
            comm: vec![program.to_string()],
            exe: vec![program.to_string()],
            ..Match::default()
        },
        filter: Filter::default(),
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

fn path_text<S: Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&path.to_string_lossy())
}

fn paths_text<S: Serializer>(paths: &[PathBuf], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(paths.iter().map(|p| p.to_string_lossy()))
}

fn duration_text<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_duration(*d))
}

fn age_text<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => duration_text(d, s),
        None => s.serialize_none(),
    }
}

impl Serialize for UserRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.name {
            Some(name) => s.serialize_str(name),
            None => s.serialize_u32(self.uid),
        }
    }
}

/// A value in the document together with the path that leads to it.
struct Node<'a> {
    value: &'a Value,
    path: String,
}

/// An object whose keys have been checked against the schema.
struct Object<'a> {
    map: &'a Map<String, Value>,
    path: String,
}

impl<'a> Node<'a> {
    fn error(&self, message: impl Into<String>) -> ConfigError {
        ConfigError::new(self.path.clone(), message)
    }

    fn object(&self, fields: &[&str]) -> Result<Object<'a>, ConfigError> {
        let Some(map) = self.value.as_object() else {
            return Err(self.error("expected an object"));
        };
        if let Some(key) = map.keys().find(|k| !fields.contains(&k.as_str())) {
            return Err(self.error(format!(
                "unknown field '{}' (expected one of: {})",
                key.escape_debug(),
                fields.join(", ")
            )));
        }
        let path = self.path.clone();
        Ok(Object { map, path })
    }

    fn list(&self, of: &str) -> Result<Vec<Node<'a>>, ConfigError> {
        let Some(items) = self.value.as_array() else {
            return Err(self.error(format!("expected a list of {of}")));
        };
        let at = |(i, value)| Node {
            value,
            path: format!("{}[{i}]", self.path),
        };
        Ok(items.iter().enumerate().map(at).collect())
    }

    fn string(&self) -> Result<&'a str, ConfigError> {
        self.value
            .as_str()
            .ok_or_else(|| self.error("expected a string"))
    }

    fn whole(&self) -> Result<u64, ConfigError> {
        self.value
            .as_u64()
            .ok_or_else(|| self.error("expected a whole number"))
    }

    fn duration(&self) -> Result<Duration, ConfigError> {
        let Some(text) = self.value.as_str() else {
            return Err(self.error("expected a duration string such as \"1s\""));
        };
        parse_duration(text).map_err(|e| self.error(e.to_string()))
    }

    fn choice<T: Named>(&self) -> Result<T, ConfigError> {
        let text = self.string()?;
        from_name(text).ok_or_else(|| {
            let names: Vec<&str> = T::NAMES.iter().map(|(n, _)| *n).collect();
            self.error(format!(
                "unknown value '{}' (expected one of: {})",
                text.escape_debug(),
                names.join(", ")
            ))
        })
    }

    fn absolute_path(&self) -> Result<PathBuf, ConfigError> {
        clean_absolute(self.string()?).map_err(|m| self.error(m))
    }
}

impl<'a> Object<'a> {
    fn get(&self, key: &str) -> Option<Node<'a>> {
        let value = self.map.get(key)?;
        let path = if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        };
        Some(Node { value, path })
    }

    fn require(&self, key: &str) -> Result<Node<'a>, ConfigError> {
        self.get(key).ok_or_else(|| {
            ConfigError::new(self.path.clone(), format!("missing required field '{key}'"))
        })
    }

    /// The field read by `read`, or `default()` when it is absent.
    fn or<T>(
        &self,
        key: &str,
        read: impl FnOnce(&Node<'a>) -> Result<T, ConfigError>,
        default: impl FnOnce() -> T,
    ) -> Result<T, ConfigError> {
        match self.get(key) {
            Some(node) => read(&node),
            None => Ok(default()),
        }
    }

    /// A list of non-empty strings, each accepted by `check`; absent is empty.
    fn strings(
        &self,
        key: &str,
        check: fn(&str) -> Result<(), String>,
    ) -> Result<Vec<String>, ConfigError> {
        let Some(node) = self.get(key) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for item in node.list("strings")? {
            let text = item.string()?;
            if text.is_empty() {
                return Err(item.error("must not be empty"));
            }
            check(text).map_err(|m| item.error(m))?;
            out.push(text.to_string());
        }
        Ok(out)
    }

    /// A list of items read by `read`; absent is empty.
    fn items<T>(
        &self,
        key: &str,
        of: &str,
        mut read: impl FnMut(&Node<'a>) -> Result<T, ConfigError>,
    ) -> Result<Vec<T>, ConfigError> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(node) => node.list(of)?.iter().map(&mut read).collect(),
        }
    }
}

fn parse(
    bytes: &[u8],
    users: &UserDb,
    default_targets: fn() -> Vec<Rule>,
) -> Result<Config, ConfigError> {
    let bytes = bytes.strip_prefix("\u{feff}".as_bytes()).unwrap_or(bytes);
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| ConfigError::new("", e.to_string()))?;
    let root = Node {
        value: &value,
        path: String::new(),
    };
    let top = root.object(&["targets", "discovery", "capacity", "state_dir", "log"])?;
    let targets = top.or("targets", |n| rules(n, users), default_targets)?;
    let discovery = top.or("discovery", discovery, Discovery::default)?;
    let capacity = top.or("capacity", capacity, || DEFAULT_CAPACITY)?;
    let state_dir = top.or("state_dir", Node::absolute_path, default_state_dir)?;
    let log = top.or("log", log_settings, LogSettings::default)?;
    Ok(Config {
        targets,
        discovery,
        capacity,
        state_dir,
        log,
    })
}

fn rules(node: &Node, users: &UserDb) -> Result<Vec<Rule>, ConfigError> {
    let items = node.list("target rules")?;
    if items.is_empty() {
        return Err(node.error("at least one target rule is needed"));
    }
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(items.len());
    for item in &items {
        let rule = rule(item, users)?;
        if !seen.insert(rule.name.clone()) {
            let message = format!("duplicate rule name '{}'", rule.name);
            return Err(ConfigError::new(format!("{}.name", item.path), message));
        }
        out.push(rule);
    }
    Ok(out)
}

fn rule(node: &Node, users: &UserDb) -> Result<Rule, ConfigError> {
    let obj = node.object(&["name", "match", "filter"])?;
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
    Ok(Rule {
        name: name.to_string(),
        matcher,
        filter,
    })
}

fn valid_rule_name(name: &str) -> bool {
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
    if let (Some(min), Some(max), Some(at)) = (f.min_age, f.max_age, obj.get("min_age")) {
        if min > max {
            return Err(at.error(format!(
                "{} is more than max_age {}",
                format_duration(min),
                format_duration(max)
            )));
        }
    }
    Ok(f)
}

fn user_ref(node: &Node, users: &UserDb) -> Result<UserRef, ConfigError> {
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

fn discovery(node: &Node) -> Result<Discovery, ConfigError> {
    let obj = node.object(&["mode", "scan_interval"])?;
    Ok(Discovery {
        mode: obj.or("mode", Node::choice, DiscoveryMode::default)?,
        scan_interval: obj.or("scan_interval", scan_interval, || DEFAULT_SCAN_INTERVAL)?,
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

fn log_settings(node: &Node) -> Result<LogSettings, ConfigError> {
    let obj = node.object(&["format", "level"])?;
    Ok(LogSettings {
        format: obj.or("format", Node::choice, LogFormat::default)?,
        level: obj.or("level", Node::choice, LogLevel::default)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0::/root:/bin/sh\nencoder:x:1001:1001::/srv:/bin/sh\n";

    fn users() -> UserDb {
        UserDb::from_passwd(PASSWD)
    }

    fn parse_ok(doc: &str) -> Config {
        match Config::from_json(doc.as_bytes(), &users()) {
            Ok(c) => c,
            Err(e) => panic!("{doc}: {e}"),
        }
    }

    #[test]
    fn embedded_document_is_valid_and_matches_the_builtin() {
        let parsed = parse(EMBEDDED.as_bytes(), &UserDb::default(), Vec::new).unwrap();
        assert_eq!(parsed, Config::builtin());
        assert_eq!(Config::embedded(), parsed);
        let names: Vec<_> = parsed.targets.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["ffmpeg", "gst-launch"]);
        assert_eq!(parsed.capacity, DEFAULT_CAPACITY);
        assert_eq!(parsed.discovery.scan_interval, Duration::from_secs(1));
    }

    #[test]
    fn empty_document_takes_every_default() {
        let c = parse_ok("{}");
        assert_eq!(c, Config::embedded());
        assert_eq!(c.state_dir, default_state_dir());
        assert_eq!(c.log.level, LogLevel::Info);
        assert_eq!(c.discovery.mode, DiscoveryMode::Auto);
    }

    const FULL: &str = r#"{
      "targets": [
        {
          "name": "ffmpeg",
          "match": {"comm": ["ffmpeg"], "exe": ["ffmpeg"], "argv0": [], "cmdline_contains": ["-f flv"]},
          "filter": {
            "users": ["encoder", 1001, 0], "exclude_users": ["root"],
            "parent_pids": [1], "exclude_parent_pids": [4242],
            "parent_comms": ["systemd"], "exclude_parent_comms": ["bash"],
            "min_age": "0s", "max_age": "1h",
            "cwd_prefixes": ["/srv/encode/", "/", "//tmp//x"]
          }
        },
        {"name": "gst_1.0-x", "match": {"argv0": ["gst-launch-1.0"]}}
      ],
      "discovery": {"mode": "netlink", "scan_interval": "1.5s"},
      "capacity": 262144,
      "state_dir": "/var/lib/reeve/",
      "log": {"format": "json", "level": "debug"}
    }"#;

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
        assert_eq!(c.capacity, MAX_CAPACITY);
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/reeve"));
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.log.level, LogLevel::Debug);
    }

    #[test]
    fn printed_config_parses_back_equal() {
        let seeds = [
            FULL,
            "{}",
            EMBEDDED,
            r#"{"targets":[{"name":"a","match":{"cmdline_contains":["x"]},"filter":{}}]}"#,
        ];
        for doc in seeds {
            let first = parse_ok(doc);
            let printed = first.to_pretty_json();
            assert_eq!(parse_ok(&printed), first, "{printed}");
        }
        let printed = parse_ok(FULL).to_pretty_json();
        assert!(printed.contains(r#""match": {"#), "{printed}");
        assert!(printed.contains(r#""users": ["#), "{printed}");
        assert!(printed.contains(r#""encoder","#), "{printed}");
        assert!(printed.contains(r#""scan_interval": "1.5s""#), "{printed}");
        assert!(printed.contains(r#""level": "debug""#), "{printed}");
    }

    /// Bad documents with the path and (part of) the message each must give.
    #[rustfmt::skip]
    fn bad_documents() -> Vec<(String, &'static str, &'static str)> {
        let rule = |body: &str| format!(r#"{{"targets":[{{"name":"a","match":{{"comm":["a"]}}}},{body}]}}"#);
        let filter = |body: &str| rule(&format!(r#"{{"name":"b","match":{{"comm":["b"]}},"filter":{body}}}"#));
        vec![
            ("{\"tragets\": []}".into(), "", "unknown field 'tragets' (expected one of: targets, discovery, capacity, state_dir, log)"),
            (filter(r#"{"usres":[]}"#), "targets[1].filter", "unknown field 'usres' (expected one of: users,"),
            (rule(r#"{"name":"b","match":{"comm":["b"]},"extra":1}"#), "targets[1]", "unknown field 'extra' (expected one of: name, match, filter)"),
            ("[]".into(), "", "expected an object"),
            (r#"{"targets":{}}"#.into(), "targets", "expected a list of target rules"),
            (r#"{"targets":[]}"#.into(), "targets", "at least one target rule is needed"),
            (rule(r#"{"name":"b","match":{"comm":"b"}}"#), "targets[1].match.comm", "expected a list of strings"),
            (rule(r#"{"name":"b","match":{"comm":["b",7]}}"#), "targets[1].match.comm[1]", "expected a string"),
            (rule(r#"{"name":5,"match":{"comm":["b"]}}"#), "targets[1].name", "expected a string"),
            (rule(r#"{"match":{"comm":["b"]}}"#), "targets[1]", "missing required field 'name'"),
            (rule(r#"{"name":"b"}"#), "targets[1]", "missing required field 'match'"),
            (rule(r#"{"name":"a","match":{"comm":["b"]}}"#), "targets[1].name", "duplicate rule name 'a'"),
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
            (r#"{"discovery":{"mode":"inotify"}}"#.into(), "discovery.mode", "unknown value 'inotify' (expected one of: auto, netlink, poll)"),
            (r#"{"capacity":0}"#.into(), "capacity", "must be between 1 and 262144"),
            (r#"{"capacity":262145}"#.into(), "capacity", "must be between 1 and 262144, the maximum"),
            (r#"{"capacity":"4096"}"#.into(), "capacity", "expected a whole number"),
            (r#"{"state_dir":"state"}"#.into(), "state_dir", "not an absolute path"),
            (r#"{"log":{"level":"verbose"}}"#.into(), "log.level", "unknown value 'verbose' (expected one of: debug, info, warn, error)"),
            (r#"{"log":{"format":"xml"}}"#.into(), "log.format", "expected one of: text, json"),
            (r#"{"log":{"colour":true}}"#.into(), "log", "unknown field 'colour'"),
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
    fn error_display_joins_path_and_message() {
        let err = ConfigError::new("capacity", "must be between 1 and 262144, the maximum");
        assert_eq!(
            err.to_string(),
            "capacity: must be between 1 and 262144, the maximum"
        );
        assert_eq!(ConfigError::new("", "oops").to_string(), "oops");
    }

    #[test]
    fn load_reads_files_and_reports_errors() {
        let dir = std::env::temp_dir().join(format!("reeve-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.json");
        std::fs::write(&good, FULL).unwrap();
        assert_eq!(Config::load(&good, &users()).unwrap(), parse_ok(FULL));
        let missing = Config::load(&dir.join("absent.json"), &users()).unwrap_err();
        assert!(missing.message.starts_with("cannot read: "), "{missing}");
        let big = dir.join("big.json");
        std::fs::write(&big, vec![b' '; MAX_CONFIG_BYTES as usize + 1]).unwrap();
        let err = Config::load(&big, &users()).unwrap_err();
        assert!(err.message.contains("larger than 1 MiB"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn state_dir_defaults_follow_the_user() {
        let os = |s: &str| Some(OsString::from(s));
        let dir = |p: &str| PathBuf::from(p);
        assert_eq!(
            state_dir_for(Some(0), os("/x"), os("/root")),
            dir("/var/lib/reeve")
        );
        assert_eq!(state_dir_for(Some(7), os("/x/"), os("/h")), dir("/x/reeve"));
        assert_eq!(
            state_dir_for(Some(7), os("rel"), os("/h")),
            dir("/h/.local/state/reeve")
        );
        assert_eq!(
            state_dir_for(Some(7), None, os("/h/../e")),
            dir("/tmp/reeve-7")
        );
        assert_eq!(state_dir_for(Some(7), os(""), None), dir("/tmp/reeve-7"));
        assert_eq!(state_dir_for(None, None, None), dir("/tmp/reeve"));
        assert!(default_state_dir().is_absolute());
    }

    #[test]
    fn log_levels_order_by_severity() {
        assert!(LogLevel::Debug < LogLevel::Info);
        assert!(LogLevel::Info < LogLevel::Warn);
        assert!(LogLevel::Warn < LogLevel::Error);
        assert_eq!(LogLevel::from_name("warn"), Some(LogLevel::Warn));
        assert_eq!(LogFormat::from_name("JSON"), None);
        assert_eq!(DiscoveryMode::from_name("poll"), Some(DiscoveryMode::Poll));
        for (name, level) in LogLevel::NAMES {
            assert_eq!(level.as_str(), *name);
        }
        for (name, format) in LogFormat::NAMES {
            assert_eq!(format.as_str(), *name);
        }
        for (name, mode) in DiscoveryMode::NAMES {
            assert_eq!(mode.as_str(), *name);
        }
        assert_eq!(LogLevel::NAMES.len(), 4);
        assert_eq!(LogFormat::NAMES.len(), 2);
        assert_eq!(DiscoveryMode::NAMES.len(), 3);
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
