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
//! `call_compact` and `call_response_compact` are the demo-sized frames
//! in the compact form avm nodes send each other (`codec::compact`), with
//! the JSON path of the same message as their floor: the ratio is what
//! compact costs against JSON (below 1 is faster).
//!
//! `stream` feeds 10,000 call frames in 1,500-byte chunks (an Ethernet
//! MTU's worth per read); its floor parses the 10,000 payloads pre-split.
//!
//! On a shared machine, sequential criterion runs drift with the
//! neighbours' load; `FRAMING_AB=1 cargo bench --bench framing` instead
//! alternates each bench with its floor in short rounds and prints the
//! median per-round ratio (and the best time of each), which holds still.
//!
//! Allocation counts are in `fuzz/tests/allocs.rs` (a counting allocator
//! needs unsafe, which this package forbids).

use std::borrow::Cow;
use std::hint::black_box;
use std::time::Duration;

use avm::codec::{
    decode, encode, encode_for, Call, CallResponse, FrameDecoder, Message, DEFAULT_MAX_FRAME,
    HEADER_LEN,
};
use avm::vm::{ChainId, ObjectId, Val};
use criterion::{criterion_group, Criterion, Throughput};
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
            Val::Bool(i.is_multiple_of(2)),
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
            part = &part[dec.fill(part)..];
            while let Some(payload) = dec.next_frame().unwrap() {
                black_box(decode(payload).unwrap());
                frames += 1;
            }
        }
    }
    frames
}

/// A named bench body.
type Run = (&'static str, Box<dyn FnMut()>);

/// One case: its name, payload length, and the four closures.
struct Case {
    name: &'static str,
    bytes: u64,
    runs: [Run; 4],
}

fn case<M: Floor + 'static>(name: &'static str, msg: Message<'static>) -> Case {
    let bytes = frame(&msg);
    let payload = bytes[HEADER_LEN..].to_vec();
    let len = payload.len() as u64;
    let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
    let decode = move || {
        feed_and_decode(&mut dec, black_box(&bytes), usize::MAX);
    };
    let floor = move || M::floor_decode(black_box(&payload));
    let body = M::body_owned(&msg);
    let mut out = Vec::with_capacity(len as usize + HEADER_LEN);
    let encode = move || {
        out.clear();
        encode(&mut out, black_box(&msg)).unwrap();
    };
    let mut out2 = Vec::with_capacity(len as usize + HEADER_LEN);
    let encode_floor = move || {
        out2.clear();
        serde_json::to_writer(&mut out2, black_box(&body)).unwrap();
    };
    Case {
        name,
        bytes: len,
        runs: [
            ("decode", Box::new(decode)),
            ("decode_floor", Box::new(floor)),
            ("encode", Box::new(encode)),
            ("encode_floor", Box::new(encode_floor)),
        ],
    }
}

fn cases() -> Vec<Case> {
    // "typical" is the demo's own frames: ~230 and ~100 byte payloads.
    vec![
        case::<CallFloor>("call", call(0)),
        case::<CallFloor>("call_1k", call(1024)),
        case::<CallFloor>("call_64k", call(64 * 1024)),
        case::<ResponseFloor>("call_response", response(0)),
        case::<ResponseFloor>("call_response_1k", response(1024)),
        case::<ResponseFloor>("call_response_64k", response(64 * 1024)),
    ]
}

/// A compact case: decode and encode of `msg` in compact form, each
/// against the same through JSON.
fn compact_case(name: &'static str, msg: Message<'static>) -> Case {
    let framed = |compact: bool| {
        let mut out = Vec::new();
        encode_for(&mut out, &msg, DEFAULT_MAX_FRAME, u32::from(compact)).unwrap();
        out
    };
    let (compact, json) = (framed(true), framed(false));
    let len = (compact.len() - HEADER_LEN) as u64;
    let decoder = |bytes: Vec<u8>| {
        let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
        move || {
            feed_and_decode(&mut dec, black_box(&bytes), usize::MAX);
        }
    };
    let encoder = |compact: bool| {
        let msg = msg.clone();
        let mut out = Vec::with_capacity(json.len());
        move || {
            out.clear();
            encode_for(
                &mut out,
                black_box(&msg),
                DEFAULT_MAX_FRAME,
                u32::from(compact),
            )
            .unwrap();
        }
    };
    Case {
        name,
        bytes: len,
        runs: [
            ("decode", Box::new(decoder(compact))),
            ("decode_json", Box::new(decoder(json.clone()))),
            ("encode", Box::new(encoder(true))),
            ("encode_json", Box::new(encoder(false))),
        ],
    }
}

