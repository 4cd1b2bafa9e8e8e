//! The io controller: `io.max` (per-device byte and operation rates) and
//! `io.weight`.
//!
//! io.max takes one device line per write, and only the keys reeve sets are
//! written. The kernel shows all four keys of a device with any limit, and
//! omits a device whose keys are all "max"; the read-back is compared on
//! the keys written, treating an omitted device as all "max".

use std::path::Path;

use super::parse::parse_device;
use super::{parse_u64, write_then_verify, Applied, Controller, IoMax, IoRate, Limits};

/// Writes one io.max line per device, then io.weight.
pub fn apply(group: &Path, limits: &Limits, out: &mut Vec<Applied>) {
    for io in &limits.io {
        out.push(write_then_verify(
            group,
            Controller::Io,
            "io.max",
            io.line(),
            |got| verify_max(io, got),
        ));
    }
    if let Some(w) = limits.io_weight {
        out.push(write_then_verify(
            group,
            Controller::Io,
            "io.weight",
            format!("default {w}"),
            |got| verify_weight(w, got),
        ));
    }
}

/// The `key=value` pairs of `device`'s line in an io.max read-back; an
/// absent device (all "max") gives `None`.
fn device_line(text: &str, device: (u32, u32)) -> Result<Option<Vec<(&str, &str)>>, String> {
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut words = line.split_ascii_whitespace();
        let dev = words.next().unwrap_or_default();
        if parse_device(dev)? != device {
            continue;
        }
        let pairs = words
            .map(|w| {
                w.split_once('=')
                    .ok_or_else(|| format!("{w:?} is not key=value"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(Some(pairs));
    }
    Ok(None)
}

/// Compares an io.max read-back with the keys of `io` that are set.
pub fn verify_max(io: &IoMax, got: &str) -> Result<(), String> {
    let line = device_line(got, (io.major, io.minor))?;
    for (key, want) in io.keys() {
        let Some(want) = want else {
            continue;
        };
        let shown = match &line {
            None => Some("max"),
            Some(pairs) => pairs.iter().find(|(k, _)| *k == key).map(|(_, v)| *v),
        };
        let got = match shown {
            Some("max") => Some(IoRate::Max),
            Some(v) => parse_u64(v).map(IoRate::Value),
            None => None,
        };
        if got != Some(want) {
            let shown = shown.unwrap_or("absent");
            return Err(format!("{key} is {shown}, not {want}"));
        }
    }
    Ok(())
}

/// Compares an io.weight read-back ("default 100\n8:0 200\n") with the
/// default weight written.
pub fn verify_weight(weight: u32, got: &str) -> Result<(), String> {
    let default = got
        .lines()
        .find_map(|l| l.strip_prefix("default "))
        .ok_or("no \"default\" line")?;
    match parse_u64(default.trim()) {
        Some(v) if v == u64::from(weight) => Ok(()),
        _ => Err(format!("default {}, not {weight}", default.trim())),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::Fixture;
    use super::*;

    fn sda(rbps: Option<IoRate>, wiops: Option<IoRate>) -> IoMax {
        IoMax {
            major: 8,
            minor: 0,
            rbps,
            wbps: None,
            riops: None,
            wiops,
        }
    }

    #[test]
    fn writes_only_the_keys_that_are_set() {
        let fx = Fixture::new();
        fx.file("io.max", "").file("io.weight", "default 100\n");
        let l = Limits {
            io: vec![
                sda(Some(IoRate::Value(52428800)), Some(IoRate::Max)),
                IoMax {
                    major: 259,
                    minor: 0,
                    wbps: Some(IoRate::Value(1000)),
                    ..sda(None, None)
                },
            ],
            io_weight: Some(250),
            ..Limits::default()
        };
        let mut out = Vec::new();
        apply(fx.dir(), &l, &mut out);
        let wanted: Vec<&str> = out.iter().map(|a| a.wanted.as_str()).collect();
        assert_eq!(
            wanted,
            [
                "8:0 rbps=52428800 wiops=max",
                "259:0 wbps=1000",
                "default 250"
            ]
        );
        assert!(out.iter().all(|a| a.result.is_ok()), "{out:?}");
        assert_eq!(fx.read("io.weight"), "default 250");
    }

    #[test]
    fn read_back_as_the_kernel_shows_it() {
        let io = sda(Some(IoRate::Value(52428800)), Some(IoRate::Max));
        let kernel = "8:16 rbps=1 wbps=max riops=max wiops=max\n\
                      8:0 rbps=52428800 wbps=max riops=max wiops=max\n";
        assert_eq!(verify_max(&io, kernel), Ok(()));
        let other = "8:0 rbps=1048576 wbps=max riops=max wiops=max\n";
        assert_eq!(
            verify_max(&io, other),
            Err("rbps is 1048576, not 52428800".into())
        );
        // The kernel omits a device whose limits are all max.
        let all_max = sda(Some(IoRate::Max), Some(IoRate::Max));
        assert_eq!(verify_max(&all_max, ""), Ok(()));
        assert_eq!(
            verify_max(&io, "8:16 rbps=2 wbps=max riops=max wiops=max\n"),
            Err("rbps is max, not 52428800".into())
        );
        assert_eq!(
            verify_max(&io, "8:0 wbps=max\n"),
            Err("rbps is absent, not 52428800".into())
        );
        for bad in ["sda rbps=1\n", "8:0 rbps\n", "8:x\n"] {
            assert!(verify_max(&io, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn io_weight_read_back() {
        assert_eq!(verify_weight(100, "default 100\n"), Ok(()));
        assert_eq!(verify_weight(100, "default 100\n8:0 200\n"), Ok(()));
        assert_eq!(
            verify_weight(100, "default 50\n"),
            Err("default 50, not 100".into())
        );
        assert!(verify_weight(100, "100\n").is_err());
    }
}
