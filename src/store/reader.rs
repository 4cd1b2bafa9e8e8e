//! Reading the audit event log back: every generation oldest first
//! (`events.jsonl.N` .. `events.jsonl.1`, then `events.jsonl`), and the
//! backwards tail scan writers use to recover the last sequence number.
//!
//! Invariant: nothing on disk can make a reader fail or panic once the
//! directory can be listed. A generation that cannot be used (unreadable,
//! not a regular file, untrusted) is skipped with a warning
//! ([`EventReader::warnings`]); an undecodable line is skipped and counted,
//! an unterminated last line (a torn tail, or a line being written right
//! now) is never yielded, and an overlong line is skipped without being
//! held in memory. Reading changes nothing on disk.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{open_read, Shown, StoreError};

pub(crate) const LOG_NAME: &str = "events.jsonl";
pub(crate) const LOCK_NAME: &str = "events.lock";

/// Lines longer than this are not lines reeve wrote.
const MAX_LINE: usize = 1 << 20;

/// How long a reader waits for a rotation in progress to finish.
const READ_LOCK_WAIT: Duration = Duration::from_millis(200);

pub(crate) fn generation_path(dir: &Path, k: u32) -> PathBuf {
    dir.join(format!("{LOG_NAME}.{k}"))
}

/// The rotated generations present in `dir`, newest (`1`) first.
pub(crate) fn list_generations(dir: &Path) -> io::Result<Vec<u32>> {
    let mut gens = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(LOG_NAME)) else {
            continue;
        };
        let Some(digits) = rest.strip_prefix('.') else {
            continue;
        };
        if let Some(k) = crate::digits::parse_u32(digits.as_bytes()) {
            if k >= 1 {
                gens.push(k);
            }
        }
    }
    gens.sort_unstable();
    Ok(gens)
}

/// What the end of a log file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tail {
    /// Length up to and including the last '\n' (0 if there is none); less
    /// than the file size when the file ends in a torn line.
    pub complete_len: u64,
    /// The seq of the last complete line that has one.
    pub last_seq: Option<u64>,
}

/// Scans `file` (of `size` bytes) backwards from the end for its last
/// complete line with a seq. Reads only the tail unless the end of the file
/// is garbage.
pub(crate) fn scan_tail(file: &File, size: u64) -> io::Result<Tail> {
    let complete_len = match prev_newline(file, size)? {
        Some(p) => p + 1,
        None => 0,
    };
    let mut end = complete_len;
    let mut line = Vec::new();
    while end > 0 {
        let nl = end - 1;
        let start = prev_newline(file, nl)?.map_or(0, |p| p + 1);
        let len = nl - start;
        if len as usize <= MAX_LINE {
            line.resize(len as usize, 0);
            file.read_exact_at(&mut line, start)?;
            if let Some(seq) = parse_seq_prefix(&line) {
                return Ok(Tail {
                    complete_len,
                    last_seq: Some(seq),
                });
            }
        }
        end = start;
    }
    Ok(Tail {
        complete_len,
        last_seq: None,
    })
}

/// The offset of the last '\n' before `before`, reading backwards in chunks.
fn prev_newline(file: &File, before: u64) -> io::Result<Option<u64>> {
    let mut buf = [0u8; 8192];
    let mut hi = before;
    while hi > 0 {
        let lo = hi.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(hi - lo) as usize];
        file.read_exact_at(chunk, lo)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            return Ok(Some(lo + i as u64));
        }
        hi = lo;
    }
    Ok(None)
}

/// The seq of a line reeve wrote: it starts `{"seq":<digits>` followed by
/// `,` or `}`.
pub(crate) fn parse_seq_prefix(line: &[u8]) -> Option<u64> {
    let rest = line.strip_prefix(b"{\"seq\":")?;
    let end = rest.iter().position(|&b| b == b',' || b == b'}')?;
    crate::digits::parse_u64(&rest[..end])
}

