//! What a node is told at start, and every default in one place.
//!
//! [`defaults`] is the only place a default value is written: `NodeConfig::new`
//! reads it, the reactor and protocol core get their settings from a
//! `NodeConfig`, and `avm-node`'s flags name the same constants (a test in
//! the binary checks that its `--help` text says the same numbers).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::node::key::ClusterKey;
use crate::vm::{MachineId, NameFault, TraceMode};

/// Every default setting of a node.
pub mod defaults {
    use std::net::IpAddr;
    use std::time::Duration;

    /// Where the listener binds: loopback, so a node is reachable only
    /// from its own machine unless told otherwise (`--bind 0.0.0.0`).
    pub const BIND: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    /// The largest frame accepted or sent, in bytes (16 MiB).
    pub const MAX_FRAME: usize = crate::codec::DEFAULT_MAX_FRAME;
    /// Most calls in flight to other nodes at once (and most inbound calls
    /// awaiting our answer); more fail at once.
    pub const MAX_PENDING: usize = 1 << 20;
    /// How long a thread keeps polling after activity before it sleeps.
    pub const SPIN: Duration = Duration::from_micros(100);
    /// Ping interval; a peer silent for 3 intervals is declared down.
    pub const KEEPALIVE: Duration = Duration::from_secs(1);
    /// A remote call whose chain shows no progress this long fails.
    pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
    /// A peer is disconnected once this many bytes wait to be sent to it (64 MiB).
    pub const MAX_WRITE_BUFFER: usize = 64 << 20;
    /// The reactor stops reading sockets while this many events wait for
    /// the interpreter.
    pub const MAX_BACKLOG: usize = 8192;
    /// Most local calls in progress, all chains together.
    pub const MAX_CALL_DEPTH: usize = crate::vm::DEFAULT_MAX_DEPTH;
    /// Most calls that may wait for one object's turn.
    pub const MAX_WAITING: usize = crate::vm::DEFAULT_MAX_WAITING;
    /// How long the demo orchestrator waits for a `pong` to appear.
    pub const DEMO_WAIT: Duration = Duration::from_secs(60);
    /// The longest `keepalive` or `call_timeout` a node accepts: a year
    /// is "never" for a call, and keeps every deadline computable.
    pub const MAX_INTERVAL: Duration = Duration::from_secs(365 * 24 * 3600);
    /// The longest `spin` a node accepts: past this, spinning is only
    /// burning a core.
    pub const MAX_SPIN: Duration = Duration::from_secs(1);
    /// The smallest `max_write_buffer` a node accepts: room for a
    /// streaming snapshot's chunk, four times over.
    pub const MIN_WRITE_BUFFER: usize = 1 << 20;
    const _: () = assert!(MIN_WRITE_BUFFER >= 4 * crate::protocol::SNAPSHOT_CHUNK);
    /// The smallest `max_frame` a node accepts: what a stranger may send
    /// before its handshake ends. Under it, a greeted connection would
    /// take less than an ungreeted one.
    pub const MIN_FRAME: usize = crate::protocol::HELLO_MAX_FRAME;
    /// The longest name (`machine_id`) a node takes, in bytes: compact
    /// frames and stored records name a machine in at most 255, so a
    /// peer's `hello` with a longer one is refused.
    pub const MAX_NAME: usize = crate::vm::MachineId::MAX_LEN;
}

/// Everything a node is told at start.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node's `machine_id`.
    pub name: String,
    pub bind: IpAddr,
    /// 0 picks a free port (see `Node::local_addr`).
    pub port: u16,
    /// `host:port` of peers to dial and keep dialling.
    pub peers: Vec<String>,
    /// Top 16 bits of every ObjectId this node mints; `None`: the port.
    pub node_prefix: Option<u16>,
    pub max_frame: usize,
    pub max_pending: usize,
    pub trace: TraceMode,
    /// Ping interval; a peer silent for 3 intervals is declared down.
    pub keepalive: Duration,
    /// A remote call whose chain shows no progress this long fails with a
    /// timeout error.
    pub call_timeout: Duration,
    /// Disconnect a peer once more than this many bytes wait to be sent to
    /// it and it has taken none for 3 keepalive intervals, or once more
    /// than twice this many wait (see `protocol::Core::check_backlog`). At
    /// least 1 MiB and at least `max_frame`.
    pub max_write_buffer: usize,
    /// Stop reading sockets while this many events wait for the interpreter.
    pub max_backlog: usize,
    /// Shut down gracefully on SIGINT/SIGTERM (the binary sets this).
    pub handle_signals: bool,
    /// After activity, each thread polls without blocking (yielding the
    /// CPU) this long before it sleeps: waking a sleeping thread costs more
    /// than a round trip. Zero: sleep at once (least CPU).
    pub spin: Duration,
    /// Most local calls in progress, all chains together (`VmConfig::max_depth`).
    pub max_call_depth: usize,
    /// Most calls that may wait for one object's turn (`VmConfig::max_waiting`).
    pub max_waiting: usize,
    /// The cluster key peers must prove they know. `None`: the key in
    /// `$HOME/.avm/cluster-key`, created on first use (`node::key`).
    pub cluster_key: Option<ClusterKey>,
    /// Mutual TLS on every connection, from these PEM files (read once, in
    /// `Node::start`). `None`: plain TCP, as on a trusted network.
    pub tls: Option<TlsFiles>,
    /// Keep this node's objects in a store in this directory (created if
    /// absent): they survive a crash, and an answer leaves only once what
    /// it reports is on disk. `None`: objects live in memory only.
    pub data_dir: Option<PathBuf>,
    /// Serve `/`, `/health`, `/metrics` and `/events` over HTTP here (on
    /// the reactor, next to the peers). `None`: no HTTP at all.
    pub http: Option<std::net::SocketAddr>,
}

