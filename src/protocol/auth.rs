//! The cluster-key handshake of protocol version 2, sans-IO: the bytes a
//! proof covers, the proof, its check, and the nonces. No files, no
//! sockets: the key comes in as a [`ClusterKey`] (read by `node::key`),
//! nonces and proofs go out as plain bytes for the hello exchange to carry.
//!
//! ```text
//!  dialler D                                               acceptor A
//!    nonce_D = fresh_nonce()                    nonce_A = fresh_nonce()
//!    hello(machine_D, prefix_D, nonce_D) ───────────────▶
//!                      ◀─────────────── hello(machine_A, prefix_A, nonce_A)
//!    proof(key, Dialler, D, A) ─────────────────────────▶ verify(key, Dialler, D, A, ..)
//!                      ◀─────────────────────────────── proof(key, Acceptor, D, A)
//!    verify(key, Acceptor, D, A, ..)
//! ```
//!
//! Both ends build the same [`Side`]s: `dialler` is always the end that
//! opened the TCP connection, `acceptor` the end that accepted it, each with
//! the `machine_id`, `node_prefix` and nonce from its own hello. A proof is
//! `HMAC-SHA256(key, transcript(prover, dialler, acceptor))`.
//!
//! The acceptor sends its proof only once the dialler's has verified:
//! anyone can dial a node, and a node that proved itself to every stranger
//! would hand out (transcript, proof) pairs to test key guesses against
//! (see below). A node dials only the peers it was given.
//!
//! # What a valid proof shows
//!
//! That the prover holds the cluster key, *and* that it computed this proof
//! for this very connection: for these two nonces, these two identities,
//! and its own role in it. Each part of the transcript closes one attack:
//!
//! - **Both nonces: no replay.** Each end draws a fresh 32-byte nonce per
//!   connection, so a proof recorded from an earlier handshake covers other
//!   nonces and fails. Each end's own nonce is what protects *it*: a
//!   verifier need not trust the other end's randomness.
//! - **The prover's role: no reflection.** A stranger without the key that
//!   echoes our own proof back to us fails, because ours was computed as
//!   the other role (`b'D'` versus `b'A'`); the same holds if it opens a
//!   second connection to get us to compute the proof it needs.
//! - **Both identities: a proof is for one peer.** A proof made for a
//!   handshake between alpha and beta does not verify on a connection
//!   between alpha and gamma: gamma's `machine_id` and prefix differ, so the
//!   transcript does.
//!
//! The key never crosses the wire: only nonces and HMAC outputs do, and
//! HMAC-SHA256 does not give the key back. Proofs are compared in constant
//! time ([`verify`]).
//!
//! # What it does not do
//!
//! It authenticates the two ends at the start of a connection; it does not
//! encrypt, and later frames carry no MAC, so an attacker who can rewrite
//! TCP traffic on the path can still take over a connection after the
//! handshake. Nor is the proof bound to the connection: a host that alpha
//! dials can open its own connection to gamma and pass the handshake
//! through (gamma's `hello` to alpha, alpha's `hello` and proof to gamma),
//! and gamma then takes that host's connection for alpha's. Only mutual
//! TLS closes that. Keep the cluster on a network you trust, or use TLS. A
//! recorded handshake (or a proof obtained by talking to a node) lets
//! anyone test guesses of the key offline, so the key must be long and
//! random: the default key (`node::key`) is 32 random bytes written as 64
//! hex characters.
//!
//! # The transcript
//!
//! ```text
//!  "avm cluster proof v2"  20 ASCII bytes, the domain and version
//!  role                     1 byte: b'D' dialler or b'A' acceptor, the PROVER's role
//!  len(dialler.machine)     u16 big-endian
//!  dialler.machine          UTF-8 bytes
//!  dialler.prefix           u16 big-endian
//!  dialler.nonce            32 bytes
//!  len(acceptor.machine)    u16 big-endian
//!  acceptor.machine         UTF-8 bytes
//!  acceptor.prefix          u16 big-endian
//!  acceptor.nonce           32 bytes
//! ```
//!
//! Every variable-length field has its length in front, so two different
//! inputs never give the same bytes. The length is a `u16`: machine ids are
//! taken as given, and hello validation bounds them far below `u16::MAX`
//! bytes (a hello frame is at most [`HELLO_MAX_FRAME`](super::HELLO_MAX_FRAME),
//! 4 KiB); see the panics section of [`transcript`].

use std::fmt;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Bytes in a nonce.
pub const NONCE_LEN: usize = 32;
/// Bytes in a proof (an HMAC-SHA256 output).
pub const PROOF_LEN: usize = 32;

