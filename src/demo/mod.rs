//! Demo behaviors written with the vm's builder API: PingPong (the
//! protocol's normative demo) and a small Battleship; and the PingPong
//! demo's roles, played on a running node through its public API.
pub mod battleship;
pub mod pingpong;
pub mod roles;

pub use roles::{orchestrate, serve, DemoReport};
