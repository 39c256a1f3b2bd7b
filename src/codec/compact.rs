//! Compact frames: `call` and `call_response` in fixed-width binary
//! (version 1), and a snapshot's runs of `create_notify`s as `objects`
//! (version 2), for peers that offered them in their `hello`
//! (`"compact":N` reads every version up to N).
//!
//! Why: with every number a 17-20 digit decimal, JSON took about 2,100 of
//! the 8,100 instructions of a remote call (callgrind, `pair_throughput`
//! at 256 calls in flight), while the design's own floor carried 7 to
//! 14 times avm's calls per second (BENCHMARKS.md, "fifth pass"). Reading
//! and writing these frames is a few loads and stores per field.
//!
//! A compact payload starts with a byte no JSON payload starts with (JSON
//! starts with `{`), so one decoder reads both kinds, whoever sent them:
//!
//! ```text
//! call:          01 | flags u8 | request_id u64 | target u64 | sender u64
//!                   | [chain u64, if flags & 1] | machine_len u8 | machine | value
//! call_response: 02 | request_id u64 | value        (an Ok result; Err goes as JSON)
//! objects:       03 | behaviors u8 | behaviors x (len u8 | name)
//!                   | count u32 | count x (object_id u64 | behavior u8 | epoch u16)
//!                                                   (version 2; no JSON form)
//!
//! value: 00 Nothing | 01 Nat u64 | 02 ObjectRef u64 | 03 TxRef u64
//!      | 04 Bool false | 05 Bool true | 06 Str len u32, UTF-8
//!      | 07 Just value | 08 Pair value value | 09 List count u32, values
//! ```
//!
//! Integers are little-endian. Other flag bits are zero.
//!
//! Invariants, checked by the unit tests and the fuzz targets: a payload
//! [`decode`] accepts ends exactly where its value (or its last `objects`
//! entry) does, nests at most [`MAX_VAL_DEPTH`] deep (checked before
//! descending), holds at most one value per 8 bytes plus 16
//! ([`value_budget`]: memory stays within a few times the frame's size, as
//! with JSON), and re-encodes to the same bytes; an `objects` borrows its
//! entries from the payload, holds at most [`MAX_OBJECTS_PER_FRAME`] and
//! every behavior index is in its table; [`encode`] writes nothing for
//! what it cannot carry (the caller sends JSON instead).

use std::borrow::Cow;

use super::message::{Call, CallResponse, Message, Objects};
use super::val::MAX_VAL_DEPTH;
use super::DecodeError;
use crate::vm::{ChainId, ObjectId, TxId, Val};

/// First byte of a compact `call`.
pub const CALL: u8 = 0x01;
/// First byte of a compact `call_response`.
pub const CALL_RESPONSE: u8 = 0x02;
/// First byte of a compact `objects` (version 2): a run of `create_notify`s
/// for objects the sender hosts, which is what a directory snapshot is
/// made of between peers that offered version 2. Why: as JSON a snapshot
/// costs about 100 bytes and a JSON parse per object; this is 11 bytes
/// and a few loads.
pub const OBJECTS: u8 = 0x03;
/// The compact version this node reads and writes (`hello`'s `compact`):
/// it reads every version from 1 up to this one.
pub const VERSION: u32 = 2;
/// The first version with `objects`.
pub const OBJECTS_VERSION: u32 = 2;
/// Bytes per `objects` entry: object_id u64, behavior index u8, epoch u16.
pub const OBJECT_ENTRY: usize = 11;
/// The most entries an `objects` frame may hold. Each becomes one event
/// for the interpreter, and the reactor's backlog limit counts events, so
/// one frame must not be a million of them. avm sends at most
/// `SNAPSHOT_STEP / SNAPSHOT_OBJECT_COST` (204).
pub const MAX_OBJECTS_PER_FRAME: usize = 4096;

const HAS_CHAIN: u8 = 1;
/// Items a list reserves before they arrive, whatever its count says.
const LIST_RESERVE: usize = 16;
/// Payload bytes per value, at least (see [`value_budget`]).
const BYTES_PER_VALUE: usize = 8;
/// Values any payload may hold beyond that: small structured answers
/// (`Pair(Bool, Bool)`, a replica's record) stay compact.
const VALUE_SLACK: usize = 16;

/// The most values (Val nodes) a compact payload of `len` bytes may hold:
/// one per [`BYTES_PER_VALUE`] bytes, plus [`VALUE_SLACK`]. A decoded
/// value takes 32 bytes of memory however few bytes it took on the wire
/// (`Nothing` takes one), so without this bound a frame would cost 32
/// times its size; with it, 4 times (plus a list's growth), about what
/// JSON costs (`"Nothing",` is 10 bytes). Denser values go as JSON.
pub(super) fn value_budget(len: usize) -> usize {
    len / BYTES_PER_VALUE + VALUE_SLACK
}

