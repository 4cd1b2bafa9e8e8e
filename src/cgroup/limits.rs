//! The limits a job or pool runs under: what is set, which controllers
//! that needs, a one-line summary, and the rules across fields.
//!
//! A `Limits` built by [`super::parse`] holds only values the kernel
//! accepts; [`Limits::validate`] adds the rules that span fields (the CPU
//! quota minimum). It is persisted with serde, sizes and CPU amounts as the
//! text that `units` parses ("4G", "2.5").

use std::fmt;

use serde::{Deserialize, Serialize};

use super::Controller;
use crate::units::{self, CpuLimit, SizeLimit};

/// cpu.max period when none is set, as the kernel defaults it.
pub const DEFAULT_CPU_PERIOD_US: u64 = 100_000;
/// The kernel accepts cpu.max periods of 1ms..=1s.
pub const CPU_PERIOD_RANGE_US: (u64, u64) = (1_000, 1_000_000);
/// The smallest cpu.max quota the kernel accepts.
pub const MIN_CPU_QUOTA_US: u64 = 1_000;
/// cpu.weight and io.weight are 1..=10000.
pub const MAX_WEIGHT: u32 = 10_000;
/// The largest pids.max below "max" (PID_MAX_LIMIT on 64-bit kernels).
pub const MAX_PIDS: u64 = 4 * 1024 * 1024;

/// Limits for one group. Unset fields leave the kernel's value alone.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    #[serde(with = "cpu_text", skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuLimit>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_period_us: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_weight: Option<u32>,
    #[serde(with = "size_text", skip_serializing_if = "Option::is_none")]
    pub memory: Option<SizeLimit>,
    #[serde(with = "size_text", skip_serializing_if = "Option::is_none")]
    pub memory_high: Option<SizeLimit>,
    #[serde(with = "size_text", skip_serializing_if = "Option::is_none")]
    pub swap: Option<SizeLimit>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pids: Option<PidsLimit>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub io: Vec<IoMax>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub io_weight: Option<u32>,
    /// Canonical CPU list ("0-3,5").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpuset: Option<String>,
    /// Egress bandwidth, enforced by a cgroup BPF program (see `net`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub net_tx: Option<NetRate>,
    /// Ingress bandwidth, policed by a cgroup BPF program.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub net_rx: Option<NetRate>,
}

/// A network bandwidth limit: a token bucket that fills at
/// `bytes_per_sec` and holds at most `burst` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetRate {
    pub bytes_per_sec: u64,
    pub burst: u64,
}

/// The lowest network rate: 1K bytes per second.
pub const MIN_NET_RATE: u64 = 1 << 10;
/// The highest network rate and burst, 16G: the program multiplies a
/// rate by up to 10^9 ns in 64 bits.
pub const MAX_NET_RATE: u64 = 16 << 30;
/// The smallest burst: a burst below one packet would never pass it, and
/// a TCP segment on loopback (with segmentation offload) is up to 64K.
pub const MIN_NET_BURST: u64 = 64 << 10;

impl NetRate {
    /// `bytes_per_sec` with the default burst: a quarter second of the
    /// rate, at least 128K. A policer drops what is over budget, and TCP
    /// may then wait up to 200 ms before it sends again; a burst of less
    /// than that much traffic would leave the link idle in between.
    pub fn with_default_burst(bytes_per_sec: u64) -> NetRate {
        NetRate {
            bytes_per_sec,
            burst: (bytes_per_sec / 4).clamp(128 << 10, MAX_NET_RATE),
        }
    }
}

impl fmt::Display for NetRate {
    /// "2M/burst=512K", which the limit parser reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/burst={}",
            SizeLimit::Bytes(self.bytes_per_sec),
            SizeLimit::Bytes(self.burst)
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PidsLimit {
    Max,
    Count(u64),
}

/// One io.max rate: bytes or operations per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IoRate {
    Max,
    Value(u64),
}

