//! Connections: the hello exchange and the tie rule, dialling and its
//! backoff, keepalive and down detection, retiring and closing.
//!
//! Every close goes through `Core::close`, which fails the calls in flight
//! on the connection (so no chain waits for ever), hands the machine's
//! calls to its next greeted connection (a retired spare is promoted),
//! reports the machine down when none is left, and re-arms dialling.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use crate::codec::{self, Message};
use crate::vm::MachineId;

use super::auth;
use super::conn::{Conn, Phase, CLOSE_REASON_MAX};
use super::dial::{self, DialState, BACKOFF_CAP, REFUSAL_WINDOW};
use super::hello::{self, Peer, Refusal};
use super::timer::Timer;
use super::{
    Action, BadInput, CloseReason, ConnId, Core, Event, Status, HANDSHAKE_TIMEOUT, MAX_STRANGERS,
    RETIRE_CHECK, RETIRE_GRACE, RETIRE_LONGEST,
};

/// Silence checks per keepalive interval: a silent peer is found at most
/// a twentieth of an interval late.
const KEEPALIVE_TICKS: u32 = 20;

/// The longest wait between two checks of the handshake limit.
const HANDSHAKE_CHECK: Duration = Duration::from_millis(250);

impl Core {
    /// The reactor accepted a connection from `remote`. If
    /// [`MAX_STRANGERS`] accepted connections are in their handshake
    /// already, the oldest of them is closed (and told why) to make room.
    pub fn handle_accepted(&mut self, remote: SocketAddr, now: Instant) -> ConnId {
        info!("accepted a connection from {remote}");
        let id = self.add_conn(remote, None, now);
        // After the new one has its slot: the reactor lets the old one's
        // socket go with its `close` said only if no new one took the slot.
        self.make_room_for(id, now);
        id
    }

    fn make_room_for(&mut self, new: ConnId, now: Instant) {
        let mut strangers = 0;
        let mut oldest: Option<(Instant, ConnId)> = None;
        for (_, c) in &self.conns {
            if c.dial_slot.is_none() && matches!(c.phase, Phase::AwaitHello | Phase::AwaitProof) {
                strangers += 1;
                if c.id != new && oldest.is_none_or(|(at, _)| c.opened < at) {
                    oldest = Some((c.opened, c.id));
                }
            }
        }
        let (true, Some((_, conn))) = (strangers > MAX_STRANGERS, oldest) else {
            self.crowded_warned = false;
            return;
        };
        let label = self.conns[conn.key()].label();
        let reason = CloseReason::Crowded;
        if !std::mem::replace(&mut self.crowded_warned, true) {
            warn!("{label}: {reason}; so for every newer one until there is room");
        } else {
            debug!("{label}: {reason}");
        }
        self.say_closing(conn, &reason.to_string());
        self.close(conn, reason, false, now);
    }

    /// The reactor started a TCP connect for dial slot `slot` (after
    /// [`Action::Dial`]); `local` is our end of it.
    pub fn handle_dialled(
        &mut self,
        slot: usize,
        remote: SocketAddr,
        local: SocketAddr,
        now: Instant,
    ) -> ConnId {
        let id = self.add_conn(remote, Some(slot), now);
        // Closed at once (no random bytes for its challenge): that close
        // rescheduled the dial, which must stay scheduled.
        let Some(c) = self.conn_mut(id) else {
            return id;
        };
        c.local = Some(local);
        if let Some(dial) = self.dials.get_mut(slot) {
            dial.state = DialState::Connected(id);
        }
        id
    }

    /// Resolving or connecting for `slot` failed before a connection existed.
    pub fn handle_dial_failed(&mut self, slot: usize, why: &str, now: Instant) {
        if slot < self.dials.len() {
            self.schedule_redial(slot, now, why);
        }
    }

    /// A dialled connection's TCP handshake finished: the 3 s for ours
    /// start now.
    pub fn handle_connected(&mut self, conn: ConnId, now: Instant) {
        if let Some(c) = self.conn_mut(conn) {
            if c.phase == Phase::Connecting {
                c.phase = Phase::AwaitHello;
                c.opened = now;
                info!("connected to {}", c.remote);
                self.mark_dirty(conn);
            }
        }
    }

    /// `bytes` arrived on `conn`.
    pub fn handle_heard(&mut self, conn: ConnId, bytes: usize, now: Instant) {
        if let Some(c) = self.conn_mut(conn) {
            c.last_heard = now;
            c.traffic.bytes_in += bytes as u64;
        }
    }

