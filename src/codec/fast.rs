//! Hand-written paths for the two messages every remote call makes,
//! `call` and `call_response`, in the exact shape avm writes them. Anything
//! else, and any payload that strays from that shape by a byte, goes
//! through serde (`parse.rs`, `message.rs`).
//!
//! Why: through serde, JSON was about 60% of the instructions of a
//! remote call, and decoding a call about 3,700 (callgrind at 256 calls
//! in flight; BENCHMARKS.md, "Both cores at work").
//!
//! The shapes, with no whitespace and the fields in this order:
//!
//! ```text
//! {"type":"call","request_id":N,"target":N,"input":V,"sender":N,"sender_machine":"S"[,"chain":N]}
//! {"type":"call_response","request_id":N,"result":{"Ok":V}}
//! ```
//!
//! `N` is a u64 in decimal without leading zeros; `S` is printable ASCII
//! without `"` or `\`; `V` is a value at most [`DEPTH`] levels deep, as
//! serde writes it: `{"Nat":N}`, `{"ObjectRef":N}`, `{"TxRef":N}`,
//! `{"Bool":true}`, `{"Bool":false}`, `"Nothing"`, `{"Str":"S"}`,
//! `{"Just":V}`, `{"Pair":[V,V]}` or `{"List":[V,...]}`.
//!
//! Invariants, checked by the unit tests and by both fuzz targets: a
//! payload [`decode`] accepts decodes through serde to the same message,
//! and [`encode`] writes exactly the bytes serde_json would.

use std::borrow::Cow;

use super::message::{Call, CallResponse, Message};
use crate::vm::{ChainId, ObjectId, TxId, Val};

/// Values nested deeper than this go through serde (far below
/// `MAX_VAL_DEPTH`, so serde accepts whatever this path accepts).
const DEPTH: usize = 8;

/// Writes `msg`'s payload (no header) and answers true if it has one of
/// the shapes; otherwise writes nothing and answers false.
pub(super) fn encode(out: &mut Vec<u8>, msg: &Message<'_>) -> bool {
    let start = out.len();
    let written = write_message(out, msg);
    if !written {
        out.truncate(start);
    }
    written
}

