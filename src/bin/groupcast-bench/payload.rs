//! What a bench message carries, and how receivers account for it.
//!
//! A payload is ASCII (so it travels as a text frame, whichever way it was
//! published): `GCB1`, then fixed-width lowercase hex fields — publisher id
//! (4), group index (8), sequence number within (publisher, group) (16),
//! send time in µs since the bench started (16) — then `.` padding up to
//! the requested size. With `--payload-kind log` the stamp is followed by
//! a task-log-like text line instead of padding (see [`encode_log`]).

/// The first four bytes of every bench payload.
pub const MAGIC: &[u8; 4] = b"GCB1";
/// Bytes before the padding: the smallest payload the bench can send.
pub const HEADER_LEN: usize = 4 + 4 + 8 + 16 + 16;
/// Sequence numbers above this are treated as garbage (bounds the bitsets).
pub const MAX_SEQ: u64 = 1 << 26;

/// The fields a payload carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub publisher: u16,
    pub group: u32,
    pub seq: u64,
    pub sent_us: u64,
}

/// Writes `stamp` padded to `len` bytes (at least [`HEADER_LEN`]) into `out`.
pub fn encode(stamp: &Stamp, len: usize, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(MAGIC);
    put_hex(out, stamp.publisher as u64, 4);
    put_hex(out, stamp.group as u64, 8);
    put_hex(out, stamp.seq, 16);
    put_hex(out, stamp.sent_us, 16);
    out.resize(len.max(HEADER_LEN), b'.');
}

/// What follows the stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PayloadKind {
    /// `.` padding up to --payload bytes.
    Padded,
    /// A task-log-like text line (timestamp, level, task id, a message
    /// that varies per line), about 200 bytes in all; --payload is ignored.
    Log,
}

/// Encodes a payload of `kind` (`len`: the padded size).
pub fn encode_kind(kind: PayloadKind, stamp: &Stamp, len: usize, out: &mut Vec<u8>) {
    match kind {
        PayloadKind::Padded => encode(stamp, len, out),
        PayloadKind::Log => encode_log(stamp, out),
    }
}

/// The stamp, then a log line like
/// ` 2026-12-01T10:00:12.345678Z INFO  task=build-0003-0000 step=2/9 Compiling serde_json v1.0.127 (lib) [412 ms]`:
/// the time is the send time, everything else varies with the sequence
/// number (a hash of it, so consecutive lines differ like real ones).
pub fn encode_log(stamp: &Stamp, out: &mut Vec<u8>) {
    use std::io::Write;
    const LEVELS: [&str; 8] = [
        "INFO ", "INFO ", "INFO ", "DEBUG", "INFO ", "WARN ", "INFO ", "DEBUG",
    ];
    const CRATES: [&str; 8] = [
        "serde_json",
        "tokio",
        "hyper-util",
        "regex-automata",
        "proc-macro2",
        "rustls",
        "tracing-subscriber",
        "aho-corasick",
    ];
    const VERBS: [&str; 4] = ["Compiling", "Checking", "Downloaded", "Running"];
    encode(stamp, HEADER_LEN, out);
    let h = splitmix(stamp.seq ^ ((stamp.group as u64) << 32) ^ stamp.publisher as u64);
    let us = stamp.sent_us;
    let (secs, micros) = (us / 1_000_000, us % 1_000_000);
    let _ = write!(
        out,
        " 2026-12-01T10:{:02}:{:02}.{micros:06}Z {} task=build-{:04x}-{:04x} step={}/{} \
         {} {} v{}.{}.{} (lib{}) [{} ms] worker=ci-runner-{:02} commit={:08x}",
        (secs / 60) % 60,
        secs % 60,
        LEVELS[(h & 7) as usize],
        stamp.group,
        stamp.publisher,
        1 + (h >> 3) % 9,
        10 + (h >> 7) % 5,
        VERBS[((h >> 11) & 3) as usize],
        CRATES[((h >> 13) & 7) as usize],
        (h >> 16) % 3,
        (h >> 18) % 40,
        (h >> 24) % 300,
        if (h >> 33) & 1 == 0 {
            ""
        } else {
            ", build script"
        },
        (h >> 34) % 5000,
        (h >> 46) % 32,
        splitmix(h) as u32,
    );
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Reads a payload; `None` when it is not one of ours.
pub fn decode(bytes: &[u8]) -> Option<Stamp> {
    if bytes.len() < HEADER_LEN || &bytes[..4] != MAGIC {
        return None;
    }
    Some(Stamp {
        publisher: get_hex(&bytes[4..8])? as u16,
        group: get_hex(&bytes[8..16])? as u32,
        seq: get_hex(&bytes[16..32])?,
        sent_us: get_hex(&bytes[32..48])?,
    })
}

fn put_hex(out: &mut Vec<u8>, value: u64, digits: u32) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for i in (0..digits).rev() {
        out.push(HEX[((value >> (4 * i)) & 0xf) as usize]);
    }
}

