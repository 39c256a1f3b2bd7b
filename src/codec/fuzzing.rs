//! Fuzz target bodies, shared by `fuzz/` (libFuzzer, nightly) and by plain
//! `cargo test` (committed corpus + seeded pseudo-random inputs), so CI
//! checks the same invariants on stable. Each function panics when an
//! invariant breaks; for any input, it must not panic otherwise.
//!
//! `frame_decoder` input layout:
//!
//! ```text
//!  [mode][seed][stream bytes ...]
//!   mode & 3: max_frame (16 MiB, 1 + seed, 256, 4096)
//!   mode >> 2: chunk sizes (1, 1..8, 1..64, 1..1500, ...), drawn from seed
//!   mode & 0x20: now and then shrink the drained decoder as an idle node does
//!   mode & 0x40: max_frame 20,000 instead (between the first buffer and
//!                the read-ahead limit)
//! ```

use std::borrow::Cow;

use super::{
    compact, decode, encode, encode_for, encode_limited, EncodeError, FrameDecoder, FrameError,
    Message, DEFAULT_MAX_FRAME, HEADER_LEN, MAX_VAL_DEPTH, MAX_WAIT_PATH,
};
use super::{
    Auth, Call, CallResponse, Close, CreateNotify, Deadlock, DestroyNotify, Hello, Meta,
    MoveNotify, NameDrop, NameNotify, Objects, Ping, Pong, Probe, SnapshotEnd, WaitEdge,
};
use crate::vm::{ChainId, ObjectId, TxId, Val};