/// One device line of io.max. Unset keys are not written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IoMax {
    pub major: u32,
    pub minor: u32,
    #[serde(default)]
    pub rbps: Option<IoRate>,
    #[serde(default)]
    pub wbps: Option<IoRate>,
    #[serde(default)]
    pub riops: Option<IoRate>,
    #[serde(default)]
    pub wiops: Option<IoRate>,
}

impl IoMax {
    /// A line for device `major:minor` with no key limited yet.
    pub fn device(major: u32, minor: u32) -> IoMax {
        IoMax {
            major,
            minor,
            rbps: None,
            wbps: None,
            riops: None,
            wiops: None,
        }
    }

    /// The keys in io.max order with their values, set or not.
    pub fn keys(&self) -> [(&'static str, Option<IoRate>); 4] {
        [
            ("rbps", self.rbps),
            ("wbps", self.wbps),
            ("riops", self.riops),
            ("wiops", self.wiops),
        ]
    }

    /// The line written to io.max: "8:0 rbps=52428800 wiops=max".
    pub fn line(&self) -> String {
        let mut line = format!("{}:{}", self.major, self.minor);
        for (key, rate) in self.keys() {
            if let Some(rate) = rate {
                line.push_str(&format!(" {key}={rate}"));
            }
        }
        line
    }
}

impl fmt::Display for PidsLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PidsLimit::Max => f.write_str("max"),
            PidsLimit::Count(n) => write!(f, "{n}"),
        }
    }
}

impl fmt::Display for IoRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IoRate::Max => f.write_str("max"),
            IoRate::Value(n) => write!(f, "{n}"),
        }
    }
}

/// A config error: the JSON path of the value and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for LimitsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl std::error::Error for LimitsError {}

impl Limits {
    pub fn is_empty(&self) -> bool {
        *self == Limits::default()
    }

    /// The controllers the set limits need, in [`Controller`] order.
    pub fn controllers(&self) -> Vec<Controller> {
        let l = self;
        let needs = [
            (
                Controller::Cpu,
                l.cpu.is_some() || l.cpu_period_us.is_some() || l.cpu_weight.is_some(),
            ),
            (
                Controller::Memory,
                l.memory.is_some() || l.memory_high.is_some() || l.swap.is_some(),
            ),
            (Controller::Pids, l.pids.is_some()),
            (Controller::Io, !l.io.is_empty() || l.io_weight.is_some()),
            (Controller::Cpuset, l.cpuset.is_some()),
        ];
        needs
            .into_iter()
            .filter(|(_, needed)| *needed)
            .map(|(c, _)| c)
            .collect()
    }

