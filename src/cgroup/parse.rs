//! The two spellings of limits: a JSON `limits` object in the config and
//! the limit flags of the command line.
//!
//! Every value is checked against what the kernel accepts, so a parsed
//! [`Limits`] can be written. Errors are one line naming the config path
//! (`targets[0].limits.io[1].device`) or the flag (`--memory`).

use serde_json::Value;

use super::limits::{CPU_PERIOD_RANGE_US, MAX_PIDS, MAX_WEIGHT};
use super::{cpuset, parse_u64, IoMax, IoRate, Limits, LimitsError, PidsLimit};
use crate::units::{self, CpuLimit, SizeLimit};

/// The command-line flags [`apply_flag`] understands.
pub const LIMIT_FLAGS: &[&str] = &[
    "--cpu",
    "--cpu-period",
    "--cpu-weight",
    "--memory",
    "--memory-high",
    "--swap",
    "--pids",
    "--io",
    "--io-weight",
    "--cpuset",
];

const KEYS: &[&str] = &[
    "cpu",
    "cpu_period",
    "cpu_weight",
    "memory",
    "memory_high",
    "swap",
    "pids",
    "io",
    "io_weight",
    "cpuset",
];

const IO_KEYS: [&str; 4] = ["rbps", "wbps", "riops", "wiops"];

/// Parses a `limits` object; `path` is where it sits in the config
/// ("targets[0].limits") and prefixes every error.
pub fn limits_from_json(v: &Value, path: &str) -> Result<Limits, LimitsError> {
    let err = |at: String, message: String| LimitsError { path: at, message };
    let obj = v.as_object().ok_or_else(|| {
        let m = "expected an object of limits, e.g. {\"cpu\": \"250%\", \"memory\": \"4G\"}";
        err(path.to_string(), m.to_string())
    })?;
    let mut l = Limits::default();
    for (key, val) in obj {
        let at = format!("{path}.{key}");
        if key == "io" {
            l.io = io_from_json(val, &at)?;
            continue;
        }
        set_limit(&mut l, key, val).map_err(|m| err(at, m))?;
    }
    l.validate()
        .map_err(|e| err(format!("{path}.{}", e.path), e.message))?;
    Ok(l)
}

/// Sets the limit `key` (any but "io") from a JSON value.
fn set_limit(l: &mut Limits, key: &str, val: &Value) -> Result<(), String> {
    match key {
        "cpu" => l.cpu = Some(parse_cpu(&scalar(val, true)?)?),
        "cpu_period" => l.cpu_period_us = Some(parse_cpu_period(&scalar(val, false)?)?),
        "cpu_weight" => l.cpu_weight = Some(parse_weight(&scalar(val, false)?)?),
        "memory" => l.memory = Some(parse_memory(&scalar(val, false)?)?),
        "memory_high" => l.memory_high = Some(parse_memory(&scalar(val, false)?)?),
        "swap" => l.swap = Some(parse_size(&scalar(val, false)?)?),
        "pids" => l.pids = Some(parse_pids(&scalar(val, false)?)?),
        "io_weight" => l.io_weight = Some(parse_weight(&scalar(val, false)?)?),
        "cpuset" => l.cpuset = Some(parse_cpuset(&scalar(val, false)?)?),
        _ => return Err(format!("unknown limit (expected {})", KEYS.join(", "))),
    }
    Ok(())
}

