//! A per-thread cache of small blocks in front of the system allocator,
//! for programs that run nodes to install as their `#[global_allocator]`.
//!
//! Why: a remote call's caller allocates small blocks the API asks for
//! (each continuation, each `Just` answer) and frees them a few steps
//! later, on the same thread. glibc spends about 150 instructions on each
//! such pair (its per-thread cache comes after size and double-free
//! checks, and overflows on a batch of hundreds); this cache spends a few
//! tens. Measured on the pair at K = 256 (BENCHMARKS.md, issue 16, seventh
//! pass): the caller's interpreter went from 2,109 to 1,703 instructions
//! per call, the four threads together from 5,537 to 5,143 (-7%).
//!
//! What it is: each thread keeps up to [`KEEP`] freed blocks of each of
//! four size classes (16, 32, 48 and 64 bytes, alignment up to 16) and
//! hands them out again; every other request goes straight to
//! [`System`]. It is not an allocator of its own, only a short stack of
//! blocks glibc already handed out.
//!
//! Invariants:
//! - A block of class `k` is always allocated from `System` with
//!   [`class_layout`]`(k)` (16(k+1) bytes, aligned 16), so any block of a
//!   class serves any request of that class, and one freed on another
//!   thread than the one that allocated it is kept there (glibc frees a
//!   block from any thread when it comes to that).
//! - A kept block is free: it is in one bin, once, and nobody holds it.
//! - A thread keeps at most 4 × [`KEEP`] blocks (64 KiB, in up to 1,024
//!   pages); they go back to `System` when the thread ends, and the
//!   calling thread's go back in [`super::trim`] before glibc is asked to
//!   return free pages, so that kept blocks scattered through a heap do
//!   not pin its pages after a burst. Other threads' kept blocks can pin
//!   up to that many pages each until they end. Measured with the cache:
//!   the memory goals of issue 16 hold (BENCHMARKS.md).
//!
//! The `unsafe` here is the allocator contract itself (`GlobalAlloc` is
//! an unsafe trait), the calls into `System` that it forwards and the
//! bins given back as a thread ends; each says why it holds. The kept
//! pointers live in `Cell`s, so no reference to them is ever made
//! unsafely. See [`SmallBlocks`] for where it runs.

#![deny(unsafe_op_in_unsafe_fn)]

use std::alloc::{GlobalAlloc, Layout, System};
#[cfg(all(target_os = "linux", target_env = "gnu"))]
use std::cell::Cell;

/// Blocks kept per size class and thread.
pub const KEEP: usize = 256;

/// Size classes: 16, 32, 48 and 64 bytes.
const CLASSES: usize = 4;
const CLASS_STEP: usize = 16;
const ALIGN: usize = 16;

/// The class of a request, if it is small enough to keep: requests of
/// 1-16 bytes are class 0, 17-32 class 1, and so on.
fn class_of(layout: Layout) -> Option<usize> {
    let size = layout.size();
    (size > 0 && size <= CLASSES * CLASS_STEP && layout.align() <= ALIGN)
        .then(|| (size - 1) / CLASS_STEP)
}

/// The layout every block of class `k` is allocated with.
fn class_layout(k: usize) -> Layout {
    CLASS_LAYOUTS[k]
}

const CLASS_LAYOUTS: [Layout; CLASSES] = {
    let mut layouts = [Layout::new::<u8>(); CLASSES];
    let mut k = 0;
    while k < CLASSES {
        layouts[k] = match Layout::from_size_align((k + 1) * CLASS_STEP, ALIGN) {
            Ok(layout) => layout,
            Err(_) => panic!("a size class is a valid layout"),
        };
        k += 1;
    }
    layouts
};

/// A per-thread cache of small blocks in front of [`System`] (see the
/// module docs): install it with
/// `#[global_allocator] static HEAP: avm::heap::SmallBlocks = avm::heap::SmallBlocks;`.
///
/// It caches only on Linux with glibc 2.18 or later, where a thread's
/// destructors are registered through glibc's `__cxa_thread_atexit_impl`,
/// without going through the Rust allocator (std's fallback for older
/// glibc allocates through it while registering, which an allocator with
/// a thread-local destructor cannot allow: the process would abort).
/// Elsewhere it is a plain pass-through to `System`. Each thread that
/// allocates carries its bins, 8 KiB of thread-local storage. A thread
/// whose first allocation comes from a foreign thread-exit destructor
/// (after Rust's have run) does not give its kept blocks back (64 KiB at
/// most).
#[derive(Debug, Default, Clone, Copy)]
pub struct SmallBlocks;