fn get_hex(bytes: &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for &b in bytes {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => return None,
        };
        value = (value << 4) | digit as u64;
    }
    Some(value)
}

/// One (client, publisher, group) stream: which sequence numbers arrived.
#[derive(Debug, Default, Clone)]
pub struct StreamTracker {
    bits: Vec<u64>,
    /// One past the highest sequence number seen.
    high: u64,
    pub unique: u64,
    pub dups: u64,
    pub out_of_order: u64,
}

impl StreamTracker {
    /// Records one arrival; false when `seq` is out of range (garbage).
    pub fn record(&mut self, seq: u64) -> bool {
        if seq >= MAX_SEQ {
            return false;
        }
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if word >= self.bits.len() {
            self.bits.resize(word + 1, 0);
        }
        let mask = 1u64 << bit;
        if self.bits[word] & mask != 0 {
            self.dups += 1;
            return true;
        }
        self.bits[word] |= mask;
        self.unique += 1;
        if seq < self.high {
            // A later message of this publisher arrived before this one.
            self.out_of_order += 1;
        } else {
            self.high = seq + 1;
        }
        true
    }
}

/// Everything one client saw.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Keyed by (publisher, group): a publisher numbers each group's
    /// messages on their own, and a client may hold several groups.
    streams: Vec<((u16, u32), StreamTracker)>,
    /// Frames that decoded as bench payloads.
    pub delivered: u64,
    /// Frames that did not decode (or carried a garbage sequence number).
    pub invalid: u64,
    /// Payloads addressed to another group than the client's.
    pub misrouted: u64,
}

/// Sums over clients.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub delivered: u64,
    pub unique: u64,
    pub dups: u64,
    pub out_of_order: u64,
    pub invalid: u64,
    pub misrouted: u64,
}

impl Tally {
    /// Accounts for one frame received by a member of `my_group`; returns
    /// the decoded stamp for latency recording.
    pub fn frame(&mut self, bytes: &[u8], my_group: u32) -> Option<Stamp> {
        let Some(stamp) = decode(bytes) else {
            self.invalid += 1;
            return None;
        };
        if stamp.group != my_group {
            self.misrouted += 1;
            return None;
        }
        let key = (stamp.publisher, stamp.group);
        let tracker = match self.streams.iter().position(|(k, _)| *k == key) {
            Some(i) => &mut self.streams[i].1,
            None => {
                self.streams.push((key, StreamTracker::default()));
                &mut self.streams.last_mut().expect("just pushed").1
            }
        };
        if !tracker.record(stamp.seq) {
            self.invalid += 1;
            return None;
        }
        self.delivered += 1;
        Some(stamp)
    }

