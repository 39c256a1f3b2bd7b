//! What crosses a greeted connection: calls and their answers, directory
//! notices and snapshots, deadlock probes; and call timeouts.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use smallvec::SmallVec;

use crate::codec::{self, Message};
use crate::vm::{self, MachineId, ObjectId, OwnedObjects, RemoteCall, SuspendToken, Val};

use super::calls::{CallRef, Outbound};
use super::conn::{Conn, Phase, Snapshot, ADOPTS_KEPT, CLOSE_REASON_MAX};
use super::hello::Peer;
use super::timer::Timer;
use super::{
    CloseReason, ConnId, Core, Event, Inbound, InboundId, Notice, Status, SNAPSHOT_CHUNK,
    SNAPSHOT_OBJECT_COST, SNAPSHOT_PACED_MAX, SNAPSHOT_PACED_RATE, SNAPSHOT_PACED_STEP,
    SNAPSHOT_STEP, SNAPSHOT_YIELD_FOR,
};

impl Core {
    /// A message before the proof checked out: a hello, then (after ours)
    /// a proof; nothing else. Out of line: once per connection, and kept
    /// out of the path every call's message takes.
    #[cold]
    #[inline(never)]
    fn handle_handshake(
        &mut self,
        conn: ConnId,
        awaiting_proof: bool,
        msg: Message<'_>,
        now: Instant,
    ) -> Status {
        let result = match (awaiting_proof, msg) {
            (true, Message::Auth(a)) => self.handle_auth(conn, &a.proof, now).map(|()| true),
            (true, Message::Hello(_)) => Err("a second `hello`".into()),
            (true, other) => Err(format!("`{}` before the proof", other.type_name())),
            (false, Message::Hello(hello)) => self.handle_hello(conn, hello, now).map(|()| false),
            (false, other) => Err(format!(
                "first frame was `{}`, not `hello`",
                other.type_name()
            )),
        };
        match result {
            Ok(true) if self.is_open(conn) => Status::Greeted,
            Ok(false) if self.is_open(conn) => Status::Open,
            Ok(_) => Status::Closed,
            Err(why) => {
                self.protocol_error(conn, why, now);
                Status::Closed
            }
        }
    }