    /// The reactor stopped (or resumed) reading `conn` because the
    /// interpreter is behind; a paused connection is not declared silent.
    pub fn set_paused(&mut self, conn: ConnId, paused: bool, now: Instant) {
        if let Some(c) = self.conn_mut(conn) {
            c.paused = paused;
            if paused {
                c.paused_at.get_or_insert(now);
            } else {
                // Bytes may have waited a while: that was us, not the peer.
                c.last_heard = now;
                if let Some(at) = c.paused_at.take() {
                    // Its hello or proof may be among them: the handshake's
                    // 3 s do not count the time we did not read.
                    c.opened += now.saturating_duration_since(at);
                }
            }
        }
    }

    /// The socket ended (EOF or an error); the reactor drops it.
    pub fn handle_closed(&mut self, conn: ConnId, reason: CloseReason, now: Instant) {
        self.close(conn, reason, true, now);
    }

    /// A frame or message that could not be decoded. An unknown message
    /// type after the hellos is ignored (a newer peer may send types we do
    /// not know); anything else closes the connection.
    pub fn handle_bad_input(&mut self, conn: ConnId, bad: BadInput, now: Instant) -> Status {
        let Some(c) = self.conn(conn) else {
            return Status::Closed;
        };
        let greeted = c.peer.is_some();
        let why = match bad {
            BadInput::Frame(codec::FrameError::TooLarge { len, .. })
                if !greeted && starts_a_tls_record(len) =>
            {
                if c.dial_slot.is_some() {
                    // We dialled a TLS node: it answered our hello with an
                    // alert. A TLS failure, logged as those are (once per
                    // address we dial).
                    let why = "the peer answered in TLS (it runs with `--tls-*` and this node \
                               without)";
                    self.close(conn, CloseReason::Tls(why.into()), true, now);
                    return Status::Closed;
                }
                let (label, ip) = (c.label(), c.remote.ip());
                self.tls_stranger(&label, ip, now);
                let why = "a TLS handshake on a plaintext port".to_string();
                self.close(conn, CloseReason::Protocol(why), false, now);
                return Status::Closed;
            }
            BadInput::Message(e) if e.is_unknown_type() && greeted => {
                warn!("{}: ignoring a message: {e}", c.label());
                return Status::Open;
            }
            // Lifecycle rule 1: nothing but the handshake before it is done,
            // even where an unknown type would later be ignored.
            BadInput::Message(e) if e.is_unknown_type() && c.claimed.is_some() => {
                format!("{e} before the proof")
            }
            BadInput::Message(e) if e.is_unknown_type() => {
                format!("first frame was not `hello`: {e}")
            }
            BadInput::Message(e) => format!("bad message: {e}"),
            BadInput::Frame(e) if greeted => format!("bad frame: {e}"),
            // `claimed` is set by the hello (`hello_at` only by the proof).
            BadInput::Frame(e) if c.claimed.is_none() => format!(
                "bad frame before the handshake completed: {e} (no hello came first: \
                 is it an avm node?)"
            ),
            BadInput::Frame(e) => format!("bad frame before the handshake completed: {e}"),
        };
        self.protocol_error(conn, why, now);
        Status::Closed
    }

    /// Closes every connection (their unsent bytes linger for one last
    /// write) and stops dialling.
    pub fn shutdown(&mut self, now: Instant) {
        self.stopping = true;
        let all: Vec<ConnId> = self.conns.iter().map(|(_, c)| c.id).collect();
        for conn in all {
            // Said, so that a peer tells a node that left from one that
            // refused it (a close right after the hellos looks like one).
            if self.conn(conn).is_some_and(Conn::is_ready) {
                self.say_closing(conn, SHUTTING_DOWN_SAID);
            }
            self.close(conn, CloseReason::ShuttingDown, true, now);
        }
    }

    /// A TLS client dialled this plaintext node: a setup mistake, said
    /// once per address per [`STRANGER_QUIET`] at WARN (its node
    /// redials all along), otherwise at DEBUG.
    fn tls_stranger(&mut self, label: &str, ip: IpAddr, now: Instant) {
        let again = self.said_lately(ip, TLS_CLIENT_HERE, now);
        log::log!(
            warn_once(again),
            "{label}: a TLS handshake arrived on this plaintext port (are `--tls-*` missing here, or \
             given to that node by mistake?); closing this connection (said once per address \
             every {} minutes)",
            STRANGER_QUIET.as_secs() / 60
        );
    }

