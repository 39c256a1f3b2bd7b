//! The protocol core's rules, driven in memory: two (or three) cores
//! joined by links that carry their bytes through the real codec, and a
//! clock that only moves when a test moves it. No socket, no sleep.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::*;
use crate::codec::{Call, FrameDecoder};
use crate::protocol::conn::CLOSE_REASON_MAX;
use crate::protocol::hello::VERSION;
use crate::protocol::timer::Timer;
use crate::vm::{OwnedObjects, RemoteCall};

/// One node's core, with what it has produced so far.
struct Side {
    core: Core,
    port: u16,
}

fn side(name: &str, prefix: u16, peers: &[&str], now: Instant) -> Side {
    let port = 9000 + prefix;
    let core = Core::new(
        Config {
            machine: MachineId::new(name),
            node_prefix: prefix,
            listen_port: port,
            peers: peers.iter().map(|p| p.to_string()).collect(),
            max_frame: crate::codec::DEFAULT_MAX_FRAME,
            max_pending: 1024,
            keepalive: Duration::from_secs(1),
            call_timeout: Duration::from_secs(30),
            max_write_buffer: 1 << 20,
            seed: u64::from(prefix),
            key: test_key(),
            boot: next_boot(),
        },
        now,
    );
    Side { core, port }
}

/// A new life for every core a test makes.
fn next_boot() -> u64 {
    static BOOTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    // ORDERING: Relaxed: only uniqueness matters.
    BOOTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

fn test_key() -> auth::ClusterKey {
    auth::ClusterKey::from_bytes(b"the cluster's test key").unwrap()
}

/// The nonce a raw test client says hello with.
const CLIENT_NONCE: [u8; auth::NONCE_LEN] = [9; auth::NONCE_LEN];

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

impl Side {
    fn events(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        self.core.take_events(&mut events);
        events
    }

    fn actions(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.core.poll_action()).collect()
    }

    /// The dial slots the core asks to dial now.
    fn dials(&mut self) -> Vec<usize> {
        self.actions()
            .into_iter()
            .filter_map(|a| match a {
                Action::Dial { slot, .. } => Some(slot),
                Action::Close { .. } => None,
            })
            .collect()
    }

    fn closed(&mut self) -> Vec<ConnId> {
        self.actions()
            .into_iter()
            .filter_map(|a| match a {
                Action::Close { conn, .. } => Some(conn),
                Action::Dial { .. } => None,
            })
            .collect()
    }

    /// The connections the core closes now, each with what its last
    /// frame told the peer (a `close`'s reason), if anything.
    fn closes_told(&mut self) -> Vec<(ConnId, Option<String>)> {
        self.actions()
            .into_iter()
            .filter_map(|a| match a {
                Action::Close { conn, linger } => Some((conn, last_close_reason(&linger))),
                Action::Dial { .. } => None,
            })
            .collect()
    }

    /// When dial slot 0 is next dialled.
    fn next_redial(&self) -> Instant {
        self.core
            .timers
            .deadlines()
            .filter(|(_, t)| matches!(t, Timer::Redial { slot: 0, attempt } if *attempt == self.core.dials[0].attempt))
            .map(|(at, _)| at)
            .min()
            .expect("a redial is scheduled")
    }

    fn active(&self, machine: &str) -> Option<ConnId> {
        self.core.active.get(&MachineId::new(machine)).copied()
    }

    fn is_retired(&self, conn: ConnId) -> bool {
        self.core.conn(conn).is_some_and(|c| c.retired)
    }
}

/// A TCP connection in memory between `a`'s `ca` and `b`'s `cb`.
struct Link {
    ca: ConnId,
    cb: ConnId,
}

/// `a` dials `b` on dial slot `slot` (already asked for by `a`'s core).
fn connect(a: &mut Side, slot: usize, b: &mut Side, ephemeral: u16, now: Instant) -> Link {
    let ca = a
        .core
        .handle_dialled(slot, addr(b.port), addr(ephemeral), now);
    a.core.handle_connected(ca, now);
    let cb = b.core.handle_accepted(addr(ephemeral), now);
    Link { ca, cb }
}

/// Moves every queued byte both ways until neither side has more.
fn pump(a: &mut Side, b: &mut Side, link: &Link, now: Instant) {
    loop {
        let moved = carry(a, link.ca, b, link.cb, now) + carry(b, link.cb, a, link.ca, now);
        if moved == 0 {
            return;
        }
    }
}

/// Carries what `from` queued on `fc` into `to` as frames on `tc`.
fn carry(from: &mut Side, fc: ConnId, to: &mut Side, tc: ConnId, now: Instant) -> usize {
    // As the reactor does once per iteration.
    from.core.pump_snapshots(now);
    let bytes = from.core.unsent(fc).to_vec();
    from.core.advance(fc, bytes.len());
    while from.core.poll_dirty().is_some() {}
    if !bytes.is_empty() {
        to.core.handle_heard(tc, bytes.len(), now);
    }
    let mut decoder = FrameDecoder::new(crate::codec::DEFAULT_MAX_FRAME);
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        let n = decoder.fill(rest);
        rest = &rest[n..];
        while let Some(payload) = decoder.next_frame().expect("well-framed") {
            let msg = crate::codec::decode(payload).expect("decodable");
            to.core.handle_message(tc, msg, now);
        }
    }
    bytes.len()
}

/// Lets time pass from `from` to `to` in steps of 50 ms, firing both
/// cores' timers and carrying their traffic over `links` (as a reactor
/// would between timer ticks).
fn run(a: &mut Side, b: &mut Side, links: &[&Link], from: Instant, to: Instant) {
    let mut t = from;
    while t < to {
        t = (t + ms(50)).min(to);
        a.core.handle_timeout(t);
        b.core.handle_timeout(t);
        for link in links {
            pump(a, b, link, t);
        }
    }
}

/// alpha and beta, each with the other as its `--peer`, both dialling.
fn dialling_each_other(now: Instant) -> (Side, Side) {
    let mut a = side("alpha", 1, &["127.0.0.1:9002"], now);
    let mut b = side("beta", 2, &["127.0.0.1:9001"], now);
    a.core.handle_timeout(now);
    b.core.handle_timeout(now);
    assert_eq!((a.dials(), b.dials()), (vec![0], vec![0]));
    (a, b)
}

/// alpha and beta each dial the other at once; both connections finish
/// their hellos (both hellos cross on both before either side answers).
/// Returns the two sides, the link alpha dialled, and the one beta dialled
/// (as seen from alpha: `ca` is alpha's end).
fn cross_dialled(now: Instant) -> (Side, Side, Link, Link) {
    let (mut a, mut b) = dialling_each_other(now);
    let by_alpha = connect(&mut a, 0, &mut b, 40001, now);
    let rev = connect(&mut b, 0, &mut a, 40002, now);
    let by_beta = Link {
        ca: rev.cb,
        cb: rev.ca,
    };
    pump(&mut a, &mut b, &by_alpha, now);
    pump(&mut a, &mut b, &by_beta, now);
    (a, b, by_alpha, by_beta)
}

/// Each side of `link` hears the other's `snapshot_end` (an empty
/// directory), as after any greeting between two nodes.
fn synced(a: &mut Side, b: &mut Side, link: &Link, now: Instant) {
    let end = || Message::SnapshotEnd(codec::SnapshotEnd { objects: 0 });
    a.core.handle_message(link.ca, end(), now);
    b.core.handle_message(link.cb, end(), now);
}

/// alpha (prefix 1) dials beta (prefix 2); both finish their hellos.
fn greeted_pair(now: Instant) -> (Side, Side, Link) {
    let mut a = side("alpha", 1, &["127.0.0.1:9002"], now);
    let mut b = side("beta", 2, &[], now);
    a.core.handle_timeout(now);
    assert_eq!(a.dials(), vec![0]);
    let link = connect(&mut a, 0, &mut b, 40001, now);
    pump(&mut a, &mut b, &link, now);
    (a, b, link)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn remote_call(token: u64, machine: &str, chain: u64) -> RemoteCall {
    RemoteCall {
        token: SuspendToken(token),
        machine: MachineId::new(machine),
        target: ObjectId(2 << 48 | 1),
        input: Val::Nat(token),
        sender: ObjectId(1 << 48 | 1),
        chain: ChainId(chain),
        op: None,
    }
}

/// alpha sends `call` to beta over `link`: the inbound call beta's core
/// hands its interpreter.
fn call_arrives(
    a: &mut Side,
    b: &mut Side,
    link: &Link,
    call: RemoteCall,
    now: Instant,
) -> InboundId {
    a.core.call(call, now);
    pump(a, b, link, now);
    match b.events().pop() {
        Some(Event::Inbound { inbound, .. }) => inbound,
        other => panic!("no inbound call: {other:?}"),
    }
}

/// Failed calls: token, reason, and whether the call left (its answer lost).
fn failed_replies(events: &[Event]) -> Vec<(SuspendToken, String, bool)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Reply {
                token,
                result: Err(why),
                lost,
            } => Some((*token, why.clone(), *lost)),
            _ => None,
        })
        .collect()
}

