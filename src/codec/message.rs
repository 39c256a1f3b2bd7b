//! Protocol messages, parsed from a borrowed payload by hand.
//!
//! ```text
//!  {"type":"call","request_id":7,"target":...,"input":{Val},...}
//!   ^^^^^^^^^^^^^ read first: picks the body parser, no buffering
//! ```
//!
//! Why not `#[serde(tag = "type")]`: serde's internally tagged enums buffer
//! the whole object into a `Content` tree before dispatching
//! (serde-rs/serde#1495), costing over 2x a plain struct parse, and the
//! buffering would bypass our depth bounds. Here the map visitor reads the
//! first key; when it is `"type"` (as every avm node sends it) the body is
//! parsed in the same pass. When it is not, `decode` scans the object once
//! for `"type"` (skipping values, depth-bounded) and parses again: two
//! passes, still no intermediate tree.
//!
//! Strings borrow from the payload (`Cow::Borrowed`) unless JSON escapes
//! force a copy. Unknown fields are skipped; unknown types are
//! [`DecodeError::UnknownType`] and the rest of the object is not examined.
//! Semantic checks (the `version`, a non-empty `machine_id`) belong to the
//! connection lifecycle, not here.
//!
//! The protocol table's seven types come first, then two for deadlock
//! detection by edge chasing, each carrying a list of wait edges:
//!
//! ```text
//!  {"type":"probe","initiator":1,"blocked":2,"path":[Edge, ...],"hops":1}
//!  {"type":"deadlock","victim":2,"object":9,"cycle":[Edge, ...]}
//!  Edge: {"chain":1,"object":9,"machine":"beta"}  chain waits for object's
//!                                                 turn on machine
//!  path/cycle: 0..=MAX_WAIT_PATH edges, counted while reading (edge 65
//!  is refused before it is parsed, so no list grows past the bound)
//! ```
//!
//! A `probe` asks the receiver what chain `blocked` waits for there;
//! `path` is the chain of waits so far. A `deadlock` tells the receiver
//! that chain `victim`, waiting there for `object`'s turn, was chosen to
//! break the cycle `cycle`. What to do with either is the protocol core's
//! business; the codec only checks their shape.

use std::borrow::Cow;

use serde::ser::{Serialize, SerializeStruct, Serializer};

use super::compact::{OBJECTS, OBJECT_ENTRY};
use super::error::EncodeError;
use super::frame::{frame_with, DEFAULT_MAX_FRAME};
use super::val::BoundedVal;
use crate::vm::{ChainId, ObjectId, Val};

