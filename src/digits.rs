//! The one parser of unsigned decimal numbers from outside input (/proc
//! files, cgroup files, passwd, group names): ASCII digits only, no sign,
//! no spaces, no overflow, never a panic.

/// `v` in decimal, written at the end of `buf`: the digits, no allocation
/// (paths under /proc built on the loop).
pub fn format_u32(buf: &mut [u8; 10], v: u32) -> &[u8] {
    let mut at = buf.len();
    let mut n = v;
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[at..]
}

/// `b` as a number: 1 to 20 ASCII digits that fit in 64 bits.
pub fn parse_u64(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    Some(v)
}

/// `b` as a number that fits in 32 bits.
pub fn parse_u32(b: &[u8]) -> Option<u32> {
    parse_u64(b).and_then(|v| u32::try_from(v).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_every_width() {
        let mut b = [0u8; 10];
        for v in [0u32, 7, 10, 4_194_304, u32::MAX] {
            assert_eq!(format_u32(&mut b, v), v.to_string().as_bytes());
        }
    }

    #[test]
    fn digits_only_and_no_overflow() {
        assert_eq!(parse_u64(b"0"), Some(0));
        assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_u64(b"18446744073709551616"), None);
        assert_eq!(parse_u64(b"000000000000000000001"), None);
        for bad in [&b""[..], b"-1", b"+1", b" 1", b"1 ", b"1a", b"\xff"] {
            assert_eq!(parse_u64(bad), None, "{bad:?}");
        }
        assert_eq!(parse_u32(b"4294967295"), Some(u32::MAX));
        assert_eq!(parse_u32(b"4294967296"), None);
    }
}