fn io_from_json(v: &Value, path: &str) -> Result<Vec<IoMax>, LimitsError> {
    let err = |at: String, message: String| LimitsError { path: at, message };
    let list = v.as_array().ok_or_else(|| {
        let m = "expected a list of devices, e.g. [{\"device\": \"8:0\", \"wbps\": \"50M\"}]";
        err(path.to_string(), m.to_string())
    })?;
    let mut out: Vec<IoMax> = Vec::new();
    for (i, item) in list.iter().enumerate() {
        let at = format!("{path}[{i}]");
        let obj = item.as_object().ok_or_else(|| {
            let m = "expected an object such as {\"device\": \"8:0\", \"rbps\": \"50M\"}";
            err(at.clone(), m.to_string())
        })?;
        let device = obj.get("device").ok_or_else(|| {
            let m = "missing: name the block device as MAJ:MIN, e.g. \"8:0\" (see lsblk)";
            err(format!("{at}.device"), m.to_string())
        })?;
        let (major, minor) = scalar(device, false)
            .and_then(|t| parse_device(&t))
            .map_err(|m| err(format!("{at}.device"), m))?;
        let mut io = IoMax {
            major,
            minor,
            rbps: None,
            wbps: None,
            riops: None,
            wiops: None,
        };
        for (key, val) in obj.iter().filter(|(k, _)| *k != "device") {
            let known = IO_KEYS.contains(&key.as_str());
            let text = if known {
                scalar(val, false)
            } else {
                Ok(String::new())
            };
            text.and_then(|t| set_io_key(&mut io, key, &t))
                .map_err(|m| err(format!("{at}.{key}"), m))?;
        }
        check_io(&io, &out).map_err(|m| err(at.clone(), m))?;
        out.push(io);
    }
    Ok(out)
}

/// Sets one io.max key; "device" is handled by the caller.
fn set_io_key(io: &mut IoMax, key: &str, text: &str) -> Result<(), String> {
    let slot = match key {
        "rbps" => &mut io.rbps,
        "wbps" => &mut io.wbps,
        "riops" => &mut io.riops,
        "wiops" => &mut io.wiops,
        "device" => return Err("the device is given once, first".to_string()),
        _ => {
            return Err(format!(
                "unknown key (expected device, {})",
                IO_KEYS.join(", ")
            ))
        }
    };
    if slot.is_some() {
        return Err(format!("{key} is given twice"));
    }
    *slot = Some(if key.ends_with("bps") {
        parse_bps(text)?
    } else {
        parse_iops(text)?
    });
    Ok(())
}

/// A device entry sets something and is not a repeat.
fn check_io(io: &IoMax, earlier: &[IoMax]) -> Result<(), String> {
    if io.keys().iter().all(|(_, r)| r.is_none()) {
        return Err(format!(
            "no limit for device {}:{} (set at least one of {})",
            io.major,
            io.minor,
            IO_KEYS.join(", ")
        ));
    }
    if earlier
        .iter()
        .any(|e| (e.major, e.minor) == (io.major, io.minor))
    {
        return Err(format!(
            "device {}:{} is listed twice; give each device once",
            io.major, io.minor
        ));
    }
    Ok(())
}

/// A JSON string, or a number written as text. Only the CPU amount may be
/// fractional ("cpu": 2.5); elsewhere a fraction is an error rather than
/// silently cut.
fn scalar(v: &Value, fraction_ok: bool) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) if fraction_ok || n.is_u64() || n.is_i64() => Ok(n.to_string()),
        Value::Number(n) => Err(format!("{n} is not a whole number")),
        _ => Err(format!("expected a string or a number, not {v}")),
    }
}

/// Applies one command-line limit flag (one of [`LIMIT_FLAGS`]) to `l`.
/// Errors are one line naming the flag. Run [`Limits::validate`] after the
/// last flag.
pub fn apply_flag(l: &mut Limits, flag: &str, value: &str) -> Result<(), String> {
    let r = match flag {
        "--cpu" => parse_cpu(value).map(|v| l.cpu = Some(v)),
        "--cpu-period" => parse_cpu_period(value).map(|v| l.cpu_period_us = Some(v)),
        "--cpu-weight" => parse_weight(value).map(|v| l.cpu_weight = Some(v)),
        "--memory" => parse_memory(value).map(|v| l.memory = Some(v)),
        "--memory-high" => parse_memory(value).map(|v| l.memory_high = Some(v)),
        "--swap" => parse_size(value).map(|v| l.swap = Some(v)),
        "--pids" => parse_pids(value).map(|v| l.pids = Some(v)),
        "--io" => parse_io_flag(value)
            .and_then(|io| check_io(&io, &l.io).map(|()| io))
            .map(|io| l.io.push(io)),
        "--io-weight" => parse_weight(value).map(|v| l.io_weight = Some(v)),
        "--cpuset" => parse_cpuset(value).map(|v| l.cpuset = Some(v)),
        _ => Err(format!(
            "not a limit flag (expected one of {})",
            LIMIT_FLAGS.join(", ")
        )),
    };
    r.map_err(|m| format!("{flag}: {m}"))
}