/// One protocol message, borrowing its strings from the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message<'a> {
    Hello(Hello<'a>),
    Call(Call<'a>),
    CallResponse(CallResponse<'a>),
    CreateNotify(CreateNotify<'a>),
    DestroyNotify(DestroyNotify),
    Ping(Ping),
    Pong(Pong),
    Probe(Probe<'a>),
    Deadlock(Deadlock<'a>),
    Auth(Auth<'a>),
    SnapshotEnd(SnapshotEnd),
    NameNotify(NameNotify<'a>),
    MoveNotify(MoveNotify<'a>),
    NameDrop(NameDrop<'a>),
    Meta(Meta<'a>),
    Close(Close<'a>),
    /// Compact only (version 2): never JSON, never sent to a peer that
    /// did not offer it.
    Objects(Objects<'a>),
}

/// First frame on a connection, both ways.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello<'a> {
    pub version: u32,
    pub machine_id: Cow<'a, str>,
    pub node_prefix: u16,
    /// Version 2: 32 fresh random bytes as 64 hex characters, the sender's
    /// challenge. Omitted on the wire when `None` (version 1).
    pub nonce: Option<Cow<'a, str>>,
    /// Version 2: the sender's life, different each time the node starts,
    /// so a peer tells a restarted node from a second connection of the
    /// same one. Omitted on the wire when `None`.
    pub boot: Option<u64>,
    /// The sender reads compact frames (`compact.rs`) of every version up
    /// to this one, so a peer may send it `call` and `call_response`
    /// compact. Omitted on the wire when `None` (JSON only).
    pub compact: Option<u32>,
}

/// A call to an object hosted by the receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call<'a> {
    pub request_id: u64,
    pub target: ObjectId,
    pub input: Val,
    pub sender: ObjectId,
    pub sender_machine: Cow<'a, str>,
    /// Omitted on the wire when `None`.
    pub chain: Option<ChainId>,
}

/// The answer to a [`Call`]: `{"Ok": Val}` or `{"Err": string}` on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallResponse<'a> {
    pub request_id: u64,
    pub result: Result<Val, Cow<'a, str>>,
}

/// A run of `create_notify`s, one per entry, each for an object the
/// sender hosts: what a directory snapshot is made of between peers that
/// offered compact version 2 (`codec::compact`; it has no JSON form).
///
/// Invariant: `entries` is whole entries of `OBJECT_ENTRY` (11) bytes, and
/// every entry's behavior indexes `behaviors` (the decoder checks it, the
/// builder keeps it), so reading it back cannot fail.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Objects<'a> {
    pub(super) behaviors: Vec<Cow<'a, str>>,
    pub(super) entries: Cow<'a, [u8]>,
}

/// One entry of an [`Objects`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectEntry {
    pub object_id: ObjectId,
    /// An index into [`Objects::behaviors`].
    pub behavior: u8,
    pub epoch: u16,
}

impl<'a> Objects<'a> {
    /// The behavior names the entries index (at most 255 of at most 255
    /// bytes each).
    pub fn behaviors(&self) -> &[Cow<'a, str>] {
        &self.behaviors
    }

    pub fn len(&self) -> usize {
        self.entries.len() / OBJECT_ENTRY
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = ObjectEntry> + '_ {
        self.entries
            .chunks_exact(OBJECT_ENTRY)
            .map(|e| ObjectEntry {
                object_id: ObjectId(u64::from_le_bytes(e[..8].try_into().expect("8 bytes"))),
                behavior: e[8],
                epoch: u16::from_le_bytes([e[9], e[10]]),
            })
    }

    /// `name`'s index in the table, added if new; `None` when the table
    /// is full (255 names) or `name` is over 255 bytes.
    pub fn behavior_index(&mut self, name: &str) -> Option<u8> {
        if let Some(i) = self.behaviors.iter().position(|b| b == name) {
            return u8::try_from(i).ok();
        }
        if name.len() > usize::from(u8::MAX) || self.behaviors.len() >= usize::from(u8::MAX) {
            return None;
        }
        self.behaviors.push(Cow::Owned(name.to_owned()));
        u8::try_from(self.behaviors.len() - 1).ok()
    }

    /// Appends an entry; `behavior` must come from [`Objects::behavior_index`].
    pub fn push(&mut self, object_id: ObjectId, behavior: u8, epoch: u16) {
        assert!(
            usize::from(behavior) < self.behaviors.len(),
            "behavior {behavior} is not in the table"
        );
        let entries = self.entries.to_mut();
        entries.extend_from_slice(&object_id.0.to_le_bytes());
        entries.push(behavior);
        entries.extend_from_slice(&epoch.to_le_bytes());
    }

    /// Its compact payload's size in bytes.
    pub fn wire_len(&self) -> usize {
        let table: usize = self.behaviors.iter().map(|b| 1 + b.len()).sum();
        2 + table + 4 + self.entries.len()
    }

    /// Writes its compact payload (see `codec::compact`).
    pub(super) fn write(&self, out: &mut Vec<u8>) {
        out.push(OBJECTS);
        out.push(u8::try_from(self.behaviors.len()).expect("at most 255 behaviors"));
        for name in &self.behaviors {
            out.push(u8::try_from(name.len()).expect("names of at most 255 bytes"));
            out.extend_from_slice(name.as_bytes());
        }
        let count = u32::try_from(self.len()).expect("at most u32::MAX entries");
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(&self.entries);
    }

    fn into_owned(self) -> Objects<'static> {
        Objects {
            behaviors: self
                .behaviors
                .into_iter()
                .map(|b| Cow::Owned(b.into_owned()))
                .collect(),
            entries: Cow::Owned(self.entries.into_owned()),
        }
    }
}

/// An object exists, hosted by `machine_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateNotify<'a> {
    pub object_id: ObjectId,
    pub machine_id: Cow<'a, str>,
    /// Omitted on the wire when `None`.
    pub behavior: Option<Cow<'a, str>>,
    /// Times the object moved (`move_object`); omitted on the wire when 0.
    pub epoch: u16,
}

/// `object_id` moved from the sender to `machine_id`, where its epoch is
/// `epoch` (bumped by each move).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoveNotify<'a> {
    pub object_id: ObjectId,
    pub machine_id: Cow<'a, str>,
    pub epoch: u16,
}

/// An object is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DestroyNotify {
    pub object_id: ObjectId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ping {
    pub nonce: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pong {
    pub nonce: u64,
}

/// Most edges a `probe`'s `path` or a `deadlock`'s `cycle` may hold: a
/// longer list is [`DecodeError::TooLong`](super::DecodeError::TooLong)
/// on the way in and [`EncodeError::TooLong`] on the way out.
pub const MAX_WAIT_PATH: usize = 64;

/// One edge of the wait-for graph: `chain` waits for `object`'s turn on
/// `machine`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitEdge<'a> {
    pub chain: ChainId,
    pub object: ObjectId,
    pub machine: Cow<'a, str>,
}

/// Edge chasing: what does chain `blocked` wait for on the receiver?
/// `path` is the chain of waits so far, starting at `initiator`'s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe<'a> {
    pub initiator: ChainId,
    pub blocked: ChainId,
    /// At most [`MAX_WAIT_PATH`] edges; may be empty.
    pub path: Vec<WaitEdge<'a>>,
    /// Times the probe was sent on from node to node. Omitted on the wire
    /// when 0, and 0 when absent.
    pub hops: u32,
}

/// Chain `victim`, waiting on the receiver for `object`'s turn, was chosen
/// to break the cycle `cycle`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deadlock<'a> {
    pub victim: ChainId,
    pub object: ObjectId,
    /// At most [`MAX_WAIT_PATH`] edges; may be empty.
    pub cycle: Vec<WaitEdge<'a>>,
}

/// Version 2: the sender's proof that it knows the cluster key, for this
/// connection's two hellos (`protocol::auth`): 32 bytes as 64 hex characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth<'a> {
    pub proof: Cow<'a, str>,
}

/// The sender is about to close this connection, for `reason` (a protocol
/// error, or a refused `hello` or proof): sent once, at any point, so that
/// the other side learns why rather than seeing only the close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close<'a> {
    pub reason: Cow<'a, str>,
}

