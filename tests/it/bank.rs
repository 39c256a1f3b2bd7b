//! The bank (`avm::demo::bank`) on three real `avm-node` processes,
//! fully meshed, four accounts of 1000 each: a raw protocol client fires
//! many concurrent transfers between accounts on different nodes, then
//! reads every balance. Whatever the transfers answered (done, failed,
//! insufficient, conflict, or refused as busy / a deadlock victim), the
//! total must still be 12000.
//!
//! `transfer` reads its balance, calls the remote deposit, then writes back
//! the balance read before the call: it conserves money only when an
//! object runs one call at a time (a call keeps its object's turn while it
//! waits on a remote call). On a vm where other calls run on the object
//! meanwhile, these tests fail on the sum. `transfer_tx` keeps no balance
//! across the call and should conserve money either way.
//!
//! The seed of the random transfers is printed; `AVM_BANK_SEED=N` replays
//! the same choices (not the same interleaving: that is up to the nodes).

use std::io::{ErrorKind, Read};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::util::{NodeProc, Rng};
use crate::wire::{handshake, send, take_frame};

const ACCOUNTS_PER_NODE: usize = 4;
const OPENING: u64 = 1000;
const NODES: [&str; 3] = ["a", "b", "c"];
/// Largest amount one transfer moves (the smallest is 1).
const MAX_AMOUNT: u64 = 20;
/// How long every answer of one phase may take, all together. Longer than
/// the nodes' default call timeout (30 s), so a call stuck on a node fails
/// there and is answered before the client gives up.
const PHASE_LIMIT: Duration = Duration::from_secs(90);
/// How long the nodes get to start, find each other and open accounts.
const SETUP_LIMIT: Duration = Duration::from_secs(30);
/// Words an `Err` answer to a transfer may contain: the call was refused
/// (the account's queue was full, or the call was a deadlock's victim)
/// and moved no money. Any other `Err` fails the test.
const REFUSALS: [&str; 2] = ["busy", "deadlock"];

fn s(tag: &str) -> Value {
    json!({ "Str": tag })
}

fn nat(n: u64) -> Value {
    json!({ "Nat": n })
}

fn list(items: Vec<Value>) -> Value {
    json!({ "List": items })
}

fn seed() -> u64 {
    match std::env::var("AVM_BANK_SEED") {
        Ok(v) => v.parse().expect("AVM_BANK_SEED is a u64"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    }
}

/// Three nodes, each `--peer` of the others, each with four accounts.
struct Bank {
    nodes: Vec<NodeProc>,
    ports: Vec<u16>,
}

impl Bank {
    /// Starts c, then b dialling c, then a dialling both: every pair is
    /// connected (a connection serves both directions).
    fn start() -> Bank {
        let accounts = ACCOUNTS_PER_NODE.to_string();
        let opening = OPENING.to_string();
        let bank = ["--bank-accounts", &accounts, "--bank-balance", &opening];
        let mut nodes: Vec<NodeProc> = Vec::new();
        let mut ports: Vec<u16> = Vec::new();
        for name in NODES.iter().rev() {
            let peers: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
            let mut args: Vec<&str> = bank.to_vec();
            for peer in &peers {
                args.extend(["--peer", peer]);
            }
            let node = NodeProc::start(name, 0, &args);
            let addr = node.log_value("listening on ", SETUP_LIMIT);
            let port = addr
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse().ok())
                .unwrap_or_else(|| panic!("{name}: no port in `{addr}`"));
            nodes.insert(0, node);
            ports.insert(0, port);
        }
        for node in &nodes {
            node.wait_for_log(
                &format!("bank: created {ACCOUNTS_PER_NODE} accounts"),
                SETUP_LIMIT,
            );
        }
        Bank { nodes, ports }
    }

    /// The last lines of every node's log, for a failure message.
    fn logs(&self) -> String {
        let mut text = String::new();
        for node in &self.nodes {
            let log = node.stderr();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(15)..];
            text.push_str(&format!(
                "--- {} (last lines)\n{}\n",
                node.name,
                tail.join("\n")
            ));
        }
        text
    }
}