/// "8:0 rbps=50M wbps=max riops=1000".
fn parse_io_flag(value: &str) -> Result<IoMax, String> {
    let mut words = value.split_ascii_whitespace();
    let (major, minor) = parse_device(words.next().unwrap_or(""))?;
    let mut io = IoMax {
        major,
        minor,
        rbps: None,
        wbps: None,
        riops: None,
        wiops: None,
    };
    for word in words {
        let (key, text) = word
            .split_once('=')
            .ok_or_else(|| format!("{word:?} is not key=value (e.g. rbps=50M)"))?;
        if key == "device" {
            return Err(format!("{word:?}: the device comes first, as MAJ:MIN"));
        }
        set_io_key(&mut io, key, text)?;
    }
    Ok(io)
}

fn parse_cpu(s: &str) -> Result<CpuLimit, String> {
    units::parse_cpu(s).map_err(|e| e.to_string())
}

fn parse_size(s: &str) -> Result<SizeLimit, String> {
    units::parse_size(s).map_err(|e| e.to_string())
}

/// A memory limit: a size above zero, or "max".
fn parse_memory(s: &str) -> Result<SizeLimit, String> {
    match parse_size(s)? {
        SizeLimit::Bytes(0) => Err(format!(
            "{s:?}: a memory limit of zero would kill the job at once; use a size or max"
        )),
        v => Ok(v),
    }
}

/// A cpu.max period in whole microseconds, 1ms..=1s.
pub fn parse_cpu_period(s: &str) -> Result<u64, String> {
    let d = units::parse_duration(s).map_err(|e| e.to_string())?;
    let (lo, hi) = CPU_PERIOD_RANGE_US;
    let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    if d.subsec_nanos() % 1_000 != 0 || !(lo..=hi).contains(&us) {
        return Err(format!(
            "{s:?}: a CPU period is a whole number of microseconds from 1ms to 1s"
        ));
    }
    Ok(us)
}

/// A cpu.weight or io.weight: 1..=10000.
pub fn parse_weight(s: &str) -> Result<u32, String> {
    match parse_u64(s) {
        Some(w) if (1..=u64::from(MAX_WEIGHT)).contains(&w) => Ok(w as u32),
        _ => Err(format!(
            "{s:?}: a weight is a whole number from 1 to {MAX_WEIGHT} (100 is the default)"
        )),
    }
}

/// pids.max: "max" or 1..=4194304.
pub fn parse_pids(s: &str) -> Result<PidsLimit, String> {
    if s == "max" {
        return Ok(PidsLimit::Max);
    }
    match parse_u64(s) {
        Some(n) if (1..=MAX_PIDS).contains(&n) => Ok(PidsLimit::Count(n)),
        _ => Err(format!(
            "{s:?}: a process limit is a whole number from 1 to {MAX_PIDS}, or max"
        )),
    }
}

/// A block device as "MAJ:MIN".
pub fn parse_device(s: &str) -> Result<(u32, u32), String> {
    let num = |t: &str| parse_u64(t).and_then(|v| u32::try_from(v).ok());
    match s.split_once(':') {
        Some((a, b)) => match (num(a), num(b)) {
            (Some(major), Some(minor)) => Ok((major, minor)),
            _ => Err(bad_device(s)),
        },
        None => Err(bad_device(s)),
    }
}

fn bad_device(s: &str) -> String {
    format!("{s:?} is not a block device number (write MAJ:MIN, e.g. \"8:0\"; see lsblk)")
}

/// The kernel rejects a rate of 0, and kernels before 6.x also 1.
const MIN_IO_RATE: u64 = 2;

