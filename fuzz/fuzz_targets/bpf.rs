//! What network limits read from outside: the verifier's log (kernel
//! text), a `BPF_PROG_QUERY` answer and the kernel's account of a program
//! and a map (kernel numbers and names), a bucket map's value (kernel
//! bytes), and the limit text (config, command line). Every parser must
//! return, never panic, and a program or map is taken as reeve's only
//! when it is exactly what reeve loads.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reeve::cgroup::net::query::{bucket_map_of, check_bucket_map, listed};
use reeve::cgroup::net::{self, bucket::Bucket, bucket::VALUE_SIZE, Direction};
use reeve::sys::{BpfMapInfo, BpfProgInfo, BPF_OBJ_NAME_LEN};

fuzz_target!(|data: &[u8]| {
    let tail = net::log_tail(data);
    assert!(!tail.contains('\n'), "the log tail is one line");
    if let Ok(value) = <[u8; VALUE_SIZE]>::try_from(&data[..VALUE_SIZE.min(data.len())]) {
        // A map value reads as six words and writes back the same bytes.
        assert_eq!(Bucket::from_bytes(&value).to_bytes(), value);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        // A parsed limit prints as text that parses to the same limit.
        if let Ok(rate) = reeve::cgroup::parse::parse_net(text) {
            assert_eq!(reeve::cgroup::parse::parse_net(&rate.to_string()), Ok(rate));
        }
    }
    query(data);
});

/// The kernel's answers, taken from `data`: the first word is the query's
/// count, the words after it the ids, the first half of the bytes the
/// program's name, the second half the map's, the last byte how many of
/// the ids the program uses as maps (0 to 2).
fn query(data: &[u8]) {
    let word = |i: usize| {
        data.get(i * 4..i * 4 + 4)
            .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let count = word(0) as usize;
    let ids: Vec<u32> = (1..data.len() / 4).map(word).collect();
    let shown = listed(count, &ids);
    assert!(shown.len() <= ids.len() && shown.len() <= count);
    let dir = if data.first().is_some_and(|b| b & 1 == 1) {
        Direction::Rx
    } else {
        Direction::Tx
    };
    let (a, b) = data.split_at(data.len() / 2);
    let name = |x: &[u8]| -> Vec<u8> {
        x.iter()
            .copied()
            .take(BPF_OBJ_NAME_LEN - 1)
            .take_while(|&c| c != 0)
            .collect()
    };
    let prog = BpfProgInfo {
        id: word(1),
        prog_type: word(2),
        name: name(a),
        map_ids: shown
            .iter()
            .copied()
            .take(usize::from(data.last().map_or(0, |b| b % 3)))
            .collect(),
    };
    let Some(found) = bucket_map_of(dir, &prog) else {
        assert_ne!(
            prog.name,
            dir.name(),
            "a program named as reeve's was passed over"
        );
        return;
    };
    let Ok(id) = found else {
        assert_ne!(prog.map_ids.len(), 1);
        return;
    };
    assert_eq!(prog.name, dir.name());
    assert_eq!(prog.map_ids, [id]);
    let map = BpfMapInfo {
        id,
        map_type: word(3),
        key_size: word(4),
        value_size: word(5),
        max_entries: word(6),
        name: name(b),
    };
    if check_bucket_map(dir, id, &map).is_ok() {
        assert_eq!(map.name, dir.name());
        assert_eq!(map.value_size as usize, VALUE_SIZE);
    }
}
