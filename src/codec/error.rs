//! Codec errors: small `Copy` enums with a static `Display`, so the reactor
//! can log them and close the connection without allocating.
//!
//! Sizes are pinned in tests: `DecodeError` is three words, `FrameError`
//! two. Nothing here borrows the payload, so an error outlives the frame.

use std::fmt;

/// A frame header the decoder refuses. Detected from the 4 header bytes
/// alone, before any payload byte is reserved or buffered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The header says `N = 0`.
    Empty,
    /// The header says `N = len`, over this decoder's maximum.
    TooLarge { len: u32, max: usize },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Empty => f.write_str("frame length 0"),
            FrameError::TooLarge { len, max } => {
                write!(f, "frame length {len} over the maximum {max}")
            }
        }
    }
}

impl std::error::Error for FrameError {}

/// Why a frame payload is not a protocol message.
///
/// Every variant except [`DecodeError::UnknownType`] is a protocol error
/// that closes the connection; an unknown `"type"` is logged and ignored
/// (see [`DecodeError::is_unknown_type`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The payload is empty (a frame decoder never yields one; a caller
    /// handing `decode` its own bytes might).
    Empty,
    /// The payload is not UTF-8; `valid_up_to` bytes are.
    InvalidUtf8 { valid_up_to: usize },
    /// The payload is not JSON (syntax error or truncation), at this
    /// 1-based line and column, as serde_json reports them. serde_json's
    /// enum path also reports a number, array, bool or null where a Val
    /// belongs (and a second key in a Val object) as syntax, so those land
    /// here too.
    InvalidJson { line: usize, column: usize },
    /// The payload is JSON but not a JSON object.
    NotAnObject,
    /// The `"type"` names no message this version knows (its name, for
    /// the log).
    UnknownType(TypeName),
    /// A field the message type requires is absent (`"type"` included).
    MissingField { field: &'static str },
    /// A field has the wrong JSON type or is out of range (a `u16` over
    /// 65535, a Val variant name not in the Val table, a Pair of three...).
    WrongType { field: &'static str },
    /// A field appears twice in the message object.
    DuplicateField { field: &'static str },
    /// A Val nests deeper than [`MAX_VAL_DEPTH`](super::MAX_VAL_DEPTH), or
    /// an ignored unknown field nests deeper than
    /// [`MAX_IGNORED_DEPTH`](super::MAX_IGNORED_DEPTH) JSON levels.
    TooDeep { field: &'static str },
    /// A list holds more entries than the protocol allows: a `path` or
    /// `cycle` over [`MAX_WAIT_PATH`](super::MAX_WAIT_PATH) edges. Found at
    /// the first entry too many, before it is parsed.
    TooLong { field: &'static str },
    /// A compact frame (`compact.rs`) is truncated, has bytes after its
    /// value, or holds an unknown tag or flag, a string that is not UTF-8,
    /// at byte `at` of the payload.
    Compact { at: usize },
}

impl DecodeError {
    /// True for an unknown `"type"`: the protocol says log and ignore it,
    /// the connection stays up.
    pub fn is_unknown_type(&self) -> bool {
        matches!(self, DecodeError::UnknownType(_))
    }
}

/// `s` cut to at most `max` bytes, on a character boundary (for a peer's
/// text kept or sent back with a bound).
pub fn cut_on_char(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The first [`TypeName::MAX`] bytes of an unknown message type, kept
/// inline so a [`DecodeError`] stays `Copy` and costs no allocation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TypeName {
    bytes: [u8; TypeName::MAX],
    /// The length kept; the top bit says the name was longer.
    len: u8,
}

impl TypeName {
    /// Longer names are cut here (on a character boundary).
    pub const MAX: usize = 22;

    /// Keeps `name`, or its first [`TypeName::MAX`] bytes.
    pub fn new(name: &str) -> TypeName {
        let len = cut_on_char(name, Self::MAX).len();
        let mut bytes = [0; Self::MAX];
        bytes[..len].copy_from_slice(&name.as_bytes()[..len]);
        let cut = if len < name.len() { Self::CUT } else { 0 };
        TypeName {
            bytes,
            len: len as u8 | cut,
        }
    }

    const CUT: u8 = 0x80;

    /// The name as kept (its first [`TypeName::MAX`] bytes at most).
    pub fn as_str(&self) -> &str {
        let len = usize::from(self.len & !Self::CUT);
        // Cut on a character boundary of a `str`, so always UTF-8.
        std::str::from_utf8(&self.bytes[..len]).unwrap_or("")
    }

    /// The name was longer than [`TypeName::as_str`].
    pub fn is_cut(&self) -> bool {
        self.len & Self::CUT != 0
    }
}

impl fmt::Debug for TypeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Empty => f.write_str("empty payload"),
            DecodeError::InvalidUtf8 { valid_up_to } => {
                write!(f, "payload is not UTF-8 after byte {valid_up_to}")
            }
            DecodeError::InvalidJson { line, column } => {
                write!(f, "invalid JSON at line {line} column {column}")
            }
            DecodeError::NotAnObject => f.write_str("payload is not a JSON object"),
            // The peer's text, escaped: it goes to the log.
            DecodeError::UnknownType(name) => {
                let more = if name.is_cut() { "…" } else { "" };
                write!(
                    f,
                    "unknown message type `{}{more}`",
                    name.as_str().escape_debug()
                )
            }
            DecodeError::MissingField { field } => write!(f, "missing field `{field}`"),
            DecodeError::WrongType { field } => write!(f, "field `{field}` has the wrong type"),
            DecodeError::DuplicateField { field } => write!(f, "duplicate field `{field}`"),
            DecodeError::TooDeep { field } => write!(f, "field `{field}` nests too deep"),
            DecodeError::TooLong { field } => write!(f, "field `{field}` has too many entries"),
            DecodeError::Compact { at } => write!(f, "malformed compact frame at byte {at}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Why a message could not be framed. On every error the output buffer
/// is left exactly as it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// The payload would be empty (only [`encode_raw`](super::encode_raw)
    /// can get here): `N = 0` is a protocol error.
    Empty,
    /// The payload would be `len` bytes, over the frame maximum `max`
    /// (which is at most `u32::MAX`, the header's range).
    TooLarge { len: usize, max: usize },
    /// A Val nests deeper than [`MAX_VAL_DEPTH`](super::MAX_VAL_DEPTH): the
    /// peer would refuse it, so it is never sent.
    TooDeep,
    /// A `path` or `cycle` holds more than
    /// [`MAX_WAIT_PATH`](super::MAX_WAIT_PATH) edges: the peer would refuse
    /// it, so it is never sent.
    TooLong,
    /// The serializer given to [`encode_with`](super::encode_with) failed.
    Serialize,
    /// An `objects` for a peer that did not offer compact version 2: it
    /// has no JSON form (its entries go as `create_notify`s instead).
    NoJsonForm,
    /// An `objects` of more than 4,096 entries
    /// (`codec::compact::MAX_OBJECTS_PER_FRAME`): the peer would refuse
    /// it, so it is never sent.
    TooManyObjects,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::TooLarge { len, max } => {
                write!(f, "payload of {len} bytes over the frame maximum {max}")
            }
            EncodeError::Empty => f.write_str("empty payload"),
            EncodeError::TooDeep => f.write_str("Val nests too deep to send"),
            EncodeError::TooLong => f.write_str("wait path too long to send"),
            EncodeError::Serialize => f.write_str("serialization failed"),
            EncodeError::TooManyObjects => write!(
                f,
                "`objects` of more than {} entries",
                super::compact::MAX_OBJECTS_PER_FRAME
            ),
            EncodeError::NoJsonForm => {
                f.write_str("`objects` has no JSON form (the peer did not offer compact 2)")
            }
        }
    }
}

impl std::error::Error for EncodeError {}