/// Bytes per second: a size ("50M") or "max".
fn parse_bps(s: &str) -> Result<IoRate, String> {
    match parse_size(s)? {
        SizeLimit::Max => Ok(IoRate::Max),
        SizeLimit::Bytes(n) if n >= MIN_IO_RATE => Ok(IoRate::Value(n)),
        SizeLimit::Bytes(_) => Err(format!(
            "{s:?}: a byte rate must be at least {MIN_IO_RATE} per second (or max)"
        )),
    }
}

/// Operations per second: 2..=4294967295 or "max".
fn parse_iops(s: &str) -> Result<IoRate, String> {
    if s == "max" {
        return Ok(IoRate::Max);
    }
    match parse_u64(s) {
        Some(n) if (MIN_IO_RATE..=u64::from(u32::MAX)).contains(&n) => Ok(IoRate::Value(n)),
        _ => Err(format!(
            "{s:?}: an IOPS limit is a whole number from {MIN_IO_RATE} to {}, or max",
            u32::MAX
        )),
    }
}

/// A CPU list in order ("0-3,5"), stored canonical.
fn parse_cpuset(s: &str) -> Result<String, String> {
    cpuset::parse_cpu_list(s, true)
        .map(|ranges| cpuset::format_cpu_list(&ranges))
        .map_err(|m| format!("{s:?}: {m}"))
}

#[cfg(test)]
mod tests {
    use super::super::limits::cpu_quota_us;
    use super::super::Controller;
    use super::*;
    use serde_json::json;

    const AT: &str = "targets[0].limits";

    fn parse(v: Value) -> Result<Limits, LimitsError> {
        limits_from_json(&v, AT)
    }

    #[test]
    fn full_object() {
        let l = parse(json!({
            "cpu": "250%", "cpu_period": "50ms", "cpu_weight": 200,
            "memory": "4G", "memory_high": 3221225472u64, "swap": "0",
            "pids": 64, "io_weight": "300", "cpuset": "0-1,2-3,5",
            "io": [
                {"device": "8:0", "rbps": "50M", "wbps": "max", "riops": 1000, "wiops": "max"},
                {"device": "259:0", "wbps": 1048576}
            ]
        }))
        .unwrap();
        assert_eq!(l.cpu, Some(CpuLimit::Millicores(2500)));
        assert_eq!(l.cpu_period_us, Some(50_000));
        assert_eq!(l.cpu_weight, Some(200));
        assert_eq!(l.memory, Some(SizeLimit::Bytes(4 << 30)));
        assert_eq!(l.memory_high, Some(SizeLimit::Bytes(3 << 30)));
        assert_eq!(l.swap, Some(SizeLimit::Bytes(0)));
        assert_eq!(l.pids, Some(PidsLimit::Count(64)));
        assert_eq!(l.io_weight, Some(300));
        assert_eq!(l.cpuset.as_deref(), Some("0-3,5"));
        assert_eq!(
            l.io[0].line(),
            "8:0 rbps=52428800 wbps=max riops=1000 wiops=max"
        );
        assert_eq!(l.io[1].line(), "259:0 wbps=1048576");
        assert_eq!(
            l.controllers(),
            [
                Controller::Cpu,
                Controller::Memory,
                Controller::Pids,
                Controller::Io,
                Controller::Cpuset
            ]
        );
        assert_eq!(
            l.describe(),
            "cpu=250% cpu_period=50ms cpu_weight=200 memory=4G memory_high=3G swap=0 pids=64 \
             io[8:0]=rbps=50M,wbps=max,riops=1000,wiops=max io[259:0]=wbps=1M io_weight=300 \
             cpuset=0-3,5"
        );
        assert!(!l.is_empty());
    }

    #[test]
    fn small_objects() {
        assert!(parse(json!({})).unwrap().is_empty());
        assert_eq!(Limits::default().describe(), "none");
        assert!(Limits::default().controllers().is_empty());
        let l = parse(json!({"cpu": 2.5, "pids": "max"})).unwrap();
        assert_eq!(l.cpu, Some(CpuLimit::Millicores(2500)));
        assert_eq!(l.describe(), "cpu=250% pids=max");
        assert_eq!(l.controllers(), [Controller::Cpu, Controller::Pids]);
        let l = parse(json!({"cpu": "max", "cpu_period": "1s"})).unwrap();
        assert_eq!(l.describe(), "cpu=max cpu_period=1s");
        let l = parse(json!({"memory": "max", "cpu": "0.5"})).unwrap();
        assert_eq!(l.describe(), "cpu=50% memory=max");
        assert_eq!(parse(json!({"cpu": "1%"})).unwrap().describe(), "cpu=1%");
        assert_eq!(
            parse(json!({"cpu": "12.5%"})).unwrap().describe(),
            "cpu=12.5%"
        );
    }

