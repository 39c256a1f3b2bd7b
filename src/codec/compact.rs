//! Compact frames: `call` and `call_response` in fixed-width binary, for
//! peers that offered them in their `hello` (`"compact":1`).
//!
//! Why: with every number a 17-20 digit decimal, JSON took about 2,100 of
//! the 8,100 instructions of a remote call (callgrind, `pair_throughput`
//! at 256 calls in flight), and the design's own floor carries six to
//! eight times avm's calls per second. Reading and writing these frames
//! is a few loads and stores per field.
//!
//! A compact payload starts with a byte no JSON payload starts with (JSON
//! starts with `{`), so one decoder reads both kinds, whoever sent them:
//!
//! ```text
//! call:          01 | flags u8 | request_id u64 | target u64 | sender u64
//!                   | [chain u64, if flags & 1] | machine_len u8 | machine | value
//! call_response: 02 | request_id u64 | value        (an Ok result; Err goes as JSON)
//!
//! value: 00 Nothing | 01 Nat u64 | 02 ObjectRef u64 | 03 TxRef u64
//!      | 04 Bool false | 05 Bool true | 06 Str len u32, UTF-8
//!      | 07 Just value | 08 Pair value value | 09 List count u32, values
//! ```
//!
//! Integers are little-endian. Other flag bits are zero.
//!
//! Invariants, checked by the unit tests and the fuzz targets: a payload
//! [`decode`] accepts ends exactly where its value does, nests at most
//! [`MAX_VAL_DEPTH`] deep (checked before descending), and re-encodes to
//! the same bytes; [`encode`] writes nothing for what it cannot carry (the
//! caller sends JSON instead).

use std::borrow::Cow;

use super::message::{Call, CallResponse, Message};
use super::val::MAX_VAL_DEPTH;
use super::DecodeError;
use crate::vm::{ChainId, ObjectId, TxId, Val};

/// First byte of a compact `call`.
pub const CALL: u8 = 0x01;
/// First byte of a compact `call_response`.
pub const CALL_RESPONSE: u8 = 0x02;
/// The compact version this node reads and writes (`hello`'s `compact`).
pub const VERSION: u32 = 1;

const HAS_CHAIN: u8 = 1;

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
    matches!(payload.first(), Some(&(CALL | CALL_RESPONSE)))
}

/// Writes `msg`'s compact payload (no header) and answers true; for any
/// other message, a machine name over 255 bytes, or a Val too deep or too
/// long, writes nothing and answers false.
pub(super) fn encode(out: &mut Vec<u8>, msg: &Message<'_>) -> bool {
    let start = out.len();
    let written = match msg {
        Message::Call(c) => put_call(out, c),
        Message::CallResponse(CallResponse {
            request_id,
            result: Ok(v),
        }) => {
            out.push(CALL_RESPONSE);
            out.extend_from_slice(&request_id.to_le_bytes());
            put_val(out, v, 1)
        }
        _ => false,
    };
    if !written {
        out.truncate(start);
    }
    written
}

fn put_call(out: &mut Vec<u8>, c: &Call<'_>) -> bool {
    let Ok(machine_len) = u8::try_from(c.sender_machine.len()) else {
        return false;
    };
    let flags = if c.chain.is_some() { HAS_CHAIN } else { 0 };
    out.extend_from_slice(&[CALL, flags]);
    out.extend_from_slice(&c.request_id.to_le_bytes());
    out.extend_from_slice(&c.target.0.to_le_bytes());
    out.extend_from_slice(&c.sender.0.to_le_bytes());
    if let Some(chain) = c.chain {
        out.extend_from_slice(&chain.0.to_le_bytes());
    }
    out.push(machine_len);
    out.extend_from_slice(c.sender_machine.as_bytes());
    put_val(out, &c.input, 1)
}