fn peer_downs(events: &[Event]) -> Vec<(MachineId, CloseReason)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::PeerDown { machine, reason } => Some((machine.clone(), reason.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn hellos_bring_both_peers_up_once() {
    let now = Instant::now();
    let (mut a, mut b, link) = greeted_pair(now);
    let up = |events: Vec<Event>| {
        events
            .into_iter()
            .filter_map(|e| match e {
                Event::PeerUp {
                    machine, prefix, ..
                } => Some((machine.as_str().to_owned(), prefix)),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(up(a.events()), vec![("beta".to_owned(), 2)]);
    assert_eq!(up(b.events()), vec![("alpha".to_owned(), 1)]);
    assert_eq!(a.active("beta"), Some(link.ca));
    assert_eq!(b.active("alpha"), Some(link.cb));
}

/// A call in flight when its peer stops fails saying so: the peer's
/// `close` named its shutdown, and the socket's end says only that it
/// closed.
#[test]
fn a_call_lost_to_a_stopping_peer_says_the_peer_is_shutting_down() {
    let now = Instant::now();
    let (mut a, mut b, link) = greeted_pair(now);
    a.events();
    b.events();
    a.core.call(remote_call(7, "beta", 1 << 48 | 9), now);
    pump(&mut a, &mut b, &link, now);
    // beta's last frame, as its stop sends it; then its socket closes.
    let close = codec::Close {
        reason: super::peers::SHUTTING_DOWN_SAID.into(),
    };
    a.core.handle_message(link.ca, Message::Close(close), now);
    a.core.handle_closed(link.ca, CloseReason::PeerClosed, now);
    let failed = failed_replies(&a.events());
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(
        failed[0].1.ends_with("lost: the peer is shutting down"),
        "{failed:?}"
    );
}

/// A call claiming chain 0 arrives as a call without a chain: 0 is no
/// chain of any node (the vm keeps it for an object restored mid-move).
#[test]
fn a_call_on_chain_0_arrives_without_a_chain() {
    let now = Instant::now();
    let (mut a, mut b, link) = greeted_pair(now);
    a.events();
    b.events();
    a.core.call(remote_call(7, "beta", 0), now);
    pump(&mut a, &mut b, &link, now);
    match b.events().pop() {
        Some(Event::Inbound { chain, .. }) => assert_eq!(chain, None),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_call_and_its_answer_cross_and_the_chain_leaves_the_clock() {
    let now = Instant::now();
    let (mut a, mut b, link) = greeted_pair(now);
    a.events();
    b.events();
    a.core.call(remote_call(7, "beta", 1 << 48 | 9), now);
    assert_eq!(a.core.calls_in_flight(), 1);
    assert_eq!(a.core.chains_waiting(), 1);
    pump(&mut a, &mut b, &link, now);
    let inbound = match b.events().pop() {
        Some(Event::Inbound {
            inbound,
            sender_machine,
            chain,
            input,
            ..
        }) => {
            assert_eq!(sender_machine.as_str(), "alpha");
            assert_eq!(chain, Some(ChainId(1 << 48 | 9)));
            assert_eq!(input, Val::Nat(7));
            inbound
        }
        other => panic!("{other:?}"),
    };
    b.core.reply(inbound, Ok(Val::Nat(8)));
    pump(&mut a, &mut b, &link, now);
    match a.events().pop() {
        Some(Event::Reply {
            token,
            result: Ok(v),
            lost: false,
        }) => assert_eq!((token, v), (SuspendToken(7), Val::Nat(8))),
        other => panic!("{other:?}"),
    }
    assert_eq!(a.core.calls_in_flight(), 0);
    assert_eq!(a.core.chains_waiting(), 0);
}

/// The payloads `side` has queued on `conn` and not yet written.
fn queued_payloads(side: &Side, conn: ConnId) -> Vec<Vec<u8>> {
    let mut decoder = FrameDecoder::new(crate::codec::DEFAULT_MAX_FRAME);
    let mut rest = side.core.unsent(conn);
    let mut payloads = Vec::new();
    while !rest.is_empty() {
        let n = decoder.fill(rest);
        rest = &rest[n..];
        while let Some(payload) = decoder.next_frame().expect("well-framed") {
            payloads.push(payload.to_vec());
        }
    }
    payloads
}

/// Two avm cores offer compact frames in their hellos, so their calls and
/// answers go compact; a peer whose hello offered nothing gets JSON.
#[test]
fn calls_go_compact_only_to_a_peer_that_offered_it() {
    let now = Instant::now();
    let (mut a, mut b, link) = greeted_pair(now);
    a.core.call(remote_call(7, "beta", 1 << 48 | 9), now);
    let sent = queued_payloads(&a, link.ca);
    assert_eq!(sent.last().map(|p| p[0]), Some(codec::compact::CALL));
    pump(&mut a, &mut b, &link, now);
    let inbound = b
        .events()
        .into_iter()
        .find_map(|e| match e {
            Event::Inbound { inbound, .. } => Some(inbound),
            _ => None,
        })
        .expect("the call arrived");
    b.core.reply(inbound, Ok(Val::Nat(8)));
    let answer = queued_payloads(&b, link.cb);
    assert_eq!(
        answer.last().map(|p| p[0]),
        Some(codec::compact::CALL_RESPONSE)
    );

    // Clients: what each offer gets back for an answer and for an error.
    let cases = [
        (None, false),
        (Some(0), false),
        (Some(1), true),
        (Some(2), true),
    ];
    for (i, (offer, compact)) in cases.into_iter().enumerate() {
        let c = b.core.handle_accepted(addr(43101 + i as u16), now);
        let machine = format!("client{i}");
        let prefix = 7 + i as u16;
        assert_eq!(
            greet_offering(&mut b, c, &machine, prefix, offer, now),
            Status::Greeted
        );
        for request_id in [1, 2] {
            let call = Message::Call(Call {
                request_id,
                target: ObjectId(2 << 48 | 1),
                input: Val::Nat(1),
                sender: ObjectId(u64::from(prefix) << 48 | 1),
                sender_machine: machine.as_str().into(),
                chain: None,
            });
            assert_eq!(b.core.handle_message(c, call, now), Status::Open);
        }
        let inbound: Vec<_> = b
            .events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Inbound { inbound, .. } => Some(inbound),
                _ => None,
            })
            .collect();
        assert_eq!(inbound.len(), 2);
        b.core.reply(inbound[0], Ok(Val::Nat(2)));
        b.core.reply(inbound[1], Err("no such object".into()));
        let answers = queued_payloads(&b, c);
        let [.., ok, err] = answers.as_slice() else {
            panic!("{answers:?}")
        };
        let first = if compact {
            codec::compact::CALL_RESPONSE
        } else {
            b'{'
        };
        assert_eq!(ok[0], first, "offer {offer:?}");
        assert!(
            err.starts_with(br#"{"type":"call_response""#),
            "an error answer is JSON: {err:?}"
        );
    }
}

/// Both nodes dial each other at once: each sees two connections, and
/// both keep the one dialled by alpha (the lower machine_id).
#[test]
fn simultaneous_dials_keep_the_connection_dialled_by_the_lower_machine_id() {
    let now = Instant::now();
    let (mut a, mut b, by_alpha, by_beta) = cross_dialled(now);
    assert_eq!(a.active("beta"), Some(by_alpha.ca));
    assert_eq!(b.active("alpha"), Some(by_alpha.cb));
    assert!(a.is_retired(by_beta.ca) && b.is_retired(by_beta.cb));
    // One PeerUp each, no PeerDown.
    let mut ups = Vec::new();
    for side in [&mut a, &mut b] {
        let events = side.events();
        ups.extend(events.iter().filter_map(|e| match e {
            Event::PeerUp { up, .. } => Some(*up),
            _ => None,
        }));
        assert!(peer_downs(&events).is_empty());
    }
    assert_eq!(ups.len(), 2);
    // The snapshot owed for that PeerUp goes out on the survivor.
    b.core.send_snapshot(
        &MachineId::new("alpha"),
        ups[1],
        pongs(3),
        Vec::new(),
        Vec::new(),
    );
    assert_eq!(b.core.streaming, vec![by_alpha.cb]);
    // Calls go out on the survivor.
    a.core.call(remote_call(1, "beta", 1), now);
    assert!(!a.core.unsent(by_alpha.ca).is_empty());
    assert!(a.core.unsent(by_beta.ca).is_empty());
    // Idle, past its grace, and with both snapshots ended, the loser
    // closes on both sides; the machine stays up.
    synced(&mut a, &mut b, &by_alpha, now);
    pump(&mut a, &mut b, &by_alpha, now);
    let later = now + RETIRE_GRACE + RETIRE_CHECK;
    run(&mut a, &mut b, &[&by_alpha, &by_beta], now, later);
    assert_eq!(a.closed(), vec![by_beta.ca]);
    assert_eq!(b.closed(), vec![by_beta.cb]);
    assert!(peer_downs(&a.events()).is_empty());
    assert!(peer_downs(&b.events()).is_empty());
    // beta's dial slot is covered by alpha's connection: no redial.
    run(
        &mut a,
        &mut b,
        &[&by_alpha],
        later,
        later + Duration::from_secs(10),
    );
    assert!(b.dials().is_empty());
    assert!(a.core.is_open(by_alpha.ca) && b.core.is_open(by_alpha.cb));
}

/// A peer that chose the losing connection before the other's hellos
/// reached it may still call on it a round trip later: the call is
/// answered there, and the connection stays until it is.
#[test]
fn a_retired_connection_still_answers_for_its_grace() {
    let now = Instant::now();
    let (mut a, mut b, by_alpha, by_beta) = cross_dialled(now);
    synced(&mut a, &mut b, &by_alpha, now);
    a.events();
    // 500 ms later, a call arrives on the retired connection.
    let t = now + ms(500);
    let inbound = beta_calls_on(&mut a, by_beta.ca, 5, t);
    // Past the grace, but a call is still owed: it stays.
    let graced = now + RETIRE_GRACE + RETIRE_CHECK;
    run(&mut a, &mut b, &[&by_alpha, &by_beta], t, graced);
    assert!(a.closed().is_empty());
    a.core.reply(inbound, Ok(Val::Nat(1)));
    assert!(
        !a.core.unsent(by_beta.ca).is_empty(),
        "answered on the retired connection"
    );
    // A grace after that call, it closes.
    run(
        &mut a,
        &mut b,
        &[&by_alpha, &by_beta],
        graced,
        t + RETIRE_GRACE + RETIRE_CHECK,
    );
    assert_eq!(a.closed(), vec![by_beta.ca]);
}

/// A peer that has not yet seen the tie goes on calling on the retired
/// connection past the grace: it stays while calls come, each answered
/// there, and closes a grace after the last one.
#[test]
fn a_retired_connection_stays_while_the_peer_calls_on_it() {
    let now = Instant::now();
    let (mut a, mut b, by_alpha, by_beta) = cross_dialled(now);
    synced(&mut a, &mut b, &by_alpha, now);
    a.events();
    // Time passes on both sides, the survivor carrying their keepalives;
    // alpha's end of the retired one writes what it queued (answers,
    // pings), and hears the calls below. Its link is not pumped: beta
    // would close its end, having seen the tie, where this peer has not.
    let mut at = now;
    let mut pass = |a: &mut Side, b: &mut Side, until: Instant| {
        while at < until {
            at += ms(50);
            a.core.handle_timeout(at);
            b.core.handle_timeout(at);
            pump(a, b, &by_alpha, at);
            a.core.advance(by_beta.ca, a.core.unsent(by_beta.ca).len());
        }
    };
    for request_id in 0..6 {
        let t = now + RETIRE_GRACE / 2 * (request_id as u32 + 1);
        pass(&mut a, &mut b, t);
        let c = a
            .core
            .conn_mut(by_beta.ca)
            .expect("the retired connection is open");
        c.last_heard = t; // its bytes came
        let inbound = beta_calls_on(&mut a, by_beta.ca, request_id, t);
        a.core.reply(inbound, Ok(Val::Nat(1)));
        assert!(a.closed().is_empty(), "closed before call {request_id}");
    }
    let last = now + RETIRE_GRACE / 2 * 6;
    pass(&mut a, &mut b, last + RETIRE_GRACE - RETIRE_CHECK);
    assert!(
        a.closed().is_empty(),
        "closed within a grace of the last call"
    );
    pass(&mut a, &mut b, last + RETIRE_GRACE + RETIRE_CHECK);
    assert_eq!(a.closed(), vec![by_beta.ca]);
}

/// A peer that never stops calling on the retired connection does not
/// keep it past RETIRE_LONGEST after the tie.
#[test]
fn a_retired_connection_is_not_kept_for_ever_by_calls() {
    let now = Instant::now();
    let (mut a, mut b, by_alpha, by_beta) = cross_dialled(now);
    synced(&mut a, &mut b, &by_alpha, now);
    a.events();
    let mut at = now;
    let mut request_id = 0;
    while at < now + RETIRE_LONGEST + RETIRE_CHECK {
        at += ms(50);
        a.core.handle_timeout(at);
        b.core.handle_timeout(at);
        pump(&mut a, &mut b, &by_alpha, at);
        if !a.core.is_open(by_beta.ca) {
            break;
        }
        if at
            .saturating_duration_since(now)
            .as_millis()
            .is_multiple_of(1000)
        {
            a.core.conn_mut(by_beta.ca).unwrap().last_heard = at;
            let inbound = beta_calls_on(&mut a, by_beta.ca, request_id, at);
            request_id += 1;
            a.core.reply(inbound, Ok(Val::Nat(1)));
        }
        a.core.advance(by_beta.ca, a.core.unsent(by_beta.ca).len());
    }
    assert_eq!(a.closed(), vec![by_beta.ca]);
    let took = at.saturating_duration_since(now);
    assert!(took >= RETIRE_LONGEST, "closed after {took:?}, under calls");
}

/// beta's call `request_id` arrives on alpha's `conn` at `t`: the inbound
/// call alpha's core hands its interpreter.
fn beta_calls_on(a: &mut Side, conn: ConnId, request_id: u64, t: Instant) -> InboundId {
    let call = Message::Call(Call {
        request_id,
        target: ObjectId(1 << 48 | 3),
        input: Val::Nothing,
        sender: ObjectId(0),
        sender_machine: "beta".into(),
        chain: None,
    });
    a.core.handle_message(conn, call, t);
    match a.events().pop() {
        Some(Event::Inbound { inbound, .. }) => inbound,
        other => panic!("call {request_id} did not reach the interpreter: {other:?}"),
    }
}

/// When the survivor closes first, the retired connection takes over:
/// the machine stays up, and the old retirement timer leaves it alone.
#[test]
fn a_retired_connection_is_promoted_when_the_survivor_closes() {
    let now = Instant::now();
    let (mut a, mut b, by_alpha, by_beta) = cross_dialled(now);
    b.events();
    b.core
        .handle_closed(by_alpha.cb, CloseReason::PeerClosed, now + ms(10));
    a.core
        .handle_closed(by_alpha.ca, CloseReason::PeerClosed, now + ms(10));
    assert_eq!(b.active("alpha"), Some(by_beta.cb));
    assert!(!b.is_retired(by_beta.cb));
    run(
        &mut a,
        &mut b,
        &[&by_beta],
        now + ms(10),
        now + Duration::from_secs(5),
    );
    assert!(b.closed().iter().all(|c| *c != by_beta.cb));
    assert!(b.core.is_open(by_beta.cb));
    assert!(peer_downs(&b.events()).is_empty());
}

/// Calls to one machine, whose name is one `MachineId` as the vm's are,
/// follow its connection when it changes: after the survivor closes, the
/// next call goes out on the promoted spare, not on the connection the
/// last call went out on.
#[test]
fn calls_follow_their_machines_connection_when_it_changes() {
    let now = Instant::now();
    let (mut a, _b, by_alpha, by_beta) = cross_dialled(now);
    let beta = MachineId::new("beta");
    let call = |token: u64| RemoteCall {
        machine: beta.clone(),
        ..remote_call(token, "beta", 1 << 48 | token)
    };
    let queued = |a: &Side, conn| queued_payloads(a, conn).len();
    let (before_alpha, before_beta) = (queued(&a, by_alpha.ca), queued(&a, by_beta.ca));
    a.core.call(call(1), now);
    a.core.call(call(2), now);
    assert_eq!(queued(&a, by_alpha.ca), before_alpha + 2, "on the survivor");
    a.core
        .handle_closed(by_alpha.ca, CloseReason::PeerClosed, now + ms(10));
    assert_eq!(a.active("beta"), Some(by_beta.ca));
    a.events();
    a.core.call(call(3), now + ms(10));
    assert_eq!(queued(&a, by_beta.ca), before_beta + 1, "on the spare");
    assert!(failed_replies(&a.events()).iter().all(|(t, ..)| t.0 != 3));
}

#[test]
fn a_silent_peer_is_down_after_three_intervals_and_its_calls_fail() {
    let now = Instant::now();
    let (mut a, mut _b, link) = greeted_pair(now);
    a.events();
    a.core.call(remote_call(3, "beta", 1), now);
    // Pinged once an interval; still up just before 3 intervals.
    a.core.handle_timeout(now + ms(1000));
    assert!(!a.core.unsent(link.ca).is_empty(), "a ping is queued");
    a.core.handle_timeout(now + ms(2990));
    assert!(peer_downs(&a.events()).is_empty());
    assert!(a.core.is_open(link.ca));
    // A twentieth of an interval after the third, it is down.
    a.core.handle_timeout(now + ms(3050));
    let events = a.events();
    let downs = peer_downs(&events);
    assert_eq!(downs.len(), 1);
    assert!(
        downs[0].1.to_string().contains("3 keepalive intervals"),
        "{:?}",
        downs[0]
    );
    let failed = failed_replies(&events);
    assert_eq!(failed.len(), 1);
    assert!(failed[0].1.contains("lost"), "{failed:?}");
    assert!(failed[0].2, "it left: its answer is lost, not refused");
    assert_eq!(a.core.calls_in_flight(), 0);
}

#[test]
fn a_peer_that_keeps_talking_stays_up() {
    let now = Instant::now();
    let (mut a, mut b, link) = greeted_pair(now);
    for s in 1..=10 {
        let t = now + ms(1000 * s);
        a.core.handle_timeout(t);
        b.core.handle_timeout(t);
        pump(&mut a, &mut b, &link, t);
        a.core.handle_heard(link.ca, 1, t);
        b.core.handle_heard(link.cb, 1, t);
    }
    assert!(peer_downs(&a.events()).is_empty());
    assert!(a.core.is_open(link.ca) && b.core.is_open(link.cb));
}

/// The reactor stalls after a poll (the machine is loaded, or the node
/// was stopped): silence counts only up to the poll, since bytes that
/// came after it wait unread. Once a later poll has seen nothing, the
/// peer is down.
#[test]
fn silence_counts_only_up_to_the_last_poll() {
    let now = Instant::now();
    let (mut a, _b, link) = greeted_pair(now);
    a.events();
    a.core.handle_polling(now + ms(1000));
    a.core.handle_timeout(now + ms(6000));
    assert!(
        peer_downs(&a.events()).is_empty(),
        "1 s of silence by the poll"
    );
    assert!(a.core.is_open(link.ca));
    a.core.handle_polling(now + ms(6000));
    a.core.handle_timeout(now + ms(6100));
    assert_eq!(
        peer_downs(&a.events()).len(),
        1,
        "6 s of silence by the poll"
    );
}

/// The same for a call's timeout: its answer may be waiting unread.
#[test]
fn a_call_times_out_only_by_what_the_last_poll_saw() {
    let now = Instant::now();
    let (mut a, _b, _link) = greeted_pair(now);
    a.core.config.keepalive = Duration::from_secs(60);
    a.core.config.call_timeout = Duration::from_secs(4);
    a.events();
    a.core.call(remote_call(3, "beta", 1), now);
    a.core.handle_polling(now + ms(1000));
    a.core.handle_timeout(now + ms(6000));
    assert_eq!(a.core.calls_in_flight(), 1, "its answer may be unread");
    a.core.handle_polling(now + ms(6000));
    a.core.handle_timeout(now + ms(6100));
    let failed = failed_replies(&a.events());
    assert_eq!(failed.len(), 1);
    assert!(failed[0].1.contains("timed out"), "{failed:?}");
}

/// A paused connection (the interpreter is behind) is not silent: the
/// silence is ours.
#[test]
fn a_paused_connection_is_not_declared_silent() {
    let now = Instant::now();
    let (mut a, _b, link) = greeted_pair(now);
    a.core.set_paused(link.ca, true, now);
    a.core.handle_timeout(now + Duration::from_secs(10));
    assert!(a.core.is_open(link.ca));
    a.core
        .set_paused(link.ca, false, now + Duration::from_secs(10));
    a.core.handle_timeout(now + Duration::from_secs(12));
    assert!(
        a.core.is_open(link.ca),
        "resuming counts as hearing from it"
    );
}

/// Redial delays grow from 100 ms towards 2 s while dialling fails, and
/// start over once a connection has worked.
#[test]
fn backoff_grows_while_dials_fail_and_resets_after_a_working_connection() {
    let t0 = Instant::now();
    let mut a = side("alpha", 1, &["127.0.0.1:9002"], t0);
    let mut now = t0;
    a.core.handle_timeout(now);
    let mut delays = Vec::new();
    for _ in 0..7 {
        assert_eq!(a.dials(), vec![0]);
        a.core.handle_dial_failed(0, "connection refused", now);
        let next = a.next_redial();
        // Nothing before the deadline...
        a.core.handle_timeout(next - ms(1));
        assert!(a.dials().is_empty());
        delays.push(next - now);
        now = next;
        a.core.handle_timeout(now);
    }
    for pair in delays.windows(2).take(4) {
        assert!(pair[1] > pair[0], "grows: {delays:?}");
    }
    assert!(
        delays[0] <= ms(125) && *delays.last().unwrap() >= ms(1750),
        "{delays:?}"
    );
    assert!(delays.iter().all(|d| *d <= ms(2250)), "capped: {delays:?}");

    // A connection that works for a while resets the backoff.
    let mut b = side("beta", 2, &[], now);
    let link = connect(&mut a, 0, &mut b, 40001, now);
    pump(&mut a, &mut b, &link, now);
    let lost = now + Duration::from_secs(1);
    a.core.handle_closed(link.ca, CloseReason::PeerClosed, lost);
    assert!(a.next_redial() - lost <= ms(125), "starts over at 100 ms");
}

/// A peer that refuses us right after the hellos (our name is taken
/// there) keeps the backoff growing instead of being redialled at once.
#[test]
fn a_refused_dial_keeps_backing_off() {
    let now = Instant::now();
    let mut a = side("twin", 1, &["127.0.0.1:9002"], now);
    let mut b = side("beta", 2, &[], now);
    // Someone else holds the name `twin` at beta.
    let mut holder = side("twin", 7, &["127.0.0.1:9002"], now);
    holder.core.handle_timeout(now);
    assert_eq!(holder.dials(), vec![0]);
    let hold = connect(&mut holder, 0, &mut b, 40009, now);
    pump(&mut holder, &mut b, &hold, now);
    assert_eq!(b.active("twin"), Some(hold.cb));
    let mut last_delay = Duration::ZERO;
    let mut t = now;
    for attempt in 0..4 {
        a.core.handle_timeout(t);
        assert_eq!(a.dials(), vec![0], "attempt {attempt}");
        let link = connect(&mut a, 0, &mut b, 40010 + attempt, t);
        pump(&mut a, &mut b, &link, t);
        assert!(!b.core.is_open(link.cb), "beta refuses the second `twin`");
        a.core
            .handle_closed(link.ca, CloseReason::PeerClosed, t + ms(1));
        let next = a.next_redial();
        let delay = next - (t + ms(1));
        assert!(
            delay > last_delay,
            "attempt {attempt}: {delay:?} after {last_delay:?}"
        );
        last_delay = delay;
        t = next;
    }
    assert!(holder.core.is_open(hold.ca), "the first `twin` stays");
}

#[test]
fn bad_hellos_are_refused_and_close_the_connection() {
    let now = Instant::now();
    let mut b = side("beta", 2, &[], now);
    let cases: Vec<(Message, &str)> = vec![
        (
            Message::Ping(codec::Ping { nonce: 1 }),
            "first frame was `ping`",
        ),
        (hello_msg("", 5, 2), "empty machine_id"),
        (
            hello_msg(&"g".repeat(256), 5, 2),
            "machine_id of 256 bytes; at most 255",
        ),
        (hello_msg("beta", 5, 2), "our own machine_id"),
        (hello_msg("gamma", 2, 2), "has our node_prefix"),
        (hello_msg("gamma", 5, 3), "unsupported protocol version 3"),
        (hello_msg("gamma", 5, 1), "protocol version 1"),
    ];
    for (i, (msg, why)) in cases.into_iter().enumerate() {
        let c = b.core.handle_accepted(addr(41000 + i as u16), now);
        assert_eq!(b.core.handle_message(c, msg, now), Status::Closed, "{why}");
        assert!(!b.core.is_open(c));
        // Closed, its last frame saying why.
        let closes = b.closes_told();
        assert_eq!(closes.len(), 1, "{why}");
        assert_eq!(closes[0].0, c);
        let said = closes[0]
            .1
            .as_deref()
            .unwrap_or_else(|| panic!("no close for {why}"));
        assert!(said.contains(why), "{said:?} does not say {why:?}");
    }
    // Nothing reached the interpreter.
    assert!(b.events().is_empty());
}

/// The reason of the last frame in `bytes`, if it is a `close`.
fn last_close_reason(bytes: &[u8]) -> Option<String> {
    let mut decoder = FrameDecoder::new(crate::codec::DEFAULT_MAX_FRAME);
    decoder.fill(bytes);
    let mut last = None;
    while let Some(payload) = decoder.next_frame().expect("well-framed") {
        last = match codec::decode(payload).expect("a message") {
            Message::Close(c) => Some(c.reason.into_owned()),
            _ => None,
        };
    }
    last
}

/// A `close` is taken at any point, even as the first frame: the
/// connection closes at once (a peer cannot keep it open by sending
/// more), as an orderly close; after the hellos the peer is down.
#[test]
fn a_peers_close_closes_the_connection_in_any_phase() {
    let now = Instant::now();
    let close = || {
        Message::Close(codec::Close {
            reason: "peer `beta` has our node_prefix 2".into(),
        })
    };
    let mut b = side("beta", 2, &[], now);
    let c = b.core.handle_accepted(addr(41100), now);
    assert_eq!(b.core.handle_message(c, close(), now), Status::Closed);
    assert!(!b.core.is_open(c));
    assert_eq!(b.closed(), vec![c]);

    let (mut a, _b, link) = greeted_pair(now);
    a.events();
    assert_eq!(a.core.handle_message(link.ca, close(), now), Status::Closed);
    assert!(!a.core.is_open(link.ca));
    assert_eq!(
        peer_downs(&a.events()),
        vec![(MachineId::new("beta"), CloseReason::PeerClosed)]
    );
}

/// A reason is cut to its maximum on a character boundary.
#[test]
fn a_close_reason_is_cut_on_a_character_boundary() {
    let long = "é".repeat(CLOSE_REASON_MAX);
    assert_eq!(
        codec::cut_on_char(&long, CLOSE_REASON_MAX),
        "é".repeat(CLOSE_REASON_MAX / 2)
    );
    assert_eq!(codec::cut_on_char("abc", CLOSE_REASON_MAX), "abc");
    assert_eq!(codec::cut_on_char("aé", 2), "a");
}

fn hello_msg(machine: &str, prefix: u16, version: u32) -> Message<'static> {
    hello_offering(machine, prefix, version, None)
}

fn hello_offering(
    machine: &str,
    prefix: u16,
    version: u32,
    compact: Option<u32>,
) -> Message<'static> {
    Message::Hello(codec::Hello {
        version,
        machine_id: machine.to_owned().into(),
        node_prefix: prefix,
        nonce: Some(auth::to_hex(&CLIENT_NONCE).into()),
        boot: Some(u64::from(prefix)),
        compact,
    })
}

/// A client that dialled `conn` on `side`'s core proves the cluster key
/// `key` as `machine` (after its hello): the proof's message.
fn proof_msg(
    side: &Side,
    conn: ConnId,
    machine: &str,
    prefix: u16,
    key: &auth::ClusterKey,
) -> Message<'static> {
    let us = side.core.config.machine.as_str();
    let node_nonce = side.core.conn(conn).expect("open").nonce;
    let dialler = auth::Side {
        machine,
        prefix,
        nonce: &CLIENT_NONCE,
    };
    let acceptor = auth::Side {
        machine: us,
        prefix: side.core.config.node_prefix,
        nonce: &node_nonce,
    };
    let proof = auth::proof(key, auth::Role::Dialler, &dialler, &acceptor);
    Message::Auth(codec::Auth {
        proof: auth::to_hex(&proof).into(),
    })
}

/// A client dials `side` as `machine`: its hello, then its proof.
fn greet(side: &mut Side, conn: ConnId, machine: &str, prefix: u16, now: Instant) -> Status {
    greet_offering(side, conn, machine, prefix, None, now)
}

/// [`greet`], with a hello that offers `compact`.
fn greet_offering(
    side: &mut Side,
    conn: ConnId,
    machine: &str,
    prefix: u16,
    compact: Option<u32>,
    now: Instant,
) -> Status {
    let hello = hello_offering(machine, prefix, VERSION, compact);
    match side.core.handle_message(conn, hello, now) {
        Status::Open => {}
        other => return other,
    }
    let proof = proof_msg(side, conn, machine, prefix, &test_key());
    side.core.handle_message(conn, proof, now)
}

/// Two nodes with one name: a second connection from the same side, or
/// one with another prefix, is refused; the first stays.
#[test]
fn a_second_node_with_a_connected_name_is_refused() {
    let now = Instant::now();
    let mut b = side("beta", 2, &[], now);
    let first = b.core.handle_accepted(addr(42001), now);
    assert_eq!(greet(&mut b, first, "twin", 5, now), Status::Greeted);
    let same_prefix = b.core.handle_accepted(addr(42002), now);
    assert_eq!(greet(&mut b, same_prefix, "twin", 5, now), Status::Closed);
    let other_prefix = b.core.handle_accepted(addr(42003), now);
    assert_eq!(greet(&mut b, other_prefix, "twin", 6, now), Status::Closed);
    let prefix_taken = b.core.handle_accepted(addr(42004), now);
    assert_eq!(greet(&mut b, prefix_taken, "other", 5, now), Status::Closed);
    assert!(b.core.is_open(first));
    assert_eq!(b.active("twin"), Some(first));
}

/// Before its hello a connection may send nothing else; after it, its
/// notices reach the interpreter as *its* notices whatever they claim
/// (what they may change is the directory's rule).
#[test]
fn notices_count_only_after_the_hello_and_carry_their_sender() {
    let now = Instant::now();
    let mut b = side("beta", 2, &[], now);
    let early = b.core.handle_accepted(addr(43001), now);
    let notify = |machine: &str| {
        Message::CreateNotify(codec::CreateNotify {
            object_id: ObjectId(5 << 48 | 1),
            machine_id: machine.to_owned().into(),
            behavior: None,
            epoch: 0,
        })
    };
    assert_eq!(
        b.core.handle_message(early, notify("mallory"), now),
        Status::Closed
    );
    assert!(b.events().is_empty());

    let c = b.core.handle_accepted(addr(43002), now);
    assert_eq!(greet(&mut b, c, "mallory", 5, now), Status::Greeted);
    b.events();
    assert_eq!(b.core.handle_message(c, notify("alpha"), now), Status::Open);
    match b.events().pop() {
        Some(Event::Notice {
            from,
            notice: Notice::Created { machine, .. },
        }) => {
            assert_eq!(
                from.as_str(),
                "mallory",
                "the sender is the connection's peer"
            );
            assert_eq!(
                machine.as_str(),
                "alpha",
                "the claim is passed on, for the directory to judge"
            );
        }
        other => panic!("{other:?}"),
    }
}

/// An unknown message type after the hello is ignored (a newer peer);
/// before it, it closes the connection.
#[test]
fn unknown_types_are_ignored_only_after_the_hello() {
    let now = Instant::now();
    let (_a, mut b, link) = greeted_pair(now);
    let unknown = crate::codec::decode(br#"{"type":"gossip"}"#).unwrap_err();
    assert_eq!(
        b.core
            .handle_bad_input(link.cb, BadInput::Message(unknown), now),
        Status::Open
    );
    let stranger = b.core.handle_accepted(addr(44001), now);
    assert_eq!(
        b.core
            .handle_bad_input(stranger, BadInput::Message(unknown), now),
        Status::Closed
    );
    let bad = crate::codec::decode(b"{\"type\":").unwrap_err();
    assert_eq!(
        b.core
            .handle_bad_input(link.cb, BadInput::Message(bad), now),
        Status::Closed
    );
}

/// A stranger's protocol error (here, another key's node redialling)
/// is warned of once per address and reason per quiet period; a greeted
/// peer's always.
#[test]
fn a_strangers_protocol_error_is_warned_of_once_per_address() {
    use crate::codec::FrameError;
    let now = Instant::now();
    let (_a, mut b, _link) = greeted_pair(now);
    let big = || {
        BadInput::Frame(FrameError::TooLarge {
            len: 5000,
            max: 4096,
        })
    };
    let why = "bad frame before the handshake completed: frame length 5000 over the maximum \
               4096 (no hello came first: is it an avm node?)";
    let ip = addr(0).ip();
    let first = b.core.handle_accepted(addr(46001), now);
    assert_eq!(b.core.handle_bad_input(first, big(), now), Status::Closed);
    assert_eq!(b.core.warned_at_for(ip, why), Some(now));
    let later = now + Duration::from_secs(5);
    let second = b.core.handle_accepted(addr(46002), later);
    assert_eq!(
        b.core.handle_bad_input(second, big(), later),
        Status::Closed
    );
    assert_eq!(
        b.core.warned_at_for(ip, why),
        Some(now),
        "quiet the second time"
    );
}

/// A TLS ClientHello on a plaintext node is named as such before any
/// hello, warned of once per address per quiet period, and closed every
/// time; after the hellos the same bytes are a bad frame like any other.
#[test]
fn a_tls_client_on_a_plaintext_port_is_named_once_per_address() {
    use crate::codec::FrameError;
    let now = Instant::now();
    let (_a, mut b, link) = greeted_pair(now);
    // The first four bytes of rustls's ClientHello: handshake, TLS 1.0
    // record version, then the length's high byte.
    let hello = u32::from_be_bytes([0x16, 0x03, 0x01, 0x00]);
    let tls = BadInput::Frame(FrameError::TooLarge {
        len: hello,
        max: 4096,
    });
    let ip = addr(0).ip();
    assert_eq!(b.core.tls_warned_at(ip), None);
    let first = b.core.handle_accepted(addr(45001), now);
    assert_eq!(b.core.handle_bad_input(first, tls, now), Status::Closed);
    assert_eq!(b.core.tls_warned_at(ip), Some(now));
    let later = now + Duration::from_secs(60);
    let second = b.core.handle_accepted(addr(45002), later);
    assert_eq!(b.core.handle_bad_input(second, tls, later), Status::Closed);
    assert_eq!(b.core.tls_warned_at(ip), Some(now), "quiet the second time");
    let much_later = now + Duration::from_secs(601);
    let third = b.core.handle_accepted(addr(45003), much_later);
    assert_eq!(
        b.core.handle_bad_input(third, tls, much_later),
        Status::Closed
    );
    assert_eq!(b.core.tls_warned_at(ip), Some(much_later), "warned again");
    // A greeted peer's oversized frame is no TLS stranger (past the quiet
    // period, so a stranger would have been warned of again).
    let greeted = BadInput::Frame(FrameError::TooLarge {
        len: hello,
        max: 1 << 24,
    });
    let after_quiet = much_later + Duration::from_secs(601);
    assert_eq!(
        b.core.handle_bad_input(link.cb, greeted, after_quiet),
        Status::Closed
    );
    assert_eq!(b.core.tls_warned_at(ip), Some(much_later));
    // Another mismatch from the same address is news, quiet period or not
    // (a client that dropped TLS, or a certificate another CA signed).
    let other = "TLS failed: invalid peer certificate: UnknownIssuer";
    assert_eq!(b.core.warned_at_for(ip, other), None);
    let fourth = b.core.handle_accepted(addr(45004), much_later);
    let failed = CloseReason::Tls("invalid peer certificate: UnknownIssuer".into());
    b.core.handle_closed(fourth, failed, much_later);
    assert_eq!(b.core.warned_at_for(ip, other), Some(much_later));
    // The same failure with other numbers in it (an expiry error names the
    // time) is not news.
    let expired = |secs: u64| {
        CloseReason::Tls(format!(
            "certificate expired: verification time {secs} (now)"
        ))
    };
    let fifth = b.core.handle_accepted(addr(45005), much_later);
    b.core.handle_closed(fifth, expired(1795), much_later);
    let sixth = b
        .core
        .handle_accepted(addr(45006), much_later + Duration::from_secs(5));
    let kind = "TLS failed: certificate expired: verification time 1 (now)";
    let before = b.core.warned_at_for(ip, kind);
    b.core
        .handle_closed(sixth, expired(1799), much_later + Duration::from_secs(5));
    assert_eq!(before, Some(much_later));
    assert_eq!(
        b.core.warned_at_for(ip, kind),
        Some(much_later),
        "the same kind"
    );
}

/// A call fails when its chain shows no progress for the call timeout,
/// not when the call itself is old: a call back into this node on the
/// same chain is progress.
#[test]
fn calls_time_out_by_chain_progress() {
    let now = Instant::now();
    let (mut a, mut b, link) = greeted_pair(now);
    a.events();
    b.events();
    let chain = 1 << 48 | 77;
    a.core.call(remote_call(1, "beta", chain), now);
    a.core.call(remote_call(2, "beta", 1 << 48 | 78), now);
    pump(&mut a, &mut b, &link, now);
    // At 20 s, beta calls back into alpha on the first chain.
    let t = now + Duration::from_secs(20);
    let back = Message::Call(Call {
        request_id: 1,
        target: ObjectId(1 << 48 | 1),
        input: Val::Nothing,
        sender: ObjectId(2 << 48 | 1),
        sender_machine: "beta".into(),
        chain: Some(ChainId(chain)),
    });
    a.core.handle_message(link.ca, back, t);
    a.core.handle_heard(link.ca, 1, t);
    // At 30 s the other chain's call has timed out; the first has not.
    let t30 = now + Duration::from_secs(30);
    a.core.handle_heard(link.ca, 1, t30);
    a.core.handle_timeout(t30);
    let failed = failed_replies(&a.events());
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].0, SuspendToken(2));
    assert!(failed[0].1.contains("timed out"), "{failed:?}");
    assert!(failed[0].2, "it left: its answer is lost");
    // At 50 s, 30 s after its last progress, the first times out too.
    let t50 = now + Duration::from_secs(50);
    a.core.handle_heard(link.ca, 1, t50);
    a.core.handle_timeout(t50);
    let failed = failed_replies(&a.events());
    assert_eq!(
        failed.iter().map(|f| f.0).collect::<Vec<_>>(),
        vec![SuspendToken(1)]
    );
    assert_eq!((a.core.calls_in_flight(), a.core.chains_waiting()), (0, 0));
    // The late answer is dropped quietly; the connection stays.
    b.events();
    assert!(a.core.is_open(link.ca));
}

/// Late answers: `(token, result)` of each [`Event::LateAdoptAnswer`].
fn late_adopt_answers(events: &[Event]) -> Vec<(SuspendToken, Result<Val, String>)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::LateAdoptAnswer { token, result } => Some((*token, result.clone())),
            _ => None,
        })
        .collect()
}

