//! Staying healthy: keepalive and failure detection, call timeouts,
//! pausing reads while the interpreter is behind, and graceful shutdown on
//! a signal.

use std::time::{Duration, Instant};

use crate::codec::{self, Message};
use log::{info, warn};

use super::conn::Phase;
use super::handoff::Event;
use super::timer::Timer;
use super::Reactor;

impl Reactor {
    pub(super) fn backlog_full(&self) -> bool {
        self.events.len() + self.handoff.backlog() >= self.config.max_backlog
    }

    /// Reads the paused connections again once the backlog is half gone.
    pub(super) fn resume_paused(&mut self) {
        if self.paused.is_empty()
            || self.events.len() + self.handoff.backlog() > self.config.max_backlog / 2
        {
            return;
        }
        self.handoff.set_reactor_paused(false);
        let paused = std::mem::take(&mut self.paused);
        for &key in &paused {
            // Bytes may have waited a while: that was us, not the peer.
            if let Some(conn) = self.conns.get_mut(key) {
                conn.last_heard = Instant::now();
            }
            self.read_conn(key);
        }
    }

    /// Closes the peers silent for 3 intervals, and pings every peer once
    /// an interval. Runs every `KEEPALIVE_TICKS`th of an interval, so a
    /// silent peer is found at most that late (3.05 s with the defaults).
    pub(super) fn keepalive(&mut self, now: Instant) {
        let limit = self.config.keepalive * 3;
        let ping_due = now.saturating_duration_since(self.last_ping) >= self.config.keepalive;
        if ping_due {
            self.last_ping = now;
        }
        let mut dead = Vec::new();
        let mut alive = Vec::new();
        for (key, conn) in &self.conns {
            let (since, what) = match conn.phase {
                Phase::Ready => (conn.last_heard, "no data or keepalive answer"),
                Phase::AwaitHello => (conn.opened, "no hello"),
                Phase::Connecting => (conn.opened, "TCP connect not finished"),
            };
            if now.saturating_duration_since(since) > limit && !self.paused.contains(&key) {
                dead.push((key, format!("{what} for {limit:?} (3 keepalive intervals)")));
            } else if conn.phase == Phase::Ready && ping_due {
                alive.push(key);
            }
        }
        for key in alive {
            let ping = Message::Ping(codec::Ping {
                nonce: self.next_nonce,
            });
            self.next_nonce += 1;
            if self.conns[key].queue(&ping).is_ok() {
                self.mark_dirty(key);
            }
        }
        for (key, reason) in dead {
            warn!("{}: {reason}; declaring it down", self.conns[key].label());
            self.close(key, &reason);
        }
        self.timers.schedule(
            now + keepalive_tick(self.config.keepalive),
            Timer::Keepalive,
        );
    }

    /// Fails every call whose chain has shown no progress for the call
    /// timeout. A late answer then finds no entry and is dropped.
    pub(super) fn expire_calls(&mut self, now: Instant) {
        let timeout = self.config.call_timeout;
        let stale = |at: Instant| now.saturating_duration_since(at) >= timeout;
        let activity = &self.chain_activity;
        let mut expired = Vec::new();
        self.pending.drain_where(
            |p| {
                stale(
                    p.sent_at
                        .max(activity.get(&p.chain).copied().unwrap_or(p.sent_at)),
                )
            },
            |p| expired.push(p),
        );
        self.chain_activity.retain(|_, at| !stale(*at));
        for p in expired {
            let machine = match self.conns.get_mut(p.conn) {
                Some(conn) if conn.serial == p.serial => {
                    conn.calls_out = conn.calls_out.saturating_sub(1);
                    conn.label()
                }
                _ => "a closed connection".to_owned(),
            };
            self.events.push(Event::Reply {
                token: p.token,
                result: Err(format!(
                    "call to object {} on {machine} timed out: its chain showed no progress for {timeout:?}",
                    p.target
                )),
            });
        }
        self.timers
            .schedule(now + sweep_interval(timeout), Timer::CallTimeouts);
    }

    /// SIGINT or SIGTERM: stop accepting, fail what is in flight with a
    /// clear error, flush, stop.
    pub(super) fn handle_signals(&mut self) {
        let Some(signals) = self.signals.as_mut() else {
            return;
        };
        let Some(signal) = signals.pending().next() else {
            return;
        };
        let name = if signal == signal_hook::consts::SIGINT {
            "SIGINT"
        } else {
            "SIGTERM"
        };
        info!("received {name}: shutting down");
        let _ = self.poll.registry().deregister(&mut self.listener);
        self.stopping = true;
    }
}
/// How often call timeouts are checked: a tenth of the timeout, so a call
/// fails at most 10% late, within [5 ms, 1 s].
/// Silence checks per keepalive interval.
const KEEPALIVE_TICKS: u32 = 20;

pub(super) fn keepalive_tick(interval: Duration) -> Duration {
    (interval / KEEPALIVE_TICKS).max(Duration::from_millis(1))
}

pub(super) fn sweep_interval(timeout: Duration) -> Duration {
    (timeout / 10).clamp(Duration::from_millis(5), Duration::from_secs(1))
}