    /// Whether mistake `what` (a TLS mismatch, a stranger's protocol
    /// error) with `ip` was said within the last
    /// [`STRANGER_QUIET`]; notes that it is being said now if not.
    /// Per reason: an operator who fixes one mistake and makes another
    /// hears of the second at once.
    fn said_lately(&mut self, ip: IpAddr, what: &str, now: Instant) -> bool {
        let quiet = |at: &Instant| now.saturating_duration_since(*at) < STRANGER_QUIET;
        let key = (ip, failure_kind(what));
        let again = self.strangers_said.get(&key).is_some_and(quiet);
        if !again {
            if self.strangers_said.len() >= STRANGERS_KEPT {
                self.strangers_said.retain(|_, at| quiet(at));
            }
            if self.strangers_said.len() >= STRANGERS_KEPT {
                // Hundreds of addresses at once: forget them all rather
                // than grow (some warn twice).
                self.strangers_said.clear();
            }
            self.strangers_said.insert(key, now);
        }
        again
    }

    /// When this node last warned of a TLS client from `ip` (for tests).
    #[cfg(test)]
    pub(crate) fn tls_warned_at(&self, ip: IpAddr) -> Option<Instant> {
        self.warned_at_for(ip, TLS_CLIENT_HERE)
    }

    /// When this node last warned of TLS mismatch `what` with `ip`.
    #[cfg(test)]
    pub(crate) fn warned_at_for(&self, ip: IpAddr, what: &str) -> Option<Instant> {
        self.strangers_said.get(&(ip, failure_kind(what))).copied()
    }

    /// Before the handshake is done, a stranger's error is said at WARN
    /// once per address and reason per [`STRANGER_QUIET`], then at
    /// DEBUG: a node with another key, or the same name, redials all
    /// along and would fill the log with the same line.
    pub(super) fn protocol_error(&mut self, conn: ConnId, why: String, now: Instant) {
        if let Some(c) = self.conn(conn) {
            let (label, stranger, ip) = (c.label(), c.hello_at.is_none(), c.remote.ip());
            let again = stranger && self.said_lately(ip, &why, now);
            log::log!(
                warn_once(again),
                "protocol error from {label}: {why}; closing this connection"
            );
        }
        self.say_closing(conn, &why);
        self.close(conn, CloseReason::Protocol(why), false, now);
    }

    /// Tells the peer on `conn` why it is about to be closed (a `close`,
    /// once: the first reason given stands): it learns why, not only that
    /// the connection closed. The frame goes out as the connection's last
    /// bytes, best effort.
    pub(super) fn say_closing(&mut self, conn: ConnId, why: &str) {
        let Some(c) = self.conn_mut(conn) else {
            return;
        };
        if std::mem::replace(&mut c.closing_said, true) {
            return;
        }
        let close = codec::Close {
            reason: codec::cut_on_char(why, CLOSE_REASON_MAX).into(),
        };
        self.queue(conn, &Message::Close(close));
    }

    /// The peer's `hello`: checked, its claim and challenge kept (not yet
    /// trusted), and, if we dialled, our proof sent. An acceptor proves
    /// only after the dialler has: a stranger who dials in learns nothing
    /// it could test key guesses against.
    pub(super) fn handle_hello(
        &mut self,
        conn: ConnId,
        hello: codec::Hello<'_>,
        now: Instant,
    ) -> Result<(), String> {
        let connected = self
            .active
            .values()
            .filter_map(|a| self.conns[a.key()].peer.clone());
        let (peer, their_nonce) = match hello::check(&hello, &self.us, connected) {
            Ok(claim) => claim,
            Err(refusal) => {
                if matches!(refusal, Refusal::OurMachineId(_)) {
                    self.abandon_if_self(conn);
                }
                self.say_closing(conn, &refusal.told());
                return Err(refusal.to_string());
            }
        };
        if self.reached_again(conn, &peer, hello.boot.unwrap_or(0), now) {
            return Ok(());
        }
        let c = &mut self.conns[conn.key()];
        c.their_nonce = their_nonce;
        c.their_boot = hello.boot.unwrap_or(0);
        // An offer of N reads every version up to N: what we send is
        // checked against it message by message.
        c.compact = hello.compact.unwrap_or(0);
        c.phase = Phase::AwaitProof;
        let we_dialled = c.dial_slot.is_some();
        if we_dialled {
            self.send_proof(conn, &peer);
        }
        self.conns[conn.key()].claimed = Some(peer);
        Ok(())
    }

