//! Sockets the node is done with at shutdown, drained before they close.
//!
//! What the core queued last on a connection (the interpreter's last
//! answers, the `close` frame) is written whole, then the write side is
//! shut, and what the peer still sends is read and dropped until it stops.
//! So the peer sees an orderly end of stream after our last byte. Closing
//! a socket whose peer is still sending makes the kernel answer with a
//! reset, and a reset makes the peer's kernel discard what it had received
//! and not yet read: the very answers the node waited for its disk to send.
//!
//! ```text
//!   rest to write ──all written──▶ shut down writing ──peer's EOF, or
//!                                  (TLS: close_notify   quiet for QUIET──▶ dropped
//!                                   first)
//! ```
//!
//! Bounded: the reactor drains for at most [`DRAIN_MOST`] in all, and a
//! peer that sends nothing for [`QUIET`] after our last byte is done.

use std::io::{self, Read};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use super::socket::Socket;

/// The longest a stopping reactor drains its sockets.
pub const DRAIN_MOST: Duration = Duration::from_secs(1);

/// A peer silent this long after our write side is shut is done with us.
pub const QUIET: Duration = Duration::from_millis(50);

/// One socket on its way out.
#[derive(Debug)]
pub struct Closing {
    socket: Socket,
    /// Bytes still to write (TLS: still to hand to the session).
    rest: Vec<u8>,
    /// The TLS close_notify went to the session.
    said_bye: bool,
    /// The write side is shut (after the TLS close_notify, if TLS).
    shut: bool,
    /// When the peer last sent a byte, or when we shut our side.
    heard_at: Instant,
}

impl Closing {
    pub fn new(socket: Socket, rest: Vec<u8>, now: Instant) -> Closing {
        Closing {
            socket,
            rest,
            said_bye: false,
            shut: false,
            heard_at: now,
        }
    }

    /// One round of writing, shutting and reading, without blocking:
    /// whether the socket is done (the peer closed, it failed, or the peer
    /// was quiet long enough after our side shut).
    pub fn step(&mut self, now: Instant, scratch: &mut [u8]) -> bool {
        if self.write(now).is_err() {
            return true;
        }
        loop {
            match self.socket.stream.read(scratch) {
                Ok(0) => return true,
                Ok(_) => self.heard_at = now,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => return true,
            }
        }
        self.shut && now.saturating_duration_since(self.heard_at) >= QUIET
    }

    /// Writes what the socket takes of the rest; once all of it is out,
    /// shuts the write side (after TLS's close_notify and its records).
    fn write(&mut self, now: Instant) -> io::Result<()> {
        if self.shut {
            return Ok(());
        }
        let tls = self.socket.tls.is_some();
        if !self.rest.is_empty() {
            let taken = if tls {
                self.socket.write_some_tls(&self.rest)?
            } else {
                self.socket.write_some(&self.rest)?
            };
            self.rest.drain(..taken);
            if !self.rest.is_empty() {
                return Ok(());
            }
        }
        if let Some(session) = self.socket.tls.as_mut().filter(|_| !self.said_bye) {
            session.send_close_notify();
            self.said_bye = true;
        }
        if tls {
            // Drives the session's records (the close_notify among them).
            self.socket.write_some_tls(&[])?;
            if self.socket.tls_wants_write() {
                return Ok(());
            }
        }
        let _ = self.socket.stream.shutdown(Shutdown::Write);
        self.shut = true;
        self.heard_at = now;
        Ok(())
    }
}
