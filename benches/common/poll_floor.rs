//! The polling floor: the blocking floor's echo with both ends polling
//! non-blocking sockets instead of sleeping in `read`.
//!
//! ```text
//!  client (caller's thread)                 echo thread "floor/poll-echo"
//!   write(call) ─── loopback TCP, TCP_NODELAY ───▶ read until WouldBlock, yield, again
//!   read until WouldBlock, yield ◀──────────────── write(reply)
//! ```
//!
//! No thread is ever woken, so no idle vCPU is either: this is the cost of
//! the two socket hops alone, the physical floor under any design that
//! moves these bytes over loopback TCP. Between empty reads each side
//! calls `yield_now`, which returns at once when it has its CPU to itself
//! and hands the CPU over when it shares one (`taskset -c 0`).

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::Instant;

pub struct PollFloor {
    stream: TcpStream,
    call: Vec<u8>,
    reply: Vec<u8>,
    server: Option<JoinHandle<()>>,
}

impl PollFloor {
    pub fn start() -> PollFloor {
        let (call, reply) = crate::floor::frames();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (call_len, answer) = (call.len(), reply.clone());
        let server = std::thread::Builder::new()
            .name("floor/poll-echo".into())
            .spawn(move || {
                let (stream, _) = listener.accept().unwrap();
                stream.set_nodelay(true).unwrap();
                stream.set_nonblocking(true).unwrap();
                let mut buf = vec![0u8; call_len];
                // Ends when the client shuts the connection down.
                while read_polling(&stream, &mut buf).is_ok() {
                    (&stream).write_all(&answer).unwrap();
                }
            })
            .unwrap();
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_nodelay(true).unwrap();
        stream.set_nonblocking(true).unwrap();
        PollFloor {
            stream,
            call,
            reply,
            server: Some(server),
        }
    }

    /// `n` round trips timed one by one, in microseconds.
    pub fn latencies(&mut self, n: usize) -> Vec<f64> {
        (0..n)
            .map(|_| {
                let start = Instant::now();
                (&self.stream).write_all(&self.call).unwrap();
                read_polling(&self.stream, &mut self.reply).unwrap();
                start.elapsed().as_nanos() as f64 / 1e3
            })
            .collect()
    }
}

impl Drop for PollFloor {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Both);
        if let Some(server) = self.server.take() {
            let _ = server.join();
        }
    }
}

/// Fills `buf` from a non-blocking socket, yielding between empty reads.
/// `Err` at end of stream.
fn read_polling(stream: &TcpStream, buf: &mut [u8]) -> io::Result<()> {
    let mut got = 0;
    while got < buf.len() {
        match (&*stream).read(&mut buf[got..]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