    /// One decoded message from `conn`.
    pub fn handle_message(&mut self, conn: ConnId, msg: Message<'_>, now: Instant) -> Status {
        let Some(c) = self.conn_mut(conn) else {
            return Status::Closed;
        };
        c.traffic.frames_in += 1;
        if let Message::Close(close) = &msg {
            // At any point, even before the hellos: the peer says why it is
            // closing (a refusal, or our protocol error), so we close too,
            // and the log line says why. Nothing more is read from it.
            c.peer_closing = Some(codec::cut_on_char(&close.reason, CLOSE_REASON_MAX).to_owned());
            self.close(conn, CloseReason::PeerClosed, true, now);
            return Status::Closed;
        }
        let awaiting_proof = c.phase == Phase::AwaitProof;
        let Some(peer) = c.peer.clone() else {
            return self.handle_handshake(conn, awaiting_proof, msg, now);
        };
        if matches!(
            msg,
            Message::Call(_) | Message::Meta(_) | Message::CallResponse(_)
        ) {
            // Traffic that a streaming snapshot gives way to.
            self.calls_seen_at = Some(now);
        }
        match msg {
            // Taken before the handshake's gate, above.
            Message::Close(_) => {}
            Message::Hello(_) | Message::Auth(_) => {
                let why = format!("a second `{}`", msg.type_name());
                self.protocol_error(conn, why, now);
                return Status::Closed;
            }
            Message::Call(call) => self.handle_call(conn, &peer, call, None, now),
            Message::Meta(meta) => match vm::RemoteOp::from_name(&meta.op) {
                Some(op) => self.handle_call(conn, &peer, meta.call, Some(op), now),
                None => {
                    let answer = Message::CallResponse(codec::CallResponse {
                        request_id: meta.call.request_id,
                        result: Err(format!("unknown meta op `{}`", meta.op).into()),
                    });
                    self.queue(conn, &answer);
                }
            },
            Message::CallResponse(resp) => self.handle_response(conn, &peer, resp, now),
            Message::CreateNotify(notify) => {
                let machine = claimed(&peer.machine, &notify.machine_id);
                self.events.push(Event::Notice {
                    from: peer.machine,
                    notice: Notice::Created {
                        id: notify.object_id,
                        machine,
                        behavior: notify.behavior.map(|b| Arc::from(&*b)),
                        epoch: notify.epoch,
                    },
                });
            }
            Message::Objects(objects) => {
                // One name per behavior for the whole run, not per object.
                let names: SmallVec<[Arc<str>; 4]> = objects
                    .behaviors()
                    .iter()
                    .map(|b| Arc::from(&**b))
                    .collect();
                self.events.reserve(objects.len());
                for entry in objects.iter() {
                    self.events.push(Event::Notice {
                        from: peer.machine.clone(),
                        notice: Notice::Created {
                            id: entry.object_id,
                            machine: peer.machine.clone(),
                            behavior: Some(names[usize::from(entry.behavior)].clone()),
                            epoch: entry.epoch,
                        },
                    });
                }
            }
            Message::MoveNotify(notify) => self.events.push(Event::Notice {
                from: peer.machine,
                notice: Notice::Moved {
                    id: notify.object_id,
                    machine: MachineId::new(&notify.machine_id),
                    epoch: notify.epoch,
                },
            }),
            Message::DestroyNotify(notify) => self.events.push(Event::Notice {
                from: peer.machine,
                notice: Notice::Destroyed {
                    id: notify.object_id,
                },
            }),
            Message::Ping(ping) => {
                self.queue(conn, &Message::Pong(codec::Pong { nonce: ping.nonce }));
            }
            Message::SnapshotEnd(end) => {
                self.synced.insert(peer.machine.clone());
                self.events.push(Event::Synced {
                    machine: peer.machine,
                    objects: end.objects,
                });
            }
            Message::Probe(probe) => self.events.push(Event::Probe(vm::Probe {
                initiator: probe.initiator,
                blocked: probe.blocked,
                path: vm_edges(probe.path),
                hops: probe.hops,
            })),
            Message::Deadlock(d) => self.events.push(Event::Victim(Box::new(vm::Cycle {
                edges: vm_edges(d.cycle),
                victim: d.victim,
            }))),
            Message::NameNotify(n) => {
                let machine = claimed(&peer.machine, &n.machine_id);
                self.events.push(Event::Notice {
                    from: peer.machine,
                    notice: Notice::Named {
                        name: Arc::from(&*n.name),
                        id: n.object_id,
                        machine,
                    },
                });
            }
            Message::NameDrop(n) => self.events.push(Event::Notice {
                from: peer.machine,
                notice: Notice::Unnamed {
                    name: Arc::from(&*n.name),
                    id: n.object_id,
                },
            }),
            Message::Pong(_) => {}
        }
        Status::Open
    }