/// What every transcript starts with: the protocol and its version, so a
/// proof for this handshake is never valid in another use of the key.
const DOMAIN: &[u8] = b"avm cluster proof v2";

type HmacSha256 = Hmac<Sha256>;

/// The shared secret. Debug prints only its length, never the bytes.
#[derive(Clone)]
pub struct ClusterKey(Arc<[u8]>);

impl ClusterKey {
    /// A key from its bytes; refuses an empty key.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, &'static str> {
        if bytes.is_empty() {
            return Err("the cluster key is empty");
        }
        Ok(ClusterKey(Arc::from(bytes)))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterKey({} bytes)", self.0.len())
    }
}

/// The role of the side that proves: the dialler opened the connection,
/// the acceptor accepted it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Dialler,
    Acceptor,
}

impl Role {
    fn byte(self) -> u8 {
        match self {
            Role::Dialler => b'D',
            Role::Acceptor => b'A',
        }
    }
}

/// One end of a connection as its hello announced it.
#[derive(Clone, Copy, Debug)]
pub struct Side<'a> {
    pub machine: &'a str,
    pub prefix: u16,
    pub nonce: &'a [u8; NONCE_LEN],
}

/// The bytes a proof covers:
/// `b"avm cluster proof v2"` ‖ role byte (`b'D'` dialler / `b'A'` acceptor,
/// the PROVER's role) ‖ u16 BE len(dialler.machine) ‖ dialler.machine ‖
/// u16 BE dialler.prefix ‖ dialler.nonce (32 bytes) ‖ u16 BE
/// len(acceptor.machine) ‖ acceptor.machine ‖ u16 BE acceptor.prefix ‖
/// acceptor.nonce (32 bytes).
///
/// # Panics
///
/// If a machine id is longer than `u16::MAX` bytes. Machine ids are taken
/// as given, not truncated: a peer's comes from a hello, which validation
/// bounds to a 4 KiB frame, so only a local caller bug (an unbounded
/// configured name) can get here.
pub fn transcript(prover: Role, dialler: &Side, acceptor: &Side) -> Vec<u8> {
    let len =
        DOMAIN.len() + 1 + 2 * (2 + 2 + NONCE_LEN) + dialler.machine.len() + acceptor.machine.len();
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(DOMAIN);
    out.push(prover.byte());
    put_side(&mut out, dialler);
    put_side(&mut out, acceptor);
    debug_assert_eq!(out.len(), len);
    out
}

fn put_side(out: &mut Vec<u8>, side: &Side) {
    let machine = side.machine.as_bytes();
    let machine_len = u16::try_from(machine.len())
        .expect("machine_id longer than u16::MAX bytes (hello validation bounds it to 4 KiB)");
    out.extend_from_slice(&machine_len.to_be_bytes());
    out.extend_from_slice(machine);
    out.extend_from_slice(&side.prefix.to_be_bytes());
    out.extend_from_slice(side.nonce);
}

fn mac(key: &ClusterKey, prover: Role, dialler: &Side, acceptor: &Side) -> HmacSha256 {
    // HMAC takes a key of any length (a long one is hashed first), so this
    // never fails.
    let mut mac = HmacSha256::new_from_slice(key.as_bytes()).expect("HMAC takes any key length");
    mac.update(&transcript(prover, dialler, acceptor));
    mac
}

/// `HMAC-SHA256(key, transcript(prover, dialler, acceptor))`.
pub fn proof(key: &ClusterKey, prover: Role, dialler: &Side, acceptor: &Side) -> [u8; PROOF_LEN] {
    mac(key, prover, dialler, acceptor)
        .finalize()
        .into_bytes()
        .into()
}

/// Whether `proof` is the proof `prover` should have sent, compared in
/// constant time (hmac's `verify_slice`). A proof of the wrong length fails.
pub fn verify(
    key: &ClusterKey,
    prover: Role,
    dialler: &Side,
    acceptor: &Side,
    proof: &[u8],
) -> bool {
    mac(key, prover, dialler, acceptor)
        .verify_slice(proof)
        .is_ok()
}

/// A nonce from the operating system's CSPRNG (`getrandom`).
pub fn fresh_nonce() -> Result<[u8; NONCE_LEN], String> {
    let mut nonce = [0; NONCE_LEN];
    getrandom::getrandom(&mut nonce)
        .map_err(|e| format!("cannot draw a nonce from the OS random source: {e}"))?;
    Ok(nonce)
}

