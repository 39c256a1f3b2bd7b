//! Integration tests: real `avm-node` processes on loopback, ports chosen
//! free at run time, and a raw protocol client written from the protocol
//! page alone. Nothing here sends traffic anywhere but 127.0.0.1.

mod auth;
mod badinput;
mod bank;
mod browser;
mod cli;
mod cluster;
mod demo;
mod durable;
mod embed;
mod faults;
mod moves;
mod names;
mod observe;
mod tls;
mod util;
mod wire;