/// An `adopt` that timed out on a connection that stayed up keeps its
/// request_id: its answer, when it comes, is handed on (it settles a move
/// in doubt). A late answer to an ordinary call is still dropped, and an
/// adopt answered in time leaves nothing behind.
#[test]
fn a_late_answer_to_an_adopt_is_handed_on() {
    let now = Instant::now();
    let (mut a, mut b, link) = greeted_pair(now);
    a.events();
    b.events();
    let adopt = |token| RemoteCall {
        op: Some(vm::RemoteOp::Adopt),
        ..remote_call(token, "beta", 1 << 48 | token)
    };
    let on_time = call_arrives(&mut a, &mut b, &link, adopt(3), now);
    b.core.reply(on_time, Ok(Val::Bool(true)));
    pump(&mut a, &mut b, &link, now);
    assert!(a.events().iter().any(|e| matches!(
        e,
        Event::Reply {
            token: SuspendToken(3),
            lost: false,
            ..
        }
    )));
    assert!(
        a.core.conn(link.ca).unwrap().adopts.is_empty(),
        "answered in time"
    );

    let adopt_in = call_arrives(&mut a, &mut b, &link, adopt(1), now);
    let call_in = call_arrives(
        &mut a,
        &mut b,
        &link,
        remote_call(2, "beta", 1 << 48 | 2),
        now,
    );
    let t30 = now + Duration::from_secs(30);
    a.core.handle_heard(link.ca, 1, t30);
    a.core.handle_timeout(t30);
    let failed = failed_replies(&a.events());
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert!(failed.iter().all(|f| f.2), "both lost: {failed:?}");

    b.core.reply(call_in, Ok(Val::Nat(2)));
    b.core.reply(adopt_in, Ok(Val::Bool(false)));
    pump(&mut a, &mut b, &link, t30);
    let events = a.events();
    assert_eq!(
        late_adopt_answers(&events),
        vec![(SuspendToken(1), Ok(Val::Bool(false)))],
        "{events:?}"
    );
    assert!(
        !events.iter().any(|e| matches!(e, Event::Reply { .. })),
        "the ordinary call's late answer is dropped: {events:?}"
    );
    assert!(a.core.conn(link.ca).unwrap().adopts.is_empty());
    assert!(a.core.is_open(link.ca));
}

