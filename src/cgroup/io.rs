//! The io controller: `io.max` (per-device byte and operation rates) and
//! `io.weight`.
//!
//! io.max takes one device line per write, and only the keys reeve sets are
//! written. The kernel shows all four keys of a device with any limit, and
//! omits a device whose keys are all "max"; the read-back is compared on
//! the keys written, treating an omitted device as all "max".

use std::path::Path;

use super::parse::parse_device;
use super::{
    parse_u64, read_held, read_text, reset_file, write_then_verify, Applied, CgroupError,
    Controller, IoMax, IoRate, Limits,
};

/// io.weight's default line when none is set.
pub const DEFAULT_IO_WEIGHT: u32 = 100;

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

/// Puts "max" back into every io.max key the kernel shows limited that
/// `limits` does not set (a whole device line, or single keys of a device
/// it still limits), one line per device; resets io.weight to 100 when no
/// weight is set.
pub fn reset(group: &Path, limits: &Limits, out: &mut Vec<Applied>) {
    let path = group.join("io.max");
    match read_text(&path) {
        Err(e) if e.errno == Some(libc::ENOENT) => {}
        Err(e) => out.push(Applied {
            controller: Controller::Io,
            file: "io.max".to_string(),
            wanted: "max for every device reeve does not limit".to_string(),
            result: Err(e),
            reset: true,
        }),
        Ok(text) => match parse_held_max(&text) {
            Err(why) => out.push(Applied {
                controller: Controller::Io,
                file: "io.max".to_string(),
                wanted: "max for every device reeve does not limit".to_string(),
                result: Err(CgroupError::new(
                    super::CgroupErrorKind::Parse,
                    &path,
                    why,
                    "",
                )),
                reset: true,
            }),
            Ok(shown) => {
                for dev in shown {
                    let kept = limits
                        .io
                        .iter()
                        .find(|w| (w.major, w.minor) == (dev.major, dev.minor));
                    let clear = |key: Option<IoRate>, wanted: Option<IoRate>| {
                        (key.is_some() && wanted.is_none()).then_some(IoRate::Max)
                    };
                    let line = IoMax {
                        rbps: clear(dev.rbps, kept.and_then(|k| k.rbps)),
                        wbps: clear(dev.wbps, kept.and_then(|k| k.wbps)),
                        riops: clear(dev.riops, kept.and_then(|k| k.riops)),
                        wiops: clear(dev.wiops, kept.and_then(|k| k.wiops)),
                        ..dev
                    };
                    if line.keys().iter().all(|(_, r)| r.is_none()) {
                        continue;
                    }
                    let mut applied =
                        write_then_verify(group, Controller::Io, "io.max", line.line(), |got| {
                            verify_max(&line, got)
                        });
                    applied.reset = true;
                    out.push(applied);
                }
            }
        },
    }
    if limits.io_weight.is_none() {
        let default = format!("default {DEFAULT_IO_WEIGHT}");
        reset_file(
            group,
            Controller::Io,
            "io.weight",
            &default,
            |got| verify_weight(DEFAULT_IO_WEIGHT, got),
            out,
        );
    }
}

/// Reads what io.max and io.weight hold into `into`: one entry per device
/// the kernel shows limited, with its limited keys; "max" keys are unset.
pub fn held(group: &Path, into: &mut Limits, errors: &mut Vec<CgroupError>) {
    into.io =
        read_held(group, "io.max", |t| parse_held_max(t).map(Some), errors).unwrap_or_default();
    into.io_weight = read_held(
        group,
        "io.weight",
        |text| {
            let default = text
                .lines()
                .find_map(|l| l.strip_prefix("default "))
                .ok_or("no \"default\" line")?;
            match parse_u64(default.trim()).and_then(|w| u32::try_from(w).ok()) {
                Some(DEFAULT_IO_WEIGHT) => Ok(None),
                Some(w) => Ok(Some(w)),
                None => Err(format!("default {default:?} is not a weight")),
            }
        },
        errors,
    );
}

/// Parses an io.max read-back into its limited devices: keys shown as
/// "max" are unset, and a device with no limited key is left out.
pub fn parse_held_max(text: &str) -> Result<Vec<IoMax>, String> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut words = line.split_ascii_whitespace();
        let (major, minor) = parse_device(words.next().unwrap_or_default())?;
        let mut dev = IoMax::device(major, minor);
        for w in words {
            let (key, value) = w
                .split_once('=')
                .ok_or_else(|| format!("{w:?} is not key=value"))?;
            let rate = match value {
                "max" => None,
                v => Some(IoRate::Value(
                    parse_u64(v).ok_or_else(|| format!("{w:?}: not a number or max"))?,
                )),
            };
            match key {
                "rbps" => dev.rbps = rate,
                "wbps" => dev.wbps = rate,
                "riops" => dev.riops = rate,
                "wiops" => dev.wiops = rate,
                _ => return Err(format!("unknown key {key:?}")),
            }
        }
        if dev.keys().iter().any(|(_, r)| r.is_some()) {
            out.push(dev);
        }
    }
    Ok(out)
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
    fn reset_clears_unnamed_devices_and_keys_and_held_reads_them() {
        let fx = Fixture::new();
        fx.file(
            "io.max",
            "8:0 rbps=52428800 wbps=1000 riops=max wiops=max\n\
             8:16 rbps=max wbps=max riops=20 wiops=max\n",
        )
        .file("io.weight", "default 300\n");
        let (mut l, mut errors) = (Limits::default(), Vec::new());
        held(fx.dir(), &mut l, &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            l.io,
            vec![
                IoMax {
                    wbps: Some(IoRate::Value(1000)),
                    ..sda(Some(IoRate::Value(52428800)), None)
                },
                IoMax {
                    minor: 16,
                    riops: Some(IoRate::Value(20)),
                    ..sda(None, None)
                },
            ]
        );
        assert_eq!(l.io_weight, Some(300));

        // 8:0 keeps rbps; its wbps and all of 8:16 are no longer named.
        let keep = Limits {
            io: vec![sda(Some(IoRate::Value(52428800)), None)],
            ..Limits::default()
        };
        let mut out = Vec::new();
        reset(fx.dir(), &keep, &mut out);
        let wanted: Vec<&str> = out.iter().map(|a| a.wanted.as_str()).collect();
        assert_eq!(wanted, ["8:0 wbps=max", "8:16 riops=max", "default 100"]);
        // A fixture keeps the last write only, so each write's read-back
        // is checked against that write.
        assert!(out.iter().all(|a| a.reset && a.result.is_ok()), "{out:?}");
        assert_eq!(fx.read("io.weight"), "default 100");
        assert!(parse_held_max("8:0 rbps=x\n").is_err());
        assert!(parse_held_max("8:0 foo=1\n").is_err());
        assert_eq!(parse_held_max(""), Ok(vec![]));
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
