//! The design's floor: avm's thread structure with nothing inside it.
//!
//! ```text
//!  bench thread      alpha reactor           beta reactor       beta "interpreter"
//!  (alpha's interp)  mio, one socket         mio, one socket    thread: echo
//!   push call ─Mutex<Vec>+Waker─▶ write ─TCP─▶ read ─Mutex<Vec>+unpark─▶ push reply
//!   take reply ◀─Mutex<Vec>+unpark─ read ◀─TCP─ write ◀─Mutex<Vec>+Waker─┘
//! ```
//!
//! Four threads, four queue hops and two socket hops per round trip, the
//! same as `remote/1`, and the same hand-off rules as avm's
//! (`src/reactor/handoff.rs`): each side appends a batch under a lock; the
//! waker is rung only when the reactor has said it is about to block
//! (store-buffering fences); the interpreter is woken with `unpark`; both
//! yield-spin for `spin` after activity before they block, the
//! interpreter only when more than one CPU is usable. What is missing is
//! everything avm does with the bytes: no codec, no vm, no request table,
//! no timers. So `remote/1 / design/1` is what our code costs, and
//! `design/1 / floor/1` is what the two-threads-per-node design costs on
//! this machine before any of it.

use std::io::{self, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};

const SOCKET: Token = Token(0);
const WAKER: Token = Token(1);

/// One node's half of the hand-off: frames to send one way, a count of
/// frames received the other.
struct Handoff {
    outgoing: Mutex<Vec<u8>>,
    waker: Waker,
    reactor_sleeping: AtomicBool,
    received: Mutex<usize>,
    interpreter: OnceLock<Thread>,
    stop: AtomicBool,
}

impl Handoff {
    /// Interpreter side: queue `n` copies of `frame` as one batch (as
    /// avm's interpreter hands over a batch of commands) and wake the
    /// reactor if it sleeps.
    fn send(&self, frame: &[u8], n: usize) {
        let mut outgoing = self.outgoing.lock().unwrap();
        for _ in 0..n {
            outgoing.extend_from_slice(frame);
        }
        drop(outgoing);
        // ORDERING: pairs with the fence in the reactor's sleep check.
        fence(Ordering::SeqCst);
        if self.reactor_sleeping.load(Ordering::Relaxed) {
            self.waker.wake().unwrap();
        }
    }

    /// Interpreter side: waits for at least one frame; returns how many.
    fn receive(&self, spin: Duration) -> usize {
        let spin_until = Instant::now() + spin;
        loop {
            let n = std::mem::take(&mut *self.received.lock().unwrap());
            if n > 0 || self.stop.load(Ordering::Relaxed) {
                return n;
            }
            if Instant::now() < spin_until {
                std::thread::yield_now();
            } else {
                std::thread::park();
            }
        }
    }
}

/// Two such nodes connected on loopback; the caller is alpha's interpreter.
pub struct DesignFloor {
    alpha: Arc<Handoff>,
    beta: Arc<Handoff>,
    call: Vec<u8>,
    interpreter_spin: Duration,
    threads: Vec<JoinHandle<()>>,
}

impl DesignFloor {
    /// `spin` as avm's `NodeConfig::spin`.
    pub fn start(spin: Duration) -> DesignFloor {
        let (call, reply) = crate::floor::frames();
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let interpreter_spin = if cpus > 1 { spin } else { Duration::ZERO };
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (b, _) = listener.accept().unwrap();
        let mut threads = Vec::new();
        let alpha = spawn_reactor("design/alpha", a, reply.len(), spin, &mut threads);
        let beta = spawn_reactor("design/beta", b, call.len(), spin, &mut threads);
        alpha.interpreter.set(std::thread::current()).unwrap();
        let echo = Arc::clone(&beta);
        threads.push(
            std::thread::Builder::new()
                .name("design/echo".into())
                .spawn(move || {
                    echo.interpreter.set(std::thread::current()).unwrap();
                    loop {
                        let n = echo.receive(interpreter_spin);
                        if echo.stop.load(Ordering::Relaxed) {
                            return;
                        }
                        echo.send(&reply, n);
                    }
                })
                .unwrap(),
        );
        DesignFloor {
            alpha,
            beta,
            call,
            interpreter_spin,
            threads,
        }
    }

    /// `n` round trips timed one by one, in microseconds.
    pub fn latencies(&mut self, n: usize) -> Vec<f64> {
        (0..n)
            .map(|_| {
                let start = Instant::now();
                self.alpha.send(&self.call, 1);
                assert_eq!(self.alpha.receive(self.interpreter_spin), 1);
                start.elapsed().as_nanos() as f64 / 1e3
            })
            .collect()
    }

