//! A node: one reactor thread and one interpreter thread around a `Vm`.
//!
//! ```text
//!   Node::start ─┬─ binds the listener (errors surface here, synchronously)
//!                ├─ spawns "<name>/reactor"  (reactor::Reactor::run)
//!                └─ spawns "<name>/interp"   (interp::Interpreter::run)
//! ```
//!
//! The interpreter owns the vm and the location directory; the reactor
//! owns every socket. They meet only in the `Handoff` queues. `Node::wait`
//! joins the interpreter, which ends only when the node is told to stop
//! (`Node::shutdown`, or a signal with `NodeConfig::handle_signals`) or
//! when one of its threads fails.
//!
//! # Writing and registering a behavior
//!
//! A behavior is a function from the call's input to a [`Program`]: an
//! interaction tree that emits instructions (`get_state`, `set_state`,
//! `call`, ...) and continues with their answers. Register it by name on
//! every node that should be able to host it; objects are created by name.
//!
//! ```
//! use avm::prog;
//! use avm::node::{key::ClusterKey, Node, NodeConfig};
//! use avm::vm::{call, create_obj, done, get_state, set_state, BehaviorRegistry, Program, PureRegistry, Val};
//!
//! /// A counter: adds its input to the count in its state, answers the sum.
//! fn counter(input: Val) -> Program {
//!     let add = input.as_nat().unwrap_or(0);
//!     prog! {
//!         let state <- get_state();
//!         let count = state.as_list().and_then(|s| s.first()).and_then(Val::as_nat).unwrap_or(0);
//!         set_state(vec![Val::Nat(count + add)]);
//!         done(Val::Nat(count + add))
//!     }
//! }
//!
//! let mut behaviors = BehaviorRegistry::new();
//! behaviors.register("counter", counter);
//! let mut config = NodeConfig::new("alpha");
//! config.bind = [127, 0, 0, 1].into();
//! // Every node of a cluster shares one key (without one, a node uses
//! // ~/.avm/cluster-key, made on first use).
//! config.cluster_key = Some(ClusterKey::from_bytes(b"our shared secret").unwrap());
//! let node = Node::start(config, behaviors, PureRegistry::new()).unwrap();
//!
//! // A program from outside the node: create a counter, call it twice.
//! let program = prog! {
//!     let obj <- create_obj("counter");
//!     let Val::ObjectRef(id) = obj else { return done(obj) };
//!     call(id, Val::Nat(2));
//!     call(id, Val::Nat(3))
//! };
//! let answer = node.submit(program).recv().unwrap();
//! assert_eq!(answer, Ok(Val::just(Val::Nat(5))));
//! node.shutdown();
//! ```

pub mod config;
mod durable;
pub mod handoff;
mod interp;
pub mod key;
mod stats;

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crate::protocol::{self, Core};
use crate::reactor::{HttpSetup, Reactor, ReactorSetup, TlsConfig};
use crate::store::Store;
use crate::vm::{BehaviorRegistry, MachineId, Program, PureRegistry, Val, Vm, VmConfig};

use handoff::{Command, Event, Handoff};

pub use config::{defaults, NodeConfig, TlsFiles};
pub use interp::{Outcome, NODE_STOPPED};
pub use stats::{NodeStats, StatsSnapshot};

/// A running node.
#[derive(Debug)]
pub struct Node {
    name: String,
    local_addr: SocketAddr,
    http_addr: Option<SocketAddr>,
    handoff: Arc<Handoff>,
    stop: Arc<AtomicBool>,
    stats: Arc<NodeStats>,
    reactor: Option<JoinHandle<()>>,
    interp: Option<JoinHandle<Outcome>>,
}