    /// Whether our dial `conn` reached, by another `--peer` address (an
    /// alias and an IP, say), the very node (same name, prefix and life)
    /// that a dial of ours already connected: if so `conn` is closed and
    /// its slot covered by that connection while it lasts. Otherwise the
    /// two would collide (as two dials from one side must), and the slot
    /// would redial into the same refusal every few seconds for ever.
    fn reached_again(&mut self, conn: ConnId, peer: &Peer, boot: u64, now: Instant) -> bool {
        let Some(slot) = self.conns[conn.key()].dial_slot else {
            return false;
        };
        let Some(&other) = self.active.get(&peer.machine) else {
            return false;
        };
        let o = &self.conns[other.key()];
        let same = o.peer.as_ref().is_some_and(|p| p.prefix == peer.prefix) && o.their_boot == boot;
        if !same || o.dial_slot.is_none() {
            return false;
        }
        let (here, there) = (self.conns[conn.key()].remote, o.remote);
        info!(
            "{here} is {}, already connected at {there}; not dialling it again while that \
             connection lasts",
            peer.machine
        );
        self.say_closing(conn, &format!("already connected to you at {there}"));
        // Covered first: the close then schedules no redial.
        self.dials[slot].state = DialState::Covered(peer.machine.clone());
        self.close(conn, CloseReason::Retired, false, now);
        true
    }

    /// Queues our proof for the handshake on `conn` with `peer`.
    fn send_proof(&mut self, conn: ConnId, peer: &Peer) {
        let c = &self.conns[conn.key()];
        let (prover, dialler, acceptor) = roles(c, &self.us, peer, true);
        let proof = auth::proof(&self.config.key, prover, &dialler, &acceptor);
        let msg = Message::Auth(codec::Auth {
            proof: auth::to_hex(&proof).into(),
        });
        self.queue(conn, &msg);
    }

    /// The peer's proof: if it shows the cluster key, for this
    /// connection's two hellos, the peer is who its hello says and the
    /// connection is ready (after the tie rule, if the machine is already
    /// connected); otherwise the connection closes.
    pub(super) fn handle_auth(
        &mut self,
        conn: ConnId,
        proof: &str,
        now: Instant,
    ) -> Result<(), String> {
        let c = &mut self.conns[conn.key()];
        let peer = c.claimed.take().expect("AwaitProof has a claim");
        let (prover, dialler, acceptor) = roles(c, &self.us, &peer, false);
        let good = auth::from_hex(proof)
            .is_some_and(|p| auth::verify(&self.config.key, prover, &dialler, &acceptor, &p));
        if !good {
            return Err("bad proof (is the peer using another cluster key?)".into());
        }
        if c.dial_slot.is_none() {
            // We accepted: the dialler has proved itself, now we do.
            self.send_proof(conn, &peer);
        }
        let c = &mut self.conns[conn.key()];
        let machine = peer.machine.clone();
        let dialled_by_us = c.dial_slot.is_some();
        c.peer = Some(peer.clone());
        c.phase = Phase::Ready;
        c.hello_at = Some(now);
        info!("hello from {} (node_prefix {})", c.label(), peer.prefix);
        let remote = c.remote.to_string();
        if let Some(slot) = c.dial_slot {
            self.dials[slot].reached = Some(machine.clone());
        }
        let Some(&other) = self.active.get(&machine) else {
            self.synced.remove(&machine);
            // The hello was checked against the machines connected then;
            // another with this prefix may have been greeted since (two
            // handshakes that overlapped): their ids would collide.
            let holder = self.active.values().find_map(|a| {
                let held = self.conns[a.key()].peer.as_ref()?;
                (held.prefix == peer.prefix).then(|| held.machine.clone())
            });
            if let Some(holder) = holder {
                self.conns[conn.key()].peer = None;
                return Err(Refusal::PrefixTaken {
                    machine,
                    prefix: peer.prefix,
                    holder,
                }
                .to_string());
            }
            let up = self.observed.peer_up(&machine, remote);
            self.active.insert(machine.clone(), conn);
            self.events.push(Event::PeerUp {
                machine,
                prefix: peer.prefix,
                up,
            });
            return Ok(());
        };
        let other_dialled_by_us = self.conns[other.key()].dial_slot.is_some();
        let same_prefix =
            self.conns[other.key()].peer.as_ref().map(|p| p.prefix) == Some(peer.prefix);
        let same_life = self.conns[other.key()].their_boot == self.conns[conn.key()].their_boot;
        let tie = match same_prefix && same_life {
            // The tie rule is for two connections between the same two
            // nodes in the same lives; another prefix or another life under
            // a connected name is another node (or a restart not yet
            // noticed): refused while the established connection lives.
            true => hello::tie(
                &self.us.machine,
                &machine,
                dialled_by_us,
                other_dialled_by_us,
            ),
            false => hello::Tie::Collision,
        };
        let (winner, loser) = match tie {
            hello::Tie::Collision => {
                self.conns[conn.key()].peer = None;
                return Err(Refusal::Collision {
                    machine,
                    label: self.conns[other.key()].label(),
                }
                .to_string());
            }
            hello::Tie::KeepNew => (conn, other),
            hello::Tie::KeepOld => (other, conn),
        };
        let lower = std::cmp::min(&self.us.machine, &machine);
        info!(
            "two connections to {machine}: keeping the one dialled by {lower}, retiring {}",
            self.conns[loser.key()].remote
        );
        self.active.insert(machine, winner);
        let l = &mut self.conns[loser.key()];
        l.retired = true;
        l.retired_at = Some(now);
        self.timers
            .schedule(now + RETIRE_CHECK, Timer::Retire { conn: loser });
        Ok(())
    }

