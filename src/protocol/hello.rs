//! The hello exchange's rules, as pure functions: whether a peer's `hello`
//! is acceptable, and which of two connections to one machine survives.
//!
//! Tie rule (protocol, "Connection lifecycle" 3): when two connections to
//! one machine both finish their hellos, the one dialled by the machine
//! whose `machine_id` sorts lower (byte order) survives. Both ends compute
//! the same answer from the same facts, so they agree without talking.
//! Two connections from the *same* direction claiming one machine are not
//! a race but a collision (two nodes started with one name): the newer is
//! refused.

use std::fmt;

use crate::codec::Hello;

use super::auth::{from_hex, NONCE_LEN};
use crate::vm::{MachineId, NameFault};

/// The protocol version this node speaks: 2, version 1's messages with a
/// mutual proof of the cluster key after the hellos (`auth`).
pub const VERSION: u32 = 2;

/// What a peer told us in its `hello`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub machine: MachineId,
    pub prefix: u16,
}

/// Why a `hello` is refused (the connection is then closed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    Version(u32),
    /// Version 1: no authentication, so not accepted.
    Unauthenticated,
    /// A version 2 hello without a 32-byte nonce in hex.
    BadNonce,
    EmptyMachineId,
    /// A machine_id over 255 bytes.
    LongMachineId(usize),
    /// A machine_id with control characters: it would forge lines in the
    /// logs that quote it, before any proof.
    ControlInMachineId,
    OurMachineId(MachineId),
    OurPrefix {
        machine: MachineId,
        prefix: u16,
    },
    PrefixTaken {
        machine: MachineId,
        prefix: u16,
        holder: MachineId,
    },
    /// Same machine, same direction, as a connection already up (`label`).
    Collision {
        machine: MachineId,
        label: String,
    },
}

/// How to mend a prefix clash, said in both prefix refusals.
const PREFIX_HINT: &str = "the prefix defaults to the port: give one node another --node-prefix";

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Version(v) => write!(f, "unsupported protocol version {v}"),
            Refusal::Unauthenticated => f.write_str(
                "peer speaks protocol version 1, without authentication; this node speaks \
                 version 2 and requires a proof of the cluster key (see docs/protocol.md)",
            ),
            Refusal::BadNonce => f.write_str("`hello` without a nonce of 64 hex characters"),
            Refusal::EmptyMachineId => f.write_str("`hello` with an empty machine_id"),
            Refusal::LongMachineId(len) => write!(
                f,
                "`hello` with a machine_id of {len} bytes; at most {} are taken",
                MachineId::MAX_LEN
            ),
            Refusal::ControlInMachineId => {
                f.write_str("`hello` with a machine_id holding control characters")
            }
            Refusal::OurMachineId(m) => write!(
                f,
                "peer claims our own machine_id `{m}` (dialling itself, or two nodes with one name)"
            ),
            Refusal::OurPrefix { machine, prefix } => write!(
                f,
                "peer `{machine}` has our node_prefix {prefix}: its object ids would collide with ours ({PREFIX_HINT})"
            ),
            Refusal::PrefixTaken {
                machine,
                prefix,
                holder,
            } => write!(
                f,
                "peer `{machine}` has node_prefix {prefix}, already used by connected peer `{holder}` ({PREFIX_HINT})"
            ),
            Refusal::Collision { machine, label } => {
                write!(f, "machine_id `{machine}` collides with connected peer {label}")
            }
        }
    }
}

impl Refusal {
    /// What the refused peer is told (its `close`): as the log says, but
    /// naming no other peer, since the refused one has proved nothing.
    pub fn told(&self) -> String {
        match self {
            Refusal::PrefixTaken {
                machine, prefix, ..
            } => format!(
                "peer `{machine}` has node_prefix {prefix}, already used by another connected \
                 peer ({PREFIX_HINT})"
            ),
            other => other.to_string(),
        }
    }
}

/// Checks `hello` against our identity and the peers connected now
/// (`(machine, prefix)` of each), and answers who it claims to be and its
/// challenge. A peer already connected under the same machine_id is not
/// refused here: that is the tie rule's business, once the peer's proof
/// has shown the claim is worth considering.
pub fn check(
    hello: &Hello<'_>,
    us: &Peer,
    connected: impl Iterator<Item = Peer>,
) -> Result<(Peer, [u8; NONCE_LEN]), Refusal> {
    match hello.version {
        VERSION => {}
        1 => return Err(Refusal::Unauthenticated),
        v => return Err(Refusal::Version(v)),
    }
    let nonce = hello
        .nonce
        .as_deref()
        .and_then(from_hex)
        .and_then(|bytes| <[u8; NONCE_LEN]>::try_from(bytes).ok())
        .ok_or(Refusal::BadNonce)?;
    match MachineId::fault(&hello.machine_id) {
        Some(NameFault::Empty) => return Err(Refusal::EmptyMachineId),
        Some(NameFault::TooLong) => return Err(Refusal::LongMachineId(hello.machine_id.len())),
        Some(NameFault::ControlCharacters) => return Err(Refusal::ControlInMachineId),
        None => {}
    }
    let machine = MachineId::new(&hello.machine_id);
    if machine == us.machine {
        return Err(Refusal::OurMachineId(machine));
    }
    if hello.node_prefix == us.prefix {
        return Err(Refusal::OurPrefix {
            machine,
            prefix: hello.node_prefix,
        });
    }
    for other in connected {
        if other.machine != machine && other.prefix == hello.node_prefix {
            return Err(Refusal::PrefixTaken {
                machine,
                prefix: hello.node_prefix,
                holder: other.machine,
            });
        }
    }
    Ok((
        Peer {
            machine,
            prefix: hello.node_prefix,
        },
        nonce,
    ))
}