impl Node {
    /// Binds, then starts both threads. `behaviors` is what this node's
    /// objects can run; `pures` the pure functions programs may call.
    /// Fails, naming the setting, when the configuration cannot run
    /// ([`NodeConfig::check`]); naming the address, when the listener
    /// cannot be bound; and naming the file, when a TLS file
    /// (`NodeConfig::tls`) is unreadable or not what it should be.
    pub fn start(
        config: NodeConfig,
        behaviors: BehaviorRegistry,
        pures: PureRegistry,
    ) -> io::Result<Node> {
        config
            .check()
            .map_err(|why| io::Error::new(io::ErrorKind::InvalidInput, why))?;
        // Read before anything starts: a bad file fails the start, naming it.
        let tls = config.tls.as_ref().map(TlsConfig::load).transpose()?;
        let addr = SocketAddr::new(config.bind, config.port);
        let listener = TcpListener::bind(addr).map_err(|e| bind_error("", addr, e))?;
        let local_addr = listener.local_addr()?;
        let http = match config.http {
            Some(addr) => {
                let listener = TcpListener::bind(addr).map_err(|e| bind_error("HTTP ", addr, e))?;
                Some(listener)
            }
            None => None,
        };
        // A stored identity decides the prefix: the objects carry it.
        let store = match &config.data_dir {
            Some(dir) => Some(
                Store::open(dir, &config.name, config.node_prefix, local_addr.port())
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?,
            ),
            None => None,
        };
        let prefix = match &store {
            Some(store) => store.identity().prefix,
            None => config.node_prefix.unwrap_or(local_addr.port()),
        };
        let machine = MachineId::new(&config.name);

        let key = match &config.cluster_key {
            Some(key) => key.clone(),
            None => {
                let (key, path, created) = key::load_or_create_default()
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                if created {
                    log::info!("created the cluster key {}", path.display());
                }
                key
            }
        };
        let boot = boot_epoch_counter();
        if first_counter(boot) < boot && store.is_none() {
            log::warn!(
                "node {}: the clock is past 2108, where ObjectIds stop counting from \
                 the boot time: a restart without a store (NodeConfig::data_dir, \
                 --data-dir) may hand out ids of an earlier life again",
                config.name
            );
        }
        let setup = ReactorSetup::new(listener, config.handle_signals)?;
        let handoff = Arc::clone(setup.handoff());
        let now = Instant::now();
        let core = Core::new(
            protocol::Config {
                machine: machine.clone(),
                node_prefix: prefix,
                listen_port: local_addr.port(),
                peers: config.peers.clone(),
                max_frame: config.max_frame,
                max_pending: config.max_pending,
                keepalive: config.keepalive,
                call_timeout: config.call_timeout,
                max_write_buffer: config.max_write_buffer,
                seed: boot ^ u64::from(local_addr.port()),
                boot,
                key,
            },
            now,
        );
        let stats = Arc::new(NodeStats::default());
        let http_addr = http.as_ref().map(TcpListener::local_addr).transpose()?;
        let http = match http {
            Some(listener) => {
                log::info!("node {}: http on {}", config.name, listener.local_addr()?);
                Some(HttpSetup {
                    listener,
                    stats: Arc::clone(&stats),
                    started: now,
                })
            }
            None => None,
        };
        let reactor = Reactor::new(
            setup,
            core,
            &config.name,
            config.spin,
            config.max_backlog,
            tls,
            http,
        )?;

        let mut vm_config = VmConfig::new(machine, prefix);
        vm_config.trace = config.trace;
        // Past every id a stored life minted, even if the clock went back.
        vm_config.first_counter =
            first_counter(boot).max(store.as_ref().map_or(1, Store::next_counter));
        vm_config.max_depth = config.max_call_depth;
        vm_config.max_waiting = config.max_waiting;
        let vm = Vm::new(vm_config, behaviors, pures);
        let (vm, durable) = match store {
            Some(store) => {
                let (vm, store) = restore(vm, store)?;
                let durable = durable::Durable::start(
                    store,
                    &config.name,
                    Arc::clone(&handoff),
                    Arc::clone(&stats),
                )?;
                (vm, Some(durable))
            }
            None => (vm, None),
        };
        // Said once the objects are loaded: from here on calls are served.
        let tls_note = if config.tls.is_some() { " (TLS)" } else { "" };
        log::info!("node {}: listening on {local_addr}{tls_note}", config.name);
        let stop = Arc::new(AtomicBool::new(false));
        let interp = interp::Interpreter::new(
            vm,
            Arc::clone(&handoff),
            Arc::clone(&stop),
            Arc::clone(&stats),
            config.spin,
            durable,
        );

        let reactor = spawn_node_thread(format!("{}/reactor", config.name), move || reactor.run())?;
        let interp = spawn_node_thread(format!("{}/interp", config.name), move || interp.run())
            .inspect_err(|_| {
                // The reactor alone would hold the port for ever.
                handoff.send_commands(&mut vec![Command::Shutdown]);
            })?;
        Ok(Node {
            name: config.name,
            local_addr,
            http_addr,
            handoff,
            stop,
            stats,
            reactor: Some(reactor),
            interp: Some(interp),
        })
    }

    /// This node's `machine_id`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What the node has counted so far (calls in and out, failures).
    pub fn stats(&self) -> &NodeStats {
        &self.stats
    }

