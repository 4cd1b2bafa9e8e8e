//! The metrics endpoint: [`WORKERS`] threads, each accepting a connection,
//! reading one bounded request, answering it from the published snapshot
//! and closing it.
//!
//! Bounds: at most [`WORKERS`] connections handled at once (the kernel's
//! listen backlog holds the others), at most [`MAX_HEAD`] bytes of request head, the whole head
//! within [`READ_DEADLINE`], the answer written within [`WRITE_TIMEOUT`].
//! A client that sends nothing, sends slowly or never reads occupies this
//! thread for at most those times and never the supervision loop, which
//! only ever try-locks the snapshot. Only `GET /metrics` and `GET /healthz`
//! are served; a body is refused.

use super::Shared;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Threads that accept and answer connections, each one at a time.
pub const WORKERS: usize = 4;
/// The largest request head (request line and headers) read.
pub const MAX_HEAD: usize = 8192;
/// The longest request target.
pub const MAX_TARGET: usize = 256;
/// The whole request head must arrive within this.
pub const READ_DEADLINE: Duration = Duration::from_secs(2);
/// Each write of the answer must progress within this.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the endpoint serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Metrics,
    Health,
}

/// A request that can be answered, or the status it is refused with.
#[derive(Debug, PartialEq, Eq)]
pub struct Request<'a> {
    pub route: Option<Route>,
    pub bearer: Option<&'a [u8]>,
}

/// Why a request head was refused: the HTTP status and a one-line reason.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused(pub u16, pub &'static str);

/// Parses a complete request head (up to and without the blank line).
/// Never panics on any input.
pub fn parse_head(head: &[u8]) -> Result<Request<'_>, Refused> {
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let line = lines.next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ').filter(|p| !p.is_empty());
    let (method, target, version) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v), None) => (m, t, v),
        _ => return Err(Refused(400, "malformed request line")),
    };
    if !version.starts_with(b"HTTP/1.") {
        return Err(Refused(400, "only HTTP/1.x is spoken"));
    }
    if target.len() > MAX_TARGET {
        return Err(Refused(414, "request target too long"));
    }
    if method != b"GET" {
        return Err(Refused(405, "only GET is allowed"));
    }
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    let route = match path {
        b"/metrics" => Some(Route::Metrics),
        b"/healthz" => Some(Route::Health),
        _ => None,
    };
    let mut bearer = None;
    for h in lines {
        if h.is_empty() {
            continue;
        }
        let Some(colon) = h.iter().position(|&b| b == b':') else {
            return Err(Refused(400, "malformed header"));
        };
        let (name, value) = (&h[..colon], trim(&h[colon + 1..]));
        if name.eq_ignore_ascii_case(b"content-length") && value != b"0"
            || name.eq_ignore_ascii_case(b"transfer-encoding")
        {
            return Err(Refused(413, "a request body is not accepted"));
        }
        if name.eq_ignore_ascii_case(b"authorization") {
            if value.len() > 7 && value[..7].eq_ignore_ascii_case(b"bearer ") {
                bearer = Some(trim(&value[7..]));
            } else {
                bearer = Some(&[][..]);
            }
        }
    }
    Ok(Request { route, bearer })
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end.max(start)]
}