/// The callee's own error is an answer: the call is not lost (a move
/// whose adopt is refused must not wait in doubt).
#[test]
fn an_error_answer_is_not_a_lost_one() {
    let now = Instant::now();
    let (mut a, mut b, link) = greeted_pair(now);
    a.events();
    b.events();
    let inbound = call_arrives(
        &mut a,
        &mut b,
        &link,
        remote_call(5, "beta", 1 << 48 | 3),
        now,
    );
    b.core.reply(inbound, Err("object not found".into()));
    pump(&mut a, &mut b, &link, now);
    let failed = failed_replies(&a.events());
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].1.contains("object not found"), "{failed:?}");
    assert!(!failed[0].2, "an answer came");
}

#[test]
fn a_call_to_an_unconnected_machine_fails_at_once() {
    let now = Instant::now();
    let (mut a, _b, _link) = greeted_pair(now);
    a.core.call(remote_call(9, "gamma", 1), now);
    let failed = failed_replies(&a.events());
    assert_eq!(failed.len(), 1);
    assert!(failed[0].1.contains("not connected"), "{failed:?}");
    assert!(!failed[0].2, "it never left");
}

/// Past `max_pending` calls in flight, a call fails at once, naming the
/// machine it was for.
#[test]
fn a_call_past_the_in_flight_limit_fails_naming_the_machine() {
    let now = Instant::now();
    let (mut a, _b, _link) = greeted_pair(now);
    a.core.config.max_pending = 1;
    a.core.call(remote_call(1, "beta", 1), now);
    a.core.call(remote_call(2, "beta", 1), now);
    let failed = failed_replies(&a.events());
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(
        failed[0].1.contains("too many calls in flight"),
        "{failed:?}"
    );
    assert!(failed[0].1.contains("beta"), "{failed:?}");
}

