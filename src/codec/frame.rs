//! Framing: the length prefix, both ways.
//!
//! ```text
//!  0        4                                4 + N
//!  +--------+--------------------------------+
//!  | N (BE) | N bytes: one UTF-8 JSON object |   1 <= N <= max_frame
//!  +--------+--------------------------------+
//! ```
//!
//! [`FrameDecoder`] owns one connection's read buffer. The caller loops:
//! `read_buf` -> read the socket into it -> `commit(n)` -> `next_frame`
//! until `Ok(None)`. Payloads come back borrowed from the buffer, never
//! copied. The buffer:
//!
//! ```text
//!  buf: [ consumed | received, not yet a frame | spare (read_buf) ]
//!       0        start                        end               buf.len()
//! ```
//!
//! Invariants (checked by `fuzzing::frame_decoder` under test and fuzz):
//! - `0 <= start <= end <= buf.len()`, and `start == end` implies both 0.
//! - while the caller drains `next_frame` before each `read_buf`,
//!   `buf.len() <= max_frame + HEADER_LEN`, so a peer can
//!   make us hold at most one maximal frame; memory grows by doubling only
//!   as bytes actually arrive, so a 4-byte header alone never costs 16 MiB.
//! - a read that fills all the spare space means more bytes are waiting:
//!   the buffer then doubles, up to [`READ_AHEAD`] (and never past
//!   `max_frame + HEADER_LEN`), so a busy connection is read in a few
//!   large reads rather than one per few kilobytes. It starts small
//!   because a connection that has not said who it is gets little.
//!   What it grew goes back when the node goes idle
//!   ([`FrameDecoder::shrink_when_idle`]).
//! - compaction moves the unconsumed tail to 0 only when `start` has passed
//!   half the buffer or the frame in progress would not fit: each byte is
//!   moved O(1) times on average, never quadratic on small frames.
//! - the buffer gives memory back with hysteresis: when it empties while
//!   holding more than [`SHRINK_ABOVE`] bytes (a burst of big frames), it
//!   shrinks back to its initial size; steady traffic of ordinary frames
//!   never gets near that size, so it never reallocates.
//! - a bad header (N = 0, N > max) is reported by the `next_frame` call
//!   that first sees its 4 bytes; the decoder is then poisoned.
//!
//! Encoding reserves the 4 header bytes in the caller's `Vec<u8>`,
//! serializes the JSON after them and patches the length in, so a frame
//! leaves in one write with no intermediate buffer.

use std::io::Write;

use super::error::{EncodeError, FrameError};

/// Bytes in a frame header.
pub const HEADER_LEN: usize = 4;
/// Default maximum payload length (16 MiB).
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;
/// First buffer size: enough for a typical burst of small frames.
const INITIAL_BUF: usize = 8 * 1024;
/// How far a busy connection's buffer grows for reading ahead: a read
/// per 64 KiB rather than one per 4 KiB (the buffer before the hello) cut
/// a node pair's `recvfrom` calls six-fold at 1,024 calls in flight.
const READ_AHEAD: usize = 64 * 1024;
/// An empty read buffer larger than this shrinks back to [`INITIAL_BUF`].
pub const SHRINK_ABOVE: usize = 1 << 20;

/// A decoder's first buffer: [`INITIAL_BUF`], or one maximal frame if
/// that is smaller (a connection before its hello).
fn first_size(max_frame: usize) -> usize {
    INITIAL_BUF.min(max_frame + HEADER_LEN)
}

/// Splits one connection's byte stream into frame payloads.
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// First byte not yet returned in a frame.
    start: usize,
    /// End of received bytes.
    end: usize,
    max_frame: usize,
    /// The last read filled all the spare space `read_buf` gave.
    filled: bool,
    /// Set by the first bad header; every later `next_frame` repeats it.
    poisoned: Option<FrameError>,
}

