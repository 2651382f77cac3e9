//! How a webhook request proves it comes from groupcast, and is not a
//! replay of an old one.
//!
//! The node signs `"<timestamp>.<body>"` with HMAC-SHA256 under the shared
//! secret (`--webhook-secret`) and sends
//!
//! ```text
//! X-Groupcast-Timestamp: 1796640000          (Unix seconds, when it was sent)
//! X-Groupcast-Signature: v1=<64 hex digits>
//! ```
//!
//! A receiver recomputes the HMAC over the timestamp header, a dot and the
//! raw body, compares in constant time, and rejects a timestamp older than
//! a few minutes: the signature then also covers *when*, so a recorded
//! request cannot be replayed later (the scheme Stripe and Slack use).
//! Every attempt of a retried event is signed afresh with its own
//! timestamp; its `id` stays the same, for deduplication.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "x-groupcast-signature";
/// The header that carries the signing time (Unix seconds).
pub const TIMESTAMP_HEADER: &str = "x-groupcast-timestamp";

/// `v1=<hex of HMAC-SHA256(secret, "<timestamp>.<body>")>`.
pub fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    format!("v1={}", hex_of(&mac(secret, timestamp, body)))
}

/// Whether `signature` (the header's value) signs `body` at `timestamp`
/// under `secret`, and `timestamp` is within `tolerance_secs` of `now`.
/// What a receiver runs; groupcast's tests run it on what they receive.
pub fn verify(
    secret: &[u8],
    timestamp: u64,
    body: &[u8],
    signature: &str,
    now: u64,
    tolerance_secs: u64,
) -> bool {
    if now.abs_diff(timestamp) > tolerance_secs {
        return false;
    }
    let Some(hex) = signature.strip_prefix("v1=") else {
        return false;
    };
    let expected = hex_of(&mac(secret, timestamp, body));
    expected.as_bytes().ct_eq(hex.as_bytes()).into()
}

fn mac(secret: &[u8], timestamp: u64, body: &[u8]) -> Vec<u8> {
    // HMAC takes a key of any length: `new_from_slice` cannot fail for it.
    let mut mac = match HmacSha256::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of every length"),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_for_its_secret_body_and_time() {
        let signature = sign(b"secret", 1000, b"{\"a\":1}");
        assert!(signature.starts_with("v1=") && signature.len() == 67);
        assert!(verify(b"secret", 1000, b"{\"a\":1}", &signature, 1010, 300));
        assert!(!verify(b"other", 1000, b"{\"a\":1}", &signature, 1010, 300));
        assert!(!verify(
            b"secret",
            1000,
            b"{\"a\":2}",
            &signature,
            1010,
            300
        ));
        assert!(!verify(
            b"secret",
            1001,
            b"{\"a\":1}",
            &signature,
            1010,
            300
        ));
        assert!(
            !verify(b"secret", 1000, b"{\"a\":1}", &signature, 2000, 300),
            "too old"
        );
        assert!(!verify(b"secret", 1000, b"{\"a\":1}", "v2=00", 1010, 300));
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Against an independent computation:
        // `printf '1.x' | openssl dgst -sha256 -hmac key`.
        assert_eq!(
            sign(b"key", 1, b"x"),
            "v1=fc4913c41a7bf793267e2a384f3261c9436ec2cd097bd745e7b0d99113f510ec"
        );
    }
}
