//! WebSocket on the wire (RFC 6455, and RFC 7692's permessage-deflate):
//! the frames groupcast writes and reads itself.
//!
//! Why not leave the socket to tungstenite? It formats every frame into
//! each socket's own write buffer: one copy of the payload per member, and
//! a buffer kept per connection. A server's frames are unmasked, so one
//! broadcast is the same bytes for every member: [`frame`] builds them
//! once, the queues share them, and the connection writes them with one
//! vectored write per batch (`transport/websocket/connection.rs`). [`deflate`]
//! compresses a broadcast once for every member that negotiated it.
//! [`reader`] reads what clients send, with tungstenite's header parser
//! and tungstenite's rules, holding a buffer only while a frame is
//! incomplete, and checks text as UTF-8 while it arrives ([`utf8`]), so
//! that invalid text fails fast, inside its frame.
//!
//! Public so that tests, fuzz targets and the load tool use the very code
//! the server runs.

pub mod close;
pub mod deflate;
pub mod frame;
pub mod reader;
pub mod utf8;

pub use close::close_code;
pub use frame::OpCode;
pub use reader::{CloseFrame, FrameReader, Incoming, Limits, MAX_READ_CHUNK, ReadError, Role};