/// The directory snapshot after the handshake is complete: the sender
/// announced `objects` objects in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotEnd {
    pub objects: u64,
}

/// `name` now names `object_id`, hosted by `machine_id` (the sender).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameNotify<'a> {
    pub name: Cow<'a, str>,
    pub object_id: ObjectId,
    pub machine_id: Cow<'a, str>,
}

/// A distribution-layer operation on the receiver's object `call.target`
/// (`op`: `reflect`, `get_controller`, `destroy`, `transfer`, `scry`,
/// `fetch`, `freeze`, `move`, `adopt`; see `RemoteOp`), answered by a
/// `call_response` like a call; its fields are a call's, plus `op`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta<'a> {
    pub op: Cow<'a, str>,
    pub call: Call<'a>,
}

/// `name` no longer names `object_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameDrop<'a> {
    pub name: Cow<'a, str>,
    pub object_id: ObjectId,
}

/// The message types, in the protocol table's order, then the deadlock
/// detection types, then the handshake's proof, then the snapshot's end,
/// then names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Hello,
    Call,
    CallResponse,
    CreateNotify,
    DestroyNotify,
    Ping,
    Pong,
    Probe,
    Deadlock,
    Auth,
    SnapshotEnd,
    NameNotify,
    NameDrop,
    Meta,
    MoveNotify,
    Close,
}

