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
//! This is the crate's one `unsafe` call. It changes a process-wide
//! setting, so the library never makes it on its own: `avm-node` calls
//! [`return_freed_memory`] at start-up, and a program that embeds nodes
//! may. Elsewhere than Linux with glibc it does nothing.

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
    unsafe { libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 }
}

/// Elsewhere than Linux with glibc: nothing to set.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn return_freed_memory() -> bool {
    false
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_takes_the_setting() {
        assert!(super::return_freed_memory());
    }
}
