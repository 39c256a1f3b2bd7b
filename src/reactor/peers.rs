//! Peers: dialling with backoff, the hello exchange, the one-connection-
//! per-machine tie rule, and what happens when a connection closes.
//!
//! Tie rule (protocol, "Connection lifecycle" 3): when two connections to
//! one machine both finish their hellos, the one dialled by the machine
//! whose `machine_id` sorts lower (byte order) survives. Both ends compute
//! the same answer from the same facts, so they agree without talking.
//! The loser is *retired*, not cut: no new calls go out on it, answers
//! still do, and it closes once nothing is in flight on it (checked every
//! `RETIRE_CHECK`), and not before `RETIRE_GRACE` has passed: a peer
//! across a slow link may still send on it for a round trip after we
//! retired it. Cutting it at once would fail any call that crossed
//! the hellos on it.
//!
//! Two connections from the *same* direction claiming one machine are not
//! a race but a collision (two nodes started with one name): the newer is
//! refused with a log line naming both.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::codec::{self, Message};
use crate::vm::MachineId;
use log::{debug, info, warn};

use super::conn::{Peer, Phase};
use super::handoff::Event;
use super::timer::Timer;
use super::{Inbound, Reactor, PEER_CLOSED, RETIRE_CHECK, RETIRE_GRACE};

const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_secs(2);
/// A connection closed this soon after the hellos was most likely refused.
const REFUSAL_WINDOW: Duration = Duration::from_millis(500);

/// One `--peer` to keep a connection to.
#[derive(Debug)]
pub struct DialSlot {
    spec: String,
    state: DialState,
    /// Bumped per scheduled attempt, so a stale `Timer::Redial` is ignored.
    attempt: u64,
    /// Consecutive failures, for the backoff; reset when a connection
    /// outlives the refusal window.
    failures: u32,
    /// The "peer probably refused us" warning was logged since the last
    /// connection that outlived the refusal window (later ones go to debug).
    warned_refusal: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum DialState {
    Waiting,
    /// A connection from this slot exists (connecting or connected).
    Dialled(usize),
    /// Not dialling: the machine behind this address is reachable through
    /// another connection (an accepted one that won the tie).
    Covered(MachineId),
    /// Not dialling ever again: the address is this node itself.
    Abandoned,
}

impl DialSlot {
    pub fn new(spec: String) -> DialSlot {
        DialSlot {
            spec,
            state: DialState::Waiting,
            attempt: 0,
            failures: 0,
            warned_refusal: false,
        }
    }
}

impl Reactor {
    pub(super) fn redial(&mut self, slot: usize, attempt: u64, now: Instant) {
        let dial = &self.dials[slot];
        if dial.attempt != attempt || dial.state != DialState::Waiting {
            return; // a stale timer
        }
        let addr = match resolve(&dial.spec) {
            Ok(addr) => addr,
            Err(e) => return self.schedule_redial(slot, now, &e),
        };
        match mio::net::TcpStream::connect(addr) {
            Ok(stream) => match self.add_conn(stream, addr, Some(slot)) {
                Some(key) => self.dials[slot].state = DialState::Dialled(key),
                None => self.schedule_redial(slot, now, "could not register the socket"),
            },
            Err(e) => self.schedule_redial(slot, now, &e.to_string()),
        }
    }

    fn schedule_redial(&mut self, slot: usize, now: Instant, why: &str) {
        let dial = &mut self.dials[slot];
        dial.failures += 1;
        dial.attempt += 1;
        dial.state = DialState::Waiting;
        let delay = backoff(dial.failures, dial.attempt);
        if dial.failures == 1 {
            info!(
                "peer {} not reachable yet ({why}); retrying with backoff up to {:?}",
                dial.spec, BACKOFF_CAP
            );
        } else {
            debug!(
                "peer {} still not reachable ({why}); next try in {delay:?}",
                dial.spec
            );
        }
        self.timers.schedule(
            now + delay,
            Timer::Redial {
                slot,
                attempt: dial.attempt,
            },
        );
    }

    pub(super) fn on_dial_failed(&mut self, key: usize, err: &std::io::Error) {
        let reason = format!("connect failed: {err}");
        self.close(key, &reason);
    }

    /// Re-arms every slot that was covered by `machine`'s connection.
    fn rearm_covered(&mut self, machine: &MachineId, now: Instant) {
        for slot in 0..self.dials.len() {
            if matches!(&self.dials[slot].state, DialState::Covered(m) if m == machine) {
                let dial = &mut self.dials[slot];
                dial.failures = 0;
                dial.attempt += 1;
                dial.state = DialState::Waiting;
                self.timers.schedule(
                    now,
                    Timer::Redial {
                        slot,
                        attempt: dial.attempt,
                    },
                );
            }
        }
    }

