//! Moving bytes: reading frames out of sockets (until `WouldBlock`, as
//! edge-triggered readiness requires) and flushing each connection's queued
//! frames, with the write interest kept in step with the write buffer.

use mio::Token;

use crate::codec;
use log::{info, warn};

use super::conn::{Conn, Phase, ReadOutcome};
use super::{Reactor, FIRST_CONN, PEER_CLOSED};

impl Reactor {
    pub(super) fn mark_dirty(&mut self, key: usize) {
        if !self.dirty.contains(&key) {
            self.dirty.push(key);
        }
    }

    pub(super) fn flush_dirty(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for key in dirty.drain(..) {
            self.flush_conn(key);
        }
        self.dirty = dirty;
    }

    pub(super) fn flush_conn(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.phase == Phase::Connecting {
            return;
        }
        if let Err(e) = conn.flush() {
            let reason = format!("write failed: {e}");
            self.close(key, &reason);
            return;
        }
        if conn.unsent() > self.config.max_write_buffer {
            let reason = format!(
                "peer is not reading: {} bytes wait to be sent (limit {}, --max-write-buffer)",
                conn.unsent(),
                self.config.max_write_buffer
            );
            warn!("{}: {reason}; disconnecting", conn.label());
            self.close(key, &reason);
            return;
        }
        self.update_interest(key);
    }

    pub(super) fn update_interest(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let wanted = conn.wanted_interest();
        if wanted.is_writable() != conn.write_interest {
            conn.write_interest = wanted.is_writable();
            if let Err(e) =
                self.poll
                    .registry()
                    .reregister(&mut conn.stream, Token(FIRST_CONN + key), wanted)
            {
                let reason = format!("reregister failed: {e}");
                self.close(key, &reason);
            }
        }
    }

    pub(super) fn handle_conn_event(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return; // closed earlier in this batch of events
        };
        if conn.phase == Phase::Connecting {
            match conn.check_connected() {
                Ok(false) => return,
                Ok(true) => {
                    conn.phase = Phase::AwaitHello;
                    info!("connected to {}", conn.remote);
                }
                Err(e) => {
                    self.on_dial_failed(key, &e);
                    return;
                }
            }
        }
        self.read_conn(key);
        self.flush_conn(key);
    }

    /// Reads and handles frames until the socket would block. `Err` is a
    /// protocol error (the peer sent something it must not).
    pub(super) fn read_conn(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let serial = conn.serial;
        let Some(mut decoder) = conn.decoder.take() else {
            return;
        };
        let outcome = self.read_frames(key, serial, &mut decoder);
        match self.conns.get_mut(key) {
            Some(conn) if conn.serial == serial => conn.decoder = Some(decoder),
            _ => return, // closed while handling a frame
        }
        match outcome {
            Ok(ReadOutcome::Open) => {}
            Ok(ReadOutcome::Eof) if decoder_was_mid_frame(&self.conns[key]) => {
                self.close(key, "connection closed in the middle of a frame")
            }
            Ok(ReadOutcome::Eof) => self.close(key, PEER_CLOSED),
            Ok(ReadOutcome::Broken(reason)) => self.close(key, &reason),
            Err(reason) => {
                warn!(
                    "protocol error from {}: {reason}; closing this connection",
                    self.conns[key].label()
                );
                self.close_quietly(key, &format!("protocol error: {reason}"));
            }
        }
    }

    pub(super) fn read_frames(
        &mut self,
        key: usize,
        serial: u64,
        decoder: &mut codec::FrameDecoder,
    ) -> Result<ReadOutcome, String> {
        loop {
            if self.backlog_full() {
                // Bounded memory: leave the bytes in the kernel (TCP pushes
                // back on the sender) until the interpreter catches up.
                if !self.paused.contains(&key) {
                    self.paused.push(key);
                }
                self.handoff.set_reactor_paused(true);
                return Ok(ReadOutcome::Open);
            }
            let Some(conn) = self.conns.get_mut(key) else {
                return Ok(ReadOutcome::Open);
            };
            let done = conn.read_some(decoder);
            loop {
                let greeted = self.conns[key].peer.is_some();
                let payload = match decoder.next_frame() {
                    Ok(Some(payload)) => payload,
                    Ok(None) => break,
                    Err(e) if greeted => return Err(format!("bad frame: {e}")),
                    Err(e) => return Err(format!("bad frame before `hello`: {e}")),
                };
                match codec::decode(payload) {
                    Ok(msg) => self.handle_message(key, msg)?,
                    Err(e) if e.is_unknown_type() && greeted => {
                        warn!("{}: ignoring a message: {e}", self.conns[key].label())
                    }
                    // Lifecycle rule 1: the first frame must be `hello`,
                    // even where an unknown type would later be ignored.
                    Err(e) if e.is_unknown_type() => {
                        return Err(format!("first frame was not `hello`: {e}"))
                    }
                    Err(e) => return Err(format!("bad message: {e}")),
                }
                match self.conns.get(key) {
                    Some(c) if c.serial == serial => {
                        if !greeted && c.peer.is_some() {
                            decoder.raise_max_frame(self.config.max_frame);
                        }
                    }
                    _ => return Ok(ReadOutcome::Open),
                }
            }
            if let Some(outcome) = done {
                return Ok(outcome);
            }
        }
    }
}

fn decoder_was_mid_frame(conn: &Conn) -> bool {
    conn.decoder.as_ref().is_some_and(|d| d.buffered() > 0)
}