/// Which of two greeted connections to one machine survives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tie {
    /// Both dialled the same way: two nodes with one name. Refuse the new one.
    Collision,
    KeepNew,
    KeepOld,
}

/// The tie rule, from our side: `them` is the peer's machine_id, and each
/// flag says whether we dialled that connection.
pub fn tie(
    us: &MachineId,
    them: &MachineId,
    new_dialled_by_us: bool,
    old_dialled_by_us: bool,
) -> Tie {
    if new_dialled_by_us == old_dialled_by_us {
        return Tie::Collision;
    }
    // The connection dialled by the lower machine_id survives.
    let keep_ours = us < them;
    if new_dialled_by_us == keep_ours {
        Tie::KeepNew
    } else {
        Tie::KeepOld
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONCE: [u8; NONCE_LEN] = [7; NONCE_LEN];

    fn hello(machine: &str, prefix: u16) -> Hello<'static> {
        Hello {
            version: VERSION,
            machine_id: machine.to_owned().into(),
            node_prefix: prefix,
            nonce: Some(crate::protocol::auth::to_hex(&NONCE).into()),
            boot: Some(1),
            compact: None,
        }
    }

    fn peer(machine: &str, prefix: u16) -> Peer {
        Peer {
            machine: MachineId::new(machine),
            prefix,
        }
    }

    #[test]
    fn a_good_hello_names_the_peer() {
        let got = check(&hello("beta", 2), &peer("alpha", 1), std::iter::empty());
        assert_eq!(got, Ok((peer("beta", 2), NONCE)));
    }

    #[test]
    fn each_bad_hello_is_refused_with_its_reason() {
        let us = peer("alpha", 1);
        let up = || [peer("gamma", 3)].into_iter();
        let mut v3 = hello("beta", 2);
        v3.version = 3;
        assert_eq!(check(&v3, &us, up()), Err(Refusal::Version(3)));
        let mut v1 = hello("beta", 2);
        v1.version = 1;
        assert_eq!(check(&v1, &us, up()), Err(Refusal::Unauthenticated));
        assert!(Refusal::Unauthenticated
            .to_string()
            .contains("protocol version 1"));
        for nonce in [None, Some("zz".repeat(32)), Some("ab".repeat(31))] {
            let mut bad = hello("beta", 2);
            bad.nonce = nonce.map(Into::into);
            assert_eq!(check(&bad, &us, up()), Err(Refusal::BadNonce));
        }
        assert_eq!(
            check(&hello("", 2), &us, up()),
            Err(Refusal::EmptyMachineId)
        );
        assert_eq!(
            check(&hello("x\n[ 0.000s] INFO forged", 2), &us, up()),
            Err(Refusal::ControlInMachineId)
        );
        assert!(matches!(
            check(&hello("alpha", 2), &us, up()),
            Err(Refusal::OurMachineId(_))
        ));
        assert!(matches!(
            check(&hello("beta", 1), &us, up()),
            Err(Refusal::OurPrefix { .. })
        ));
        let taken = check(&hello("beta", 3), &us, up()).unwrap_err();
        assert!(
            taken
                .to_string()
                .contains("already used by connected peer `gamma`"),
            "{taken}"
        );
        // gamma reconnecting with its own prefix is the tie rule's case, not a refusal.
        assert_eq!(
            check(&hello("gamma", 3), &us, up()),
            Ok((peer("gamma", 3), NONCE))
        );
    }

    #[test]
    fn both_ends_keep_the_connection_dialled_by_the_lower_machine_id() {
        let (a, b) = (MachineId::new("alpha"), MachineId::new("beta"));
        // alpha's view: the new connection is the one alpha dialled.
        assert_eq!(tie(&a, &b, true, false), Tie::KeepNew);
        assert_eq!(tie(&a, &b, false, true), Tie::KeepOld);
        // beta's view of the same two connections keeps the same one.
        assert_eq!(tie(&b, &a, false, true), Tie::KeepNew);
        assert_eq!(tie(&b, &a, true, false), Tie::KeepOld);
        assert_eq!(tie(&a, &b, true, true), Tie::Collision);
        assert_eq!(tie(&a, &b, false, false), Tie::Collision);
    }
}
