//! Demo behaviors written with the vm's builder API: PingPong (the
//! protocol's normative demo) and a small Battleship.
pub mod battleship;
pub mod pingpong;
