//! What the kernel says about the programs attached to a group, read as
//! reeve's or not: the ids a `BPF_PROG_QUERY` listed, a program's name and
//! maps, a map's name and value size. Pure functions of the kernel's
//! answers, so they are tested and fuzzed without a kernel.
//!
//! Invariant: a map's value is read as a bucket only after the program is
//! named as reeve's for that direction, uses exactly one map, and that map
//! is named as reeve's with the bucket's value size.

use std::io;

use super::{bucket, Direction};
use crate::sys::{BpfMapInfo, BpfProgInfo};

pub(super) fn invalid(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

/// The ids a query listed: the kernel says how many programs are attached,
/// which may be more than `ids` had room for.
pub fn listed(count: usize, ids: &[u32]) -> &[u32] {
    &ids[..count.min(ids.len())]
}

/// The map holding the bucket of a program of reeve's for `dir`: `None`
/// when the program is not reeve's (by name), an error when it is named
/// as reeve's but does not use exactly one map.
pub fn bucket_map_of(dir: Direction, info: &BpfProgInfo) -> Option<Result<u32, String>> {
    if info.name != dir.name() {
        return None;
    }
    Some(match info.map_ids.as_slice() {
        [id] => Ok(*id),
        other => Err(format!(
            "program {} ({}) uses {} maps, not one",
            info.id,
            String::from_utf8_lossy(dir.name()),
            other.len()
        )),
    })
}

/// Checks that map `id`, as the kernel describes it, is a bucket of
/// reeve's for `dir` before its value is read as one.
pub fn check_bucket_map(dir: Direction, id: u32, info: &BpfMapInfo) -> Result<(), String> {
    if info.name != dir.name() || info.value_size as usize != bucket::VALUE_SIZE {
        return Err(format!(
            "map {id} is not a bucket of reeve's ({} bytes, name {:?})",
            info.value_size,
            String::from_utf8_lossy(&info.name)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prog(name: &[u8], maps: &[u32]) -> BpfProgInfo {
        BpfProgInfo {
            id: 9,
            prog_type: 8,
            name: name.to_vec(),
            map_ids: maps.to_vec(),
        }
    }

    fn map(name: &[u8], value_size: u32) -> BpfMapInfo {
        BpfMapInfo {
            id: 4,
            map_type: 2,
            key_size: 4,
            value_size,
            max_entries: 1,
            name: name.to_vec(),
        }
    }

    #[test]
    fn a_query_lists_at_most_what_it_had_room_for() {
        let ids = [1, 2, 3];
        assert_eq!(listed(0, &ids), &[] as &[u32]);
        assert_eq!(listed(2, &ids), &[1, 2]);
        assert_eq!(listed(70, &ids), &[1, 2, 3]);
    }

    #[test]
    fn only_a_program_named_for_the_direction_with_one_map_has_a_bucket() {
        assert_eq!(
            bucket_map_of(Direction::Tx, &prog(b"reeve_net_tx", &[4])),
            Some(Ok(4))
        );
        assert_eq!(
            bucket_map_of(Direction::Rx, &prog(b"reeve_net_tx", &[4])),
            None
        );
        assert_eq!(bucket_map_of(Direction::Tx, &prog(b"other", &[4])), None);
        let two = bucket_map_of(Direction::Tx, &prog(b"reeve_net_tx", &[4, 5]));
        assert_eq!(
            two,
            Some(Err(
                "program 9 (reeve_net_tx) uses 2 maps, not one".to_string()
            ))
        );
        assert!(matches!(
            bucket_map_of(Direction::Rx, &prog(b"reeve_net_rx", &[])),
            Some(Err(_))
        ));
    }

    #[test]
    fn a_map_is_read_as_a_bucket_only_by_its_name_and_size() {
        let size = bucket::VALUE_SIZE as u32;
        assert_eq!(
            check_bucket_map(Direction::Tx, 4, &map(b"reeve_net_tx", size)),
            Ok(())
        );
        assert!(check_bucket_map(Direction::Tx, 4, &map(b"reeve_net_rx", size)).is_err());
        let small = check_bucket_map(Direction::Rx, 4, &map(b"reeve_net_rx", 8));
        assert_eq!(
            small,
            Err("map 4 is not a bucket of reeve's (8 bytes, name \"reeve_net_rx\")".to_string())
        );
    }
}
