//! What an operator sees of a running node, sans-IO: the HTTP server's
//! rules (`http`), the trace as a stream (`events`), and the health and
//! metrics documents, rendered from a [`NodeView`] the reactor fills.
//!
//! ```text
//!   GET /          the cluster page (page.html, in the binary)
//!   GET /health    JSON: who, how long up, peers, objects, queues
//!   GET /metrics   Prometheus text, names prefixed avm_
//!   GET /events    the trace as Server-Sent Events, filtered by query
//! ```
//!
//! Counting costs the hot path nothing it would notice: the interpreter's
//! counters are relaxed atomics (`node::NodeStats`); the protocol core's
//! are plain fields on its connections and in [`Histogram`], touched only
//! by the reactor thread, which is also the thread that renders them.

pub mod cli;
pub mod events;
pub mod http;

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::json;

/// Why a call failed, as metrics count it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    UnknownObject,
    Destroyed,
    PeerDown,
    Timeout,
    Deadlock,
    Busy,
    Panic,
    NotDurable,
    Overloaded,
    TooDeep,
    Other,
}

impl FailureKind {
    pub const ALL: [FailureKind; 11] = [
        FailureKind::UnknownObject,
        FailureKind::Destroyed,
        FailureKind::PeerDown,
        FailureKind::Timeout,
        FailureKind::Deadlock,
        FailureKind::Busy,
        FailureKind::Panic,
        FailureKind::NotDurable,
        FailureKind::Overloaded,
        FailureKind::TooDeep,
        FailureKind::Other,
    ];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            FailureKind::UnknownObject => "unknown_object",
            FailureKind::Destroyed => "destroyed",
            FailureKind::PeerDown => "peer_down",
            FailureKind::Timeout => "timeout",
            FailureKind::Deadlock => "deadlock",
            FailureKind::Busy => "busy",
            FailureKind::Panic => "panic",
            FailureKind::NotDurable => "not_durable",
            FailureKind::Overloaded => "overloaded",
            FailureKind::TooDeep => "too_deep",
            FailureKind::Other => "other",
        }
    }

    /// Sorts a failure's message (as `VmError` and the protocol core
    /// write them) into its kind.
    pub fn of(reason: &str) -> FailureKind {
        const BY_WORDS: [(&str, FailureKind); 12] = [
            ("not durable", FailureKind::NotDurable),
            ("deadlock", FailureKind::Deadlock),
            ("busy", FailureKind::Busy),
            ("object not found", FailureKind::UnknownObject),
            ("object destroyed", FailureKind::Destroyed),
            ("timed out", FailureKind::Timeout),
            ("panicked", FailureKind::Panic),
            ("is not connected", FailureKind::PeerDown),
            ("connection to", FailureKind::PeerDown),
            ("too many calls in flight", FailureKind::Overloaded),
            ("overloaded", FailureKind::Overloaded),
            ("call past the limit", FailureKind::TooDeep),
        ];
        BY_WORDS
            .iter()
            .find(|(words, _)| reason.contains(words))
            .map_or(FailureKind::Other, |(_, kind)| *kind)
    }
}

/// The close reason of a dial that did not connect
/// (`CloseReason::error_label`).
const DIAL_FAILED: &str = "connect_failed";

/// Upper bounds of the round-trip buckets, in microseconds.
pub const RTT_BUCKETS_US: [u64; 14] = [
    25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 1_000_000,
    10_000_000,
];

/// A latency histogram with fixed buckets (Prometheus style: each count
/// is of observations at or under its bound, the last is everything).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Histogram {
    /// Per bucket (not cumulative), plus one past the last bound.
    counts: [u64; RTT_BUCKETS_US.len() + 1],
    sum_us: u64,
    count: u64,
    /// The longest observed: the bound past the last bucket.
    max_us: u64,
}