/// `v` at `depth` (1 for a message's value); false past
/// [`MAX_VAL_DEPTH`] or for a string or list over `u32::MAX`.
fn put_val(out: &mut Vec<u8>, v: &Val, depth: usize) -> bool {
    if depth > MAX_VAL_DEPTH {
        return false;
    }
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
            put_val(out, inner, depth + 1)
        }
        Val::Pair(a, b) => {
            out.push(PAIR);
            put_val(out, a, depth + 1) && put_val(out, b, depth + 1)
        }
        Val::List(items) => {
            let Ok(count) = u32::try_from(items.len()) else {
                return false;
            };
            out.push(LIST);
            out.extend_from_slice(&count.to_le_bytes());
            items.iter().all(|item| put_val(out, item, depth + 1))
        }
    }
}

/// Reads a compact payload ([`is_compact`] is true for it).
pub(super) fn decode(payload: &[u8]) -> Result<Message<'_>, DecodeError> {
    let mut r = Reader {
        b: payload,
        i: 1,
        field: "input",
    };
    let msg = match payload.first() {
        Some(&CALL) => {
            let flags = r.u8()?;
            if flags & !HAS_CHAIN != 0 {
                return Err(r.error());
            }
            let request_id = r.u64()?;
            let target = ObjectId(r.u64()?);
            let sender = ObjectId(r.u64()?);
            let chain = if flags & HAS_CHAIN != 0 {
                Some(ChainId(r.u64()?))
            } else {
                None
            };
            let len = usize::from(r.u8()?);
            let machine = r.take(len)?;
            let sender_machine = std::str::from_utf8(machine).map_err(|_| r.error())?;
            Message::Call(Call {
                request_id,
                target,
                input: r.val(1)?,
                sender,
                sender_machine: Cow::Borrowed(sender_machine),
                chain,
            })
        }
        Some(&CALL_RESPONSE) => {
            r.field = "result";
            let request_id = r.u64()?;
            Message::CallResponse(CallResponse {
                request_id,
                result: Ok(r.val(1)?),
            })
        }
        _ => return Err(DecodeError::Compact { at: 0 }),
    };
    if r.i != payload.len() {
        return Err(r.error());
    }
    Ok(msg)
}

struct Reader<'a> {
    b: &'a [u8],
    i: usize,
    /// The message's value field, named by a too-deep error.
    field: &'static str,
}

impl<'a> Reader<'a> {
    fn error(&self) -> DecodeError {
        DecodeError::Compact { at: self.i }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let bytes = self
            .b
            .get(self.i..)
            .and_then(|rest| rest.get(..n))
            .ok_or_else(|| self.error())?;
        self.i += n;
        Ok(bytes)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        let bytes = self.take(4)?;
        Ok(u32::from_le_bytes(bytes.try_into().expect("4 bytes")))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        let bytes = self.take(8)?;
        Ok(u64::from_le_bytes(bytes.try_into().expect("8 bytes")))
    }

    /// A value at `depth`: refused past [`MAX_VAL_DEPTH`] before reading
    /// its tag, so no payload recurses deeper than that.
    fn val(&mut self, depth: usize) -> Result<Val, DecodeError> {
        if depth > MAX_VAL_DEPTH {
            return Err(DecodeError::TooDeep { field: self.field });
        }
        let at = self.i;
        Ok(match self.u8()? {
            NOTHING => Val::Nothing,
            NAT => Val::Nat(self.u64()?),
            OBJECT_REF => Val::ObjectRef(ObjectId(self.u64()?)),
            TX_REF => Val::TxRef(TxId(self.u64()?)),
            FALSE => Val::Bool(false),
            TRUE => Val::Bool(true),
            STR => {
                let len = self.u32()? as usize;
                let bytes = self.take(len)?;
                let s = std::str::from_utf8(bytes).map_err(|_| self.error())?;
                Val::Str(s.to_owned())
            }
            JUST => Val::just(self.val(depth + 1)?),
            PAIR => {
                let a = self.val(depth + 1)?;
                Val::pair(a, self.val(depth + 1)?)
            }
            LIST => {
                let count = self.u32()? as usize;
                // Each item takes at least its tag byte: a count the
                // payload cannot hold reserves nothing it could not fill.
                let mut items = Vec::with_capacity(count.min(self.b.len() - self.i));
                for _ in 0..count {
                    items.push(self.val(depth + 1)?);
                }
                Val::List(items)
            }
            _ => return Err(DecodeError::Compact { at }),
        })
    }
}
