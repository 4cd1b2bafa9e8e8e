//! The pids controller: `pids.max`; `pids.current` and the `max` count of
//! `pids.events` (forks refused at the limit).

use std::path::Path;

use super::{
    flat_require, parse_flat_keyed, parse_u64, read_held, read_parsed, reset_file, verify_number,
    write_then_verify, Applied, CgroupError, Controller, Limits, PidsLimit,
};

/// Writes pids.max.
pub fn apply(group: &Path, limits: &Limits, out: &mut Vec<Applied>) {
    if let Some(limit) = limits.pids {
        out.push(write_then_verify(
            group,
            Controller::Pids,
            "pids.max",
            limit.to_string(),
            |got| verify_max(limit, got),
        ));
    }
}

/// Resets pids.max to "max" when `limits` leaves it unset.
pub fn reset(group: &Path, limits: &Limits, out: &mut Vec<Applied>) {
    if limits.pids.is_none() {
        reset_file(
            group,
            Controller::Pids,
            "pids.max",
            "max",
            |got| verify_max(PidsLimit::Max, got),
            out,
        );
    }
}

/// Reads what pids.max holds into `into` ("max" is no limit).
pub fn held(group: &Path, into: &mut Limits, errors: &mut Vec<CgroupError>) {
    into.pids = read_held(
        group,
        "pids.max",
        |text| match text.trim_end() {
            "max" => Ok(None),
            t => parse_u64(t)
                .map(|n| Some(PidsLimit::Count(n)))
                .ok_or_else(|| "not a number or max".to_string()),
        },
        errors,
    );
}

/// Compares a pids.max read-back ("max" or a number) with `limit`.
pub fn verify_max(limit: PidsLimit, got: &str) -> Result<(), String> {
    match (limit, got.trim_end()) {
        (PidsLimit::Max, "max") => Ok(()),
        (PidsLimit::Count(n), text) if text != "max" => verify_number(n, text),
        (_, text) => Err(format!("{text}, not {limit}")),
    }
}

/// Parses pids.current: one number.
pub fn parse_current(text: &str) -> Result<u64, String> {
    parse_u64(text.trim_end()).ok_or_else(|| "not a number".to_string())
}

/// Parses the `max` line of pids.events.
pub fn parse_events_max(text: &str) -> Result<u64, String> {
    flat_require(&parse_flat_keyed(text)?, "max")
}

/// Reads `group/pids.current`.
pub fn current(group: &Path) -> Result<u64, CgroupError> {
    read_parsed(group, "pids.current", parse_current)
}

/// Reads the `max` count of `group/pids.events`.
pub fn events_max(group: &Path) -> Result<u64, CgroupError> {
    read_parsed(group, "pids.events", parse_events_max)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::Fixture;
    use super::*;

    #[test]
    fn writes_and_verifies_pids_max() {
        let fx = Fixture::new();
        fx.file("pids.max", "max\n");
        for (limit, text) in [(PidsLimit::Count(64), "64"), (PidsLimit::Max, "max")] {
            let l = Limits {
                pids: Some(limit),
                ..Limits::default()
            };
            let mut out = Vec::new();
            apply(fx.dir(), &l, &mut out);
            assert!(out[0].result.is_ok(), "{out:?}");
            assert_eq!(fx.read("pids.max"), text);
        }
        assert_eq!(verify_max(PidsLimit::Count(64), "64\n"), Ok(()));
        assert_eq!(verify_max(PidsLimit::Max, "max\n"), Ok(()));
        assert_eq!(
            verify_max(PidsLimit::Max, "64\n"),
            Err("64, not max".into())
        );
        assert_eq!(
            verify_max(PidsLimit::Count(64), "max\n"),
            Err("max, not 64".into())
        );
        assert!(verify_max(PidsLimit::Count(64), "65\n").is_err());
    }

    #[test]
    fn reset_and_held() {
        let fx = Fixture::new();
        fx.file("pids.max", "64\n");
        let mut out = Vec::new();
        reset(fx.dir(), &Limits::default(), &mut out);
        assert!(out[0].reset && out[0].result.is_ok(), "{out:?}");
        assert_eq!(fx.read("pids.max"), "max");
        let mut out = Vec::new();
        reset(fx.dir(), &Limits::default(), &mut out);
        assert!(out.is_empty(), "already the default: nothing written");
        let (mut l, mut errors) = (Limits::default(), Vec::new());
        held(fx.dir(), &mut l, &mut errors);
        assert_eq!(l.pids, None);
        fx.file("pids.max", "32\n");
        held(fx.dir(), &mut l, &mut errors);
        assert_eq!(l.pids, Some(PidsLimit::Count(32)));
        assert!(errors.is_empty());
    }

    #[test]
    fn current_and_events() {
        assert_eq!(parse_current("7\n"), Ok(7));
        assert!(parse_current("max\n").is_err());
        assert!(parse_current("").is_err());
        assert_eq!(parse_events_max("max 3\n"), Ok(3));
        // Kernels with pids_localevents add another line.
        assert_eq!(parse_events_max("max 3\nmax.imposed 5\n"), Ok(3));
        assert!(parse_events_max("").is_err());
        let fx = Fixture::new();
        fx.file("pids.current", "12\n")
            .file("pids.events", "max 0\n");
        assert_eq!(current(fx.dir()).unwrap(), 12);
        assert_eq!(events_max(fx.dir()).unwrap(), 0);
    }
}
