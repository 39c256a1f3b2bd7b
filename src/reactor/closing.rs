//! Sockets the node is done with at shutdown, drained before they close.
//!
//! What the core queued last on a connection (the interpreter's last
//! answers, the `close` frame) is written whole, then the write side is
//! shut, and what the peer still sends is read and dropped until the peer
//! closes its side too. So the peer sees an orderly end of stream after
//! our last byte. Closing a socket whose peer is still sending, or sends
//! later (a keepalive ping), makes the kernel answer with a reset, and a
//! reset makes the peer's kernel discard what it had received and not yet
//! read: the very answers the node waited for its disk to send. An avm
//! peer closes once it reads the `close` frame.
//!
//! ```text
//!   rest to write ──all written──▶ shut down writing ──peer's EOF──▶ dropped
//!                                  (TLS: close_notify
//!                                   first)
//! ```
//!
//! Bounded: the reactor drains for at most [`DRAIN_MOST`] in all, and
//! reads at most [`READ_MOST`] per socket per round, so a peer that never
//! stops sending cannot hold it.

use std::io::{self, Read};
use std::net::Shutdown;
use std::time::Duration;

use super::socket::Socket;

/// The longest a stopping reactor drains its sockets.
pub const DRAIN_MOST: Duration = Duration::from_secs(1);

/// What one round reads (and drops) from one socket at most.
pub const READ_MOST: usize = 1 << 20;

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
    /// The peer's end of stream came: nothing more to read, but the rest
    /// is still written (a client that half-closes after its calls still
    /// reads their answers).
    eof: bool,
}

impl Closing {
    pub fn new(socket: Socket, rest: Vec<u8>) -> Closing {
        Closing {
            socket,
            rest,
            said_bye: false,
            shut: false,
            eof: false,
        }
    }

    /// One round of writing, shutting and reading, without blocking:
    /// whether the socket is done (all written and the peer closed, or it
    /// failed).
    pub fn step(&mut self, scratch: &mut [u8]) -> bool {
        if self.write().is_err() {
            return true;
        }
        let mut read = 0;
        while !self.eof && read < READ_MOST {
            match self.socket.stream.read(scratch) {
                Ok(0) => self.eof = true,
                Ok(n) => read += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => return true,
            }
        }
        self.eof && self.shut
    }

    /// Writes what the socket takes of the rest; once all of it is out,
    /// shuts the write side (after TLS's close_notify and its records).
    fn write(&mut self) -> io::Result<()> {
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
        Ok(())
    }
}