const NOTHING: u8 = 0x00;
const NAT: u8 = 0x01;
const OBJECT_REF: u8 = 0x02;
const TX_REF: u8 = 0x03;
const FALSE: u8 = 0x04;
const TRUE: u8 = 0x05;
const STR: u8 = 0x06;
const JUST: u8 = 0x07;
const PAIR: u8 = 0x08;
const LIST: u8 = 0x09;

/// Whether `payload` is compact (by its first byte).
pub fn is_compact(payload: &[u8]) -> bool {
    matches!(payload.first(), Some(&(CALL | CALL_RESPONSE | OBJECTS)))
}

/// Writes `msg`'s compact payload (no header) and answers true; for any
/// other message, a machine name over 255 bytes, or a Val too deep, too
/// long or too dense ([`value_budget`]), writes nothing and answers false.
/// An `objects` always goes (its builder keeps it within the layout).
pub(super) fn encode(out: &mut Vec<u8>, msg: &Message<'_>) -> bool {
    let start = out.len();
    let mut values = 0;
    let written = match msg {
        Message::Objects(o) => {
            o.write(out);
            return true;
        }
        Message::Call(c) => put_call(out, c, &mut values),
        Message::CallResponse(CallResponse {
            request_id,
            result: Ok(v),
        }) => {
            let mut head = [CALL_RESPONSE; 9];
            head[1..].copy_from_slice(&request_id.to_le_bytes());
            out.extend_from_slice(&head);
            put_val(out, v, 1, &mut values)
        }
        _ => false,
    };
    // A value too dense for its bytes goes as JSON (see `value_budget`).
    let written = written && values <= value_budget(out.len() - start);
    if !written {
        out.truncate(start);
    }
    written
}

fn put_call(out: &mut Vec<u8>, c: &Call<'_>, values: &mut usize) -> bool {
    let Ok(machine_len) = u8::try_from(c.sender_machine.len()) else {
        return false;
    };
    // The fixed part goes in one copy.
    let mut head = [0; 35];
    head[0] = CALL;
    head[2..10].copy_from_slice(&c.request_id.to_le_bytes());
    head[10..18].copy_from_slice(&c.target.0.to_le_bytes());
    head[18..26].copy_from_slice(&c.sender.0.to_le_bytes());
    let len = match c.chain {
        Some(chain) => {
            head[1] = HAS_CHAIN;
            head[26..34].copy_from_slice(&chain.0.to_le_bytes());
            35
        }
        None => 27,
    };
    head[len - 1] = machine_len;
    out.extend_from_slice(&head[..len]);
    out.extend_from_slice(c.sender_machine.as_bytes());
    put_val(out, &c.input, 1, values)
}

/// `v` at `depth` (1 for a message's value); false past
/// [`MAX_VAL_DEPTH`] or for a string or list over `u32::MAX`.
fn put_val(out: &mut Vec<u8>, v: &Val, depth: usize, values: &mut usize) -> bool {
    if depth > MAX_VAL_DEPTH {
        return false;
    }
    *values += 1;
    let tagged = |out: &mut Vec<u8>, tag: u8, n: u64| {
        out.push(tag);
        out.extend_from_slice(&n.to_le_bytes());
        true
    };
    match v {
        Val::Nothing => {
            out.push(NOTHING);
            true
        }
        Val::Nat(n) => tagged(out, NAT, *n),
        Val::ObjectRef(id) => tagged(out, OBJECT_REF, id.0),
        Val::TxRef(tx) => tagged(out, TX_REF, tx.0),
        Val::Bool(b) => {
            out.push(if *b { TRUE } else { FALSE });
            true
        }
        Val::Str(s) => {
            let Ok(len) = u32::try_from(s.len()) else {
                return false;
            };
            out.push(STR);
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(s.as_bytes());
            true
        }
        Val::Just(inner) => {
            out.push(JUST);
            put_val(out, inner, depth + 1, values)
        }
        Val::Pair(a, b) => {
            out.push(PAIR);
            put_val(out, a, depth + 1, values) && put_val(out, b, depth + 1, values)
        }
        Val::List(items) => {
            let Ok(count) = u32::try_from(items.len()) else {
                return false;
            };
            out.push(LIST);
            out.extend_from_slice(&count.to_le_bytes());
            items
                .iter()
                .all(|item| put_val(out, item, depth + 1, values))
        }
    }
}

/// Reads a compact payload ([`is_compact`] is true for it).
pub(super) fn decode(payload: &[u8]) -> Result<Message<'_>, DecodeError> {
    let mut r = Reader {
        b: payload,
        i: 0,
        values_left: value_budget(payload.len()),
        too_deep: false,
    };
    match r.message() {
        Some(msg) if r.i == payload.len() => Ok(msg),
        _ if r.too_deep => Err(DecodeError::TooDeep {
            field: match payload.first() {
                Some(&CALL) => "input",
                _ => "result",
            },
        }),
        _ => Err(DecodeError::Compact { at: r.i }),
    }
}