pub(crate) const TYPE_NAMES: [&str; 16] = [
    "hello",
    "call",
    "call_response",
    "create_notify",
    "destroy_notify",
    "ping",
    "pong",
    "probe",
    "deadlock",
    "auth",
    "snapshot_end",
    "name_notify",
    "name_drop",
    "meta",
    "move_notify",
    "close",
];
pub(crate) const KINDS: [Kind; 16] = [
    Kind::Hello,
    Kind::Call,
    Kind::CallResponse,
    Kind::CreateNotify,
    Kind::DestroyNotify,
    Kind::Ping,
    Kind::Pong,
    Kind::Probe,
    Kind::Deadlock,
    Kind::Auth,
    Kind::SnapshotEnd,
    Kind::NameNotify,
    Kind::NameDrop,
    Kind::Meta,
    Kind::MoveNotify,
    Kind::Close,
];

impl<'a> Message<'a> {
    /// The wire `"type"` (for `objects`, which has no JSON form, its
    /// name on the protocol page).
    pub fn type_name(&self) -> &'static str {
        match self.kind() {
            Some(kind) => TYPE_NAMES[kind as usize],
            None => "objects",
        }
    }

    fn kind(&self) -> Option<Kind> {
        Some(match self {
            Message::Objects(_) => return None,
            Message::Hello(_) => Kind::Hello,
            Message::Call(_) => Kind::Call,
            Message::CallResponse(_) => Kind::CallResponse,
            Message::CreateNotify(_) => Kind::CreateNotify,
            Message::DestroyNotify(_) => Kind::DestroyNotify,
            Message::Ping(_) => Kind::Ping,
            Message::Pong(_) => Kind::Pong,
            Message::Probe(_) => Kind::Probe,
            Message::Deadlock(_) => Kind::Deadlock,
            Message::Auth(_) => Kind::Auth,
            Message::SnapshotEnd(_) => Kind::SnapshotEnd,
            Message::NameNotify(_) => Kind::NameNotify,
            Message::NameDrop(_) => Kind::NameDrop,
            Message::Meta(_) => Kind::Meta,
            Message::MoveNotify(_) => Kind::MoveNotify,
            Message::Close(_) => Kind::Close,
        })
    }

    /// Copies borrowed strings so the message outlives the read buffer
    /// (to hand it to another thread, say).
    pub fn into_owned(self) -> Message<'static> {
        fn own(s: Cow<'_, str>) -> Cow<'static, str> {
            Cow::Owned(s.into_owned())
        }
        fn own_edges(edges: Vec<WaitEdge<'_>>) -> Vec<WaitEdge<'static>> {
            edges
                .into_iter()
                .map(|e| WaitEdge {
                    chain: e.chain,
                    object: e.object,
                    machine: own(e.machine),
                })
                .collect()
        }
        match self {
            Message::Hello(h) => Message::Hello(Hello {
                machine_id: own(h.machine_id),
                version: h.version,
                node_prefix: h.node_prefix,
                nonce: h.nonce.map(own),
                boot: h.boot,
                compact: h.compact,
            }),
            Message::Call(c) => Message::Call(Call {
                sender_machine: own(c.sender_machine),
                request_id: c.request_id,
                target: c.target,
                input: c.input,
                sender: c.sender,
                chain: c.chain,
            }),
            Message::CallResponse(r) => Message::CallResponse(CallResponse {
                request_id: r.request_id,
                result: r.result.map_err(own),
            }),
            Message::CreateNotify(n) => Message::CreateNotify(CreateNotify {
                object_id: n.object_id,
                machine_id: own(n.machine_id),
                behavior: n.behavior.map(own),
                epoch: n.epoch,
            }),
            Message::MoveNotify(n) => Message::MoveNotify(MoveNotify {
                object_id: n.object_id,
                machine_id: own(n.machine_id),
                epoch: n.epoch,
            }),
            Message::DestroyNotify(d) => Message::DestroyNotify(d),
            Message::Ping(p) => Message::Ping(p),
            Message::Pong(p) => Message::Pong(p),
            Message::Probe(p) => Message::Probe(Probe {
                initiator: p.initiator,
                blocked: p.blocked,
                path: own_edges(p.path),
                hops: p.hops,
            }),
            Message::Deadlock(d) => Message::Deadlock(Deadlock {
                victim: d.victim,
                object: d.object,
                cycle: own_edges(d.cycle),
            }),
            Message::Auth(a) => Message::Auth(Auth {
                proof: own(a.proof),
            }),
            Message::Close(c) => Message::Close(Close {
                reason: own(c.reason),
            }),
            Message::Objects(o) => Message::Objects(o.into_owned()),
            Message::SnapshotEnd(e) => Message::SnapshotEnd(e),
            Message::NameNotify(n) => Message::NameNotify(NameNotify {
                name: own(n.name),
                object_id: n.object_id,
                machine_id: own(n.machine_id),
            }),
            Message::NameDrop(n) => Message::NameDrop(NameDrop {
                name: own(n.name),
                object_id: n.object_id,
            }),
            Message::Meta(m) => Message::Meta(Meta {
                op: own(m.op),
                call: Call {
                    sender_machine: own(m.call.sender_machine),
                    ..m.call
                },
            }),
        }
    }

    /// The `path` of a probe or the `cycle` of a deadlock.
    pub(crate) fn wait_edges(&self) -> Option<&[WaitEdge<'a>]> {
        match self {
            Message::Probe(p) => Some(&p.path),
            Message::Deadlock(d) => Some(&d.cycle),
            _ => None,
        }
    }
}

