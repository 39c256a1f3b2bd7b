//! One peer socket as the reactor holds it: the stream, its read buffer
//! (the codec's `FrameDecoder`), its TLS session if the node has TLS, and
//! the registered interest. Everything else about the connection (its
//! phase, its peer, its write buffer) is the protocol core's.
//!
//! Without TLS, bytes go straight between the stream and the decoder (or
//! the core's write buffer). With TLS, rustls sits between them:
//!
//! ```text
//!   stream ─read_tls─▶ rustls ─process_new_packets, reader()─▶ decoder.read_buf()
//!   stream ◀─write_tls─ rustls ◀─writer()─ core.unsent(conn)
//! ```
//!
//! Plaintext is copied once on each side (out of rustls into the decoder,
//! out of the core's buffer into rustls); from the decoder on, framing is
//! zero-copy as without TLS.

use std::io::{self, Read, Write};

use mio::net::TcpStream;

use rustls::Connection;

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
    /// The TLS session failed (rustls's error).
    Tls(String),
}

#[derive(Debug)]
pub struct Socket {
    pub conn: ConnId,
    /// Bytes read since the reactor last took the count (for metrics).
    pub read_bytes: usize,
    pub stream: TcpStream,
    pub decoder: FrameDecoder,
    /// A dialled socket whose TCP handshake has not finished.
    pub connecting: bool,
    /// Whether WRITABLE is part of the registered interest.
    pub write_interest: bool,
    /// The TLS session, when the node has TLS (boxed: a plaintext socket
    /// stays small and allocates nothing for it).
    pub tls: Option<Box<Connection>>,
}

impl Socket {
    pub fn new(
        conn: ConnId,
        stream: TcpStream,
        connecting: bool,
        max_frame: usize,
        tls: Option<Box<Connection>>,
    ) -> Socket {
        Socket {
            read_bytes: 0,
            conn,
            stream,
            // A stranger that has not said hello gets a small frame limit;
            // it is raised once the core accepts the peer's hello.
            decoder: FrameDecoder::new(max_frame.min(HELLO_MAX_FRAME)),
            connecting,
            write_interest: true,
            tls,
        }
    }

    /// One `read` into the decoder: `None` when bytes arrived (read
    /// again), else why reading stops for now.
    pub fn read_some(&mut self) -> Option<ReadOutcome> {
        if self.tls.is_some() {
            return self.read_some_tls();
        }
        loop {
            match self.stream.read(self.decoder.read_buf()) {
                Ok(0) => return Some(ReadOutcome::Eof),
                Ok(n) => {
                    self.decoder.commit(n);
                    self.read_bytes += n;
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

    /// [`read_some`](Self::read_some) through TLS: plaintext rustls holds
    /// already goes first; otherwise TLS records are read from the stream
    /// and decrypted until they yield plaintext or the stream would block.
    fn read_some_tls(&mut self) -> Option<ReadOutcome> {
        let tls = self.tls.as_mut().expect("a TLS socket");
        loop {
            match tls.reader().read(self.decoder.read_buf()) {
                Ok(0) => return Some(ReadOutcome::Eof), // close_notify
                Ok(n) => {
                    self.decoder.commit(n);
                    self.read_bytes += n;
                    return None;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // TCP closed without close_notify: a truncation, but to
                // us no different from a plaintext EOF (frames are whole
                // or the decoder says so).
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Some(ReadOutcome::Eof)
                }
                Err(e) => return Some(ReadOutcome::Broken(e.to_string())),
            }
            match tls.read_tls(&mut self.stream) {
                Ok(0) => return Some(ReadOutcome::Eof),
                Ok(_) => {
                    if let Err(e) = tls.process_new_packets() {
                        // Tell the peer why (the alert rustls queued), if
                        // the socket takes it now.
                        let _ = tls.write_tls(&mut self.stream);
                        return Some(ReadOutcome::Tls(explained_tls_error(
                            &e,
                            tls.is_handshaking(),
                        )));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Some(ReadOutcome::Open),
                Err(e) => return Some(ReadOutcome::Broken(e.to_string())),
            }
        }
    }

    /// Moves what it can of `unsent` into the TLS session, then writes
    /// TLS records to the stream until it would block or none are left:
    /// how much of `unsent` rustls took (it buffers at most 64 KiB; the
    /// rest stays in the core, counted against its write limit).
    pub fn write_some_tls(&mut self, unsent: &[u8]) -> io::Result<usize> {
        // Records first: a full rustls buffer takes nothing, and the
        // socket must then be driven to `WouldBlock` for WRITABLE to come.
        if self.drain_tls()? || unsent.is_empty() {
            return Ok(0);
        }
        let taken = self
            .tls
            .as_mut()
            .expect("a TLS socket")
            .writer()
            .write(unsent)?;
        self.drain_tls()?;
        Ok(taken)
    }

    /// Writes TLS records until none are left (`false`) or the socket
    /// would block (`true`).
    fn drain_tls(&mut self) -> io::Result<bool> {
        let tls = self.tls.as_mut().expect("a TLS socket");
        while tls.wants_write() {
            match tls.write_tls(&mut self.stream) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }

    /// Whether the TLS session has records waiting for the stream.
    pub fn tls_wants_write(&self) -> bool {
        self.tls.as_ref().is_some_and(|tls| tls.wants_write())
    }

    /// The last words on a closing socket: `linger` (the core's unsent
    /// bytes), then, with TLS, a close_notify; whatever the socket takes
    /// without blocking.
    pub fn say_goodbye(&mut self, linger: &[u8]) {
        if self.tls.is_none() {
            if !linger.is_empty() {
                let _ = self.write_some(linger);
            }
            return;
        }
        let tls = self.tls.as_mut().expect("a TLS socket");
        if !linger.is_empty() {
            let _ = tls.writer().write(linger);
        }
        tls.send_close_notify();
        let _ = self.write_some_tls(&[]);
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

/// rustls's error, said as what it most likely means where that is not
/// plain: bytes that are no TLS record at all, before the handshake is
/// done, are a peer that speaks plaintext.
fn explained_tls_error(e: &rustls::Error, handshaking: bool) -> String {
    use rustls::{Error, InvalidMessage};
    match e {
        Error::InvalidMessage(InvalidMessage::InvalidContentType) if handshaking => {
            "the peer spoke plaintext, not TLS (are `--tls-*` missing there?)".into()
        }
        e => e.to_string(),
    }
}