/// Shutting down closes every connection with its unsent bytes to
/// linger, ending with a `close` that says the node is shutting down,
/// fails the calls in flight, and dials no more.
#[test]
fn shutdown_closes_everything_and_stops_dialling() {
    let now = Instant::now();
    let (mut a, _b, link) = greeted_pair(now);
    a.events();
    a.core.call(remote_call(4, "beta", 1), now);
    a.core.shutdown(now);
    let actions = a.actions();
    assert!(
        matches!(&actions[..], [Action::Close { conn, linger }] if *conn == link.ca && !linger.is_empty())
    );
    // Said, last, so that the peer does not take it for a refusal.
    let Action::Close { linger, .. } = &actions[0] else {
        unreachable!()
    };
    // The peer is told "node shutting down" (the wire's text, which
    // older nodes know); this node's own log says "this node is ...".
    assert_eq!(
        last_close_reason(linger).as_deref(),
        Some("node shutting down")
    );
    let events = a.events();
    assert_eq!(failed_replies(&events).len(), 1);
    assert_eq!(peer_downs(&events)[0].1, CloseReason::ShuttingDown);
    a.core.handle_timeout(now + Duration::from_secs(60));
    assert!(a.dials().is_empty());
}

/// A `--peer` that is this node itself is dialled once and abandoned.
#[test]
fn a_dial_that_reaches_this_node_is_abandoned() {
    let now = Instant::now();
    let mut a = side("alpha", 1, &["127.0.0.1:9001"], now);
    a.core.handle_timeout(now);
    assert_eq!(a.dials(), vec![0]);
    let out = a.core.handle_dialled(0, addr(a.port), addr(45001), now);
    a.core.handle_connected(out, now);
    let inn = a.core.handle_accepted(addr(45001), now);
    let bytes = a.core.unsent(out).to_vec();
    let mut dec = FrameDecoder::new(4096);
    dec.fill(&bytes);
    let hello = crate::codec::decode(dec.next_frame().unwrap().unwrap()).unwrap();
    a.core.handle_message(out, hello, now);
    assert!(!a.core.is_open(out));
    a.core.handle_closed(inn, CloseReason::PeerClosed, now);
    a.core.handle_timeout(now + Duration::from_secs(60));
    assert!(a.dials().is_empty(), "never dialled again");
}

#[test]
fn a_peer_that_stops_reading_is_cut() {
    let now = Instant::now();
    let (mut a, _b, link) = greeted_pair(now);
    a.events();
    let big = Val::Str("x".repeat(600 << 10));
    for token in 0..2 {
        let mut call = remote_call(token, "beta", 1);
        call.input = big.clone();
        a.core.call(call, now);
    }
    a.core.check_backlog(link.ca, now);
    assert!(
        a.core.is_open(link.ca),
        "a burst over the limit is not yet a stuck peer"
    );
    let stall = a.core.config.keepalive * STALL_INTERVALS;
    a.core.check_backlog(link.ca, now + stall);
    assert!(!a.core.is_open(link.ca));
    let downs = peer_downs(&a.events());
    assert!(
        matches!(downs[0].1, CloseReason::NotReading { idle: Some(_), .. }),
        "{downs:?}"
    );
}

/// A peer that takes bytes is slow, not stuck: over the limit it stays
/// connected as long as it takes some, until the backlog passes twice
/// the limit.
#[test]
fn a_peer_that_reads_slowly_is_cut_only_past_twice_the_limit() {
    let now = Instant::now();
    let (mut a, _b, link) = greeted_pair(now);
    a.events();
    let limit = a.core.config.max_write_buffer;
    let stall = a.core.config.keepalive * STALL_INTERVALS;
    let big = Val::Str("x".repeat(limit / 4));
    let mut at = now;
    for token in 0..16 {
        let mut call = remote_call(token, "beta", 1);
        call.input = big.clone();
        a.core.call(call, at);
        a.core.advance(link.ca, 1024); // it takes a little each time
        at += stall; // long apart: without the bytes taken, each is a stall
        a.core.check_backlog(link.ca, at);
        let unsent = a.core.unsent(link.ca).len();
        if !a.core.is_open(link.ca) {
            assert!(unsent == 0 && token >= 8, "cut at call {token}");
            let downs = peer_downs(&a.events());
            assert!(
                matches!(downs[0].1, CloseReason::NotReading { idle: None, unsent, .. } if unsent > HARD_CAP * limit),
                "{downs:?}"
            );
            return;
        }
        assert!(unsent <= HARD_CAP * limit, "{unsent} bytes kept");
    }
    panic!("never cut");
}

/// The frames `side` queued on `conn`, decoded (and taken).
fn sent(side: &mut Side, conn: ConnId) -> Vec<String> {
    let bytes = side.core.unsent(conn).to_vec();
    side.core.advance(conn, bytes.len());
    let mut decoder = FrameDecoder::new(crate::codec::DEFAULT_MAX_FRAME);
    decoder.fill(&bytes);
    let mut types = Vec::new();
    while let Some(payload) = decoder.next_frame().unwrap() {
        types.push(
            crate::codec::decode(payload)
                .unwrap()
                .type_name()
                .to_owned(),
        );
    }
    types
}

#[test]
fn a_proof_made_with_another_key_is_refused() {
    let now = Instant::now();
    let mut b = side("beta", 2, &[], now);
    let c = b.core.handle_accepted(addr(46001), now);
    assert_eq!(
        b.core
            .handle_message(c, hello_msg("mallory", 5, VERSION), now),
        Status::Open
    );
    let other = auth::ClusterKey::from_bytes(b"not the cluster's key").unwrap();
    let bad = proof_msg(&b, c, "mallory", 5, &other);
    assert_eq!(b.core.handle_message(c, bad, now), Status::Closed);
    assert!(
        b.events().is_empty(),
        "no PeerUp, nothing for the interpreter"
    );
}

#[test]
fn a_proof_recorded_on_one_connection_fails_on_another() {
    let now = Instant::now();
    let mut b = side("beta", 2, &[], now);
    let first = b.core.handle_accepted(addr(46002), now);
    b.core
        .handle_message(first, hello_msg("alpha", 1, VERSION), now);
    let recorded = proof_msg(&b, first, "alpha", 1, &test_key());
    assert_eq!(
        b.core.handle_message(first, recorded.clone(), now),
        Status::Greeted
    );
    let second = b.core.handle_accepted(addr(46003), now);
    b.core
        .handle_message(second, hello_msg("alpha", 1, VERSION), now);
    assert_eq!(
        b.core.handle_message(second, recorded, now),
        Status::Closed,
        "the node's nonce differs"
    );
    assert!(b.core.is_open(first));
}

#[test]
fn nothing_but_the_proof_counts_before_it() {
    let now = Instant::now();
    let mut b = side("beta", 2, &[], now);
    let c = b.core.handle_accepted(addr(46004), now);
    b.core
        .handle_message(c, hello_msg("mallory", 5, VERSION), now);
    let call = Message::Call(Call {
        request_id: 1,
        target: ObjectId(2 << 48 | 1),
        input: Val::Nothing,
        sender: ObjectId(0),
        sender_machine: "mallory".into(),
        chain: None,
    });
    assert_eq!(b.core.handle_message(c, call, now), Status::Closed);
    assert!(
        b.events().is_empty(),
        "the call never reached the interpreter"
    );
}

/// The acceptor proves itself only once the dialler has: a stranger that
/// dials in gets no proof to test key guesses against.
#[test]
fn the_acceptor_proves_only_after_the_dialler() {
    let now = Instant::now();
    let mut b = side("beta", 2, &[], now);
    let c = b.core.handle_accepted(addr(46005), now);
    b.core
        .handle_message(c, hello_msg("alpha", 1, VERSION), now);
    assert_eq!(sent(&mut b, c), vec!["hello"]);
    let good = proof_msg(&b, c, "alpha", 1, &test_key());
    assert_eq!(b.core.handle_message(c, good, now), Status::Greeted);
    assert_eq!(sent(&mut b, c), vec!["auth"]);
}

/// With a long keepalive (its checks 3 s apart before), a stalled
/// handshake still ends 3 s after it began, give or take one check.
#[test]
fn the_handshake_limit_holds_whatever_the_keepalive() {
    let now = Instant::now();
    let mut b = side("beta", 2, &[], now);
    b.core.config.keepalive = Duration::from_secs(60);
    b.core.handle_timeout(now + ms(100)); // the first tick, at the new pace
    let quiet = b.core.handle_accepted(addr(46010), now + ms(200));
    b.core.handle_timeout(now + ms(3100));
    assert!(b.core.is_open(quiet));
    b.core.handle_timeout(now + ms(3500));
    assert!(!b.core.is_open(quiet), "3.3 s without a hello");
}

/// While we do not read a connection (the interpreter is behind), its
/// handshake is not timed: its hello may be waiting in our socket. The
/// time before the pause still counts.
#[test]
fn a_paused_handshake_is_not_timed_out() {
    let now = Instant::now();
    let mut b = side("beta", 2, &[], now);
    let c = b.core.handle_accepted(addr(46011), now);
    b.core.set_paused(c, true, now + ms(2000));
    b.core.handle_timeout(now + ms(5000));
    assert!(b.core.is_open(c), "closed while we were not reading it");
    b.core.set_paused(c, false, now + ms(5000));
    b.core.handle_timeout(now + ms(5800));
    assert!(b.core.is_open(c), "2.8 s of reading");
    b.core.handle_timeout(now + ms(6500));
    assert!(!b.core.is_open(c), "3.5 s of reading: 2 before the pause");
}

