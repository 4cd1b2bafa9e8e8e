//! The getdents64 buffer parser reeve lists /proc with: any bytes (a record
//! length the kernel would never write included) give a finite walk that
//! never reads past the buffer, at most one entry per 19-byte header, with
//! names that hold no NUL.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reeve::sys::DirentIter;

fuzz_target!(|data: &[u8]| {
    let mut n = 0usize;
    let mut name_bytes = 0usize;
    for d in DirentIter::new(data) {
        n += 1;
        name_bytes += d.name.len();
        assert!(!d.name.contains(&0), "a name ends at its NUL");
        assert!(n <= data.len() / 19, "more entries than headers fit");
    }
    assert!(name_bytes <= data.len());
});
