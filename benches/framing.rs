//! Codec throughput against its floor: `cargo bench --bench framing`.
//!
//! Each group is one payload shape, with four benches so results read as
//! ratios:
//!
//! ```text
//!  decode        bytes -> FrameDecoder (copy in, as a socket read would)
//!                -> next_frame -> codec::decode -> Message
//!  decode_floor  serde_json::from_slice of the same payload straight into
//!                the variant's body struct (plain derive, no dispatch)
//!  encode        codec::encode into a reused Vec (header + JSON)
//!  encode_floor  serde_json::to_writer of the body struct, same Vec
//! ```
//!
//! `stream` feeds 10,000 call frames in 1,500-byte chunks (an Ethernet
//! MTU's worth per read); its floor parses the 10,000 payloads pre-split.
//! Allocation counts are in `fuzz/tests/allocs.rs` (a counting allocator
//! needs unsafe, which this package forbids).

use std::borrow::Cow;
use std::hint::black_box;
use std::time::Duration;

use avm::codec::{
    decode, encode, Call, CallResponse, FrameDecoder, Message, DEFAULT_MAX_FRAME, HEADER_LEN,
};
use avm::vm::{ChainId, ObjectId, Val};
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use serde::{Deserialize, Serialize};

/// The floor for `call`: what derive does with no enum in the way.
#[derive(Serialize, Deserialize)]
struct CallBody<'a> {
    #[serde(rename = "type", skip_deserializing)]
    kind: &'static str,
    request_id: u64,
    target: ObjectId,
    input: Val,
    sender: ObjectId,
    #[serde(borrow)]
    sender_machine: Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    chain: Option<ChainId>,
}

/// The floor for `call_response`.
#[derive(Serialize, Deserialize)]
struct ResponseBody<'a> {
    #[serde(rename = "type", skip_deserializing)]
    kind: &'static str,
    request_id: u64,
    result: Result<Val, Cow<'a, str>>,
}

const PONG: ObjectId = ObjectId(2533837740349325312);

/// The demo's call input, then list items until the JSON reaches `size`.
fn val_of_size(size: usize) -> Val {
    let mut items = vec![
        Val::str("Ping"),
        Val::Nat(0),
        Val::Nat(3),
        Val::ObjectRef(PONG),
    ];
    let mut i = 0u64;
    while serde_json::to_vec(&Val::List(items.clone())).unwrap().len() < size {
        items.push(Val::pair(
            Val::str(format!("item-{i}")),
            Val::just(Val::Nat(i * 7919)),
        ));
        items.push(Val::List(vec![
            Val::Bool(i % 2 == 0),
            Val::ObjectRef(ObjectId(PONG.0 + i)),
        ]));
        i += 1;
    }
    Val::List(items)
}

fn call(size: usize) -> Message<'static> {
    Message::Call(Call {
        request_id: 7,
        target: PONG,
        input: val_of_size(size),
        sender: ObjectId(2533556265372614656),
        sender_machine: "alpha".into(),
        chain: Some(ChainId(2533556265372614657)),
    })
}

fn response(size: usize) -> Message<'static> {
    Message::CallResponse(CallResponse {
        request_id: 7,
        result: Ok(val_of_size(size)),
    })
}

fn frame(msg: &Message<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    encode(&mut out, msg).unwrap();
    out
}

/// Copies `bytes` into the decoder as reads would, parsing every frame.
fn feed_and_decode(dec: &mut FrameDecoder, bytes: &[u8], chunk: usize) -> usize {
    let mut frames = 0;
    for part in bytes.chunks(chunk) {
        let mut part = part;
        while !part.is_empty() {
            let spare = dec.read_buf();
            let n = spare.len().min(part.len());
            spare[..n].copy_from_slice(&part[..n]);
            dec.commit(n);
            part = &part[n..];
            while let Some(payload) = dec.next_frame().unwrap() {
                black_box(decode(payload).unwrap());
                frames += 1;
            }
        }
    }
    frames
}