    /// Sends `call` to the machine the vm named; the answer comes back as
    /// [`Event::Reply`] (at once, as an error, if it cannot be sent).
    pub fn call(&mut self, call: RemoteCall, now: Instant) {
        let conn = match self.active.conn_for(&call.machine) {
            Some(conn) => conn,
            None => {
                return self.fail_call(
                    call.token,
                    format!(
                        "machine {} is not connected (call to object {})",
                        call.machine, call.target
                    ),
                )
            }
        };
        if self.outbound_total >= self.config.max_pending {
            return self.fail_call(
                call.token,
                format!(
                    "too many calls in flight ({}); call to object {} on {} refused",
                    self.config.max_pending, call.target, call.machine
                ),
            );
        }
        self.calls_seen_at = Some(now);
        let sent_us = self.clock.micros(now);
        let c = &mut self.conns[conn.key()];
        debug_assert_eq!(c.id, conn, "a stale connection for {}", call.machine);
        let Some(request_id) = c.outbound.insert(Outbound {
            token: call.token,
            target: call.target,
            chain: call.chain,
            sent_us,
        }) else {
            let why = format!(
                "too many calls in flight to {}; call to object {} refused",
                call.machine, call.target
            );
            return self.fail_call(call.token, why);
        };
        debug!(
            "call #{request_id:#x} -> {} object {} {}",
            call.machine, call.target, call.chain
        );
        let wire_call = codec::Call {
            request_id,
            target: call.target,
            input: call.input,
            sender: call.sender,
            sender_machine: self.us.machine.as_str().into(),
            chain: Some(call.chain),
        };
        let msg = match call.op {
            None => Message::Call(wire_call),
            Some(op) => Message::Meta(codec::Meta {
                op: op.name().into(),
                call: wire_call,
            }),
        };
        if let Err(e) = c.queue(&msg) {
            c.outbound.remove(request_id);
            return self.fail_call(
                call.token,
                format!("call to object {} not sent: {e}", call.target),
            );
        }
        if call.op == Some(vm::RemoteOp::Adopt) {
            if c.adopts.len() >= ADOPTS_KEPT {
                c.adopts.remove(0);
            }
            c.adopts.push((request_id, call.token));
        }
        self.outbound_total += 1;
        self.chains
            .add(call.chain, CallRef { conn, request_id }, now);
        self.arm_call_timeouts(now);
        self.mark_dirty(conn);
    }

    /// The interpreter's answer to an inbound call.
    pub fn reply(&mut self, inbound: InboundId, result: Result<Val, String>) {
        let Some(entry) = self.inbound.remove(inbound.0) else {
            debug!("reply to unknown inbound call {:#x} dropped", inbound.0);
            return;
        };
        let Some(c) = self.conn_mut(entry.conn) else {
            debug!(
                "reply to call #{:#x} dropped: its connection closed",
                entry.request_id
            );
            return;
        };
        c.calls_in = c.calls_in.saturating_sub(1);
        let msg = Message::CallResponse(codec::CallResponse {
            request_id: entry.request_id,
            result: result.map_err(Into::into),
        });
        if let Err(e) = c.queue(&msg) {
            // The answer is too large for a frame: tell the caller so
            // rather than leave it waiting.
            let msg = Message::CallResponse(codec::CallResponse {
                request_id: entry.request_id,
                result: Err(format!("reply not sent: {e}").into()),
            });
            let _ = c.queue(&msg);
        }
        self.mark_dirty(entry.conn);
    }

    /// A local object was created (or moved here, at `epoch`):
    /// `create_notify` to every greeted peer.
    pub fn broadcast_created(&mut self, id: ObjectId, behavior: &str, epoch: u16) {
        let us = self.us.machine.clone();
        let notify = Message::CreateNotify(codec::CreateNotify {
            object_id: id,
            machine_id: us.as_str().into(),
            behavior: Some(behavior.into()),
            epoch,
        });
        self.broadcast(&notify);
    }

    /// A local object moved to `machine`: `move_notify` to every greeted
    /// peer (a snapshot still streaming no longer announces it here).
    pub fn broadcast_moved(&mut self, id: ObjectId, machine: &MachineId, epoch: u16) {
        for (_, c) in self.conns.iter_mut() {
            if let Some(snap) = c.snapshot.as_mut() {
                snap.gone.insert(id);
            }
        }
        self.broadcast(&Message::MoveNotify(codec::MoveNotify {
            object_id: id,
            machine_id: machine.as_str().into(),
            epoch,
        }));
    }