/// A raw protocol connection to one node, as machine `name`.
pub(crate) struct Client {
    /// The node's name, for messages.
    node: String,
    /// Our machine_id on this connection.
    machine: String,
    stream: TcpStream,
    buf: Vec<u8>,
    prefix: u64,
    next_request: u64,
    next_chain: u64,
}

impl Client {
    /// Does the handshake as `machine` with `prefix` and collects the
    /// node's accounts from its directory snapshot.
    fn connect(node: &str, port: u16, machine: &str, prefix: u64) -> (Client, Vec<u64>) {
        Client::connect_expecting(node, port, machine, prefix, ("account", ACCOUNTS_PER_NODE))
    }

    /// As `connect`, for a node announcing `expected.1` objects of
    /// behavior `expected.0`; answers their ids.
    pub(crate) fn connect_expecting(
        node: &str,
        port: u16,
        machine: &str,
        prefix: u64,
        expected: (&str, usize),
    ) -> (Client, Vec<u64>) {
        let (behavior, expected) = expected;
        let mut stream = TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("connecting to {node} on port {port}: {e}"));
        stream.set_nodelay(true).unwrap();
        // The handshake reads whole frames, nothing past the node's proof.
        stream.set_read_timeout(Some(SETUP_LIMIT)).unwrap();
        let hello = handshake(&mut stream, machine, prefix);
        assert_eq!(hello["machine_id"], node, "{hello}");
        // Short reads, so that a deadline is checked while nothing comes.
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut client = Client {
            node: node.to_owned(),
            machine: machine.to_owned(),
            stream,
            buf: Vec::new(),
            prefix,
            next_request: 1,
            next_chain: 1,
        };
        let deadline = Instant::now() + SETUP_LIMIT;
        let mut accounts = Vec::new();
        while accounts.len() < expected {
            let Some(msg) = client.next(deadline) else {
                panic!("{node}: only {accounts:?} announced within {SETUP_LIMIT:?}");
            };
            if msg["type"] == "create_notify" && msg["behavior"] == behavior {
                assert_eq!(msg["machine_id"], node, "{msg}");
                accounts.push(msg["object_id"].as_u64().expect("an object id"));
            }
        }
        (client, accounts)
    }

    /// Sends `call(target, input)` on a fresh chain; answers its request_id.
    pub(crate) fn call(&mut self, target: u64, input: &Value) -> u64 {
        self.send_call("call", None, target, input)
    }

    /// Sends the `meta` operation `op` on `target`; answers its request_id.
    pub(crate) fn meta(&mut self, op: &str, target: u64, input: &Value) -> u64 {
        self.send_call("meta", Some(op), target, input)
    }

    fn send_call(&mut self, kind: &str, op: Option<&str>, target: u64, input: &Value) -> u64 {
        let request_id = self.next_request;
        self.next_request += 1;
        let chain = (self.prefix << 48) | self.next_chain;
        self.next_chain += 1;
        let mut msg = json!({"type":kind,"request_id":request_id,"target":target,"input":input,
                    "sender":0,"sender_machine":self.machine,"chain":chain});
        if let Some(op) = op {
            msg["op"] = json!(op);
        }
        send(&mut self.stream, &msg);
        request_id
    }

    /// The next frame that is not a ping (pings are answered here), or
    /// `None` once `deadline` passes. Panics if the node closes.
    pub(crate) fn next(&mut self, deadline: Instant) -> Option<Value> {
        loop {
            if let Some(msg) = take_frame(&mut self.buf) {
                match msg["type"].as_str() {
                    Some("ping") => {
                        let nonce = msg["nonce"].clone();
                        send(&mut self.stream, &json!({"type":"pong","nonce":nonce}));
                    }
                    Some("call") => {
                        // Nothing here is an object: refuse, never hang the node.
                        let id = msg["request_id"].clone();
                        send(
                            &mut self.stream,
                            &json!({"type":"call_response","request_id":id,
                                    "result":{"Err":"the test client hosts no object"}}),
                        );
                        eprintln!("bank: {} called the client: {msg}", self.node);
                    }
                    _ => return Some(msg),
                }
                continue;
            }
            if Instant::now() >= deadline {
                return None;
            }
            let mut chunk = [0u8; 64 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!("{} closed the client's connection", self.node),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!("reading from {}: {e}", self.node),
            }
        }
    }

    /// Sends `msg` as it is (a notice, say).
    pub(crate) fn send(&mut self, msg: &Value) {
        send(&mut self.stream, msg);
    }

    /// Answers the node's `call` or `meta` `request_id` with `result`.
    pub(crate) fn respond(&mut self, request_id: &Value, result: Value) {
        let msg = json!({"type":"call_response","request_id":request_id,"result":result});
        send(&mut self.stream, &msg);
    }

    /// The `result` of the `call_response` to `request_id`; panics after
    /// `limit`.
    pub(crate) fn answer(&mut self, request_id: u64, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let Some(msg) = self.next(deadline) else {
                panic!(
                    "{}: no answer to request {request_id} within {limit:?}",
                    self.node
                );
            };
            if msg["type"] == "call_response" && msg["request_id"] == request_id {
                return msg["result"].clone();
            }
        }
    }
}

