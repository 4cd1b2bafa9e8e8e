//! The command line: grammar, usage text and exit codes. No supervision
//! logic lives here; each command hands off to the library.
//!
//! Exit codes: 0 success, 1 a runtime failure, 2 a usage or config error.
//! Every error is one line on stderr that says what was wrong.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};

use lexopt::prelude::*;

use crate::config::{Config, LogFormat, LogLevel};
use crate::daemon::{Daemon, LogOverrides};
use crate::discovery::{Discovery, ExitStatus, ScanKind, Sink, Source, Tracked};
use crate::log::{Logger, Val};
use crate::procfs::ProcKey;
use crate::table::Refusal;
use crate::users::UserDb;

mod beat;
mod jobs;
mod records;

const USAGE: &str = "\
reeve: a process supervisor for encoder hosts

usage: reeve <command> [options]

commands:
  watch          run the daemon: discover targets, track and govern them
  scan           list the processes that match the target rules, once
  run            start a command inside its own cgroup, under limits
  attach         move a running process (and its children) into a job
  detach         move a job's processes back where they came from
  status         show the daemon, jobs, limits and tracked processes
  events         print the audit event log
  beat           send a heartbeat for this process to the daemon
  check-config   validate a config file and print the effective config
  help           show help for a command

options:
  -h, --help     show help
  -V, --version  show the version

Run 'reeve help <command>' for a command's options.
";

const WATCH_USAGE: &str = "\
usage: reeve watch [--config FILE] [--log-format text|json] [--log-level LEVEL]

Runs the supervisor until SIGTERM or SIGINT; SIGHUP re-reads the config file.
Without --config it uses the embedded defaults (ffmpeg and gst-launch-1.0).

options:
  --config FILE        JSON config (see deploy/reeve.json)
  --log-format FORMAT  text (default) or json, one event per line on stderr
  --log-level LEVEL    debug, info (default), warn or error
";

const SCAN_USAGE: &str = "\
usage: reeve scan [--config FILE] [--json]

Reads the process table once and prints every process a target rule
matches. reeve never lists itself or its own descendants.

options:
  --config FILE  JSON config; without it the embedded defaults are used
  --json         one JSON object per line instead of a table
";

const CHECK_USAGE: &str = "\
usage: reeve check-config FILE

Validates FILE. Prints the effective config (defaults filled in) and exits 0,
or prints one line naming the field that is wrong and exits 2.
";

/// A failure and the exit code it maps to.
#[derive(Debug)]
pub enum CliError {
    /// Bad arguments: exit 2 with a hint.
    Usage(String),
    /// A config that cannot be used: exit 2.
    Config(String),
    /// Something failed while running: exit 1.
    Runtime(String),
    /// A command-specific exit code (a child's status, 126, 127); the
    /// message, when not empty, is printed first.
    Exit(i32, String),
}

impl CliError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) | CliError::Config(_) => 2,
            CliError::Runtime(_) => 1,
            CliError::Exit(code, _) => *code,
        }
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Usage(m) => write!(f, "reeve: {m}; try 'reeve help'"),
            CliError::Config(m) | CliError::Runtime(m) | CliError::Exit(_, m) => {
                write!(f, "reeve: {m}")
            }
        }
    }
}

impl From<lexopt::Error> for CliError {
    fn from(e: lexopt::Error) -> Self {
        CliError::Usage(e.to_string())
    }
}

/// Entry point for the binary: returns the process exit code.
pub fn main() -> i32 {
    match run(std::env::args_os().skip(1).collect()) {
        Ok(code) => code,
        Err(CliError::Exit(code, m)) if m.is_empty() => code,
        Err(e) => {
            eprintln!("{e}");
            e.exit_code()
        }
    }
}

fn print(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|_| out.flush())
        .map_err(|e| CliError::Runtime(format!("cannot write to stdout: {e}")))
}