fn write_message(out: &mut Vec<u8>, msg: &Message<'_>) -> bool {
    match msg {
        Message::Call(c) if plain(&c.sender_machine) => {
            out.extend_from_slice(br#"{"type":"call","request_id":"#);
            put_u64(out, c.request_id);
            out.extend_from_slice(br#","target":"#);
            put_u64(out, c.target.0);
            out.extend_from_slice(br#","input":"#);
            if !put_val(out, &c.input, 1) {
                return false;
            }
            out.extend_from_slice(br#","sender":"#);
            put_u64(out, c.sender.0);
            out.extend_from_slice(br#","sender_machine":""#);
            out.extend_from_slice(c.sender_machine.as_bytes());
            out.push(b'"');
            if let Some(chain) = c.chain {
                out.extend_from_slice(br#","chain":"#);
                put_u64(out, chain.0);
            }
            out.push(b'}');
            true
        }
        Message::CallResponse(CallResponse {
            request_id,
            result: Ok(v),
        }) => {
            out.extend_from_slice(br#"{"type":"call_response","request_id":"#);
            put_u64(out, *request_id);
            out.extend_from_slice(br#","result":{"Ok":"#);
            if !put_val(out, v, 1) {
                return false;
            }
            out.extend_from_slice(b"}}");
            true
        }
        _ => false,
    }
}

/// The message in `payload` if it has one of the shapes; `None` sends
/// the caller to serde (which also reports what is wrong, if anything).
pub(super) fn decode(payload: &[u8]) -> Option<Message<'_>> {
    let mut c = Cursor { b: payload, i: 0 };
    c.lit(br#"{"type":"call"#)?;
    if c.lit(br#"_response","request_id":"#).is_some() {
        let request_id = c.u64()?;
        c.lit(br#","result":{"Ok":"#)?;
        let v = c.val(1)?;
        c.lit(b"}}")?;
        c.end()?;
        return Some(Message::CallResponse(CallResponse {
            request_id,
            result: Ok(v),
        }));
    }
    c.lit(br#"","request_id":"#)?;
    let request_id = c.u64()?;
    c.lit(br#","target":"#)?;
    let target = ObjectId(c.u64()?);
    c.lit(br#","input":"#)?;
    let input = c.val(1)?;
    c.lit(br#","sender":"#)?;
    let sender = ObjectId(c.u64()?);
    c.lit(br#","sender_machine":""#)?;
    let sender_machine = c.plain_str()?;
    let chain = match c.lit(br#","chain":"#) {
        Some(()) => Some(ChainId(c.u64()?)),
        None => None,
    };
    c.lit(b"}")?;
    c.end()?;
    Some(Message::Call(Call {
        request_id,
        target,
        input,
        sender,
        sender_machine: Cow::Borrowed(sender_machine),
        chain,
    }))
}

/// Written by serde_json without escapes, and read back here.
fn plain(s: &str) -> bool {
    s.bytes().all(plain_byte)
}

/// Printable ASCII but `"` and `\`: a string byte that needs no escape.
fn plain_byte(b: u8) -> bool {
    (0x20..0x80).contains(&b) && b != b'"' && b != b'\\'
}

/// `n` in decimal, as serde_json (itoa) writes it (`/events` writes its
/// numbers with it too). Ids run to 17-20 digits: eight at a time, by
/// multiply-and-shift within one u64 (`eight_ascii`), where itoa makes a
/// division step per four digits. Every store is a whole eight bytes;
/// the leading part is then cut to length with `truncate`, so no
/// variable-length copy is made.
pub(crate) fn put_u64(out: &mut Vec<u8>, n: u64) {
    const E8: u64 = 100_000_000;
    if n < 10 {
        out.push(b'0' + n as u8);
        return;
    }
    out.reserve(24);
    if n < E8 {
        put_leading(out, n as u32);
        return;
    }
    let rest = n / E8;
    if rest < E8 {
        put_leading(out, rest as u32);
    } else {
        // n < 1.85e19: the top part has at most four digits.
        put_leading(out, (rest / E8) as u32);
        put_eight(out, (rest % E8) as u32);
    }
    put_eight(out, (n % E8) as u32);
}

/// `v` (1 to 10^8 - 1) without leading zeros.
fn put_leading(out: &mut Vec<u8>, v: u32) {
    let digits = eight_ascii(v);
    // The first digit is the lowest byte: leading zeros are the low
    // bytes that are 0x30 (fewer than eight, as v > 0).
    let zeros = (digits ^ THREES).trailing_zeros() / 8;
    let len = out.len() + 8 - zeros as usize;
    out.extend_from_slice(&(digits >> (8 * zeros)).to_le_bytes());
    out.truncate(len);
}

/// `v` (below 10^8) as eight digits, zero-padded.
fn put_eight(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&eight_ascii(v).to_le_bytes());
}

/// The eight ASCII digits of `v` (below 10^8), zero-padded, the first in
/// the lowest byte (so `to_le_bytes` gives them in order). Lanes split
/// in halves: 8 digits into two 4-digit numbers in 32-bit lanes, each into
/// two 2-digit numbers in 16-bit lanes (`x * 10486 >> 20` is `x / 100`
/// for x < 43,699), each into two digits in bytes (`x * 103 >> 10` is
/// `x / 10` for x < 179). No lane's product reaches the next lane.
fn eight_ascii(v: u32) -> u64 {
    let v = u64::from(v);
    let fours = (v / 10_000) | ((v % 10_000) << 32);
    let hundreds = ((fours * 10_486) >> 20) & 0x0000_007F_0000_007F;
    let twos = hundreds | ((fours - 100 * hundreds) << 16);
    let tens = ((twos * 103) >> 10) & 0x000F_000F_000F_000F;
    let ones = tens | ((twos - 10 * tens) << 8);
    ones + THREES
}

/// `v` (at `depth`, 1 for a message's value) as serde_json writes it;
/// false when it is deeper than [`DEPTH`] or holds a string that needs
/// escapes (the caller then leaves the message to serde).
fn put_val(out: &mut Vec<u8>, v: &Val, depth: usize) -> bool {
    if depth > DEPTH {
        return false;
    }
    let tagged_u64 = |out: &mut Vec<u8>, tag: &[u8], n: u64| {
        out.extend_from_slice(tag);
        put_u64(out, n);
        out.push(b'}');
    };
    match v {
        Val::Nat(n) => tagged_u64(out, br#"{"Nat":"#, *n),
        Val::ObjectRef(id) => tagged_u64(out, br#"{"ObjectRef":"#, id.0),
        Val::TxRef(id) => tagged_u64(out, br#"{"TxRef":"#, id.0),
        Val::Bool(true) => out.extend_from_slice(br#"{"Bool":true}"#),
        Val::Bool(false) => out.extend_from_slice(br#"{"Bool":false}"#),
        Val::Nothing => out.extend_from_slice(br#""Nothing""#),
        Val::Str(s) => {
            if !plain(s) {
                return false;
            }
            out.extend_from_slice(br#"{"Str":""#);
            out.extend_from_slice(s.as_bytes());
            out.extend_from_slice(br#""}"#);
        }
        Val::Just(inner) => {
            out.extend_from_slice(br#"{"Just":"#);
            if !put_val(out, inner, depth + 1) {
                return false;
            }
            out.push(b'}');
        }
        Val::Pair(a, b) => {
            out.extend_from_slice(br#"{"Pair":["#);
            if !(put_val(out, a, depth + 1) && {
                out.push(b',');
                put_val(out, b, depth + 1)
            }) {
                return false;
            }
            out.extend_from_slice(b"]}");
        }
        Val::List(items) => {
            out.extend_from_slice(br#"{"List":["#);
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                if !put_val(out, item, depth + 1) {
                    return false;
                }
            }
            out.extend_from_slice(b"]}");
        }
    }
    true
}

const THREES: u64 = 0x3030_3030_3030_3030;

/// 10^k for the digits of a chunk.
const POW10: [u64; 9] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
];

/// How many of the eight bytes of `chunk` (little-endian, the first in
/// the lowest byte) are ASCII digits before the first that is not. A
/// digit's high nibble is 3, and stays 3 when 6 is added (so its low
/// nibble is at most 9). Adding 6 carries out of a byte only from one of
/// 0xFA-0xFF, which is not a digit itself, so a carry can only mislabel
/// bytes after the first non-digit, which are not counted anyway.
fn digit_run(chunk: u64) -> usize {
    const HIGH: u64 = 0xF0F0_F0F0_F0F0_F0F0;
    let stray =
        ((chunk & HIGH) ^ THREES) | ((chunk.wrapping_add(0x0606_0606_0606_0606) & HIGH) ^ THREES);
    (stray.trailing_zeros() / 8) as usize
}

/// The first `run` digits of `chunk` (1 to 7) as eight, with zeros in
/// front: shifted up into the high bytes, '0' into the low ones.
fn pad_digits(chunk: u64, run: usize) -> u64 {
    (chunk << (8 * (8 - run))) | (THREES >> (8 * run))
}

/// The decimal number at the start of `ahead`, without leading zeros,
/// and how many bytes it takes. Ids and request ids run to 17-20 digits,
/// so the digits are counted and read eight at a time ([`digit_run`],
/// [`eight_digits_value`]); whether a twenty-digit number fits is
/// decided by the last step's checked arithmetic.
#[inline(always)]
fn read_u64(ahead: &[u8; 24]) -> Option<(u64, usize)> {
    let chunk = |k: usize| u64::from_le_bytes(ahead[8 * k..8 * k + 8].try_into().expect("8"));
    let c0 = chunk(0);
    let run = digit_run(c0);
    if run < 8 {
        // No leading zeros: a number that starts with 0 is just "0".
        if run == 0 || (run > 1 && ahead[0] == b'0') {
            return None;
        }
        return Some((eight_digits_value(pad_digits(c0, run)), run));
    }
    if ahead[0] == b'0' {
        return None;
    }
    let high = eight_digits_value(c0);
    let c1 = chunk(1);
    let run = digit_run(c1);
    if run < 8 {
        let n = match run {
            0 => high,
            _ => high * POW10[run] + eight_digits_value(pad_digits(c1, run)),
        };
        return Some((n, 8 + run));
    }
    let n = high * 100_000_000 + eight_digits_value(c1);
    let c2 = chunk(2);
    match digit_run(c2) {
        0 => Some((n, 16)),
        run @ 1..=4 => {
            let low = eight_digits_value(pad_digits(c2, run));
            Some((n.checked_mul(POW10[run])?.checked_add(low)?, 16 + run))
        }
        // More than twenty digits.
        _ => None,
    }
}

/// The number eight ASCII digits spell, the first digit in the lowest
/// byte (as `from_le_bytes` reads them): pairs, then fours, then all
/// eight, by multiply-and-shift (Lemire's method, as in simdjson).
fn eight_digits_value(chunk: u64) -> u64 {
    let v = chunk - THREES;
    // Each even byte now holds a two-digit number.
    let v = v.wrapping_mul(10) + (v >> 8);
    let low = (v & 0x0000_00FF_0000_00FF).wrapping_mul(100 + (1_000_000 << 32));
    let high = ((v >> 16) & 0x0000_00FF_0000_00FF).wrapping_mul(1 + (10_000 << 32));
    low.wrapping_add(high) >> 32
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    /// Steps over `s` if it comes next. The length is a constant, so the
    /// comparison compiles to a few loads rather than a call to `memcmp`.
    fn lit<const N: usize>(&mut self, s: &[u8; N]) -> Option<()> {
        let next: &[u8; N] = self.b.get(self.i..self.i + N)?.try_into().ok()?;
        (next == s).then(|| self.i += N)
    }

    /// A u64 in decimal, without leading zeros.
    fn u64(&mut self) -> Option<u64> {
        let rest = &self.b[self.i..];
        let (n, len) = match rest.first_chunk::<24>() {
            Some(ahead) => read_u64(ahead)?,
            None => {
                // Near the payload's end: the same reading, on a copy
                // padded with bytes that are not digits.
                let mut ahead = [0; 24];
                ahead[..rest.len()].copy_from_slice(rest);
                read_u64(&ahead)?
            }
        };
        self.i += len;
        Some(n)
    }

    /// A value at `depth` (1 for a message's), in the shapes `put_val`
    /// writes.
    fn val(&mut self, depth: usize) -> Option<Val> {
        if depth > DEPTH {
            return None;
        }
        if self.lit(br#""Nothing""#).is_some() {
            return Some(Val::Nothing);
        }
        self.lit(br#"{""#)?;
        let v = match *self.b.get(self.i)? {
            b'N' => {
                self.lit(br#"Nat":"#)?;
                Val::Nat(self.u64()?)
            }
            b'O' => {
                self.lit(br#"ObjectRef":"#)?;
                Val::ObjectRef(ObjectId(self.u64()?))
            }
            b'T' => {
                self.lit(br#"TxRef":"#)?;
                Val::TxRef(TxId(self.u64()?))
            }
            b'B' if self.lit(br#"Bool":true"#).is_some() => Val::Bool(true),
            b'B' => {
                self.lit(br#"Bool":false"#)?;
                Val::Bool(false)
            }
            b'S' => {
                self.lit(br#"Str":""#)?;
                Val::Str(self.plain_str()?.to_owned())
            }
            b'J' => {
                self.lit(br#"Just":"#)?;
                Val::just(self.val(depth + 1)?)
            }
            b'P' => {
                self.lit(br#"Pair":["#)?;
                let a = self.val(depth + 1)?;
                self.lit(b",")?;
                let b = self.val(depth + 1)?;
                self.lit(b"]")?;
                Val::pair(a, b)
            }
            b'L' => {
                self.lit(br#"List":["#)?;
                let mut items = Vec::new();
                if self.lit(b"]").is_none() {
                    loop {
                        items.push(self.val(depth + 1)?);
                        if self.lit(b"]").is_some() {
                            break;
                        }
                        self.lit(b",")?;
                    }
                }
                Val::List(items)
            }
            _ => return None,
        };
        self.lit(b"}")?;
        Some(v)
    }

    /// The rest of a string whose opening quote is behind us, if it is
    /// printable ASCII without escapes; steps over the closing quote.
    fn plain_str(&mut self) -> Option<&'a str> {
        let start = self.i;
        loop {
            match *self.b.get(self.i)? {
                b'"' => break,
                b if plain_byte(b) => self.i += 1,
                _ => return None,
            }
        }
        let s = std::str::from_utf8(&self.b[start..self.i]).ok()?;
        self.i += 1;
        Some(s)
    }

    fn end(&self) -> Option<()> {
        (self.i == self.b.len()).then_some(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse::decode_with_serde;
    use super::*;

    fn calls() -> Vec<Message<'static>> {
        let mut msgs = Vec::new();
        let scalars = [
            Val::Nat(0),
            Val::Nat(u64::MAX),
            Val::ObjectRef(ObjectId(9002 << 48 | 1)),
            Val::TxRef(TxId(7)),
            Val::Bool(true),
            Val::Bool(false),
            Val::Nothing,
            Val::str(""),
            Val::List(vec![]),
            // PingPong's values.
            Val::List(vec![Val::str("ping"), Val::Nat(3)]),
            Val::just(Val::List(vec![Val::str("done"), Val::Nat(3)])),
            Val::pair(Val::just(Val::Nat(5)), Val::str("beta")),
            Val::List(vec![
                Val::List(vec![Val::Nothing]),
                Val::pair(Val::Bool(true), Val::Nat(1)),
            ]),
        ];
        for (i, v) in scalars.into_iter().enumerate() {
            msgs.push(Message::Call(Call {
                request_id: i as u64 * 1_000_003,
                target: ObjectId(u64::MAX - i as u64),
                input: v.clone(),
                sender: ObjectId(i as u64),
                sender_machine: Cow::Borrowed(if i % 2 == 0 { "alpha" } else { "" }),
                chain: (i % 3 != 0).then_some(ChainId(i as u64 * 7)),
            }));
            msgs.push(Message::CallResponse(CallResponse {
                request_id: u64::MAX - i as u64,
                result: Ok(v),
            }));
        }
        msgs
    }

    #[test]
    fn writes_what_serde_writes_and_reads_it_back_as_serde_does() {
        for msg in calls() {
            let mut fast = Vec::new();
            assert!(encode(&mut fast, &msg), "{msg:?}");
            assert_eq!(
                String::from_utf8_lossy(&fast),
                String::from_utf8_lossy(&serde_json::to_vec(&msg).unwrap())
            );
            assert_eq!(decode(&fast).as_ref(), Some(&msg));
            assert_eq!(decode_with_serde(&fast).as_ref(), Ok(&msg));
        }
    }

    #[test]
    fn numbers_are_written_as_itoa_writes_them() {
        let mut n: u64 = 1;
        let mut samples = vec![0, 1, 9, 10, 99_999_999, 100_000_000, 10_000_000_000_000_000];
        samples.extend([9_999_999_999_999_999, u64::MAX, u64::MAX - 1, 1 << 48]);
        for _ in 0..100_000 {
            n = n
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            samples.push(n >> (n % 64));
        }
        let mut out = Vec::new();
        for n in samples {
            out.clear();
            put_u64(&mut out, n);
            assert_eq!(out, itoa::Buffer::new().format(n).as_bytes(), "{n}");
        }
    }

    /// The number `Cursor::u64` reads at the start of `text`, and where
    /// the cursor then stands.
    fn read(text: &str) -> (Option<u64>, usize) {
        let mut c = Cursor {
            b: text.as_bytes(),
            i: 0,
        };
        (c.u64(), c.i)
    }

    #[test]
    fn numbers_read_eight_digits_at_a_time_as_one_at_a_time() {
        let mut n: u64 = 1;
        let mut samples = vec![0, 9, 10, 99_999_999, 100_000_000, u64::MAX];
        for _ in 0..200 {
            // A spread of lengths and digits (an LCG is enough here).
            n = n
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            samples.push(n >> (n % 61));
        }
        // Near the payload's end (read from a padded copy) and with 24
        // bytes ahead (read in place).
        let tails = [",", r#","target":12345678901234567890"#];
        for n in samples {
            for tail in tails {
                let text = format!("{n}{tail}");
                assert_eq!(read(&text), (Some(n), n.to_string().len()), "{text}");
            }
        }
        // Every length, at every offset within a chunk.
        for len in 1..=20 {
            let digits = &"18446744073709551615"[..len];
            for tail in tails {
                let text = format!("{digits}{tail}");
                assert_eq!(read(&text).0, digits.parse().ok(), "{text}");
            }
        }
        let bad = [
            "18446744073709551616",
            "99999999999999999999",
            "100000000000000000000",
            "184467440737095516150",
            "012345678",
            "",
            "x1",
        ];
        for bad in bad {
            for tail in tails {
                let text = format!("{bad}{tail}");
                assert_eq!(read(&text).0, None, "{text}");
            }
        }
        // Bytes just outside '0'..='9' on either side break a chunk.
        for stray in [b'/', b':', b'0' + 0x80, b'9' + 0x10] {
            for at in [5, 13, 19] {
                let mut text = *b"123456789012345678901234567890";
                text[at] = stray;
                let mut c = Cursor { b: &text, i: 0 };
                assert_eq!(
                    c.u64(),
                    std::str::from_utf8(&text[..at]).unwrap().parse().ok()
                );
            }
        }
    }

    #[test]
    fn other_shapes_go_to_serde() {
        let mut deep = Val::Nat(1);
        for _ in 0..DEPTH {
            deep = Val::just(deep);
        }
        let list = Message::CallResponse(CallResponse {
            request_id: 1,
            result: Ok(Val::List(vec![Val::Nat(1), deep])),
        });
        let escapes = Message::CallResponse(CallResponse {
            request_id: 1,
            result: Ok(Val::List(vec![Val::str("a\nb")])),
        });
        let escaped = Message::Call(Call {
            request_id: 1,
            target: ObjectId(1),
            input: Val::Nat(1),
            sender: ObjectId(0),
            sender_machine: Cow::Borrowed("a\"b"),
            chain: None,
        });
        let err = Message::CallResponse(CallResponse {
            request_id: 1,
            result: Err(Cow::Borrowed("no")),
        });
        for msg in [list, escapes, escaped, err] {
            assert!(!encode(&mut Vec::new(), &msg), "{msg:?}");
            let bytes = serde_json::to_vec(&msg).unwrap();
            assert_eq!(decode(&bytes), None, "{}", String::from_utf8_lossy(&bytes));
        }
    }

    /// Every payload one byte off the shape (cut, or a byte changed) is
    /// either refused here or read exactly as serde reads it.
    #[test]
    fn every_cut_and_changed_byte_agrees_with_serde() {
        for msg in calls() {
            let bytes = serde_json::to_vec(&msg).unwrap();
            for len in 0..bytes.len() {
                assert_eq!(decode(&bytes[..len]), None);
            }
            for at in 0..bytes.len() {
                for b in [b'0', b'9', b' ', b'"', b'\\', b'}', b'x', 0x80, 0] {
                    let mut changed = bytes.clone();
                    changed[at] = b;
                    if let Some(fast) = decode(&changed) {
                        assert_eq!(decode_with_serde(&changed), Ok(fast), "at {at}: {b}");
                    }
                }
            }
        }
        let leading_zero = br#"{"type":"call_response","request_id":01,"result":{"Ok":"Nothing"}}"#;
        assert_eq!(decode(leading_zero), None);
        let overflow = br#"{"type":"call_response","request_id":18446744073709551616,"result":{"Ok":"Nothing"}}"#;
        assert_eq!(decode(overflow), None);
    }
}
