//! The memory controller: `memory.high`, `memory.max`, `memory.swap.max`;
//! `memory.events` for throttling and OOM kills.
//!
//! The kernel keeps memory limits in pages: a byte value reads back
//! rounded down to the page size, and a value beyond the largest page
//! count reads back as "max". The read-back is compared with that value.

use std::path::Path;

use super::{
    flat_require, parse_flat_keyed, parse_u64, read_held, read_parsed, reset_file,
    write_then_verify, Applied, CgroupError, Controller, Limits,
};
use crate::units::SizeLimit;

/// The page size the kernel rounds memory limits to. reeve's targets
/// (x86_64) use 4 KiB pages.
pub const PAGE_SIZE: u64 = 4096;

/// PAGE_COUNTER_MAX: the most pages a limit can hold (LONG_MAX / PAGE_SIZE).
const PAGE_COUNTER_MAX: u64 = i64::MAX as u64 / PAGE_SIZE;

/// Writes memory.high, then memory.max, then memory.swap.max, so the soft
/// limit is in place before the hard one can trigger reclaim.
pub fn apply(group: &Path, limits: &Limits, out: &mut Vec<Applied>) {
    for (file, limit) in [
        ("memory.high", limits.memory_high),
        ("memory.max", limits.memory),
        ("memory.swap.max", limits.swap),
    ] {
        if let Some(limit) = limit {
            out.push(write_then_verify(
                group,
                Controller::Memory,
                file,
                size_value(limit),
                |got| verify_size(limit, got),
            ));
        }
    }
}

/// Resets each of the three files that `limits` leaves unset to "max".
pub fn reset(group: &Path, limits: &Limits, out: &mut Vec<Applied>) {
    for (file, limit) in [
        ("memory.high", limits.memory_high),
        ("memory.max", limits.memory),
        ("memory.swap.max", limits.swap),
    ] {
        if limit.is_none() {
            reset_file(
                group,
                Controller::Memory,
                file,
                "max",
                |got| verify_size(SizeLimit::Max, got),
                out,
            );
        }
    }
}

/// Reads what the three files hold into `into` ("max" is no limit).
pub fn held(group: &Path, into: &mut Limits, errors: &mut Vec<CgroupError>) {
    let read = |file: &str, errors: &mut Vec<CgroupError>| {
        read_held(
            group,
            file,
            |text| {
                parse_size_file(text).map(|s| match s {
                    SizeLimit::Max => None,
                    bytes => Some(bytes),
                })
            },
            errors,
        )
    };
    into.memory_high = read("memory.high", errors);
    into.memory = read("memory.max", errors);
    into.swap = read("memory.swap.max", errors);
}

/// The text written: bytes, or "max".
pub fn size_value(limit: SizeLimit) -> String {
    match limit {
        SizeLimit::Max => "max".to_string(),
        SizeLimit::Bytes(b) => b.to_string(),
    }
}

/// What the kernel shows after `limit` was written.
pub fn expected_readback(limit: SizeLimit) -> SizeLimit {
    match limit {
        SizeLimit::Bytes(b) if b / PAGE_SIZE >= PAGE_COUNTER_MAX => SizeLimit::Max,
        SizeLimit::Bytes(b) => SizeLimit::Bytes(b / PAGE_SIZE * PAGE_SIZE),
        SizeLimit::Max => SizeLimit::Max,
    }
}

/// Parses a memory limit file: bytes or "max".
pub fn parse_size_file(text: &str) -> Result<SizeLimit, String> {
    match text.trim_end() {
        "max" => Ok(SizeLimit::Max),
        t => parse_u64(t)
            .map(SizeLimit::Bytes)
            .ok_or_else(|| "not a number of bytes or max".to_string()),
    }
}

/// Compares a read-back with the page-rounded value of `limit`.
pub fn verify_size(limit: SizeLimit, got: &str) -> Result<(), String> {
    let want = expected_readback(limit);
    let got = parse_size_file(got)?;
    if got == want {
        return Ok(());
    }
    let show = |s: SizeLimit| match s {
        SizeLimit::Max => "max".to_string(),
        SizeLimit::Bytes(b) => format!("{b} bytes"),
    };
    Err(format!(
        "{}, not {} (the wanted value rounded down to {PAGE_SIZE}-byte pages)",
        show(got),
        show(want)
    ))
}

/// Counts from memory.events (this group and below).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemoryEvents {
    /// Reclaimed below memory.low.
    pub low: u64,
    /// Throttled over memory.high.
    pub high: u64,
    /// Hit memory.max.
    pub max: u64,
    /// Allocation failed at memory.max.
    pub oom: u64,
    /// Processes killed by the OOM killer.
    pub oom_kill: u64,
}

/// Parses memory.events; all five counts must be there.
pub fn parse_events(text: &str) -> Result<MemoryEvents, String> {
    let pairs = parse_flat_keyed(text)?;
    Ok(MemoryEvents {
        low: flat_require(&pairs, "low")?,
        high: flat_require(&pairs, "high")?,
        max: flat_require(&pairs, "max")?,
        oom: flat_require(&pairs, "oom")?,
        oom_kill: flat_require(&pairs, "oom_kill")?,
    })
}