/// Runs one command line (without the program name); returns the exit
/// code.
pub fn run(args: Vec<OsString>) -> Result<i32, CliError> {
    let mut p = lexopt::Parser::from_args(args);
    let command = match p.next()? {
        None => return Err(CliError::Usage("no command given".into())),
        Some(Short('h') | Long("help")) => return print(USAGE).map(|()| 0),
        Some(Short('V') | Long("version")) => {
            return print(&format!("reeve {}\n", env!("CARGO_PKG_VERSION"))).map(|()| 0)
        }
        Some(Value(v)) => v.string()?,
        Some(other) => return Err(other.unexpected().into()),
    };
    match command.as_str() {
        "watch" => watch(&mut p),
        "scan" => scan(&mut p).map(|()| 0),
        "run" => jobs::run(&mut p),
        "attach" => jobs::attach(&mut p),
        "detach" => jobs::detach(&mut p),
        "status" => records::status(&mut p).map(|()| 0),
        "events" => records::events(&mut p).map(|()| 0),
        "beat" => beat::beat(&mut p),
        "check-config" => check_config(&mut p).map(|()| 0),
        "help" => help(&mut p).map(|()| 0),
        other => Err(CliError::Usage(format!("unknown command '{other}'"))),
    }
}

fn help(p: &mut lexopt::Parser) -> Result<(), CliError> {
    let topic = match p.next()? {
        None => return print(USAGE),
        Some(Value(v)) => v.string()?,
        Some(other) => return Err(other.unexpected().into()),
    };
    if let Some(extra) = p.next()? {
        return Err(extra.unexpected().into());
    }
    match topic.as_str() {
        "watch" => print(WATCH_USAGE),
        "scan" => print(SCAN_USAGE),
        "check-config" => print(CHECK_USAGE),
        "run" => print(jobs::RUN_USAGE),
        "attach" => print(jobs::ATTACH_USAGE),
        "detach" => print(jobs::DETACH_USAGE),
        "status" => print(records::STATUS_USAGE),
        "events" => print(records::EVENTS_USAGE),
        "beat" => print(beat::BEAT_USAGE),
        "help" => print(USAGE),
        other => Err(CliError::Usage(format!(
            "no help for unknown command '{other}'"
        ))),
    }
}

fn users() -> UserDb {
    // An unreadable /etc/passwd leaves names unresolvable; numeric uids
    // still work, and a config naming a user fails with a clear error.
    // Without a readable /etc/passwd (a scratch container) user names
    // cannot resolve: a config naming one fails with an error that names
    // the user, and numeric uids work. Nothing is lost by going on.
    UserDb::load().unwrap_or_else(|_| UserDb::from_passwd(""))
}

fn load_config(path: Option<&Path>) -> Result<Config, CliError> {
    match path {
        None => Ok(Config::embedded()),
        Some(path) => Config::load(path, &users())
            .map_err(|e| CliError::Config(format!("{}: {e}", path.display()))),
    }
}

/// Returns the daemon's exit status: 0, or as PID 1 whether its jobs
/// stopped cleanly (see `Supervisor::exit_status`).
fn watch(p: &mut lexopt::Parser) -> Result<i32, CliError> {
    let mut config_path: Option<PathBuf> = None;
    let mut format: Option<LogFormat> = None;
    let mut level: Option<LogLevel> = None;
    while let Some(arg) = p.next()? {
        match arg {
            Long("config") => config_path = Some(p.value()?.into()),
            Long("log-format") => {
                format = Some(match p.value()?.string()?.as_str() {
                    "text" => LogFormat::Text,
                    "json" => LogFormat::Json,
                    other => {
                        return Err(CliError::Usage(format!(
                            "--log-format must be text or json, not '{other}'"
                        )))
                    }
                })
            }
            Long("log-level") => {
                level = Some(match p.value()?.string()?.as_str() {
                    "debug" => LogLevel::Debug,
                    "info" => LogLevel::Info,
                    "warn" => LogLevel::Warn,
                    "error" => LogLevel::Error,
                    other => {
                        return Err(CliError::Usage(format!(
                            "--log-level must be debug, info, warn or error, not '{other}'"
                        )))
                    }
                })
            }
            Short('h') | Long("help") => return print(WATCH_USAGE).map(|()| 0),
            other => return Err(other.unexpected().into()),
        }
    }
    let mut config = match load_config(config_path.as_deref()) {
        Ok(c) => c,
        Err(e) => return Err(fatal(format.unwrap_or(LogFormat::Text), e)),
    };
    if let Some(f) = format {
        config.log.format = f;
    }
    if let Some(l) = level {
        config.log.level = l;
    }
    let overrides = LogOverrides { format, level };
    let format = config.log.format;
    let log = Logger::new(config.log.format, config.log.level);
    let daemon = Daemon::new(config, config_path, log, overrides)
        .map_err(|e| fatal(format, CliError::Runtime(e)))?;
    daemon
        .run()
        .map_err(|e| fatal(format, CliError::Runtime(e)))
}