    pub fn add_to(&self, totals: &mut Totals) {
        totals.delivered += self.delivered;
        totals.invalid += self.invalid;
        totals.misrouted += self.misrouted;
        for (_, s) in &self.streams {
            totals.unique += s.unique;
            totals.dups += s.dups;
            totals.out_of_order += s.out_of_order;
        }
    }
}

/// Deliveries expected: members of each group times messages sent to it.
pub fn expected(members: &[u64], sent: &[u64]) -> u64 {
    members.iter().zip(sent).map(|(m, s)| m * s).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_pads() {
        let stamp = Stamp {
            publisher: 3,
            group: 999,
            seq: 123_456,
            sent_us: 987_654_321,
        };
        let mut out = Vec::new();
        encode(&stamp, 64, &mut out);
        assert_eq!(out.len(), 64);
        assert!(std::str::from_utf8(&out).is_ok());
        assert_eq!(decode(&out), Some(stamp));
        encode(&stamp, 10, &mut out);
        assert_eq!(out.len(), HEADER_LEN);
        assert_eq!(decode(&out), Some(stamp));
    }

    #[test]
    fn log_lines_carry_the_stamp_and_vary() {
        let mut a = Vec::new();
        let mut b = Vec::new();
        let stamp = |seq| Stamp {
            publisher: 1,
            group: 2,
            seq,
            sent_us: 3_723_000_001,
        };
        encode_log(&stamp(7), &mut a);
        encode_log(&stamp(8), &mut b);
        assert_eq!(decode(&a), Some(stamp(7)));
        assert_eq!(decode(&b), Some(stamp(8)));
        assert_ne!(a[HEADER_LEN..], b[HEADER_LEN..]);
        for line in [&a, &b] {
            let text = std::str::from_utf8(line).unwrap();
            assert!(
                (150..=260).contains(&line.len()),
                "{} B: {text}",
                line.len()
            );
            assert!(text.contains("T10:02:03.000001Z"), "{text}");
        }
    }

    #[test]
    fn rejects_foreign_payloads() {
        assert_eq!(decode(b"hello"), None);
        let mut out = Vec::new();
        encode(
            &Stamp {
                publisher: 0,
                group: 0,
                seq: 0,
                sent_us: 0,
            },
            64,
            &mut out,
        );
        out[20] = b'z';
        assert_eq!(decode(&out), None);
    }

    #[test]
    fn counts_dups_gaps_and_reordering() {
        let mut t = StreamTracker::default();
        for seq in [0, 1, 3, 2, 2, 5, 0] {
            assert!(t.record(seq));
        }
        assert_eq!(t.unique, 5); // 0 1 2 3 5; 4 is lost
        assert_eq!(t.dups, 2); // the second 2, the second 0
        assert_eq!(t.out_of_order, 1); // 2 after 3
        assert!(!t.record(MAX_SEQ));
    }

    #[test]
    fn tally_separates_publishers_and_groups() {
        let mut tally = Tally::default();
        let mut buf = Vec::new();
        let mut send = |tally: &mut Tally, publisher, group, seq| {
            let stamp = Stamp {
                publisher,
                group,
                seq,
                sent_us: 1,
            };
            encode(&stamp, 64, &mut buf);
            tally.frame(&buf, 7)
        };
        assert!(send(&mut tally, 0, 7, 0).is_some());
        assert!(send(&mut tally, 1, 7, 0).is_some()); // another publisher: not a dup
        assert!(send(&mut tally, 1, 7, 0).is_some()); // a dup
        assert!(send(&mut tally, 0, 8, 1).is_none()); // wrong group
        assert!(tally.frame(b"junk", 7).is_none());
        let mut totals = Totals::default();
        tally.add_to(&mut totals);
        assert_eq!(
            totals,
            Totals {
                delivered: 3,
                unique: 2,
                dups: 1,
                out_of_order: 0,
                invalid: 1,
                misrouted: 1,
            }
        );
        assert_eq!(expected(&[2, 3], &[10, 1]), 23);
    }
}