    /// A connection that says it is us: if we dialled it and it reached
    /// our own listener from our own address, the `--peer` is this node,
    /// and is never dialled again (as opposed to another node with our name).
    fn abandon_if_self(&mut self, conn: ConnId) {
        let c = &self.conns[conn.key()];
        let (Some(slot), Some(local)) = (c.dial_slot, c.local) else {
            return;
        };
        if c.remote.port() == self.config.listen_port && c.remote.ip() == local.ip() {
            log::error!(
                "peer {} is this node itself; not dialling it again",
                self.dials[slot].spec
            );
            self.dials[slot].state = DialState::Abandoned;
        }
    }

    pub(super) fn check_retired(&mut self, conn: ConnId, now: Instant) {
        let Some(c) = self.conn(conn) else { return };
        // Promoted back (the winner closed first): it is the connection now.
        if !c.retired {
            return;
        }
        // From the tie, or from the last call the peer sent on it, if
        // later: the peer still sends calls here until it sees the tie.
        // Not for ever: a peer that never stops is not waited for past
        // RETIRE_LONGEST.
        let since = |t: Option<Instant>| t.map(|t| now.saturating_duration_since(t));
        let graced = since(c.retired_at.max(c.called_at)).is_some_and(|d| d >= RETIRE_GRACE)
            || since(c.retired_at).is_some_and(|d| d >= RETIRE_LONGEST);
        // A directory snapshot that began on it before the tie streams to
        // its end there, in order with the broadcasts that go out on it
        // too: ours (still to queue or to write), and the peer's, which is
        // done once its `snapshot_end` came (on any connection). A peer
        // that never sends one is waited for at most RETIRE_LONGEST.
        let ours = c.outbound.is_empty() && c.calls_in == 0 && c.snapshot.is_none();
        let theirs = c
            .peer
            .as_ref()
            .is_none_or(|p| self.synced.contains(&p.machine))
            || c.retired_at
                .is_some_and(|t| now.saturating_duration_since(t) >= RETIRE_LONGEST);
        // Not while paused: bytes wait unread in the kernel (calls, the
        // peer's snapshot), and a close would reset the connection.
        if graced && ours && c.unsent().is_empty() && theirs && !c.paused {
            self.close(conn, CloseReason::Retired, true, now);
        } else {
            self.timers
                .schedule(now + RETIRE_CHECK, Timer::Retire { conn });
        }
    }

    pub(super) fn redial(&mut self, slot: usize, attempt: u64) {
        let dial = &mut self.dials[slot];
        if dial.attempt != attempt || dial.state != DialState::Waiting || self.stopping {
            return; // a stale timer
        }
        dial.state = DialState::Dialling;
        self.actions.push_back(Action::Dial {
            slot,
            spec: Arc::clone(&dial.spec),
        });
    }

    pub(super) fn schedule_redial(&mut self, slot: usize, now: Instant, why: &str) {
        let dial = &mut self.dials[slot];
        if self.stopping || dial.state == DialState::Abandoned {
            return;
        }
        dial.failures += 1;
        dial.attempt += 1;
        dial.state = DialState::Waiting;
        let delay = dial::backoff(dial.failures, &mut self.rng);
        if dial.failures == 1 {
            // A name that does not resolve is a mistake more often than a
            // peer not started yet (the reactor's resolver words it so).
            let level =
                if why.starts_with("cannot resolve") || why.ends_with("resolves to no address") {
                    log::Level::Warn
                } else {
                    log::Level::Info
                };
            log::log!(
                level,
                "peer {} not reachable yet ({why}); retrying with backoff up to {:?}",
                dial.spec,
                BACKOFF_CAP
            );
        } else {
            debug!(
                "peer {} still not reachable ({why}); next try in {delay:?}",
                dial.spec
            );
        }
        let attempt = dial.attempt;
        self.timers
            .schedule(now + delay, Timer::Redial { slot, attempt });
    }

