//! Allocations per frame, counted by a global allocator.
//!
//! Framing alone must allocate nothing in steady state; full decode
//! allocates only what the message owns (Val strings, lists, boxes).
//! Prints the figures; fails if framing or encoding allocates.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use avm::codec::{decode, encode, FrameDecoder, Message, DEFAULT_MAX_FRAME};

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: defers every call to `System`; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // ORDERING: a statistic read on the same thread; no other memory
        // depends on it.
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocs() -> usize {
    ALLOCS.load(Ordering::Relaxed)
}

const CALL: &str = r#"{"type":"call","request_id":7,"target":2533837740349325312,"input":{"List":[{"Str":"Ping"},{"Nat":0},{"Nat":3},{"ObjectRef":2533837740349325312}]},"sender":2533556265372614656,"sender_machine":"alpha","chain":2533556265372614657}"#;
const RESPONSE: &str = r#"{"type":"call_response","request_id":7,"result":{"Ok":{"List":[{"Str":"done"},{"Nat":3}]}}}"#;

/// `n` copies of `payload` as frames, fed in 1,500-byte chunks; returns
/// allocations per frame while `per_frame` runs on each payload.
fn stream(payload: &str, n: usize, mut per_frame: impl FnMut(&[u8])) -> f64 {
    let mut bytes = Vec::new();
    for _ in 0..n {
        avm::codec::encode_raw(&mut bytes, payload.as_bytes()).unwrap();
    }
    let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
    let run = |dec: &mut FrameDecoder, per_frame: &mut dyn FnMut(&[u8])| {
        let mut frames = 0;
        for chunk in bytes.chunks(1500) {
            let mut chunk = chunk;
            while !chunk.is_empty() {
                chunk = &chunk[dec.fill(chunk)..];
                while let Some(p) = dec.next_frame().unwrap() {
                    per_frame(p);
                    frames += 1;
                }
            }
        }
        assert_eq!(frames, n);
    };
    run(&mut dec, &mut per_frame); // warm: the buffer reaches its size
    let before = allocs();
    run(&mut dec, &mut per_frame);
    (allocs() - before) as f64 / n as f64
}

fn main() {
    let n = 10_000;
    for (name, payload) in [("call", CALL), ("call_response", RESPONSE)] {
        let framing = stream(payload, n, |p| {
            std::hint::black_box(p);
        });
        let full = stream(payload, n, |p| {
            std::hint::black_box(decode(p).unwrap());
        });
        let msg: Message<'_> = decode(payload.as_bytes()).unwrap();
        let mut out = Vec::with_capacity(1 << 20);
        let before = allocs();
        for _ in 0..n {
            out.clear();
            encode(&mut out, &msg).unwrap();
        }
        let enc = (allocs() - before) as f64 / n as f64;
        println!("{name}: framing {framing} allocs/frame, framing+decode {full} allocs/frame, encode {enc} allocs/frame");
        assert_eq!(framing, 0.0, "framing allocates");
        assert_eq!(enc, 0.0, "encoding into a reused buffer allocates");
    }
}
