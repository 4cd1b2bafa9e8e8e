//! The Prometheus text exposition format (version 0.0.4), written into a
//! caller's buffer: `# HELP` and `# TYPE` once per family, then samples.
//!
//! Label values are escaped as the format requires (backslash, double
//! quote, newline), whatever a job or rule name holds, so no name can end a
//! label early or start a sample of its own. Writing never fails and never
//! allocates beyond the buffer's growth.

use std::fmt::Write;

/// Upper bounds, in seconds, of the duration histograms (scan, loop
/// iteration, state save): 100 µs to 2.5 s, the span between a steady scan
/// of a quiet host and a deep scan of a crowded one.
pub const DURATION_BUCKETS: [f64; 10] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 2.5,
];

/// Upper bounds, in seconds, of the discovery latency histogram: 50 µs to
/// 1 s, with a bound at 2 ms, the goal for exec to discovered, so the
/// share of discoveries within it is read off one bucket.
pub const LATENCY_BUCKETS: [f64; 11] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.1, 1.0,
];

/// The most bounds a histogram can have.
pub const MAX_BUCKETS: usize = 12;

/// Counts of observations per bucket of its bounds, plus the sum. The
/// counts live in a fixed array, so observing never allocates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Observations at or below each bound and above the one before (not
    /// cumulative; made so when written).
    buckets: [u64; MAX_BUCKETS],
    pub count: u64,
    pub sum_seconds: f64,
}

impl Default for Histogram {
    /// A histogram over [`DURATION_BUCKETS`].
    fn default() -> Histogram {
        Histogram::with_bounds(&DURATION_BUCKETS)
    }
}

impl Histogram {
    /// A histogram over `bounds` (ascending, at most [`MAX_BUCKETS`]; more
    /// are a programming error, caught by the first test that builds one).
    pub fn with_bounds(bounds: &'static [f64]) -> Histogram {
        assert!(bounds.len() <= MAX_BUCKETS, "too many histogram bounds");
        Histogram {
            bounds,
            buckets: [0; MAX_BUCKETS],
            count: 0,
            sum_seconds: 0.0,
        }
    }

    pub fn observe_us(&mut self, us: u64) {
        self.observe_ns(us.saturating_mul(1000));
    }

    pub fn observe_ns(&mut self, ns: u64) {
        let s = ns as f64 / 1e9;
        if let Some(i) = self.bounds.iter().position(|&b| s <= b) {
            self.buckets[i] += 1;
        }
        self.count += 1;
        self.sum_seconds += s;
    }

    /// Each bound with the observations in its bucket (not cumulative).
    pub fn buckets(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        self.bounds.iter().copied().zip(self.buckets)
    }
}

/// Appends `v` to `out` escaped as a label value.
pub fn escape_label(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A writer of one exposition document.
pub struct Exposition<'a> {
    pub out: &'a mut String,
}

impl Exposition<'_> {
    /// Starts a family: its help line and type.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        // Writing to a String cannot fail.
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// One sample with up to a few labels.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(k);
                self.out.push_str("=\"");
                escape_label(self.out, v);
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
        if value.is_finite() && value.fract() == 0.0 && value.abs() < 1e15 {
            let _ = writeln!(self.out, "{}", value as i64);
        } else {
            let _ = writeln!(self.out, "{value}");
        }
    }

    /// A family with one unlabelled sample.
    pub fn single(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// A histogram family in seconds.
    pub fn histogram(&mut self, name: &str, help: &str, h: &Histogram) {
        self.family(name, "histogram", help);
        let bucket = format_name(name, "_bucket");
        let mut cumulative = 0;
        let mut le = String::with_capacity(16);
        for (bound, n) in h.buckets() {
            cumulative += n;
            le.clear();
            let _ = write!(le, "{bound}");
            self.sample(&bucket, &[("le", &le)], cumulative as f64);
        }
        self.sample(&bucket, &[("le", "+Inf")], h.count as f64);
        self.sample(&format_name(name, "_sum"), &[], h.sum_seconds);
        self.sample(&format_name(name, "_count"), &[], h.count as f64);
    }
}

fn format_name(name: &str, suffix: &str) -> String {
    let mut s = String::with_capacity(name.len() + suffix.len());
    s.push_str(name);
    s.push_str(suffix);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let mut out = String::new();
        let mut e = Exposition { out: &mut out };
        e.sample("m", &[("job", "a\"b\\c\nd")], 1.0);
        assert_eq!(out, "m{job=\"a\\\"b\\\\c\\nd\"} 1\n");
    }

    #[test]
    fn histogram_is_cumulative_and_ends_in_inf() {
        let mut h = Histogram::default();
        h.observe_us(50);
        h.observe_us(2_000);
        h.observe_us(10_000_000);
        let mut out = String::new();
        Exposition { out: &mut out }.histogram("d_seconds", "x", &h);
        assert!(out.contains("d_seconds_bucket{le=\"0.0001\"} 1\n"), "{out}");
        assert!(out.contains("d_seconds_bucket{le=\"2.5\"} 2\n"), "{out}");
        assert!(out.contains("d_seconds_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("d_seconds_count 3\n"), "{out}");
    }

    #[test]
    fn latency_histogram_has_its_own_bounds_with_2ms() {
        let mut h = Histogram::with_bounds(&LATENCY_BUCKETS);
        h.observe_ns(1_999_999);
        h.observe_ns(2_000_000);
        h.observe_ns(2_000_001);
        let mut out = String::new();
        Exposition { out: &mut out }.histogram("l_seconds", "x", &h);
        assert!(
            out.contains("l_seconds_bucket{le=\"0.00005\"} 0\n"),
            "{out}"
        );
        assert!(out.contains("l_seconds_bucket{le=\"0.002\"} 2\n"), "{out}");
        assert!(out.contains("l_seconds_bucket{le=\"0.005\"} 3\n"), "{out}");
        assert!(out.contains("l_seconds_bucket{le=\"1\"} 3\n"), "{out}");
        assert!(!out.contains("le=\"2.5\""), "{out}");
        assert_eq!(out.matches("l_seconds_bucket").count(), 12, "{out}");
        assert!(out.contains("l_seconds_count 3\n"), "{out}");
    }

    #[test]
    fn values_print_as_integers_or_floats() {
        let mut out = String::new();
        let mut e = Exposition { out: &mut out };
        e.sample("a", &[], 3.0);
        e.sample("b", &[], 0.25);
        assert_eq!(out, "a 3\nb 0.25\n");
    }
}
