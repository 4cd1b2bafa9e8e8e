//! The cpu controller: `cpu.max` (a CPU amount as a quota per period) and
//! `cpu.weight`; `cpu.stat` for usage and throttling.
//!
//! cpu.max reads back as "QUOTA PERIOD" or "max PERIOD", exactly as
//! written, so the read-back is compared number for number.

use std::path::Path;

use super::limits::{cpu_quota_us, DEFAULT_CPU_PERIOD_US};
use super::{
    flat_get, flat_require, parse_flat_keyed, parse_u64, read_parsed, verify_number,
    write_then_verify, Applied, CgroupError, Controller, Limits,
};
use crate::units::CpuLimit;

/// Writes cpu.max (when a CPU amount or period is set) and cpu.weight.
pub fn apply(group: &Path, limits: &Limits, out: &mut Vec<Applied>) {
    if limits.cpu.is_some() || limits.cpu_period_us.is_some() {
        let period = limits.cpu_period_us.unwrap_or(DEFAULT_CPU_PERIOD_US);
        let quota = match limits.cpu.unwrap_or(CpuLimit::Max) {
            CpuLimit::Max => None,
            CpuLimit::Millicores(m) => Some(cpu_quota_us(m, period)),
        };
        let wanted = max_value(quota, period);
        out.push(write_then_verify(
            group,
            Controller::Cpu,
            "cpu.max",
            wanted,
            |got| verify_max(quota, period, got),
        ));
    }
    if let Some(w) = limits.cpu_weight {
        out.push(write_then_verify(
            group,
            Controller::Cpu,
            "cpu.weight",
            w.to_string(),
            |got| verify_number(u64::from(w), got),
        ));
    }
}

/// The cpu.max text: "250000 100000", or "max 100000" for no quota.
pub fn max_value(quota_us: Option<u64>, period_us: u64) -> String {
    match quota_us {
        Some(q) => format!("{q} {period_us}"),
        None => format!("max {period_us}"),
    }
}

/// Parses cpu.max: the quota (`None` for "max") and the period.
pub fn parse_max(text: &str) -> Result<(Option<u64>, u64), String> {
    let mut fields = text.split_ascii_whitespace();
    let quota = match fields.next() {
        Some("max") => None,
        Some(q) => Some(parse_u64(q).ok_or_else(|| format!("quota {q:?} is not a number"))?),
        None => return Err("empty".to_string()),
    };
    let period = fields
        .next()
        .and_then(parse_u64)
        .ok_or("no period after the quota")?;
    if fields.next().is_some() {
        return Err("more than a quota and a period".to_string());
    }
    Ok((quota, period))
}

/// Compares a cpu.max read-back with the quota and period written.
pub fn verify_max(quota_us: Option<u64>, period_us: u64, got: &str) -> Result<(), String> {
    let (q, p) = parse_max(got)?;
    if q != quota_us {
        let show = |q: Option<u64>| q.map_or("max".to_string(), |v| v.to_string());
        return Err(format!("quota {}, not {}", show(q), show(quota_us)));
    }
    if p != period_us {
        return Err(format!("period {p}, not {period_us}"));
    }
    Ok(())
}

/// CPU time used and throttling, from cpu.stat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuStat {
    pub usage_usec: u64,
    pub nr_periods: u64,
    pub nr_throttled: u64,
    pub throttled_usec: u64,
}

/// Parses cpu.stat. `usage_usec` is always there; the throttling lines
/// appear only with the cpu controller enabled, and count as zero without
/// it (no quota, no throttling).
pub fn parse_stat(text: &str) -> Result<CpuStat, String> {
    let pairs = parse_flat_keyed(text)?;
    let or_zero = |k| flat_get(&pairs, k).unwrap_or(0);
    Ok(CpuStat {
        usage_usec: flat_require(&pairs, "usage_usec")?,
        nr_periods: or_zero("nr_periods"),
        nr_throttled: or_zero("nr_throttled"),
        throttled_usec: or_zero("throttled_usec"),
    })
}

