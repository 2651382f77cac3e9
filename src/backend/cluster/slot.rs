//! Redis Cluster hash slots: which of the 16,384 slots a key or a shard
//! channel is in.
//!
//! The node needs this itself, not only through the library: its
//! subscriber sends every SSUBSCRIBE to the primary of the channel's slot,
//! one slot per command, and its publisher splits a batch into one
//! pipeline per slot (a cluster pipeline must stay in one slot). The rule
//! is Redis's: CRC16 (XMODEM) of the key, or of the part between the first
//! `{` and the next `}` when that part is not empty, modulo 16,384.

/// The number of hash slots of a Redis Cluster.
pub const SLOTS: u16 = 16_384;

/// CRC16, XMODEM variant (polynomial 0x1021, initial value 0), as Redis
/// Cluster computes it.
pub fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The hash tag of `key`: what lies between its first `{` and the next
/// `}`, if that is not empty.
fn hash_tag(key: &[u8]) -> Option<&[u8]> {
    let open = key.iter().position(|&b| b == b'{')?;
    let rest = &key[open + 1..];
    let close = rest.iter().position(|&b| b == b'}')?;
    (close > 0).then(|| &rest[..close])
}

/// The slot of `key` (a key or a shard channel name).
pub fn slot(key: &[u8]) -> u16 {
    crc16(hash_tag(key).unwrap_or(key)) % SLOTS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_is_xmodem() {
        // The check value of CRC-16/XMODEM.
        assert_eq!(crc16(b"123456789"), 0x31c3);
        assert_eq!(crc16(b""), 0);
    }

    #[test]
    fn slots_are_what_cluster_keyslot_answers() {
        // `CLUSTER KEYSLOT` values from the Redis documentation.
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"bar"), 5061);
        assert_eq!(slot(b"hello"), 866);
        assert_eq!(slot(b"somekey"), 11058);
    }

    #[test]
    fn hash_tags_choose_the_slot() {
        assert_eq!(slot(b"{user1000}.following"), slot(b"{user1000}.followers"));
        assert_eq!(slot(b"x:{group:a}"), slot(b"group:a"));
        // An empty tag, or no closing brace: the whole key counts.
        assert_eq!(slot(b"{}foo"), crc16(b"{}foo") % SLOTS);
        assert_eq!(slot(b"{foo"), crc16(b"{foo") % SLOTS);
        // Only the first tag counts.
        assert_eq!(slot(b"{a}{b}"), slot(b"a"));
    }
}