/// Reads in place. A read that fails answers `None` and leaves `i` at the
/// byte where the payload went wrong: the start of a field that is cut
/// short, an unknown tag or flags byte, the first byte that is not UTF-8,
/// the first value past the budget, the first byte after the value. (The
/// cheap `Option` keeps building the error off the hot path.)
struct Reader<'a> {
    b: &'a [u8],
    i: usize,
    /// Values this payload may still hold ([`value_budget`]).
    values_left: usize,
    /// The `None` was a value nested past [`MAX_VAL_DEPTH`].
    too_deep: bool,
}

impl<'a> Reader<'a> {
    fn message(&mut self) -> Option<Message<'a>> {
        match self.u8()? {
            CALL => {
                let flags = self.u8()?;
                if flags & !HAS_CHAIN != 0 {
                    self.i -= 1;
                    return None;
                }
                let request_id = self.u64()?;
                let target = ObjectId(self.u64()?);
                let sender = ObjectId(self.u64()?);
                let chain = if flags & HAS_CHAIN != 0 {
                    Some(ChainId(self.u64()?))
                } else {
                    None
                };
                let len = usize::from(self.u8()?);
                let sender_machine = self.utf8(len)?;
                Some(Message::Call(Call {
                    request_id,
                    target,
                    input: self.val(1)?,
                    sender,
                    sender_machine: Cow::Borrowed(sender_machine),
                    chain,
                }))
            }
            CALL_RESPONSE => {
                let request_id = self.u64()?;
                Some(Message::CallResponse(CallResponse {
                    request_id,
                    result: Ok(self.val(1)?),
                }))
            }
            OBJECTS => self.objects().map(Message::Objects),
            _ => {
                self.i -= 1;
                None
            }
        }
    }

    /// An `objects` after its tag: the behavior table, then the entries,
    /// each behavior index checked against the table (on failure `i` is
    /// the index's byte).
    fn objects(&mut self) -> Option<Objects<'a>> {
        let names = usize::from(self.u8()?);
        // A name takes at least its length byte: reserve no more than fit.
        let mut behaviors = Vec::with_capacity(names.min(self.b.len() - self.i));
        for _ in 0..names {
            let len = usize::from(self.u8()?);
            behaviors.push(Cow::Borrowed(self.utf8(len)?));
        }
        let count_at = self.i;
        let count = self.u32()? as usize;
        if count > MAX_OBJECTS_PER_FRAME {
            self.i = count_at;
            return None;
        }
        let at = self.i;
        // The count is the sender's word: the bytes must be here.
        let entries = self.take(count.checked_mul(OBJECT_ENTRY)?)?;
        let bad = entries
            .chunks_exact(OBJECT_ENTRY)
            .position(|e| usize::from(e[8]) >= behaviors.len());
        if let Some(k) = bad {
            self.i = at + k * OBJECT_ENTRY + 8;
            return None;
        }
        Some(Objects {
            behaviors,
            entries: Cow::Borrowed(entries),
        })
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let bytes = self.b.get(self.i..self.i.checked_add(n)?)?;
        self.i += n;
        Some(bytes)
    }

    /// `len` bytes of UTF-8; on failure `i` is the first bad byte.
    fn utf8(&mut self, len: usize) -> Option<&'a str> {
        let start = self.i;
        match std::str::from_utf8(self.take(len)?) {
            Ok(s) => Some(s),
            Err(e) => {
                self.i = start + e.valid_up_to();
                None
            }
        }
    }

    fn u8(&mut self) -> Option<u8> {
        let byte = *self.b.get(self.i)?;
        self.i += 1;
        Some(byte)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    /// A value at `depth`: refused past [`MAX_VAL_DEPTH`] before reading
    /// its tag, so no payload recurses deeper than that.
    fn val(&mut self, depth: usize) -> Option<Val> {
        if depth > MAX_VAL_DEPTH {
            self.too_deep = true;
            return None;
        }
        self.values_left = self.values_left.checked_sub(1)?;
        Some(match self.u8()? {
            NOTHING => Val::Nothing,
            NAT => Val::Nat(self.u64()?),
            OBJECT_REF => Val::ObjectRef(ObjectId(self.u64()?)),
            TX_REF => Val::TxRef(TxId(self.u64()?)),
            FALSE => Val::Bool(false),
            TRUE => Val::Bool(true),
            STR => {
                let len = self.u32()? as usize;
                Val::Str(self.utf8(len)?.to_owned())
            }
            JUST => Val::just(self.val(depth + 1)?),
            PAIR => {
                let a = self.val(depth + 1)?;
                Val::pair(a, self.val(depth + 1)?)
            }
            LIST => {
                let count = self.u32()? as usize;
                // The count is the sender's word: reserve a little and
                // let the list grow as items really arrive (a reservation
                // per count would be 32 bytes per payload byte, again at
                // every nesting level).
                let mut items = Vec::with_capacity(count.min(LIST_RESERVE));
                for _ in 0..count {
                    items.push(self.val(depth + 1)?);
                }
                Val::List(items)
            }
            _ => {
                self.i -= 1;
                return None;
            }
        })
    }
}