/// Reads `group/cpu.stat`.
pub fn stat(group: &Path) -> Result<CpuStat, CgroupError> {
    read_parsed(group, "cpu.stat", parse_stat)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::Fixture;
    use super::*;
    use crate::cgroup::CgroupErrorKind;

    #[test]
    fn cpu_amount_becomes_quota_per_period() {
        let l = Limits {
            cpu: Some(CpuLimit::Millicores(2500)),
            ..Limits::default()
        };
        let fx = Fixture::new();
        fx.file("cpu.max", "max 100000\n");
        let mut out = Vec::new();
        apply(fx.dir(), &l, &mut out);
        assert_eq!(out[0].wanted, "250000 100000");
        assert!(out[0].result.is_ok());

        let l = Limits {
            cpu: Some(CpuLimit::Millicores(500)),
            cpu_period_us: Some(10_000),
            cpu_weight: Some(50),
            ..Limits::default()
        };
        fx.file("cpu.weight", "100\n");
        let mut out = Vec::new();
        apply(fx.dir(), &l, &mut out);
        let wanted: Vec<&str> = out.iter().map(|a| a.wanted.as_str()).collect();
        assert_eq!(wanted, ["5000 10000", "50"]);
        assert!(out.iter().all(|a| a.result.is_ok()));
        assert_eq!(fx.read("cpu.weight"), "50");

        let max = Limits {
            cpu: Some(CpuLimit::Max),
            ..Limits::default()
        };
        let mut out = Vec::new();
        apply(fx.dir(), &max, &mut out);
        assert_eq!(out[0].wanted, "max 100000");
        assert!(out[0].result.is_ok());
    }

    #[test]
    fn read_back_as_the_kernel_shows_it() {
        assert_eq!(verify_max(Some(250000), 100000, "250000 100000\n"), Ok(()));
        assert_eq!(verify_max(None, 100000, "max 100000\n"), Ok(()));
        let e = verify_max(Some(250000), 100000, "max 100000\n").unwrap_err();
        assert_eq!(e, "quota max, not 250000");
        let e = verify_max(Some(1000), 100000, "1000 50000\n").unwrap_err();
        assert_eq!(e, "period 50000, not 100000");
        for bad in ["", "max", "x 100000", "1 2 3", "1 -2", "\n"] {
            assert!(parse_max(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn missing_file_means_controller_not_enabled() {
        let fx = Fixture::new();
        let l = Limits {
            cpu_weight: Some(10),
            ..Limits::default()
        };
        let mut out = Vec::new();
        apply(fx.dir(), &l, &mut out);
        let err = out[0].result.as_ref().unwrap_err();
        assert_eq!(err.kind, CgroupErrorKind::NotEnabled);
        assert!(err.to_string().contains("cpu controller is not enabled"));
    }

    #[test]
    fn cpu_stat_with_and_without_the_controller() {
        let full = "usage_usec 1090803718\nuser_usec 922195148\nsystem_usec 168608569\n\
                    nice_usec 0\nnr_periods 40\nnr_throttled 3\nthrottled_usec 51234\n\
                    nr_bursts 0\nburst_usec 0\n";
        assert_eq!(
            parse_stat(full),
            Ok(CpuStat {
                usage_usec: 1090803718,
                nr_periods: 40,
                nr_throttled: 3,
                throttled_usec: 51234
            })
        );
        // This host's v2 root: no cpu controller, no throttling lines.
        let bare = "usage_usec 5\nuser_usec 4\nsystem_usec 1\nnice_usec 0\n";
        assert_eq!(parse_stat(bare).map(|s| s.usage_usec), Ok(5));
        assert!(parse_stat("user_usec 1\n").is_err());
        assert!(parse_stat("usage_usec x\n").is_err());
        let fx = Fixture::new();
        fx.file("cpu.stat", full);
        assert_eq!(stat(fx.dir()).unwrap().nr_throttled, 3);
        fx.file("cpu.stat", "garbage");
        let err = stat(fx.dir()).unwrap_err();
        assert_eq!(err.kind, CgroupErrorKind::Parse);
        assert!(err.to_string().contains("cpu.stat"));
    }
}
