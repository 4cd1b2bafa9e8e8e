//! The cpu controller: `cpu.max` (a CPU amount as a quota per period) and
//! `cpu.weight`; `cpu.stat` for usage and throttling.
//!
//! cpu.max reads back as "QUOTA PERIOD" or "max PERIOD", exactly as
//! written, so the read-back is compared number for number.

use std::path::Path;

use super::limits::{cpu_quota_us, DEFAULT_CPU_PERIOD_US};
use super::{
    flat_get, flat_require, parse_flat_keyed, parse_u64, read_held, read_parsed, reset_file,
    verify_number, write_then_verify, Applied, CgroupError, Controller, Limits,
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

/// cpu.weight when none is set.
pub const DEFAULT_CPU_WEIGHT: u64 = 100;

/// Resets cpu.max to "max 100000" when `limits` sets neither an amount nor
/// a period, and cpu.weight to 100 when it sets no weight.
pub fn reset(group: &Path, limits: &Limits, out: &mut Vec<Applied>) {
    if limits.cpu.is_none() && limits.cpu_period_us.is_none() {
        let default = max_value(None, DEFAULT_CPU_PERIOD_US);
        reset_file(
            group,
            Controller::Cpu,
            "cpu.max",
            &default,
            |got| verify_max(None, DEFAULT_CPU_PERIOD_US, got),
            out,
        );
    }
    if limits.cpu_weight.is_none() {
        let default = DEFAULT_CPU_WEIGHT.to_string();
        reset_file(
            group,
            Controller::Cpu,
            "cpu.weight",
            &default,
            |got| verify_number(DEFAULT_CPU_WEIGHT, got),
            out,
        );
    }
}

/// Reads what cpu.max and cpu.weight hold into `into`. A quota becomes the
/// smallest CPU amount whose quota is at least it, which is exactly the
/// amount written when reeve wrote it (periods are at least 1ms, so
/// `quota * 1000 / period` is within one millicore below it). No quota is
/// no limit, whatever the period; weight 100 is no weight.
pub fn held(group: &Path, into: &mut Limits, errors: &mut Vec<CgroupError>) {
    let cpu = read_held(
        group,
        "cpu.max",
        |text| match parse_max(text)? {
            (_, 0) => Err("period 0".to_string()),
            (None, _) => Ok(None),
            (Some(q), p) => {
                let m = (u128::from(q) * 1000).div_ceil(u128::from(p));
                let m = u64::try_from(m).unwrap_or(u64::MAX);
                Ok(Some((CpuLimit::Millicores(m), p)))
            }
        },
        errors,
    );
    into.cpu = cpu.map(|(c, _)| c);
    into.cpu_period_us = cpu.map(|(_, p)| p).filter(|&p| p != DEFAULT_CPU_PERIOD_US);
    into.cpu_weight = read_held(
        group,
        "cpu.weight",
        |text| match parse_u64(text.trim_end()) {
            Some(DEFAULT_CPU_WEIGHT) => Ok(None),
            Some(w) => u32::try_from(w)
                .map(Some)
                .map_err(|_| format!("weight {w} out of range")),
            None => Err("not a number".to_string()),
        },
        errors,
    );
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
    fn reset_and_held() {
        let fx = Fixture::new();
        fx.file("cpu.max", "50000 100000\n")
            .file("cpu.weight", "300\n");
        let mut out = Vec::new();
        reset(fx.dir(), &Limits::default(), &mut out);
        let files: Vec<(&str, &str, bool)> = out
            .iter()
            .map(|a| (a.file.as_str(), a.wanted.as_str(), a.reset))
            .collect();
        assert_eq!(
            files,
            [("cpu.max", "max 100000", true), ("cpu.weight", "100", true)]
        );
        assert!(out.iter().all(|a| a.result.is_ok()), "{out:?}");
        let (mut l, mut errors) = (Limits::default(), Vec::new());
        held(fx.dir(), &mut l, &mut errors);
        assert_eq!((l.cpu, l.cpu_period_us, l.cpu_weight), (None, None, None));

        // Every amount reeve can write reads back as itself, whatever the
        // period, though the quota is rounded down to whole microseconds.
        for (m, period) in [(333, 1001), (2500, 100_000), (1, 1_000_000), (7, 3333)] {
            let want = Limits {
                cpu: Some(CpuLimit::Millicores(m)),
                cpu_period_us: Some(period),
                ..Limits::default()
            };
            let mut out = Vec::new();
            apply(fx.dir(), &want, &mut out);
            held(fx.dir(), &mut l, &mut errors);
            assert_eq!(l.cpu, Some(CpuLimit::Millicores(m)), "{m} per {period}");
            let p = (period != DEFAULT_CPU_PERIOD_US).then_some(period);
            assert_eq!(l.cpu_period_us, p);
        }
        assert!(errors.is_empty(), "{errors:?}");
        // Someone else's quota: the smallest amount that grants it.
        fx.file("cpu.max", "1500 100000\n");
        held(fx.dir(), &mut l, &mut errors);
        assert_eq!(l.cpu, Some(CpuLimit::Millicores(15)));
        fx.file("cpu.max", "10 0\n");
        held(fx.dir(), &mut l, &mut errors);
        assert_eq!(errors.len(), 1);
        assert_eq!(l.cpu, None);
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