    /// Round trips per second with `k` calls in flight for `window`: each
    /// reply that comes back sends a new call, in batches as avm's
    /// interpreter sends them (`examples/pair_throughput`'s floor). Waits
    /// for the last calls' replies before it answers.
    #[allow(dead_code)] // the pair example's; the benches time latencies
    pub fn throughput(&mut self, k: usize, window: Duration) -> f64 {
        let spin = self.interpreter_spin;
        self.alpha.send(&self.call, k);
        let start = Instant::now();
        let mut answered = 0;
        while start.elapsed() < window {
            let n = self.alpha.receive(spin);
            answered += n;
            self.alpha.send(&self.call, n);
        }
        let rate = answered as f64 / start.elapsed().as_secs_f64();
        let mut in_flight = k;
        while in_flight > 0 {
            in_flight -= self.alpha.receive(spin);
        }
        rate
    }
}

impl Drop for DesignFloor {
    fn drop(&mut self) {
        for h in [&self.alpha, &self.beta] {
            h.stop.store(true, Ordering::Relaxed);
            h.waker.wake().unwrap();
            if let Some(t) = h.interpreter.get() {
                t.unpark();
            }
        }
        for t in self.threads.drain(..) {
            t.join().unwrap();
        }
    }
}

/// A reactor thread for one socket whose incoming frames are all
/// `frame_len` bytes long.
fn spawn_reactor(
    name: &str,
    stream: std::net::TcpStream,
    frame_len: usize,
    spin: Duration,
    threads: &mut Vec<JoinHandle<()>>,
) -> Arc<Handoff> {
    stream.set_nodelay(true).unwrap();
    stream.set_nonblocking(true).unwrap();
    let mut stream = TcpStream::from_std(stream);
    let poll = Poll::new().unwrap();
    poll.registry()
        .register(&mut stream, SOCKET, Interest::READABLE | Interest::WRITABLE)
        .unwrap();
    let handoff = Arc::new(Handoff {
        outgoing: Mutex::new(Vec::with_capacity(4096)),
        waker: Waker::new(poll.registry(), WAKER).unwrap(),
        reactor_sleeping: AtomicBool::new(false),
        received: Mutex::new(0),
        interpreter: OnceLock::new(),
        stop: AtomicBool::new(false),
    });
    let h = Arc::clone(&handoff);
    threads.push(
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || reactor_loop(poll, stream, &h, frame_len, spin).unwrap())
            .unwrap(),
    );
    handoff
}

/// avm's loop shape: poll (without blocking while spinning), take the
/// interpreter's frames, write, read to `WouldBlock`, hand over what
/// arrived; yield when a spinning iteration found nothing.
fn reactor_loop(
    mut poll: Poll,
    mut stream: TcpStream,
    h: &Handoff,
    frame_len: usize,
    spin: Duration,
) -> io::Result<()> {
    let mut events = Events::with_capacity(16);
    let mut out = Vec::with_capacity(4096);
    let mut written = 0;
    let mut inbuf = vec![0u8; 64 << 10];
    let mut buffered = 0;
    let mut spin_until = Instant::now();
    while !h.stop.load(Ordering::Relaxed) {
        let spinning = Instant::now() < spin_until;
        let timeout = if spinning {
            Some(Duration::ZERO)
        } else {
            h.reactor_sleeping.store(true, Ordering::Relaxed);
            // ORDERING: pairs with the fence in `Handoff::send`.
            fence(Ordering::SeqCst);
            if h.outgoing.lock().unwrap().is_empty() {
                None
            } else {
                Some(Duration::ZERO)
            }
        };
        poll.poll(&mut events, timeout)?;
        h.reactor_sleeping.store(false, Ordering::Relaxed);
        let mut active = !events.is_empty();
        {
            let mut outgoing = h.outgoing.lock().unwrap();
            if !outgoing.is_empty() {
                out.append(&mut outgoing);
                active = true;
            }
        }
        // What the socket does not take now waits for the next round
        // (a writable event wakes a blocked poll).
        while written < out.len() {
            match stream.write(&out[written..]) {
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        if written == out.len() {
            out.clear();
            written = 0;
        }
        let mut frames = 0;
        loop {
            match stream.read(&mut inbuf[buffered..]) {
                Ok(0) => return Ok(()),
                Ok(n) => buffered += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
            let whole = buffered / frame_len;
            frames += whole;
            inbuf.copy_within(whole * frame_len..buffered, 0);
            buffered -= whole * frame_len;
        }
        if frames > 0 {
            *h.received.lock().unwrap() += frames;
            if let Some(t) = h.interpreter.get() {
                t.unpark();
            }
            active = true;
        }
        if active {
            spin_until = Instant::now() + spin;
        } else if spinning {
            std::thread::yield_now();
        }
    }
    Ok(())
}
