//! A rule's liveness settings: `stall_after` (the progress watchdog's
//! threshold), the actions taken `on_stall` and `on_exit`, and the
//! `guard` that bounds them (a debounce per process and at most
//! `max_actions` per `window` per job).
//!
//! Invariant: every action a parsed config holds can be carried out as
//! written: a signal that exists, an escalation with a grace, an exec hook
//! whose argv[0] is an absolute path and whose placeholders are known, a
//! `kill_job` only where the rule gives each process a job group of its own.

use super::walk::Node;
use super::ConfigError;
use crate::units::format_duration;
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use std::time::Duration;

/// `stall_after` bounds: below the watchdog's sampling period a stall could
/// never be seen in time; above a day it is a typo.
pub const MIN_STALL_AFTER: Duration = Duration::from_millis(500);
pub const MAX_STALL_AFTER: Duration = Duration::from_secs(24 * 3600);
/// Escalation grace and hook timeout bounds and defaults.
pub const MAX_GRACE: Duration = Duration::from_secs(3600);
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(10);
pub const MAX_HOOK_TIMEOUT: Duration = Duration::from_secs(3600);
/// The most arguments an exec hook may have, and the longest one.
pub const MAX_HOOK_ARGS: usize = 64;
pub const MAX_HOOK_ARG_LEN: usize = 4096;
/// The most actions one `on_stall` or `on_exit` list may hold.
pub const MAX_ACTIONS: usize = 8;
/// `guard.max_actions` bound (the guard keeps one time per action).
pub const MAX_GUARD_ACTIONS: u32 = 64;
/// The placeholders an exec hook's arguments may hold.
pub const PLACEHOLDERS: [&str; 4] = ["pid", "job", "rule", "event"];

/// What a rule does about stalls and exits of its processes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Liveness {
    /// A process whose CPU time and I/O counters have not moved for this
    /// long (while not stopped) is stalled; `None` does not watch.
    pub stall_after: Option<Duration>,
    pub on_stall: Vec<Action>,
    pub on_exit: Vec<Action>,
    pub guard: Guard,
}

impl Liveness {
    pub fn is_empty(&self) -> bool {
        self.stall_after.is_none() && self.on_stall.is_empty() && self.on_exit.is_empty()
    }
}

/// One action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Only the event (always logged anyway); an explicit no-op.
    Log,
    /// `signal` through a pidfd opened after an identity check; `then`
    /// follows after `grace` through the same pidfd unless the process
    /// ended first.
    Signal {
        signal: Signal,
        then: Option<Signal>,
        grace: Duration,
    },
    /// cgroup.kill of the process's own job group.
    KillJob,
    /// An exec hook: argv with placeholders, killed (its process group)
    /// after `timeout`.
    Exec {
        argv: Vec<String>,
        timeout: Duration,
    },
}

impl Action {
    /// The action's kind as events and metrics name it.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Log => "log",
            Action::Signal { .. } => "signal",
            Action::KillJob => "kill_job",
            Action::Exec { .. } => "exec",
        }
    }
}

/// A signal by its name without `SIG` (`TERM`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signal(pub i32);

const SIGNALS: [(&str, i32); 10] = [
    ("TERM", libc::SIGTERM),
    ("KILL", libc::SIGKILL),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("HUP", libc::SIGHUP),
    ("ABRT", libc::SIGABRT),
    ("USR1", libc::SIGUSR1),
    ("USR2", libc::SIGUSR2),
    ("STOP", libc::SIGSTOP),
    ("CONT", libc::SIGCONT),
];

impl Signal {
    pub fn from_name(name: &str) -> Option<Signal> {
        let name = name.strip_prefix("SIG").unwrap_or(name);
        SIGNALS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(_, s)| Signal(s))
    }

    pub fn name(self) -> &'static str {
        SIGNALS
            .iter()
            .find(|&&(_, s)| s == self.0)
            .map_or("?", |(n, _)| *n)
    }
}

