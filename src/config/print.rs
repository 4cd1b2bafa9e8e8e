//! The config printed back in its own schema: the serializers that
//! [`Config`](super::Config)'s `Serialize` derive names for fields whose
//! config spelling is not their Rust shape (durations, paths, limits).
//!
//! Every printer writes text that the parser reads back to an equal value,
//! so `reeve config` output is itself a valid config.

use super::UserRef;
use crate::cgroup::limits::cpu_percent;
use crate::cgroup::{IoMax, IoRate, Limits, PidsLimit};
use crate::units::{format_duration, SizeLimit};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub(super) fn path<S: Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&path.to_string_lossy())
}

pub(super) fn opt_path<S: Serializer>(path: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
    match path {
        Some(p) => s.serialize_str(&p.to_string_lossy()),
        None => s.serialize_none(),
    }
}

pub(super) fn paths<S: Serializer>(paths: &[PathBuf], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(paths.iter().map(|p| p.to_string_lossy()))
}

pub(super) fn bytes<S: Serializer>(n: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&n.to_string())
}

pub(super) fn duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_duration(*d))
}

pub(super) fn age<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => duration(d, s),
        None => s.serialize_none(),
    }
}

/// `cgroup_root` as the `cgroup` object it was read from.
pub(super) fn cgroup<S: Serializer>(root: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(None)?;
    if let Some(root) = root {
        map.serialize_entry("root", &root.to_string_lossy())?;
    }
    map.end()
}

impl Serialize for UserRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.name {
            Some(name) => s.serialize_str(name),
            None => s.serialize_u32(self.uid),
        }
    }
}

/// A text value or a count, as a limit is written in the config.
#[derive(Serialize)]
#[serde(untagged)]
enum Value {
    Text(String),
    Count(u64),
}

/// Limits in the config's spelling (`"cpu": "250%"`, `"cpu_period": "50ms"`,
/// `"io": [{"device": "8:0", "wbps": "50M"}]`), set fields only. This is not
/// `Limits`' own `Serialize`, which is the state records' format.
pub(super) fn limits<S: Serializer>(l: &Limits, s: S) -> Result<S::Ok, S::Error> {
    let text = |t: String| Some(Value::Text(t));
    let size = |v: Option<SizeLimit>| v.and_then(|v| text(v.to_string()));
    let pids = l.pids.map(|p| match p {
        PidsLimit::Max => Value::Text("max".to_string()),
        PidsLimit::Count(n) => Value::Count(n),
    });
    let scalars = [
        ("cpu", l.cpu.and_then(|c| text(cpu_percent(c)))),
        (
            "cpu_period",
            l.cpu_period_us
                .and_then(|us| text(format_duration(Duration::from_micros(us)))),
        ),
        ("cpu_weight", l.cpu_weight.map(|w| Value::Count(w.into()))),
        ("memory", size(l.memory)),
        ("memory_high", size(l.memory_high)),
        ("swap", size(l.swap)),
        ("pids", pids),
        ("io_weight", l.io_weight.map(|w| Value::Count(w.into()))),
        ("cpuset", l.cpuset.clone().and_then(text)),
        ("net_tx", l.net_tx.and_then(|r| text(r.to_string()))),
        ("net_rx", l.net_rx.and_then(|r| text(r.to_string()))),
    ];
    let mut map = s.serialize_map(None)?;
    for (key, value) in scalars {
        if let Some(value) = value {
            map.serialize_entry(key, &value)?;
        }
    }
    if !l.io.is_empty() {
        map.serialize_entry("io", &Devices(&l.io))?;
    }
    map.end()
}

struct Devices<'a>(&'a [IoMax]);

impl Serialize for Devices<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for io in self.0 {
            seq.serialize_element(&Device(io))?;
        }
        seq.end()
    }
}

/// One io entry: the device as "MAJ:MIN", byte rates as sizes ("50M"),
/// operation rates as counts.
struct Device<'a>(&'a IoMax);

impl Serialize for Device<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let io = self.0;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("device", &format!("{}:{}", io.major, io.minor))?;
        for (key, rate) in io.keys() {
            let value = match (rate, key.ends_with("bps")) {
                (None, _) => continue,
                (Some(IoRate::Max), _) => Value::Text("max".to_string()),
                (Some(IoRate::Value(n)), true) => Value::Text(SizeLimit::Bytes(n).to_string()),
                (Some(IoRate::Value(n)), false) => Value::Count(n),
            };
            map.serialize_entry(key, &value)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{parse_ok, FULL};
    use super::super::EMBEDDED;
    use serde_json::{json, Value};

    #[test]
    fn printed_config_parses_back_equal() {
        let seeds = [
            FULL,
            "{}",
            EMBEDDED,
            r#"{"targets":[{"name":"a","match":{"cmdline_contains":["x"]},"filter":{}}]}"#,
            r#"{"targets":[{"name":"a","match":{"comm":["a"]},"limits":{"cpu":"0.1%","cpu_period":"1s"}}]}"#,
            r#"{"targets":[{"name":"a","match":{"comm":["a"]},"pool":"p"}],"cgroup":{}}"#,
            r#"{"targets":[{"name":"a","match":{"comm":["a"]},"limits":{"net_tx":"2M","net_rx":"5M/burst=1M"}}]}"#,
            r#"{"metrics":{}}"#,
            r#"{"metrics":{"listen":"[::1]:9000","token_file":"/etc/reeve/token"}}"#,
        ];
        for doc in seeds {
            let first = parse_ok(doc);
            let printed = first.to_pretty_json();
            assert_eq!(parse_ok(&printed), first, "{printed}");
        }
        let printed = parse_ok(FULL).to_pretty_json();
        assert!(printed.contains(r#""match": {"#), "{printed}");
        assert!(printed.contains(r#""users": ["#), "{printed}");
        assert!(printed.contains(r#""encoder","#), "{printed}");
        assert!(printed.contains(r#""scan_interval": "1.5s""#), "{printed}");
        assert!(printed.contains(r#""level": "debug""#), "{printed}");
    }

    #[test]
    fn governance_prints_in_the_config_spelling() {
        let printed: Value = serde_json::from_str(&parse_ok(FULL).to_pretty_json()).unwrap();
        assert_eq!(
            printed["targets"][0]["limits"],
            json!({
                "cpu": "250%", "cpu_period": "50ms", "cpu_weight": 200,
                "memory": "4G", "memory_high": "3G", "swap": "0", "pids": 64,
                "io_weight": 300, "cpuset": "0-3,5",
                "io": [
                    {"device": "8:0", "rbps": "50M", "wbps": "max", "riops": 1000, "wiops": "max"},
                    {"device": "259:0", "wbps": "1048577"}
                ]
            })
        );
        assert_eq!(
            printed["targets"][1]["limits"],
            json!({"cpu": "1.5%", "memory": "max", "pids": "max"})
        );
        assert_eq!(printed["targets"][1]["pool"], "live.encoders");
        assert_eq!(
            printed["cgroup"],
            json!({"root": "/sys/fs/cgroup/encoders"})
        );
        let plain: Value = serde_json::from_str(&parse_ok("{}").to_pretty_json()).unwrap();
        assert_eq!(plain["targets"][0].get("limits"), None);
        assert_eq!(plain["targets"][0].get("pool"), None);
        assert_eq!(plain.get("cgroup"), None);
    }
}