/// Opens every generation of the log in `dir` for reading, oldest first,
/// and yields the events with `seq > since_seq` as JSON objects.
///
/// The files are opened up front under a brief shared lock, so a rotation
/// by a writer meanwhile neither hides nor repeats lines; if the lock is
/// not had within 200 ms the reader goes on without it and drops any seq it
/// has already yielded.
pub fn read_events(dir: &Path, since_seq: Option<u64>) -> Result<EventReader, StoreError> {
    let lock = shared_lock(dir);
    let gens = list_generations(dir).map_err(|e| StoreError::io("list", dir, e))?;
    let mut files = VecDeque::with_capacity(gens.len() + 1);
    let mut warnings = Vec::new();
    let mut unusable = |path: &Path, what: &str, e: io::Error| {
        warnings.push(format!(
            "{}: cannot {what} it: {e}; its events are skipped",
            Shown(path)
        ));
    };
    for &k in gens.iter().rev() {
        let path = generation_path(dir, k);
        let file = match open_read(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                unusable(&path, "use", e);
                continue;
            }
        };
        if let Some(since) = since_seq {
            // A whole generation at or below `since` is skipped unread.
            let tail = file.metadata().and_then(|m| scan_tail(&file, m.len()));
            match tail {
                Ok(t) if t.last_seq.is_some_and(|s| s <= since) => continue,
                Ok(_) => {}
                Err(e) => {
                    unusable(&path, "read", e);
                    continue;
                }
            }
        }
        files.push_back((file, false));
    }
    let path = dir.join(LOG_NAME);
    match open_read(&path) {
        Ok(f) => files.push_back((f, true)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        // A symlink at the live log is refused outright: something is
        // wrong with the directory itself, not with one old generation.
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(StoreError::io("open", &path, e))
        }
        Err(e) => unusable(&path, "use", e),
    }
    drop(lock);
    Ok(EventReader {
        files,
        current: None,
        buf: Vec::with_capacity(4096),
        since: since_seq.unwrap_or(0),
        floor: since_seq.is_some(),
        skipped: 0,
        warnings,
    })
}

