//! Allocations per call: a local call through the vm, a remote round trip
//! between two nodes in this process, and a decoded frame.
//!
//! ```text
//! cd tools/alloc-count && CARGO_TARGET_DIR=../../target cargo run --release --offline [-- local|remote|decode]
//! ```
//!
//! No argument runs all three. A counting global allocator (this package
//! exists because avm-node forbids the `unsafe impl GlobalAlloc` it needs)
//! counts allocations and requested bytes in the whole process, every
//! thread included. Each mode separates the allocations the *values*
//! need (a `Str` or `List` owns heap memory, and so does the `Just` box of
//! a call's answer), counted by building the same values alone, from the
//! runtime's own (queues, tables, frames, continuations, buffers).

mod decode;
mod local;
mod remote;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call to `System` unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // ORDERING: statistics, read after the measured work has been
        // handed back through a channel (which synchronizes); no ordering
        // of their own is needed.
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // ORDERING: as above. A realloc counts as one allocation of the
        // new size.
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations and requested bytes so far, process-wide.
#[derive(Clone, Copy, Debug)]
pub struct Count {
    pub allocs: u64,
    pub bytes: u64,
}

impl Count {
    pub fn now() -> Count {
        Count {
            // ORDERING: see `Counting::alloc`.
            allocs: ALLOCS.load(Ordering::Relaxed),
            bytes: BYTES.load(Ordering::Relaxed),
        }
    }

    /// Allocations and bytes since `self`, divided by `n`.
    pub fn per(self, n: u64) -> (f64, f64) {
        let now = Count::now();
        (
            (now.allocs - self.allocs) as f64 / n as f64,
            (now.bytes - self.bytes) as f64 / n as f64,
        )
    }
}

/// Allocations and bytes `f` makes on this thread's watch (process-wide).
pub fn measure<T>(f: impl FnOnce() -> T) -> (T, u64, u64) {
    let c = Count::now();
    let t = f();
    let (a, b) = c.per(1);
    (t, a as u64, b as u64)
}

fn main() {
    let mode = std::env::args().nth(1);
    let all = mode.is_none();
    let is = |m: &str| all || mode.as_deref() == Some(m);
    if !(is("local") || is("remote") || is("decode")) {
        eprintln!("usage: alloc-count [local|remote|decode]");
        std::process::exit(2);
    }
    if is("local") {
        local::run();
    }
    if is("decode") {
        decode::run();
    }
    if is("remote") {
        remote::run();
    }
}