    /// Dispatches one parsed frame. `Err` is a protocol error: the caller
    /// closes this connection (only this one) and logs the reason.
    pub(super) fn handle_message(&mut self, key: usize, msg: Message<'_>) -> Result<(), String> {
        let conn = &mut self.conns[key];
        let Some(peer) = conn.peer.clone() else {
            return match msg {
                Message::Hello(hello) => self.handle_hello(key, hello),
                other => Err(format!(
                    "first frame was `{}`, not `hello`",
                    other.type_name()
                )),
            };
        };
        match msg {
            Message::Hello(_) => return Err("a second `hello`".into()),
            Message::Call(call) => {
                let serial = conn.serial;
                let Some(id) = self.inbound.insert(Inbound {
                    conn: key,
                    serial,
                    request_id: call.request_id,
                }) else {
                    let answer = Message::CallResponse(codec::CallResponse {
                        request_id: call.request_id,
                        result: Err("node overloaded: too many calls in flight".into()),
                    });
                    let _ = self.conns[key].queue(&answer);
                    self.mark_dirty(key);
                    return Ok(());
                };
                self.conns[key].calls_in += 1;
                if let Some(chain) = call.chain {
                    self.chain_activity.insert(chain, Instant::now());
                }
                debug!(
                    "call #{:#x} <- {} for object {}",
                    call.request_id, peer.machine, call.target
                );
                // The requester hosts the sender, and only this connection
                // reaches it: a call naming another machine would place its
                // sender where we may never connect (and let a peer grow
                // our directory with machines that do not exist).
                if *call.sender_machine != *peer.machine.as_str() {
                    debug!(
                        "{}: call #{:#x} names sender_machine `{}`; placing its sender on {} instead",
                        peer.machine, call.request_id, call.sender_machine, peer.machine
                    );
                }
                let sender_machine = peer.machine;
                self.events.push(Event::Inbound {
                    inbound: super::handoff::InboundId(id),
                    target: call.target,
                    input: call.input,
                    sender: call.sender,
                    sender_machine,
                    chain: call.chain,
                });
            }
            Message::CallResponse(resp) => {
                let serial = conn.serial;
                match self.pending.get(resp.request_id) {
                    Some(p) if p.conn == key && p.serial == serial => {
                        let p = self.pending.remove(resp.request_id).expect("just seen");
                        self.chain_activity.insert(p.chain, Instant::now());
                        let conn = &mut self.conns[key];
                        conn.calls_out = conn.calls_out.saturating_sub(1);
                        self.events.push(Event::Reply {
                            token: p.token,
                            result: resp.result.map_err(|e| e.into_owned()),
                        });
                    }
                    _ if self.pending.was_issued(resp.request_id) => debug!(
                        "{}: late call_response for request_id {:#x} dropped (timed out or failed already)",
                        peer.machine, resp.request_id
                    ),
                    _ => warn!(
                        "{}: call_response for unknown request_id {} dropped",
                        peer.machine, resp.request_id
                    ),
                }
            }
            Message::CreateNotify(notify) => {
                if *notify.machine_id == *self.config.machine.as_str() {
                    debug!(
                        "{}: create_notify placing {} on us, ignored",
                        peer.machine, notify.object_id
                    );
                    return Ok(());
                }
                // "creator -> all": a node announces only its own objects.
                if *notify.machine_id != *peer.machine.as_str() {
                    warn!(
                        "{}: create_notify places {} on `{}`, not on the sender; ignored",
                        peer.machine, notify.object_id, notify.machine_id
                    );
                    return Ok(());
                }
                self.events.push(Event::Located {
                    id: notify.object_id,
                    machine: peer.machine,
                    behavior: notify.behavior.map(|b| b.as_ref().into()),
                });
            }
            Message::DestroyNotify(notify) => self.events.push(Event::Gone {
                id: notify.object_id,
                machine: peer.machine,
            }),
            Message::Ping(ping) => {
                let pong = Message::Pong(codec::Pong { nonce: ping.nonce });
                let _ = conn.queue(&pong);
                self.mark_dirty(key);
            }
            Message::Pong(_) => {}
        }
        Ok(())
    }