/// A watch that cannot go on: with `--log-format json` (or the config's
/// json format) the reason is one JSON line like every other stderr line,
/// and the exit code is the same as for the text message.
fn fatal(format: LogFormat, e: CliError) -> CliError {
    if format != LogFormat::Json {
        return e;
    }
    let code = e.exit_code();
    let text = e.to_string();
    let message = text.strip_prefix("reeve: ").unwrap_or(&text);
    Logger::new(LogFormat::Json, LogLevel::Error).error(
        "watch_failed",
        &[
            ("error", Val::S(message)),
            ("exit_code", Val::I(code.into())),
        ],
    );
    CliError::Exit(code, String::new())
}

/// Collects what one scan discovered.
#[derive(Default)]
struct Collect {
    found: Vec<(ProcKey, String)>,
    refused: usize,
}

impl Sink for Collect {
    fn discovered(&mut self, key: ProcKey, _: &Tracked, rule: &str, _: Source) {
        self.found.push((key, rule.to_string()));
    }
    fn exited(&mut self, _: ProcKey, _: &Tracked, _: &str, _: Option<ExitStatus>) {}
    fn already_tracked(&mut self, _: ProcKey, _: Source) {}
    fn refused(&mut self, _: ProcKey, _: &str, _: Refusal) {
        self.refused += 1;
    }
}

fn scan(p: &mut lexopt::Parser) -> Result<(), CliError> {
    let mut config_path: Option<PathBuf> = None;
    let mut json = false;
    while let Some(arg) = p.next()? {
        match arg {
            Long("config") => config_path = Some(p.value()?.into()),
            Long("json") => json = true,
            Short('h') | Long("help") => return print(SCAN_USAGE),
            other => return Err(other.unexpected().into()),
        }
    }
    let config = load_config(config_path.as_deref())?;
    let mut discovery = Discovery::new(&config.targets, config.capacity)
        .map_err(|e| CliError::Runtime(format!("cannot open /proc: {e}")))?;
    let mut sink = Collect::default();
    discovery
        .scan(ScanKind::Deep, &mut sink)
        .map_err(|e| CliError::Runtime(format!("cannot read /proc: {e}")))?;
    if sink.refused > 0 {
        eprintln!(
            "reeve: {} matching processes not listed: more than capacity {} (raise \"capacity\")",
            sink.refused, config.capacity
        );
    }
    sink.found.sort();
    let mut out = String::new();
    if !json {
        out.push_str("PID\tPPID\tUID\tRULE\tSTARTED_AT_MS\tCOMM\tCMDLINE\n");
    }
    let reader = discovery.reader();
    for (key, rule) in &sink.found {
        // Re-check identity: a process that ended (or whose pid was reused)
        // since the scan is not reported.
        let Ok(stat) = reader.stat(key.pid) else {
            continue;
        };
        if stat.start_ticks != key.start_ticks {
            continue;
        }
        let Ok(info) = reader.info(&stat) else {
            continue;
        };
        if json {
            let mut v = serde_json::to_value(&info)
                .map_err(|e| CliError::Runtime(format!("cannot encode a process as JSON: {e}")))?;
            if let Some(obj) = v.as_object_mut() {
                obj.insert("rule".into(), serde_json::Value::String(rule.clone()));
            }
            out.push_str(&v.to_string());
            out.push('\n');
        } else {
            out.push_str(&format!(
                "{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
                info.pid,
                info.ppid,
                info.uid,
                rule,
                info.started_at_ms,
                info.comm,
                info.cmdline.join(" ")
            ));
        }
    }
    print(&out)
}

fn check_config(p: &mut lexopt::Parser) -> Result<(), CliError> {
    let mut file: Option<PathBuf> = None;
    while let Some(arg) = p.next()? {
        match arg {
            Value(v) if file.is_none() => file = Some(v.into()),
            Short('h') | Long("help") => return print(CHECK_USAGE),
            other => return Err(other.unexpected().into()),
        }
    }
    let Some(file) = file else {
        return Err(CliError::Usage("check-config needs a FILE".into()));
    };
    let config = load_config(Some(&file))?;
    let mut text = config.to_pretty_json();
    text.push('\n');
    print(&text)
}