/// Reads `group/memory.events`.
pub fn events(group: &Path) -> Result<MemoryEvents, CgroupError> {
    read_parsed(group, "memory.events", parse_events)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::Fixture;
    use super::*;
    use crate::cgroup::CgroupErrorKind;

    #[test]
    fn writes_bytes_and_max() {
        let fx = Fixture::new();
        fx.file("memory.max", "max\n")
            .file("memory.high", "max\n")
            .file("memory.swap.max", "max\n");
        let l = Limits {
            memory: Some(SizeLimit::Bytes(1 << 30)),
            memory_high: Some(SizeLimit::Max),
            swap: Some(SizeLimit::Bytes(0)),
            ..Limits::default()
        };
        let mut out = Vec::new();
        apply(fx.dir(), &l, &mut out);
        assert!(out.iter().all(|a| a.result.is_ok()), "{out:?}");
        assert_eq!(fx.read("memory.max"), "1073741824");
        assert_eq!(fx.read("memory.high"), "max");
        assert_eq!(fx.read("memory.swap.max"), "0");
    }

    #[test]
    fn read_back_is_rounded_down_to_pages() {
        let want = SizeLimit::Bytes(1_000_000);
        assert_eq!(expected_readback(want), SizeLimit::Bytes(999_424));
        assert_eq!(verify_size(want, "999424\n"), Ok(()));
        let e = verify_size(want, "1000000\n").unwrap_err();
        assert!(e.contains("1000000 bytes, not 999424 bytes"), "{e}");
        assert_eq!(verify_size(SizeLimit::Bytes(4095), "0\n"), Ok(()));
        assert_eq!(verify_size(SizeLimit::Max, "max\n"), Ok(()));
        assert!(verify_size(SizeLimit::Max, "4096\n").is_err());
        // Beyond the largest page count the kernel shows "max".
        assert_eq!(verify_size(SizeLimit::Bytes(u64::MAX), "max\n"), Ok(()));
        for bad in ["", "-1", "1G", "max max"] {
            assert!(parse_size_file(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn mismatch_is_an_error_that_says_so() {
        let fx = Fixture::new();
        fx.file("memory.max", "");
        let applied = write_then_verify(
            fx.dir(),
            Controller::Memory,
            "memory.max",
            "1000000".to_string(),
            // The read-back a kernel that had not rounded would show.
            |_| verify_size(SizeLimit::Bytes(1_000_000), "1000000\n"),
        );
        let err = applied.result.unwrap_err();
        assert_eq!(err.kind, CgroupErrorKind::Mismatch);
        let text = err.to_string();
        assert!(text.contains("memory.max: wrote \"1000000\""), "{text}");
        assert!(text.contains("not in force"), "{text}");
    }

    #[test]
    fn unset_limits_are_reset_to_max_and_read_back_in_pages() {
        let fx = Fixture::new();
        fx.file("memory.max", "1073741824\n")
            .file("memory.high", "536870912\n")
            .file("memory.swap.max", "max\n");
        // memory.max stays wanted, memory.high is no longer named.
        let l = Limits {
            memory: Some(SizeLimit::Bytes(1_000_000)),
            ..Limits::default()
        };
        let mut out = Vec::new();
        reset(fx.dir(), &l, &mut out);
        assert_eq!(out.len(), 1, "only memory.high held a value: {out:?}");
        assert_eq!(out[0].file, "memory.high");
        assert!(out[0].reset && out[0].result.is_ok(), "{out:?}");
        assert_eq!(fx.read("memory.high"), "max");
        assert_eq!(
            fx.read("memory.max"),
            "1073741824\n",
            "a wanted file is not reset"
        );

        // The kernel would show the wanted bytes in whole pages.
        fx.file("memory.max", "999424\n");
        let mut held_limits = Limits::default();
        let mut errors = Vec::new();
        held(fx.dir(), &mut held_limits, &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(held_limits.memory, Some(SizeLimit::Bytes(999_424)));
        assert_eq!(held_limits.memory_high, None, "max is no limit");
        assert_eq!(held_limits.swap, None);

        // A group without the controller holds nothing and resets nothing.
        let bare = Fixture::new();
        let mut out = Vec::new();
        reset(bare.dir(), &Limits::default(), &mut out);
        assert!(out.is_empty());
        let mut errors = Vec::new();
        held(bare.dir(), &mut held_limits, &mut errors);
        assert_eq!(held_limits, Limits::default());
        assert!(errors.is_empty());
        fx.file("memory.high", "lots\n");
        held(fx.dir(), &mut held_limits, &mut errors);
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].to_string().contains("memory.high"),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn memory_events() {
        let text = "low 0\nhigh 12\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n";
        let ev = parse_events(text).unwrap();
        assert_eq!(
            ev,
            MemoryEvents {
                low: 0,
                high: 12,
                max: 3,
                oom: 1,
                oom_kill: 1
            }
        );
        assert!(parse_events("low 0\nhigh 0\nmax 0\noom 0\n")
            .unwrap_err()
            .contains("oom_kill"));
        assert!(parse_events("low x\n").is_err());
        let fx = Fixture::new();
        fx.file("memory.events", text);
        assert_eq!(events(fx.dir()).unwrap().high, 12);
        assert!(events(&fx.dir().join("none")).is_err());
    }
}