    /// Re-arms every slot that was covered by `machine`'s connection.
    fn rearm_covered(&mut self, machine: &MachineId, now: Instant) {
        for (slot, dial) in self.dials.iter_mut().enumerate() {
            if matches!(&dial.state, DialState::Covered(m) if m == machine) {
                dial.failures = 0;
                dial.attempt += 1;
                dial.state = DialState::Waiting;
                let attempt = dial.attempt;
                self.timers.schedule(now, Timer::Redial { slot, attempt });
            }
        }
    }

    /// Pings every peer once an interval; closes the ones silent for 3.
    pub(super) fn keepalive(&mut self, now: Instant) {
        let limit = self.config.keepalive * 3;
        let ping_due = now.saturating_duration_since(self.last_ping) >= self.config.keepalive;
        if ping_due {
            self.last_ping = now;
        }
        let mut dead = Vec::new();
        let mut alive = Vec::new();
        let heard_until = self.heard_until(now);
        for (_, c) in &self.conns {
            let handshake = match c.phase {
                Phase::AwaitHello => Some("hello"),
                Phase::AwaitProof => Some("proof"),
                Phase::Ready | Phase::Connecting => None,
            };
            if let Some(what) = handshake {
                let waited = heard_until.saturating_duration_since(c.opened);
                if waited > HANDSHAKE_TIMEOUT && !c.paused {
                    dead.push((c.id, CloseReason::Handshake { what }));
                }
                continue;
            }
            let (since, what) = match c.phase {
                Phase::Connecting => (c.opened, "TCP connect not finished"),
                _ => (c.last_heard, "no data or keepalive answer"),
            };
            if heard_until.saturating_duration_since(since) > limit && !c.paused {
                dead.push((c.id, CloseReason::Silent { what, limit }));
            } else if c.is_ready() && ping_due {
                alive.push(c.id);
            }
        }
        for conn in alive {
            let ping = Message::Ping(codec::Ping {
                nonce: self.next_nonce,
            });
            self.next_nonce += 1;
            self.queue(conn, &ping);
        }
        for (conn, reason) in dead {
            let label = self.conns[conn.key()].label();
            match reason {
                CloseReason::Handshake { .. } => {
                    warn!("protocol error from {label}: {reason}; closing this connection");
                    self.say_closing(conn, &reason.to_string());
                }
                _ => warn!("{label}: {reason}; declaring it down"),
            }
            self.close(conn, reason, false, now);
        }
        self.timers.schedule(
            now + keepalive_tick(self.config.keepalive),
            Timer::Keepalive,
        );
    }

