//! `jobs`: the commands the daemon starts itself and keeps running
//! (see `supervise`), read and checked here like every other part of the
//! config.
//!
//! Invariant: a `JobSpec` that exists can be started as written: its
//! command is an argv whose program is an absolute path (no shell, no PATH
//! search), its name is a valid group name, unique among jobs, and every
//! duration and count is within the bounds below.

use super::print;
use super::walk::Node;
use super::{ConfigError, Named, RULE_NAME_MAX};
use crate::cgroup::Limits;
use serde::Serialize;
use std::collections::HashMap;
use std::time::Duration;

/// The most jobs a config may define.
pub const MAX_JOBS: usize = 64;
/// The most starts the restart-loop guard can be set to count.
pub const MAX_GUARD_STARTS: u32 = 64;
/// The longest backoff, restart-guard window or stop timeout.
pub const MAX_JOB_DURATION: Duration = Duration::from_secs(24 * 3600);
/// The shortest backoff.
pub const MIN_BACKOFF: Duration = Duration::from_millis(10);

/// One supervised job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobSpec {
    /// The job's identity: its group is `job.<name>`, its events name it.
    pub name: String,
    /// argv; `command[0]` is an absolute path.
    pub command: Vec<String>,
    #[serde(
        serialize_with = "print::limits",
        skip_serializing_if = "Limits::is_empty"
    )]
    pub limits: Limits,
    pub restart: Restart,
    pub backoff: Backoff,
    pub restart_guard: RestartGuard,
    pub ready: Ready,
    /// When reeve runs as PID 1 and is told to stop: how long the job has
    /// after the forwarded signal before it is killed.
    #[serde(serialize_with = "print::duration")]
    pub stop_timeout: Duration,
}

/// When an ended job is started again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Restart {
    /// Whatever way it ended.
    #[default]
    Always,
    /// Unless it exited with status 0.
    OnFailure,
    /// Never: it runs once per daemon start.
    Never,
}

impl Named for Restart {
    const NAMES: &'static [(&'static str, Self)] = &[
        ("always", Restart::Always),
        ("on-failure", Restart::OnFailure),
        ("never", Restart::Never),
    ];
}

/// The wait before a restart: `initial`, doubled after each start that
/// did not reach readiness, at most `max`, with jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Backoff {
    #[serde(serialize_with = "print::duration")]
    pub initial: Duration,
    #[serde(serialize_with = "print::duration")]
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
        }
    }
}

/// At most `starts` starts within `window`; the next is refused and the
/// job left stopped until the daemon restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RestartGuard {
    pub starts: u32,
    #[serde(serialize_with = "print::duration")]
    pub window: Duration,
}

impl Default for RestartGuard {
    fn default() -> RestartGuard {
        RestartGuard {
            starts: 5,
            window: Duration::from_secs(60),
        }
    }
}

/// When a started job counts as up: after `delay` alive (zero: at once),
/// or, with `heartbeat`, at its first verified heartbeat. A job that was
/// up resets its backoff.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Ready {
    #[serde(serialize_with = "print::duration")]
    pub delay: Duration,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub heartbeat: bool,
}

/// The `jobs` list.
pub(super) fn jobs(node: &Node) -> Result<Vec<JobSpec>, ConfigError> {
    let items = node.list("jobs")?;
    if items.len() > MAX_JOBS {
        return Err(node.error(format!(
            "{} jobs; at most {MAX_JOBS} are allowed",
            items.len()
        )));
    }
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut out = Vec::with_capacity(items.len());
    for item in &items {
        let job = job(item)?;
        let at = format!("{}.name", item.path);
        if let Some(first) = seen.get(&job.name) {
            return Err(ConfigError::new(at, format!("duplicate of {first}")));
        }
        seen.insert(job.name.clone(), at);
        out.push(job);
    }
    Ok(out)
}

