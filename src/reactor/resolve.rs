//! Name resolution off the reactor thread.
//!
//! `to_socket_addrs` blocks for as long as the system resolver takes, and
//! one slow lookup on the reactor thread would stall every socket. A peer
//! given as an address (`127.0.0.1:9002`) needs no lookup; one given by
//! name (`alpha:9001`) is resolved here, at every dial attempt, so a
//! fixed `/etc/hosts` entry takes effect without a restart. Each dial
//! slot has a lookup thread of its own (started at its first name): a
//! lookup that hangs, on a DNS server that does not answer, delays only
//! its own peer's dials. The answer comes back through a mutex-guarded
//! list and the reactor's waker; the reactor looks at the list only when
//! the `ready` flag says something is there.

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};

use crate::node::handoff::Handoff;

/// A lookup's answer, for the dial slot that asked, with the `HOST:PORT`
/// it asked about (TLS checks the peer's certificate against the host).
pub type Resolved = (usize, Arc<str>, Result<SocketAddr, String>);

/// Turns `host:port` into an address, blocking ([`resolve`], or a
/// test's stand-in).
pub type Lookup = fn(&str) -> Result<SocketAddr, String>;

#[derive(Debug)]
pub struct Resolver {
    /// Each dial slot's lookup thread, by slot.
    requests: HashMap<usize, Sender<Arc<str>>>,
    lookup: Lookup,
    shared: Arc<Shared>,
    handoff: Arc<Handoff>,
    thread_name: String,
}

#[derive(Debug, Default)]
struct Shared {
    answers: Mutex<Vec<Resolved>>,
    ready: AtomicBool,
}

impl Resolver {
    /// No thread is started until a name needs resolving.
    pub fn new(handoff: Arc<Handoff>, thread_name: String) -> Resolver {
        Resolver::with_lookup(handoff, thread_name, resolve)
    }

    fn with_lookup(handoff: Arc<Handoff>, thread_name: String, lookup: Lookup) -> Resolver {
        Resolver {
            requests: HashMap::new(),
            lookup,
            shared: Arc::default(),
            handoff,
            thread_name,
        }
    }

    /// Asks for `spec` to be resolved for `slot`; the answer arrives in
    /// [`Resolver::take`] after a wake of the reactor.
    pub fn request(&mut self, slot: usize, spec: Arc<str>) -> Result<(), String> {
        if !self.requests.contains_key(&slot) {
            let (tx, rx) = channel::<Arc<str>>();
            let shared = Arc::clone(&self.shared);
            let handoff = Arc::clone(&self.handoff);
            let lookup = self.lookup;
            std::thread::Builder::new()
                .name(format!("{}-{slot}", self.thread_name))
                .spawn(move || {
                    // Ends when the reactor drops its sender.
                    for spec in rx {
                        let answer = lookup(&spec);
                        shared
                            .answers
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push((slot, spec, answer));
                        // ORDERING: Release pairs with the Acquire in `take`:
                        // whoever sees the flag sees the answer (the lock
                        // orders it too; the flag only spares the lock).
                        shared.ready.store(true, Ordering::Release);
                        handoff.wake_reactor();
                    }
                })
                .map_err(|e| format!("cannot start the resolver thread: {e}"))?;
            self.requests.insert(slot, tx);
        }
        if self.requests[&slot].send(spec).is_err() {
            // Its thread died (a panic in the lookup): the next dial
            // starts another.
            self.requests.remove(&slot);
            return Err("the resolver thread has stopped".to_owned());
        }
        Ok(())
    }

    /// Moves the answers that arrived into `into`.
    pub fn take(&self, into: &mut Vec<Resolved>) {
        // ORDERING: see `request`.
        if self.shared.ready.swap(false, Ordering::Acquire) {
            into.append(
                &mut self
                    .shared
                    .answers
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()),
            );
        }
    }
}

/// `host:port` to an address, preferring IPv4 (what `alpha` in /etc/hosts
/// usually means).
pub fn resolve(spec: &str) -> Result<SocketAddr, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_prefers_ipv4_and_reports_garbage() {
        assert_eq!(
            resolve("127.0.0.1:9").unwrap(),
            "127.0.0.1:9".parse().unwrap()
        );
        assert_eq!(resolve("localhost:9").unwrap().port(), 9);
        assert!(resolve("missing-port").is_err());
    }

    /// A stand-in for the system resolver: `slow:` names hang for 3 s.
    fn stand_in(spec: &str) -> Result<SocketAddr, String> {
        if spec.starts_with("slow:") {
            std::thread::sleep(std::time::Duration::from_secs(3));
        }
        Ok("127.0.0.1:9".parse().unwrap())
    }

    /// A lookup that hangs delays only its own slot: another slot's name
    /// is answered meanwhile.
    #[test]
    fn a_hanging_lookup_delays_only_its_own_slot() {
        let poll = mio::Poll::new().unwrap();
        let waker = mio::Waker::new(poll.registry(), mio::Token(0)).unwrap();
        let mut resolver = Resolver::with_lookup(Handoff::new(waker), "test".into(), stand_in);
        resolver.request(0, "slow:1".into()).unwrap();
        resolver.request(1, "fast:2".into()).unwrap();
        let started = std::time::Instant::now();
        let mut answers = Vec::new();
        while answers.is_empty() && started.elapsed() < std::time::Duration::from_secs(10) {
            std::thread::sleep(std::time::Duration::from_millis(10));
            resolver.take(&mut answers);
        }
        assert_eq!(answers.len(), 1, "{answers:?}");
        assert_eq!(answers[0].0, 1, "the fast slot first");
    }
}