/// Holds a shared flock on `events.lock` while alive, if it could be had.
fn shared_lock(dir: &Path) -> Option<File> {
    let file = open_read(&dir.join(LOCK_NAME)).ok()?;
    let deadline = Instant::now() + READ_LOCK_WAIT;
    loop {
        if fs2::FileExt::try_lock_shared(&file).is_ok() {
            return Some(file);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Iterator over the events of every generation, oldest first. The seqs it
/// yields strictly increase: a line at or below one already yielded (as a
/// rotation racing an unlocked read can show twice) is dropped.
pub struct EventReader {
    /// Files still to read; `true` marks the live log, whose unterminated
    /// last line may be a write in progress.
    files: VecDeque<(File, bool)>,
    current: Option<(BufReader<File>, bool)>,
    buf: Vec<u8>,
    /// Yield only seq above this ...
    since: u64,
    /// ... when set (otherwise seq 0 is a valid first event too).
    floor: bool,
    skipped: u64,
    warnings: Vec<String>,
}

impl EventReader {
    /// Lines that were not a JSON object with a whole-number `seq`.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Files that were skipped, one line each, for the caller to show.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
}

enum Line {
    Eof,
    /// A line ending in '\n' (without it), or too long to keep.
    Complete {
        too_long: bool,
    },
    /// Bytes at the end of the file with no '\n' after them.
    Unterminated,
}

/// Reads one line into `buf`, never holding more than `MAX_LINE` bytes.
fn read_line(r: &mut impl BufRead, buf: &mut Vec<u8>) -> io::Result<Line> {
    buf.clear();
    let mut too_long = false;
    let mut any = false;
    loop {
        let avail = match r.fill_buf() {
            Ok(a) => a,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if avail.is_empty() {
            return Ok(if any { Line::Unterminated } else { Line::Eof });
        }
        any = true;
        let (take, done) = match avail.iter().position(|&b| b == b'\n') {
            Some(i) => (i, true),
            None => (avail.len(), false),
        };
        if !too_long && buf.len() + take <= MAX_LINE {
            buf.extend_from_slice(&avail[..take]);
        } else {
            too_long = true;
            buf.clear();
        }
        r.consume(if done { take + 1 } else { take });
        if done {
            return Ok(Line::Complete { too_long });
        }
    }
}

impl Iterator for EventReader {
    type Item = Value;

    fn next(&mut self) -> Option<Value> {
        loop {
            if self.current.is_none() {
                let (file, live) = self.files.pop_front()?;
                self.current = Some((BufReader::with_capacity(64 * 1024, file), live));
            }
            let Some((reader, live)) = self.current.as_mut() else {
                continue;
            };
            let live = *live;
            match read_line(reader, &mut self.buf) {
                Ok(Line::Eof) => {
                    self.current = None;
                    continue;
                }
                Ok(Line::Unterminated) if live => {
                    // A write in progress or a torn tail the next writer
                    // cuts off: its seq may yet belong to another line.
                    self.current = None;
                    continue;
                }
                Ok(Line::Unterminated) | Ok(Line::Complete { too_long: true }) => {
                    self.skipped += 1;
                    continue;
                }
                Ok(Line::Complete { too_long: false }) => {}
                Err(_) => {
                    // An unreadable stretch: count it and go on with the
                    // next file rather than stop the whole read.
                    self.skipped += 1;
                    self.current = None;
                    continue;
                }
            }
            let Some((seq, value)) = decode_line(&self.buf) else {
                self.skipped += 1;
                continue;
            };
            if self.floor && seq <= self.since {
                continue;
            }
            self.since = seq;
            self.floor = true;
            return Some(value);
        }
    }
}

/// A line as an event: a JSON object with a whole-number `seq`.
fn decode_line(line: &[u8]) -> Option<(u64, Value)> {
    let value: Value = serde_json::from_slice(line).ok()?;
    let seq = value.as_object()?.get("seq")?.as_u64()?;
    Some((seq, value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testdir::TempDir;

    #[test]
    fn seq_prefix() {
        assert_eq!(parse_seq_prefix(b"{\"seq\":12,\"x\":1}"), Some(12));
        assert_eq!(parse_seq_prefix(b"{\"seq\":0}"), Some(0));
        assert_eq!(
            parse_seq_prefix(b"{\"seq\":18446744073709551615}"),
            Some(u64::MAX)
        );
        for bad in [
            &b""[..],
            b"{\"seq\":}",
            b"{\"seq\":12",
            b"{\"seq\":12x}",
            b"{\"seq\":-1}",
            b"{\"seq\":18446744073709551616}",
            b"{\"seq\":000000000000000000001}",
            b" {\"seq\":1}",
        ] {
            assert_eq!(
                parse_seq_prefix(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    fn tail_of(bytes: &[u8]) -> Tail {
        let t = TempDir::new("tail");
        let p = t.path().join("f");
        std::fs::write(&p, bytes).unwrap();
        let f = File::open(&p).unwrap();
        scan_tail(&f, bytes.len() as u64).unwrap()
    }

    #[test]
    fn tail_scan_finds_last_complete_seq() {
        assert_eq!(
            tail_of(b""),
            Tail {
                complete_len: 0,
                last_seq: None
            }
        );
        assert_eq!(
            tail_of(b"{\"seq\":1}\n{\"seq\":2}\n"),
            Tail {
                complete_len: 20,
                last_seq: Some(2)
            }
        );
        // Torn last line: the complete part ends before it.
        assert_eq!(
            tail_of(b"{\"seq\":1}\n{\"seq\":2}\n{\"seq\":3,\"t"),
            Tail {
                complete_len: 20,
                last_seq: Some(2)
            }
        );
        // Garbage complete lines at the end are stepped over.
        assert_eq!(
            tail_of(b"{\"seq\":1}\n{\"seq\":2}\n\0\0\0\nxx\n"),
            Tail {
                complete_len: 27,
                last_seq: Some(2)
            }
        );
        assert_eq!(
            tail_of(b"no newline at all"),
            Tail {
                complete_len: 0,
                last_seq: None
            }
        );
    }

    #[test]
    fn tail_scan_crosses_chunk_boundaries() {
        let mut bytes = b"{\"seq\":77,\"pad\":\"".to_vec();
        bytes.extend(std::iter::repeat(b'a').take(20_000));
        bytes.extend_from_slice(b"\"}\n");
        bytes.extend(std::iter::repeat(b'z').take(30_000));
        let t = tail_of(&bytes);
        assert_eq!(t.last_seq, Some(77));
        assert_eq!(t.complete_len, 20_000 + 17 + 3);
    }

    #[test]
    fn read_line_bounds_memory() {
        let mut data = vec![b'x'; MAX_LINE + 10];
        data.extend_from_slice(b"\nok\ntail");
        let mut r = io::Cursor::new(data);
        let mut buf = Vec::new();
        assert!(matches!(
            read_line(&mut r, &mut buf).unwrap(),
            Line::Complete { too_long: true }
        ));
        assert!(buf.capacity() <= MAX_LINE * 2);
        assert!(matches!(
            read_line(&mut r, &mut buf).unwrap(),
            Line::Complete { too_long: false }
        ));
        assert_eq!(buf, b"ok");
        assert!(matches!(
            read_line(&mut r, &mut buf).unwrap(),
            Line::Unterminated
        ));
        assert!(matches!(read_line(&mut r, &mut buf).unwrap(), Line::Eof));
    }

    #[test]
    fn generations_are_listed_by_number() {
        let t = TempDir::new("gens");
        for n in [
            "events.jsonl",
            "events.jsonl.1",
            "events.jsonl.10",
            "events.jsonl.2",
            "events.jsonl.0",
            "events.jsonl.x",
            "events.jsonl.+3",
            "events.jsonl.1.tmp",
            "other.1",
        ] {
            std::fs::write(t.path().join(n), b"").unwrap();
        }
        assert_eq!(list_generations(t.path()).unwrap(), vec![1, 2, 10]);
    }

    #[test]
    fn decode_line_needs_object_with_seq() {
        assert!(decode_line(b"{\"seq\":3,\"event\":\"x\"}").is_some());
        for bad in [
            &b"[]"[..],
            b"{\"seq\":-1}",
            b"{\"seq\":1.5}",
            b"{}",
            b"\xff",
        ] {
            assert!(decode_line(bad).is_none());
        }
    }
}
