//! The WebSocket close codes groupcast sends (RFC 6455 section 7.4, and
//! its own in 4000–4999). A session closes with a transport-neutral
//! [`CloseReason`](crate::CloseReason) (`close.rs`); these are what its
//! kinds become on a WebSocket.

/// Close codes groupcast sends.
pub mod close_code {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// The server is going away (shutdown, drain).
    pub const GOING_AWAY: u16 = 1001;
    /// The client broke the WebSocket protocol (RFC 6455).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text frame was not valid UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// A policy was violated.
    pub const POLICY: u16 = 1008;
    /// A message was larger than the configured maximum.
    pub const TOO_BIG: u16 = 1009;
    /// The server hit an unexpected condition.
    pub const INTERNAL: u16 = 1011;
    /// Try again later: the client was too slow to keep up.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// The connection's token expired and was not refreshed in time
    /// (application range 4000-4999; "401" in the last digits). Reconnect
    /// with a new token.
    pub const TOKEN_EXPIRED: u16 = 4001;
    /// A token refresh was refused: invalid token, another subject, or a
    /// group the new token does not allow ("403").
    pub const REFRESH_REJECTED: u16 = 4003;
    /// Continuity lost: this node's live stream of the group skipped
    /// offsets. Reconnect with `since`/`epoch` and history fills the gap.
    pub const RESUME: u16 = 4010;
    /// Disconnected on demand (`POST /api/…/disconnect`); the client may
    /// reconnect (with backoff), as after any other close.
    pub const DISCONNECTED: u16 = 4009;
    /// Disconnected on demand, for good: **do not reconnect**. In the range
    /// 4500–4999, which means "do not reconnect" for every code in it.
    pub const DISCONNECTED_FINAL: u16 = 4509;
    /// The first code of the range 4500–4999: a close with any code in it
    /// tells the client not to reconnect (Centrifugo's convention; 4003,
    /// from before the convention, is final too).
    pub const FINAL_RANGE_START: u16 = 4500;
}
