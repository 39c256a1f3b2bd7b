//! One TCP connection to a peer: its socket, its read buffer (the codec's
//! `FrameDecoder`), its write buffer, and where it is in the lifecycle.
//!
//! ```text
//!  dialled:  Connecting ──connected──▶ AwaitHello ──peer hello──▶ Ready
//!  accepted:                           AwaitHello ──peer hello──▶ Ready
//!                                                    Ready ──tie rule lost──▶ retired
//! ```
//!
//! Our `hello` is queued the moment the connection exists, so it is always
//! the first frame we send. Write-buffer invariant: `0 <= written <=
//! out.len()`; bytes before `written` have left, and the buffer is cleared
//! (capacity kept) whenever everything has left, so it never grows on a
//! peer that keeps up.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::Instant;

use mio::net::TcpStream;
use mio::Interest;

use crate::codec::{self, FrameDecoder, Message};
use crate::vm::MachineId;

/// The largest frame accepted before the peer's `hello`: a hello is a few
/// dozen bytes, and a stranger that has not said who it is should not
/// make us buffer a full `max_frame` (16 MiB by default) per connection.
pub const HELLO_MAX_FRAME: usize = 4096;

/// What the peer told us in its `hello`.
#[derive(Clone, Debug)]
pub struct Peer {
    pub machine: MachineId,
    pub prefix: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Dialled, TCP handshake not finished yet.
    Connecting,
    /// Waiting for the peer's `hello`.
    AwaitHello,
    /// Hellos exchanged; calls may flow.
    Ready,
}

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
pub struct Conn {
    pub stream: TcpStream,
    pub remote: SocketAddr,
    /// Distinguishes this connection from a later one reusing the token.
    pub serial: u64,
    /// `None` only while the reactor is parsing frames out of it.
    pub decoder: Option<FrameDecoder>,
    out: Vec<u8>,
    written: usize,
    /// The largest frame we send (and accept).
    max_frame: usize,
    pub phase: Phase,
    /// The dial slot that made this connection, or `None` if accepted.
    pub dial_slot: Option<usize>,
    pub peer: Option<Peer>,
    /// Lost the duplicate-connection tie: no new calls go out on it; it
    /// closes once nothing is in flight either way.
    pub retired: bool,
    /// When it lost a tie (stays set if later promoted back).
    pub retired_at: Option<Instant>,
    /// Our calls on this connection still awaiting a response.
    pub calls_out: u32,
    /// The peer's calls on this connection we have not answered yet.
    pub calls_in: u32,
    /// Whether WRITABLE is part of the registered interest.
    pub write_interest: bool,
    pub opened: Instant,
    /// When bytes last arrived (keepalive: silence for 3 intervals is death).
    pub last_heard: Instant,
    /// When the peer's hello arrived.
    pub hello_at: Option<Instant>,
}

impl Conn {
    pub fn new(
        stream: TcpStream,
        remote: SocketAddr,
        serial: u64,
        max_frame: usize,
        dial_slot: Option<usize>,
    ) -> Conn {
        Conn {
            stream,
            remote,
            serial,
            decoder: Some(FrameDecoder::new(max_frame.min(HELLO_MAX_FRAME))),
            out: Vec::with_capacity(4096),
            written: 0,
            max_frame,
            phase: if dial_slot.is_some() {
                Phase::Connecting
            } else {
                Phase::AwaitHello
            },
            dial_slot,
            peer: None,
            retired: false,
            retired_at: None,
            calls_out: 0,
            calls_in: 0,
            write_interest: false,
            opened: Instant::now(),
            last_heard: Instant::now(),
            hello_at: None,
        }
    }

    /// A name for log lines: the machine once known, else the address.
    pub fn label(&self) -> String {
        match &self.peer {
            Some(p) => format!("{} ({})", p.machine, self.remote),
            None => self.remote.to_string(),
        }
    }

    pub fn machine(&self) -> Option<&MachineId> {
        self.peer.as_ref().map(|p| &p.machine)
    }

    /// Appends one frame to the write buffer; a message over the frame
    /// maximum is refused (and nothing is appended).
    pub fn queue(&mut self, msg: &Message<'_>) -> Result<(), codec::EncodeError> {
        codec::encode_limited(&mut self.out, msg, self.max_frame)
    }

    /// Bytes queued but not yet written to the socket.
    pub fn unsent(&self) -> usize {
        self.out.len() - self.written
    }

    /// Writes until the buffer is empty or the socket would block. All
    /// queued frames go out in as few `write` calls as the kernel allows.
    pub fn flush(&mut self) -> io::Result<()> {
        while self.written < self.out.len() {
            match self.stream.write(&self.out[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        if self.written == self.out.len() {
            self.out.clear();
            self.written = 0;
        } else if self.written > self.out.len() / 2 {
            // Most of it left: slide the tail down so the buffer does not
            // creep forward forever on a slow reader.
            self.out.drain(..self.written);
            self.written = 0;
        }
        Ok(())
    }

    /// One `read` into the decoder: `None` when bytes arrived (read
    /// again), else why reading stops for now.
    pub fn read_some(&mut self, decoder: &mut FrameDecoder) -> Option<ReadOutcome> {
        loop {
            match self.stream.read(decoder.read_buf()) {
                Ok(0) => return Some(ReadOutcome::Eof),
                Ok(n) => {
                    decoder.commit(n);
                    self.last_heard = Instant::now();
                    return None;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Some(ReadOutcome::Open),
                Err(e) => return Some(ReadOutcome::Broken(format!("read failed: {e}"))),
            }
        }
    }

    /// The interest this connection needs now: READABLE always, WRITABLE
    /// while connecting or while bytes wait for the socket.
    pub fn wanted_interest(&self) -> Interest {
        if self.phase == Phase::Connecting || self.unsent() > 0 {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        }
    }

    /// For a dialled connection: whether the TCP handshake has finished
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
