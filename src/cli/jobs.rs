//! `reeve run`, `reeve attach` and `reeve detach`: argument grammar and
//! reports. The work is done by `spawn` and `placement`.

use std::ffi::OsString;
use std::path::PathBuf;

use lexopt::prelude::*;

use super::{load_config, print, CliError};
use crate::cgroup::{self, Hierarchy, Limits};
use crate::config::Config;
use crate::log::Val;
use crate::placement::{self, Placement, Records};
use crate::procfs::ProcReader;
use crate::spawn::{self, RunSpec};
use crate::store::{EventLog, LogOptions, StateDir};

pub const RUN_USAGE: &str = "\
usage: reeve run [--job NAME | --pool NAME] [LIMITS] [--detach] [--config FILE] -- CMD [ARGS...]

Starts CMD inside its own cgroup, with every limit in force before CMD runs
its first instruction. If a limit cannot be put in force, CMD is not started
(exit 1). A job whose group already holds processes, or a group reeve has no
record of, is refused before anything is written (exit 1). The limits given
are the group's whole set: a limit not given is reset to the kernel's
default (a pool joined without limits keeps its budget). CMD starts with
default signal dispositions and an empty signal mask. Foreground: forwards SIGINT, SIGTERM, SIGHUP and SIGQUIT and exits
with CMD's status (128+N for a signal). kill -9 of reeve leaves CMD running
in its group. --detach prints pid=, job= and cgroup= and returns at once;
the detached command reads /dev/null and writes its output to reeve's stderr.
job= names the group (job.NAME or pool.NAME).

limits:
  --cpu 250%|2.5|max     CPU time (percent of one CPU, or CPUs)
  --cpu-period DURATION  cpu.max period (default 100ms)
  --cpu-weight N         1..10000
  --memory SIZE          memory.max (e.g. 4G, 512M)
  --memory-high SIZE     memory.high
  --swap SIZE            memory.swap.max
  --pids N               pids.max
  --io 'MAJ:MIN rbps=50M wbps=max riops=N wiops=N'
  --io-weight N          1..10000
  --cpuset LIST          cpuset.cpus (e.g. 0-3,6)
  --net-tx RATE[/burst=SIZE]  egress bytes/s (e.g. 20M, 20M/burst=4M)
  --net-rx RATE[/burst=SIZE]  ingress bytes/s, policed

Without --job the job is named after CMD and reeve's pid.
";

pub const ATTACH_USAGE: &str = "\
usage: reeve attach --pid PID [--job NAME | --pool NAME] [LIMITS] [--config FILE]

Moves a running process and its descendants into a job (or pool) group and
puts the limits in force (see 'reeve help run' for LIMITS). Without LIMITS an
existing group keeps its limits. Exit 1 when the process was moved but a
limit is not in force (the reason is printed), and when the process is pid 1,
reeve itself or an ancestor of reeve: those are never moved.
";

pub const DETACH_USAGE: &str = "\
usage: reeve detach (--pid PID | --job NAME | --pool NAME) [--config FILE]

Moves the processes back to the cgroups they came from (or the nearest
existing ancestor), removes the empty group, and leaves them running.
";

/// Options shared by the three commands.
#[derive(Default)]
struct Common {
    config: Option<PathBuf>,
    job: Option<String>,
    pool: Option<String>,
    limits: Limits,
}