    /// Closes one connection: fails its calls in flight, updates the
    /// machine's reachability, and re-arms dialling where needed. `log`:
    /// say why at the level the reason deserves (false: the caller did).
    pub(super) fn close(&mut self, conn: ConnId, reason: CloseReason, log: bool, now: Instant) {
        // A stale id must not close the connection now in its slot.
        if self.conn(conn).is_none() {
            return;
        }
        let mut c = self.conns.remove(conn.key());
        let label = c.label();
        // A connection that outlived the refusal window was a working one:
        // its loss restarts the backoff. One closed sooner keeps growing it.
        let lasted = c
            .hello_at
            .is_some_and(|t| now.saturating_duration_since(t) >= REFUSAL_WINDOW);
        if let (true, Some(slot)) = (lasted, c.dial_slot) {
            self.dials[slot].failures = 0;
            self.dials[slot].warned_refusal = false;
            self.dials[slot].said_warned = None;
            self.dials[slot].warned_tls = None;
        }
        if log {
            self.log_close(&c, &label, &reason, now);
        }
        // What the peer said in its `close` tells callers more than how
        // the socket ended (a peer that stops closes it right after).
        let lost = match c.peer_closing.as_deref() {
            Some(SHUTTING_DOWN_SAID) => {
                format!("connection to {label} lost: the peer is shutting down")
            }
            Some(said) => format!(
                "connection to {label} lost: {reason}; the peer said: {}",
                said.escape_debug()
            ),
            None => format!("connection to {label} lost: {reason}"),
        };
        let events = &mut self.events;
        let chains = &mut self.chains;
        let mut failed = 0;
        c.outbound.drain(|p| {
            failed += 1;
            chains.forget_conn(p.chain, conn);
            events.push(Event::Reply {
                token: p.token,
                result: Err(lost.clone()),
                lost: true,
            });
        });
        self.outbound_total -= failed;
        self.actions.push_back(Action::Close {
            conn,
            linger: c.take_unsent(),
        });

        let mut down = false;
        if let Some(peer) = &c.peer {
            if self.active.get(&peer.machine) == Some(&conn) {
                self.active.remove(&peer.machine);
                let spare = self
                    .conns
                    .iter_mut()
                    .find(|(_, o)| o.is_ready() && o.machine() == Some(&peer.machine));
                if let Some((_, spare)) = spare {
                    spare.retired = false;
                    self.active.insert(peer.machine.clone(), spare.id);
                    // What went out on the closed connection may never have
                    // arrived: a snapshot that streamed (or had just ended)
                    // on it above all. The spare has had every broadcast
                    // since it was greeted, and a snapshot sent on it now
                    // adds what the closed one carried (a snapshot only
                    // adds: a destroy said only there, before the spare
                    // was greeted, is not repaired).
                    if !self.stopping {
                        // The peer, promoting too, sends its own again.
                        self.synced.remove(&peer.machine);
                        self.events.push(Event::SnapshotOwed {
                            machine: peer.machine.clone(),
                            up: self.observed.connects(&peer.machine),
                        });
                    }
                } else {
                    down = true;
                    self.synced.remove(&peer.machine);
                    self.events.push(Event::PeerDown {
                        machine: peer.machine.clone(),
                        reason: reason.clone(),
                    });
                    self.rearm_covered(&peer.machine, now);
                }
            }
        }
        self.observed.closed(&c, &reason, down);
        if let Some(slot) = c.dial_slot {
            match c.peer {
                Some(peer) if self.active.contains_key(&peer.machine) => {
                    self.dials[slot].state = DialState::Covered(peer.machine)
                }
                _ if matches!(self.dials[slot].state, DialState::Covered(_)) => {}
                _ => self.schedule_redial(slot, now, &reason.to_string()),
            }
        }
    }

    fn log_close(&mut self, c: &Conn, label: &str, reason: &CloseReason, now: Instant) {
        let soon_after_hello = c
            .hello_at
            .is_some_and(|t| now.saturating_duration_since(t) < REFUSAL_WINDOW);
        if c.retired || *reason == CloseReason::ShuttingDown {
            debug!("closed {label}: {reason}");
        } else if let CloseReason::Tls(_) = reason {
            // Before any hello, but the operator must hear of it: a wrong
            // CA, a plaintext peer, a name the certificate does not cover.
            // Once per address we dial, not once per redial; once per
            // address per quiet period for one that dials us.
            let what = reason.to_string();
            let warned = match c.dial_slot {
                Some(slot) => {
                    let kind = failure_kind(&what);
                    let last = self.dials[slot].warned_tls.replace(kind.to_string());
                    last.as_deref() == Some(&*kind)
                }
                None => self.said_lately(c.remote.ip(), &what, now),
            };
            log::log!(warn_once(warned), "connection to {label} closed: {reason}");
        } else if c.peer_closing.as_deref() == Some(SHUTTING_DOWN_SAID) {
            info!("connection to {label} closed: the peer is shutting down");
        } else if let Some(said) = &c.peer_closing {
            // The peer said why (its `close`): a refusal of us, or our
            // protocol error. A dialler repeats it at every redial.
            let Some(slot) = c.dial_slot else {
                let said = said.escape_debug();
                return info!("connection from {label} closed ({reason}); the peer said: {said}");
            };
            // Once per reason: a peer that refuses us for another reason
            // now is news.
            let last = &mut self.dials[slot].said_warned;
            let warned = last.as_deref() == Some(said.as_str());
            if !warned {
                *last = Some(said.clone());
            }
            let said = said.escape_debug();
            log::log!(
                warn_once(warned),
                "connection to {label} closed ({reason}); the peer said: {said}"
            );
        } else if c.is_ready()
            && *reason == CloseReason::PeerClosed
            && c.retired_at.is_none()
            && soon_after_hello
            && c.calls_in == 0
            && c.outbound.is_empty()
        {
            let Some(slot) = c.dial_slot else {
                return info!("connection to {label} closed: {reason}");
            };
            let warned = std::mem::replace(&mut self.dials[slot].warned_refusal, true);
            log::log!(
                warn_once(warned),
                "connection to {label} closed right after the hellos ({reason}): the peer probably \
                 refused us (is our machine_id or node_prefix already in use there? see its log)"
            );
        } else if c.is_ready() {
            info!("connection to {label} closed: {reason}");
        } else {
            debug!("connection to {label} closed before hello: {reason}");
        }
    }
}

