//! Allocations per decoded frame: `FrameDecoder::next_frame` + `decode`,
//! steady state (the decoder's buffer has grown; strings are borrowed).
//!
//! Three frames: a `call` with a `Nat` input and a `call_response` with a
//! `Nat` result (values need no heap: every allocation is the codec's),
//! and a PingPong `call` whose `List[Str, Nat, Nat, ObjectRef]` input owns
//! a Vec and a String (the value's, counted by building it alone). The
//! first two again as compact frames, the form avm nodes send each other.

use std::hint::black_box;

use avm::codec::{self, Call, CallResponse, FrameDecoder, Message, DEFAULT_MAX_FRAME};
use avm::demo::pingpong;
use avm::vm::{ChainId, ObjectId, Val};

use crate::{measure, Count};

const FRAMES: u64 = 100_000;
/// Frames per socket read the decoder is fed.
const BATCH: u64 = 16;

fn call(input: Val, compact: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let msg = Message::Call(Call {
        request_id: 1 << 32,
        target: ObjectId(0x2328_0000_0000_0001),
        input,
        sender: ObjectId(0),
        sender_machine: "alpha".into(),
        chain: Some(ChainId(0x2329_0000_0000_0002)),
    });
    codec::encode_for(&mut out, &msg, DEFAULT_MAX_FRAME, u32::from(compact)).unwrap();
    out
}

fn reply(result: Val, compact: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let msg = Message::CallResponse(CallResponse {
        request_id: 1 << 32,
        result: Ok(result),
    });
    codec::encode_for(&mut out, &msg, DEFAULT_MAX_FRAME, u32::from(compact)).unwrap();
    out
}

/// Feeds `frame` in batches of [`BATCH`] and decodes each; allocations and
/// bytes per frame.
fn per_frame(frame: &[u8]) -> (f64, f64) {
    let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
    let batch: Vec<u8> = frame.repeat(BATCH as usize);
    let feed = |decoder: &mut FrameDecoder, batches: u64| {
        for _ in 0..batches {
            let mut fed = 0;
            while fed < batch.len() {
                fed += decoder.fill(&batch[fed..]);
                while let Some(payload) = decoder.next_frame().unwrap() {
                    black_box(codec::decode(payload).unwrap());
                }
            }
        }
    };
    feed(&mut decoder, 100); // warm-up: the buffer grows to its size
    let c0 = Count::now();
    feed(&mut decoder, FRAMES / BATCH);
    c0.per(FRAMES)
}

pub fn run() {
    println!("decoded frame (FrameDecoder + decode, {FRAMES} frames, {BATCH} per read):");
    for (form, compact) in [("", false), (", compact", true)] {
        let nat_call = call(Val::Nat(1234), compact);
        let (a, b) = per_frame(&nat_call);
        println!(
            "  call{form}, Nat input ({} bytes): {a:.3} allocations, {b:.1} bytes (values need 0)",
            nat_call.len()
        );
        let nat_reply = reply(Val::Nat(1234), compact);
        let (a, b) = per_frame(&nat_reply);
        println!(
            "  call_response{form}, Nat ({} bytes): {a:.3} allocations, {b:.1} bytes (values need 0)",
            nat_reply.len()
        );
    }
    let ping = pingpong::msg("Ping", 1, 2, ObjectId(7));
    let (_, value, value_bytes) = measure(|| black_box(ping.clone()));
    let ping_call = call(ping, false);
    let (a, b) = per_frame(&ping_call);
    println!(
        "  call, PingPong List input ({} bytes): {a:.3} allocations, {b:.1} bytes \
         (values need {value}, {value_bytes} bytes; runtime {:.3})",
        ping_call.len(),
        a - value as f64
    );
    hostile_counts();
}

/// A hostile compact frame: a 16 MiB `call_response` whose value is 127
/// nested lists, each claiming 2^32 - 1 items, the innermost filled with
/// `Nothing`s (one byte each). Decoding must not reserve what the counts
/// claim (32 bytes per item, at every level), and the value budget (one
/// value per 8 payload bytes, plus 16) stops the filler at 2M values: 64 MiB of
/// list, 128 MiB allocated in all as it doubles, then the frame is refused.
pub fn hostile_counts() {
    let mut payload = vec![0x02, 1, 0, 0, 0, 0, 0, 0, 0];
    for _ in 0..127 {
        payload.extend_from_slice(&[0x09, 0xff, 0xff, 0xff, 0xff]);
    }
    payload.resize(DEFAULT_MAX_FRAME, 0x00);
    let (refused, allocations, bytes) = measure(|| codec::decode(black_box(&payload)).is_err());
    println!(
        "hostile compact list counts (16 MiB frame, 127 levels of 2^32-1 items, Nothing filler): \
         refused {refused}, {allocations} allocations, {} MiB allocated in all",
        bytes >> 20
    );
    assert!(refused, "past the value budget: it must be refused");
    assert!(bytes < 160 << 20, "decoding allocated {bytes} bytes");
}
