//! The cpuset controller: `cpuset.cpus`, and the CPU list syntax ("0-3,5").
//!
//! The kernel shows a CPU list in canonical form (sorted, adjacent ranges
//! merged), so both the wanted and the read-back list are canonicalised
//! before they are compared.

use std::path::Path;

use super::{
    parse_u64, read_held, reset_file, write_then_verify, Applied, CgroupError, Controller, Limits,
};

/// A CPU number above this is a typing error, not a machine (the kernel's
/// NR_CPUS tops out at 8192).
const MAX_CPU: u32 = 8191;

/// Writes cpuset.cpus.
pub fn apply(group: &Path, limits: &Limits, out: &mut Vec<Applied>) {
    if let Some(cpus) = &limits.cpuset {
        out.push(write_then_verify(
            group,
            Controller::Cpuset,
            "cpuset.cpus",
            cpus.clone(),
            |got| verify_cpus(cpus, got),
        ));
    }
}

/// Empties cpuset.cpus (the group then uses its parent's CPUs) when
/// `limits` sets no CPU list. The kernel strips the newline written, as
/// an empty write(2) would never reach it.
pub fn reset(group: &Path, limits: &Limits, out: &mut Vec<Applied>) {
    if limits.cpuset.is_none() {
        reset_file(
            group,
            Controller::Cpuset,
            "cpuset.cpus",
            "\n",
            verify_cpus_empty,
            out,
        );
    }
}

/// Reads the canonical CPU list cpuset.cpus holds into `into` (empty is
/// no limit).
pub fn held(group: &Path, into: &mut Limits, errors: &mut Vec<CgroupError>) {
    into.cpuset = read_held(
        group,
        "cpuset.cpus",
        |text| canonicalize(text).map(|c| (!c.is_empty()).then_some(c)),
        errors,
    );
}

fn verify_cpus_empty(got: &str) -> Result<(), String> {
    match canonicalize(got)? {
        c if c.is_empty() => Ok(()),
        c => Err(format!("CPUs {c:?}, not the parent's")),
    }
}

/// Parses a CPU list such as "0-3,5" into inclusive ranges. `strict`
/// (user input) requires ascending, non-overlapping items and at least
/// one; otherwise the ranges are sorted and merged and an empty list is
/// allowed (an empty cpuset.cpus inherits the parent's CPUs).
pub fn parse_cpu_list(text: &str, strict: bool) -> Result<Vec<(u32, u32)>, String> {
    let body = if strict { text } else { text.trim() };
    if body.is_empty() {
        return if strict {
            Err("empty CPU list (write e.g. \"0-3,5\")".to_string())
        } else {
            Ok(Vec::new())
        };
    }
    let mut ranges: Vec<(u32, u32)> = Vec::new();
    for item in body.split(',') {
        let num = |t: &str| {
            parse_u64(t)
                .and_then(|v| u32::try_from(v).ok())
                .filter(|&v| v <= MAX_CPU)
                .ok_or_else(|| {
                    if item.is_empty() {
                        "an empty item (a stray comma?)".to_string()
                    } else {
                        format!("{item:?} is not a CPU number or range (0 to {MAX_CPU})")
                    }
                })
        };
        let (lo, hi) = match item.split_once('-') {
            Some((a, b)) => (num(a)?, num(b)?),
            None => (num(item)?, num(item)?),
        };
        if lo > hi {
            return Err(format!("range {item:?} runs backwards"));
        }
        if let Some(&(_, prev_hi)) = ranges.last() {
            if strict && lo <= prev_hi {
                return Err(format!(
                    "{item:?} is out of order or overlaps the item before; list CPUs in \
                     ascending order"
                ));
            }
        }
        ranges.push((lo, hi));
    }
    ranges.sort_unstable();
    let mut merged: Vec<(u32, u32)> = Vec::with_capacity(ranges.len());
    for (lo, hi) in ranges {
        match merged.last_mut() {
            Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
            _ => merged.push((lo, hi)),
        }
    }
    Ok(merged)
}

/// The canonical text of merged ranges: "0-3,5".
pub fn format_cpu_list(ranges: &[(u32, u32)]) -> String {
    let items: Vec<String> = ranges
        .iter()
        .map(|&(lo, hi)| {
            if lo == hi {
                lo.to_string()
            } else {
                format!("{lo}-{hi}")
            }
        })
        .collect();
    items.join(",")
}

