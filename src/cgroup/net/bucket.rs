//! The token bucket's map value: six 64-bit words in the host's byte
//! order, read and written whole by reeve and field by field (atomically)
//! by the program.
//!
//! Invariant: the offsets here are the ones the program in [`super::asm`]
//! is assembled with; `tokens` is signed (a racing CPU may overdraw it).

/// Bytes per second.
pub const RATE: i16 = 0;
/// The most tokens the bucket holds, in bytes.
pub const BURST: i16 = 8;
/// Tokens in bytes, signed.
pub const TOKENS: i16 = 16;
/// bpf_ktime_get_ns() of the last refill (CLOCK_MONOTONIC).
pub const LAST_NS: i16 = 24;
/// Bytes of packets passed.
pub const PASSED: i16 = 32;
/// Bytes of packets dropped.
pub const DROPPED: i16 = 40;
/// The value's size.
pub const VALUE_SIZE: usize = 48;

/// One direction's bucket as the map holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Bucket {
    pub rate: u64,
    pub burst: u64,
    pub tokens: i64,
    pub last_ns: u64,
    pub passed: u64,
    pub dropped: u64,
}

impl Bucket {
    /// A full bucket for `rate` and `burst`, never refilled.
    pub fn full(rate: u64, burst: u64) -> Bucket {
        Bucket {
            rate,
            burst,
            tokens: i64::try_from(burst).unwrap_or(i64::MAX),
            ..Bucket::default()
        }
    }

    pub fn to_bytes(self) -> [u8; VALUE_SIZE] {
        let mut b = [0u8; VALUE_SIZE];
        let words = [
            (RATE, self.rate),
            (BURST, self.burst),
            (TOKENS, self.tokens as u64),
            (LAST_NS, self.last_ns),
            (PASSED, self.passed),
            (DROPPED, self.dropped),
        ];
        for (off, v) in words {
            let off = off as usize;
            b[off..off + 8].copy_from_slice(&v.to_ne_bytes());
        }
        b
    }

    pub fn from_bytes(b: &[u8; VALUE_SIZE]) -> Bucket {
        let word = |off: i16| {
            let off = off as usize;
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[off..off + 8]);
            u64::from_ne_bytes(w)
        };
        Bucket {
            rate: word(RATE),
            burst: word(BURST),
            tokens: word(TOKENS) as i64,
            last_ns: word(LAST_NS),
            passed: word(PASSED),
            dropped: word(DROPPED),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_layout_is_six_words_at_fixed_offsets() {
        let b = Bucket {
            rate: 2 << 20,
            burst: 512 << 10,
            tokens: -3,
            last_ns: 0x0102_0304_0506_0708,
            passed: 7,
            dropped: 9,
        };
        let bytes = b.to_bytes();
        assert_eq!(&bytes[0..8], &(2u64 << 20).to_ne_bytes());
        assert_eq!(&bytes[8..16], &(512u64 << 10).to_ne_bytes());
        assert_eq!(&bytes[16..24], &(-3i64).to_ne_bytes());
        assert_eq!(&bytes[24..32], &0x0102_0304_0506_0708u64.to_ne_bytes());
        assert_eq!(&bytes[32..40], &7u64.to_ne_bytes());
        assert_eq!(&bytes[40..48], &9u64.to_ne_bytes());
        assert_eq!(Bucket::from_bytes(&bytes), b);
        let full = Bucket::full(100, 64 << 10);
        assert_eq!((full.tokens, full.last_ns, full.passed), (64 << 10, 0, 0));
    }
}
