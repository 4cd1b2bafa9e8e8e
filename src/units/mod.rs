//! Human-written quantities: durations ("250ms", "1.5s"), sizes ("512M",
//! "max") and CPU amounts ("250%", "2.5", "max").
//!
//! Every parser is a pure function from text to a typed value that returns a
//! `Result` and never panics. Numbers are read as exact decimals, never as
//! floats, so "0.1s" is exactly 100ms and "1.5G" is exactly 1.5 GiB; digits
//! finer than the target resolution (a nanosecond, a byte, a millicore) are
//! dropped.

use std::fmt;
use std::time::Duration;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Duration units, largest first, with their length in nanoseconds.
const DURATION_UNITS: [(&str, u128); 5] = [
    ("h", 3_600 * NANOS_PER_SEC),
    ("m", 60 * NANOS_PER_SEC),
    ("s", NANOS_PER_SEC),
    ("ms", 1_000_000),
    ("us", 1_000),
];

/// The most CPU a limit may name: one million CPUs, in millicores.
const MAX_MILLICORES: u128 = 1_000_000_000;

/// A size limit as cgroup v2 understands it (`memory.max` and friends).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeLimit {
    Bytes(u64),
    Max,
}

/// A CPU limit as an amount of CPU time per period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuLimit {
    Max,
    /// Thousandths of one CPU: 2.5 CPUs, written "2.5" or "250%", is 2500.
    Millicores(u64),
}

/// Which kind of quantity was being parsed; chooses the hints in messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantity {
    Duration,
    Size,
    Cpu,
}

/// Why a quantity did not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitErrorKind {
    Empty,
    Negative,
    /// No number where one was expected ("abc", "nan", "1.2.3s", ".5s").
    NotANumber,
    /// A duration without a unit ("5").
    MissingUnit,
    UnknownUnit(String),
    /// The value does not fit the target type or exceeds the allowed maximum.
    TooLarge,
    /// A CPU amount of zero.
    Zero,
    /// A CPU amount that is not zero but less than one millicore.
    BelowResolution,
}

/// A quantity that did not parse: the input text, what was wrong, and what
/// was expected. Displays as one line, e.g.
/// `"5x": unknown unit 'x' (use us, ms, s, m or h)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitError {
    input: String,
    quantity: Quantity,
    kind: UnitErrorKind,
}

impl UnitError {
    fn new(input: &str, quantity: Quantity, kind: UnitErrorKind) -> UnitError {
        UnitError {
            input: input.to_string(),
            quantity,
            kind,
        }
    }

    pub fn input(&self) -> &str {
        &self.input
    }

    pub fn quantity(&self) -> Quantity {
        self.quantity
    }

    pub fn kind(&self) -> &UnitErrorKind {
        &self.kind
    }
}

impl fmt::Display for UnitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (what, example, units) = match self.quantity {
            Quantity::Duration => ("duration", "250ms or 1.5s", "use us, ms, s, m or h"),
            Quantity::Size => (
                "size",
                "4096, 512M, 1.5G or max",
                "use K, M, G, T, KiB, MiB, GiB, TiB, or none for bytes",
            ),
            Quantity::Cpu => (
                "CPU amount",
                "2.5 (CPUs), 250% or max",
                "use % or none for a number of CPUs",
            ),
        };
        write!(f, "{:?}: ", self.input)?;
        match &self.kind {
            UnitErrorKind::Empty => write!(f, "empty {what} (write e.g. {example})"),
            UnitErrorKind::Negative => write!(f, "a {what} cannot be negative"),
            UnitErrorKind::NotANumber => write!(f, "not a {what} (write e.g. {example})"),
            UnitErrorKind::MissingUnit => write!(f, "missing unit ({units})"),
            UnitErrorKind::UnknownUnit(unit) => write!(f, "unknown unit '{unit}' ({units})"),
            UnitErrorKind::TooLarge => match self.quantity {
                Quantity::Duration => f.write_str("too large for a duration"),
                Quantity::Size => f.write_str("too large (a size must fit in 64 bits of bytes)"),
                Quantity::Cpu => f.write_str("more than 1000000 CPUs"),
            },
            UnitErrorKind::Zero => write!(f, "a {what} must be more than zero"),
            UnitErrorKind::BelowResolution => {
                f.write_str("less than 0.001 CPU (0.1%), the smallest amount")
            }
        }
    }
}