/// Offsets only: the buffer can be 16 MiB of payload.
impl std::fmt::Debug for FrameDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameDecoder")
            .field("start", &self.start)
            .field("end", &self.end)
            .field("capacity", &self.buf.len())
            .field("max_frame", &self.max_frame)
            .field("filled", &self.filled)
            .field("poisoned", &self.poisoned)
            .finish()
    }
}

impl FrameDecoder {
    /// A decoder refusing payloads over `max_frame` bytes (clamped to
    /// `1..=u32::MAX`, the header's range).
    pub fn new(max_frame: usize) -> FrameDecoder {
        let max_frame = max_frame.clamp(1, u32::MAX as usize);
        FrameDecoder {
            buf: vec![0; first_size(max_frame)],
            start: 0,
            end: 0,
            max_frame,
            filled: false,
            poisoned: None,
        }
    }

    /// The maximum payload length.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Raises the maximum payload length for every frame whose header has
    /// not been checked yet (a connection starts small and is trusted with
    /// more once it has said who it is). Never lowers it: the buffer may
    /// already hold a frame of the old size.
    pub fn raise_max_frame(&mut self, max_frame: usize) {
        self.max_frame = self.max_frame.max(max_frame.min(u32::MAX as usize));
    }

    /// Bytes received but not yet returned as frames (non-zero at EOF
    /// means a truncated frame).
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Writable spare space at the end of the buffer, never empty.
    ///
    /// Compacts or grows as needed; grows toward the size of a frame whose
    /// header has been seen, never beyond `max_frame + HEADER_LEN`, provided
    /// the caller drained [`next_frame`](Self::next_frame) to `Ok(None)`
    /// first (without draining, whole frames can fill the buffer, and it
    /// then doubles to stay non-empty: that is the caller's memory, not the
    /// peer's). After an error the buffered bytes are dropped.
    pub fn read_buf(&mut self) -> &mut [u8] {
        if self.poisoned.is_some() {
            // Nothing after a bad header is ever parsed; keep the buffer.
            self.start = 0;
            self.end = 0;
            return &mut self.buf[..];
        }
        if self.start == self.end && self.buf.len() > SHRINK_ABOVE {
            // A burst is over: give its memory back.
            self.shrink_to_first_size();
        }
        let need = self.need();
        let len = self.buf.len();
        if self.start > 0 && (self.start >= len / 2 || self.start + need > len) {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let ahead = READ_AHEAD.min(self.max_frame + HEADER_LEN);
        if self.end == len {
            // Double, but not past the frame in progress: memory follows the
            // bytes that arrived, not the bytes a header promises. A valid
            // header's `need` is at most `max_frame + HEADER_LEN`.
            let target = if need > len {
                need.min(len * 2)
            } else {
                len * 2
            };
            self.buf.resize(target, 0);
        } else if self.filled && len < ahead {
            self.buf.resize((len * 2).min(ahead), 0);
        }
        self.filled = false;
        &mut self.buf[self.end..]
    }

    /// Shrinks a drained buffer back to its first size (what reading
    /// ahead or a big frame grew): for a node gone idle. While traffic
    /// flows the buffer keeps its size; with bytes waiting, nothing moves.
    pub fn shrink_when_idle(&mut self) {
        let drained = self.start == self.end && self.poisoned.is_none();
        if drained && self.buf.len() > first_size(self.max_frame) {
            self.shrink_to_first_size();
        }
    }

    /// The buffer, drained, goes back to the size a new decoder starts
    /// with (the caller checked that nothing waits in it).
    fn shrink_to_first_size(&mut self) {
        self.buf.truncate(first_size(self.max_frame));
        self.buf.shrink_to_fit();
        self.filled = false;
    }

    /// Records that the caller wrote `n` bytes at the start of the last
    /// [`read_buf`](Self::read_buf).
    ///
    /// # Panics
    /// If `n` exceeds the spare space `read_buf` returned.
    pub fn commit(&mut self, n: usize) {
        assert!(n <= self.buf.len() - self.end, "commit past read_buf");
        self.end += n;
        self.filled = self.end == self.buf.len();
    }

    /// Copies as much of `bytes` as one socket read could deliver into
    /// the buffer (`read_buf` + `commit`) and returns how many it took.
    /// For sources that are not sockets: tests, fuzzing, benches.
    pub fn fill(&mut self, bytes: &[u8]) -> usize {
        let spare = self.read_buf();
        let n = spare.len().min(bytes.len());
        spare[..n].copy_from_slice(&bytes[..n]);
        self.commit(n);
        n
    }

    /// The next complete frame's payload, borrowed from the buffer;
    /// `Ok(None)` means "need more bytes".
    ///
    /// After an `Err` the decoder is poisoned: it returns the same error
    /// forever (the caller closes the connection).
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, FrameError> {
        if let Some(e) = self.poisoned {
            return Err(e);
        }
        let Some(len) = self.header() else {
            return Ok(None);
        };
        let len = match self.check(len) {
            Ok(len) => len,
            Err(e) => {
                self.poisoned = Some(e);
                return Err(e);
            }
        };
        if self.end - self.start < HEADER_LEN + len {
            return Ok(None);
        }
        let payload = self.start + HEADER_LEN..self.start + HEADER_LEN + len;
        self.start = payload.end;
        if self.start == self.end {
            // The bytes stay put until the next read_buf; only the offsets
            // rewind, so the next read starts at 0 with no copy.
            self.start = 0;
            self.end = 0;
        }
        Ok(Some(&self.buf[payload]))
    }

    /// Size of the buffer (for the fuzzing invariants).
    pub(crate) fn buf_len(&self) -> usize {
        self.buf.len()
    }

    /// Bytes the buffer holds from the allocator (`/health`).
    pub(crate) fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// The length in the header at `start`, once its 4 bytes are here.
    fn header(&self) -> Option<u32> {
        if self.end - self.start < HEADER_LEN {
            return None;
        }
        let head = &self.buf[self.start..self.start + HEADER_LEN];
        Some(u32::from_be_bytes([head[0], head[1], head[2], head[3]]))
    }

    fn check(&self, len: u32) -> Result<usize, FrameError> {
        match len as usize {
            0 => Err(FrameError::Empty),
            n if n > self.max_frame => Err(FrameError::TooLarge {
                len,
                max: self.max_frame,
            }),
            n => Ok(n),
        }
    }

    /// Bytes from `start` the frame in progress needs: the header, or the
    /// whole frame once a valid header is here.
    fn need(&self) -> usize {
        match self.header().map(|len| self.check(len)) {
            Some(Ok(len)) => HEADER_LEN + len,
            _ => HEADER_LEN,
        }
    }
}

/// Appends one frame to `out`: reserves the header, lets `f` append the
/// payload, patches the length. On any error `out` is truncated back, so
/// it holds exactly what it held before.
pub(crate) fn frame_with(
    out: &mut Vec<u8>,
    max_frame: usize,
    f: impl FnOnce(&mut Vec<u8>) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_LEN]);
    let res = f(out).and_then(|()| {
        let len = out.len() - start - HEADER_LEN;
        let max = max_frame.min(u32::MAX as usize);
        match u32::try_from(len) {
            Ok(0) => Err(EncodeError::Empty),
            Ok(n) if len <= max => Ok(n),
            _ => Err(EncodeError::TooLarge { len, max }),
        }
    });
    match res {
        Ok(n) => {
            out[start..start + HEADER_LEN].copy_from_slice(&n.to_be_bytes());
            Ok(())
        }
        Err(e) => {
            out.truncate(start);
            Err(e)
        }
    }
}