/// How one transfer ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Done,
    Failed,
    Insufficient,
    Conflict,
    Refused,
}

/// A transfer's answer, or `Err` with it when it is no expected shape.
fn classify(result: &Value, tx: bool) -> Result<Outcome, String> {
    if let Some(err) = result["Err"].as_str() {
        let lower = err.to_lowercase();
        return match REFUSALS.iter().any(|w| lower.contains(w)) {
            true => Ok(Outcome::Refused),
            false => Err(format!("Err {err:?}")),
        };
    }
    let items = result["Ok"]["List"].as_array();
    let tag = items
        .and_then(|i| i.first())
        .and_then(|t| t["Str"].as_str());
    match (tag, items.map(Vec::len)) {
        (Some("done"), Some(1)) => Ok(Outcome::Done),
        (Some("failed"), Some(1)) => Ok(Outcome::Failed),
        (Some("conflict"), Some(1)) if tx => Ok(Outcome::Conflict),
        (Some("insufficient"), Some(2)) if items.unwrap()[1]["Nat"].is_u64() => {
            Ok(Outcome::Insufficient)
        }
        _ => Err(result.to_string()),
    }
}

#[derive(Debug, Default)]
struct Tally {
    done: usize,
    failed: usize,
    insufficient: usize,
    conflict: usize,
    refused: usize,
    /// Answers of no expected shape (at most a few kept, all counted).
    unexpected: Vec<String>,
    unexpected_count: usize,
}

impl Tally {
    fn add(&mut self, outcome: Result<Outcome, String>) {
        match outcome {
            Ok(Outcome::Done) => self.done += 1,
            Ok(Outcome::Failed) => self.failed += 1,
            Ok(Outcome::Insufficient) => self.insufficient += 1,
            Ok(Outcome::Conflict) => self.conflict += 1,
            Ok(Outcome::Refused) => self.refused += 1,
            Err(what) => {
                self.unexpected_count += 1;
                if self.unexpected.len() < 5 {
                    self.unexpected.push(what);
                }
            }
        }
    }

    fn merge(&mut self, other: Tally) {
        self.done += other.done;
        self.failed += other.failed;
        self.insufficient += other.insufficient;
        self.conflict += other.conflict;
        self.refused += other.refused;
        self.unexpected_count += other.unexpected_count;
        self.unexpected.extend(other.unexpected);
    }