    /// A local object was destroyed: `destroy_notify` to every greeted peer.
    pub fn broadcast_destroyed(&mut self, id: ObjectId) {
        for (_, c) in self.conns.iter_mut() {
            if let Some(snap) = c.snapshot.as_mut() {
                snap.gone.insert(id);
            }
        }
        self.broadcast(&Message::DestroyNotify(codec::DestroyNotify {
            object_id: id,
        }));
    }

    /// Tells every peer that `name` names local object `id`.
    pub fn broadcast_named(&mut self, name: &str, id: ObjectId) {
        self.unsend_snapshot_name(name);
        let us = self.us.machine.clone();
        self.broadcast(&Message::NameNotify(codec::NameNotify {
            name: name.into(),
            object_id: id,
            machine_id: us.as_str().into(),
        }));
    }

    /// Tells every peer that `name` no longer names local object `id`.
    pub fn broadcast_unnamed(&mut self, name: &str, id: ObjectId) {
        self.unsend_snapshot_name(name);
        self.broadcast(&Message::NameDrop(codec::NameDrop {
            name: name.into(),
            object_id: id,
        }));
    }

    /// `name` changed while snapshots stream: their `name_notify` for it,
    /// if still to come, would arrive after the live notice and undo it.
    fn unsend_snapshot_name(&mut self, name: &str) {
        for (_, c) in self.conns.iter_mut() {
            if let Some(snap) = c.snapshot.as_mut() {
                let mut i = snap.next_name;
                while i < snap.names.len() {
                    if &*snap.names[i].0 == name {
                        snap.names.remove(i);
                    } else {
                        i += 1;
                    }
                }
            }
        }
    }

    /// Our directory snapshot for `machine` (owed after its
    /// [`Event::PeerUp`] `up`): one `create_notify` per local object, then
    /// one `name_notify` per name a local object holds, then
    /// `snapshot_end`.
    pub fn send_snapshot(
        &mut self,
        machine: &MachineId,
        up: u64,
        objects: OwnedObjects,
        names: Vec<(Arc<str>, ObjectId)>,
        epochs: Vec<(ObjectId, u16)>,
    ) {
        // Gone since (not active), or gone and back (it came up again): a
        // snapshot taken then could name objects destroyed before this
        // connection's notices began. The new `PeerUp` asks anew. A tie
        // between two connections, or a spare taking over, is not coming
        // up again: the snapshot goes to the survivor.
        let conn = match self.active.get(machine) {
            Some(&conn) if self.observed.connects(machine) == up => conn,
            _ => {
                debug!("{machine}: a snapshot owed to an earlier connection dropped");
                return;
            }
        };
        self.conns[conn.key()].snapshot = Some(Box::new(Snapshot {
            objects,
            names,
            epochs: epochs.into_iter().collect(),
            next: 0,
            next_name: 0,
            sent: 0,
            gone: HashSet::new(),
        }));
        // Its steps are queued by `pump_snapshots`, later in this same
        // reactor iteration.
        if !self.streaming.contains(&conn) {
            self.streaming.push(conn);
        }
    }

    /// Queues the next step of every snapshot whose connection has room
    /// (less than [`SNAPSHOT_CHUNK`] waiting to be written). The reactor
    /// calls it once per iteration, and polls without blocking while
    /// [`Core::snapshot_ready`]. A step is [`SNAPSHOT_STEP`] bytes; while
    /// calls come and go ([`SNAPSHOT_YIELD_FOR`]) it is what has accrued at
    /// [`SNAPSHOT_PACED_RATE`] since the last step, up to
    /// [`SNAPSHOT_PACED_MAX`], and none is taken under [`SNAPSHOT_PACED_STEP`].
    pub fn pump_snapshots(&mut self, now: Instant) {
        if self.streaming.is_empty() || !self.step_due(now) {
            return;
        }
        let step = if self.yielding(now) {
            let step = self.paced_allowance(now);
            self.paced_at = now;
            step
        } else {
            SNAPSHOT_STEP
        };
        let mut i = 0;
        while i < self.streaming.len() {
            let conn = self.streaming[i];
            self.pump_snapshot(conn, step);
            let pending = self.conn(conn).is_some_and(|c| c.snapshot.is_some());
            if pending {
                i += 1;
            } else {
                self.streaming.swap_remove(i);
            }
        }
    }

