//! What the core counts for `/health` and `/metrics`: per-connection
//! frames and bytes (fields on `Conn`, bumped where the frames pass),
//! per-peer history (folded in when a connection closes, so the hot path
//! never hashes a machine name), closes by reason, and the round-trip
//! histogram of our calls.

use std::collections::HashMap;
use std::time::Instant;

use crate::observe::{Histogram, PeerView};
use crate::vm::MachineId;

use super::conn::Conn;
use super::{CloseReason, Core};

/// Microseconds since the core started, to stamp calls as they leave and
/// time their answers. A reactor iteration hands every message it read
/// the same `now`, so a burst of answers works the microseconds out once,
/// not once per answer (an `Instant` subtraction and a `Duration`'s
/// microseconds took 55 instructions per call).
#[derive(Debug)]
pub(super) struct MicroClock {
    origin: Instant,
    at: Instant,
    micros: u64,
}

impl MicroClock {
    pub(super) fn new(now: Instant) -> MicroClock {
        MicroClock {
            origin: now,
            at: now,
            micros: 0,
        }
    }

    pub(super) fn micros(&mut self, now: Instant) -> u64 {
        if now != self.at {
            self.at = now;
            let since = now.saturating_duration_since(self.origin).as_micros();
            self.micros = u64::try_from(since).unwrap_or(u64::MAX);
        }
        self.micros
    }
}

/// A peer's history over its past connections.
#[derive(Debug, Default)]
pub(super) struct PeerTotals {
    address: String,
    frames_in: u64,
    frames_out: u64,
    bytes_in: u64,
    bytes_out: u64,
    connects: u64,
    downs: u64,
    /// When its last connection closed (its last sign of life then).
    last_heard: Option<Instant>,
}

#[derive(Debug, Default)]
pub(super) struct Observed {
    pub(super) rtt: Histogram,
    peers: HashMap<MachineId, PeerTotals>,
    /// Connections closed for an error, by reason.
    errors: Vec<(&'static str, u64)>,
}

/// Traffic counters of one connection.
#[derive(Debug, Default, Clone, Copy)]
pub struct Traffic {
    pub frames_in: u64,
    pub frames_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl CloseReason {
    /// A short label for metrics; `None` for an orderly close.
    pub fn error_label(&self) -> Option<&'static str> {
        Some(match self {
            CloseReason::PeerClosed | CloseReason::ShuttingDown | CloseReason::Retired => {
                return None
            }
            CloseReason::EofMidFrame => "eof_mid_frame",
            CloseReason::Protocol(_) => "protocol",
            CloseReason::Silent { .. } => "silent",
            CloseReason::Handshake { .. } => "handshake",
            CloseReason::Crowded => "crowded",
            CloseReason::ReadFailed(_) => "read_failed",
            CloseReason::WriteFailed(_) => "write_failed",
            CloseReason::ConnectFailed(_) => "connect_failed",
            CloseReason::Tls(_) => "tls",
            CloseReason::NotReading { .. } => "not_reading",
        })
    }
}

impl Observed {
    /// A peer's first connection finished its hellos.
    /// `machine` came up: answers how many times it has (its `connects`,
    /// which also names this coming up for the snapshot owed to it).
    pub(super) fn peer_up(&mut self, machine: &MachineId, address: String) -> u64 {
        let totals = self.peers.entry(machine.clone()).or_default();
        totals.connects += 1;
        totals.address = address;
        totals.connects
    }

    /// How many times `machine` has come up.
    pub(super) fn connects(&self, machine: &MachineId) -> u64 {
        self.peers.get(machine).map_or(0, |t| t.connects)
    }

    /// `c` closed: its traffic joins its peer's history; `down` when it
    /// was the peer's last connection.
    pub(super) fn closed(&mut self, c: &Conn, reason: &CloseReason, down: bool) {
        if let Some(label) = reason.error_label() {
            match self.errors.iter_mut().find(|(l, _)| *l == label) {
                Some((_, n)) => *n += 1,
                None => self.errors.push((label, 1)),
            }
        }
        let Some(peer) = &c.peer else {
            return;
        };
        let totals = self.peers.entry(peer.machine.clone()).or_default();
        totals.frames_in += c.traffic.frames_in;
        totals.frames_out += c.traffic.frames_out;
        totals.bytes_in += c.traffic.bytes_in;
        totals.bytes_out += c.traffic.bytes_out;
        totals.last_heard = Some(c.last_heard);
        totals.downs += u64::from(down);
    }

    pub(super) fn errors(&self) -> &[(&'static str, u64)] {
        &self.errors
    }
}

impl Core {
    /// Every peer this node has known in this life, plus configured peers
    /// never reached, with their traffic so far.
    pub fn peer_views(&self, now: Instant) -> Vec<PeerView> {
        let mut views: Vec<PeerView> = self
            .observed
            .peers
            .iter()
            .map(|(machine, t)| PeerView {
                machine: machine.as_str().to_string(),
                address: t.address.clone(),
                up: self.active.contains_key(machine),
                last_seen: t.last_heard.map(|at| now.saturating_duration_since(at)),
                frames_in: t.frames_in,
                frames_out: t.frames_out,
                bytes_in: t.bytes_in,
                bytes_out: t.bytes_out,
                connects: t.connects,
                downs: t.downs,
                objects: 0,
            })
            .collect();
        for (_, c) in self.conns.iter() {
            let Some(peer) = &c.peer else { continue };
            let Some(view) = views
                .iter_mut()
                .find(|v| v.machine == peer.machine.as_str())
            else {
                continue;
            };
            view.frames_in += c.traffic.frames_in;
            view.frames_out += c.traffic.frames_out;
            view.bytes_in += c.traffic.bytes_in;
            view.bytes_out += c.traffic.bytes_out;
            let age = now.saturating_duration_since(c.last_heard);
            view.last_seen = Some(view.last_seen.map_or(age, |seen| seen.min(age)));
        }
        for slot in &self.dials {
            if slot.reached.is_none() && slot.state != super::dial::DialState::Abandoned {
                views.push(PeerView {
                    address: slot.spec.to_string(),
                    ..PeerView::default()
                });
            }
        }
        views.sort_by(|a, b| (&a.machine, &a.address).cmp(&(&b.machine, &b.address)));
        views
    }

    /// Round trips of our calls so far.
    pub fn rtt(&self) -> &Histogram {
        &self.observed.rtt
    }

    /// Connections closed for an error, by reason.
    pub fn protocol_errors(&self) -> &[(&'static str, u64)] {
        self.observed.errors()
    }

    /// Open peer connections (any phase).
    pub fn connections(&self) -> usize {
        self.conns.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_micro_clock_counts_from_its_start_and_follows_each_new_now() {
        let t0 = Instant::now();
        let mut clock = MicroClock::new(t0);
        assert_eq!(clock.micros(t0), 0);
        let t1 = t0 + Duration::from_micros(1_500);
        assert_eq!(clock.micros(t1), 1_500);
        assert_eq!(clock.micros(t1), 1_500, "the same now again");
        assert_eq!(clock.micros(t0 + Duration::from_secs(3)), 3_000_000);
        // An earlier `now` (never from the reactor) reads as the start.
        if let Some(earlier) = t0.checked_sub(Duration::from_millis(1)) {
            assert_eq!(clock.micros(earlier), 0);
        }
    }
}