    fn answered(&self) -> usize {
        self.done
            + self.failed
            + self.insufficient
            + self.conflict
            + self.refused
            + self.unexpected_count
    }
}

/// What each connection fires.
#[derive(Clone, Copy, Debug)]
struct Plan<'a> {
    /// "transfer" or "transfer_tx".
    op: &'a str,
    count: usize,
    in_flight: usize,
    deadline: Instant,
}

/// Sends `plan.count` transfers from random accounts of this client's
/// node (`mine`) to random accounts on the other nodes (`others`),
/// `plan.in_flight` at a time, and tallies the answers. Panics, naming
/// what is missing, if they are not all answered by the deadline.
fn fire(client: &mut Client, mine: &[u64], others: &[u64], plan: Plan, mut rng: Rng) -> Tally {
    let Plan {
        op,
        count,
        in_flight,
        deadline,
    } = plan;
    let mut pending = std::collections::HashSet::new();
    let mut sent = 0;
    let mut tally = Tally::default();
    while sent < count || !pending.is_empty() {
        while sent < count && pending.len() < in_flight {
            let from = mine[rng.below(mine.len() as u64) as usize];
            let to = others[rng.below(others.len() as u64) as usize];
            let amount = 1 + rng.below(MAX_AMOUNT);
            let input = list(vec![s(op), json!({ "ObjectRef": to }), nat(amount)]);
            pending.insert(client.call(from, &input));
            sent += 1;
        }
        let Some(msg) = client.next(deadline) else {
            panic!(
                "{}: {} of {count} {op}s unanswered by the deadline ({} in flight at most)",
                client.node,
                pending.len() + count - sent,
                in_flight
            );
        };
        if msg["type"] != "call_response" {
            continue;
        }
        let id = msg["request_id"].as_u64().unwrap_or(0);
        assert!(
            pending.remove(&id),
            "{}: answer to no call of ours: {msg}",
            client.node
        );
        tally.add(classify(&msg["result"], op == "transfer_tx"));
    }
    tally
}