    /// Whether a snapshot could queue more now: its connection has room,
    /// and its next step is due.
    pub fn snapshot_ready(&self, now: Instant) -> bool {
        self.snapshot_has_room() && self.step_due(now)
    }

    /// When a snapshot with room has its next paced step due (the reactor
    /// may block until then; the poll rounds it up to a millisecond, and
    /// the allowance makes up for it).
    pub(super) fn snapshot_step_at(&self) -> Option<Instant> {
        let accrue = (SNAPSHOT_PACED_STEP / SNAPSHOT_PACED_RATE) as u64;
        self.snapshot_has_room()
            .then(|| self.paced_at + Duration::from_micros(accrue))
    }

    fn snapshot_has_room(&self) -> bool {
        self.streaming.iter().any(|&conn| {
            self.conn(conn)
                .is_some_and(|c| c.snapshot.is_some() && c.unsent().len() < SNAPSHOT_CHUNK)
        })
    }

    /// Calls were sent or received lately: snapshots give way to them.
    fn yielding(&self, now: Instant) -> bool {
        self.calls_seen_at
            .is_some_and(|at| now.saturating_duration_since(at) < SNAPSHOT_YIELD_FOR)
    }

    /// While yielding: the bytes accrued since the last paced step.
    fn paced_allowance(&self, now: Instant) -> usize {
        let micros = now.saturating_duration_since(self.paced_at).as_micros();
        usize::try_from(micros)
            .unwrap_or(usize::MAX)
            .saturating_mul(SNAPSHOT_PACED_RATE)
            .min(SNAPSHOT_PACED_MAX)
    }

    fn step_due(&self, now: Instant) -> bool {
        !self.yielding(now) || self.paced_allowance(now) >= SNAPSHOT_PACED_STEP
    }

    /// Queues one step of `conn`'s snapshot, while less than
    /// [`SNAPSHOT_CHUNK`] waits to be written: up to `step` bytes of JSON,
    /// or to a peer that offered compact version 2 one `objects` frame of
    /// `step` / [`SNAPSHOT_OBJECT_COST`] entries. Objects first, then
    /// names, then `snapshot_end`.
    fn pump_snapshot(&mut self, conn: ConnId, step: usize) {
        let us = self.us.machine.clone();
        let Some(c) = self.conn_mut(conn) else { return };
        let Some(mut snap) = c.snapshot.take() else {
            return;
        };
        let start = c.unsent().len();
        let room = |c: &Conn| c.unsent().len() < SNAPSHOT_CHUNK && c.unsent().len() - start < step;
        let batched = c.compact >= codec::compact::OBJECTS_VERSION;
        if batched && c.unsent().len() < SNAPSHOT_CHUNK && snap.next < snap.objects.objects.len() {
            // One frame per step; an entry counts as what its work costs.
            let entries = (step / SNAPSHOT_OBJECT_COST).max(1);
            queue_objects(c, &mut snap, entries, &us);
        }
        while !batched && room(c) && snap.next < snap.objects.objects.len() {
            let (i, id) = (snap.next, snap.objects.objects[snap.next].0);
            snap.next += 1;
            if !snap.gone.contains(&id) {
                queue_create_notify(c, &mut snap, i, &us);
            }
        }
        while room(c)
            && snap.next == snap.objects.objects.len()
            && snap.next_name < snap.names.len()
        {
            let (name, id) = &snap.names[snap.next_name];
            snap.next_name += 1;
            if snap.gone.contains(id) {
                continue;
            }
            let named = Message::NameNotify(codec::NameNotify {
                name: name.as_ref().into(),
                object_id: *id,
                machine_id: us.as_str().into(),
            });
            if let Err(e) = c.queue(&named) {
                warn!("name_notify for `{name}` not sent: {e}");
            }
        }
        if snap.next < snap.objects.objects.len() || snap.next_name < snap.names.len() {
            c.snapshot = Some(snap);
        } else {
            let objects = snap.sent;
            let _ = c.queue(&Message::SnapshotEnd(codec::SnapshotEnd { objects }));
            debug!(
                "{}: directory snapshot of {objects} objects queued",
                c.label()
            );
        }
        if c.unsent().len() > start {
            self.mark_dirty(conn);
        }
    }

