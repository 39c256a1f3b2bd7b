//! Dial slots: one per `--peer`, kept connected with capped, jittered
//! exponential backoff.
//!
//! ```text
//!  Waiting ──timer──▶ Dialling ──dialled──▶ Connected(conn) ──closed──▶ Waiting (backoff)
//!     ▲                  │ failed                 │ closed while another
//!     └──── backoff ─────┘                        ▼ connection reaches the machine
//!                                          Covered(machine) ──machine down──▶ Waiting (now)
//!  Abandoned: the address is this node itself; never dialled again.
//! ```
//!
//! Backoff grows from [`BACKOFF_FIRST`] to [`BACKOFF_CAP`] with every
//! failure, and resets only when a connection outlives [`REFUSAL_WINDOW`]
//! after its hellos: a peer that refuses us right after the hellos is not
//! redialled ten times a second.

use std::sync::Arc;
use std::time::Duration;

use crate::vm::MachineId;

use super::ConnId;

pub const BACKOFF_FIRST: Duration = Duration::from_millis(100);
pub const BACKOFF_CAP: Duration = Duration::from_secs(2);
/// A connection closed this soon after the hellos was most likely refused.
pub const REFUSAL_WINDOW: Duration = Duration::from_millis(500);

#[derive(Debug)]
pub struct DialSlot {
    /// `HOST:PORT`, as given.
    pub spec: Arc<str>,
    pub state: DialState,
    /// Bumped per scheduled attempt, so a stale redial timer is ignored.
    pub attempt: u64,
    /// Consecutive failures, for the backoff.
    pub failures: u32,
    /// The "peer probably refused us" warning was logged since the last
    /// connection that outlived the refusal window (later ones go to debug).
    pub warned_refusal: bool,
    /// The last reason a peer gave in its `close` that was logged as a
    /// warning (later closes for the same reason go to debug).
    pub said_warned: Option<String>,
    /// The TLS failure last logged as a warning: every redial fails the
    /// same way until someone fixes a certificate or a flag, so the same
    /// failure again goes to debug; a different one is news.
    pub warned_tls: Option<String>,
    /// The machine this address led to last (for `/health`: an address
    /// never reached is listed by itself).
    pub reached: Option<MachineId>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DialState {
    Waiting,
    /// The reactor was asked to dial; its answer has not come yet.
    Dialling,
    /// A connection from this slot exists (connecting or connected).
    Connected(ConnId),
    /// Not dialling: the machine behind this address is reachable through
    /// another connection (an accepted one that won the tie).
    Covered(MachineId),
    /// Not dialling ever again: the address is this node itself.
    Abandoned,
}

impl DialSlot {
    pub fn new(spec: &str) -> DialSlot {
        DialSlot {
            spec: Arc::from(spec),
            state: DialState::Waiting,
            attempt: 0,
            failures: 0,
            warned_refusal: false,
            said_warned: None,
            warned_tls: None,
            reached: None,
        }
    }
}

/// The delay before the next attempt after `failures` failures in a row:
/// exponential from [`BACKOFF_FIRST`], capped at [`BACKOFF_CAP`], with
/// ±12.5% jitter from `rng` so nodes restarted together do not dial in
/// lockstep.
pub fn backoff(failures: u32, rng: &mut Rng) -> Duration {
    let exp = BACKOFF_FIRST.saturating_mul(1 << failures.saturating_sub(1).min(16));
    let base = exp.min(BACKOFF_CAP);
    base.mul_f64(0.875 + 0.25 * (rng.next() % 1000) as f64 / 1000.0)
}

/// xorshift64: jitter needs spread, not quality, and a seed makes tests
/// repeatable.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_from_the_first_delay_and_is_capped() {
        let mut rng = Rng::new(7);
        let within =
            |d: Duration, base: Duration| d >= base.mul_f64(0.875) && d <= base.mul_f64(1.125);
        assert!(within(backoff(1, &mut rng), BACKOFF_FIRST));
        assert!(within(backoff(2, &mut rng), BACKOFF_FIRST * 2));
        assert!(within(backoff(3, &mut rng), BACKOFF_FIRST * 4));
        for failures in 6..40 {
            let d = backoff(failures, &mut rng);
            assert!(within(d, BACKOFF_CAP), "{failures}: {d:?}");
        }
    }

    #[test]
    fn jitter_spreads_delays() {
        let mut rng = Rng::new(1);
        let delays: std::collections::HashSet<Duration> =
            (0..20).map(|_| backoff(8, &mut rng)).collect();
        assert!(delays.len() > 10, "{delays:?}");
    }
}