    /// Where `/health`, `/metrics`, `/events` and `/` are served
    /// (`NodeConfig::http`, with the real port when 0 was asked).
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The address the listener is bound to (the real port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Runs `program` as a new chain on this node's interpreter; its result
    /// arrives on the returned channel. For embedding and benchmarks: the
    /// program may call objects anywhere in the cluster.
    /// Once the node has stopped, the result is `Err("node stopped")`.
    /// A program that ends with `Nothing` after one of its calls failed
    /// (a `call` answers `Nothing` when it fails) gets `Err` with that
    /// call's reason ("object not found: 42", "machine beta is not
    /// connected ...") instead of `Ok(Nothing)`: a result that says why.
    /// The value arrives on the caller's thread: one nested deeper than
    /// that thread's stack allows (a recursion's answer gains a `Just` per
    /// call) must be taken apart level by level there. Dropping, printing
    /// (`Display`, `Debug`), cloning or comparing it whole recurses once
    /// per level, and overflows that stack.
    pub fn submit(&self, program: Program) -> Receiver<Result<Val, String>> {
        let (reply, result) = std::sync::mpsc::channel();
        self.handoff
            .send_events(&mut vec![Event::Run { program, reply }]);
        interp::refuse_runs(self.handoff.events_unclaimed());
        result
    }

    /// Runs `look` with the node's vm on the interpreter thread, between
    /// two steps of its chains, and sends back what it answers: for
    /// reading the directory or the objects from outside (the demo waits
    /// for `pong` this way), or host-side setup. Keep it short: the node
    /// serves nothing while it runs. Once the node has stopped, the
    /// channel closes without an answer; so does it when `look` panics
    /// (the node serves on, and whatever `look` changed before it
    /// panicked stays changed: keep a query that changes the vm simple).
    /// On a durable node the answer is sent at once, not held for the
    /// disk as a call's is: what `look` changed is stored by the next
    /// group commit, and a crash before it loses the change. A setup that
    /// must be durable before anything depends on it runs as a program
    /// ([`Node::submit`]), whose result waits for the disk.
    pub fn query<T: Send + 'static>(
        &self,
        look: impl FnOnce(&mut Vm) -> T + Send + 'static,
    ) -> Receiver<T> {
        let (answer, answered) = std::sync::mpsc::channel();
        let query: handoff::Query = Box::new(move |vm| {
            let _ = answer.send(look(vm));
        });
        self.handoff.send_events(&mut vec![Event::Query(query)]);
        drop(self.handoff.events_unclaimed());
        answered
    }

    /// Asks both threads to stop; `wait` then returns once they have. The
    /// interpreter stops first, and sends what it still had to send (on a
    /// durable node, the answers its last writes held, once on disk)
    /// before it tells the reactor to close the connections, which takes
    /// up to a second more (`reactor::closing`). A store that never
    /// answers keeps the interpreter, and so `wait`, waiting; the reactor
    /// closes the connections after `reactor::STOP_GRACE` all the same.
    pub fn shutdown(&self) {
        // First, so that it comes before the interpreter's Shutdown: the
        // reactor stops accepting at once.
        self.handoff.send_commands(&mut vec![Command::StopAsked]);
        // ORDERING: Release pairs with the interpreter's Acquire load, so
        // it sees the request after its next unpark.
        self.stop.store(true, Ordering::Release);
        self.handoff.unpark_interpreter();
    }

    /// Waits for the interpreter to end, then stops and joins the reactor.
    /// A node runs until told to stop: this blocks until [`Node::shutdown`]
    /// is called (from another thread, or through a clone of an `Arc`
    /// holding the node), a signal arrives (`NodeConfig::handle_signals`),
    /// or a thread of the node fails.
    pub fn wait(mut self) -> Outcome {
        let outcome = self
            .interp
            .take()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|_| Outcome::Failed("interpreter thread panicked".into()))
            })
            .unwrap_or(Outcome::Stopped);
        self.stop_reactor();
        outcome
    }

    fn stop_reactor(&mut self) {
        if let Some(reactor) = self.reactor.take() {
            self.handoff.send_commands(&mut vec![Command::Shutdown]);
            let _ = reactor.join();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if self.interp.is_some() {
            self.shutdown();
            if let Some(t) = self.interp.take() {
                let _ = t.join();
            }
        }
        self.stop_reactor();
    }
}

/// Loads every stored object into `vm` before the node serves anything,
/// then turns on change tracking. Runs on a node-sized stack: a stored
/// state is as deep as the behaviors made it.
fn restore(vm: Vm, store: Store) -> io::Result<(Vm, Store)> {
    let started = Instant::now();
    let load = spawn_node_thread("store-load".into(), move || {
        let mut vm = vm;
        let loaded = store.load(|id, record| {
            vm.restore_object(id, record)
                .map_err(|e| format!("{e}: run it with a program that registers that behavior"))
        });
        (vm, store, loaded)
    })?;
    let (mut vm, store, loaded) = load
        .join()
        .map_err(|_| io::Error::other("loading the store panicked"))?;
    let loaded = loaded.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    log::info!(
        "store {}: loaded {loaded} object{} in {:.2?}",
        store.file().display(),
        if loaded == 1 { "" } else { "s" },
        started.elapsed()
    );
    vm.track_changes();
    Ok((vm, store))
}