fn job(node: &Node) -> Result<JobSpec, ConfigError> {
    let obj = node.object(&[
        "name",
        "command",
        "limits",
        "restart",
        "backoff",
        "restart_guard",
        "ready",
        "stop_timeout",
    ])?;
    let name_node = obj.require("name")?;
    let name = name_node.string()?;
    if !super::parse::valid_rule_name(name) {
        return Err(name_node.error(format!(
            "'{}' is not a valid job name (use 1 to {RULE_NAME_MAX} of A-Z a-z 0-9 . _ -, \
             other than '.' and '..')",
            name.escape_debug()
        )));
    }
    let command = command(&obj.require("command")?)?;
    let limits = obj.or("limits", super::parse::limits, Limits::default)?;
    let restart = obj.or("restart", |n| n.choice(), Restart::default)?;
    let backoff = obj.or("backoff", backoff, Backoff::default)?;
    let restart_guard = obj.or("restart_guard", restart_guard, RestartGuard::default)?;
    let ready = obj.or("ready", ready, Ready::default)?;
    let stop_timeout = obj.or(
        "stop_timeout",
        |n| bounded(n, Duration::ZERO),
        || Duration::from_secs(10),
    )?;
    Ok(JobSpec {
        name: name.to_string(),
        command,
        limits,
        restart,
        backoff,
        restart_guard,
        ready,
        stop_timeout,
    })
}

fn command(node: &Node) -> Result<Vec<String>, ConfigError> {
    let items = node.list("strings (the program and its arguments)")?;
    if items.is_empty() {
        return Err(node.error("the command needs at least the program"));
    }
    let mut argv = Vec::with_capacity(items.len());
    for item in &items {
        let arg = item.string()?;
        if arg.contains('\0') {
            return Err(item.error("contains a NUL byte"));
        }
        argv.push(arg.to_string());
    }
    if !argv[0].starts_with('/') {
        return Err(items[0].error(format!(
            "'{}' is not an absolute path; reeve runs no shell and searches no PATH, so \
             name the program by its full path",
            argv[0].escape_debug()
        )));
    }
    Ok(argv)
}

/// A duration of at least `min` and at most [`MAX_JOB_DURATION`].
fn bounded(node: &Node, min: Duration) -> Result<Duration, ConfigError> {
    let d = node.duration()?;
    if d < min || d > MAX_JOB_DURATION {
        return Err(node.error(format!(
            "must be between {} and {}",
            crate::units::format_duration(min),
            crate::units::format_duration(MAX_JOB_DURATION)
        )));
    }
    Ok(d)
}

fn backoff(node: &Node) -> Result<Backoff, ConfigError> {
    let obj = node.object(&["initial", "max"])?;
    let d = Backoff::default();
    let initial = obj.or("initial", |n| bounded(n, MIN_BACKOFF), || d.initial)?;
    let max = obj.or("max", |n| bounded(n, MIN_BACKOFF), || d.max.max(initial))?;
    if max < initial {
        return Err(ConfigError::new(
            format!("{}.max", node.path),
            "must not be shorter than backoff.initial",
        ));
    }
    Ok(Backoff { initial, max })
}

fn restart_guard(node: &Node) -> Result<RestartGuard, ConfigError> {
    let obj = node.object(&["starts", "window"])?;
    let d = RestartGuard::default();
    let starts = obj.or(
        "starts",
        |n| match n.whole()? {
            s @ 1..=64 => Ok(s as u32),
            _ => Err(n.error(format!("must be 1 to {MAX_GUARD_STARTS}"))),
        },
        || d.starts,
    )?;
    let window = obj.or("window", |n| bounded(n, MIN_BACKOFF), || d.window)?;
    Ok(RestartGuard { starts, window })
}