/// Until every node can deposit into every other node's accounts (the
/// directories are meshed): a 0-unit transfer from each node to each
/// other node answers `["done"]`.
fn wait_until_meshed(clients: &mut [Client], accounts: &[Vec<u64>], op: &str) {
    let deadline = Instant::now() + SETUP_LIMIT;
    for from in 0..clients.len() {
        for to in (0..clients.len()).filter(|&t| t != from) {
            loop {
                let input = list(vec![s(op), json!({ "ObjectRef": accounts[to][0] }), nat(0)]);
                let id = clients[from].call(accounts[from][0], &input);
                let result = clients[from].answer(id, SETUP_LIMIT);
                if result == json!({"Ok": list(vec![s("done")])}) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{} cannot deposit on {} within {SETUP_LIMIT:?}: {result}",
                    NODES[from],
                    NODES[to]
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Every account's balance, asked of its own node.
fn balances(clients: &mut [Client], accounts: &[Vec<u64>]) -> Vec<u64> {
    let mut all = Vec::new();
    for (client, ids) in clients.iter_mut().zip(accounts) {
        for &id in ids {
            let rid = client.call(id, &list(vec![s("balance")]));
            let result = client.answer(rid, Duration::from_secs(30));
            let items = result["Ok"]["List"].as_array();
            let b = match items.map(|i| &i[..]) {
                Some([tag, b]) if tag == &s("balance") => b["Nat"].as_u64(),
                _ => None,
            };
            all.push(b.unwrap_or_else(|| panic!("balance of {id} answered {result}")));
        }
    }
    all
}

/// The whole scenario: `per_node` transfers fired at each node,
/// `in_flight` at a time per connection, then the sum of all balances.
fn run_bank(op: &str, per_node: usize, in_flight: usize) {
    let seed = seed();
    eprintln!("bank: {op}, {per_node} per node, {in_flight} in flight per connection, seed {seed}");
    let setup = Instant::now();
    let bank = Bank::start();
    let mut clients = Vec::new();
    let mut accounts = Vec::new();
    for (i, (name, port)) in NODES.iter().zip(&bank.ports).enumerate() {
        let prefix = 101 + i as u64;
        let (client, ids) = Client::connect(name, *port, &format!("bank-client-{name}"), prefix);
        clients.push(client);
        accounts.push(ids);
    }
    wait_until_meshed(&mut clients, &accounts, op);
    let total: u64 = balances(&mut clients, &accounts).iter().sum();
    let expected = OPENING * (NODES.len() * ACCOUNTS_PER_NODE) as u64;
    assert_eq!(total, expected, "the opening balances");
    eprintln!("bank: setup took {:.2?}", setup.elapsed());

    let started = Instant::now();
    let plan = Plan {
        op,
        count: per_node,
        in_flight,
        deadline: started + PHASE_LIMIT,
    };
    let mut tally = Tally::default();
    std::thread::scope(|scope| {
        let mut workers = Vec::new();
        for (i, client) in clients.iter_mut().enumerate() {
            let mine = accounts[i].clone();
            let others: Vec<u64> = (0..accounts.len())
                .filter(|&j| j != i)
                .flat_map(|j| accounts[j].iter().copied())
                .collect();
            let rng = Rng(seed ^ ((i as u64 + 1) << 56));
            workers.push(scope.spawn(move || fire(client, &mine, &others, plan, rng)));
        }
        for worker in workers {
            match worker.join() {
                Ok(t) => tally.merge(t),
                Err(panic) => {
                    eprintln!("{}", bank.logs());
                    std::panic::resume_unwind(panic)
                }
            }
        }
    });
    let elapsed = started.elapsed();
    let all = balances(&mut clients, &accounts);
    let total: u64 = all.iter().sum();
    eprintln!(
        "bank: {op}: {} answered in {elapsed:.2?}: done {}, failed {}, insufficient {}, \
         conflict {}, refused {}, unexpected {}; sum {total} (expected {expected}, {:+}); \
         balances {all:?}",
        tally.answered(),
        tally.done,
        tally.failed,
        tally.insufficient,
        tally.conflict,
        tally.refused,
        tally.unexpected_count,
        total as i64 - expected as i64,
    );
    assert_eq!(tally.answered(), per_node * NODES.len());
    // Conservation proves nothing if no money moved: a bank that only
    // ever answered "failed" or "busy" would keep every sum.
    assert!(
        tally.done * 10 >= tally.answered(),
        "only {} of {} transfers were done (seed {seed}): {} failed, {} insufficient, \
         {} conflict, {} refused",
        tally.done,
        tally.answered(),
        tally.failed,
        tally.insufficient,
        tally.conflict,
        tally.refused
    );
    assert!(
        all.iter().any(|&b| b != OPENING),
        "every balance is still the opening {OPENING}: {all:?}"
    );
    assert!(
        tally.unexpected.is_empty(),
        "{} answers of no expected shape, such as {:?}",
        tally.unexpected_count,
        tally.unexpected
    );
    assert_eq!(
        total,
        expected,
        "money not conserved by {op}: the {} balances sum to {total}, not {expected} \
         (seed {seed}; {} done, {} failed, {} insufficient); balances {all:?}",
        all.len(),
        tally.done,
        tally.failed,
        tally.insufficient
    );
}

#[test]
fn bank_transfers_conserve_money() {
    run_bank("transfer", 200, 50);
}

#[test]
fn bank_transfers_conserve_money_under_heavy_load() {
    run_bank("transfer", 1000, 200);
}

#[test]
fn bank_transfer_tx_conserves_money() {
    run_bank("transfer_tx", 200, 50);
}

#[test]
fn bank_transfer_tx_conserves_money_under_heavy_load() {
    run_bank("transfer_tx", 1000, 200);
}