/// Appends one frame (header + JSON) to `out`, refusing payloads over
/// [`DEFAULT_MAX_FRAME`]. On error `out` is left exactly as it was.
pub fn encode(out: &mut Vec<u8>, msg: &Message<'_>) -> Result<(), EncodeError> {
    encode_limited(out, msg, DEFAULT_MAX_FRAME)
}

/// [`encode`] against another frame maximum (the peer's, if it differs).
pub fn encode_limited(
    out: &mut Vec<u8>,
    msg: &Message<'_>,
    max_frame: usize,
) -> Result<(), EncodeError> {
    encode_for(out, msg, max_frame, 0)
}

/// [`encode_limited`] for a peer whose `hello` offered compact frames up
/// to version `compact` (0: none). From version 1, a `call`, or a
/// `call_response` with an `Ok` result, goes compact; from version 2 an
/// `objects` may be sent (below that it is [`EncodeError::NoJsonForm`]);
/// everything else is JSON.
pub fn encode_for(
    out: &mut Vec<u8>,
    msg: &Message<'_>,
    max_frame: usize,
    compact: u32,
) -> Result<(), EncodeError> {
    // The peer would refuse it: checked before a byte is written.
    if msg.wait_edges().is_some_and(|e| e.len() > MAX_WAIT_PATH) {
        return Err(EncodeError::TooLong);
    }
    if let Message::Objects(o) = msg {
        if compact < super::compact::OBJECTS_VERSION {
            return Err(EncodeError::NoJsonForm);
        }
        if o.len() > super::compact::MAX_OBJECTS_PER_FRAME {
            return Err(EncodeError::TooManyObjects);
        }
    }
    // Writing to a Vec cannot fail, and our Serialize impls fail only on
    // a Val past MAX_VAL_DEPTH.
    frame_with(out, max_frame, |w| {
        if compact >= 1 && super::compact::encode(w, msg) {
            return Ok(());
        }
        if super::fast::encode(w, msg) {
            return Ok(());
        }
        serde_json::to_writer(w, msg).map_err(|_| EncodeError::TooDeep)
    })
}