impl std::error::Error for UnitError {}

/// An exact non-negative decimal: `int + frac / scale`.
struct Decimal {
    int: u128,
    frac: u128,
    scale: u128,
}

/// At most this many fraction digits are kept. Every unit multiplier is below
/// 10^13, so `frac * unit` stays below 10^33 and fits in a u128, and a digit
/// beyond the 20th is worth less than 10^-7 of the smallest resolution.
const MAX_FRAC_DIGITS: usize = 20;

impl Decimal {
    fn is_zero(&self) -> bool {
        self.int == 0 && self.frac == 0
    }

    /// `self * unit`, rounded down; `None` on overflow.
    fn times(&self, unit: u128) -> Option<u128> {
        let whole = self.int.checked_mul(unit)?;
        let part = self.frac.checked_mul(unit)? / self.scale;
        whole.checked_add(part)
    }
}

/// Splits `s` into a leading number and the unit after it, after rejecting
/// the empty and negative cases.
fn split(s: &str, quantity: Quantity) -> Result<(Decimal, &str), UnitError> {
    let fail = |kind| UnitError::new(s, quantity, kind);
    if s.is_empty() {
        return Err(fail(UnitErrorKind::Empty));
    }
    if s.starts_with('-') {
        return Err(fail(UnitErrorKind::Negative));
    }
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(end);
    let decimal = parse_decimal(number).map_err(fail)?;
    Ok((decimal, unit))
}

/// Reads `digits ['.' digits]`.
fn parse_decimal(number: &str) -> Result<Decimal, UnitErrorKind> {
    let (int_text, frac_text) = match number.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (number, None),
    };
    let all_digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(int_text) || frac_text.is_some_and(|f| !all_digits(f)) {
        return Err(UnitErrorKind::NotANumber);
    }
    let mut int: u128 = 0;
    for b in int_text.bytes() {
        int = int
            .checked_mul(10)
            .and_then(|v| v.checked_add(u128::from(b - b'0')))
            .ok_or(UnitErrorKind::TooLarge)?;
    }
    let (mut frac, mut scale) = (0u128, 1u128);
    for b in frac_text.unwrap_or("").bytes().take(MAX_FRAC_DIGITS) {
        frac = frac * 10 + u128::from(b - b'0');
        scale *= 10;
    }
    Ok(Decimal { int, frac, scale })
}

/// Parses a duration: a number and a unit, `us`, `ms`, `s`, `m` or `h`
/// ("250ms", "1.5s", "0s"). A bare number is an error, even "0".
pub fn parse_duration(s: &str) -> Result<Duration, UnitError> {
    let fail = |kind| UnitError::new(s, Quantity::Duration, kind);
    let (number, unit) = split(s, Quantity::Duration)?;
    if unit.is_empty() {
        return Err(fail(UnitErrorKind::MissingUnit));
    }
    let nanos_per_unit = DURATION_UNITS
        .iter()
        .find(|(name, _)| *name == unit)
        .map(|(_, nanos)| *nanos)
        .ok_or_else(|| fail(UnitErrorKind::UnknownUnit(unit.to_string())))?;
    let nanos = number
        .times(nanos_per_unit)
        .ok_or_else(|| fail(UnitErrorKind::TooLarge))?;
    let secs = u64::try_from(nanos / NANOS_PER_SEC).map_err(|_| fail(UnitErrorKind::TooLarge))?;
    let subsec = u32::try_from(nanos % NANOS_PER_SEC).map_err(|_| fail(UnitErrorKind::TooLarge))?;
    Ok(Duration::new(secs, subsec))
}

/// Formats a duration in the shortest form that [`parse_duration`] reads
/// back exactly: "1s", "250ms", "1m", "1.5s", "0.001us" for one nanosecond.
pub fn format_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_string();
    }
    let mut best: Option<String> = None;
    for (unit, per) in DURATION_UNITS {
        let Some(text) = exact_decimal(nanos, per) else {
            continue;
        };
        let candidate = format!("{text}{unit}");
        // Shortest wins; at equal length a whole number ("250ms", not "0.25s").
        let key = |t: &str| (t.len(), t.contains('.'));
        if best.as_ref().map_or(true, |b| key(&candidate) < key(b)) {
            best = Some(candidate);
        }
    }
    // Microseconds always succeed: a nanosecond is 0.001us.
    best.unwrap_or_else(|| format!("{nanos}ns"))
}