/// Compares a presented token with the configured one in time that depends
/// only on their lengths, never on where they first differ.
pub fn token_matches(given: &[u8], want: &[u8]) -> bool {
    let mut diff = (given.len() ^ want.len()) as u8 | u8::from(given.len() != want.len());
    for (i, w) in want.iter().enumerate() {
        diff |= w ^ given.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

/// A worker thread's body: serves until the listener fails.
pub fn serve(listener: TcpListener, shared: Arc<Shared>, token: Arc<Option<Vec<u8>>>) {
    let token = token.as_deref();
    let mut head = vec![0u8; MAX_HEAD];
    let mut body = String::new();
    for conn in listener.incoming() {
        // A failed accept (a client gone before it was taken, fd
        // exhaustion) is counted; the worker pauses before the next try,
        // so exhaustion that persists cannot turn it into a busy loop.
        let stream = match conn {
            Ok(s) => s,
            Err(_) => {
                shared.count_accept_failure();
                std::thread::sleep(std::time::Duration::from_millis(100));
                continue;
            }
        };
        handle(stream, &shared, token, &mut head, &mut body);
    }
}

fn handle(
    mut s: TcpStream,
    shared: &Shared,
    token: Option<&[u8]>,
    head: &mut [u8],
    body: &mut String,
) {
    let started = Instant::now();
    let mut len = 0;
    let end = loop {
        if let Some(i) = find_blank_line(&head[..len]) {
            break i;
        }
        if len == head.len() {
            respond(&mut s, 431, "text/plain", "request head too large\n");
            return;
        }
        let left = READ_DEADLINE.saturating_sub(started.elapsed());
        if left.is_zero() || s.set_read_timeout(Some(left)).is_err() {
            respond(&mut s, 408, "text/plain", "request not received in time\n");
            return;
        }
        match s.read(&mut head[len..]) {
            Ok(0) => return,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => {
                respond(&mut s, 408, "text/plain", "request not received in time\n");
                return;
            }
        }
    };
    shared.count_request();
    let req = match parse_head(&head[..end]) {
        Ok(r) => r,
        Err(Refused(code, why)) => {
            respond(&mut s, code, "text/plain", &format!("{why}\n"));
            return;
        }
    };
    if let Some(want) = token {
        if !req.bearer.is_some_and(|g| token_matches(g, want)) {
            shared.count_unauthorized();
            respond(&mut s, 401, "text/plain", "a bearer token is required\n");
            return;
        }
    }
    match req.route {
        Some(Route::Metrics) => {
            let ok = shared.copy_body(body);
            if ok {
                respond(
                    &mut s,
                    200,
                    "text/plain; version=0.0.4; charset=utf-8",
                    body,
                );
            } else {
                respond(&mut s, 503, "text/plain", "no metrics published yet\n");
            }
        }
        Some(Route::Health) => match shared.health() {
            Ok(()) => respond(&mut s, 200, "text/plain", "ok\n"),
            Err(why) => respond(&mut s, 503, "text/plain", &format!("{why}\n")),
        },
        None => respond(&mut s, 404, "text/plain", "serves /metrics and /healthz\n"),
    }
}

fn find_blank_line(b: &[u8]) -> Option<usize> {
    b.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .or_else(|| b.windows(2).position(|w| w == b"\n\n"))
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    }
}

/// Writes one answer and closes. A client that does not read is cut off by
/// the write timeout; its failure concerns that client only, so it is
/// dropped.
fn respond(s: &mut TcpStream, code: u16, kind: &str, body: &str) {
    let mut head = format!(
        "HTTP/1.1 {code} {}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n",
        reason(code),
        body.len()
    );
    if code == 401 {
        head.push_str("WWW-Authenticate: Bearer\r\n");
    }
    if code == 405 {
        head.push_str("Allow: GET\r\n");
    }
    head.push_str("\r\n");
    if s.set_write_timeout(Some(WRITE_TIMEOUT)).is_err() {
        return;
    }
    let _ = s
        .write_all(head.as_bytes())
        .and_then(|()| s.write_all(body.as_bytes()));
    let _ = s.shutdown(std::net::Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_get_with_bearer() {
        let r = parse_head(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer  abc \r\n")
            .unwrap();
        assert_eq!(r.route, Some(Route::Metrics));
        assert_eq!(r.bearer, Some(&b"abc"[..]));
        let r = parse_head(b"GET /healthz?x=1 HTTP/1.0").unwrap();
        assert_eq!(r.route, Some(Route::Health));
        assert_eq!(parse_head(b"GET /other HTTP/1.1").unwrap().route, None);
    }

    #[test]
    fn refuses_other_methods_bodies_and_junk() {
        assert_eq!(parse_head(b"POST /metrics HTTP/1.1").unwrap_err().0, 405);
        assert_eq!(
            parse_head(b"GET /metrics HTTP/1.1\r\nContent-Length: 5")
                .unwrap_err()
                .0,
            413
        );
        assert_eq!(
            parse_head(b"GET /metrics HTTP/1.1\r\nTransfer-Encoding: chunked")
                .unwrap_err()
                .0,
            413
        );
        let long = format!("GET /{} HTTP/1.1", "a".repeat(MAX_TARGET));
        assert_eq!(parse_head(long.as_bytes()).unwrap_err().0, 414);
        for junk in [
            &b""[..],
            b"GET",
            b"GET / HTTP/1.1 x",
            b"GET / SPDY/3",
            b"GET / HTTP/1.1\r\nnocolon",
            b"\xff\xfe",
        ] {
            assert!(parse_head(junk).is_err(), "{junk:?}");
        }
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(token_matches(b"secret", b"secret"));
        assert!(!token_matches(b"secreT", b"secret"));
        assert!(!token_matches(b"secret1", b"secret"));
        assert!(!token_matches(b"secre", b"secret"));
        assert!(!token_matches(b"", b"secret"));
    }
}