/// The wire form: `"type"` first, then the fields in the protocol table's
/// order (for `probe` and `deadlock`, the order of the module docs);
/// `chain` and `behavior` omitted when `None`.
impl Serialize for Message<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if let Message::Objects(_) = self {
            return Err(serde::ser::Error::custom("`objects` has no JSON form"));
        }
        let mut m = s.serialize_struct("Message", 7)?;
        m.serialize_field("type", self.type_name())?;
        match self {
            Message::Hello(h) => {
                m.serialize_field("version", &h.version)?;
                m.serialize_field("machine_id", &h.machine_id)?;
                m.serialize_field("node_prefix", &h.node_prefix)?;
                if let Some(nonce) = &h.nonce {
                    m.serialize_field("nonce", nonce)?;
                }
                if let Some(boot) = &h.boot {
                    m.serialize_field("boot", boot)?;
                }
                if let Some(compact) = &h.compact {
                    m.serialize_field("compact", compact)?;
                }
            }
            Message::Meta(meta) => {
                m.serialize_field("op", &meta.op)?;
                call_fields(&mut m, &meta.call)?;
            }
            Message::Call(c) => call_fields(&mut m, c)?,
            Message::CallResponse(r) => {
                m.serialize_field("request_id", &r.request_id)?;
                m.serialize_field("result", &WireResult(&r.result))?;
            }
            Message::CreateNotify(n) => {
                m.serialize_field("object_id", &n.object_id)?;
                m.serialize_field("machine_id", &n.machine_id)?;
                if let Some(b) = &n.behavior {
                    m.serialize_field("behavior", b)?;
                }
                if n.epoch != 0 {
                    m.serialize_field("epoch", &n.epoch)?;
                }
            }
            Message::MoveNotify(n) => {
                m.serialize_field("object_id", &n.object_id)?;
                m.serialize_field("machine_id", &n.machine_id)?;
                m.serialize_field("epoch", &n.epoch)?;
            }
            Message::DestroyNotify(d) => m.serialize_field("object_id", &d.object_id)?,
            Message::Ping(p) => m.serialize_field("nonce", &p.nonce)?,
            Message::Pong(p) => m.serialize_field("nonce", &p.nonce)?,
            Message::Probe(p) => {
                m.serialize_field("initiator", &p.initiator)?;
                m.serialize_field("blocked", &p.blocked)?;
                m.serialize_field("path", &p.path)?;
                if p.hops != 0 {
                    m.serialize_field("hops", &p.hops)?;
                }
            }
            Message::Deadlock(d) => {
                m.serialize_field("victim", &d.victim)?;
                m.serialize_field("object", &d.object)?;
                m.serialize_field("cycle", &d.cycle)?;
            }
            Message::Auth(a) => m.serialize_field("proof", &a.proof)?,
            Message::Close(c) => m.serialize_field("reason", &c.reason)?,
            // Refused above.
            Message::Objects(_) => {}
            Message::SnapshotEnd(e) => m.serialize_field("objects", &e.objects)?,
            Message::NameNotify(n) => {
                m.serialize_field("name", &n.name)?;
                m.serialize_field("object_id", &n.object_id)?;
                m.serialize_field("machine_id", &n.machine_id)?;
            }
            Message::NameDrop(n) => {
                m.serialize_field("name", &n.name)?;
                m.serialize_field("object_id", &n.object_id)?;
            }
        }
        m.end()
    }
}

/// A `call`'s fields (a `meta`'s too), in the protocol table's order.
fn call_fields<M: SerializeStruct>(m: &mut M, c: &Call<'_>) -> Result<(), M::Error> {
    m.serialize_field("request_id", &c.request_id)?;
    m.serialize_field("target", &c.target)?;
    m.serialize_field(
        "input",
        &BoundedVal {
            val: &c.input,
            depth: 1,
        },
    )?;
    m.serialize_field("sender", &c.sender)?;
    m.serialize_field("sender_machine", &c.sender_machine)?;
    if let Some(chain) = &c.chain {
        m.serialize_field("chain", chain)?;
    }
    Ok(())
}

/// `{"chain":..,"object":..,"machine":".."}`, in that order.
impl Serialize for WaitEdge<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_struct("WaitEdge", 3)?;
        m.serialize_field("chain", &self.chain)?;
        m.serialize_field("object", &self.object)?;
        m.serialize_field("machine", &self.machine)?;
        m.end()
    }
}

struct WireResult<'r, 'a>(&'r Result<Val, Cow<'a, str>>);

impl Serialize for WireResult<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Ok(val) => {
                s.serialize_newtype_variant("Result", 0, "Ok", &BoundedVal { val, depth: 1 })
            }
            Err(e) => s.serialize_newtype_variant("Result", 1, "Err", e),
        }
    }
}