/// Any CPU list in canonical form.
pub fn canonicalize(text: &str) -> Result<String, String> {
    parse_cpu_list(text, false).map(|r| format_cpu_list(&r))
}

/// Compares a cpuset.cpus read-back with the wanted list.
pub fn verify_cpus(wanted: &str, got: &str) -> Result<(), String> {
    let want = canonicalize(wanted)?;
    let have = canonicalize(got)?;
    if want == have {
        Ok(())
    } else {
        Err(format!("CPUs {have:?}, not {want:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::Fixture;
    use super::*;

    #[test]
    fn canonical_forms() {
        let cases = [
            ("0-3,5", "0-3,5"),
            ("0", "0"),
            ("0-0", "0"),
            ("0,1,2,3", "0-3"),
            ("0-1,2-3,7", "0-3,7"),
            ("1,3,5-6", "1,3,5-6"),
            ("8191", "8191"),
        ];
        for (input, want) in cases {
            let strict = parse_cpu_list(input, true).map(|r| format_cpu_list(&r));
            assert_eq!(strict.as_deref(), Ok(want), "{input}");
            assert_eq!(canonicalize(input).as_deref(), Ok(want), "{input}");
        }
        // Read-backs may be unordered or empty; user input may not.
        assert_eq!(canonicalize("5,0-3\n").as_deref(), Ok("0-3,5"));
        assert_eq!(canonicalize("0-3,2-5").as_deref(), Ok("0-5"));
        assert_eq!(canonicalize("\n").as_deref(), Ok(""));
    }

    #[test]
    fn bad_lists() {
        for bad in [
            "",
            "0-3,",
            ",0",
            "0,,1",
            "3-1",
            "a",
            "0-",
            "-1",
            "0 1",
            " 0",
            "0-3, 5",
            "5,0-3",
            "0-3,3",
            "0-3,2-5",
            "8192",
            "99999999999",
            "1.5",
        ] {
            assert!(parse_cpu_list(bad, true).is_err(), "{bad:?}");
        }
        let e = parse_cpu_list("0-3,", true).unwrap_err();
        assert!(e.contains("stray comma"), "{e}");
        let e = parse_cpu_list("5,0-3", true).unwrap_err();
        assert!(e.contains("ascending"), "{e}");
        assert!(canonicalize("0-x").is_err());
    }

    #[test]
    fn verifies_after_canonicalising_both() {
        assert_eq!(verify_cpus("0-1,2-3", "0-3\n"), Ok(()));
        assert_eq!(verify_cpus("0,1", "0-1\n"), Ok(()));
        assert_eq!(
            verify_cpus("0-3", "0-1\n"),
            Err("CPUs \"0-1\", not \"0-3\"".into())
        );
        assert!(verify_cpus("0", "").is_err());

        let fx = Fixture::new();
        fx.file("cpuset.cpus", "");
        let l = Limits {
            cpuset: Some("0-1,3".to_string()),
            ..Limits::default()
        };
        let mut out = Vec::new();
        apply(fx.dir(), &l, &mut out);
        assert!(out[0].result.is_ok(), "{out:?}");
        assert_eq!(fx.read("cpuset.cpus"), "0-1,3");
    }

    #[test]
    fn reset_empties_the_list_and_held_is_canonical() {
        let fx = Fixture::new();
        fx.file("cpuset.cpus", "3,0-1\n");
        let (mut l, mut errors) = (Limits::default(), Vec::new());
        held(fx.dir(), &mut l, &mut errors);
        assert_eq!(l.cpuset.as_deref(), Some("0-1,3"));
        let mut out = Vec::new();
        reset(fx.dir(), &Limits::default(), &mut out);
        assert!(out[0].reset && out[0].result.is_ok(), "{out:?}");
        assert_eq!(fx.read("cpuset.cpus"), "\n");
        held(fx.dir(), &mut l, &mut errors);
        assert_eq!(l.cpuset, None);
        assert!(errors.is_empty());
        let mut out = Vec::new();
        reset(fx.dir(), &Limits::default(), &mut out);
        assert!(out.is_empty(), "already empty: nothing written");
    }
}
