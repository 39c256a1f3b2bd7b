//! The wire codec: bytes <-> protocol messages, version 2
//! (`docs/protocol.md`; version 1 is its subset without the handshake).
//!
//! ```text
//!  socket bytes, any split          FrameDecoder            decode
//!  ..[N][ JSON ][N][ JSO|N ][N]..  ------------> &[u8] ----------> Message<'a>
//!                                   (borrowed)       (strings borrowed)
//!
//!  Message --encode--> Vec<u8>: [N (4 bytes, big-endian)][N bytes JSON]
//!                      (header reserved, JSON written after it, N patched)
//! ```
//!
//! This module never touches a socket: it takes `&[u8]` and appends to a
//! caller-owned `Vec<u8>`. Invariants it keeps whatever the peer sends:
//! - memory: at most `max_frame + HEADER_LEN` buffered per connection, and
//!   a frame's space is reserved only once its header is checked;
//! - stack: Vals deeper than [`MAX_VAL_DEPTH`] and unknown fields deeper
//!   than [`MAX_IGNORED_DEPTH`] are errors found *before* descending, so
//!   no input overflows a stack (serde_json's own limit is turned off
//!   because it counts JSON levels, not Val levels);
//! - lists: a `probe`'s `path` and a `deadlock`'s `cycle` hold at most
//!   [`MAX_WAIT_PATH`] edges, counted while reading;
//! - round trip: `decode(encode(m)) == m` for every message whose Vals are
//!   at most [`MAX_VAL_DEPTH`] deep and whose wait lists are at most
//!   [`MAX_WAIT_PATH`] long; others are refused by `encode`;
//! - one meaning: `call` and `call_response` in avm's own shape with a
//!   scalar value take a hand-written path (`fast`, for speed), which
//!   writes serde_json's bytes and reads what serde reads, or leaves the
//!   payload to serde;
//! - two forms: to a peer whose `hello` offered them, `call` and
//!   `call_response` go as compact binary frames (`compact`, told apart
//!   from JSON by their first byte); [`decode`] reads both forms from
//!   anyone, [`encode_for`] writes compact only when told the peer reads
//!   it, and [`encode`] never does. [`Objects`] (a snapshot's run of
//!   `create_notify`s) exists only compact, from version 2.
//!
//! Errors are small `Copy` enums: [`FrameError`] (close the connection),
//! [`DecodeError`] (close it, unless [`DecodeError::is_unknown_type`]),
//! [`EncodeError`].

pub(crate) mod compact;
mod error;
mod fast;
mod frame;
#[doc(hidden)]
pub mod fuzzing;
mod message;
mod parse;
mod val;
mod wait;

pub use error::{cut_on_char, DecodeError, EncodeError, FrameError, TypeName};
pub(crate) use fast::put_u64;
pub use frame::{encode_raw, encode_with, FrameDecoder, DEFAULT_MAX_FRAME, HEADER_LEN};
pub use message::{
    encode, encode_for, encode_limited, Auth, Call, CallResponse, Close, CreateNotify, Deadlock,
    DestroyNotify, Hello, Message, Meta, MoveNotify, NameDrop, NameNotify, ObjectEntry, Objects,
    Ping, Pong, Probe, SnapshotEnd, WaitEdge, MAX_WAIT_PATH,
};
pub use parse::decode;
pub use val::{MAX_IGNORED_DEPTH, MAX_VAL_DEPTH};

#[cfg(test)]
mod tests;
