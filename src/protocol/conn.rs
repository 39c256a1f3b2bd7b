//! One connection's protocol state: where it is in its lifecycle, who is
//! on the other end, the calls in flight on it, and its write buffer.
//!
//! ```text
//!  dialled:  Connecting ──connected──▶ AwaitHello ──peer hello──▶ AwaitProof ──good proof──▶ Ready
//!  accepted:                           AwaitHello ──peer hello──▶ AwaitProof ──good proof──▶ Ready
//!                                                                  Ready ──tie rule lost──▶ retired
//! ```
//!
//! Our `hello` is queued the moment the connection exists, so it is always
//! the first frame we send. Write-buffer invariant: `0 <= written <=
//! out.len()`; bytes before `written` have left, and the buffer is cleared
//! whenever everything has left, so it never grows on a peer that keeps
//! up; its capacity is kept, unless a burst grew it past 1 MiB.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::codec::{self, Message};
use crate::vm::{MachineId, ObjectId, OwnedObjects, SuspendToken};

use super::auth::NONCE_LEN;
use super::calls::Outbound;
use super::hello::Peer;
use super::table::IdTable;
use super::ConnId;

/// The largest frame accepted before the peer's `hello`: a hello is a few
/// dozen bytes, and a stranger that has not said who it is should not
/// make us buffer a full `max_frame` (16 MiB by default) per connection.
pub const HELLO_MAX_FRAME: usize = 4096;

/// The longest `close` reason sent or kept (bytes; cut on a character
/// boundary): a reason names a peer or a frame, never a payload.
pub const CLOSE_REASON_MAX: usize = 512;

/// A write buffer's capacity at the start.
const OUT_INITIAL: usize = 4096;
/// An emptied write buffer larger than this shrinks back to
/// [`OUT_INITIAL`]: a burst (a large answer, a snapshot's chunks) gives its
/// memory back.
const OUT_SHRINK_ABOVE: usize = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Dialled, TCP handshake not finished yet.
    Connecting,
    /// Waiting for the peer's `hello`.
    AwaitHello,
    /// Hellos exchanged, our proof sent; waiting for the peer's proof.
    /// Nothing but `auth` is accepted.
    AwaitProof,
    /// Hellos exchanged; calls may flow.
    Ready,
}

#[derive(Debug)]
pub struct Conn {
    pub id: ConnId,
    pub remote: SocketAddr,
    /// Our end's address, for a dialled connection (to recognise a dial
    /// that reached this very node).
    pub local: Option<SocketAddr>,
    pub phase: Phase,
    /// The dial slot that made this connection, or `None` if accepted.
    pub dial_slot: Option<usize>,
    /// Set only once the peer proved it knows the cluster key.
    pub peer: Option<Peer>,
    /// Who the peer's `hello` says it is, until its proof arrives.
    pub claimed: Option<Peer>,
    /// Our challenge on this connection (sent in our `hello`).
    pub nonce: [u8; NONCE_LEN],
    /// The peer's challenge, from its `hello`.
    pub their_nonce: [u8; NONCE_LEN],
    /// The peer's life, from its `hello` (0 if it sent none).
    pub their_boot: u64,
    /// The compact version the peer's `hello` offered (0: none): from 1
    /// its calls and answers go compact, from 2 our snapshot goes as
    /// `objects` (`codec::compact`).
    pub compact: u32,
    /// Lost the duplicate-connection tie: no new calls go out on it; it
    /// closes once nothing is in flight either way.
    pub retired: bool,
    /// When it lost a tie (stays set if later promoted back).
    pub retired_at: Option<Instant>,
    /// When a call last arrived on it: a retired connection's grace counts
    /// from that too, since a peer that has not yet seen the tie (its
    /// interpreter behind, say) goes on calling on it.
    pub called_at: Option<Instant>,
    /// Why the peer said it is closing this connection (its `close`), cut
    /// to [`CLOSE_REASON_MAX`] bytes: logged when the connection closes.
    pub peer_closing: Option<String>,
    /// We sent our `close` on it (at most one).
    pub closing_said: bool,
    /// It is in the core's list of connections to flush: a broadcast to
    /// every connection checks this flag, not the whole list, for each.
    pub dirty: bool,
    /// Our calls on this connection awaiting a `call_response`, by request_id.
    pub outbound: IdTable<Outbound>,
    /// The `adopt`s we sent on it and have no answer to, in time or late
    /// (request_id, the mover's token): a late answer to one settles a
    /// move in doubt ([`Event::LateAdoptAnswer`](super::Event::LateAdoptAnswer)).
    /// An entry stays until its answer comes or the connection closes,
    /// even once the move was settled otherwise; at most [`ADOPTS_KEPT`],
    /// the oldest dropped first. Moves are rare: on the call path this is
    /// empty, or a few entries scanned per answer.
    pub adopts: Vec<(u64, SuspendToken)>,
    /// The peer's calls on this connection we have not answered yet.
    pub calls_in: u32,
    out: Vec<u8>,
    written: usize,
    /// The largest frame we send.
    max_frame: usize,
    pub opened: Instant,
    /// When bytes last arrived (keepalive: silence for 3 intervals is death).
    pub last_heard: Instant,
    /// Bytes written when the backlog was last looked at: a peer that
    /// takes nothing for a while is stuck, one that takes bytes is only
    /// slow (see `Core::check_backlog`).
    pub taken: u64,
    /// When [`Conn::taken`] last grew (or the connection opened).
    pub taken_at: Instant,
    /// When the peer's hello arrived.
    pub hello_at: Option<Instant>,
    /// The reactor stopped reading it (the interpreter is behind): silence
    /// is ours, not the peer's.
    pub paused: bool,
    /// When reading it was last paused (while `paused`).
    pub paused_at: Option<Instant>,
    /// Our directory snapshot, while it streams out (`Core::pump_snapshot`).
    pub snapshot: Option<Box<Snapshot>>,
    /// Frames and bytes both ways, for metrics.
    pub traffic: super::observed::Traffic,
}