impl Histogram {
    pub fn observe(&mut self, took: Duration) {
        self.observe_us(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
    }

    pub fn observe_us(&mut self, us: u64) {
        let bucket = RTT_BUCKETS_US.partition_point(|&bound| bound < us);
        self.counts[bucket] += 1;
        self.sum_us = self.sum_us.saturating_add(us);
        self.count += 1;
        self.max_us = self.max_us.max(us);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn sum_us(&self) -> u64 {
        self.sum_us
    }

    /// The upper bound (µs) of the bucket holding the `q` quantile: "at
    /// most this"; `None` when nothing was observed. Past the last bound
    /// (10 s) it answers the longest observed, still "at most this".
    pub fn quantile_us(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (i, n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(RTT_BUCKETS_US.get(i).copied().unwrap_or(self.max_us));
            }
        }
        Some(self.max_us)
    }
}

/// One peer, as `/health` and `/metrics` show it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerView {
    pub machine: String,
    pub address: String,
    pub up: bool,
    /// Since bytes last came from it (`None`: never, in this life).
    pub last_seen: Option<Duration>,
    pub frames_in: u64,
    pub frames_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub connects: u64,
    pub downs: u64,
    /// Objects this node's directory places on the peer.
    pub objects: u64,
}

/// Everything `/health` and `/metrics` say, gathered by the reactor.
#[derive(Clone, Debug, Default)]
pub struct NodeView {
    pub name: String,
    pub prefix: u16,
    pub uptime: Duration,
    pub peers: Vec<PeerView>,
    pub objects: u64,
    pub suspended: u64,
    pub waiting_for_turns: u64,
    pub directory_entries: u64,
    pub events_queued: u64,
    pub commands_queued: u64,
    pub calls_in_flight: u64,
    pub calls_owed: u64,
    /// Capacity of the peer connections' read and write buffers: what a
    /// burst grew comes back once the node is idle.
    pub read_buffer_bytes: u64,
    pub write_buffer_bytes: u64,
    pub connections: u64,
    pub http_connections: u64,
    pub subscribers: u64,
    pub remote_calls_out: u64,
    pub remote_calls_in: u64,
    pub local_calls: u64,
    /// Failed calls by [`FailureKind`], in `FailureKind::ALL` order.
    pub failures: [u64; 11],
    pub deadlocks: u64,
    pub rtt: Histogram,
    /// Connections closed for a protocol reason, by reason.
    pub protocol_errors: Vec<(&'static str, u64)>,
    pub store_commits: u64,
    pub store_objects: u64,
}

/// `GET /health`.
pub fn render_health(view: &NodeView) -> Vec<u8> {
    let peers: Vec<_> = view
        .peers
        .iter()
        .map(|p| {
            json!({
                "machine": p.machine,
                "address": p.address,
                "up": p.up,
                "last_seen_ms": p.last_seen.map(|d| d.as_millis() as u64),
                "objects": p.objects,
            })
        })
        .collect();
    let health = json!({
        "name": view.name,
        "machine_id": view.name,
        "prefix": view.prefix,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": view.uptime.as_secs_f64(),
        "peers": peers,
        "objects": view.objects,
        "directory_entries": view.directory_entries,
        "suspended_chains": view.suspended,
        "calls_in_flight": view.calls_in_flight,
        "remote_call_latency": {
            "count": view.rtt.count(),
            "mean_us": view.rtt.sum_us.checked_div(view.rtt.count()),
            "p50_us": view.rtt.quantile_us(0.5),
            "p99_us": view.rtt.quantile_us(0.99),
        },
        "calls": {
            "remote_out": view.remote_calls_out,
            "remote_in": view.remote_calls_in,
            "local": view.local_calls,
            "failed": view.failures.iter().sum::<u64>(),
        },
        "queues": {
            "events": view.events_queued,
            "commands": view.commands_queued,
            "waiting_for_turns": view.waiting_for_turns,
        },
        "buffers": {
            "read_bytes": view.read_buffer_bytes,
            "write_bytes": view.write_buffer_bytes,
        },
    });
    serde_json::to_vec_pretty(&health).expect("a JSON value")
}

/// `GET /metrics`: the Prometheus text exposition format.
pub fn render_metrics(view: &NodeView) -> Vec<u8> {
    let mut m = Metrics(String::with_capacity(4096));
    let uptime = view.uptime.as_secs_f64();
    m.single(
        "avm_up_seconds",
        "gauge",
        "Seconds since the node started.",
        uptime,
    );
    m.family(
        "avm_calls_total",
        "counter",
        "Calls, by direction and kind.",
        [
            (
                "direction=\"out\",kind=\"remote\"".to_string(),
                view.remote_calls_out,
            ),
            (
                "direction=\"in\",kind=\"remote\"".to_string(),
                view.remote_calls_in,
            ),
            (
                "direction=\"local\",kind=\"local\"".to_string(),
                view.local_calls,
            ),
        ],
    );
    let failures = FailureKind::ALL.iter().zip(view.failures);
    m.family(
        "avm_call_failures_total",
        "counter",
        "Failed calls, by reason.",
        failures.map(|(kind, n)| (format!("reason=\"{}\"", kind.label()), n)),
    );
    m.head(
        "avm_remote_call_seconds",
        "histogram",
        "Remote call round trips.",
    );
    let mut cumulative = 0;
    for (bound, n) in RTT_BUCKETS_US.iter().zip(view.rtt.counts) {
        cumulative += n;
        let le = format!("le=\"{}\"", *bound as f64 / 1e6);
        m.line("avm_remote_call_seconds_bucket", &le, cumulative);
    }
    m.line(
        "avm_remote_call_seconds_bucket",
        "le=\"+Inf\"",
        view.rtt.count,
    );
    m.line(
        "avm_remote_call_seconds_sum",
        "",
        view.rtt.sum_us as f64 / 1e6,
    );
    m.line("avm_remote_call_seconds_count", "", view.rtt.count);
    let gauges: [(&str, &str, u64); 5] = [
        (
            "avm_calls_in_flight",
            "Our calls awaiting a peer's answer.",
            view.calls_in_flight,
        ),
        (
            "avm_pending_requests",
            "Peers' calls we have not answered yet.",
            view.calls_owed,
        ),
        (
            "avm_suspended_chains",
            "Chains waiting on a remote call.",
            view.suspended,
        ),
        ("avm_objects", "Objects hosted here.", view.objects),
        (
            "avm_directory_entries",
            "Objects known on other machines.",
            view.directory_entries,
        ),
    ];
    for (name, help, value) in gauges {
        m.single(name, "gauge", help, value);
    }
    m.family(
        "avm_queue_depth",
        "gauge",
        "Items waiting in the handoff queues and for turns.",
        [
            ("queue=\"events\"".to_string(), view.events_queued),
            ("queue=\"commands\"".to_string(), view.commands_queued),
            ("queue=\"turns\"".to_string(), view.waiting_for_turns),
        ],
    );
    m.family(
        "avm_buffer_bytes",
        "gauge",
        "Capacity of the peer connections' read and write buffers.",
        [
            ("kind=\"read\"".to_string(), view.read_buffer_bytes),
            ("kind=\"write\"".to_string(), view.write_buffer_bytes),
        ],
    );
    let counters: [(&str, &str, u64); 4] = [
        ("avm_deadlocks_total", "Deadlocks broken.", view.deadlocks),
        (
            "avm_busy_refusals_total",
            "Calls refused: the object's queue was full.",
            view.failures[FailureKind::Busy as usize],
        ),
        (
            "avm_store_commits_total",
            "Durable store transactions (--data-dir).",
            view.store_commits,
        ),
        (
            "avm_store_objects_total",
            "Object records durably written.",
            view.store_objects,
        ),
    ];
    for (name, help, value) in counters {
        m.single(name, "counter", help, value);
    }
    m.family(
        "avm_connections",
        "gauge",
        "Open connections.",
        [
            ("kind=\"peer\"".to_string(), view.connections),
            ("kind=\"http\"".to_string(), view.http_connections),
            ("kind=\"subscriber\"".to_string(), view.subscribers),
        ],
    );
    // Each family's samples together, as the exposition format requires.
    let per_peer = |f: fn(&PeerView) -> u64| view.peers.iter().map(move |p| (peer(p), f(p)));
    let both_ways = |i: fn(&PeerView) -> u64, o: fn(&PeerView) -> u64| {
        view.peers.iter().flat_map(move |p| {
            let l = peer(p);
            [
                (format!("{l},direction=\"in\""), i(p)),
                (format!("{l},direction=\"out\""), o(p)),
            ]
        })
    };
    m.family(
        "avm_peer_up",
        "gauge",
        "1 while the peer is connected.",
        per_peer(|p| u64::from(p.up)),
    );
    m.family(
        "avm_peer_frames_total",
        "counter",
        "Frames exchanged with each peer.",
        both_ways(|p| p.frames_in, |p| p.frames_out),
    );
    m.family(
        "avm_peer_bytes_total",
        "counter",
        "Bytes exchanged with each peer.",
        both_ways(|p| p.bytes_in, |p| p.bytes_out),
    );
    m.family(
        "avm_peer_connects_total",
        "counter",
        "Times each peer came up (more than 1: reconnects).",
        per_peer(|p| p.connects),
    );
    m.family(
        "avm_peer_down_total",
        "counter",
        "Times each peer was declared down.",
        per_peer(|p| p.downs),
    );
    // A dial that did not connect (a peer not running yet) is no fault
    // of any connection: counted apart, so an alert on faults stays quiet.
    let (dials, faults): (Vec<_>, Vec<_>) = view
        .protocol_errors
        .iter()
        .partition(|(r, _)| *r == DIAL_FAILED);
    m.family(
        "avm_protocol_errors_total",
        "counter",
        "Connections closed for a fault (the peer's or the network's), by reason.",
        faults.iter().map(|(r, n)| (format!("reason=\"{r}\""), *n)),
    );
    m.family(
        "avm_dial_failures_total",
        "counter",
        "Dials to a --peer address that did not connect (refused, unreachable, timed out).",
        std::iter::once((String::new(), dials.iter().map(|(_, n)| *n).sum())),
    );
    m.0.into_bytes()
}

/// A peer's label: its machine, or, for a `--peer` not reached yet (no
/// name known), its address, so that two such peers stay two series.
fn peer(p: &PeerView) -> String {
    if p.machine.is_empty() {
        format!("peer=\"\",address=\"{}\"", escape(&p.address))
    } else {
        format!("peer=\"{}\"", escape(&p.machine))
    }
}

/// A label value, escaped as the exposition format wants.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Metrics(String);

impl Metrics {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// A metric with one sample and no labels.
    fn single(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.head(name, kind, help);
        self.line(name, "", value);
    }