    #[test]
    fn errors_name_the_exact_path() {
        let table: Vec<(Value, &str, &str)> = vec![
            (json!([]), "targets[0].limits", "expected an object"),
            (
                json!({"mem": "4G"}),
                "targets[0].limits.mem",
                "unknown limit",
            ),
            (
                json!({"memory": "4X"}),
                "targets[0].limits.memory",
                "unknown unit 'X'",
            ),
            (json!({"memory": 0}), "targets[0].limits.memory", "zero"),
            (
                json!({"memory": 1.5}),
                "targets[0].limits.memory",
                "whole number",
            ),
            (
                json!({"memory": true}),
                "targets[0].limits.memory",
                "string or a number",
            ),
            (
                json!({"memory_high": "-1G"}),
                "targets[0].limits.memory_high",
                "negative",
            ),
            (
                json!({"swap": "lots"}),
                "targets[0].limits.swap",
                "not a size",
            ),
            (
                json!({"cpu": "0"}),
                "targets[0].limits.cpu",
                "more than zero",
            ),
            (
                json!({"cpu": "abc"}),
                "targets[0].limits.cpu",
                "not a CPU amount",
            ),
            (
                json!({"cpu": "0.5%"}),
                "targets[0].limits.cpu",
                "use at least 1%",
            ),
            (
                json!({"cpu": "1", "cpu_period": "500us"}),
                "targets[0].limits.cpu_period",
                "1ms to 1s",
            ),
            (
                json!({"cpu": "1", "cpu_period": "2s"}),
                "targets[0].limits.cpu_period",
                "1ms to 1s",
            ),
            (
                json!({"cpu": "1", "cpu_period": "1.5us"}),
                "targets[0].limits.cpu_period",
                "whole number of microseconds",
            ),
            (
                json!({"cpu": "1", "cpu_period": 100000}),
                "targets[0].limits.cpu_period",
                "missing unit",
            ),
            (
                json!({"cpu_period": "100ms"}),
                "targets[0].limits.cpu_period",
                "without a CPU limit",
            ),
            (
                json!({"cpu_weight": 0}),
                "targets[0].limits.cpu_weight",
                "from 1 to 10000",
            ),
            (
                json!({"cpu_weight": 10001}),
                "targets[0].limits.cpu_weight",
                "from 1 to 10000",
            ),
            (
                json!({"cpu_weight": -1}),
                "targets[0].limits.cpu_weight",
                "from 1 to 10000",
            ),
            (
                json!({"io_weight": "x"}),
                "targets[0].limits.io_weight",
                "from 1 to 10000",
            ),
            (
                json!({"pids": 0}),
                "targets[0].limits.pids",
                "from 1 to 4194304",
            ),
            (
                json!({"pids": 4194305}),
                "targets[0].limits.pids",
                "from 1 to 4194304",
            ),
            (json!({"pids": "lots"}), "targets[0].limits.pids", "or max"),
            (
                json!({"cpuset": "0-3,"}),
                "targets[0].limits.cpuset",
                "stray comma",
            ),
            (
                json!({"cpuset": "3,1"}),
                "targets[0].limits.cpuset",
                "ascending",
            ),
            (
                json!({"cpuset": ""}),
                "targets[0].limits.cpuset",
                "empty CPU list",
            ),
            (json!({"io": {}}), "targets[0].limits.io", "expected a list"),
            (
                json!({"io": ["8:0"]}),
                "targets[0].limits.io[0]",
                "expected an object",
            ),
            (
                json!({"io": [{"rbps": "1M"}]}),
                "targets[0].limits.io[0].device",
                "missing",
            ),
            (
                json!({"io": [{"device": "8:0", "rbps": "1M"}, {"device": "sda", "rbps": "1M"}]}),
                "targets[0].limits.io[1].device",
                "MAJ:MIN",
            ),
            (
                json!({"io": [{"device": 8}]}),
                "targets[0].limits.io[0].device",
                "MAJ:MIN",
            ),
            (
                json!({"io": [{"device": "8:0"}]}),
                "targets[0].limits.io[0]",
                "at least one of",
            ),
            (
                json!({"io": [{"device": "8:0", "rbps": "1M", "x": 1}]}),
                "targets[0].limits.io[0].x",
                "unknown key",
            ),
            (
                json!({"io": [{"device": "8:0", "x": {}}]}),
                "targets[0].limits.io[0].x",
                "unknown key",
            ),
            (
                json!({"io": [{"device": "8:0", "rbps": []}]}),
                "targets[0].limits.io[0].rbps",
                "string or a number",
            ),
            (
                json!({"cpu": null}),
                "targets[0].limits.cpu",
                "string or a number",
            ),
            (
                json!({"bogus": {}}),
                "targets[0].limits.bogus",
                "unknown limit",
            ),
            (
                json!({"io": [{"device": "8:0", "rbps": "1"}]}),
                "targets[0].limits.io[0].rbps",
                "at least 2",
            ),
            (
                json!({"io": [{"device": "8:0", "rbps": 0}]}),
                "targets[0].limits.io[0].rbps",
                "at least 2",
            ),
            (
                json!({"io": [{"device": "8:0", "riops": "1k"}]}),
                "targets[0].limits.io[0].riops",
                "whole number",
            ),
            (
                json!({"io": [{"device": "8:0", "wiops": 4294967296u64}]}),
                "targets[0].limits.io[0].wiops",
                "4294967295",
            ),
            (
                json!({"io": [{"device": "8:0", "wiops": 1.5}]}),
                "targets[0].limits.io[0].wiops",
                "whole number",
            ),
            (
                json!({"io": [{"device": "8:0", "rbps": "1M"}, {"device": "8:0", "wbps": "1M"}]}),
                "targets[0].limits.io[1]",
                "listed twice",
            ),
        ];
        for (input, path, needle) in table {
            let err = parse(input.clone()).expect_err(&input.to_string());
            assert_eq!(err.path, path, "{input}: {err}");
            assert!(err.message.contains(needle), "{input}: {err}");
            assert_eq!(err.to_string(), format!("{path}: {}", err.message));
            assert!(!err.to_string().contains('\n'));
        }
    }