/// A tiny xorshift64 generator: deterministic, no `rand` crate.
#[derive(Clone, Debug)]
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> XorShift {
        XorShift(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform-ish in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// The decoder's answer for a whole stream read at once: every complete
/// frame, then the error if a bad header comes before the end.
fn reference(stream: &[u8], max: usize) -> (Vec<&[u8]>, Option<FrameError>) {
    let mut frames = Vec::new();
    let mut rest = stream;
    while rest.len() >= HEADER_LEN {
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
        if len == 0 {
            return (frames, Some(FrameError::Empty));
        }
        if len as usize > max {
            return (frames, Some(FrameError::TooLarge { len, max }));
        }
        let Some(frame) = rest.get(HEADER_LEN..HEADER_LEN + len as usize) else {
            break;
        };
        frames.push(frame);
        rest = &rest[HEADER_LEN + len as usize..];
    }
    (frames, None)
}

/// Feeds `data[2..]` through a [`FrameDecoder`] in chunk sizes drawn from
/// the input; parses every complete frame; checks the frames and the error
/// equal a whole-stream reference, and the buffer bounds.
pub fn frame_decoder(data: &[u8]) {
    let [mode, seed, ref stream @ ..] = *data else {
        return;
    };
    let max = match mode & 3 {
        _ if mode & 0x40 != 0 => 20_000,
        0 => DEFAULT_MAX_FRAME,
        1 => 1 + seed as usize,
        2 => 256,
        _ => 4096,
    };
    let shrink_when_idle = mode & 0x20 != 0;
    let max_chunk = [1, 8, 64, 1500, 4, 17, 300, 70_000][(mode >> 2) as usize & 7];
    let mut rng = XorShift::new(u64::from(seed) << 8 | u64::from(mode));
    let (expected, expected_err) = reference(stream, max);

    let mut dec = FrameDecoder::new(max);
    let (mut fed, mut consumed, mut got) = (0, 0, 0);
    let mut err = None;
    'feed: while fed < stream.len() {
        let spare = dec.read_buf();
        assert!(!spare.is_empty(), "read_buf returned no space");
        let n = (1 + rng.below(max_chunk))
            .min(spare.len())
            .min(stream.len() - fed);
        spare[..n].copy_from_slice(&stream[fed..fed + n]);
        dec.commit(n);
        fed += n;
        assert!(dec.buf_len() <= max + HEADER_LEN, "buffer past max frame");
        loop {
            match dec.next_frame() {
                Ok(Some(payload)) => {
                    assert!(!payload.is_empty() && payload.len() <= max);
                    assert_eq!(payload, expected[got], "frame {got} differs");
                    consumed += HEADER_LEN + payload.len();
                    got += 1;
                    parse_frame(payload);
                }
                Ok(None) => break,
                Err(e) => {
                    assert_eq!(dec.next_frame(), Err(e), "decoder not poisoned");
                    err = Some(e);
                    break 'feed;
                }
            }
            assert!(consumed <= fed, "consumed more than fed");
        }
        assert_eq!(consumed + dec.buffered(), fed);
        assert!(dec.buffered() <= max + HEADER_LEN);
        if shrink_when_idle && rng.below(4) == 0 {
            dec.shrink_when_idle();
        }
    }
    assert_eq!(got, expected.len(), "missed frames");
    assert_eq!(err, expected_err);
}

/// Parses one payload; a message that parses must survive a round trip,
/// and the fast path, where it answers, must answer what serde does. A
/// compact payload that parses re-encodes to exactly its own bytes.
fn parse_frame(payload: &[u8]) {
    if let Some(fast) = super::fast::decode(payload) {
        assert_eq!(super::parse::decode_with_serde(payload), Ok(fast));
    }
    let Ok(msg) = decode(payload) else {
        return;
    };
    if compact::is_compact(payload) {
        let mut again = Vec::new();
        assert!(compact::encode(&mut again, &msg), "compact re-encodes");
        assert_eq!(again, payload, "compact payload not canonical");
    }
    if let Message::Objects(objects) = &msg {
        // No JSON form; its entries read back without failing.
        assert_eq!(objects.iter().count(), objects.len());
        let table = objects.behaviors().len();
        assert!(objects.iter().all(|e| usize::from(e.behavior) < table));
        assert_eq!(objects.wire_len(), payload.len());
        return;
    }
    let mut out = Vec::new();
    // Re-encoding can differ in bytes (escapes, whitespace, unknown fields
    // dropped), never in meaning.
    encode_limited(&mut out, &msg, u32::MAX as usize).expect("decoded message re-encodes");
    assert_eq!(decode(&out[HEADER_LEN..]).as_ref(), Ok(&msg));
}

/// Builds a message from `data` (see [`message_from_bytes`]) and checks
/// [`roundtrip`] on it.
pub fn message_roundtrip(data: &[u8]) {
    let msg = message_from_bytes(data);
    roundtrip(&msg, data.first().map_or(0, |b| *b as usize));
}

/// `encode` then the frame decoder (split at `split`) then `decode` gives
/// back `msg`; a Val over [`MAX_VAL_DEPTH`] or a wait list over
/// [`MAX_WAIT_PATH`] is refused instead, leaving the output untouched.
pub fn roundtrip(msg: &Message<'_>, split: usize) {
    let prefix = b"earlier frames";
    let mut out = prefix.to_vec();
    let too_deep = vals(msg).iter().any(|v| v.depth() > MAX_VAL_DEPTH);
    let too_long = msg.wait_edges().is_some_and(|e| e.len() > MAX_WAIT_PATH);
    if let Message::Objects(_) = msg {
        assert_eq!(encode(&mut out, msg), Err(EncodeError::NoJsonForm));
        assert_eq!(out, prefix, "encode error left bytes behind");
        compact_roundtrip(msg);
        // Through the frame decoder too, split at `split`.
        let mut frame = Vec::new();
        encode_for(&mut frame, msg, DEFAULT_MAX_FRAME, compact::VERSION).unwrap();
        let mut dec = fed_in_two(&frame, split);
        let payload = dec.next_frame().unwrap().expect("one whole frame");
        assert_eq!(decode(payload).as_ref(), Ok(msg));
        assert_eq!(dec.next_frame(), Ok(None));
        assert_eq!(dec.buffered(), 0);
        return;
    }
    match encode(&mut out, msg) {
        Err(EncodeError::TooDeep) if too_deep => {
            assert_eq!(out, prefix, "encode error left bytes behind");
            return;
        }
        Err(EncodeError::TooLong) if too_long => {
            assert_eq!(out, prefix, "encode error left bytes behind");
            return;
        }
        Err(e) => panic!("encode failed: {e} ({msg:?})"),
        Ok(()) => {
            assert!(!too_deep, "encoded a Val past MAX_VAL_DEPTH");
            assert!(!too_long, "encoded a wait list past MAX_WAIT_PATH");
        }
    }
    let frame = &out[prefix.len()..];
    let len = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
    assert_eq!(len, frame.len() - HEADER_LEN);
    assert_eq!(
        &frame[HEADER_LEN..],
        serde_json::to_vec(msg).unwrap().as_slice()
    );

    let mut dec = fed_in_two(frame, split);
    let payload = dec.next_frame().unwrap().expect("one whole frame");
    assert_eq!(decode(payload).as_ref(), Ok(msg));
    assert_eq!(dec.next_frame(), Ok(None));
    assert_eq!(dec.buffered(), 0);
    compact_roundtrip(msg);
}

/// A fresh decoder fed `frame` in two parts, cut at `split` (modulo its
/// length + 1).
fn fed_in_two(frame: &[u8], split: usize) -> FrameDecoder {
    let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
    let split = split % (frame.len() + 1);
    for part in [&frame[..split], &frame[split..]] {
        let mut part = part;
        while !part.is_empty() {
            part = &part[dec.fill(part)..];
        }
    }
    dec
}

/// For a peer that reads compact frames: a `call` (sender's machine name
/// up to 255 bytes) or an `Ok` `call_response` whose value fits the
/// budget goes compact and decodes back to `msg`; anything else goes as
/// the same JSON as before. The compact size and the value count are
/// worked out here from the protocol page's layout, not by the encoder.
fn compact_roundtrip(msg: &Message<'_>) {
    let mut out = Vec::new();
    encode_for(&mut out, msg, u32::MAX as usize, compact::VERSION).expect("encoded as JSON above");
    let payload = &out[HEADER_LEN..];
    let (fixed, value) = match msg {
        Message::Call(c) if c.sender_machine.len() <= 255 => (
            2 + 3 * 8 + 8 * usize::from(c.chain.is_some()) + 1 + c.sender_machine.len(),
            Some(&c.input),
        ),
        Message::CallResponse(CallResponse { result: Ok(v), .. }) => (1 + 8, Some(v)),
        Message::Objects(o) => {
            let table: usize = o.behaviors().iter().map(|b| 1 + b.len()).sum();
            assert!(compact::is_compact(payload), "objects always go compact");
            assert_eq!(payload.len(), 1 + 1 + table + 4 + 11 * o.len());
            assert_eq!(decode(payload).as_ref(), Ok(msg));
            return;
        }
        _ => (0, None),
    };
    let expected = value.is_some_and(|v| {
        let (len, count) = compact_size(v);
        count <= compact::value_budget(fixed + len)
    });
    let went_compact = compact::is_compact(payload);
    assert_eq!(went_compact, expected, "{msg:?}");
    if went_compact {
        assert_eq!(
            payload.len(),
            fixed + value.map_or(0, |v| compact_size(v).0)
        );
    } else {
        assert_eq!(payload, serde_json::to_vec(msg).unwrap().as_slice());
    }
    assert_eq!(decode(payload).as_ref(), Ok(msg));
}

/// `v`'s compact length in bytes and its number of values, by the
/// protocol page's table.
fn compact_size(v: &Val) -> (usize, usize) {
    let inner = |items: &mut dyn Iterator<Item = &Val>, head: usize| {
        items.fold((head, 1), |(len, count), item| {
            let (l, c) = compact_size(item);
            (len + l, count + c)
        })
    };
    match v {
        Val::Nothing | Val::Bool(_) => (1, 1),
        Val::Nat(_) | Val::ObjectRef(_) | Val::TxRef(_) => (9, 1),
        Val::Str(s) => (5 + s.len(), 1),
        Val::Just(x) => inner(&mut std::iter::once(&**x), 1),
        Val::Pair(a, b) => inner(&mut [&**a, &**b].into_iter(), 1),
        Val::List(items) => inner(&mut items.iter(), 5),
    }
}

fn vals<'m>(msg: &'m Message<'_>) -> Vec<&'m Val> {
    match msg {
        Message::Call(c) => vec![&c.input],
        Message::Meta(m) => vec![&m.call.input],
        Message::CallResponse(CallResponse { result: Ok(v), .. }) => vec![v],
        _ => vec![],
    }
}

/// Reads structure from bytes, zeros once they run out (what `arbitrary`
/// does, without the dependency).
struct Gen<'d> {
    data: &'d [u8],
    /// Val nodes left to build: bounds the size of any one message.
    budget: usize,
}