    /// A metric and all its samples, `(labels, value)`.
    fn family(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        samples: impl IntoIterator<Item = (String, u64)>,
    ) {
        self.head(name, kind, help);
        for (labels, value) in samples {
            self.line(name, &labels, value);
        }
    }

    fn line(&mut self, name: &str, labels: &str, value: impl std::fmt::Display) {
        if labels.is_empty() {
            let _ = writeln!(self.0, "{name} {value}");
        } else {
            let _ = writeln!(self.0, "{name}{{{labels}}} {value}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_sorted_by_their_words() {
        let cases = [
            ("object not found: 12", FailureKind::UnknownObject),
            ("object destroyed: 12", FailureKind::Destroyed),
            (
                "machine beta is not connected (call to object 3)",
                FailureKind::PeerDown,
            ),
            (
                "connection to beta lost: peer closed the connection",
                FailureKind::PeerDown,
            ),
            (
                "call to object 3 on beta timed out: ...",
                FailureKind::Timeout,
            ),
            (
                "deadlock: chain 1 waits for object 2 on a",
                FailureKind::Deadlock,
            ),
            (
                "busy: object 3 has too many calls waiting",
                FailureKind::Busy,
            ),
            ("behavior pong panicked", FailureKind::Panic),
            (
                "not durable: store x: cannot write",
                FailureKind::NotDurable,
            ),
            (
                "node overloaded: too many calls in flight",
                FailureKind::Overloaded,
            ),
            ("something else", FailureKind::Other),
        ];
        for (reason, kind) in cases {
            assert_eq!(FailureKind::of(reason), kind, "{reason}");
        }
    }

    #[test]
    fn the_histogram_counts_whole_microseconds_and_saturates() {
        let mut h = Histogram::default();
        h.observe(Duration::from_nanos(1_999));
        h.observe(Duration::new(3, 250_999));
        assert_eq!(h.sum_us, 1 + 3_000_250);
        h.observe(Duration::MAX);
        assert_eq!(h.sum_us, u64::MAX);
        assert_eq!(h.count(), 3);
    }

    #[test]
    fn the_histogram_buckets_are_cumulative_in_the_exposition() {
        let two_peers = ["beta", "gamma"].map(|m| PeerView {
            machine: m.into(),
            ..PeerView::default()
        });
        let mut view = NodeView {
            peers: two_peers.to_vec(),
            ..NodeView::default()
        };
        for us in [10, 30, 30, 2_000_000, 20_000_000] {
            view.rtt.observe(Duration::from_micros(us));
        }
        let text = String::from_utf8(render_metrics(&view)).unwrap();
        assert!(
            text.contains("avm_remote_call_seconds_bucket{le=\"0.000025\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("avm_remote_call_seconds_bucket{le=\"0.00005\"} 3\n"));
        assert!(text.contains("avm_remote_call_seconds_bucket{le=\"10\"} 4\n"));
        assert!(text.contains("avm_remote_call_seconds_bucket{le=\"+Inf\"} 5\n"));
        assert!(text.contains("avm_remote_call_seconds_count 5\n"));
        // Every family's samples follow its TYPE line, together.
        let mut seen = std::collections::HashSet::new();
        let mut current = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                current = rest.split(' ').next().unwrap().to_string();
                assert!(seen.insert(current.clone()), "{current} declared twice");
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert!(
                    name.starts_with(&current),
                    "{name} outside its family {current}"
                );
            }
        }
        // Every sample line is `name{labels} value` or `name value`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.rsplit_once(' ').unwrap();
            assert!(name.starts_with("avm_"), "{line}");
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }

    /// A dial that did not connect is not a protocol error: it has its
    /// own counter (an alert on protocol errors fired for a peer that was
    /// only not running yet).
    #[test]
    fn failed_dials_are_counted_apart_from_protocol_errors() {
        let view = NodeView {
            protocol_errors: vec![("connect_failed", 12), ("protocol", 1)],
            ..NodeView::default()
        };
        let text = String::from_utf8(render_metrics(&view)).unwrap();
        assert!(text.contains("\navm_dial_failures_total 12\n"), "{text}");
        assert!(text.contains("avm_protocol_errors_total{reason=\"protocol\"} 1\n"));
        assert!(!text.contains("reason=\"connect_failed\""), "{text}");
    }

    /// Two `--peer`s not reached yet have no machine name: each is still
    /// its own series (the format forbids two samples with one label set).
    #[test]
    fn peers_not_reached_yet_are_told_apart_by_address() {
        let unreached = ["127.0.0.1:9002", "127.0.0.1:9003"].map(|a| PeerView {
            address: a.into(),
            ..PeerView::default()
        });
        let view = NodeView {
            peers: unreached.to_vec(),
            ..NodeView::default()
        };
        let text = String::from_utf8(render_metrics(&view)).unwrap();
        let mut samples = std::collections::HashSet::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (series, _) = line.rsplit_once(' ').unwrap();
            assert!(
                samples.insert(series.to_string()),
                "{series} twice:\n{text}"
            );
        }
        assert!(
            text.contains("avm_peer_up{peer=\"\",address=\"127.0.0.1:9003\"} 0"),
            "{text}"
        );
    }

