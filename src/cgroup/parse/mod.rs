//! The two spellings of limits: a JSON `limits` object in the config and
//! the limit flags of the command line.
//!
//! Every value is checked against what the kernel accepts, so a parsed
//! [`Limits`] can be written. Errors are one line naming the config path
//! (`targets[0].limits.io[1].device`) or the flag (`--memory`).

use serde_json::Value;

use super::limits::{
    CPU_PERIOD_RANGE_US, MAX_NET_RATE, MAX_PIDS, MAX_WEIGHT, MIN_NET_BURST, MIN_NET_RATE,
};
use super::{cpuset, parse_u64, IoMax, IoRate, Limits, LimitsError, NetRate, PidsLimit};
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
    "--net-tx",
    "--net-rx",
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
    "net_tx",
    "net_rx",
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
        "net_tx" => l.net_tx = Some(parse_net(&scalar(val, false)?)?),
        "net_rx" => l.net_rx = Some(parse_net(&scalar(val, false)?)?),
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
        let mut io = IoMax::device(major, minor);
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
        "--net-tx" => parse_net(value).map(|v| l.net_tx = Some(v)),
        "--net-rx" => parse_net(value).map(|v| l.net_rx = Some(v)),
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
    let mut io = IoMax::device(major, minor);
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

/// A network limit: bytes per second with the size units ("20M"), and
/// optionally the bucket's size ("20M/burst=4M"); see
/// [`NetRate::with_default_burst`] for the default.
pub fn parse_net(s: &str) -> Result<NetRate, String> {
    let (rate_text, burst_text) = match s.split_once('/') {
        None => (s, None),
        Some((r, rest)) => match rest.strip_prefix("burst=") {
            Some(b) => (r, Some(b)),
            None => {
                return Err(format!(
                    "{s:?}: write bytes per second, optionally with a burst: \"20M\" or \
                     \"20M/burst=4M\""
                ))
            }
        },
    };
    let bytes = |t: &str, what: &str, lo: u64| match parse_size(t)? {
        SizeLimit::Bytes(n) if (lo..=MAX_NET_RATE).contains(&n) => Ok(n),
        SizeLimit::Bytes(_) => Err(format!(
            "{s:?}: the {what} must be from {} to {}",
            SizeLimit::Bytes(lo),
            SizeLimit::Bytes(MAX_NET_RATE)
        )),
        SizeLimit::Max => Err(format!(
            "{s:?}: a network limit is a size (leave it unset for no limit)"
        )),
    };
    let rate = bytes(rate_text, "rate (bytes per second)", MIN_NET_RATE)?;
    match burst_text {
        None => Ok(NetRate::with_default_burst(rate)),
        Some(b) => Ok(NetRate {
            bytes_per_sec: rate,
            burst: bytes(
                b,
                "burst (a burst below 64K never passes a large packet)",
                MIN_NET_BURST,
            )?,
        }),
    }
}

/// A CPU list in order ("0-3,5"), stored canonical.
fn parse_cpuset(s: &str) -> Result<String, String> {
    cpuset::parse_cpu_list(s, true)
        .map(|ranges| cpuset::format_cpu_list(&ranges))
        .map_err(|m| format!("{s:?}: {m}"))
}

#[cfg(test)]
mod tests;