/// Past 64 accepted connections in their handshake, the oldest is closed
/// for the newest (and told why), so a real peer is not shut out.
#[test]
fn the_oldest_stranger_makes_room_for_a_new_one() {
    let now = Instant::now();
    let mut b = side("beta", 2, &[], now);
    let strangers: Vec<ConnId> = (0..MAX_STRANGERS as u16)
        .map(|i| {
            b.core
                .handle_accepted(addr(47000 + i), now + ms(u64::from(i)))
        })
        .collect();
    assert!(strangers.iter().all(|&c| b.core.is_open(c)));
    let newest = b.core.handle_accepted(addr(48000), now + ms(100));
    assert!(b.core.is_open(newest));
    assert!(!b.core.is_open(strangers[0]), "the oldest made room");
    assert!(strangers[1..].iter().all(|&c| b.core.is_open(c)));
    let told = b.closes_told();
    assert!(
        told.iter().any(|(c, why)| *c == strangers[0]
            && why
                .as_deref()
                .is_some_and(|w| w.contains("the oldest of 64"))),
        "{told:?}"
    );
}

/// A dialled connection's 3 s start once TCP has connected: a slow
/// connect does not eat the handshake's time.
#[test]
fn the_handshake_limit_starts_at_the_tcp_connect() {
    let now = Instant::now();
    let mut a = side("alpha", 1, &["127.0.0.1:9002"], now);
    a.core.handle_timeout(now);
    assert_eq!(a.dials(), vec![0]);
    let out = a.core.handle_dialled(0, addr(9002), addr(45010), now);
    let connected = now + Duration::from_millis(2900);
    a.core.handle_connected(out, connected);
    a.core.handle_timeout(now + Duration::from_millis(3500));
    assert!(a.core.is_open(out), "0.6 s after the connect");
    a.core
        .handle_timeout(connected + Duration::from_millis(3300));
    assert!(!a.core.is_open(out));
}

#[test]
fn a_handshake_that_stalls_is_closed_after_3_s() {
    let now = Instant::now();
    let mut b = side("beta", 2, &[], now);
    let quiet = b.core.handle_accepted(addr(46006), now);
    let half = b.core.handle_accepted(addr(46007), now);
    b.core
        .handle_message(half, hello_msg("alpha", 1, VERSION), now);
    b.core.handle_timeout(now + HANDSHAKE_TIMEOUT - ms(100));
    assert!(b.core.is_open(quiet) && b.core.is_open(half));
    b.core.handle_timeout(now + HANDSHAKE_TIMEOUT + ms(100));
    assert!(!b.core.is_open(quiet) && !b.core.is_open(half));
    // Each is told why, last thing before the close.
    let told = b.closes_told();
    assert!(
        told.contains(&(quiet, Some("no hello within 3 s".into()))),
        "{told:?}"
    );
    assert!(
        told.contains(&(half, Some("no proof within 3 s".into()))),
        "{told:?}"
    );
}

/// A stale id must not close the connection that reuses its slot.
#[test]
fn a_stale_close_leaves_the_slots_new_connection_alone() {
    let now = Instant::now();
    let (mut a, _b, link) = greeted_pair(now);
    a.core.handle_closed(link.ca, CloseReason::PeerClosed, now);
    a.events();
    a.actions();
    let reused = a.core.handle_accepted(addr(40009), now);
    assert_eq!(reused.key(), link.ca.key(), "slot reused");
    // The reactor reports the old socket's end once more (a stale id).
    a.core
        .handle_closed(link.ca, CloseReason::ReadFailed("late".into()), now);
    assert!(
        a.core.is_open(reused),
        "the new connection in the slot was dropped"
    );
}

/// beta's host dies without a FIN reaching zeta, and beta restarts and
/// dials zeta before zeta's keepalive notices. While the old connection
/// may be alive, the new life is refused (as any second node with that
/// name would be: the established connection stays); once keepalive
/// finds the old one dead, the new life gets in and comes up anew, so
/// both sides exchange directory snapshots again. It is never absorbed
/// into the old session by the tie rule (which needs the same life).
#[test]
fn a_restarted_peer_comes_up_anew_once_its_old_connection_is_found_dead() {
    let now = Instant::now();
    let mut z = side("zeta", 1, &["127.0.0.1:9002"], now);
    let mut b = side("beta", 2, &[], now);
    z.core.handle_timeout(now);
    assert_eq!(z.dials(), vec![0]);
    let old = connect(&mut z, 0, &mut b, 40001, now);
    pump(&mut z, &mut b, &old, now);
    z.events();
    // beta's host dies at `now` (nothing more on `old`); beta restarts.
    let t = now + ms(800);
    let mut b2 = side("beta", 2, &["127.0.0.1:9001"], t);
    b2.core.handle_timeout(t);
    assert_eq!(b2.dials(), vec![0]);
    let early = connect(&mut b2, 0, &mut z, 40005, t);
    pump(&mut b2, &mut z, &early, t);
    assert!(
        !z.core.is_open(early.cb),
        "refused while the old life may live"
    );
    assert!(z.core.is_open(old.ca));
    // Keepalive: the old connection is silent for 3 intervals.
    run(&mut b2, &mut z, &[], t, now + ms(3100));
    assert!(!z.core.is_open(old.ca), "found dead");
    let events = z.events();
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::PeerDown { machine, .. } if machine.as_str() == "beta")));
    // beta's next redial gets in, as a new peer.
    let t2 = now + ms(3100);
    b2.core.handle_closed(early.ca, CloseReason::PeerClosed, t2);
    let redial = b2.next_redial();
    b2.core.handle_timeout(redial);
    assert_eq!(b2.dials(), vec![0]);
    let new = connect(&mut b2, 0, &mut z, 40006, redial);
    pump(&mut b2, &mut z, &new, redial);
    assert_eq!(z.active("beta"), Some(new.cb));
    assert!(z
        .events()
        .iter()
        .any(|e| matches!(e, Event::PeerUp { machine, .. } if machine.as_str() == "beta")));
}

/// `n` objects of behavior `pong` on alpha, as a snapshot lists them.
fn pongs(n: u64) -> OwnedObjects {
    OwnedObjects {
        objects: (1..=n).map(|n| (ObjectId(1 << 48 | n), 0)).collect(),
        behaviors: vec![Arc::from("pong")],
    }
}

/// A greeted pair, alpha owing beta its snapshot of `n` objects and
/// `names` (nothing of it queued yet: steps are `pump_snapshots`').
fn snapshot_owed(now: Instant, n: u64, names: Vec<(Arc<str>, ObjectId)>) -> (Side, Side, Link) {
    let (mut a, mut b, link) = greeted_pair(now);
    let up = peer_up(&mut a, "beta").expect("beta came up");
    b.events();
    a.core
        .send_snapshot(&MachineId::new("beta"), up, pongs(n), names, Vec::new());
    (a, b, link)
}

/// The `up` of `machine`'s `PeerUp` among `side`'s events.
fn peer_up(side: &mut Side, machine: &str) -> Option<u64> {
    side.events().into_iter().find_map(|e| match e {
        Event::PeerUp { machine: m, up, .. } if m.as_str() == machine => Some(up),
        _ => None,
    })
}

/// A snapshot is owed to the connection whose `PeerUp` asked for it. If
/// the peer went down and came back before it was handed over, it is
/// dropped (it could name objects destroyed before the new connection's
/// notices began); the new `PeerUp`'s snapshot streams.
#[test]
fn a_snapshot_owed_to_an_earlier_connection_is_not_sent_on_a_later_one() {
    let now = Instant::now();
    let mut b = side("beta", 2, &[], now);
    let first = b.core.handle_accepted(addr(43001), now);
    assert_eq!(greet(&mut b, first, "alpha", 1, now), Status::Greeted);
    let first_up = peer_up(&mut b, "alpha").expect("alpha came up");
    b.core.handle_closed(first, CloseReason::PeerClosed, now);
    let second = b.core.handle_accepted(addr(43002), now);
    assert_eq!(greet(&mut b, second, "alpha", 1, now), Status::Greeted);
    let second_up = peer_up(&mut b, "alpha").expect("alpha came up again");
    assert_ne!(first_up, second_up);
    let alpha = MachineId::new("alpha");
    b.core
        .send_snapshot(&alpha, first_up, pongs(10), Vec::new(), Vec::new());
    assert!(
        b.core.streaming.is_empty(),
        "the stale snapshot was dropped"
    );
    b.core
        .send_snapshot(&alpha, second_up, pongs(10), Vec::new(), Vec::new());
    assert_eq!(b.core.streaming, vec![second]);
}

/// A large directory snapshot streams out a chunk at a time, as the
/// socket takes it: the write buffer never holds it whole, every object
/// arrives, and an object destroyed while it streams is not announced
/// after its `destroy_notify`. To a peer that offered compact version 2
/// it goes as `objects` frames (11 bytes an object, so ten times as
/// many objects fill the chunk); to one that offered less, as JSON
/// `create_notify`s.
#[test]
fn a_large_snapshot_streams_as_the_socket_takes_it() {
    large_snapshot_streams(200_000, codec::compact::VERSION);
    large_snapshot_streams(20_000, 1);
}

/// alpha owes beta its snapshot of `n` objects; beta's `hello` offered
/// compact version `compact`.
fn large_snapshot_streams(n: u64, compact: u32) {
    let now = Instant::now();
    let (mut a, mut b, link) = snapshot_owed(now, n, Vec::new());
    a.core.conn_mut(link.ca).unwrap().compact = compact;
    let mut frames = 0;
    // One step at a time: the reactor's other work waits for no more. To
    // a v2 peer a step is one frame of the entries the step pays for.
    let most = match compact {
        2.. => objects_frame_len(SNAPSHOT_STEP / SNAPSHOT_OBJECT_COST),
        _ => SNAPSHOT_STEP + 256,
    };
    a.core.pump_snapshots(now);
    let step = a.core.unsent(link.ca).len();
    match compact {
        2.. => assert_eq!(step, most, "the first step"),
        _ => assert!(
            (SNAPSHOT_STEP..most).contains(&step),
            "{step} bytes queued by the first step"
        ),
    }
    a.core.pump_snapshots(now);
    let two = a.core.unsent(link.ca).len();
    assert!(two - step <= most, "{} bytes in a step", two - step);
    // Steps fill the chunk, then stop until the socket takes bytes.
    let mut steps = 2;
    while a.core.snapshot_ready(now) {
        a.core.pump_snapshots(now);
        steps += 1;
    }
    let queued = a.core.unsent(link.ca).len();
    assert!(
        (SNAPSHOT_CHUNK..SNAPSHOT_CHUNK + most).contains(&queued),
        "{queued} bytes queued"
    );
    assert!(steps >= SNAPSHOT_CHUNK / most, "{steps} steps");
    a.core.pump_snapshots(now);
    assert_eq!(a.core.unsent(link.ca).len(), queued, "a full chunk waits");
    // The last object is destroyed before its notice went out.
    let last = ObjectId(1 << 48 | n);
    a.core.broadcast_destroyed(last);
    // The reactor writes a little at a time; the core tops the buffer up.
    let mut most_held = 0;
    let mut created = 0;
    let mut destroyed_at = None;
    let mut synced = None;
    while !a.core.unsent(link.ca).is_empty() {
        most_held = most_held.max(a.core.unsent(link.ca).len());
        let bytes = a.core.unsent(link.ca)[..]
            .iter()
            .take(64 << 10)
            .copied()
            .collect::<Vec<u8>>();
        let mut decoder = FrameDecoder::new(crate::codec::DEFAULT_MAX_FRAME);
        // Whole frames only, as a reader of the socket would see them in time.
        let mut taken = 0;
        let mut rest = &bytes[..];
        loop {
            let filled = decoder.fill(rest);
            rest = &rest[filled..];
            let mut got = false;
            while let Ok(Some(payload)) = decoder.next_frame() {
                got = true;
                taken += payload.len() + crate::codec::HEADER_LEN;
                let msg = crate::codec::decode(payload).unwrap();
                let batched = matches!(msg, Message::Objects(_));
                assert!(
                    batched || !matches!(msg, Message::CreateNotify(_)) || compact < 2,
                    "a create_notify to a peer that reads objects"
                );
                assert!(
                    !batched || compact >= 2,
                    "objects to a peer that offered {compact}"
                );
                frames += 1;
                b.core.handle_message(link.cb, msg, now);
            }
            if filled == 0 && !got {
                break;
            }
        }
        a.core.advance(link.ca, taken);
        while a.core.snapshot_ready(now) {
            a.core.pump_snapshots(now);
        }
        for e in b.events() {
            match e {
                Event::Synced { objects, .. } => synced = Some(objects),
                Event::Notice {
                    notice: Notice::Created { id, behavior, .. },
                    ..
                } => {
                    assert!(
                        destroyed_at.is_none() || id != last,
                        "created after destroyed"
                    );
                    assert_eq!(behavior.as_deref(), Some("pong"));
                    created += 1;
                }
                Event::Notice {
                    notice: Notice::Destroyed { id },
                    ..
                } if id == last => destroyed_at = Some(created),
                _ => {}
            }
        }
    }
    assert!(
        most_held < SNAPSHOT_CHUNK + most,
        "the buffer held {most_held} bytes at most"
    );
    assert_eq!(created, n - 1, "every object but the destroyed one");
    assert!(destroyed_at.is_some());
    assert_eq!(synced, Some(n - 1), "the end marker counts what was sent");
    if compact >= 2 {
        assert!(frames < n / 100, "{frames} frames for {n} objects");
    }
}