    /// Sends a deadlock `probe` to `machine` (dropped if it is not
    /// connected: the call it follows has failed then, or soon will).
    pub fn send_probe(&mut self, machine: &MachineId, probe: &vm::Probe) {
        let Some(&conn) = self.active.get(machine) else {
            return;
        };
        let msg = Message::Probe(codec::Probe {
            initiator: probe.initiator,
            blocked: probe.blocked,
            path: wire_edges(&probe.path),
            hops: probe.hops,
        });
        self.queue(conn, &msg);
    }

    /// Tells `machine` that its waiting chain is a deadlock's victim.
    pub fn send_victim(&mut self, machine: &MachineId, cycle: &vm::Cycle) {
        let Some(&conn) = self.active.get(machine) else {
            return;
        };
        let Some(edge) = cycle.edges.iter().find(|e| e.chain == cycle.victim) else {
            return;
        };
        let msg = Message::Deadlock(codec::Deadlock {
            victim: cycle.victim,
            object: edge.object,
            cycle: wire_edges(&cycle.edges),
        });
        self.queue(conn, &msg);
    }

    /// Queues `msg` on every connection past its hellos, retired ones
    /// included: a retired connection is promoted back if the winner
    /// closes first, and must not have missed a notice meanwhile. The peer
    /// then sees a notice twice, which is harmless: notices are idempotent.
    pub(super) fn broadcast(&mut self, msg: &Message<'_>) {
        let mut sent = smallvec::SmallVec::<[ConnId; 8]>::new();
        for (_, c) in self.conns.iter_mut().filter(|(_, c)| c.is_ready()) {
            match c.queue(msg) {
                Ok(()) => sent.push(c.id),
                Err(e) => warn!("broadcast of {} failed: {e}", msg.type_name()),
            }
        }
        for conn in sent {
            self.mark_dirty(conn);
        }
    }

    pub(super) fn fail_call(&mut self, token: SuspendToken, reason: String) {
        self.events.push(Event::Reply {
            token,
            result: Err(reason),
            lost: false,
        });
    }

    pub(super) fn handle_call(
        &mut self,
        conn: ConnId,
        peer: &Peer,
        call: codec::Call<'_>,
        op: Option<vm::RemoteOp>,
        now: Instant,
    ) {
        self.conns[conn.key()].called_at = Some(now);
        let Some(id) = self.inbound.insert(Inbound {
            conn,
            request_id: call.request_id,
        }) else {
            let answer = Message::CallResponse(codec::CallResponse {
                request_id: call.request_id,
                result: Err("node overloaded: too many calls in flight".into()),
            });
            return self.queue(conn, &answer);
        };
        self.conns[conn.key()].calls_in += 1;
        if let Some(chain) = call.chain {
            self.chains.touch(chain, now);
        }
        debug!(
            "call #{:#x} <- {} for object {}",
            call.request_id, peer.machine, call.target
        );
        if *call.sender_machine != *peer.machine.as_str() {
            // The requester hosts the sender, and only this connection
            // reaches it: a call naming another machine would place its
            // sender where we may never connect.
            debug!(
                "{}: call #{:#x} names sender_machine `{}`; placing its sender on {} instead",
                peer.machine, call.request_id, call.sender_machine, peer.machine
            );
        }
        self.events.push(Event::Inbound {
            inbound: InboundId(id),
            target: call.target,
            input: call.input,
            sender: (call.sender != ObjectId(0)).then_some(call.sender),
            sender_machine: peer.machine.clone(),
            // Chain 0 is no chain (the vm keeps it for an object restored
            // mid-move): such a call runs as a new chain, as one without.
            chain: call.chain.filter(|c| c.0 != 0),
            op,
        });
    }

