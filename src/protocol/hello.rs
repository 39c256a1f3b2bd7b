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
use crate::vm::MachineId;

/// The protocol version this node speaks.
pub const VERSION: u32 = 1;

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
    EmptyMachineId,
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

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const HINT: &str = "the prefix defaults to the port: give one node another --node-prefix";
        match self {
            Refusal::Version(v) => write!(f, "unsupported protocol version {v}"),
            Refusal::EmptyMachineId => f.write_str("`hello` with an empty machine_id"),
            Refusal::OurMachineId(m) => write!(
                f,
                "peer claims our own machine_id `{m}` (dialling itself, or two nodes with one name)"
            ),
            Refusal::OurPrefix { machine, prefix } => write!(
                f,
                "peer `{machine}` has our node_prefix {prefix}: its object ids would collide with ours ({HINT})"
            ),
            Refusal::PrefixTaken {
                machine,
                prefix,
                holder,
            } => write!(
                f,
                "peer `{machine}` has node_prefix {prefix}, already used by connected peer `{holder}` ({HINT})"
            ),
            Refusal::Collision { machine, label } => {
                write!(f, "machine_id `{machine}` collides with connected peer {label}")
            }
        }
    }
}

/// Checks `hello` against our identity and the peers connected now
/// (`(machine, prefix)` of each). A peer already connected under the same
/// machine_id is not refused here: that is the tie rule's business.
pub fn check(
    hello: &Hello<'_>,
    us: &Peer,
    connected: impl Iterator<Item = Peer>,
) -> Result<Peer, Refusal> {
    if hello.version != VERSION {
        return Err(Refusal::Version(hello.version));
    }
    if hello.machine_id.is_empty() {
        return Err(Refusal::EmptyMachineId);
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
    Ok(Peer {
        machine,
        prefix: hello.node_prefix,
    })
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

    fn hello(machine: &str, prefix: u16) -> Hello<'static> {
        Hello {
            version: VERSION,
            machine_id: machine.to_owned().into(),
            node_prefix: prefix,
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
        assert_eq!(got, Ok(peer("beta", 2)));
    }

    #[test]
    fn each_bad_hello_is_refused_with_its_reason() {
        let us = peer("alpha", 1);
        let up = || [peer("gamma", 3)].into_iter();
        let mut v2 = hello("beta", 2);
        v2.version = 2;
        assert_eq!(check(&v2, &us, up()), Err(Refusal::Version(2)));
        assert_eq!(
            check(&hello("", 2), &us, up()),
            Err(Refusal::EmptyMachineId)
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
        assert_eq!(check(&hello("gamma", 3), &us, up()), Ok(peer("gamma", 3)));
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
