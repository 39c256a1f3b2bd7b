//! A per-thread cache of small blocks in front of the system allocator,
//! for programs that run nodes to install as their `#[global_allocator]`.
//!
//! Why: a remote call's caller allocates small blocks the API asks for
//! (each continuation, each `Just` answer) and frees them a few steps
//! later, on the same thread. glibc spends about 150 instructions on each
//! such pair (its per-thread cache comes after size and double-free
//! checks, and overflows on a batch of hundreds); this cache spends about
//! 20. Measured on the pair at K = 256 (BENCHMARKS.md, issue 16, seventh
//! pass): the caller's interpreter went from 2,109 to 1,655 instructions
//! per call, 8% of the four threads together.
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
//! - A thread keeps at most 4 × [`KEEP`] blocks (64 KiB); they go back to
//!   `System` when the thread ends. So memory freed after a burst comes
//!   back as it does without the cache (the memory goals of issue 16 hold:
//!   BENCHMARKS.md).
//!
//! The `unsafe` here is the allocator contract itself (`GlobalAlloc` is
//! an unsafe trait) and the calls into `System` that it forwards; each
//! block says why it holds. The kept pointers live in `Cell`s, so no
//! reference to them is ever made unsafely. Only on Linux with glibc,
//! where a thread's destructors are registered without allocating
//! (`__cxa_thread_atexit_impl`); elsewhere the cache is a plain
//! pass-through to `System`.

#![allow(unsafe_code)]

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
    Layout::from_size_align((k + 1) * CLASS_STEP, ALIGN).expect("a small power-of-two alignment")
}

/// The cache: install it with
/// `#[global_allocator] static HEAP: avm::heap::SmallBlocks = avm::heap::SmallBlocks;`.
#[derive(Debug, Default, Clone, Copy)]
pub struct SmallBlocks;

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

    impl Drop for Bins {
        fn drop(&mut self) {
            for (k, bin) in self.0.iter().enumerate() {
                #[cfg(test)]
                RETURNED.fetch_add(bin.len.get(), std::sync::atomic::Ordering::Relaxed);
                for block in &bin.blocks[..bin.len.get()] {
                    // SAFETY: a kept block came from `System.alloc` with
                    // `class_layout(k)` and is free (module invariants);
                    // emptying the bin below makes sure it is given back
                    // once.
                    unsafe { System.dealloc(block.get(), class_layout(k)) };
                }
                bin.len.set(0);
            }
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
            // SAFETY: as `alloc`; `System` gets fresh zeroed pages for a
            // large block without writing them.
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
            assert!(
                (0..48).all(|i| z.add(i).read() == 0),
                "a kept block comes back zeroed"
            );
            assert_eq!(z as usize % 16, 0);
            heap.dealloc(z, l);
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
}