    pub(super) fn handle_response(
        &mut self,
        conn: ConnId,
        peer: &Peer,
        resp: codec::CallResponse<'_>,
        now: Instant,
    ) {
        let c = &mut self.conns[conn.key()];
        // Empty unless moves were made on this connection.
        let adopt = match c.adopts.iter().position(|&(id, _)| id == resp.request_id) {
            Some(i) => Some(c.adopts.remove(i).1),
            None => None,
        };
        match c.outbound.remove(resp.request_id) {
            Some(p) => {
                self.outbound_total -= 1;
                let took = self.clock.micros(now).saturating_sub(p.sent_us);
                self.observed.rtt.observe_us(took);
                self.chains.answered(
                    p.chain,
                    CallRef {
                        conn,
                        request_id: resp.request_id,
                    },
                    now,
                );
                self.events.push(Event::Reply {
                    token: p.token,
                    result: resp.result.map_err(|e| e.into_owned()),
                    lost: false,
                });
            }
            // An adopt that timed out with the connection up: its move
            // waits in doubt, and this answer settles it.
            None if let Some(token) = adopt => {
                info!(
                    "{}: the answer to adopt #{:#x} came after it timed out",
                    peer.machine, resp.request_id
                );
                self.events.push(Event::LateAdoptAnswer {
                    token,
                    result: resp.result.map_err(|e| e.into_owned()),
                });
            }
            None if c.outbound.was_issued(resp.request_id) => debug!(
                "{}: late call_response for request_id {:#x} dropped (timed out or failed already)",
                peer.machine, resp.request_id
            ),
            None => warn!(
                "{}: call_response for unknown request_id {} dropped",
                peer.machine, resp.request_id
            ),
        }
    }

    /// Makes sure a `CallTimeouts` timer is in the heap while calls are in
    /// flight. One is enough: the oldest chain's deadline is the earliest.
    pub(super) fn arm_call_timeouts(&mut self, now: Instant) {
        if self.timeouts_armed.is_none() {
            let at = now + self.config.call_timeout;
            self.timeouts_armed = Some(at);
            self.timers.schedule(at, Timer::CallTimeouts);
        }
    }

    /// Fails every call whose chain has shown no progress for the call
    /// timeout. A late answer then finds no entry and is dropped, except
    /// an `adopt`'s ([`Event::LateAdoptAnswer`]).
    pub(super) fn expire_calls(&mut self, now: Instant) {
        self.timeouts_armed = None;
        let timeout = self.config.call_timeout;
        // An answer that arrived before the poll has been read by now.
        let heard_until = self.heard_until(now);
        while let Some((chain, last)) = self.chains.oldest() {
            let due = last + timeout;
            if due > heard_until {
                // Due by the clock but not by what was read: look again
                // after the next poll (a timer due now would fire at once).
                let at = due.max(now + Duration::from_millis(1));
                self.timeouts_armed = Some(at);
                self.timers.schedule(at, Timer::CallTimeouts);
                return;
            }
            for call in self.chains.take(chain) {
                let Some(c) = self
                    .conns
                    .get_mut(call.conn.key())
                    .filter(|c| c.id == call.conn)
                else {
                    continue;
                };
                let Some(p) = c.outbound.remove(call.request_id) else {
                    continue;
                };
                self.outbound_total -= 1;
                let label = c.label();
                self.events.push(Event::Reply {
                    token: p.token,
                    result: Err(format!(
                        "call to object {} on {label} timed out: its chain showed no progress for {timeout:?}",
                        p.target
                    )),
                    lost: true,
                });
            }
        }
    }
}