    #[test]
    fn quantiles_answer_their_buckets_upper_bound() {
        let mut h = Histogram::default();
        assert_eq!(h.quantile_us(0.5), None);
        for us in [10, 20, 30, 40, 300, 300, 300, 300, 300, 9_000] {
            h.observe(Duration::from_micros(us));
        }
        assert_eq!(h.quantile_us(0.2), Some(25));
        assert_eq!(h.quantile_us(0.4), Some(50));
        assert_eq!(h.quantile_us(0.5), Some(500));
        assert_eq!(h.quantile_us(0.9), Some(500));
        assert_eq!(h.quantile_us(0.99), Some(10_000));
        // Past the last bucket: the longest seen, not the last bound.
        h.observe(Duration::from_secs(25));
        h.observe(Duration::from_secs(20));
        assert_eq!(h.quantile_us(0.99), Some(25_000_000));
        assert_eq!(h.quantile_us(0.5), Some(500));
    }

    #[test]
    fn health_is_json_with_the_promised_fields() {
        let view = NodeView {
            name: "alpha".into(),
            prefix: 9001,
            peers: vec![PeerView {
                machine: "beta".into(),
                address: "127.0.0.1:9002".into(),
                up: true,
                last_seen: Some(Duration::from_millis(20)),
                ..PeerView::default()
            }],
            ..NodeView::default()
        };
        let v: serde_json::Value = serde_json::from_slice(&render_health(&view)).unwrap();
        for key in [
            "name",
            "machine_id",
            "prefix",
            "uptime_s",
            "version",
            "peers",
            "objects",
            "suspended_chains",
            "queues",
            "buffers",
        ] {
            assert!(v.get(key).is_some(), "{key} missing: {v}");
        }
        assert_eq!(v["peers"][0]["up"], true);
        assert_eq!(v["peers"][0]["last_seen_ms"], 20);
    }
}
