//! Structured log lines on stderr: one event per line, as JSON
//! (`{"ts_ms":..,"level":..,"event":..,fields..}`) or as text for people
//! (`2026-11-22T02:46:21.123Z info discovered pid=42 rule=ffmpeg`).
//!
//! A line is formatted into one reused buffer and written with a single
//! write(2), so concurrent writers never interleave within a line and the
//! steady state allocates nothing. A failed write is counted, never fatal.
//!
//! The daemon's stderr never blocks the loop ([`Logger::nonblocking_stderr`]):
//! a line the reader is not ready for waits in a bounded buffer allocated
//! once, which the loop flushes when poll(2) says stderr is writable; a line
//! that does not fit is dropped and counted, and once the buffer has drained
//! one `log_dropped` line says how many were lost.

mod stderr;

use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use crate::config::{LogFormat, LogLevel};
use crate::store::EventLog;
use crate::sys;
use stderr::Sink;
pub use stderr::STDERR_BACKLOG;

/// One field value.
#[derive(Debug, Clone, Copy)]
pub enum Val<'a> {
    U(u64),
    I(i64),
    S(&'a str),
    /// Bytes from the outside world (a comm, a path): shown lossily.
    B(&'a [u8]),
    Bool(bool),
}

pub fn level_name(level: LogLevel) -> &'static str {
    match level {
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Warn => "warn",
        LogLevel::Error => "error",
    }
}

pub struct Logger {
    format: LogFormat,
    level: LogLevel,
    buf: String,
    failed_writes: u64,
    sink: Sink,
    /// The audit event log: every event at info or above but `scan`.
    audit: Option<EventLog>,
    audit_failures: u64,
    /// An append failed outright and that was said; reset by the next
    /// append that works, so a broken log is one line, not one per event.
    audit_broken: bool,
    /// Lines are held, not written, until [`Logger::release_lines`].
    held: bool,
}

/// Events that are too frequent to be audit records, or are about the
/// audit log itself (a report queued behind the events it is about would
/// crowd them out and refill a full disk).
fn audited(level: LogLevel, event: &str) -> bool {
    level >= LogLevel::Info
        && !matches!(
            event,
            "scan" | "audit_log_failed" | "audit_append_failed" | "log_dropped"
        )
}

impl Logger {
    pub fn new(format: LogFormat, level: LogLevel) -> Logger {
        Logger {
            format,
            level,
            buf: String::with_capacity(4096),
            failed_writes: 0,
            sink: Sink::Blocking,
            audit: None,
            audit_failures: 0,
            audit_broken: false,
            held: false,
        }
    }