impl Gen<'_> {
    fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    fn u64(&mut self) -> u64 {
        // Small numbers often, all 64 bits sometimes.
        match self.u8() % 4 {
            0 => u64::from(self.u8()),
            1 => u64::MAX - u64::from(self.u8()),
            _ => (0..8).fold(0, |acc, _| acc << 8 | u64::from(self.u8())),
        }
    }

    fn string(&mut self) -> Cow<'static, str> {
        const PALETTE: [&str; 12] = [
            "a", "Ping", "\"", "\\", "\n", "\u{1}", "é", "😀", "/", "\u{7f}", "\u{2028}", " ",
        ];
        let n = self.u8() % 12;
        (0..n)
            .map(|_| PALETTE[self.u8() as usize % PALETTE.len()])
            .collect::<String>()
            .into()
    }

    /// Mostly short lists (empty included), sometimes 62..=67 edges: both
    /// sides of [`MAX_WAIT_PATH`].
    fn edges(&mut self) -> Vec<WaitEdge<'static>> {
        let n = match self.u8() % 4 {
            0 => MAX_WAIT_PATH - 2 + (self.u8() % 6) as usize,
            _ => (self.u8() % 5) as usize,
        };
        (0..n)
            .map(|_| WaitEdge {
                chain: ChainId(self.u64()),
                object: ObjectId(self.u64()),
                machine: self.string(),
            })
            .collect()
    }

    fn call(&mut self) -> Call<'static> {
        Call {
            request_id: self.u64(),
            target: ObjectId(self.u64()),
            input: self.val(1),
            sender: ObjectId(self.u64()),
            sender_machine: self.string(),
            chain: (self.u8() & 1 == 1).then(|| ChainId(self.u64())),
        }
    }

    fn val(&mut self, depth: usize) -> Val {
        if self.budget == 0 || depth > MAX_VAL_DEPTH + 2 {
            return Val::Nothing;
        }
        self.budget -= 1;
        match self.u8() % 10 {
            0 => Val::Nat(self.u64()),
            1 => Val::Bool(self.u8() & 1 == 1),
            2 => Val::Str(self.string().into_owned()),
            3 => {
                let n = self.u8() % 5;
                Val::List((0..n).map(|_| self.val(depth + 1)).collect())
            }
            4 => Val::pair(self.val(depth + 1), self.val(depth + 1)),
            5 => Val::Nothing,
            6 => Val::just(self.val(depth + 1)),
            7 => Val::ObjectRef(ObjectId(self.u64())),
            8 => Val::TxRef(TxId(self.u64())),
            _ => {
                // A chain of `n` Justs: reaches the depth limit from both
                // sides (126..=131 levels), which random shapes never do.
                let n = MAX_VAL_DEPTH - 2 + (self.u8() % 6) as usize;
                let leaf = self.val(depth + n);
                (0..n).fold(leaf, |v, _| Val::just(v))
            }
        }
    }
}