fn bench_message<M: Floor>(c: &mut Criterion, name: &str, msg: Message<'static>) {
    let bytes = frame(&msg);
    let payload = bytes[HEADER_LEN..].to_vec();
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Bytes(payload.len() as u64));
    let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
    g.bench_function("decode", |b| {
        b.iter(|| feed_and_decode(&mut dec, black_box(&bytes), usize::MAX))
    });
    g.bench_function("decode_floor", |b| {
        b.iter(|| M::floor_decode(black_box(&payload)))
    });
    let mut out = Vec::with_capacity(bytes.len());
    g.bench_function("encode", |b| {
        b.iter(|| {
            out.clear();
            encode(&mut out, black_box(&msg)).unwrap();
        })
    });
    let body = M::body(&msg);
    g.bench_function("encode_floor", |b| {
        b.iter(|| {
            out.clear();
            serde_json::to_writer(&mut out, black_box(&body)).unwrap();
        })
    });
    g.finish();
}

/// Per-variant floor: the body struct for a message, and its plain parse.
trait Floor {
    type Body<'a>: Serialize;
    fn body<'a>(msg: &'a Message<'_>) -> Self::Body<'a>;
    fn floor_decode(payload: &[u8]);
}

struct CallFloor;
impl Floor for CallFloor {
    type Body<'a> = CallBody<'a>;
    fn body<'a>(msg: &'a Message<'_>) -> CallBody<'a> {
        let Message::Call(c) = msg else {
            unreachable!()
        };
        CallBody {
            kind: "call",
            request_id: c.request_id,
            target: c.target,
            input: c.input.clone(),
            sender: c.sender,
            sender_machine: Cow::Borrowed(&c.sender_machine),
            chain: c.chain,
        }
    }
    fn floor_decode(payload: &[u8]) {
        black_box(serde_json::from_slice::<CallBody<'_>>(payload).unwrap());
    }
}

struct ResponseFloor;
impl Floor for ResponseFloor {
    type Body<'a> = ResponseBody<'a>;
    fn body<'a>(msg: &'a Message<'_>) -> ResponseBody<'a> {
        let Message::CallResponse(r) = msg else {
            unreachable!()
        };
        ResponseBody {
            kind: "call_response",
            request_id: r.request_id,
            result: r.result.clone().map_err(|e| Cow::Owned(e.into_owned())),
        }
    }
    fn floor_decode(payload: &[u8]) {
        black_box(serde_json::from_slice::<ResponseBody<'_>>(payload).unwrap());
    }
}

fn messages(c: &mut Criterion) {
    // "typical" is the demo's own frames: ~230 and ~100 byte payloads.
    bench_message::<CallFloor>(c, "call", call(0));
    bench_message::<CallFloor>(c, "call_1k", call(1024));
    bench_message::<CallFloor>(c, "call_64k", call(64 * 1024));
    bench_message::<ResponseFloor>(c, "call_response", response(0));
    bench_message::<ResponseFloor>(c, "call_response_1k", response(1024));
    bench_message::<ResponseFloor>(c, "call_response_64k", response(64 * 1024));
}

fn stream(c: &mut Criterion) {
    const FRAMES: usize = 10_000;
    let one = frame(&call(0));
    let bytes: Vec<u8> = one
        .iter()
        .copied()
        .cycle()
        .take(one.len() * FRAMES)
        .collect();
    let payloads: Vec<&[u8]> = bytes.chunks(one.len()).map(|f| &f[HEADER_LEN..]).collect();
    let mut g: BenchmarkGroup<'_, _> = c.benchmark_group("stream_10k_calls_1500b_reads");
    g.throughput(Throughput::Bytes(bytes.len() as u64))
        .sample_size(20);
    let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
    g.bench_function("decode", |b| {
        b.iter(|| assert_eq!(feed_and_decode(&mut dec, black_box(&bytes), 1500), FRAMES))
    });
    g.bench_function("decode_floor", |b| {
        b.iter(|| {
            for p in &payloads {
                CallFloor::floor_decode(black_box(p));
            }
        })
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_secs(1))
}

criterion_group! {
    name = benches;
    config = config();
    targets = messages, stream
}
criterion_main!(benches);