    /// Makes every later line's write to stderr non-blocking, with a
    /// bounded backlog; returns how (see `stderr::Backlog::open`).
    pub fn nonblocking_stderr(&mut self) -> io::Result<&'static str> {
        let (backlog, how) = stderr::Backlog::open()?;
        self.sink = Sink::NonBlocking(backlog);
        Ok(how)
    }

    /// The fd to poll for POLLOUT while lines wait to be written; `None`
    /// when nothing waits (so an idle daemon never polls stderr).
    pub fn stderr_backlog_fd(&self) -> Option<RawFd> {
        match &self.sink {
            Sink::NonBlocking(b) => b.wants_write(),
            Sink::Blocking => None,
        }
    }

    /// Writes what stderr takes of the backlog now, then, if it has
    /// drained and lines were dropped, one `log_dropped` line.
    pub fn flush_stderr(&mut self) {
        let Sink::NonBlocking(b) = &mut self.sink else {
            return;
        };
        if b.flush().is_err() {
            self.failed_writes += 1;
        }
        if b.pending.is_empty() && b.dropped > 0 {
            let mut notice = std::mem::take(&mut b.notice);
            notice.clear();
            let fields = [
                ("lines", Val::U(b.dropped)),
                ("total", Val::U(b.dropped_total)),
                ("reason", Val::S("stderr was not read fast enough")),
            ];
            let ts = sys::realtime_ms();
            match self.format {
                LogFormat::Json => {
                    format_json(&mut notice, ts, LogLevel::Warn, "log_dropped", &fields)
                }
                LogFormat::Text => {
                    format_text(&mut notice, ts, LogLevel::Warn, "log_dropped", &fields)
                }
            }
            notice.push('\n');
            b.dropped = 0;
            if b.emit(notice.as_bytes()).is_err() {
                self.failed_writes += 1;
            }
            b.notice = notice;
        }
    }

    /// At exit: keeps flushing the backlog until it is empty or `within`
    /// has passed (the loop is over, so waiting here delays only the exit).
    pub fn drain_stderr(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        while let Some(fd) = self.stderr_backlog_fd() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            let mut fds = [libc::pollfd {
                fd,
                events: libc::POLLOUT,
                revents: 0,
            }];
            let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX).max(1);
            if sys::poll(&mut fds, ms).is_err() {
                return;
            }
            self.flush_stderr();
        }
    }

    /// Lines dropped because stderr was not read.
    pub fn log_dropped(&self) -> u64 {
        match &self.sink {
            Sink::NonBlocking(b) => b.dropped_total,
            Sink::Blocking => 0,
        }
    }

    /// From now on, audit-worthy events also go to `log`.
    pub fn set_audit(&mut self, log: EventLog) {
        self.audit = Some(log);
    }

    pub fn audit_mut(&mut self) -> Option<&mut EventLog> {
        self.audit.as_mut()
    }

    /// The sequence number of the last event this logger wrote itself.
    pub fn last_audit_seq(&self) -> u64 {
        self.audit.as_ref().map_or(0, EventLog::last_written)
    }

    /// Audit appends that failed outright (not queued).
    pub fn audit_failures(&self) -> u64 {
        self.audit_failures
    }

    pub fn set(&mut self, format: LogFormat, level: LogLevel) {
        self.format = format;
        self.level = level;
    }

    pub fn enabled(&self, level: LogLevel) -> bool {
        level >= self.level
    }

    pub fn failed_writes(&self) -> u64 {
        self.failed_writes
    }

    pub fn debug(&mut self, event: &str, fields: &[(&str, Val<'_>)]) {
        self.log(LogLevel::Debug, event, fields);
    }

    pub fn info(&mut self, event: &str, fields: &[(&str, Val<'_>)]) {
        self.log(LogLevel::Info, event, fields);
    }

    pub fn warn(&mut self, event: &str, fields: &[(&str, Val<'_>)]) {
        self.log(LogLevel::Warn, event, fields);
    }

    pub fn error(&mut self, event: &str, fields: &[(&str, Val<'_>)]) {
        self.log(LogLevel::Error, event, fields);
    }

    /// From now until [`Logger::release_lines`], lines are formatted and
    /// held in memory (the audit log's queue and the stderr backlog)
    /// instead of written: the daemon holds them while it handles process
    /// events, so the only syscalls between an exec and its placement are
    /// the ones the placement needs. Holding never drops a line: past half
    /// of either bound, lines are written as usual.
    pub fn hold_lines(&mut self) {
        self.held = true;
    }

    /// Writes what was held: the audit log's queue if its lock is free now
    /// (otherwise the queue waits, as for any busy lock, and the loop comes
    /// back for it), and what stderr takes of the backlog.
    pub fn release_lines(&mut self) {
        if !std::mem::take(&mut self.held) {
            return;
        }
        if let Some(audit) = self.audit.as_mut() {
            audit.flush_pending_within(Duration::ZERO);
        }
        self.flush_stderr();
    }

    pub fn log(&mut self, level: LogLevel, event: &str, fields: &[(&str, Val<'_>)]) {
        let ts = sys::realtime_ms();
        if audited(level, event) {
            if let Some(audit) = self.audit.as_mut() {
                let deferred = match self.held {
                    true => audit.defer(ts, event, fields),
                    false => Ok(false),
                };
                let appended = match deferred {
                    Ok(true) => Ok(None),
                    Ok(false) => audit.append(ts, event, fields),
                    Err(e) => Err(e),
                };
                match appended {
                    Ok(Some(_)) => {
                        self.audit_broken = false;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        self.audit_failures += 1;
                        if !self.audit_broken {
                            self.audit_broken = true;
                            let error = e.to_string();
                            self.write_line(
                                ts,
                                LogLevel::Error,
                                "audit_append_failed",
                                &[
                                    ("error", Val::S(&error)),
                                    ("event", Val::S(event)),
                                    ("failures", Val::U(self.audit_failures)),
                                    (
                                        "action",
                                        Val::S("this event was refused by the log and not recorded; later refusals are counted in audit_events_lost at exit"),
                                    ),
                                ],
                            );
                        }
                    }
                }
            }
        }
        if self.enabled(level) {
            self.write_line(ts, level, event, fields);
        }
    }

    fn write_line(&mut self, ts: u64, level: LogLevel, event: &str, fields: &[(&str, Val<'_>)]) {
        self.buf.clear();
        match self.format {
            LogFormat::Json => format_json(&mut self.buf, ts, level, event, fields),
            LogFormat::Text => format_text(&mut self.buf, ts, level, event, fields),
        }
        self.buf.push('\n');
        let written = match &mut self.sink {
            Sink::Blocking => io::stderr().lock().write_all(self.buf.as_bytes()),
            Sink::NonBlocking(b)
                if self.held && b.pending.len() + self.buf.len() <= STDERR_BACKLOG / 2 =>
            {
                b.hold(self.buf.as_bytes());
                Ok(())
            }
            Sink::NonBlocking(b) => b.emit(self.buf.as_bytes()),
        };
        if written.is_err() {
            self.failed_writes += 1;
        }
    }
}

/// Appends `s` as a JSON string literal.
pub fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Appends one value: numbers bare, strings escaped, outside bytes
/// lossily as UTF-8 (the audit log uses the same encoding).
pub fn json_val(out: &mut String, v: &Val<'_>) {
    match v {
        Val::U(n) => {
            let _ = write!(out, "{n}");
        }
        Val::I(n) => {
            let _ = write!(out, "{n}");
        }
        Val::S(s) => json_str(out, s),
        Val::B(b) => json_str(out, &String::from_utf8_lossy(b)),
        Val::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
    }
}

pub fn format_json(
    out: &mut String,
    ts_ms: u64,
    level: LogLevel,
    event: &str,
    fields: &[(&str, Val<'_>)],
) {
    let _ = write!(
        out,
        "{{\"ts_ms\":{ts_ms},\"level\":\"{}\",\"event\":",
        level_name(level)
    );
    json_str(out, event);
    for (k, v) in fields {
        out.push(',');
        json_str(out, k);
        out.push(':');
        json_val(out, v);
    }
    out.push('}');
}

/// Appends a text value, quoted when it holds anything but plain
/// printable characters so a line always splits back into its fields.
fn text_str(out: &mut String, s: &str) {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_graphic() && c != '"' && c != '=' && c != '\\');
    if plain {
        out.push_str(s);
    } else {
        json_str(out, s);
    }
}

pub fn format_text(
    out: &mut String,
    ts_ms: u64,
    level: LogLevel,
    event: &str,
    fields: &[(&str, Val<'_>)],
) {
    iso8601(out, ts_ms);
    let _ = write!(out, " {:<5} {event}", level_name(level));
    for (k, v) in fields {
        let _ = write!(out, " {k}=");
        match v {
            Val::U(n) => {
                let _ = write!(out, "{n}");
            }
            Val::I(n) => {
                let _ = write!(out, "{n}");
            }
            Val::S(s) => text_str(out, s),
            Val::B(b) => text_str(out, &String::from_utf8_lossy(b)),
            Val::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        }
    }
}

/// Writes `ms` since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn iso8601(out: &mut String, ms: u64) {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let _ = write!(
        out,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_lines_reach_the_audit_log_at_release_in_order() {
        use crate::store::{testdir::TempDir, LogOptions, StateDir};
        let t = TempDir::new("log-hold");
        let dir = StateDir::open(&t.path().join("state")).unwrap();
        let opts = LogOptions {
            lock_timeout: Duration::ZERO,
            group_commit: true,
            ..LogOptions::default()
        };
        let mut log = Logger::new(LogFormat::Json, LogLevel::Error);
        log.set_audit(EventLog::open(&dir, opts).unwrap());
        let file = dir.path().join("events.jsonl");
        let written = || std::fs::read_to_string(&file).unwrap_or_default();
        log.info("before", &[]);
        log.hold_lines();
        log.info("discovered", &[("pid", Val::U(1))]);
        log.info("attached", &[("pid", Val::U(1))]);
        assert_eq!(written().lines().count(), 1, "held, not written");
        assert_eq!(log.last_audit_seq(), 1);
        log.release_lines();
        let events: Vec<String> = written()
            .lines()
            .map(|l| {
                l.split("\"event\":\"")
                    .nth(1)
                    .unwrap()
                    .split('"')
                    .next()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(events, ["before", "discovered", "attached"]);
        assert_eq!(log.last_audit_seq(), 3);
        // Released: lines are written at once again.
        log.info("exited", &[]);
        assert_eq!(written().lines().count(), 4);
    }

    #[test]
    fn names_with_newlines_stay_on_one_text_line() {
        let mut s = String::new();
        format_text(
            &mut s,
            0,
            LogLevel::Error,
            "attach_failed",
            &[("job", Val::S("job.evil\nname")), ("comm", Val::B(b"a\rb"))],
        );
        assert!(!s.contains('\n') && !s.contains('\r'), "{s}");
    }

    #[test]
    fn json_line_parses_back() {
        let mut s = String::new();
        format_json(
            &mut s,
            1234,
            LogLevel::Info,
            "discovered",
            &[
                ("pid", Val::U(42)),
                ("comm", Val::B(b"a \"b\"\n\xff")),
                ("delta", Val::I(-3)),
                ("ok", Val::Bool(true)),
                ("rule", Val::S("ffmpeg")),
            ],
        );
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["ts_ms"], 1234);
        assert_eq!(v["level"], "info");
        assert_eq!(v["event"], "discovered");
        assert_eq!(v["pid"], 42);
        assert_eq!(v["comm"], "a \"b\"\n\u{fffd}");
        assert_eq!(v["delta"], -3);
        assert_eq!(v["ok"], true);
        assert_eq!(v["rule"], "ffmpeg");
    }

    #[test]
    fn text_line_quotes_what_needs_it() {
        let mut s = String::new();
        format_text(
            &mut s,
            0,
            LogLevel::Warn,
            "discovery_mode",
            &[("mode", Val::S("poll")), ("reason", Val::S("not root"))],
        );
        assert_eq!(
            s,
            "1970-01-01T00:00:00.000Z warn  discovery_mode mode=poll reason=\"not root\""
        );
    }

    #[test]
    fn iso_dates() {
        let mut s = String::new();
        iso8601(&mut s, 1_763_779_581_123);
        assert_eq!(s, "2025-11-22T02:46:21.123Z");
        s.clear();
        iso8601(&mut s, 951_782_400_000); // 2000-02-29
        assert_eq!(s, "2000-02-29T00:00:00.000Z");
    }
}