fn ready(node: &Node) -> Result<Ready, ConfigError> {
    let obj = node.object(&["delay", "heartbeat"])?;
    let delay = obj.or("delay", |n| bounded(n, Duration::ZERO), || Duration::ZERO)?;
    let heartbeat = obj.or("heartbeat", Node::boolean, || false)?;
    if heartbeat && obj.get("delay").is_some() {
        return Err(node.error(
            "give delay or heartbeat, not both: a job that beats is ready at its first beat",
        ));
    }
    Ok(Ready { delay, heartbeat })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::users::UserDb;

    fn parse(jobs: &str) -> Result<Config, ConfigError> {
        let doc =
            format!(r#"{{"targets":[{{"name":"a","match":{{"comm":["a"]}}}}],"jobs":{jobs}}}"#);
        super::super::parse::document(doc.as_bytes(), &UserDb::default(), Vec::new)
    }

    #[test]
    fn defaults_and_full_form() {
        let c = parse(r#"[{"name":"enc","command":["/bin/sleep","5"]}]"#).unwrap();
        let j = &c.jobs[0];
        assert_eq!(j.command, ["/bin/sleep", "5"]);
        assert_eq!(j.restart, Restart::Always);
        assert_eq!(j.backoff, Backoff::default());
        assert_eq!(j.restart_guard, RestartGuard::default());
        assert_eq!(j.ready.delay, Duration::ZERO);
        assert_eq!(j.stop_timeout, Duration::from_secs(10));
        let c = parse(
            r#"[{"name":"enc","command":["/bin/true"],"restart":"on-failure",
                "backoff":{"initial":"200ms","max":"2s"},
                "restart_guard":{"starts":3,"window":"10s"},
                "ready":{"delay":"1s"},"stop_timeout":"3s","limits":{"pids":10}}]"#,
        )
        .unwrap();
        let j = &c.jobs[0];
        assert_eq!(j.restart, Restart::OnFailure);
        assert_eq!(j.backoff.initial, Duration::from_millis(200));
        assert_eq!(j.restart_guard.starts, 3);
        assert_eq!(j.ready.delay, Duration::from_secs(1));
        assert!(!j.limits.is_empty());
    }

    #[test]
    fn printed_jobs_parse_back_equal() {
        let c = parse(
            r#"[{"name":"enc","command":["/bin/true","a b"],"restart":"never",
                "backoff":{"initial":"200ms","max":"2s"},"limits":{"memory":"64M"}}]"#,
        )
        .unwrap();
        let text = c.to_pretty_json();
        let again =
            super::super::parse::document(text.as_bytes(), &UserDb::default(), Vec::new).unwrap();
        assert_eq!(again.jobs, c.jobs);
    }

    #[test]
    fn bad_jobs_name_their_field() {
        let cases = [
            (
                r#"[{"command":["/bin/true"]}]"#,
                "jobs[0]",
                "missing required field 'name'",
            ),
            (
                r#"[{"name":"a b","command":["/bin/true"]}]"#,
                "jobs[0].name",
                "not a valid job name",
            ),
            (
                r#"[{"name":"a","command":[]}]"#,
                "jobs[0].command",
                "at least the program",
            ),
            (
                r#"[{"name":"a","command":["true"]}]"#,
                "jobs[0].command[0]",
                "absolute path",
            ),
            (
                r#"[{"name":"a","command":"/bin/true"}]"#,
                "jobs[0].command",
                "expected a list",
            ),
            (
                r#"[{"name":"a","command":["/bin/true"],"ready":{"delay":"1s","heartbeat":true}}]"#,
                "jobs[0].ready",
                "give delay or heartbeat, not both",
            ),
            (
                r#"[{"name":"a","command":["/bin/true"],"ready":{"heartbeat":true}}]"#,
                "jobs[0].ready.heartbeat",
                "needs a heartbeat section",
            ),
            (
                r#"[{"name":"a","command":["/bin/true"],"ready":{"heartbeat":"yes"}}]"#,
                "jobs[0].ready.heartbeat",
                "expected true or false",
            ),
            (
                r#"[{"name":"a","command":["/bin/true"],"restart":"sometimes"}]"#,
                "jobs[0].restart",
                "unknown value",
            ),
            (
                r#"[{"name":"a","command":["/bin/true"],"backoff":{"initial":"5s","max":"1s"}}]"#,
                "jobs[0].backoff.max",
                "not be shorter",
            ),
            (
                r#"[{"name":"a","command":["/bin/true"],"backoff":{"initial":"1ms"}}]"#,
                "jobs[0].backoff.initial",
                "between",
            ),
            (
                r#"[{"name":"a","command":["/bin/true"],"restart_guard":{"starts":0}}]"#,
                "jobs[0].restart_guard.starts",
                "1 to 64",
            ),
            (
                r#"[{"name":"a","command":["/bin/true"],"extra":1}]"#,
                "jobs[0].extra",
                "unknown field",
            ),
            (
                r#"[{"name":"a","command":["/bin/true"]},{"name":"a","command":["/bin/true"]}]"#,
                "jobs[1].name",
                "duplicate of jobs[0].name",
            ),
        ];
        for (doc, path, text) in cases {
            let e = parse(doc).expect_err(doc);
            assert_eq!(e.path, path, "{doc}: {e}");
            assert!(e.message.contains(text), "{doc}: {e}");
        }
    }
}