/// A structured message built from arbitrary bytes: every type, every
/// optional field both ways, Vals of every shape and wait lists of every
/// length (some past the limits). The first byte picks the type, in
/// [`Message`]'s order.
pub fn message_from_bytes(data: &[u8]) -> Message<'static> {
    let mut g = Gen { data, budget: 64 };
    match g.u8() % 17 {
        0 => Message::Hello(Hello {
            version: g.u64() as u32,
            machine_id: g.string(),
            node_prefix: g.u64() as u16,
            nonce: g.u8().is_multiple_of(2).then(|| g.string()),
            boot: g.u8().is_multiple_of(2).then(|| g.u64()),
            compact: g.u8().is_multiple_of(2).then(|| g.u64() as u32),
        }),
        1 => Message::Call(g.call()),
        2 => Message::CallResponse(CallResponse {
            request_id: g.u64(),
            result: if g.u8() & 1 == 1 {
                Ok(g.val(1))
            } else {
                Err(g.string())
            },
        }),
        3 => Message::CreateNotify(CreateNotify {
            object_id: ObjectId(g.u64()),
            machine_id: g.string(),
            behavior: (g.u8() & 1 == 1).then(|| g.string()),
            epoch: g.u64() as u16,
        }),
        4 => Message::DestroyNotify(DestroyNotify {
            object_id: ObjectId(g.u64()),
        }),
        5 => Message::Ping(Ping { nonce: g.u64() }),
        6 => Message::Pong(Pong { nonce: g.u64() }),
        7 => Message::Probe(Probe {
            initiator: ChainId(g.u64()),
            blocked: ChainId(g.u64()),
            path: g.edges(),
            hops: g.u64() as u32,
        }),
        9 => Message::Auth(Auth { proof: g.string() }),
        10 => Message::SnapshotEnd(SnapshotEnd { objects: g.u64() }),
        11 => Message::NameNotify(NameNotify {
            name: g.string(),
            object_id: ObjectId(g.u64()),
            machine_id: g.string(),
        }),
        12 => Message::NameDrop(NameDrop {
            name: g.string(),
            object_id: ObjectId(g.u64()),
        }),
        13 => Message::Meta(Meta {
            op: g.string(),
            call: g.call(),
        }),
        14 => Message::MoveNotify(MoveNotify {
            object_id: ObjectId(g.u64()),
            machine_id: g.string(),
            epoch: g.u64() as u16,
        }),
        15 => Message::Close(Close { reason: g.string() }),
        16 => {
            let mut objects = Objects::default();
            let names: Vec<Cow<'static, str>> = (0..g.u8() % 4).map(|_| g.string()).collect();
            for _ in 0..g.u8() % 40 {
                if names.is_empty() {
                    break;
                }
                let name = &names[usize::from(g.u8()) % names.len()];
                let behavior = objects.behavior_index(name).expect("a short name");
                objects.push(ObjectId(g.u64()), behavior, g.u64() as u16);
            }
            Message::Objects(objects)
        }
        _ => Message::Deadlock(Deadlock {
            victim: ChainId(g.u64()),
            object: ObjectId(g.u64()),
            cycle: g.edges(),
        }),
    }
}