/// `value / divisor` as a terminating decimal string, if it terminates
/// within the digits that [`parse_decimal`] keeps.
fn exact_decimal(value: u128, divisor: u128) -> Option<String> {
    let whole = value / divisor;
    let mut rem = value % divisor;
    let mut text = whole.to_string();
    if rem == 0 {
        return Some(text);
    }
    text.push('.');
    for _ in 0..MAX_FRAC_DIGITS {
        rem *= 10;
        let digit = u8::try_from(rem / divisor).ok()?;
        text.push(char::from(b'0' + digit));
        rem %= divisor;
        if rem == 0 {
            return Some(text);
        }
    }
    None
}

/// Binary size suffixes and their multipliers.
const SIZE_UNITS: [(&str, u32); 12] = [
    ("K", 10),
    ("k", 10),
    ("KiB", 10),
    ("M", 20),
    ("m", 20),
    ("MiB", 20),
    ("G", 30),
    ("g", 30),
    ("GiB", 30),
    ("T", 40),
    ("t", 40),
    ("TiB", 40),
];

/// Parses a size: "max", plain bytes ("4096"), or a number with a binary
/// suffix ("512M", "1.5G", "2GiB", "64k"). Fractions of a byte round down.
pub fn parse_size(s: &str) -> Result<SizeLimit, UnitError> {
    if s == "max" {
        return Ok(SizeLimit::Max);
    }
    let fail = |kind| UnitError::new(s, Quantity::Size, kind);
    let (number, unit) = split(s, Quantity::Size)?;
    let shift = if unit.is_empty() {
        0
    } else {
        SIZE_UNITS
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|(_, shift)| *shift)
            .ok_or_else(|| fail(UnitErrorKind::UnknownUnit(unit.to_string())))?
    };
    let bytes = number
        .times(1u128 << shift)
        .and_then(|b| u64::try_from(b).ok())
        .ok_or_else(|| fail(UnitErrorKind::TooLarge))?;
    Ok(SizeLimit::Bytes(bytes))
}

impl fmt::Display for SizeLimit {
    /// "max", or the bytes with the largest binary suffix that divides them
    /// exactly ("512M", "1536M", "4097"); parses back with [`parse_size`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = match self {
            SizeLimit::Max => return f.write_str("max"),
            SizeLimit::Bytes(b) => *b,
        };
        for (suffix, shift) in [("T", 40), ("G", 30), ("M", 20), ("K", 10)] {
            if bytes != 0 && bytes % (1u64 << shift) == 0 {
                return write!(f, "{}{suffix}", bytes >> shift);
            }
        }
        write!(f, "{bytes}")
    }
}

/// Parses a CPU amount: "max", a number of CPUs ("2.5") or a percentage of
/// one CPU ("250%"). Both of those examples are 2500 millicores. Zero, less
/// than one millicore, or more than a million CPUs is an error.
pub fn parse_cpu(s: &str) -> Result<CpuLimit, UnitError> {
    if s == "max" {
        return Ok(CpuLimit::Max);
    }
    let fail = |kind| UnitError::new(s, Quantity::Cpu, kind);
    let (number, unit) = split(s, Quantity::Cpu)?;
    let per_unit = match unit {
        "" => 1_000,
        "%" => 10,
        other => return Err(fail(UnitErrorKind::UnknownUnit(other.to_string()))),
    };
    if number.is_zero() {
        return Err(fail(UnitErrorKind::Zero));
    }
    let millicores = number
        .times(per_unit)
        .filter(|m| *m <= MAX_MILLICORES)
        .ok_or_else(|| fail(UnitErrorKind::TooLarge))?;
    if millicores == 0 {
        return Err(fail(UnitErrorKind::BelowResolution));
    }
    let millicores = u64::try_from(millicores).map_err(|_| fail(UnitErrorKind::TooLarge))?;
    Ok(CpuLimit::Millicores(millicores))
}

impl fmt::Display for CpuLimit {
    /// "max", or a number of CPUs ("2.5", "0.25", "3"); parses back with
    /// [`parse_cpu`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CpuLimit::Max => f.write_str("max"),
            CpuLimit::Millicores(m) => {
                let text = exact_decimal(u128::from(*m), 1_000).unwrap_or_default();
                f.write_str(&text)
            }
        }
    }
}

#[cfg(test)]
mod tests;