/// Unanswered `adopt`s a connection remembers ([`Conn::adopts`]).
pub const ADOPTS_KEPT: usize = 64;

/// A directory snapshot on its way: one `create_notify` per object (or an
/// `objects` entry, to a peer that offered compact version 2), queued a
/// step at a time as the socket takes them, so a million objects never
/// sit in the write buffer at once.
#[derive(Debug)]
pub struct Snapshot {
    pub objects: OwnedObjects,
    /// Names local objects hold: sent after the objects, before the end.
    pub names: Vec<(Arc<str>, ObjectId)>,
    /// Epochs of the objects that moved here (the rest are at 0).
    pub epochs: HashMap<ObjectId, u16>,
    /// Objects before this index are queued (or skipped).
    pub next: usize,
    /// Names before this index are queued (or skipped); names come after
    /// every object. A name taken or dropped while the snapshot streams is
    /// removed from those still to come (its live notice went out).
    pub next_name: usize,
    /// Objects queued so far (`create_notify`s or `objects` entries).
    pub sent: u64,
    /// Destroyed while the snapshot streams: their `destroy_notify` went
    /// out already, so their `create_notify` (or entry) must not follow it.
    pub gone: HashSet<ObjectId>,
}

impl Conn {
    pub fn new(
        id: ConnId,
        remote: SocketAddr,
        dial_slot: Option<usize>,
        max_frame: usize,
        max_pending: usize,
        nonce: [u8; NONCE_LEN],
        now: Instant,
    ) -> Conn {
        Conn {
            id,
            remote,
            local: None,
            phase: if dial_slot.is_some() {
                Phase::Connecting
            } else {
                Phase::AwaitHello
            },
            dial_slot,
            peer: None,
            claimed: None,
            nonce,
            their_nonce: [0; NONCE_LEN],
            their_boot: 0,
            compact: 0,
            retired: false,
            called_at: None,
            dirty: false,
            retired_at: None,
            peer_closing: None,
            closing_said: false,
            outbound: IdTable::new(max_pending),
            adopts: Vec::new(),
            calls_in: 0,
            out: Vec::with_capacity(OUT_INITIAL),
            written: 0,
            max_frame,
            opened: now,
            taken: 0,
            taken_at: now,
            last_heard: now,
            hello_at: None,
            paused: false,
            paused_at: None,
            snapshot: None,
            traffic: Default::default(),
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

    pub fn is_ready(&self) -> bool {
        self.phase == Phase::Ready
    }

    /// Appends one frame to the write buffer; a message over the frame
    /// maximum is refused (and nothing is appended).
    pub fn queue(&mut self, msg: &Message<'_>) -> Result<(), codec::EncodeError> {
        codec::encode_for(&mut self.out, msg, self.max_frame, self.compact)?;
        self.traffic.frames_out += 1;
        Ok(())
    }

    /// The largest frame we send on it.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// The write buffer's capacity, in bytes (`/health`).
    pub fn out_capacity(&self) -> usize {
        self.out.capacity()
    }

    /// Bytes queued and not yet written to the socket.
    pub fn unsent(&self) -> &[u8] {
        &self.out[self.written..]
    }

    /// `n` more bytes of [`Conn::unsent`] have left.
    pub fn advance(&mut self, n: usize) {
        self.traffic.bytes_out += n as u64;
        self.written = (self.written + n).min(self.out.len());
        if self.written == self.out.len() {
            self.out.clear();
            self.written = 0;
            if self.out.capacity() > OUT_SHRINK_ABOVE {
                // A burst is over: give its memory back (steady traffic
                // never grows the buffer this far, so never reallocates).
                self.out.shrink_to(OUT_INITIAL);
            }
        } else if self.written > self.out.len() / 2 {
            // Most of it left: slide the tail down so the buffer does not
            // creep forward forever on a slow reader.
            self.out.drain(..self.written);
            self.written = 0;
        }
    }

    /// What is left to send, for a last write before the socket goes.
    pub fn take_unsent(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.out);
        out.drain(..self.written);
        self.written = 0;
        out
    }
}