/// Bounds on how often a rule's actions run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guard {
    /// At most this many actions per `window` per job; then reeve stops
    /// acting on the job (`actions_suppressed`) until the window moves on.
    pub max_actions: u32,
    pub window: Duration,
    /// The same process is acted on at most once per `debounce`.
    pub debounce: Duration,
}

impl Default for Guard {
    fn default() -> Guard {
        Guard {
            max_actions: 5,
            window: Duration::from_secs(600),
            debounce: Duration::from_secs(30),
        }
    }
}

/// The fields a rule object may hold for liveness.
pub(super) const FIELDS: [&str; 4] = ["stall_after", "on_stall", "on_exit", "guard"];

/// Reads a rule's liveness fields. `own_job` says whether each process of
/// the rule gets a job group of its own (limits and no pool), which
/// `kill_job` needs; `beats` whether the rule sets a `beat_timeout` (a
/// heartbeat silence is a stall too).
pub(super) fn parse(
    obj: &super::walk::Object,
    own_job: bool,
    pool: Option<&str>,
    beats: bool,
) -> Result<Liveness, ConfigError> {
    let stall_after = obj.or("stall_after", |n| stall_after(n).map(Some), || None)?;
    let kill_job = KillJobWhere { own_job, pool };
    let on_stall = obj.or("on_stall", |n| actions(n, kill_job, false), Vec::new)?;
    let on_exit = obj.or("on_exit", |n| actions(n, kill_job, true), Vec::new)?;
    let guard = obj.or("guard", guard, Guard::default)?;
    if let (Some(node), None, false) = (obj.get("on_stall"), stall_after, beats) {
        if !on_stall.is_empty() {
            return Err(node.error(
                "needs stall_after or beat_timeout: without one no stall is ever seen, so these actions never run",
            ));
        }
    }
    Ok(Liveness {
        stall_after,
        on_stall,
        on_exit,
        guard,
    })
}

#[derive(Clone, Copy)]
struct KillJobWhere<'a> {
    own_job: bool,
    pool: Option<&'a str>,
}

fn stall_after(node: &Node) -> Result<Duration, ConfigError> {
    let d = node.duration()?;
    if d < MIN_STALL_AFTER || d > MAX_STALL_AFTER {
        return Err(node.error(format!(
            "{} is outside {} to {}",
            format_duration(d),
            format_duration(MIN_STALL_AFTER),
            format_duration(MAX_STALL_AFTER)
        )));
    }
    Ok(d)
}

/// A list of actions, or a single action for short.
fn actions(node: &Node, kill: KillJobWhere, on_exit: bool) -> Result<Vec<Action>, ConfigError> {
    let items = match node.value {
        serde_json::Value::Array(_) => node.list("actions")?,
        _ => vec![Node {
            value: node.value,
            path: node.path.clone(),
        }],
    };
    if items.len() > MAX_ACTIONS {
        return Err(node.error(format!(
            "{} actions; at most {MAX_ACTIONS} are allowed",
            items.len()
        )));
    }
    items.iter().map(|n| action(n, kill, on_exit)).collect()
}

