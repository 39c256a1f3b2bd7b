//! avm: a distributed object virtual machine.
//!
//! An avm node is one process hosting *objects* (a behavior plus a small
//! state) that talk only by *calls* carrying values ([`vm::Val`]). Calls to
//! objects on other nodes cross TCP transparently; only values cross, never
//! code.
//!
//! Crate layout, one concern per module:
//!
//! - [`vm`]: values, programs, the sans-IO interpreter. No sockets, no threads.
//! - [`codec`]: bytes <-> protocol messages. Takes `&[u8]`, appends to `Vec<u8>`.
//! - [`protocol`]: the peer protocol's rules, sans-IO: events and time in,
//!   actions and bytes out.
//! - [`reactor`]: the mio event loop around the protocol core; the only
//!   module that touches sockets.
//! - [`store`]: a durable node's objects on disk (redb), one transaction
//!   per group commit.
//! - [`node`]: the interpreter thread, the handoff between the threads,
//!   and the glue that starts a node.
//! - [`demo`]: the PingPong and Battleship behaviors, and the PingPong roles.
//! - [`heap`]: hand memory freed after a burst back to the system
//!   (`avm-node` opts in at start-up), and [`heap::SmallBlocks`], a
//!   per-thread cache of small blocks that `avm-node` installs as its
//!   allocator: the crate's only `unsafe` code.
//! - [`logger`]: the stderr logger `avm-node` installs. The library itself
//!   logs only through the [`log`](https://docs.rs/log) facade, so an
//!   application that embeds nodes routes or silences their lines with its
//!   own logger.
// Denied, not forbidden: `heap` allows it for two calls and for
// `SmallBlocks` (an allocator is unsafe by contract), each with its SAFETY.
#![deny(unsafe_code)]

pub mod codec;
pub mod demo;
pub mod heap;
pub mod logger;
pub mod node;
pub mod observe;
pub mod protocol;
pub mod quiet_panic;
pub mod reactor;
pub mod store;
pub mod vm;

/// The unit tests run on the allocator `avm-node` installs, so every one
/// of them exercises it too.
#[cfg(test)]
#[global_allocator]
static TEST_HEAP: heap::SmallBlocks = heap::SmallBlocks;
