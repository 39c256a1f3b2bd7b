//! The process's heap: memory freed after a burst goes back to the system.
//!
//! glibc's malloc raises its trim threshold each time it frees a block it
//! had served with `mmap` (128 KiB and up), to twice that block's size and
//! up to 64 MiB. After a burst (a million objects created and destroyed,
//! a large directory snapshot, a map that grew and shrank), a heap is
//! then trimmed only once 64 MiB lie free at its top: a node whose live
//! data went back to a few MiB kept 80-100 MiB resident (BENCHMARKS.md,
//! "Memory that comes back"). Setting the threshold, even to glibc's own
//! default, turns that adjustment off, so `free` gives back a heap's top
//! past 128 KiB, as it did before the first large free.
//!
//! That gives back a heap's *top*. Memory freed below live blocks (a
//! thread's arena after a million objects came and went, with a few
//! survivors scattered through it) stays resident until `malloc_trim`
//! hands its free pages back: [`trim`] does that, and a node's
//! interpreter calls it when it goes idle after work, at most once a
//! second, when the idle thread gave something back or the node holds
//! fewer objects than at its last idle moment. Measured (`examples/scale.rs`,
//! BENCHMARKS.md): after 1M objects created and destroyed, RSS went from
//! 1.46x to 1.11-1.13x what it was before.
//!
//! These two calls and [`SmallBlocks`] (a per-thread cache of small
//! blocks a program may install as its allocator, `small_blocks.rs`) are
//! the crate's only `unsafe` code. [`return_freed_memory`]
//! changes a process-wide setting, so the library never makes it on its
//! own: `avm-node` calls it at start-up, and a program that embeds nodes
//! may. [`trim`] runs only in a process that did. Elsewhere than Linux
//! with glibc both do nothing.

use std::sync::atomic::{AtomicBool, Ordering};

mod small_blocks;

pub use small_blocks::SmallBlocks;

/// The process called [`return_freed_memory`] and the setting took.
static OPTED_IN: AtomicBool = AtomicBool::new(false);

/// glibc's default `M_TRIM_THRESHOLD`: 128 KiB.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: libc::c_int = 128 * 1024;

/// Makes the allocator give memory freed after a burst back to the system
/// (see the module docs); answers whether the setting took. Call it once,
/// early, before threads that allocate start.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn return_freed_memory() -> bool {
    // SAFETY: `mallopt` takes two integers by value and only sets one of
    // glibc malloc's parameters, under the allocator's own lock. It reads
    // or writes no memory of ours and has no precondition a caller could
    // break: M_TRIM_THRESHOLD is a parameter every glibc knows, and a
    // positive value is in its range. It answers 1 on success.
    let took = unsafe { libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 };
    // ORDERING: Relaxed: a flag read later by other threads, set before
    // they start (and a late reader only skips a trim).
    OPTED_IN.store(took, Ordering::Relaxed);
    took
}

/// Elsewhere than Linux with glibc: nothing to set.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn return_freed_memory() -> bool {
    false
}

/// Whether [`trim`] does anything in this process.
pub fn trimming() -> bool {
    // ORDERING: Relaxed: see `return_freed_memory`.
    OPTED_IN.load(Ordering::Relaxed)
}

/// Hands the free pages of every arena back to the system now, in a
/// process that called [`return_freed_memory`]; answers whether it ran.
/// It walks the allocator's free lists under each arena's lock (a few
/// microseconds to a few milliseconds, after a burst), so it belongs where
/// a thread is about to sleep, not on a hot path.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn trim() -> bool {
    if !trimming() {
        return false;
    }
    // This thread's kept small blocks first: scattered through its arena,
    // each would keep a page resident.
    SmallBlocks::release_here();
    // SAFETY: `malloc_trim` takes an integer by value (the padding to leave
    // at the top of the main heap; 0 leaves none) and only returns free
    // pages to the system, under each arena's own lock. It reads or writes
    // no memory of ours: live blocks are untouched, so no pointer we hold
    // is affected. It answers whether any memory was released.
    unsafe { libc::malloc_trim(0) };
    true
}

/// Elsewhere than Linux with glibc: nothing to trim.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn trim() -> bool {
    false
}

/// A node's thread gives back what a burst grew once it has had nothing to
/// do for this long. Not at once: with more busy threads than cores (four
/// nodes on two), threads park between every batch, and shrinking there
/// made the next batch allocate its buffers again (4 nodes all-to-all fell
/// from 0.95-1.43M to 0.77-0.88M calls/s).
pub(crate) const IDLE_AFTER: std::time::Duration = std::time::Duration::from_millis(100);

/// For a thread that went idle: an empty queue or table that grew past 64
/// slots goes back to 16 (answers whether it did). Steady traffic that
/// needs more keeps them while it lasts, and one that never grew past 64
/// never reallocates.
pub(crate) fn shrink_when_idle(table: &mut impl Slots) -> bool {
    let shrink = table.is_empty() && table.capacity() > 64;
    if shrink {
        table.shrink_to(16);
    }
    shrink
}

/// The collections a node's threads keep between bursts.
pub(crate) trait Slots {
    fn is_empty(&self) -> bool;
    fn capacity(&self) -> usize;
    fn shrink_to(&mut self, slots: usize);
}

/// Each collection answers with its own inherent methods of these names.
macro_rules! slots {
    ($(impl[$($g:tt)*] $ty:ty;)*) => {$(
        impl<$($g)*> Slots for $ty {
            fn is_empty(&self) -> bool {
                self.is_empty()
            }
            fn capacity(&self) -> usize {
                self.capacity()
            }
            fn shrink_to(&mut self, slots: usize) {
                self.shrink_to(slots);
            }
        }
    )*};
}

slots! {
    impl[T] Vec<T>;
    impl[T] std::collections::VecDeque<T>;
    impl[K: std::hash::Hash + Eq, V, S: std::hash::BuildHasher] std::collections::HashMap<K, V, S>;
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_idle_queue_gives_back_only_a_burst() {
        let mut burst: Vec<u64> = Vec::with_capacity(1000);
        super::shrink_when_idle(&mut burst);
        assert!(burst.capacity() <= 64, "{}", burst.capacity());
        let mut busy: Vec<u64> = Vec::with_capacity(1000);
        busy.push(1);
        super::shrink_when_idle(&mut busy);
        assert!(busy.capacity() >= 1000, "a queue in use keeps its slots");
        let mut steady: Vec<u64> = Vec::with_capacity(64);
        let before = steady.capacity();
        super::shrink_when_idle(&mut steady);
        assert_eq!(
            steady.capacity(),
            before,
            "steady traffic never reallocates"
        );
        // Deques and maps alike.
        let mut deque: std::collections::VecDeque<u64> = (0..1000).collect();
        deque.clear();
        assert!(super::shrink_when_idle(&mut deque) && deque.capacity() <= 64);
        let mut map: std::collections::HashMap<u64, u64> = (0..1000).map(|i| (i, i)).collect();
        assert!(
            !super::shrink_when_idle(&mut map),
            "a table in use keeps its slots"
        );
        map.clear();
        assert!(super::shrink_when_idle(&mut map) && map.capacity() <= 64);
    }

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_takes_the_setting_and_then_trims() {
        assert!(super::return_freed_memory());
        assert!(super::trimming());
        assert!(super::trim());
    }
}
