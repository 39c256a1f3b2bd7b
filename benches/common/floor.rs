//! The blocking floor: a std `TcpStream` echo of avm's call and reply frames.
//!
//! ```text
//!  client (caller's thread)                echo thread "floor/echo"
//!   write(call frame) ──── loopback TCP, TCP_NODELAY ───▶ read header + payload
//!   read(reply frame) ◀─────────────────────────────────── write(reply frame), one write
//! ```
//!
//! The cheapest thing that moves the same bytes: blocking reads, no
//! parsing, no queues. Shared by `benches/round_trip.rs` and
//! `examples/demo_vs_floor.rs` (included with `#[path]`).

use std::io::{self, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use avm::codec::{self, Call, CallResponse, Message};
use avm::vm::{ChainId, ObjectId, Val};

/// The `call` and `call_response` frames a remote call with a `Nat` input
/// puts on the wire (the ids are the sizes real ones have).
pub fn frames() -> (Vec<u8>, Vec<u8>) {
    let mut call = Vec::new();
    codec::encode(
        &mut call,
        &Message::Call(Call {
            request_id: 1 << 32,
            target: ObjectId(0x2328_0000_0000_0001),
            input: Val::Nat(1234),
            sender: ObjectId(0),
            sender_machine: "alpha".into(),
            chain: Some(ChainId(0x2329_0000_0000_0002)),
        }),
    )
    .unwrap();
    let mut reply = Vec::new();
    codec::encode(
        &mut reply,
        &Message::CallResponse(CallResponse {
            request_id: 1 << 32,
            result: Ok(Val::Nat(1234)),
        }),
    )
    .unwrap();
    (call, reply)
}

/// A connected client and its echo thread.
pub struct Floor {
    tx: TcpStream,
    rx: BufReader<TcpStream>,
    call: Vec<u8>,
    reply: Vec<u8>,
    server: Option<JoinHandle<()>>,
}

impl Floor {
    pub fn start() -> Floor {
        let (call, reply) = frames();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let answer = reply.clone();
        let server = std::thread::Builder::new()
            .name("floor/echo".into())
            .spawn(move || {
                let (stream, _) = listener.accept().unwrap();
                stream.set_nodelay(true).unwrap();
                // Ends when the client shuts the connection down.
                let _ = echo_frames(stream, &answer);
            })
            .unwrap();
        let tx = TcpStream::connect(addr).unwrap();
        tx.set_nodelay(true).unwrap();
        let rx = BufReader::new(tx.try_clone().unwrap());
        Floor {
            tx,
            rx,
            call,
            reply,
            server: Some(server),
        }
    }

    /// One call frame out, one reply frame back.
    pub fn round_trip(&mut self) {
        self.tx.write_all(&self.call).unwrap();
        self.read_reply();
    }

    fn read_reply(&mut self) {
        self.rx.read_exact(&mut self.reply).unwrap();
    }

    /// `n` round trips timed one by one, in microseconds.
    pub fn latencies(&mut self, n: usize) -> Vec<f64> {
        (0..n)
            .map(|_| {
                let start = Instant::now();
                self.round_trip();
                start.elapsed().as_nanos() as f64 / 1e3
            })
            .collect()
    }

    /// `n` round trips with up to `window` call frames outstanding.
    #[allow(dead_code)] // the bench's; the example only needs latencies
    pub fn pipelined(&mut self, n: u64, window: u64) -> Duration {
        let start = Instant::now();
        let mut sent = 0;
        while sent < n.min(window) {
            self.tx.write_all(&self.call).unwrap();
            sent += 1;
        }
        for _ in 0..n {
            self.read_reply();
            if sent < n {
                self.tx.write_all(&self.call).unwrap();
                sent += 1;
            }
        }
        start.elapsed()
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        let _ = self.tx.shutdown(Shutdown::Both);
        if let Some(server) = self.server.take() {
            let _ = server.join();
        }
    }
}

/// Reads whole frames (length header, then payload) and answers each with
/// `reply` in one write.
fn echo_frames(stream: TcpStream, reply: &[u8]) -> io::Result<()> {
    let mut tx = stream.try_clone()?;
    let mut rx = BufReader::new(stream);
    let mut payload = Vec::new();
    loop {
        let mut head = [0u8; codec::HEADER_LEN];
        rx.read_exact(&mut head)?;
        payload.resize(u32::from_be_bytes(head) as usize, 0);
        rx.read_exact(&mut payload)?;
        tx.write_all(reply)?;
    }
}