fn action(node: &Node, kill: KillJobWhere, on_exit: bool) -> Result<Action, ConfigError> {
    const EXPECTED: &str = "expected \"log\", \"kill_job\", {\"signal\": ...} or {\"exec\": [...]}";
    if let Some(text) = node.value.as_str() {
        return match text {
            "log" => Ok(Action::Log),
            "kill_job" => kill_job(node, kill),
            _ => Err(node.error(format!(
                "unknown action '{}'; {EXPECTED}",
                text.escape_debug()
            ))),
        };
    }
    let Some(map) = node.value.as_object() else {
        return Err(node.error(EXPECTED));
    };
    if map.contains_key("signal") {
        if on_exit {
            return Err(node.error(
                "a process that has ended cannot be signalled; use kill_job (what it left in \
                 its job) or exec",
            ));
        }
        let obj = node.object(&["signal", "then", "grace"])?;
        let first = signal(&obj.require("signal")?)?;
        let then = obj.or("then", |n| signal(n).map(Some), || None)?;
        let grace = obj.or("grace", grace, || DEFAULT_GRACE)?;
        if let (None, Some(g)) = (then, obj.get("grace")) {
            return Err(g.error("grace is the wait before `then`; give `then` too, or remove it"));
        }
        return Ok(Action::Signal {
            signal: first,
            then,
            grace,
        });
    }
    if map.contains_key("exec") {
        let obj = node.object(&["exec", "timeout"])?;
        let argv = exec_argv(&obj.require("exec")?)?;
        let timeout = obj.or("timeout", hook_timeout, || DEFAULT_HOOK_TIMEOUT)?;
        return Ok(Action::Exec { argv, timeout });
    }
    Err(node.error(EXPECTED))
}

fn kill_job(node: &Node, kill: KillJobWhere) -> Result<Action, ConfigError> {
    if let Some(pool) = kill.pool {
        return Err(node.error(format!(
            "kill_job kills every process of the job group, and this rule's processes share the \
             pool '{}'; use a signal action",
            pool.escape_debug()
        )));
    }
    if !kill.own_job {
        return Err(node.error(
            "kill_job needs a job group, and this rule only tracks; give the rule limits, or use \
             a signal action",
        ));
    }
    Ok(Action::KillJob)
}

fn signal(node: &Node) -> Result<Signal, ConfigError> {
    let text = node.string()?;
    Signal::from_name(text).ok_or_else(|| {
        let names: Vec<&str> = SIGNALS.iter().map(|(n, _)| *n).collect();
        node.error(format!(
            "unknown signal '{}' (expected one of: {})",
            text.escape_debug(),
            names.join(", ")
        ))
    })
}

fn bounded(node: &Node, max: Duration) -> Result<Duration, ConfigError> {
    let d = node.duration()?;
    if d.is_zero() || d > max {
        return Err(node.error(format!(
            "{} is outside 1ms to {}",
            format_duration(d),
            format_duration(max)
        )));
    }
    Ok(d)
}

fn grace(node: &Node) -> Result<Duration, ConfigError> {
    bounded(node, MAX_GRACE)
}

fn hook_timeout(node: &Node) -> Result<Duration, ConfigError> {
    bounded(node, MAX_HOOK_TIMEOUT)
}

fn exec_argv(node: &Node) -> Result<Vec<String>, ConfigError> {
    let items = node.list("arguments")?;
    if items.is_empty() || items.len() > MAX_HOOK_ARGS {
        return Err(node.error(format!(
            "needs 1 to {MAX_HOOK_ARGS} arguments, the program first"
        )));
    }
    let mut argv = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let arg = item.string()?;
        if arg.contains('\0') {
            return Err(item.error("must not contain a NUL byte"));
        }
        if arg.len() > MAX_HOOK_ARG_LEN {
            return Err(item.error(format!("longer than {MAX_HOOK_ARG_LEN} bytes")));
        }
        if i == 0 && !arg.starts_with('/') {
            return Err(item.error(
                "the program must be an absolute path (hooks run without a shell and \
                 without a PATH search)",
            ));
        }
        check_placeholders(arg).map_err(|m| item.error(m))?;
        argv.push(arg.to_string());
    }
    Ok(argv)
}

/// Every `{...}` in `arg` must be a known placeholder.
fn check_placeholders(arg: &str) -> Result<(), String> {
    let mut rest = arg;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            return Err("an unclosed '{'; placeholders are {pid}, {job}, {rule}, {event}".into());
        };
        let name = &after[..close];
        if !PLACEHOLDERS.contains(&name) {
            return Err(format!(
                "unknown placeholder {{{}}}; placeholders are {{pid}}, {{job}}, {{rule}}, {{event}}",
                name.escape_debug()
            ));
        }
        rest = &after[close + 1..];
    }
    Ok(())
}

