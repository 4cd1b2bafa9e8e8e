//! The heartbeat frame: 64 bytes, little-endian, fixed layout (see
//! docs/PROTOCOL.md). [`decode`] is a pure function that checks size,
//! magic, version, status and the reserved bytes and never panics (fuzzed
//! by fuzz/fuzz_targets/frame.rs); [`encode`] writes the same layout.
//!
//! ```text
//! offset size field
//!  0      4   magic      b"RVHB"
//!  4      2   version    1
//!  6      1   status     0 ok, 1 degraded, 2 critical, 3 stopping
//!  7      1   reserved   0
//!  8      4   pid        the sender's own pid (must equal the kernel's)
//! 12      4   reserved   0
//! 16      8   nonce      strictly increasing (serial-number order)
//! 24      8   timestamp  sender's CLOCK_REALTIME, ns since the epoch
//! 32     32   payload    opaque to reeve (e.g. frames encoded so far)
//! ```

use std::fmt;

/// Every frame is exactly this long; any other size is rejected.
pub const FRAME_LEN: usize = 64;
pub const MAGIC: [u8; 4] = *b"RVHB";
pub const VERSION: u16 = 1;
pub const PAYLOAD_LEN: usize = 32;

/// What the sender says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Degraded,
    Critical,
    /// The sender is shutting down on purpose: silence after it is not a
    /// stall.
    Stopping,
}

impl Status {
    pub const ALL: [Status; 4] = [
        Status::Ok,
        Status::Degraded,
        Status::Critical,
        Status::Stopping,
    ];

    pub fn code(self) -> u8 {
        match self {
            Status::Ok => 0,
            Status::Degraded => 1,
            Status::Critical => 2,
            Status::Stopping => 3,
        }
    }

    pub fn from_code(code: u8) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.code() == code)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Degraded => "degraded",
            Status::Critical => "critical",
            Status::Stopping => "stopping",
        }
    }

    pub fn from_name(name: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// One decoded frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    pub status: Status,
    pub pid: u32,
    pub nonce: u64,
    pub timestamp_ns: u64,
    pub payload: [u8; PAYLOAD_LEN],
}

/// Why a datagram is not a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    Size(usize),
    Magic,
    Version(u16),
    Status(u8),
    Reserved,
}

impl FrameError {
    /// The rejection reason it is counted under.
    pub fn reason(self) -> &'static str {
        match self {
            FrameError::Size(_) => "size",
            FrameError::Magic => "magic",
            FrameError::Version(_) => "version",
            FrameError::Status(_) | FrameError::Reserved => "malformed",
        }
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Size(n) => write!(f, "{n} bytes; a frame is {FRAME_LEN}"),
            FrameError::Magic => f.write_str("bad magic; a frame starts with RVHB"),
            FrameError::Version(v) => write!(f, "version {v}; this reeve speaks {VERSION}"),
            FrameError::Status(s) => write!(f, "unknown status code {s}"),
            FrameError::Reserved => f.write_str("reserved bytes are not zero"),
        }
    }
}

fn le_u32(b: &[u8; FRAME_LEN], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le_u64(b: &[u8; FRAME_LEN], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Decodes one datagram.
pub fn decode(bytes: &[u8]) -> Result<Frame, FrameError> {
    let b: &[u8; FRAME_LEN] = bytes
        .try_into()
        .map_err(|_| FrameError::Size(bytes.len()))?;
    if b[..4] != MAGIC {
        return Err(FrameError::Magic);
    }
    let version = u16::from_le_bytes([b[4], b[5]]);
    if version != VERSION {
        return Err(FrameError::Version(version));
    }
    let status = Status::from_code(b[6]).ok_or(FrameError::Status(b[6]))?;
    if b[7] != 0 || le_u32(b, 12) != 0 {
        return Err(FrameError::Reserved);
    }
    let mut payload = [0u8; PAYLOAD_LEN];
    payload.copy_from_slice(&b[32..64]);
    Ok(Frame {
        status,
        pid: le_u32(b, 8),
        nonce: le_u64(b, 16),
        timestamp_ns: le_u64(b, 24),
        payload,
    })
}

/// Encodes a frame.
pub fn encode(f: &Frame) -> [u8; FRAME_LEN] {
    let mut b = [0u8; FRAME_LEN];
    b[..4].copy_from_slice(&MAGIC);
    b[4..6].copy_from_slice(&VERSION.to_le_bytes());
    b[6] = f.status.code();
    b[8..12].copy_from_slice(&f.pid.to_le_bytes());
    b[16..24].copy_from_slice(&f.nonce.to_le_bytes());
    b[24..32].copy_from_slice(&f.timestamp_ns.to_le_bytes());
    b[32..].copy_from_slice(&f.payload);
    b
}

/// Whether `nonce` comes after `last` in serial-number order (RFC 1982
/// over u64): the forward distance is 1 ..= 2^63 - 1. A sender that wraps
/// from u64::MAX to 0 stays in order; a frame up to 2^63 behind is a replay.
pub fn nonce_after(nonce: u64, last: u64) -> bool {
    let d = nonce.wrapping_sub(last);
    d != 0 && d < (1 << 63)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Frame {
        Frame {
            status: Status::Degraded,
            pid: 4242,
            nonce: 7,
            timestamp_ns: 1_700_000_000_000_000_000,
            payload: [9; PAYLOAD_LEN],
        }
    }

    #[test]
    fn round_trip_and_layout() {
        let f = sample();
        let b = encode(&f);
        assert_eq!(&b[..4], b"RVHB");
        assert_eq!(b[4..6], [1, 0]);
        assert_eq!(b[6], 1);
        assert_eq!(b[8..12], 4242u32.to_le_bytes());
        assert_eq!(b[16], 7);
        assert_eq!(decode(&b), Ok(f));
        for s in Status::ALL {
            assert_eq!(Status::from_code(s.code()), Some(s));
            assert_eq!(Status::from_name(s.as_str()), Some(s));
        }
    }

    #[test]
    fn each_defect_is_named() {
        let good = encode(&sample());
        assert_eq!(decode(&good[..63]), Err(FrameError::Size(63)));
        assert_eq!(decode(&[0u8; 65]), Err(FrameError::Size(65)));
        assert_eq!(decode(&[]), Err(FrameError::Size(0)));
        let mut b = good;
        b[0] = b'X';
        assert_eq!(decode(&b), Err(FrameError::Magic));
        let mut b = good;
        b[4] = 2;
        assert_eq!(decode(&b), Err(FrameError::Version(2)));
        let mut b = good;
        b[6] = 4;
        assert_eq!(decode(&b), Err(FrameError::Status(4)));
        let mut b = good;
        b[7] = 1;
        assert_eq!(decode(&b), Err(FrameError::Reserved));
        let mut b = good;
        b[13] = 1;
        assert_eq!(decode(&b), Err(FrameError::Reserved));
        assert_eq!(FrameError::Magic.reason(), "magic");
        assert!(!FrameError::Size(3).to_string().contains('\n'));
    }

    #[test]
    fn nonces_in_serial_order_with_wrap() {
        assert!(nonce_after(2, 1));
        assert!(!nonce_after(1, 1), "a replay");
        assert!(!nonce_after(1, 2), "out of order");
        assert!(nonce_after(0, u64::MAX), "wrap");
        assert!(nonce_after(5, u64::MAX - 5), "wrap");
        assert!(!nonce_after(u64::MAX, 0), "behind across the wrap");
        assert!(nonce_after(1 << 62, 0));
        assert!(!nonce_after(1 << 63, 0), "half the space away is not after");
    }
}