/// The listener's bind error, naming the address.
/// `what` says which listener ("HTTP " for `--http`'s, "" for the peer
/// port's).
fn bind_error(what: &str, addr: SocketAddr, e: io::Error) -> io::Error {
    let msg = match e.kind() {
        io::ErrorKind::AddrInUse => format!("{what}address {addr} in use"),
        _ => format!("cannot listen on {what}address {addr}: {e}"),
    };
    io::Error::new(e.kind(), msg)
}

/// This life's `boot`, as `hello` carries it: the boot time in unix
/// milliseconds, shifted left by 6 (so that, until the clamp in
/// [`first_counter`], it is also where the life's counter starts).
pub fn boot_epoch_counter() -> u64 {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    (ms << 6).max(1)
}

/// Room every life keeps to mint ids in, even one that starts at the
/// clamp: 2^40, a thousand ids a second for 35 years.
const MINTING_ROOM: u64 = 1 << 40;

/// Where a life booted at `boot` ([`boot_epoch_counter`]) starts its
/// ObjectId counter.
///
/// A restarted node must never mint an id its previous life handed out,
/// or a stale reference would reach a new, unrelated object. Counting from
/// the boot millisecond gives each life a fresh range without any storage:
/// a life can mint 64 ids per millisecond it has been up (64,000 a second,
/// on average over its life) before it reaches the range of a life booted
/// later. The 48-bit counter holds this until late in the year 2108
/// (`2^48 - 2^40`, leaving each life `MINTING_ROOM`, 2^40 ids); past that, every
/// life starts at the same counter, which only a node with a store (it
/// also starts past its stored high-water mark) survives: `Node::start`
/// warns.
pub fn first_counter(boot: u64) -> u64 {
    boot.clamp(1, crate::vm::ids::COUNTER_MAX - MINTING_ROOM)
}

/// Stack reserved for each of a node's two threads. Call depth never
/// touches the Rust stack, but values do: `Val` is a plain enum (so that
/// behaviors can move out of it), and dropping, cloning or comparing one
/// recurses once per level of nesting. The deepest value the vm builds by
/// itself is a result wrapped in one `Just` per nested call, up to
/// `max_call_depth` (4M) levels: under 64 bytes of stack a level in
/// release builds, under 200 in debug ones. Only pages a deep value
/// touches are ever backed by memory; the rest is address space. Where
/// address space is rationed (strict overcommit, `ulimit -v`), the
/// threads fall back to the default stack, with a warning.
pub const THREAD_STACK: usize = 1 << 30;

/// Spawns one of a node's threads on a [`THREAD_STACK`] stack, or on the
/// default one where the system refuses that much.
fn spawn_node_thread<T: Send + 'static>(
    name: String,
    run: impl FnOnce() -> T + Send + 'static,
) -> io::Result<JoinHandle<T>> {
    let builder = std::thread::Builder::new().name(name);
    match node_stack_size() {
        Some(size) => builder.stack_size(size).spawn(run),
        None => builder.spawn(run),
    }
}

/// [`THREAD_STACK`] if a thread that size can be started (probed once,
/// with a thread that does nothing: a failed spawn would lose the real
/// thread's closure), else `None`, the default.
fn node_stack_size() -> Option<usize> {
    static SIZE: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    *SIZE.get_or_init(|| {
        match std::thread::Builder::new()
            .stack_size(THREAD_STACK)
            .spawn(|| {})
        {
            Ok(probe) => {
                let _ = probe.join();
                Some(THREAD_STACK)
            }
            Err(e) => {
                log::warn!(
                    "no {} MiB thread stack here ({e}); node threads use the default, \
                     which a deeply nested value may overflow",
                    THREAD_STACK >> 20
                );
                None
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `unix_ms << 6`, as `boot_epoch_counter` computes it at that time.
    fn boot_at(unix_ms: u64) -> u64 {
        unix_ms << 6
    }

    #[test]
    fn lives_get_fresh_counters_until_2108_and_keep_room_to_mint_after() {
        let now = boot_epoch_counter();
        assert_eq!(first_counter(now), now, "today's life starts at its boot");
        // 2040 and 2100: two lives a second apart still start apart.
        for year_ms in [2_208_988_800_000u64, 4_102_444_800_000] {
            let (earlier, later) = (boot_at(year_ms), boot_at(year_ms + 1000));
            assert!(first_counter(earlier) < first_counter(later), "{year_ms}");
        }
        // 2110: clamped, with room left to mint.
        let clamped = first_counter(boot_at(4_418_000_000_000));
        assert_eq!(clamped, crate::vm::ids::COUNTER_MAX - MINTING_ROOM);
        assert_eq!(first_counter(0), 1, "a clock before 1970 still starts at 1");
    }
}
