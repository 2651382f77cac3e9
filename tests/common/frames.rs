//! WebSocket frames written by hand, byte for byte, for tests that send
//! what a library client would not (or not in that shape).

/// One client frame: `first` as its first byte (FIN, RSV1-3, opcode),
/// masked with `key`, its length in the shortest encoding (7 bits, 16 or
/// 64), then the masked `payload`.
pub fn masked_client_frame(first: u8, key: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    match payload.len() {
        len @ 0..126 => out.push(0x80 | len as u8),
        len @ 126..65_536 => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&key);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    out
}