    fn handle_hello(&mut self, key: usize, hello: codec::Hello<'_>) -> Result<(), String> {
        if hello.version != 1 {
            return Err(format!("unsupported protocol version {}", hello.version));
        }
        if hello.machine_id.is_empty() {
            return Err("`hello` with an empty machine_id".into());
        }
        let machine = MachineId::new(&hello.machine_id);
        if machine == self.config.machine {
            if let Some(slot) = self.dialled_self(key) {
                log::error!(
                    "peer {} is this node itself; not dialling it again",
                    self.dials[slot].spec
                );
                self.dials[slot].state = DialState::Abandoned;
            }
            return Err(format!(
                "peer claims our own machine_id `{machine}` (dialling itself, or two nodes with one name)"
            ));
        }
        if hello.node_prefix == self.config.node_prefix {
            return Err(format!(
                "peer `{machine}` has our node_prefix {}: its object ids would collide with ours \
                 (the prefix defaults to the port: give one node another --node-prefix)",
                hello.node_prefix
            ));
        }
        for (other, &k) in &self.active {
            if *other != machine
                && self.conns[k].peer.as_ref().map(|p| p.prefix) == Some(hello.node_prefix)
            {
                return Err(format!(
                    "peer `{machine}` has node_prefix {}, already used by connected peer `{other}` \
                     (the prefix defaults to the port: give one node another --node-prefix)",
                    hello.node_prefix
                ));
            }
        }
        let conn = &mut self.conns[key];
        conn.peer = Some(Peer {
            machine: machine.clone(),
            prefix: hello.node_prefix,
        });
        conn.phase = Phase::Ready;
        conn.hello_at = Some(Instant::now());
        let dialled_by_us = conn.dial_slot.is_some();
        info!(
            "hello from {} (node_prefix {})",
            conn.label(),
            hello.node_prefix
        );
        match self.active.get(&machine).copied() {
            None => {
                self.active.insert(machine.clone(), key);
                self.events.push(Event::PeerUp {
                    machine: machine.clone(),
                });
            }
            Some(other) => {
                let other_dialled_by_us = self.conns[other].dial_slot.is_some();
                if other_dialled_by_us == dialled_by_us {
                    return Err(format!(
                        "machine_id `{machine}` collides with connected peer {}",
                        self.conns[other].label()
                    ));
                }
                // The connection dialled by the lower machine_id survives.
                let keep_ours = self.config.machine < machine;
                let (winner, loser) = if dialled_by_us == keep_ours {
                    (key, other)
                } else {
                    (other, key)
                };
                let lower = if keep_ours {
                    &self.config.machine
                } else {
                    &machine
                };
                info!(
                    "two connections to {machine}: keeping the one dialled by {lower}, retiring {}",
                    self.conns[loser].remote
                );
                self.active.insert(machine.clone(), winner);
                self.conns[loser].retired = true;
                self.conns[loser].retired_at = Some(Instant::now());
                let serial = self.conns[loser].serial;
                self.timers.schedule(
                    Instant::now() + RETIRE_CHECK,
                    Timer::Retire {
                        conn: loser,
                        serial,
                    },
                );
                if loser == key {
                    return Ok(());
                }
            }
        }
        self.send_snapshot(key);
        Ok(())
    }

    /// The dial slot of `key` if it is a connection from this node to its
    /// own listener (same address at both ends, our port at the far one):
    /// a `--peer` naming ourselves, as opposed to another node with our name.
    fn dialled_self(&self, key: usize) -> Option<usize> {
        let conn = &self.conns[key];
        let slot = conn.dial_slot?;
        let ours = self.listener.local_addr().ok()?;
        let local = conn.stream.local_addr().ok()?;
        (conn.remote.port() == ours.port() && conn.remote.ip() == local.ip()).then_some(slot)
    }

    /// One `create_notify` per local object, so a late joiner learns them.
    fn send_snapshot(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        for (&id, behavior) in &self.local_objects {
            let notify = Message::CreateNotify(codec::CreateNotify {
                object_id: id,
                machine_id: self.config.machine.as_str().into(),
                behavior: Some(behavior.as_ref().into()),
            });
            if let Err(e) = conn.queue(&notify) {
                warn!("create_notify for {id} not sent: {e}");
            }
        }
        self.mark_dirty(key);
    }

    pub(super) fn check_retired(&mut self, key: usize, serial: u64, now: Instant) {
        let Some(conn) = self.conns.get(key) else {
            return;
        };
        // Promoted back (the winner closed first): it is the connection now.
        if conn.serial != serial || !conn.retired {
            return;
        }
        let graced = conn
            .retired_at
            .is_some_and(|t| now.saturating_duration_since(t) >= RETIRE_GRACE);
        if graced && conn.calls_out == 0 && conn.calls_in == 0 && conn.unsent() == 0 {
            self.close(key, "duplicate connection retired");
        } else {
            self.timers
                .schedule(now + RETIRE_CHECK, Timer::Retire { conn: key, serial });
        }
    }

    /// Closes one connection: fails its calls in flight, updates the
    /// machine's reachability, and re-arms dialling where needed.
    pub(super) fn close(&mut self, key: usize, reason: &str) {
        self.close_logged(key, reason, true);
    }

