//! The compressor and the inflater of `wire::deflate`, against an
//! inflater that shares no code with ours, whatever the buffers' first
//! sizes: the generators and the independent inflater are the fuzz
//! target's (`fuzz/checks.rs`).

use groupcast::wire::deflate::{InflateError, compress, compress_with, inflate, inflate_with};

use crate::checks::{half_compressible, independently_inflated};

/// Autobahn 12.2.9 and 12.5.x: 64 KiB and 128 KiB messages that
/// compress to more than the first output buffer came back shorter
/// (61,548 of 65,536 bytes): the compressor stopped before its flush
/// was complete.
#[test]
fn messages_that_outgrow_the_first_buffer_are_compressed_whole() {
    for noise in [60, 80, 90] {
        for len in [65_536, 131_072, 262_144] {
            let payload = half_compressible(noise * 7 + len as u64, len, noise);
            let compressed = compress(&payload).expect("compressible: sent compressed");
            assert_eq!(
                independently_inflated(&compressed).len(),
                len,
                "noise {noise}%, {len} bytes"
            );
            assert_eq!(independently_inflated(&compressed), payload);
            assert_eq!(inflate(&compressed, len).unwrap(), payload);
        }
    }
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Arbitrary bytes, or bytes of some structure (runs and noise):
    /// random bytes alone never compress, and then nothing is tested.
    fn payloads() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..4096),
            (any::<u64>(), 0usize..300_000, 0u64..=100)
                .prop_map(|(seed, len, noise)| half_compressible(seed, len, noise)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        /// Whatever the input and the first buffer's size, what we
        /// compress inflates, by another implementation, to the input.
        /// (The bytes may differ by an empty block: see `compress_with`.)
        #[test]
        fn compressed_messages_inflate_to_the_input_whatever_the_buffer(
            payload in payloads(),
            capacity in prop_oneof![1usize..512, 0usize..400_000],
        ) {
            if let Some(compressed) = compress_with(&payload, capacity) {
                prop_assert!(compressed.len() < payload.len());
                prop_assert_eq!(&independently_inflated(&compressed), &payload);
            }
        }

        /// A compressible message is sent compressed, whatever the
        /// first buffer's size: the compressor never gives up midway.
        #[test]
        fn compressible_messages_are_sent_compressed_whatever_the_buffer(
            seed in any::<u64>(),
            len in 1024usize..300_000,
            noise in 0u64..=80,
            capacity in prop_oneof![1usize..512, 0usize..400_000],
        ) {
            let payload = half_compressible(seed, len, noise);
            let compressed = compress_with(&payload, capacity);
            prop_assert!(compressed.is_some(), "{len} bytes, {noise}% noise: not compressed");
            prop_assert_eq!(&independently_inflated(&compressed.unwrap_or_default()), &payload);
        }

        /// Our inflater reads every message whole, whatever its first
        /// buffer, and stops at the limit.
        #[test]
        fn inflated_messages_are_whole_whatever_the_buffer(
            payload in payloads(),
            capacity in prop_oneof![1usize..512, 0usize..400_000],
            limit_cut in 0usize..64,
        ) {
            let Some(compressed) = compress(&payload) else { return Ok(()) };
            prop_assert_eq!(
                &inflate_with(&compressed, payload.len(), capacity).unwrap(),
                &payload
            );
            if limit_cut > 0 && payload.len() >= limit_cut {
                let limit = payload.len() - limit_cut;
                prop_assert_eq!(
                    inflate_with(&compressed, limit, capacity),
                    Err(InflateError::TooBig { limit })
                );
            }
        }
    }
}