    /// A short summary for logs: `cpu=250% memory=4G pids=64`, or "none".
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(cpu) = self.cpu {
            parts.push(format!("cpu={}", cpu_percent(cpu)));
        }
        if let Some(p) = self.cpu_period_us {
            let text = units::format_duration(std::time::Duration::from_micros(p));
            parts.push(format!("cpu_period={text}"));
        }
        if let Some(w) = self.cpu_weight {
            parts.push(format!("cpu_weight={w}"));
        }
        for (key, size) in [
            ("memory", self.memory),
            ("memory_high", self.memory_high),
            ("swap", self.swap),
        ] {
            if let Some(size) = size {
                parts.push(format!("{key}={size}"));
            }
        }
        if let Some(p) = self.pids {
            parts.push(format!("pids={p}"));
        }
        for io in &self.io {
            let rates: Vec<String> = io
                .keys()
                .iter()
                .filter_map(|(key, rate)| {
                    let text = match (rate, key.ends_with("bps")) {
                        (Some(IoRate::Value(n)), true) => SizeLimit::Bytes(*n).to_string(),
                        (Some(rate), _) => rate.to_string(),
                        (None, _) => return None,
                    };
                    Some(format!("{key}={text}"))
                })
                .collect();
            parts.push(format!("io[{}:{}]={}", io.major, io.minor, rates.join(",")));
        }
        if let Some(w) = self.io_weight {
            parts.push(format!("io_weight={w}"));
        }
        if let Some(c) = &self.cpuset {
            parts.push(format!("cpuset={c}"));
        }
        if let Some(r) = self.net_tx {
            parts.push(format!("net_tx={r}"));
        }
        if let Some(r) = self.net_rx {
            parts.push(format!("net_rx={r}"));
        }
        if parts.is_empty() {
            return "none".to_string();
        }
        parts.join(" ")
    }

    /// Rules across fields. The error's `path` is the field at fault
    /// ("cpu", "cpu_period"); the command line calls it `--cpu`,
    /// `--cpu-period`. [`super::limits_from_json`] runs this; a caller of
    /// [`super::apply_flag`] runs it once all flags are in.
    pub fn validate(&self) -> Result<(), LimitsError> {
        let period = self.cpu_period_us.unwrap_or(DEFAULT_CPU_PERIOD_US);
        match self.cpu {
            None if self.cpu_period_us.is_some() => Err(LimitsError {
                path: "cpu_period".to_string(),
                message: "a CPU period without a CPU limit; set cpu too (e.g. \"250%\")"
                    .to_string(),
            }),
            Some(CpuLimit::Millicores(m)) if cpu_quota_us(m, period) < MIN_CPU_QUOTA_US => {
                let min = (MIN_CPU_QUOTA_US * 1000).div_ceil(period);
                let cpu = cpu_percent(CpuLimit::Millicores(m));
                let min = cpu_percent(CpuLimit::Millicores(min));
                Err(LimitsError {
                    path: "cpu".to_string(),
                    message: format!(
                        "{cpu} of a {period}us period is a quota of {}us, below the kernel's \
                         minimum of {MIN_CPU_QUOTA_US}us; use at least {min} (or a longer CPU \
                         period)",
                        cpu_quota_us(m, period)
                    ),
                })
            }
            _ => Ok(()),
        }
    }
}

/// cpu.max quota for `millicores` per `period_us`: millicores * period / 1000.
pub fn cpu_quota_us(millicores: u64, period_us: u64) -> u64 {
    let quota = u128::from(millicores) * u128::from(period_us) / 1000;
    u64::try_from(quota).unwrap_or(u64::MAX)
}

/// "250%", "0.5%", "max".
pub(crate) fn cpu_percent(cpu: CpuLimit) -> String {
    match cpu {
        CpuLimit::Max => "max".to_string(),
        CpuLimit::Millicores(m) if m % 10 == 0 => format!("{}%", m / 10),
        CpuLimit::Millicores(m) => format!("{}.{}%", m / 10, m % 10),
    }
}

/// `Option<CpuLimit>` as the text [`units::parse_cpu`] reads ("2.5", "max").
mod cpu_text {
    use super::*;
    use serde::{de::Error, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<CpuLimit>, s: S) -> Result<S::Ok, S::Error> {
        v.map(|c| c.to_string()).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<CpuLimit>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        text.map(|t| units::parse_cpu(&t).map_err(D::Error::custom))
            .transpose()
    }
}

/// `Option<SizeLimit>` as the text [`units::parse_size`] reads ("4G", "max").
mod size_text {
    use super::*;
    use serde::{de::Error, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<SizeLimit>, s: S) -> Result<S::Ok, S::Error> {
        v.map(|c| c.to_string()).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SizeLimit>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        text.map(|t| units::parse_size(&t).map_err(D::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_and_controllers() {
        let l = Limits {
            cpu: Some(CpuLimit::Millicores(5)),
            memory: Some(SizeLimit::Bytes(3 << 29)),
            pids: Some(PidsLimit::Max),
            ..Limits::default()
        };
        assert_eq!(l.describe(), "cpu=0.5% memory=1536M pids=max");
        assert_eq!(
            l.controllers(),
            [Controller::Cpu, Controller::Memory, Controller::Pids]
        );
        let err = l.validate().unwrap_err();
        assert_eq!(err.path, "cpu");
        assert!(err.message.contains("use at least 1%"), "{err}");
        let io_only = Limits {
            io_weight: Some(100),
            ..Limits::default()
        };
        assert_eq!(io_only.controllers(), [Controller::Io]);
        assert_eq!(io_only.validate(), Ok(()));
        assert!(!io_only.is_empty());
        assert!(Limits::default().is_empty());
    }
}