/// The `close` reason of a node that shuts down (`CloseReason::ShuttingDown`).
pub(super) const SHUTTING_DOWN_SAID: &str = "node shutting down";

/// WARN the first time, DEBUG once said: for a mistake that a redialling
/// peer repeats every few seconds.
fn warn_once(said_before: bool) -> log::Level {
    if said_before {
        log::Level::Debug
    } else {
        log::Level::Warn
    }
}

/// A TLS failure's text without its numbers: what kind of failure it is.
/// (rustls puts the time in an expiry error, which would make every
/// redial's failure news.)
fn failure_kind(what: &str) -> Box<str> {
    what.chars().filter(|c| !c.is_ascii_digit()).collect()
}

/// The mismatch a plaintext node sees when a TLS client dials it.
const TLS_CLIENT_HERE: &str = "a TLS client on a plaintext port";

/// How long a node stays quiet about one stranger's mistake (a TLS
/// mismatch, a protocol error) from one address, and how many (address,
/// mistake) pairs it remembers at most.
const STRANGER_QUIET: Duration = Duration::from_secs(600);
const STRANGERS_KEPT: usize = 256;

/// Whether a frame header is the start of a TLS record: an alert (content
/// type 21, what a TLS node answers a plaintext `hello` with) or a
/// handshake (22, a TLS client's first bytes), with a record version of
/// 3.0-3.4 (SSL 3 to TLS 1.3; a ClientHello says 3.1 or 3.3 there,
/// whatever it negotiates). Read as a length it is over 352 MB, so a
/// plaintext node sees a frame far too large before any `hello`.
fn starts_a_tls_record(header: u32) -> bool {
    let [kind, major, minor, _] = header.to_be_bytes();
    (kind == 0x15 || kind == 0x16) && major == 3 && minor <= 4
}

/// How often `keepalive` runs: often enough for the interval, and for
/// the handshake limit whatever the interval (a stalled handshake lasts
/// at most `HANDSHAKE_TIMEOUT` + 2 x [`HANDSHAKE_CHECK`]: one check, and
/// the poll it counts up to, `Core::handle_polling`).
pub(super) fn keepalive_tick(interval: Duration) -> Duration {
    (interval / KEEPALIVE_TICKS).clamp(Duration::from_millis(1), HANDSHAKE_CHECK)
}

/// The two sides of `c`'s handshake, and whose proof is meant: ours
/// (`ours` true) or the peer's.
fn roles<'a>(
    c: &'a Conn,
    us: &'a Peer,
    them: &'a Peer,
    ours: bool,
) -> (auth::Role, auth::Side<'a>, auth::Side<'a>) {
    let me = auth::Side {
        machine: us.machine.as_str(),
        prefix: us.prefix,
        nonce: &c.nonce,
    };
    let peer = auth::Side {
        machine: them.machine.as_str(),
        prefix: them.prefix,
        nonce: &c.their_nonce,
    };
    let we_dialled = c.dial_slot.is_some();
    let prover = match (we_dialled, ours) {
        (true, true) | (false, false) => auth::Role::Dialler,
        (true, false) | (false, true) => auth::Role::Acceptor,
    };
    if we_dialled {
        (prover, me, peer)
    } else {
        (prover, peer, me)
    }
}

#[cfg(test)]
mod tests {
    use super::starts_a_tls_record;

    #[test]
    fn tls_records_are_told_from_frame_lengths() {
        // Handshakes (a ClientHello), and alerts (rustls refusing our hello).
        for tls in [
            0x1603_0100,
            0x1603_0301,
            0x1603_00ff,
            0x1603_04ff,
            0x1503_0300,
        ] {
            assert!(starts_a_tls_record(tls), "{tls:#x}");
        }
        // Other content types, versions past 3.4, SSL 2, and real lengths.
        for not in [0x1703_0300, 0x1403_0100, 0x1603_0500, 0x1602_0000, 5000, 0] {
            assert!(!starts_a_tls_record(not), "{not:#x}");
        }
    }
}