/// Lowercase hex.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(2 * bytes.len());
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// Bytes from hex, upper or lower case; `None` on an odd length or a
/// character that is not a hex digit.
pub fn from_hex(text: &str) -> Option<Vec<u8>> {
    let text = text.as_bytes();
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.chunks_exact(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

fn digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONCE_D: [u8; NONCE_LEN] = [7; NONCE_LEN];
    const NONCE_A: [u8; NONCE_LEN] = [9; NONCE_LEN];

    fn key(bytes: &[u8]) -> ClusterKey {
        ClusterKey::from_bytes(bytes).unwrap()
    }

    fn alpha(nonce: &[u8; NONCE_LEN]) -> Side<'_> {
        Side {
            machine: "alpha",
            prefix: 9001,
            nonce,
        }
    }

    fn beta(nonce: &[u8; NONCE_LEN]) -> Side<'_> {
        Side {
            machine: "beta",
            prefix: 9002,
            nonce,
        }
    }

    #[test]
    fn proof_verifies_for_both_roles() {
        let k = key(b"secret");
        let (d, a) = (alpha(&NONCE_D), beta(&NONCE_A));
        for role in [Role::Dialler, Role::Acceptor] {
            let p = proof(&k, role, &d, &a);
            assert!(verify(&k, role, &d, &a, &p), "{role:?}");
        }
    }

    #[test]
    fn proof_fails_with_another_key() {
        let (d, a) = (alpha(&NONCE_D), beta(&NONCE_A));
        let p = proof(&key(b"secret"), Role::Dialler, &d, &a);
        assert!(!verify(&key(b"secreT"), Role::Dialler, &d, &a, &p));
        assert!(!verify(&key(b"secret "), Role::Dialler, &d, &a, &p));
    }

    #[test]
    fn reflected_proof_fails_as_the_other_role() {
        let k = key(b"secret");
        let (d, a) = (alpha(&NONCE_D), beta(&NONCE_A));
        let ours = proof(&k, Role::Dialler, &d, &a);
        assert!(!verify(&k, Role::Acceptor, &d, &a, &ours));
        let theirs = proof(&k, Role::Acceptor, &d, &a);
        assert!(!verify(&k, Role::Dialler, &d, &a, &theirs));
        assert_ne!(ours, theirs);
    }

    #[test]
    fn replayed_proof_fails_on_other_nonces() {
        let k = key(b"secret");
        let p = proof(&k, Role::Dialler, &alpha(&NONCE_D), &beta(&NONCE_A));
        // Nonces swapped between the two sides.
        assert!(!verify(
            &k,
            Role::Dialler,
            &alpha(&NONCE_A),
            &beta(&NONCE_D),
            &p
        ));
        // A fresh nonce on either side.
        let other = [8; NONCE_LEN];
        assert!(!verify(
            &k,
            Role::Dialler,
            &alpha(&other),
            &beta(&NONCE_A),
            &p
        ));
        assert!(!verify(
            &k,
            Role::Dialler,
            &alpha(&NONCE_D),
            &beta(&other),
            &p
        ));
    }

    #[test]
    fn relayed_proof_fails_for_another_machine_or_prefix() {
        let k = key(b"secret");
        let (d, a) = (alpha(&NONCE_D), beta(&NONCE_A));
        let p = proof(&k, Role::Dialler, &d, &a);
        let gamma = Side {
            machine: "gamma",
            ..a
        };
        assert!(!verify(&k, Role::Dialler, &d, &gamma, &p));
        let other_prefix = Side { prefix: 9003, ..a };
        assert!(!verify(&k, Role::Dialler, &d, &other_prefix, &p));
        let other_dialler = Side {
            machine: "alphA",
            ..d
        };
        assert!(!verify(&k, Role::Dialler, &other_dialler, &a, &p));
        // Dialler and acceptor swapped: the same two nodes, the other way round.
        assert!(!verify(&k, Role::Dialler, &a, &d, &p));
    }

    #[test]
    fn truncated_or_extended_proof_fails() {
        let k = key(b"secret");
        let (d, a) = (alpha(&NONCE_D), beta(&NONCE_A));
        let p = proof(&k, Role::Dialler, &d, &a);
        assert!(!verify(&k, Role::Dialler, &d, &a, &p[..PROOF_LEN - 1]));
        assert!(!verify(&k, Role::Dialler, &d, &a, &[]));
        let mut longer = p.to_vec();
        longer.push(0);
        assert!(!verify(&k, Role::Dialler, &d, &a, &longer));
    }

    #[test]
    fn length_prefixes_keep_machine_ids_apart() {
        // Without the length in front, "ab" + "c" and "a" + "bc" could meet.
        let (n, m) = (&NONCE_D, &NONCE_A);
        let t1 = transcript(
            Role::Dialler,
            &Side {
                machine: "ab",
                prefix: 1,
                nonce: n,
            },
            &Side {
                machine: "c",
                prefix: 2,
                nonce: m,
            },
        );
        let t2 = transcript(
            Role::Dialler,
            &Side {
                machine: "a",
                prefix: 1,
                nonce: n,
            },
            &Side {
                machine: "bc",
                prefix: 2,
                nonce: m,
            },
        );
        assert_ne!(t1, t2);
    }

    #[test]
    #[should_panic(expected = "longer than u16::MAX")]
    fn machine_id_over_u16_max_panics() {
        let long = "m".repeat(usize::from(u16::MAX) + 1);
        let d = Side {
            machine: &long,
            ..alpha(&NONCE_D)
        };
        transcript(Role::Dialler, &d, &beta(&NONCE_A));
    }

    #[test]
    fn machine_id_of_u16_max_bytes_is_taken_whole() {
        let long = "m".repeat(usize::from(u16::MAX));
        let d = Side {
            machine: &long,
            ..alpha(&NONCE_D)
        };
        let t = transcript(Role::Dialler, &d, &beta(&NONCE_A));
        assert_eq!(t[DOMAIN.len() + 1..][..2], [0xff, 0xff]);
    }

    #[test]
    fn empty_key_is_refused() {
        assert!(ClusterKey::from_bytes(b"").is_err());
        assert_eq!(key(b"k").as_bytes(), b"k");
    }

    #[test]
    fn key_debug_shows_only_the_length() {
        let k = key(b"hunter2-very-secret");
        let shown = format!("{k:?}");
        assert_eq!(shown, "ClusterKey(19 bytes)");
        assert!(!shown.contains("hunter2"));
    }

    #[test]
    fn fresh_nonces_differ() {
        let a = fresh_nonce().unwrap();
        let b = fresh_nonce().unwrap();
        assert_ne!(a, b);
        assert_ne!(a, [0; NONCE_LEN]);
    }

    #[test]
    fn hex_round_trip() {
        let bytes: Vec<u8> = (0..=255).collect();
        let hex = to_hex(&bytes);
        assert_eq!(hex.len(), 512);
        assert!(hex.starts_with("000102"));
        assert!(hex.ends_with("fdfeff"));
        assert_eq!(from_hex(&hex).unwrap(), bytes);
        assert_eq!(from_hex("DEADbeef").unwrap(), [0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(from_hex("").unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn bad_hex_is_refused() {
        assert_eq!(from_hex("abc"), None); // odd length
        assert_eq!(from_hex("0g"), None);
        assert_eq!(from_hex("g0"), None);
        assert_eq!(from_hex("0 "), None);
        assert_eq!(from_hex("+1"), None);
        assert_eq!(from_hex("é0"), None); // two bytes of UTF-8, neither a digit
    }

    /// The worked example of docs/protocol.md: fixed inputs, pinned outputs.
    /// The values were computed once with this code and checked against an
    /// independent HMAC-SHA256 (Python's `hmac`).
    #[test]
    fn worked_example() {
        let k = key(b"avm-example-key!");
        let nonce_d: [u8; NONCE_LEN] = std::array::from_fn(|i| i as u8);
        let nonce_a: [u8; NONCE_LEN] = std::array::from_fn(|i| 0x20 + i as u8);
        let d = alpha(&nonce_d);
        let a = beta(&nonce_a);
        assert_eq!(
            to_hex(&nonce_d),
            "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
        );
        assert_eq!(
            to_hex(&nonce_a),
            "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
        );
        assert_eq!(to_hex(&transcript(Role::Dialler, &d, &a)), TRANSCRIPT_D_HEX);
        assert_eq!(to_hex(&proof(&k, Role::Dialler, &d, &a)), PROOF_D_HEX);
        assert_eq!(to_hex(&proof(&k, Role::Acceptor, &d, &a)), PROOF_A_HEX);
        // The acceptor's transcript differs from the dialler's in the role byte only.
        let mut t_a = transcript(Role::Dialler, &d, &a);
        t_a[DOMAIN.len()] = b'A';
        assert_eq!(t_a, transcript(Role::Acceptor, &d, &a));
    }

    const TRANSCRIPT_D_HEX: &str = concat!(
        "61766d20636c75737465722070726f6f66207632", // "avm cluster proof v2"
        "44",                                       // b'D': the dialler proves
        "0005",                                     // len("alpha")
        "616c706861",                               // "alpha"
        "2329",                                     // prefix 9001
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f", // alpha's nonce
        "0004",                                     // len("beta")
        "62657461",                                 // "beta"
        "232a",                                     // prefix 9002
        "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f", // beta's nonce
    );
    const PROOF_D_HEX: &str = "d436b7c735648a9dc90fe211575413290d76d83fb98b52f60bb6989ab79beccc";
    const PROOF_A_HEX: &str = "43668d16993abee71a1944219096931a908d95716c6878dbe947ff62609a1d02";
}