fn compact_cases() -> Vec<Case> {
    let nat_call = match call(0) {
        Message::Call(c) => Message::Call(Call {
            input: Val::Nat(1),
            ..c
        }),
        _ => unreachable!(),
    };
    vec![
        compact_case("call_compact", call(0)),
        compact_case("call_nat_compact", nat_call),
        compact_case(
            "call_response_compact",
            Message::CallResponse(CallResponse {
                request_id: 7,
                result: Ok(Val::Nat(1)),
            }),
        ),
    ]
}

fn messages(c: &mut Criterion) {
    for mut case in cases().into_iter().chain(compact_cases()) {
        let mut g = c.benchmark_group(case.name);
        g.throughput(Throughput::Bytes(case.bytes));
        for (name, f) in &mut case.runs {
            g.bench_function(*name, |b| b.iter(&mut *f));
        }
        g.finish();
    }
}

/// Per-variant floor: the body struct for a message, and its plain parse.
trait Floor {
    type Body<'a>: Serialize;
    fn body<'a>(msg: &'a Message<'_>) -> Self::Body<'a>;
    fn body_owned(msg: &Message<'static>) -> Self::Body<'static> {
        // Leaks one clone per case (six, once per bench process) so the
        // floor's body can live in a 'static closure.
        Self::body(Box::leak(Box::new(msg.clone())))
    }
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

/// The stream case: 10,000 call frames in 1,500-byte reads, and its floor.
fn stream_case() -> (u64, [Run; 2]) {
    const FRAMES: usize = 10_000;
    let one = frame(&call(0));
    let bytes: Vec<u8> = one
        .iter()
        .copied()
        .cycle()
        .take(one.len() * FRAMES)
        .collect();
    let payloads: Vec<Vec<u8>> = bytes
        .chunks(one.len())
        .map(|f| f[HEADER_LEN..].to_vec())
        .collect();
    let len = bytes.len() as u64;
    let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
    let decode = move || assert_eq!(feed_and_decode(&mut dec, black_box(&bytes), 1500), FRAMES);
    let floor = move || {
        for p in &payloads {
            CallFloor::floor_decode(black_box(p));
        }
    };
    (
        len,
        [
            ("decode", Box::new(decode)),
            ("decode_floor", Box::new(floor)),
        ],
    )
}

fn stream(c: &mut Criterion) {
    let (len, mut runs) = stream_case();
    let mut g = c.benchmark_group("stream_10k_calls_1500b_reads");
    g.throughput(Throughput::Bytes(len)).sample_size(20);
    for (name, f) in &mut runs {
        g.bench_function(*name, |b| b.iter(&mut *f));
    }
    g.finish();
}

/// Best time per call of `f` over `iters` calls, in ns.
fn time(f: &mut dyn FnMut(), iters: u32) -> f64 {
    let t = std::time::Instant::now();
    for _ in 0..iters {
        f();
    }
    t.elapsed().as_nanos() as f64 / f64::from(iters)
}

/// Alternates `a` and `b` for 41 rounds of ~5 ms each; prints the best ns
/// per call of each, MB/s of `a`, and the median of the per-round ratios.
fn ab(name: &str, bytes: u64, frames: u64, a: &mut dyn FnMut(), b: &mut dyn FnMut()) {
    let once = time(a, 3).max(1.0);
    let iters = ((5e6 / once) as u32).max(1);
    let (mut best_a, mut best_b, mut ratios) = (f64::MAX, f64::MAX, Vec::new());
    for round in 0..41 {
        let (ta, tb) = if round % 2 == 0 {
            (time(a, iters), time(b, iters))
        } else {
            let tb = time(b, iters);
            (time(a, iters), tb)
        };
        best_a = best_a.min(ta);
        best_b = best_b.min(tb);
        ratios.push(ta / tb);
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "{name:<34} {:>10.0} ns/frame {:>7.1} MB/s  floor {:>10.0} ns/frame  ratio {:.2}",
        best_a / frames as f64,
        bytes as f64 / best_a * 1e3,
        best_b / frames as f64,
        ratios[ratios.len() / 2],
    );
}

fn ab_all() {
    for mut case in cases().into_iter().chain(compact_cases()) {
        let [(_, dec), (_, dec_floor), (_, enc), (_, enc_floor)] = &mut case.runs;
        ab(
            &format!("{} decode", case.name),
            case.bytes,
            1,
            &mut **dec,
            &mut **dec_floor,
        );
        ab(
            &format!("{} encode", case.name),
            case.bytes,
            1,
            &mut **enc,
            &mut **enc_floor,
        );
    }
    let (len, [(_, mut dec), (_, mut floor)]) = stream_case();
    ab(
        "stream_10k_calls_1500b_reads decode",
        len,
        10_000,
        &mut *dec,
        &mut *floor,
    );
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

fn main() {
    if std::env::var_os("FRAMING_AB").is_some() {
        return ab_all();
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