/// `arg` with each placeholder replaced by its value (the config checked
/// that only known ones occur, so anything else is kept as written).
pub fn substitute(arg: &str, pid: u32, job: &str, rule: &str, event: &str) -> String {
    let mut out = String::with_capacity(arg.len() + 16);
    let mut rest = arg;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after.find('}');
        let value = close.and_then(|c| match &after[..c] {
            "pid" => Some(pid.to_string()),
            "job" => Some(job.to_string()),
            "rule" => Some(rule.to_string()),
            "event" => Some(event.to_string()),
            _ => None,
        });
        match (value, close) {
            (Some(v), Some(c)) => {
                out.push_str(&v);
                rest = &after[c + 1..];
            }
            _ => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn guard(node: &Node) -> Result<Guard, ConfigError> {
    let obj = node.object(&["max_actions", "window", "debounce"])?;
    let d = Guard::default();
    let max_actions = obj.or(
        "max_actions",
        |n| match n.whole()? {
            m @ 1..=64 => Ok(m as u32),
            _ => Err(n.error(format!("must be 1 to {MAX_GUARD_ACTIONS}"))),
        },
        || d.max_actions,
    )?;
    let window = obj.or("window", |n| bounded(n, MAX_STALL_AFTER), || d.window)?;
    let debounce = obj.or(
        "debounce",
        |n| {
            let v = n.duration()?;
            if v > MAX_STALL_AFTER {
                return Err(n.error("longer than a day"));
            }
            Ok(v)
        },
        || d.debounce,
    )?;
    Ok(Guard {
        max_actions,
        window,
        debounce,
    })
}

/// Prints a rule's liveness fields into the rule's map, in the config's
/// spelling; the guard only when there are actions for it to bound.
pub(super) fn print<M: SerializeMap>(l: &Liveness, map: &mut M) -> Result<(), M::Error> {
    if let Some(d) = l.stall_after {
        map.serialize_entry("stall_after", &format_duration(d))?;
    }
    if !l.on_stall.is_empty() {
        map.serialize_entry("on_stall", &Actions(&l.on_stall))?;
    }
    if !l.on_exit.is_empty() {
        map.serialize_entry("on_exit", &Actions(&l.on_exit))?;
    }
    if !l.on_stall.is_empty() || !l.on_exit.is_empty() {
        map.serialize_entry("guard", &l.guard)?;
    }
    Ok(())
}

impl Serialize for Liveness {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        print(self, &mut map)?;
        map.end()
    }
}

struct Actions<'a>(&'a [Action]);

impl Serialize for Actions<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for a in self.0 {
            seq.serialize_element(a)?;
        }
        seq.end()
    }
}

impl Serialize for Action {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Action::Log => s.serialize_str("log"),
            Action::KillJob => s.serialize_str("kill_job"),
            Action::Signal {
                signal,
                then,
                grace,
            } => {
                let mut map = s.serialize_map(None)?;
                map.serialize_entry("signal", signal.name())?;
                if let Some(then) = then {
                    map.serialize_entry("then", then.name())?;
                    map.serialize_entry("grace", &format_duration(*grace))?;
                }
                map.end()
            }
            Action::Exec { argv, timeout } => {
                let mut map = s.serialize_map(None)?;
                map.serialize_entry("exec", argv)?;
                map.serialize_entry("timeout", &format_duration(*timeout))?;
                map.end()
            }
        }
    }
}

impl Serialize for Guard {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("max_actions", &self.max_actions)?;
        map.serialize_entry("window", &format_duration(self.window))?;
        map.serialize_entry("debounce", &format_duration(self.debounce))?;
        map.end()
    }
}

#[cfg(test)]
#[path = "liveness_tests.rs"]
mod tests;