impl SmallBlocks {
    /// Gives this thread's kept blocks back to `System` now (before
    /// `malloc_trim`, say, so that they pin no page).
    pub fn release_here() {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        let _ = bins::BINS.try_with(bins::Bins::release);
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod bins {
    use super::*;

    /// One size class's kept blocks: a stack.
    pub(super) struct Bin {
        len: Cell<usize>,
        blocks: [Cell<*mut u8>; KEEP],
    }

    /// A thread's bins; what they keep goes back to `System` as the thread
    /// ends.
    pub(super) struct Bins([Bin; CLASSES]);

    impl Bins {
        const fn new() -> Bins {
            Bins(
                [const {
                    Bin {
                        len: Cell::new(0),
                        blocks: [const { Cell::new(std::ptr::null_mut()) }; KEEP],
                    }
                }; CLASSES],
            )
        }

        /// A kept block of class `k`, if any.
        pub(super) fn take(&self, k: usize) -> Option<*mut u8> {
            let bin = &self.0[k];
            let len = bin.len.get().checked_sub(1)?;
            bin.len.set(len);
            Some(bin.blocks[len].get())
        }

        /// Keeps `block` (free, of class `k`); false when the bin is full.
        pub(super) fn keep(&self, k: usize, block: *mut u8) -> bool {
            let bin = &self.0[k];
            let len = bin.len.get();
            if len == KEEP {
                return false;
            }
            bin.blocks[len].set(block);
            bin.len.set(len + 1);
            true
        }

        /// Blocks kept, all classes (for tests).
        #[cfg(test)]
        pub(super) fn kept(&self) -> usize {
            self.0.iter().map(|b| b.len.get()).sum()
        }
    }

    /// Blocks given back by ending threads, all threads (for tests).
    #[cfg(test)]
    pub(super) static RETURNED: std::sync::atomic::AtomicUsize =
        std::sync::atomic::AtomicUsize::new(0);

    impl Bins {
        /// Gives every kept block back to `System`.
        #[allow(unsafe_code)]
        pub(super) fn release(&self) {
            for (k, bin) in self.0.iter().enumerate() {
                #[cfg(test)]
                RETURNED.fetch_add(bin.len.get(), std::sync::atomic::Ordering::Relaxed);
                // Emptied first: a block is given back once, even if this
                // runs again.
                let kept = bin.len.replace(0);
                for block in &bin.blocks[..kept] {
                    // SAFETY: a kept block came from `System.alloc` with
                    // `class_layout(k)` and is free (module invariants);
                    // the bin no longer holds it.
                    unsafe { System.dealloc(block.get(), class_layout(k)) };
                }
            }
        }
    }

    impl Drop for Bins {
        fn drop(&mut self) {
            self.release();
        }
    }

    thread_local! {
        pub(super) static BINS: Bins = const { Bins::new() };
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn take(k: usize) -> Option<*mut u8> {
    // A thread whose bins are gone (it is ending) keeps nothing.
    bins::BINS.try_with(|b| b.take(k)).ok().flatten()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep(k: usize, block: *mut u8) -> bool {
    bins::BINS.try_with(|b| b.keep(k, block)).unwrap_or(false)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn take(_: usize) -> Option<*mut u8> {
    None
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep(_: usize, _: *mut u8) -> bool {
    false
}

/// Blocks this thread keeps now (for tests).
#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
pub(crate) fn kept_here() -> usize {
    bins::BINS.with(|b| b.kept())
}

#[allow(unsafe_code)]
// SAFETY: every block handed out fits its layout: a small request gets a
// block of its class, which is at least as large and aligned 16 (at least
// the request's alignment, by `class_of`); any other request gets what
// `System` gives for that very layout. A block comes back (`dealloc`,
// `realloc`) with the layout it was asked with, which maps to the same
// class, or to none exactly when it was `System`'s: so each block is kept
// or returned to `System` with the layout it was allocated with.
unsafe impl GlobalAlloc for SmallBlocks {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match class_of(layout) {
            Some(k) => match take(k) {
                Some(block) => block,
                // SAFETY: a class layout has a non-zero size.
                None => unsafe { System.alloc(class_layout(k)) },
            },
            // SAFETY: the caller's layout, with the caller's guarantees.
            None => unsafe { System.alloc(layout) },
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match class_of(layout) {
            Some(_) => {
                // SAFETY: as `alloc`.
                let block = unsafe { self.alloc(layout) };
                if !block.is_null() {
                    // SAFETY: the block is ours and holds at least
                    // `layout.size()` bytes.
                    unsafe { block.write_bytes(0, layout.size()) };
                }
                block
            }
            // SAFETY: as `alloc` (forwarded: glibc's `calloc` skips the
            // zeroing for blocks it maps fresh).
            None => unsafe { System.alloc_zeroed(layout) },
        }
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        match class_of(layout) {
            Some(k) => {
                if !keep(k, block) {
                    // SAFETY: a block of class `k` came from `System` with
                    // `class_layout(k)` (see the impl's SAFETY), and the
                    // caller gives it up.
                    unsafe { System.dealloc(block, class_layout(k)) }
                }
            }
            // SAFETY: a block of no class came from `System` with this
            // layout.
            None => unsafe { System.dealloc(block, layout) },
        }
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY (for the `Layout`): the caller guarantees `new_size`,
        // rounded up to the alignment, does not overflow.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (class_of(layout), class_of(new_layout)) {
            // Still fits its block.
            (Some(k), Some(n)) if k == n => block,
            // SAFETY: a block of no class came from `System` with
            // `layout`, and stays a block of no class: `System` resizes
            // it in place when it can.
            (None, None) => unsafe { System.realloc(block, layout, new_size) },
            _ => {
                // Into or out of a class: a new block, the bytes copied.
                // SAFETY: `new_layout` is valid (above) and non-zero (the
                // caller's guarantee); `block` holds `layout.size()`
                // readable bytes, the new one `new_size`, and they do not
                // overlap; `block` is then given up as `dealloc` requires.
                unsafe {
                    let moved = self.alloc(new_layout);
                    if !moved.is_null() {
                        std::ptr::copy_nonoverlapping(block, moved, layout.size().min(new_size));
                        self.dealloc(block, layout);
                    }
                    moved
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(unsafe_code)]
mod tests {
    use super::*;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn classes_cover_up_to_64_bytes_aligned_up_to_16() {
        assert_eq!(class_of(layout(1, 1)), Some(0));
        assert_eq!(class_of(layout(16, 8)), Some(0));
        assert_eq!(class_of(layout(17, 8)), Some(1));
        assert_eq!(class_of(layout(64, 16)), Some(3));
        assert_eq!(class_of(layout(65, 8)), None);
        assert_eq!(class_of(layout(8, 32)), None, "over-aligned");
        for k in 0..CLASSES {
            assert_eq!(class_of(class_layout(k)), Some(k));
        }
    }

    /// Blocks are written, read back, resized across and within classes and
    /// to and from large sizes, and zeroed when asked, as any allocator's.
    #[test]
    fn blocks_behave_as_the_system_allocators() {
        let heap = SmallBlocks;
        for &(from, to) in &[
            (8, 12),
            (8, 40),
            (40, 8),
            (60, 5000),
            (5000, 24),
            (5000, 9000),
        ] {
            let l = layout(from, 8);
            // SAFETY: non-zero layouts; each block is written within its
            // size, resized with its layout, and freed once with its last.
            unsafe {
                let p = heap.alloc(l);
                assert!(!p.is_null());
                assert_eq!(p as usize % 8, 0);
                for i in 0..from {
                    p.add(i).write(i as u8);
                }
                let q = heap.realloc(p, l, to);
                assert!(!q.is_null());
                for i in 0..from.min(to) {
                    assert_eq!(q.add(i).read(), i as u8, "{from} -> {to}");
                }
                heap.dealloc(q, layout(to, 8));
            }
        }
        // SAFETY: as above.
        unsafe {
            let l = layout(48, 16);
            let p = heap.alloc(l);
            p.write_bytes(0xAB, 48);
            heap.dealloc(p, l);
            let z = heap.alloc_zeroed(l);
            #[cfg(all(target_os = "linux", target_env = "gnu"))]
            assert_eq!(z, p, "the kept block, again");
            assert!(
                (0..48).all(|i| z.add(i).read() == 0),
                "a kept block comes back zeroed"
            );
            assert_eq!(z as usize % 16, 0);
            heap.dealloc(z, l);
            // Small but over-aligned: not cached, and aligned as asked.
            let over = layout(24, 64);
            let o = heap.alloc_zeroed(over);
            assert_eq!(o as usize % 64, 0);
            assert!((0..24).all(|i| o.add(i).read() == 0));
            let o = heap.realloc(o, over, 40);
            assert_eq!(o as usize % 64, 0);
            heap.dealloc(o, layout(40, 64));
        }
    }

    /// A freed small block is handed out again on its thread; a bin keeps
    /// at most `KEEP`; a thread's kept blocks go back as it ends (its bins
    /// are dropped: no leak, nothing freed twice).
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn a_thread_reuses_its_blocks_keeps_a_bounded_number_and_gives_them_back() {
        use std::sync::atomic::Ordering;
        // ORDERING: Relaxed: a counter read after the join, which orders it.
        let returned = || bins::RETURNED.load(Ordering::Relaxed);
        let before = returned();
        std::thread::spawn(|| {
            let heap = SmallBlocks;
            let l = layout(24, 8);
            // SAFETY: as in the test above.
            unsafe {
                let before = kept_here();
                let p = heap.alloc(l);
                let taken = kept_here();
                assert!(taken <= before);
                heap.dealloc(p, l);
                assert_eq!(kept_here(), taken + 1, "kept");
                assert_eq!(heap.alloc(l), p, "the same block, again");
                heap.dealloc(p, l);
                let many: Vec<_> = (0..KEEP + 10).map(|_| heap.alloc(l)).collect();
                for p in many {
                    heap.dealloc(p, l);
                }
                // This class's bin is full, and holds no more.
                assert!(kept_here() <= before + KEEP);
                assert!(kept_here() >= KEEP);
            }
        })
        .join()
        .unwrap();
        assert!(
            returned() >= before + KEEP,
            "the ended thread's blocks went back"
        );
    }

    #[repr(align(32))]
    struct Over([u8; 8]);

    fn fill(v: &mut [u8], tag: u8) {
        for (i, b) in v.iter_mut().enumerate() {
            *b = tag ^ i as u8;
        }
    }

    fn check(v: &[u8], tag: u8) {
        assert!(v.iter().enumerate().all(|(i, b)| *b == tag ^ i as u8));
    }

    /// Six threads allocate, resize (within, into and out of the classes)
    /// and free blocks, and send some to each other to be freed there: the
    /// unit tests run on this allocator, so every block here comes from it.
    /// Each block keeps what was written into it.
    #[test]
    fn threads_that_free_each_others_blocks_keep_every_byte() {
        use std::sync::mpsc;
        const THREADS: usize = 6;
        const ROUNDS: usize = 5_000;
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..THREADS)
            .map(|_| mpsc::channel::<(u8, Vec<u8>, Box<Over>)>())
            .unzip();
        let workers: Vec<_> = rxs
            .into_iter()
            .enumerate()
            .map(|(id, rx)| {
                let peers = txs.clone();
                std::thread::spawn(move || {
                    let mut held = Vec::new();
                    for r in 0..ROUNDS {
                        let tag = (r as u8).wrapping_add(id as u8);
                        let n = 1 + (r * 7 + id * 13) % 90;
                        let mut v = vec![0u8; n];
                        fill(&mut v, tag);
                        let m = 1 + (r * 11) % 100;
                        v.resize(m, 0);
                        v.truncate(m.min(n));
                        v.shrink_to_fit();
                        check(&v, tag);
                        let over = Box::new(Over([tag; 8]));
                        assert_eq!(&*over as *const Over as usize % 32, 0);
                        let _ = peers[(id + 1 + r) % THREADS].send((tag, v, over));
                        if let Ok((t, w, o)) = rx.try_recv() {
                            check(&w, t);
                            assert_eq!(o.0, [t; 8]);
                            held.push(w);
                        }
                        if held.len() > 300 {
                            held.drain(..200);
                        }
                        let zeroed = vec![0u64; 1 + r % 8];
                        assert!(zeroed.iter().all(|&x| x == 0));
                    }
                    drop(peers);
                    while let Ok((t, w, _)) = rx.try_recv() {
                        check(&w, t);
                    }
                })
            })
            .collect();
        drop(txs);
        for worker in workers {
            worker.join().unwrap();
        }
    }

    /// A thread-local whose destructor runs after the bins are gone (its
    /// destructor was registered first) frees and allocates small blocks
    /// then: they go straight to `System`, and nothing breaks.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn blocks_freed_and_allocated_after_a_threads_bins_are_gone_go_to_the_system() {
        // Boxed: each a small block of its own, which is the point.
        #[allow(clippy::vec_box)]
        struct Late(Vec<Box<[u8; 24]>>);
        impl Drop for Late {
            fn drop(&mut self) {
                assert!(bins::BINS.try_with(|_| ()).is_err(), "the bins are gone");
                let more: Vec<Box<[u8; 40]>> = (0..300).map(|i| Box::new([i as u8; 40])).collect();
                assert!(more.iter().enumerate().all(|(i, b)| b[39] == i as u8));
                self.0.clear();
            }
        }
        thread_local! {
            static LATE: std::cell::RefCell<Late> = const { std::cell::RefCell::new(Late(Vec::new())) };
        }
        extern "C" fn run(_: *mut libc::c_void) -> *mut libc::c_void {
            // LATE's destructor is registered before any allocation
            // registers the bins', so it runs after theirs.
            LATE.with(|_| ());
            LATE.with(|l| {
                l.borrow_mut()
                    .0
                    .extend((0..600).map(|i| Box::new([i as u8; 24])))
            });
            std::ptr::null_mut()
        }
        for _ in 0..20 {
            let mut thread: libc::pthread_t = 0;
            // SAFETY: a plain thread running `run` (which takes and returns
            // nothing), joined before the next; `thread` outlives both calls.
            unsafe {
                let null = std::ptr::null_mut();
                assert_eq!(
                    libc::pthread_create(&mut thread, std::ptr::null(), run, null),
                    0
                );
                assert_eq!(libc::pthread_join(thread, std::ptr::null_mut()), 0);
            }
        }
    }
}
