//! Demo behaviors written with the vm's builder API: PingPong (the
//! protocol's normative demo), a small Battleship, and a bank whose
//! transfers show what a read-call-write needs from the vm; and the PingPong
//! demo's roles, played on a running node through its public API.
pub mod bank;
pub mod battleship;
pub mod pingpong;
pub mod roles;

pub use roles::{orchestrate, serve, DemoReport};