impl Common {
    /// Consumes the long option `name` if it is a shared one.
    fn take(&mut self, name: &str, p: &mut lexopt::Parser) -> Result<bool, CliError> {
        let flag = format!("--{name}");
        match name {
            "config" => self.config = Some(p.value()?.into()),
            "job" => self.job = Some(p.value()?.string()?),
            "pool" => self.pool = Some(p.value()?.string()?),
            _ if cgroup::LIMIT_FLAGS.contains(&flag.as_str()) => {
                let value = p.value()?.string()?;
                cgroup::apply_flag(&mut self.limits, &flag, &value).map_err(CliError::Usage)?;
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn placement(&self, default_job: impl FnOnce() -> String) -> Result<Placement, CliError> {
        let place = match (&self.job, &self.pool) {
            (Some(_), Some(_)) => {
                return Err(CliError::Usage(
                    "--job and --pool exclude each other".into(),
                ))
            }
            (Some(j), None) => Placement::Job(j.clone()),
            (None, Some(p)) => Placement::Pool(p.clone()),
            (None, None) => Placement::Job(default_job()),
        };
        let name = match &place {
            Placement::Job(n) | Placement::Pool(n) => n,
        };
        cgroup::validate_job_name(name)
            .map_err(|why| CliError::Usage(format!("invalid name '{name}': {why}")))?;
        Ok(place)
    }

    fn limits(&self) -> Result<Limits, CliError> {
        self.limits.validate().map_err(|e| {
            CliError::Usage(format!("--{}: {}", e.path.replace('_', "-"), e.message))
        })?;
        Ok(self.limits.clone())
    }

    fn setup(&self) -> Result<(Config, Hierarchy, Records), CliError> {
        let config = load_config(self.config.as_deref())?;
        let h = Hierarchy::detect(config.cgroup_root.as_deref())
            .map_err(|e| CliError::Runtime(e.to_string()))?;
        let records =
            Records::open(&config.state_dir).map_err(|e| CliError::Runtime(e.to_string()))?;
        Ok((config, h, records))
    }
}

pub fn run(p: &mut lexopt::Parser) -> Result<i32, CliError> {
    let mut common = Common::default();
    let mut detach = false;
    let mut argv: Vec<OsString> = Vec::new();
    while let Some(arg) = p.next()? {
        match arg {
            Long("detach") => detach = true,
            Short('h') | Long("help") => {
                print(RUN_USAGE)?;
                return Ok(0);
            }
            Value(v) => {
                argv.push(v);
                argv.extend(p.raw_args()?);
                break;
            }
            Long(name) => {
                let name = name.to_string();
                if !common.take(&name, p)? {
                    return Err(Long(&name).unexpected().into());
                }
            }
            other => return Err(other.unexpected().into()),
        }
    }
    let Some(program) = argv.first() else {
        return Err(CliError::Usage(
            "run needs a command: reeve run [OPTIONS] -- CMD".into(),
        ));
    };
    let place = common.placement(|| spawn::default_job_name(program))?;
    let limits = common.limits()?;
    let (config, h, records) = common.setup()?;
    let spec = RunSpec {
        place,
        limits,
        detach,
        argv,
    };
    let mut on_event = |event: &str, fields: &[(&str, Val<'_>)]| {
        audit(&config.state_dir, event, fields);
    };
    let result = spawn::run(&h, &records, &spec, &mut on_event);
    result.map_err(|e| match e {
        spawn::RunError::NoCommand => CliError::Usage(e.to_string()),
        e @ (spawn::RunError::Identity { .. } | spawn::RunError::Wait(_)) => {
            // After the start: `run_failed` and `job_ended` tell it.
            CliError::Exit(e.exit_code(), e.to_string())
        }
        e => {
            // Nothing was started: the refusal is in the audit trail too.
            let why = e.to_string();
            audit(
                &config.state_dir,
                "run_refused",
                &[
                    ("job", Val::S(&spec.place.group_name())),
                    ("reason", Val::S(&why)),
                    ("source", Val::S("cli")),
                ],
            );
            CliError::Exit(e.exit_code(), why)
        }
    })
}

/// Appends one event to the audit log of `state_dir`, shared with the
/// daemon. A failure is a warning: the command's own work is done.
fn audit(state_dir: &std::path::Path, event: &str, fields: &[(&str, Val<'_>)]) {
    let result = StateDir::open(state_dir)
        .and_then(|d| EventLog::open(&d, LogOptions::default()))
        .and_then(|mut log| {
            if log
                .append(crate::sys::realtime_ms(), event, fields)?
                .is_none()
            {
                // Queued behind a held lock or a full disk: this process
                // is about to exit, so retry briefly before giving up.
                for _ in 0..20 {
                    if log.flush_pending() > 0 && log.pending() == 0 {
                        return Ok(());
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                if log.pending() > 0 {
                    let why = log.take_error().map_or_else(
                        || "busy (another writer holds its lock)".to_string(),
                        |e| e.to_string(),
                    );
                    warn(&format!(
                        "reeve: warning: audit log: {why}; event {event} not recorded"
                    ));
                }
            }
            Ok(())
        });
    if let Err(e) = result {
        warn(&format!(
            "reeve: warning: audit log: {e}; event {event} not recorded"
        ));
    }
}

/// A warning line on stderr. It runs while `reeve run`'s command may be
/// running, when stderr may be a closed pipe: a failed write is dropped,
/// because the warning has nowhere else to go and the caller's exit
/// status still tells the story.
fn warn(line: &str) {
    use std::io::Write;
    let mut err = std::io::stderr().lock();
    // Dropped on purpose: see above.
    let _ = err.write_all(format!("{line}\n").as_bytes());
}

/// A failure of the work itself: exit 1 with its one-line message.
fn runtime(e: impl std::fmt::Display) -> CliError {
    CliError::Runtime(e.to_string())
}

fn parse_pid(p: &mut lexopt::Parser) -> Result<u32, CliError> {
    let v = p.value()?.string()?;
    v.parse::<u32>()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| CliError::Usage(format!("--pid needs a process id, not '{v}'")))
}

pub fn attach(p: &mut lexopt::Parser) -> Result<i32, CliError> {
    let mut common = Common::default();
    let mut pid = None;
    while let Some(arg) = p.next()? {
        match arg {
            Long("pid") => pid = Some(parse_pid(p)?),
            Short('h') | Long("help") => {
                print(ATTACH_USAGE)?;
                return Ok(0);
            }
            Long(name) => {
                let name = name.to_string();
                if !common.take(&name, p)? {
                    return Err(Long(&name).unexpected().into());
                }
            }
            other => return Err(other.unexpected().into()),
        }
    }
    let Some(pid) = pid else {
        return Err(CliError::Usage("attach needs --pid PID".into()));
    };
    let limits = common.limits()?;
    let (config, h, records) = common.setup()?;
    // A refusal is part of the audit trail too.
    let refused = |e: &dyn std::fmt::Display| {
        let why = e.to_string();
        audit(
            &config.state_dir,
            "attach_refused",
            &[
                ("pid", Val::U(pid.into())),
                ("reason", Val::S(&why)),
                ("source", Val::S("cli")),
            ],
        );
        runtime(why)
    };
    let mut reader = ProcReader::open().map_err(|e| CliError::Runtime(e.to_string()))?;
    let key = placement::identify(&mut reader, pid).map_err(|e| refused(&e))?;
    placement::refuse_protected(&mut reader, key).map_err(|e| refused(&e))?;
    let place = common.placement(|| {
        let comm = reader
            .stat(pid)
            .map(|s| s.comm.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "proc".into());
        cgroup::sanitize_job_name(&format!("{comm}-{pid}"))
    })?;
    let now = crate::sys::realtime_ms();
    let held = records.lock().map_err(runtime)?;
    let report = placement::attach(&h, &held, &mut reader, key, &place, &limits, now)
        .map_err(|e| refused(&e))?;
    drop(held);
    let limits = &report.limits;
    let reset = report.reset.join(",");
    let cgroup = report.cgroup.display().to_string();
    let described = limits.describe();
    let mut fields = vec![
        ("pid", Val::U(pid.into())),
        ("start_ticks", Val::U(key.start_ticks)),
        ("job", Val::S(&report.group)),
        ("cgroup", Val::S(&cgroup)),
        ("moved", Val::U(report.moved.len() as u64)),
        ("limits", Val::S(&described)),
        ("in_force", Val::Bool(report.in_force)),
        ("source", Val::S("cli")),
    ];
    if !reset.is_empty() {
        fields.push(("limit_reset", Val::S(&reset)));
    }
    audit(&config.state_dir, "attached", &fields);
    let mut out = format!(
        "attached pid={} job={} cgroup={} moved={} limits={}\n",
        pid,
        report.group,
        report.cgroup.display(),
        report.moved.len(),
        if limits.is_empty() {
            "none".to_string()
        } else if report.in_force {
            format!("\"{}\" in force", limits.describe())
        } else {
            format!("\"{}\" NOT in force", limits.describe())
        }
    );
    if !reset.is_empty() {
        out.push_str(&format!("limit reset to the kernel default: {reset}\n"));
    }
    for (k, why) in &report.failed {
        out.push_str(&format!("not moved: pid {}: {why}\n", k.pid));
    }
    print(&out)?;
    if let Some(e) = &report.unconfirmed {
        return Err(CliError::Exit(
            1,
            format!("moved, but the job record was not confirmed: {e}; it lists the moves as intents, settled on its next write"),
        ));
    }
    if !report.in_force {
        return Err(CliError::Exit(
            1,
            format!("limits not in force: {}", report.problems.join("; ")),
        ));
    }
    Ok(0)
}

pub fn detach(p: &mut lexopt::Parser) -> Result<i32, CliError> {
    let mut common = Common::default();
    let mut pid = None;
    while let Some(arg) = p.next()? {
        match arg {
            Long("pid") => pid = Some(parse_pid(p)?),
            Long("config") => common.config = Some(p.value()?.into()),
            Long("job") => common.job = Some(p.value()?.string()?),
            Long("pool") => common.pool = Some(p.value()?.string()?),
            Short('h') | Long("help") => {
                print(DETACH_USAGE)?;
                return Ok(0);
            }
            other => return Err(other.unexpected().into()),
        }
    }
    let (config, h, records) = common.setup()?;
    let mut reader = ProcReader::open().map_err(|e| CliError::Runtime(e.to_string()))?;
    let (group, only) = match (pid, &common.job, &common.pool) {
        (Some(pid), None, None) => {
            let key = placement::identify(&mut reader, pid).map_err(runtime)?;
            let group = placement::managed_group(&h, pid).ok_or_else(|| {
                CliError::Runtime(format!(
                    "process {pid} is not in a job or pool group under {}",
                    h.root.display()
                ))
            })?;
            (group, Some(key))
        }
        (None, Some(_), None) | (None, None, Some(_)) => {
            (common.placement(String::new)?.group_name(), None)
        }
        _ => {
            return Err(CliError::Usage(
                "detach needs exactly one of --pid, --job or --pool".into(),
            ))
        }
    };
    let held = records.lock().map_err(runtime)?;
    let report = placement::detach(&h, &held, &mut reader, &group, only).map_err(runtime)?;
    drop(held);
    audit(
        &config.state_dir,
        "detached",
        &[
            ("job", Val::S(&report.group)),
            ("moved", Val::U(report.moved.len() as u64)),
            ("removed", Val::Bool(report.removed)),
            ("source", Val::S("cli")),
        ],
    );
    let mut out = format!(
        "detached job={} moved={} removed={}\n",
        report.group,
        report.moved.len(),
        if report.removed { "yes" } else { "no" }
    );
    for (k, dest) in &report.moved {
        out.push_str(&format!("  pid {} -> {}\n", k.pid, dest.display()));
    }
    for (pid, why) in &report.failed {
        out.push_str(&format!("not moved: pid {pid}: {why}\n"));
    }
    if let Some(why) = &report.kept {
        out.push_str(&format!("group kept: {why}\n"));
    }
    print(&out)?;
    if let Some(e) = &report.unconfirmed {
        return Err(CliError::Exit(
            1,
            format!("moved back, but the job record was not confirmed: {e}"),
        ));
    }
    if !report.failed.is_empty() {
        return Err(CliError::Exit(1, "some processes were not moved".into()));
    }
    Ok(0)
}
