//! Which shard a group is on: jump consistent hash (Lamping and Veach,
//! 2014) of FNV-1a-64 of the group's name.
//!
//! Why these two: FNV-1a is tiny, has no seed (every node, every language,
//! every release computes the same value) and spreads short names well;
//! jump hash needs no ring or table, and when a shard is added *at the end*
//! only about 1/N of the groups move, all of them to the new shard. Both
//! are what Centrifugo uses for the same job, so an operator who knows one
//! knows the other. The shard list's order is therefore part of the
//! deployment: add shards at the end, never reorder or remove one in the
//! middle (that moves most groups).

/// FNV-1a, 64-bit, of `bytes`.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .iter()
        .fold(OFFSET, |hash, &b| (hash ^ u64::from(b)).wrapping_mul(PRIME))
}

/// Jump consistent hash: the bucket in `0..buckets` of `key`. `buckets`
/// of 0 is treated as 1 (there is always a bucket 0).
pub fn jump(mut key: u64, buckets: u32) -> u32 {
    let buckets = i64::from(buckets.max(1));
    let mut b: i64 = -1;
    let mut j: i64 = 0;
    while j < buckets {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        // The paper's arithmetic, in f64 as in its reference code.
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    // 0 <= b < buckets <= u32::MAX.
    u32::try_from(b).unwrap_or(0)
}

/// The shard of `name` among `shards`.
pub fn shard_of(name: &str, shards: usize) -> usize {
    let shards = u32::try_from(shards).unwrap_or(u32::MAX);
    jump(fnv1a64(name.as_bytes()), shards) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_matches_the_reference_vectors() {
        // From the FNV reference test suite (draft-eastlake-fnv).
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn jump_matches_the_reference_vectors() {
        // The vectors every port of the paper's code tests against.
        assert_eq!(jump(1, 1), 0);
        assert_eq!(jump(42, 57), 43);
        assert_eq!(jump(0xDEAD_10CC, 1), 0);
        assert_eq!(jump(0xDEAD_10CC, 666), 361);
        assert_eq!(jump(256, 1024), 520);
        assert_eq!(jump(7, 0), 0, "no buckets counts as one");
    }

    #[test]
    fn groups_spread_evenly_and_adding_a_shard_moves_about_one_in_n() {
        let names: Vec<String> = (0..10_000).map(|i| format!("task/{i}")).collect();
        for shards in [2usize, 3, 4, 8] {
            let mut per_shard = vec![0usize; shards];
            let mut moved = 0usize;
            for name in &names {
                let before = shard_of(name, shards);
                per_shard[before] += 1;
                let after = shard_of(name, shards + 1);
                if after != before {
                    assert_eq!(after, shards, "a group only ever moves to the new shard");
                    moved += 1;
                }
            }
            let expected = names.len() / shards;
            for (shard, &n) in per_shard.iter().enumerate() {
                assert!(
                    n.abs_diff(expected) < expected / 10,
                    "shard {shard} of {shards} has {n} of {} groups",
                    names.len()
                );
            }
            let ideal = names.len() / (shards + 1);
            assert!(
                moved.abs_diff(ideal) < ideal / 10,
                "{moved} of {} groups moved going from {shards} to {} shards (ideal {ideal})",
                names.len(),
                shards + 1
            );
        }
    }
}