/// The bytes of an `objects` frame of `n` of [`pongs`]' entries.
fn objects_frame_len(n: usize) -> usize {
    codec::HEADER_LEN + 1 + 1 + (1 + "pong".len()) + 4 + n * codec::compact::OBJECT_ENTRY
}

/// The entries of the `objects` frames in `bytes` (whole frames).
fn objects_entries(bytes: &[u8]) -> usize {
    let mut decoder = FrameDecoder::new(codec::DEFAULT_MAX_FRAME);
    let (mut rest, mut entries) = (bytes, 0);
    loop {
        let filled = decoder.fill(rest);
        rest = &rest[filled..];
        let mut got = false;
        while let Ok(Some(payload)) = decoder.next_frame() {
            got = true;
            if let Ok(Message::Objects(o)) = codec::decode(payload) {
                entries += o.len();
            }
        }
        if filled == 0 && !got {
            return entries;
        }
    }
}

/// To a v2 peer, a snapshot's `objects` frames carry each object's epoch
/// and behavior: 300 behaviors spread over two frames, each with its own
/// table, and an object whose behavior name is over 255 bytes (no table
/// can hold it) goes alone as a JSON `create_notify`, in its place. (A
/// frame's table cannot fill up today: a step is 204 entries, under its
/// 255 names.)
#[test]
fn objects_frames_carry_epochs_and_every_behavior() {
    let now = Instant::now();
    let (mut a, mut b, link) = greeted_pair(now);
    let up = peer_up(&mut a, "beta").expect("beta came up");
    b.events();
    let long: Arc<str> = Arc::from("b".repeat(256));
    let mut behaviors: Vec<Arc<str>> = (0..300).map(|i| Arc::from(format!("kind{i}"))).collect();
    behaviors.push(long.clone());
    let id = |n: u64| ObjectId(1 << 48 | n);
    let objects = OwnedObjects {
        objects: (0..301u32).map(|i| (id(u64::from(i) + 1), i)).collect(),
        behaviors,
    };
    let epochs = vec![(id(7), 3), (id(301), 9)];
    a.core
        .send_snapshot(&MachineId::new("beta"), up, objects, Vec::new(), epochs);
    let mut kinds = Vec::new();
    for _ in 0..100 {
        a.core.pump_snapshots(now);
        let bytes = a.core.unsent(link.ca).to_vec();
        let mut decoder = FrameDecoder::new(codec::DEFAULT_MAX_FRAME);
        decoder.fill(&bytes);
        while let Ok(Some(payload)) = decoder.next_frame() {
            let msg = codec::decode(payload).unwrap();
            kinds.push(match &msg {
                Message::Objects(o) => format!("objects {}", o.len()),
                other => other.type_name().to_owned(),
            });
            b.core.handle_message(link.cb, msg, now);
        }
        let n = bytes.len();
        a.core.advance(link.ca, n);
    }
    assert_eq!(
        kinds,
        ["objects 204", "objects 96", "create_notify", "snapshot_end"],
        "two frames of a step each; the long name goes alone"
    );
    let mut learned = Vec::new();
    for e in b.events() {
        if let Event::Notice {
            notice:
                Notice::Created {
                    id,
                    behavior,
                    epoch,
                    ..
                },
            ..
        } = e
        {
            learned.push((id, behavior.unwrap(), epoch));
        }
    }
    assert_eq!(learned.len(), 301);
    for (n, (got, behavior, epoch)) in learned.into_iter().enumerate() {
        assert_eq!(got, id(n as u64 + 1), "in order");
        let want = if n == 300 {
            long.to_string()
        } else {
            format!("kind{n}")
        };
        assert_eq!(&*behavior, want);
        let want_epoch = match n + 1 {
            7 => 3,
            301 => 9,
            _ => 0,
        };
        assert_eq!(epoch, want_epoch, "object {}", n + 1);
    }
}

/// While the node serves calls, its snapshot yields to them: a step takes
/// what accrued at the paced rate since the last, none under a paced step,
/// and the reactor may sleep until one is due. With no calls, it streams
/// flat out. (Measured in JSON bytes, to a peer that offered compact 1;
/// an `objects` entry counts as [`SNAPSHOT_OBJECT_COST`] of them, below.)
#[test]
fn a_snapshot_gives_way_to_calls() {
    let now = Instant::now();
    let (mut a, _b, link) = snapshot_owed(now, 5_000, Vec::new());
    a.core.conn_mut(link.ca).unwrap().compact = 1;
    assert!(a.core.unsent(link.ca).is_empty(), "steps are the pump's");
    // No calls: a whole step at once.
    a.core.pump_snapshots(now);
    let flat = a.core.unsent(link.ca).len();
    assert!(flat >= SNAPSHOT_STEP, "{flat}");
    // A call out: alpha serves traffic. A millisecond has accrued since
    // the core started: one step of at most a millisecond's worth.
    let t = now + ms(1);
    a.core.call(remote_call(7, "beta", 1 << 48 | 9), t);
    let before = a.core.unsent(link.ca).len();
    a.core.pump_snapshots(t);
    let first = a.core.unsent(link.ca).len() - before;
    assert!(
        (SNAPSHOT_PACED_STEP..=SNAPSHOT_PACED_MAX + 256).contains(&first),
        "{first} bytes in the first paced step"
    );
    // Nothing accrued yet: not due, and the reactor may sleep till it is.
    let queued = a.core.unsent(link.ca).len();
    assert!(!a.core.snapshot_ready(t));
    let accrue = Duration::from_micros((SNAPSHOT_PACED_STEP / SNAPSHOT_PACED_RATE) as u64);
    assert_eq!(a.core.poll_timeout(), Some(t + accrue));
    a.core.pump_snapshots(t + accrue / 2);
    assert_eq!(a.core.unsent(link.ca).len(), queued, "half a step accrued");
    let later = accrue + Duration::from_micros(36);
    assert!(a.core.snapshot_ready(t + later));
    a.core.pump_snapshots(t + later);
    let step = a.core.unsent(link.ca).len() - queued;
    let accrued = later.as_micros() as usize * SNAPSHOT_PACED_RATE;
    assert!(
        (accrued..=accrued + 256).contains(&step),
        "{step} bytes after {later:?}, {accrued} accrued"
    );
    // No calls for a while: flat out again.
    let quiet = t + SNAPSHOT_YIELD_FOR;
    let before = a.core.unsent(link.ca).len();
    assert!(a.core.snapshot_ready(quiet));
    a.core.pump_snapshots(quiet);
    assert!(a.core.unsent(link.ca).len() - before >= SNAPSHOT_STEP);
    assert!(
        a.core.snapshot_ready(quiet),
        "flat out: ready again at once"
    );
    // An operation on alpha's objects from beta (`meta`) is traffic too:
    // a paced step, then nothing until more accrues.
    let op = Message::Meta(codec::Meta {
        op: "reflect".into(),
        call: Call {
            request_id: 1,
            target: ObjectId(1 << 48 | 1),
            input: Val::Nothing,
            sender: ObjectId(2 << 48 | 1),
            sender_machine: "beta".into(),
            chain: None,
        },
    });
    a.core.handle_message(link.ca, op, quiet);
    a.core.pump_snapshots(quiet);
    assert!(!a.core.snapshot_ready(quiet), "paced after a meta call");
}

/// Calls every 10 ms, and the reactor woken only by its poll, which rounds
/// a timeout up to whole milliseconds: the snapshot still streams at the
/// paced rate, since a step takes what accrued.
#[test]
fn a_paced_snapshot_keeps_its_rate_when_calls_are_sparse() {
    paced_snapshot_rate(1);
    paced_snapshot_rate(codec::compact::VERSION);
}

/// [`a_paced_snapshot_keeps_its_rate_when_calls_are_sparse`] to a peer that
/// offered compact version `compact`: JSON bytes at the paced rate, or
/// `objects` entries at the rate over [`SNAPSHOT_OBJECT_COST`].
fn paced_snapshot_rate(compact: u32) {
    let now = Instant::now();
    let (mut a, _b, link) = snapshot_owed(now, 100_000, Vec::new());
    a.core.conn_mut(link.ca).unwrap().compact = compact;
    let (mut sent, mut entries) = (0, 0);
    for tick in 1..=100u32 {
        let t = now + ms(u64::from(tick));
        if tick % 10 == 1 {
            a.core
                .call(remote_call(u64::from(tick), "beta", 1 << 48 | 9), t);
        }
        a.core.pump_snapshots(t);
        // The socket takes everything.
        let n = a.core.unsent(link.ca).len();
        sent += n;
        entries += objects_entries(a.core.unsent(link.ca));
        a.core.advance(link.ca, n);
    }
    // 100 ms at the paced rate, the calls' frames aside.
    let (got, expected) = match compact {
        2.. => (
            entries,
            100_000 * SNAPSHOT_PACED_RATE / SNAPSHOT_OBJECT_COST,
        ),
        _ => (sent, 100_000 * SNAPSHOT_PACED_RATE),
    };
    assert!(
        got > expected * 9 / 10 && got < expected * 11 / 10,
        "{got} in 100 ms, expected about {expected} (compact {compact})"
    );
}

/// A name taken or dropped while a snapshot streams is not undone by the
/// snapshot's own `name_notify`, which would arrive after the live notice;
/// names of objects destroyed meanwhile are not sent either.
#[test]
fn a_name_changed_while_a_snapshot_streams_stays_changed() {
    let now = Instant::now();
    let (x, y, z) = (
        ObjectId(1 << 48 | 1),
        ObjectId(1 << 48 | 2),
        ObjectId(1 << 48 | 3),
    );
    let names = vec![
        (Arc::from("x"), x),
        (Arc::from("y"), y),
        (Arc::from("z"), z),
    ];
    let (mut a, mut b, link) = snapshot_owed(now, 2_000, names);
    a.core.pump_snapshots(now);
    a.core.broadcast_unnamed("x", x);
    a.core.broadcast_destroyed(z);
    pump(&mut a, &mut b, &link, now);
    let mut named = Vec::new();
    let mut unnamed = Vec::new();
    let mut synced = false;
    for e in b.events() {
        match e {
            Event::Notice {
                notice: Notice::Named { name, .. },
                ..
            } => named.push(name.to_string()),
            Event::Notice {
                notice: Notice::Unnamed { name, .. },
                ..
            } => unnamed.push(name.to_string()),
            Event::Synced { .. } => synced = true,
            _ => {}
        }
    }
    assert_eq!(unnamed, ["x"]);
    assert_eq!(named, ["y"], "x was dropped and z destroyed meanwhile");
    assert!(synced);
}

/// A connection that closes while its snapshot streams leaves nothing
/// behind: no step is due, and the reactor may block.
#[test]
fn a_snapshot_ends_with_its_connection() {
    let now = Instant::now();
    let (mut a, _b, link) = snapshot_owed(now, 20_000, Vec::new());
    a.core.pump_snapshots(now);
    assert!(a.core.snapshot_ready(now));
    a.core.handle_closed(link.ca, CloseReason::PeerClosed, now);
    assert!(!a.core.snapshot_ready(now));
    a.core.pump_snapshots(now);
    assert!(a.core.streaming.is_empty());
}