/// Where a node's TLS identity and trust come from: three PEM files.
///
/// With TLS a node speaks only TLS 1.2/1.3: it presents `cert` (signed
/// by the CA, with its host name or IP address as a subject alternative
/// name), accepts only peers whose certificate `ca` signed, and checks a
/// dialled peer's certificate against the host of its `--peer HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// This node's certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key of `cert` (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The CA certificate(s) that sign every node's certificate.
    pub ca: PathBuf,
}

impl NodeConfig {
    /// A node named `name` with every other setting at its [`defaults`].
    pub fn new(name: &str) -> NodeConfig {
        NodeConfig {
            name: name.to_owned(),
            bind: defaults::BIND,
            port: 0,
            peers: Vec::new(),
            node_prefix: None,
            max_frame: defaults::MAX_FRAME,
            max_pending: defaults::MAX_PENDING,
            trace: TraceMode::Counting,
            spin: defaults::SPIN,
            keepalive: defaults::KEEPALIVE,
            call_timeout: defaults::CALL_TIMEOUT,
            max_write_buffer: defaults::MAX_WRITE_BUFFER,
            max_backlog: defaults::MAX_BACKLOG,
            handle_signals: false,
            max_call_depth: defaults::MAX_CALL_DEPTH,
            max_waiting: defaults::MAX_WAITING,
            cluster_key: None,
            tls: None,
            data_dir: None,
            http: None,
        }
    }

    /// Why this configuration cannot run, naming the setting: the checks
    /// `Node::start` makes before it binds anything (an empty name would
    /// be refused by every peer, a zero `keepalive` would declare every
    /// peer down at once, and a deadline past the clock's range would
    /// stop the reactor at the first call).
    pub fn check(&self) -> Result<(), String> {
        // Every peer would refuse it (see `protocol::hello`).
        match MachineId::fault(&self.name) {
            Some(NameFault::Empty) => {
                return Err("NodeConfig::name (the machine_id) must not be empty".into())
            }
            Some(NameFault::ControlCharacters) => {
                return Err(
                    "NodeConfig::name (the machine_id) must not hold control characters".into(),
                )
            }
            Some(NameFault::TooLong) => {
                return Err(format!(
                    "NodeConfig::name (the machine_id) is {} bytes: it must be at most {}",
                    self.name.len(),
                    defaults::MAX_NAME
                ))
            }
            None => {}
        }
        let intervals = [
            ("keepalive", self.keepalive),
            ("call_timeout", self.call_timeout),
        ];
        for (field, value) in intervals {
            if value < Duration::from_millis(1) || value > defaults::MAX_INTERVAL {
                return Err(format!(
                    "NodeConfig::{field} is {value:?}: it must be from 1 ms to {} days",
                    defaults::MAX_INTERVAL.as_secs() / 86_400
                ));
            }
        }
        if self.max_write_buffer < defaults::MIN_WRITE_BUFFER {
            // A streaming snapshot keeps up to 272 KiB queued on purpose
            // (`protocol::SNAPSHOT_CHUNK` and a step): under a smaller
            // limit, every joiner would be cut as not reading.
            return Err(format!(
                "NodeConfig::max_write_buffer is {} bytes: it must be at least {} (1 MiB)",
                self.max_write_buffer,
                defaults::MIN_WRITE_BUFFER
            ));
        }
        if self.max_frame < defaults::MIN_FRAME {
            return Err(format!(
                "NodeConfig::max_frame is {} bytes: it must be at least {} (4 KiB)",
                self.max_frame,
                defaults::MIN_FRAME
            ));
        }
        if self.max_write_buffer < self.max_frame {
            // One frame the node may send would pass the limit by itself.
            return Err(format!(
                "NodeConfig::max_write_buffer ({} bytes) must be at least max_frame ({} bytes)",
                self.max_write_buffer, self.max_frame
            ));
        }
        if self.spin > defaults::MAX_SPIN {
            return Err(format!(
                "NodeConfig::spin is {:?}: it must be at most {:?}",
                self.spin,
                defaults::MAX_SPIN
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_setting_that_cannot_run_is_refused_by_name() {
        assert_eq!(NodeConfig::new("alpha").check(), Ok(()));
        let refused = |change: fn(&mut NodeConfig)| {
            let mut config = NodeConfig::new("alpha");
            change(&mut config);
            config.check().unwrap_err()
        };
        assert!(refused(|c| c.name.clear()).contains("name"));
        assert!(refused(|c| c.name = "a\nb".into()).contains("control characters"));
        assert!(refused(|c| c.name = "n".repeat(256)).contains("at most 255"));
        assert!(refused(|c| c.max_write_buffer = 128 << 10).contains("max_write_buffer"));
        assert!(refused(|c| c.max_frame = 100).contains("max_frame"));
        let small_buffer = |c: &mut NodeConfig| c.max_write_buffer = c.max_frame - 1;
        assert!(refused(small_buffer).contains("at least max_frame"));
        assert!(refused(|c| c.keepalive = Duration::ZERO).contains("keepalive"));
        assert!(refused(|c| c.call_timeout = Duration::MAX).contains("call_timeout"));
        assert!(refused(|c| c.spin = Duration::MAX).contains("spin"));
        let mut longest = NodeConfig::new("alpha");
        longest.call_timeout = defaults::MAX_INTERVAL;
        longest.keepalive = Duration::from_millis(1);
        longest.spin = defaults::MAX_SPIN;
        longest.name = "n".repeat(defaults::MAX_NAME);
        assert_eq!(longest.check(), Ok(()));
    }
}