    /// `close` for a caller that has already logged why.
    pub(super) fn close_quietly(&mut self, key: usize, reason: &str) {
        self.close_logged(key, reason, false);
    }

    fn close_logged(&mut self, key: usize, reason: &str, log: bool) {
        let Some(mut conn) = self.conns.try_remove(key) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut conn.stream);
        let label = conn.label();
        // A connection that outlived the refusal window was a working one:
        // its loss restarts the backoff. One closed sooner keeps growing it,
        // so a peer that refuses us is not redialled ten times a second.
        let lasted = conn.hello_at.is_some_and(|t| t.elapsed() >= REFUSAL_WINDOW);
        if let (true, Some(slot)) = (lasted, conn.dial_slot) {
            self.dials[slot].failures = 0;
            self.dials[slot].warned_refusal = false;
        }
        if !log {
            // The caller logged why.
        } else if conn.retired {
            debug!("closed {label}: {reason}");
        } else if conn.phase == Phase::Ready
            && reason == PEER_CLOSED
            && conn.dial_slot.is_some()
            && conn.retired_at.is_none()
            && conn.hello_at.is_some_and(|t| t.elapsed() < REFUSAL_WINDOW)
            && conn.calls_in + conn.calls_out == 0
        {
            let warned = conn
                .dial_slot
                .is_some_and(|slot| std::mem::replace(&mut self.dials[slot].warned_refusal, true));
            let say = if warned {
                log::Level::Debug
            } else {
                log::Level::Warn
            };
            log::log!(
                say,
                "connection to {label} closed right after the hellos ({reason}): the peer probably \
                 refused us (is our machine_id or node_prefix already in use there? see its log)"
            );
        } else if conn.phase == Phase::Ready {
            info!("connection to {label} closed: {reason}");
        } else {
            debug!("connection to {label} closed before hello: {reason}");
        }
        self.fail_pending_on(
            key,
            conn.serial,
            &format!("connection to {label} lost: {reason}"),
        );

        let now = Instant::now();
        if let Some(peer) = &conn.peer {
            if self.active.get(&peer.machine) == Some(&key) {
                self.active.remove(&peer.machine);
                let spare = self
                    .conns
                    .iter()
                    .find(|(_, c)| c.phase == Phase::Ready && c.machine() == Some(&peer.machine));
                if let Some((k, _)) = spare {
                    self.active.insert(peer.machine.clone(), k);
                    self.conns[k].retired = false;
                } else {
                    self.events.push(Event::PeerDown {
                        machine: peer.machine.clone(),
                        reason: reason.to_owned(),
                    });
                    self.rearm_covered(&peer.machine, now);
                }
            }
        }
        if let Some(slot) = conn.dial_slot {
            match conn.peer {
                Some(peer) if self.active.contains_key(&peer.machine) => {
                    self.dials[slot].state = DialState::Covered(peer.machine)
                }
                _ if self.stopping || self.dials[slot].state == DialState::Abandoned => {}
                _ => self.schedule_redial(slot, now, reason),
            }
        }
    }
}

/// `host:port` to an address, preferring IPv4 (what `alpha` in /etc/hosts
/// usually means). Resolved at every attempt, so a fixed /etc/hosts entry
/// takes effect without a restart.
fn resolve(spec: &str) -> Result<SocketAddr, String> {
    let addrs: Vec<SocketAddr> = spec
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve `{spec}`: {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("`{spec}` resolves to no address"))
}

/// Exponential from `BACKOFF_FIRST`, capped at `BACKOFF_CAP`, with up to
/// 25% jitter so nodes restarted together do not dial in lockstep.
fn backoff(failures: u32, salt: u64) -> Duration {
    let exp = BACKOFF_FIRST.saturating_mul(1 << failures.saturating_sub(1).min(16));
    let base = exp.min(BACKOFF_CAP);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    let mut x = nanos ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    base.mul_f64(0.875 + 0.25 * (x % 1000) as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let first = backoff(1, 1);
        assert!(first <= BACKOFF_FIRST + BACKOFF_FIRST / 4, "{first:?}");
        assert!(first >= BACKOFF_FIRST - BACKOFF_FIRST / 4, "{first:?}");
        for failures in 6..40 {
            let d = backoff(failures, failures as u64);
            assert!(d <= BACKOFF_CAP + BACKOFF_CAP / 4, "{d:?}");
            assert!(d >= BACKOFF_CAP - BACKOFF_CAP / 4, "{d:?}");
        }
    }

    #[test]
    fn resolve_prefers_ipv4_and_reports_garbage() {
        assert_eq!(
            resolve("127.0.0.1:9").unwrap(),
            "127.0.0.1:9".parse().unwrap()
        );
        assert!(resolve("missing-port").is_err());
    }
}