/// Queues the next run of `snap`'s objects on `c` as one `objects` frame
/// (compact version 2) of at most `most` entries (and never more than
/// half our frame limit in bytes). An object whose behavior name is too
/// long for the frame's table (over 255 bytes) goes alone, as a
/// `create_notify`.
fn queue_objects(c: &mut Conn, snap: &mut Snapshot, most: usize, us: &MachineId) {
    let most = most
        .min(c.max_frame() / 2 / codec::compact::OBJECT_ENTRY)
        .min(codec::compact::MAX_OBJECTS_PER_FRAME);
    let mut run = codec::Objects::default();
    // The snapshot's behavior index -> the frame's.
    let mut frame_index_of: SmallVec<[(u32, u8); 4]> = SmallVec::new();
    while snap.next < snap.objects.objects.len() && run.len() < most.max(1) {
        let (i, (id, global)) = (snap.next, snap.objects.objects[snap.next]);
        if snap.gone.contains(&id) {
            snap.next += 1;
            continue;
        }
        let behavior = match frame_index_of.iter().find(|(g, _)| *g == global) {
            Some(&(_, b)) => Some(b),
            None => {
                let name = snap.objects.behavior(i);
                // The table counts against the frame too.
                let fits = run.wire_len() + 1 + name.len() < c.max_frame() / 2;
                let b = fits.then(|| run.behavior_index(name)).flatten();
                if let Some(b) = b {
                    frame_index_of.push((global, b));
                }
                b
            }
        };
        match behavior {
            Some(b) => run.push(id, b, snap.epochs.get(&id).copied().unwrap_or(0)),
            // A full table (not reached at today's step: 204 entries, 255
            // names), or a name too long for any: this object starts the
            // next frame, or goes alone as JSON (below).
            None if !run.is_empty() => break,
            // A name no table can hold: this object alone, as JSON.
            None => {
                snap.next += 1;
                return queue_create_notify(c, snap, i, us);
            }
        }
        snap.next += 1;
    }
    if run.is_empty() {
        return;
    }
    let sent = run.len() as u64;
    match c.queue(&Message::Objects(run)) {
        Ok(()) => snap.sent += sent,
        Err(e) => warn!("objects frame of {sent} entries not sent: {e}"),
    }
}

/// Queues `snap`'s object `i` on `c` as a JSON `create_notify`.
fn queue_create_notify(c: &mut Conn, snap: &mut Snapshot, i: usize, us: &MachineId) {
    let id = snap.objects.objects[i].0;
    let notify = Message::CreateNotify(codec::CreateNotify {
        object_id: id,
        machine_id: us.as_str().into(),
        behavior: Some(snap.objects.behavior(i).into()),
        epoch: snap.epochs.get(&id).copied().unwrap_or(0),
    });
    match c.queue(&notify) {
        Ok(()) => snap.sent += 1,
        Err(e) => warn!("create_notify for {id} not sent: {e}"),
    }
}

/// A wait path as the wire carries it.
fn wire_edges(edges: &[vm::WaitEdge]) -> Vec<codec::WaitEdge<'_>> {
    edges
        .iter()
        .map(|e| codec::WaitEdge {
            chain: e.chain,
            object: e.object,
            machine: e.machine.as_str().into(),
        })
        .collect()
}

/// A wait path from the wire.
fn vm_edges(edges: Vec<codec::WaitEdge<'_>>) -> Vec<vm::WaitEdge> {
    edges
        .into_iter()
        .map(|e| vm::WaitEdge {
            chain: e.chain,
            object: e.object,
            machine: MachineId::new(&e.machine),
        })
        .collect()
}

/// The machine a notice names: the sender's own id (shared, no copy of
/// the string) when it names the sender, as it must to be believed.
fn claimed(sender: &MachineId, named: &str) -> MachineId {
    if named == sender.as_str() {
        sender.clone()
    } else {
        MachineId::new(named)
    }
}