/// Appends one frame whose payload `f` writes (for instance
/// `|w| serde_json::to_writer(w, &value)`), checked against
/// [`DEFAULT_MAX_FRAME`]. On error `out` is left exactly as it was.
pub fn encode_with(
    out: &mut Vec<u8>,
    f: impl FnOnce(&mut Vec<u8>) -> serde_json::Result<()>,
) -> Result<(), EncodeError> {
    frame_with(out, DEFAULT_MAX_FRAME, |w| {
        f(w).map_err(|_| EncodeError::Serialize)
    })
}

/// Appends one frame with the raw payload bytes `payload` (tests and tools:
/// nothing checks that it is JSON). On error `out` is left as it was.
pub fn encode_raw(out: &mut Vec<u8>, payload: &[u8]) -> Result<(), EncodeError> {
    frame_with(out, DEFAULT_MAX_FRAME, |w| {
        w.write_all(payload).map_err(|_| EncodeError::Serialize)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_raw(&mut out, payload).unwrap();
        out
    }

    /// Feeds `bytes` in chunks of `chunk`, collecting every payload.
    fn feed(
        dec: &mut FrameDecoder,
        bytes: &[u8],
        chunk: usize,
    ) -> Result<Vec<Vec<u8>>, FrameError> {
        let mut frames = Vec::new();
        for part in bytes.chunks(chunk) {
            let mut part = part;
            while !part.is_empty() {
                part = &part[dec.fill(part)..];
                while let Some(p) = dec.next_frame()? {
                    frames.push(p.to_vec());
                }
            }
        }
        Ok(frames)
    }

    #[test]
    fn read_single_frame_one_packet() {
        let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
        assert_eq!(feed(&mut dec, &frame(b"{}"), 100), Ok(vec![b"{}".to_vec()]));
        assert_eq!(dec.buffered(), 0);
    }

    #[test]
    fn read_single_frame_multi_packet() {
        let bytes = frame(br#"{"type":"ping","nonce":1}"#);
        for chunk in 1..bytes.len() {
            let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
            let frames = feed(&mut dec, &bytes, chunk).unwrap();
            assert_eq!(frames, vec![bytes[4..].to_vec()], "chunk {chunk}");
        }
    }

    #[test]
    fn read_multi_frame_one_packet() {
        let mut bytes = frame(b"a");
        bytes.extend(frame(b"bc"));
        bytes.extend(frame(b"def"));
        let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
        let frames = feed(&mut dec, &bytes, bytes.len()).unwrap();
        assert_eq!(frames, vec![b"a".to_vec(), b"bc".to_vec(), b"def".to_vec()]);
    }

    #[test]
    fn read_incomplete_head() {
        let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
        assert_eq!(feed(&mut dec, &[0, 0, 0], 3), Ok(vec![]));
        assert_eq!(dec.buffered(), 3);
        assert_eq!(dec.next_frame(), Ok(None));
    }

    #[test]
    fn read_incomplete_payload() {
        let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
        assert_eq!(feed(&mut dec, &[0, 0, 0, 5, b'a'], 5), Ok(vec![]));
        assert_eq!(dec.buffered(), 5);
    }

    #[test]
    fn read_empty_frame_is_error() {
        let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
        assert_eq!(feed(&mut dec, &[0, 0, 0, 0], 4), Err(FrameError::Empty));
        assert_eq!(dec.next_frame(), Err(FrameError::Empty), "poisoned");
    }

    #[test]
    fn read_max_frame_len() {
        let max = 10;
        let mut dec = FrameDecoder::new(max);
        let frames = feed(&mut dec, &frame(&[b'x'; 10]), 3).unwrap();
        assert_eq!(frames, vec![vec![b'x'; 10]]);
    }

    #[test]
    fn read_over_max_frame_len_from_header_alone() {
        let mut dec = FrameDecoder::new(10);
        // Only the header: the error needs no payload byte.
        let err = feed(&mut dec, &11u32.to_be_bytes(), 1);
        assert_eq!(err, Err(FrameError::TooLarge { len: 11, max: 10 }));
        let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
        let err = feed(&mut dec, &u32::MAX.to_be_bytes(), 4).unwrap_err();
        assert_eq!(
            err,
            FrameError::TooLarge {
                len: u32::MAX,
                max: DEFAULT_MAX_FRAME
            }
        );
        assert!(dec.buf_len() <= INITIAL_BUF, "reserved nothing for it");
    }

    #[test]
    fn read_frames_after_poison_are_refused() {
        let mut bytes = vec![0, 0, 0, 0];
        bytes.extend(frame(b"ok"));
        let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
        assert_eq!(feed(&mut dec, &bytes, 100), Err(FrameError::Empty));
        assert!(!dec.read_buf().is_empty());
        assert_eq!(dec.next_frame(), Err(FrameError::Empty));
    }

    #[test]
    fn read_big_frame_grows_by_doubling_as_bytes_arrive() {
        let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
        let header = (1u32 << 20).to_be_bytes();
        feed(&mut dec, &header, 4).unwrap();
        assert!(
            dec.buf_len() <= INITIAL_BUF,
            "a header alone reserves nothing"
        );
        let payload = vec![b'x'; 1 << 20];
        let frames = feed(&mut dec, &payload, 1500).unwrap();
        assert_eq!(frames.len(), 1);
        assert_eq!(
            dec.buf_len(),
            HEADER_LEN + (1 << 20),
            "grew to fit, no further"
        );
    }

    #[test]
    fn read_small_frames_reuse_buffer_without_growth() {
        let mut bytes = Vec::new();
        for i in 0..10_000u32 {
            bytes.extend(frame(format!("{{\"n\":{i}}}").as_bytes()));
        }
        let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
        let frames = feed(&mut dec, &bytes, 1500).unwrap();
        assert_eq!(frames.len(), 10_000);
        assert_eq!(dec.buf_len(), INITIAL_BUF);
    }

    #[test]
    fn raised_limit_applies_to_the_next_header_only() {
        let mut dec = FrameDecoder::new(4);
        let bytes = [frame(b"abcd"), frame(b"abcdef")].concat();
        // The buffer starts at max_frame + 4 = 8 bytes: the first frame.
        let took = dec.fill(&bytes);
        assert_eq!(took, 8);
        assert_eq!(dec.next_frame().unwrap(), Some(&b"abcd"[..]));
        dec.raise_max_frame(8);
        dec.raise_max_frame(2); // never lowers
        assert_eq!(dec.max_frame(), 8);
        // The buffer now grows to the larger frame.
        let mut rest = &bytes[took..];
        while !rest.is_empty() {
            rest = &rest[dec.fill(rest)..];
        }
        assert_eq!(dec.next_frame().unwrap(), Some(&b"abcdef"[..]));
        dec.fill(&frame(b"abcdefghi"));
        assert!(matches!(
            dec.next_frame(),
            Err(FrameError::TooLarge { len: 9, max: 8 })
        ));
    }

    #[test]
    fn read_buffer_shrinks_back_after_a_burst_of_big_frames() {
        let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
        let payload = vec![b'x'; 2 << 20];
        let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&payload);
        let mut rest = &frame[..];
        let mut got = 0;
        while !rest.is_empty() {
            let n = dec.fill(rest);
            rest = &rest[n..];
            while let Some(p) = dec.next_frame().unwrap() {
                got += p.len();
            }
        }
        assert_eq!(got, payload.len());
        assert!(dec.buf_len() > SHRINK_ABOVE, "it grew for the big frame");
        let _ = dec.read_buf();
        assert_eq!(dec.buf_len(), INITIAL_BUF, "and shrank back once empty");
    }

    /// Feeds `frames` copies of a 100-byte frame, `per_read` bytes a
    /// read (capped by the spare space), draining after each: the largest
    /// buffer seen.
    fn largest_buffer(dec: &mut FrameDecoder, frames: usize, per_read: usize) -> usize {
        let stream: Vec<u8> = (0..frames).flat_map(|_| frame(&[b'x'; 96])).collect();
        let mut rest = &stream[..];
        let mut largest = 0;
        while !rest.is_empty() {
            let n = dec.fill(&rest[..per_read.min(rest.len())]);
            rest = &rest[n..];
            largest = largest.max(dec.buf_len());
            while dec.next_frame().unwrap().is_some() {}
        }
        largest
    }

    #[test]
    fn a_busy_connection_reads_ahead_up_to_its_limit() {
        // Bytes always waiting: every read fills the buffer.
        let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
        assert_eq!(largest_buffer(&mut dec, 10_000, usize::MAX), READ_AHEAD);
        // Never past one maximal frame: before its hello a connection
        // gets 4 KiB, and a node may set any limit.
        for max_frame in [4096, 20_000] {
            let mut dec = FrameDecoder::new(max_frame);
            let largest = largest_buffer(&mut dec, 10_000, usize::MAX);
            assert_eq!(largest, max_frame + HEADER_LEN);
        }
    }

    #[test]
    fn reading_ahead_is_given_back_when_idle_but_not_mid_frame() {
        let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
        assert_eq!(largest_buffer(&mut dec, 10_000, usize::MAX), READ_AHEAD);
        // Half a frame waits: nothing moves.
        dec.fill(&frame(b"abcdef")[..5]);
        dec.shrink_when_idle();
        assert_eq!(dec.buf_len(), READ_AHEAD);
        dec.fill(&frame(b"abcdef")[5..]);
        assert_eq!(dec.next_frame().unwrap(), Some(&b"abcdef"[..]));
        dec.shrink_when_idle();
        assert_eq!(dec.buf_len(), INITIAL_BUF);
        // And it reads on as before.
        assert_eq!(largest_buffer(&mut dec, 10_000, usize::MAX), READ_AHEAD);
    }

    #[test]
    fn a_connection_whose_reads_never_fill_the_buffer_keeps_it() {
        let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
        assert_eq!(largest_buffer(&mut dec, 10_000, 3_000), INITIAL_BUF);
    }

    #[test]
    fn read_buf_is_never_empty_even_undrained() {
        let mut dec = FrameDecoder::new(8);
        for _ in 0..100 {
            let spare = dec.read_buf();
            assert!(!spare.is_empty());
            let n = spare.len().min(6);
            spare[..n].copy_from_slice(&frame(b"ab")[..n]);
            dec.commit(n);
        }
    }

    #[test]
    #[should_panic(expected = "commit past read_buf")]
    fn commit_past_spare_panics() {
        let mut dec = FrameDecoder::new(16);
        let n = dec.read_buf().len();
        dec.commit(n + 1);
    }

    #[test]
    fn max_frame_is_clamped() {
        assert_eq!(FrameDecoder::new(0).max_frame(), 1);
        assert_eq!(FrameDecoder::new(usize::MAX).max_frame(), u32::MAX as usize);
    }

    #[test]
    fn write_patches_length_in_one_buffer() {
        let mut out = b"xy".to_vec();
        encode_raw(&mut out, b"{}").unwrap();
        assert_eq!(out, b"xy\0\0\0\x02{}");
    }

    #[test]
    fn write_errors_leave_buffer_untouched() {
        let mut out = b"xy".to_vec();
        assert_eq!(encode_raw(&mut out, b""), Err(EncodeError::Empty));
        let err = frame_with(&mut out, 3, |w| {
            w.extend_from_slice(b"1234");
            Ok(())
        });
        assert_eq!(err, Err(EncodeError::TooLarge { len: 4, max: 3 }));
        let err = encode_with(&mut out, |w| {
            w.push(b'{');
            Err(serde::ser::Error::custom("no"))
        });
        assert_eq!(err, Err(EncodeError::Serialize));
        assert_eq!(out, b"xy");
    }
}