    #[test]
    fn cpu_quota_minimum() {
        let at = |cpu: &str, period: &str| {
            let v = json!({"cpu": cpu, "cpu_period": period});
            parse(v).map(|l| {
                cpu_quota_us(
                    l.cpu.map_or(0, |c| match c {
                        CpuLimit::Millicores(m) => m,
                        CpuLimit::Max => 0,
                    }),
                    l.cpu_period_us.unwrap_or(0),
                )
            })
        };
        assert_eq!(at("1%", "100ms"), Ok(1_000));
        assert_eq!(at("0.1%", "1s"), Ok(1_000));
        assert_eq!(at("100%", "1ms"), Ok(1_000));
        assert_eq!(at("250%", "100ms"), Ok(250_000));
        let err = at("0.5%", "100ms").unwrap_err();
        assert_eq!(err.path, "targets[0].limits.cpu");
        assert_eq!(
            err.message,
            "0.5% of a 100000us period is a quota of 500us, below the kernel's minimum of \
             1000us; use at least 1% (or a longer CPU period)"
        );
        let err = at("0.2%", "300ms").unwrap_err();
        assert!(err.message.contains("use at least 0.4%"), "{err}");
        let err = at("99.9%", "1ms").unwrap_err();
        assert!(err.message.contains("use at least 100%"), "{err}");
        // The default period applies when none is set.
        let l = Limits {
            cpu: Some(CpuLimit::Millicores(9)),
            ..Limits::default()
        };
        assert_eq!(l.validate().unwrap_err().path, "cpu");
    }