#[test]
fn metrics_count_round_trips_traffic_and_a_peer_going_down() {
    let now = Instant::now();
    let (mut a, mut b, link) = greeted_pair(now);
    a.events();
    b.events();
    let inbound = call_arrives(
        &mut a,
        &mut b,
        &link,
        remote_call(7, "beta", 1 << 48 | 9),
        now,
    );
    b.core.reply(inbound, Ok(Val::Nat(8)));
    pump(&mut a, &mut b, &link, now + ms(3));
    assert_eq!(a.core.rtt().count(), 1, "one round trip observed");
    assert_eq!(
        a.core.rtt().sum_us(),
        3_000,
        "sent at now, answered 3 ms later"
    );

    let views = a.core.peer_views(now + ms(3));
    let beta = views
        .iter()
        .find(|v| v.machine == "beta")
        .expect("beta listed");
    assert!(beta.up && beta.connects == 1 && beta.downs == 0, "{beta:?}");
    // Hello, proof, call out; hello, proof, answer in (at least).
    assert!(beta.frames_out >= 3 && beta.frames_in >= 3, "{beta:?}");
    assert!(beta.bytes_out > 0 && beta.bytes_in > 0, "{beta:?}");

    // Silent for 3 intervals: down, counted, and its history kept.
    a.core.handle_timeout(now + ms(1000));
    a.core.handle_timeout(now + ms(3100));
    let views = a.core.peer_views(now + ms(3100));
    let beta = views
        .iter()
        .find(|v| v.machine == "beta")
        .expect("beta still listed");
    assert!(!beta.up && beta.downs == 1, "{beta:?}");
    assert!(beta.frames_in >= 3, "traffic survives the close: {beta:?}");
    assert_eq!(a.core.protocol_errors(), &[("silent", 1)]);
}

/// Like [`carry`], but the socket takes at most `limit` bytes, in whole
/// frames: a slow reader.
fn carry_some(
    from: &mut Side,
    fc: ConnId,
    to: &mut Side,
    tc: ConnId,
    now: Instant,
    limit: usize,
) -> usize {
    from.core.pump_snapshots(now);
    let bytes = from.core.unsent(fc).to_vec();
    let mut taken = 0;
    let mut decoder = FrameDecoder::new(crate::codec::DEFAULT_MAX_FRAME);
    let mut msgs = Vec::new();
    while taken < limit && taken < bytes.len() {
        let len = crate::codec::HEADER_LEN
            + u32::from_be_bytes(bytes[taken..taken + 4].try_into().unwrap()) as usize;
        decoder.fill(&bytes[taken..taken + len]);
        msgs.push(decoder.next_frame().unwrap().unwrap().to_vec());
        taken += len;
    }
    from.core.advance(fc, taken);
    while from.core.poll_dirty().is_some() {}
    if taken > 0 {
        to.core.handle_heard(tc, taken, now);
    }
    for payload in &msgs {
        let msg = crate::codec::decode(payload).expect("decodable");
        to.core.handle_message(tc, msg, now);
    }
    taken
}

/// The objects `side`'s events say were created, and the count of the
/// `snapshot_end`, if one came.
fn snapshot_heard(
    side: &mut Side,
    created: &mut std::collections::HashSet<ObjectId>,
) -> Option<u64> {
    let mut synced = None;
    for e in side.events() {
        match e {
            Event::Notice {
                notice: Notice::Created { id, .. },
                ..
            } => {
                created.insert(id);
            }
            Event::Synced { objects, .. } => synced = Some(objects),
            _ => {}
        }
    }
    synced
}

/// At an ordinary start, each node dialling the other, alpha can come up
/// on beta's dial and start its snapshot there before its own dial lands
/// and wins the tie. The snapshot then streams to its end on the retired
/// connection, in order with the broadcasts that go out there too,
/// however long past the grace that takes: neither side closes it before
/// (alpha while it still has some to write, beta until alpha's
/// `snapshot_end` came). Once both snapshots ended, both close it.
#[test]
fn a_snapshot_on_the_connection_that_loses_the_tie_finishes_there() {
    let now = Instant::now();
    let (mut a, mut b) = dialling_each_other(now);
    let rev = connect(&mut b, 0, &mut a, 40002, now);
    let by_beta = Link {
        ca: rev.cb,
        cb: rev.ca,
    };
    pump(&mut a, &mut b, &by_beta, now);
    let up = peer_up(&mut a, "beta").expect("beta came up");
    let n = 20_000;
    a.core.send_snapshot(
        &MachineId::new("beta"),
        up,
        pongs(n),
        Vec::new(),
        Vec::new(),
    );
    let b_up = peer_up(&mut b, "alpha").expect("alpha came up");
    let alpha = MachineId::new("alpha");
    b.core
        .send_snapshot(&alpha, b_up, pongs(0), Vec::new(), Vec::new());
    let by_alpha = connect(&mut a, 0, &mut b, 40001, now);
    pump(&mut a, &mut b, &by_alpha, now);
    assert!(a.is_retired(by_beta.ca) && b.is_retired(by_beta.cb));
    assert_eq!(a.active("beta"), Some(by_alpha.ca));
    // The loser's socket takes 2 KiB every 50 ms: seconds past the grace.
    let mut created = std::collections::HashSet::new();
    let mut t = now;
    let synced = loop {
        t += ms(50);
        assert!(t < now + Duration::from_secs(120), "never finished");
        a.core.handle_timeout(t);
        b.core.handle_timeout(t);
        pump(&mut a, &mut b, &by_alpha, t);
        carry_some(&mut a, by_beta.ca, &mut b, by_beta.cb, t, 2 << 10);
        carry(&mut b, by_beta.cb, &mut a, by_beta.ca, t);
        let synced = snapshot_heard(&mut b, &mut created);
        for (side, conn) in [(&a, by_beta.ca), (&b, by_beta.cb)] {
            assert!(
                side.core.is_open(conn),
                "closed after {:?} with {} of {n} objects sent",
                t - now,
                created.len()
            );
        }
        if let Some(synced) = synced {
            break synced;
        }
    };
    assert!(
        t - now > RETIRE_GRACE,
        "done within the grace: proves nothing"
    );
    assert_eq!((created.len() as u64, synced), (n, n));
    // Done and quiet, it closes on both sides; beta stays up.
    let later = t + RETIRE_CHECK * 2;
    run(&mut a, &mut b, &[&by_alpha, &by_beta], t, later);
    assert!(!a.core.is_open(by_beta.ca) && !b.core.is_open(by_beta.cb));
    assert!(peer_downs(&a.events()).is_empty());
    assert!(peer_downs(&b.events()).is_empty());
}

/// The connection a machine is on closes while a spare (the retired one
/// of a tie) is still there: the spare takes over without the machine
/// going down, and our snapshot is owed again, on the spare (what went out
/// on the closed one may not have arrived).
#[test]
fn a_spare_that_takes_over_is_owed_the_snapshot_again() {
    let now = Instant::now();
    let (mut a, mut b, by_alpha, by_beta) = cross_dialled(now);
    synced(&mut a, &mut b, &by_alpha, now);
    let up = peer_up(&mut a, "beta").expect("beta came up");
    let beta = MachineId::new("beta");
    let send = |a: &mut Side| {
        a.core
            .send_snapshot(&beta, up, pongs(10), Vec::new(), Vec::new())
    };
    send(&mut a);
    let t = now + ms(10);
    a.core
        .handle_closed(by_alpha.ca, CloseReason::PeerClosed, t);
    b.core
        .handle_closed(by_alpha.cb, CloseReason::PeerClosed, t);
    assert_eq!(a.active("beta"), Some(by_beta.ca));
    let events = a.events();
    assert!(peer_downs(&events).is_empty());
    let owed = events.iter().find_map(|e| match e {
        Event::SnapshotOwed { machine, up } if machine.as_str() == "beta" => Some(*up),
        _ => None,
    });
    assert_eq!(owed, Some(up), "owed for the same coming up");
    // beta, promoting its spare too, sends its snapshot again: until its
    // end comes, beta's is not over.
    assert!(!a.core.synced.contains(&MachineId::new("beta")));
    send(&mut a);
    assert!(a.core.streaming.contains(&by_beta.ca));
    let mut created = std::collections::HashSet::new();
    pump(&mut a, &mut b, &by_beta, t);
    assert_eq!(snapshot_heard(&mut b, &mut created), Some(10));
    assert_eq!(created.len(), 10);
}

/// Two machines claiming one `node_prefix` whose handshakes overlap (each
/// hello checked while the other was not yet connected) are not both
/// admitted: the prefix is checked again when the proof verifies, and
/// the second is refused as at the hello.
#[test]
fn overlapping_handshakes_with_one_prefix_admit_one() {
    let now = Instant::now();
    let mut b = side("beta", 2, &[], now);
    let x = b.core.handle_accepted(addr(42001), now);
    let y = b.core.handle_accepted(addr(42002), now);
    assert_eq!(
        b.core
            .handle_message(x, hello_offering("x", 7, VERSION, None), now),
        Status::Open
    );
    assert_eq!(
        b.core
            .handle_message(y, hello_offering("y", 7, VERSION, None), now),
        Status::Open
    );
    let (px, py) = (
        proof_msg(&b, x, "x", 7, &test_key()),
        proof_msg(&b, y, "y", 7, &test_key()),
    );
    assert_eq!(b.core.handle_message(x, px, now), Status::Greeted);
    assert_eq!(b.core.handle_message(y, py, now), Status::Closed);
    assert_eq!(b.active("x"), Some(x));
    assert_eq!(b.active("y"), None);
    let ups = b
        .events()
        .into_iter()
        .filter(|e| matches!(e, Event::PeerUp { .. }))
        .count();
    assert_eq!(ups, 1);
}

/// Two `--peer` addresses that reach one node (an alias and an address):
/// the second connection collides with the first, and its dial slot is
/// then covered by the first connection instead of redialling into the
/// same refusal for ever. The first stays up.
#[test]
fn a_second_address_of_a_connected_node_is_not_redialled() {
    let now = Instant::now();
    let mut a = side("alpha", 1, &["127.0.0.1:9002", "localhost:9002"], now);
    let mut b = side("beta", 2, &[], now);
    a.core.handle_timeout(now);
    assert_eq!(a.dials(), vec![0, 1]);
    let first = connect(&mut a, 0, &mut b, 40001, now);
    pump(&mut a, &mut b, &first, now);
    let second = connect(&mut a, 1, &mut b, 40002, now);
    pump(&mut a, &mut b, &second, now);
    assert!(!a.core.is_open(second.ca));
    assert_eq!(a.active("beta"), Some(first.ca));
    let later = now + Duration::from_secs(30);
    run(&mut a, &mut b, &[&first], now, later);
    assert!(a.dials().is_empty(), "the second address was dialled again");
    assert!(a.core.is_open(first.ca));
    // Once the first connection goes, the second address may serve.
    a.core
        .handle_closed(first.ca, CloseReason::PeerClosed, later);
    run(&mut a, &mut b, &[], later, later + Duration::from_secs(5));
    assert!(a.dials().contains(&1), "{:?}", a.dials());
}

/// A peer that never ends a directory snapshot (a client without
/// `snapshot_end`) keeps a retired connection at most RETIRE_LONGEST.
#[test]
fn a_retired_connection_waits_for_a_snapshot_end_but_not_for_ever() {
    let now = Instant::now();
    let (mut a, mut b, by_alpha, by_beta) = cross_dialled(now);
    let graced = now + RETIRE_GRACE + RETIRE_CHECK * 2;
    run(&mut a, &mut b, &[&by_alpha, &by_beta], now, graced);
    assert!(
        a.core.is_open(by_beta.ca),
        "closed before beta's snapshot ended"
    );
    let longest = now + RETIRE_LONGEST + RETIRE_CHECK * 2;
    run(&mut a, &mut b, &[&by_alpha, &by_beta], graced, longest);
    assert!(!a.core.is_open(by_beta.ca));
    assert!(a.core.is_open(by_alpha.ca));
}

/// A retired connection whose reading is paused (the interpreter is
/// behind) is not closed, whatever else says it may be: bytes wait unread
/// in the kernel, and a close would reset the connection and lose them.
/// Read again, it closes.
#[test]
fn a_paused_retired_connection_is_not_closed() {
    let now = Instant::now();
    let (mut a, mut b, by_alpha, by_beta) = cross_dialled(now);
    synced(&mut a, &mut b, &by_alpha, now);
    a.core.set_paused(by_beta.ca, true, now);
    let graced = now + RETIRE_GRACE + RETIRE_CHECK * 2;
    run(&mut a, &mut b, &[&by_alpha, &by_beta], now, graced);
    assert!(a.core.is_open(by_beta.ca), "closed while paused");
    a.core.set_paused(by_beta.ca, false, graced);
    run(
        &mut a,
        &mut b,
        &[&by_alpha],
        graced,
        graced + RETIRE_CHECK * 2,
    );
    assert!(!a.core.is_open(by_beta.ca));
}
