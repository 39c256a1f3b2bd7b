//! One peer socket as the reactor holds it: the stream, its read buffer
//! (the codec's `FrameDecoder`), and the registered interest. Everything
//! else about the connection (its phase, its peer, its write buffer) is
//! the protocol core's.

use std::io::{self, Read, Write};

use mio::net::TcpStream;

use crate::codec::FrameDecoder;
use crate::protocol::{ConnId, HELLO_MAX_FRAME};

/// What a round of reading found.
#[derive(Debug)]
pub enum ReadOutcome {
    /// Drained to `WouldBlock`; the connection stays open.
    Open,
    /// The peer closed its side.
    Eof,
    /// The socket failed (reset, ...): the reason.
    Broken(String),
}

#[derive(Debug)]
pub struct Socket {
    pub conn: ConnId,
    pub stream: TcpStream,
    pub decoder: FrameDecoder,
    /// A dialled socket whose TCP handshake has not finished.
    pub connecting: bool,
    /// Whether WRITABLE is part of the registered interest.
    pub write_interest: bool,
}

impl Socket {
    pub fn new(conn: ConnId, stream: TcpStream, connecting: bool, max_frame: usize) -> Socket {
        Socket {
            conn,
            stream,
            // A stranger that has not said hello gets a small frame limit;
            // it is raised once the core accepts the peer's hello.
            decoder: FrameDecoder::new(max_frame.min(HELLO_MAX_FRAME)),
            connecting,
            write_interest: true,
        }
    }

    /// One `read` into the decoder: `None` when bytes arrived (read
    /// again), else why reading stops for now.
    pub fn read_some(&mut self) -> Option<ReadOutcome> {
        loop {
            match self.stream.read(self.decoder.read_buf()) {
                Ok(0) => return Some(ReadOutcome::Eof),
                Ok(n) => {
                    self.decoder.commit(n);
                    return None;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Some(ReadOutcome::Open),
                Err(e) => return Some(ReadOutcome::Broken(e.to_string())),
            }
        }
    }

    /// Writes as much of `buf` as the socket takes without blocking:
    /// the count written (0 when it would block).
    pub fn write_some(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            match self.stream.write(buf) {
                Ok(0) if !buf.is_empty() => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
                Err(e) => return Err(e),
            }
        }
    }

    /// For a dialled socket: whether the TCP handshake has finished
    /// (`Ok(false)`: not yet, a spurious wake-up), per mio's guidance for
    /// `TcpStream::connect`.
    pub fn check_connected(&mut self) -> io::Result<bool> {
        if let Some(e) = self.stream.take_error()? {
            return Err(e);
        }
        match self.stream.peer_addr() {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(e),
        }
    }
}