    #[test]
    fn flags() {
        let mut l = Limits::default();
        for (flag, value) in [
            ("--cpu", "250%"),
            ("--cpu-period", "20ms"),
            ("--cpu-weight", "50"),
            ("--memory", "512M"),
            ("--memory-high", "384M"),
            ("--swap", "max"),
            ("--pids", "100"),
            ("--io", "8:0 rbps=50M wbps=max riops=1000"),
            ("--io", "  259:1   wiops=max  "),
            ("--io-weight", "10"),
            ("--cpuset", "1"),
        ] {
            apply_flag(&mut l, flag, value).unwrap_or_else(|e| panic!("{flag} {value}: {e}"));
        }
        assert_eq!(l.validate(), Ok(()));
        assert_eq!(
            l.describe(),
            "cpu=250% cpu_period=20ms cpu_weight=50 memory=512M memory_high=384M swap=max \
             pids=100 io[8:0]=rbps=50M,wbps=max,riops=1000 io[259:1]=wiops=max io_weight=10 \
             cpuset=1"
        );
        assert_eq!(l.io[0].line(), "8:0 rbps=52428800 wbps=max riops=1000");
        assert_eq!(LIMIT_FLAGS.len(), 10);
        for flag in LIMIT_FLAGS {
            let e = apply_flag(&mut l, flag, "").unwrap_err();
            assert!(e.starts_with(&format!("{flag}: ")), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
        let bad = [
            ("--cpu", "lots", "--cpu: \"lots\": not a CPU amount"),
            ("--cpu-period", "5s", "--cpu-period: \"5s\": a CPU period"),
            ("--memory", "0", "--memory: \"0\": a memory limit of zero"),
            ("--pids", "-1", "--pids: \"-1\": a process limit"),
            ("--io", "8:0", "--io: no limit for device 8:0"),
            ("--io", "8:0 rbps", "--io: \"rbps\" is not key=value"),
            ("--io", "8:0 rbps=1M rbps=2M", "--io: rbps is given twice"),
            ("--io", "8:0 bps=1M", "--io: unknown key"),
            (
                "--io",
                "8:0 device=8:1",
                "--io: \"device=8:1\": the device comes first",
            ),
            ("--io", "8:0 rbps=1M", "--io: device 8:0 is listed twice"),
            ("--io", "rbps=1M", "--io: \"rbps=1M\" is not a block device"),
            ("--cpuset", "0-3,", "--cpuset: \"0-3,\": an empty item"),
            ("--nice", "5", "--nice: not a limit flag"),
        ];
        for (flag, value, want) in bad {
            let e = apply_flag(&mut l, flag, value).unwrap_err();
            assert!(e.starts_with(want), "{flag} {value}: {e}");
        }
        // Combinations are checked once all flags are in, whatever their order.
        let mut l = Limits::default();
        apply_flag(&mut l, "--cpu", "0.5%").unwrap();
        assert_eq!(l.validate().unwrap_err().path, "cpu");
        apply_flag(&mut l, "--cpu-period", "1s").unwrap();
        assert_eq!(l.validate(), Ok(()));
    }

    #[test]
    fn serde_round_trip() {
        let l = parse(json!({
            "cpu": "2.5", "cpu_period": "50ms", "memory": "1536M", "swap": "max",
            "pids": "max", "io": [{"device": "8:0", "rbps": "50M", "wiops": "max"}],
            "cpuset": "0-1"
        }))
        .unwrap();
        let text = serde_json::to_string(&l).unwrap();
        assert!(text.contains("\"cpu\":\"2.5\""), "{text}");
        assert!(text.contains("\"memory\":\"1536M\""), "{text}");
        let back: Limits = serde_json::from_str(&text).unwrap();
        assert_eq!(back, l);
        let empty: Limits = serde_json::from_str("{}").unwrap();
        assert!(empty.is_empty());
        assert!(serde_json::from_str::<Limits>("{\"cpu\":\"x\"}").is_err());
        assert!(serde_json::from_str::<Limits>("{\"bogus\":1}").is_err());
    }
}
