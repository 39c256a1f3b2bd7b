//! `avm-node`: one avm node, or the whole PingPong demo on one machine.
//!
//! ```text
//! cargo run -p avm-node -- demo-local --rounds 3
//! avm-node --name beta  --port 9002 --peer alpha:9001 --demo
//! avm-node --name alpha --port 9001 --peer beta:9002 --demo --rounds 3
//! avm-node --name bank1 --port 9003 --bank-accounts 4   # four `account`s of 1000
//! avm-node --name alpha --port 9001 --peer beta.example:9002 \
//!     --tls-cert alpha.pem --tls-key alpha.key --tls-ca ca.pem   # mutual TLS
//! ```

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use argh::FromArgs;

use avm::demo::{self, DemoReport};
use avm::node::{defaults, Node, NodeConfig, Outcome, TlsFiles, NODE_STOPPED};
use avm::vm::{BehaviorRegistry, PureRegistry};

// Every default below names its constant in `avm::node::defaults`; the
// "(default ...)" in a flag's doc comment is checked against the same
// constant by `help_states_the_defaults` (argh cannot put a constant into
// help text).

/// An avm node: hosts objects, serves calls from peers over TCP, and can
/// run the distributed PingPong demo. Logging on stderr: RUST_LOG=LEVEL (default info;
/// error|warn|info|debug|trace|off), per module too, as in RUST_LOG=warn,avm::protocol=debug.
#[derive(FromArgs, Debug)]
struct Args {
    /// this node's machine_id, as peers will know it (required unless a subcommand is given)
    #[argh(option)]
    name: Option<String>,

    /// TCP port to listen on; 0 picks a free one (required unless a subcommand is given)
    #[argh(option)]
    port: Option<u16>,

    /// address to listen on; other machines can reach the node only if this is not
    /// loopback, e.g. --bind 0.0.0.0 (default 127.0.0.1)
    #[argh(option, default = "defaults::BIND")]
    bind: IpAddr,

    /// a peer to connect to as HOST:PORT (such as alpha:9001), redialled with backoff until it answers; repeatable
    #[argh(option)]
    peer: Vec<String>,

    /// run the PingPong demo: without --rounds this node creates `pong` and serves until
    /// stopped; with --rounds it waits for a `pong`, creates `ping`, runs and exits
    #[argh(switch)]
    demo: bool,

    /// number of PingPong rounds to run (with --demo; makes this node the orchestrator)
    #[argh(option)]
    rounds: Option<u64>,

    /// top 16 bits of every ObjectId this node creates, unique in the cluster
    /// (default: the listening port; set it when nodes share a port number)
    #[argh(option)]
    node_prefix: Option<u16>,

    /// largest frame accepted or sent, at least 4 KiB; bytes, or with KiB,
    /// MiB, GiB as in 64KiB (default 16 MiB)
    #[argh(option, default = "defaults::MAX_FRAME", from_str_fn(parse_size))]
    max_frame: usize,

    /// seconds the orchestrator waits for a `pong` to appear before giving up (default 60)
    #[argh(option, default = "defaults::DEMO_WAIT.as_secs()")]
    demo_wait: u64,

    /// microseconds each thread keeps polling after activity before it sleeps;
    /// lower saves CPU, higher cuts latency (default 100)
    #[argh(option, default = "defaults::SPIN.as_micros() as u64")]
    spin_us: u64,

    /// milliseconds between keepalive pings; a peer silent for 3 intervals is down (default 1000)
    #[argh(option, default = "defaults::KEEPALIVE.as_millis() as u64")]
    keepalive_ms: u64,

    /// milliseconds a remote call may wait while its call chain shows no progress
    /// before it fails with a timeout (default 30000)
    #[argh(option, default = "defaults::CALL_TIMEOUT.as_millis() as u64")]
    call_timeout_ms: u64,

    /// how much may wait to be sent to a peer that takes none of it for 3 keepalive
    /// intervals before it is disconnected (twice this, whatever it takes); at least
    /// 1 MiB and --max-frame; bytes, or with KiB, MiB, GiB (default 64 MiB)
    #[argh(
        option,
        default = "defaults::MAX_WRITE_BUFFER",
        from_str_fn(parse_size)
    )]
    max_write_buffer: usize,

    /// most local calls in progress on this node, all call chains together,
    /// before the next one fails; bounds behaviors that recurse without end
    /// (default 4194304)
    #[argh(option, default = "defaults::MAX_CALL_DEPTH")]
    max_call_depth: usize,

    /// have this many bank `account` objects (see avm::demo::bank): creates them at
    /// start, or, with --data-dir, only those the store does not already hold
    #[argh(option)]
    bank_accounts: Option<u64>,

    /// opening balance of each account made by --bank-accounts (default 1000)
    #[argh(option, default = "demo::bank::DEFAULT_BALANCE")]
    bank_balance: u64,

    /// most calls that may wait for one object's turn (an object runs one call at a
    /// time); one more is refused at once as busy (default 1024)
    #[argh(option, default = "defaults::MAX_WAITING")]
    max_waiting: usize,

    /// serve health (/health), Prometheus metrics (/metrics), the live trace
    /// (/events) and a cluster page (/) over HTTP at ADDR: a port (bound on
    /// 127.0.0.1) or HOST:PORT. Off without it
    #[argh(option, from_str_fn(parse_http_addr))]
    http: Option<std::net::SocketAddr>,

    /// keep this node's objects in a store in DIR (created if absent): they survive a
    /// crash or restart, with their ids, and an answer leaves the node only once the
    /// change it reports is on disk. Without it, objects live in memory only
    #[argh(option)]
    data_dir: Option<PathBuf>,

    /// file holding the cluster key every node of the cluster shares; peers must
    /// prove they know it (mode 0600). Without it: $HOME/.avm/cluster-key, created on
    /// first use
    #[argh(option)]
    cluster_key_file: Option<PathBuf>,

    /// mutual TLS: this node's certificate chain (PEM), signed by the --tls-ca CA and
    /// naming the host peers dial it by; with --tls-key and --tls-ca, the node speaks
    /// only TLS
    #[argh(option)]
    tls_cert: Option<PathBuf>,

    /// mutual TLS: the private key of --tls-cert (PEM; only its owner may read it: chmod 600)
    #[argh(option)]
    tls_key: Option<PathBuf>,

    /// mutual TLS: the CA certificate (PEM) that every peer's certificate must be
    /// signed by
    #[argh(option)]
    tls_ca: Option<PathBuf>,

    /// print the version and exit
    #[argh(switch)]
    version: bool,

    #[argh(subcommand)]
    command: Option<Command>,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
enum Command {
    DemoLocal(DemoLocal),
    Status(Status),
    Tail(Tail),
}

/// Print a running node's health: who it is, its objects, calls and peers
/// (its /health, for a terminal).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "status")]
struct Status {
    /// the node's --http address: a port (127.0.0.1) or HOST:PORT
    #[argh(option, from_str_fn(parse_http_addr))]
    http: std::net::SocketAddr,
}

/// Follow a running node's trace (its /events) as readable lines, until
/// Ctrl-C; if the node stops or goes silent (no heartbeat for 15 s), says
/// so and exits 1.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "tail")]
struct Tail {
    /// the node's --http address: a port (127.0.0.1) or HOST:PORT
    #[argh(option, from_str_fn(parse_http_addr))]
    http: std::net::SocketAddr,
    /// only events about this object id (decimal, or 0x-hexadecimal)
    #[argh(option, from_str_fn(parse_id))]
    object: Option<u64>,
    /// only events of this chain id (decimal, or 0x-hexadecimal as the logs
    /// print it)
    #[argh(option, from_str_fn(parse_id))]
    chain: Option<u64>,
    /// only these kinds, comma-separated: create, destroy, call, state, tx,
    /// call_out, call_in, resumed, error, move
    #[argh(option)]
    kind: Option<String>,
}

impl Tail {
    /// The `/events` query these flags ask for.
    fn query(&self) -> String {
        let mut parts = Vec::new();
        if let Some(o) = self.object {
            parts.push(format!("object={o}"));
        }
        if let Some(c) = self.chain {
            parts.push(format!("chain={c}"));
        }
        if let Some(k) = &self.kind {
            parts.push(format!("kind={k}"));
        }
        parts.join("&")
    }
}

/// Run the whole distributed PingPong on this machine: two nodes (beta hosts
/// pong, alpha hosts ping and orchestrates), each with its own reactor and
/// interpreter threads, talking over real loopback TCP.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "demo-local")]
struct DemoLocal {
    /// number of PingPong rounds (default 3)
    #[argh(option, default = "3")]
    rounds: u64,
}

/// Small blocks (continuations, answers) come from a per-thread cache in
/// front of glibc: 7% fewer instructions per remote call, the caller's
/// and the callee's threads together (`avm::heap::SmallBlocks`).
#[global_allocator]
static HEAP: avm::heap::SmallBlocks = avm::heap::SmallBlocks;

fn main() -> ExitCode {
    // Before any thread starts: freed memory goes back after a burst.
    avm::heap::return_freed_memory();
    avm::logger::init();
    let args: Args = argh::from_env();
    if args.version {
        println!("avm-node {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let argv: Vec<String> = std::env::args().collect();
    if let (Some(_), Some(flag)) = (&args.command, flag_before_subcommand(&argv)) {
        eprintln!(
            "error: {flag} is a flag of a node, and is not used with a subcommand \
             (a subcommand's flags come after its name: avm-node demo-local --rounds 5)"
        );
        return ExitCode::FAILURE;
    }
    let result = match args.command {
        Some(Command::DemoLocal(ref d)) => demo_local(d.rounds),
        Some(Command::Status(ref s)) => avm::observe::cli::status(s.http).map(|text| {
            say(std::io::stdout(), &text);
            ExitCode::SUCCESS
        }),
        Some(Command::Tail(ref t)) => {
            avm::observe::cli::tail(t.http, &t.query(), std::io::stdout().lock())
                .map(|()| ExitCode::SUCCESS)
        }
        None => run_node(&args),
    };
    match result {
        Ok(code) => code,
        Err(msg) => {
            say(std::io::stderr(), &format!("error: {msg}"));
            ExitCode::FAILURE
        }
    }
}

/// A line of output. A reader that went away (`| head`) is not a reason
/// to panic: the rest is simply not read.
fn say(mut to: impl std::io::Write, text: &str) {
    let _ = writeln!(to, "{text}");
}

fn run_node(args: &Args) -> Result<ExitCode, String> {
    let name = args
        .name
        .clone()
        .ok_or("--name is required (or use `demo-local`)")?;
    if name.is_empty() {
        return Err("--name must not be empty".into());
    }
    let port = args
        .port
        .ok_or("--port is required (0 picks a free port)")?;
    if args.rounds.is_some() && !args.demo {
        return Err("--rounds only makes sense with --demo".into());
    }
    if given("--demo-wait") && args.rounds.is_none() {
        return Err("--demo-wait only makes sense with --demo --rounds (the orchestrator)".into());
    }
    if given("--bank-balance") && args.bank_accounts.is_none() {
        return Err("--bank-balance only makes sense with --bank-accounts".into());
    }
    if args.max_waiting == 0 {
        return Err("--max-waiting must be at least 1".into());
    }
    // Said by flag here; `NodeConfig::check` would name the field.
    if args.keepalive_ms == 0 {
        return Err("--keepalive-ms must be at least 1".into());
    }
    if args.call_timeout_ms == 0 {
        return Err("--call-timeout-ms must be at least 1".into());
    }
    if args.max_write_buffer < defaults::MIN_WRITE_BUFFER {
        return Err("--max-write-buffer must be at least 1MiB".into());
    }
    if args.max_frame < defaults::MIN_FRAME {
        return Err("--max-frame must be at least 4KiB".into());
    }
    if args.max_write_buffer < args.max_frame {
        return Err(format!(
            "--max-write-buffer ({} bytes) must be at least --max-frame ({} bytes)",
            args.max_write_buffer, args.max_frame
        ));
    }
    for peer in &args.peer {
        check_peer(peer).map_err(|why| format!("--peer {peer}: {why}"))?;
    }
    let early = EarlyStop::install()?;
    // Before the node starts: a signal at any moment from here on is a
    // stop that was asked for (see `report_unless_interrupted`).
    let interrupted = interrupted_flag()?;
    let mut config = NodeConfig::new(&name);
    config.bind = args.bind;
    config.port = port;
    config.peers = args.peer.clone();
    config.node_prefix = args.node_prefix;
    config.max_frame = args.max_frame;
    config.spin = Duration::from_micros(args.spin_us);
    config.max_call_depth = args.max_call_depth;
    config.max_waiting = args.max_waiting;
    if let Some(path) = &args.cluster_key_file {
        config.cluster_key = Some(avm::node::key::load(path)?);
    }
    config.tls = tls_files(args)?;
    config.keepalive = Duration::from_millis(args.keepalive_ms);
    config.call_timeout = Duration::from_millis(args.call_timeout_ms);
    config.max_write_buffer = args.max_write_buffer;
    config.handle_signals = true;
    config.data_dir = args.data_dir.clone();
    config.http = args.http;
    if config.data_dir.is_some() {
        keep_running_past_file_size_limit()?;
    }
    // Every behavior this binary has, on every node: a store may hold
    // objects of any of them, whatever flags this run was given.
    let mut behaviors = BehaviorRegistry::new();
    demo::pingpong::register(&mut behaviors);
    demo::bank::register(&mut behaviors);
    demo::battleship::register(&mut behaviors);
    let node = Node::start(config, behaviors, PureRegistry::new())
        .map_err(|e| format!("cannot start node `{name}`: {e}"))?;
    if early.handed_over() {
        let e = format!("SIGTERM or SIGINT while starting; {NODE_STOPPED}");
        return stopped_while_starting(node, e);
    }
    if let Some(wanted) = args.bank_accounts {
        if let Err(e) = open_bank(&node, wanted, args.bank_balance) {
            return stopped_while_starting(node, e);
        }
    }
    match (args.demo, args.rounds) {
        (false, _) => finish(node.wait()),
        (true, None) => {
            if let Err(e) = demo::serve(&node) {
                return stopped_while_starting(node, e);
            }
            finish(node.wait())
        }
        (true, Some(rounds)) => {
            let played = demo::orchestrate(&node, rounds, Duration::from_secs(args.demo_wait));
            node.shutdown();
            node.wait();
            report_unless_interrupted(played, &interrupted)
        }
    }
}

/// The demo's report, unless a signal stopped the node first: then its
/// calls failed because this node stopped as asked, which is no fault of
/// the demo or of its peer, and the exit is 0 as for any stop.
fn report_unless_interrupted(
    played: Result<DemoReport, String>,
    interrupted: &std::sync::atomic::AtomicBool,
) -> Result<ExitCode, String> {
    // ORDERING: Relaxed: set by the signal that stopped the node, whose
    // end the caller's `wait` has seen.
    let interrupted = interrupted.load(std::sync::atomic::Ordering::Relaxed);
    if interrupted && !played.as_ref().is_ok_and(DemoReport::succeeded) {
        // At WARN: a script that stopped a demo it thought hung sees why
        // the exit is 0.
        log::warn!("the demo was interrupted (SIGINT or SIGTERM) before it finished; exit 0");
        return Ok(ExitCode::SUCCESS);
    }
    report(played)
}

/// Whether `flag` is on the command line: argh fills in defaults, so a
/// flag that means something only beside another is told apart this way.
fn given(flag: &str) -> bool {
    std::env::args().any(|a| a == flag)
}

/// A flag raised by SIGINT or SIGTERM, beside the node's own handling
/// of them (which stops it): the orchestrator's calls then fail, and it
/// must tell a stop it was asked for from a failed demo.
fn interrupted_flag() -> Result<std::sync::Arc<std::sync::atomic::AtomicBool>, String> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let flag = std::sync::Arc::default();
    for signal in [SIGINT, SIGTERM] {
        signal_hook::flag::register(signal, std::sync::Arc::clone(&flag))
            .map_err(|e| format!("cannot handle signal {signal}: {e}"))?;
    }
    Ok(flag)
}

/// `--bank-accounts`: makes the accounts the store did not restore.
fn open_bank(node: &Node, wanted: u64, balance: u64) -> Result<(), String> {
    let held = local_objects_of(node, demo::bank::ACCOUNT)?;
    let n = wanted.saturating_sub(held);
    if held > 0 {
        log::info!("bank: {held} accounts restored from the store");
    }
    if n > 0 {
        demo::bank::open(node, n, balance)?;
        log::info!("bank: created {n} accounts; {balance} each");
    }
    Ok(())
}

/// A step of starting up (the bank's accounts, the demo's `pong`) failed
/// with `e`. If it failed because the node was told to stop meanwhile (a
/// SIGTERM while a million accounts are made, say), its error names the
/// stop, and that is the clean stop that was asked for: exit 0, as any
/// other. Otherwise the node is stopped and `e` is the error.
fn stopped_while_starting(node: Node, e: String) -> Result<ExitCode, String> {
    node.shutdown();
    match node.wait() {
        Outcome::Stopped if e.contains(NODE_STOPPED) => {
            log::info!("stopped before it finished starting ({e})");
            Ok(ExitCode::SUCCESS)
        }
        Outcome::Stopped => Err(e),
        Outcome::Failed(reason) => Err(format!("{e} ({reason})")),
    }
}

/// SIGTERM and SIGINT from the process's start until the node's reactor
/// handles them itself. Without this, one that came while the node was
/// still starting (loading its key and certificates, opening its store,
/// which takes a while when large) killed the process by signal; now it is
/// noted and the node stops as soon as it has started, exit 0. A second
/// one ends the process at once, exit 1, so that a start that hangs can
/// still be interrupted.
struct EarlyStop {
    /// Raised by the first signal.
    asked: Arc<AtomicBool>,
    ids: Vec<signal_hook::SigId>,
}

impl EarlyStop {
    fn install() -> Result<EarlyStop, String> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let asked = Arc::new(AtomicBool::new(false));
        let mut ids = Vec::new();
        for signal in [SIGTERM, SIGINT] {
            let failed = |e| format!("cannot handle signal {signal}: {e}");
            // The exit first: it looks at the flag before the flag's own
            // action raises it, so only a second signal exits.
            let flag = Arc::clone(&asked);
            ids.push(
                signal_hook::flag::register_conditional_shutdown(signal, 1, flag)
                    .map_err(failed)?,
            );
            let flag = Arc::clone(&asked);
            ids.push(signal_hook::flag::register(signal, flag).map_err(failed)?);
        }
        Ok(EarlyStop { asked, ids })
    }

    /// The node has started, and its reactor handles the signals now:
    /// hands them over, and answers whether one came before.
    fn handed_over(self) -> bool {
        for id in self.ids {
            signal_hook::low_level::unregister(id);
        }
        // ORDERING: Relaxed: a signal whose store this misses came after
        // the reactor's own handler was in place, and stops the node that
        // way.
        self.asked.load(Ordering::Relaxed)
    }
}

/// The first flag in `argv` (the program's name first) that comes
/// before a subcommand's name, if any: argh takes it as the node's, and
/// with a subcommand it would do nothing.
fn flag_before_subcommand(argv: &[String]) -> Option<&str> {
    const SUBCOMMANDS: [&str; 3] = ["demo-local", "status", "tail"];
    let at = argv
        .iter()
        .position(|a| SUBCOMMANDS.contains(&a.as_str()))?;
    argv.get(1..at)?
        .iter()
        .find(|a| a.starts_with('-'))
        .map(String::as_str)
}

/// `--http`: `PORT` (loopback) or `HOST:PORT`, the host a name or an
/// address (a name's first IPv4 address, else its first).
fn parse_http_addr(text: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::ToSocketAddrs;
    if let Ok(port) = text.parse::<u16>() {
        return Ok(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    }
    let expected = || format!("`{text}`: expected PORT or HOST:PORT, as in 9101 or 0.0.0.0:9101");
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let addrs: Vec<_> = text.to_socket_addrs().map_err(|_| expected())?.collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(expected)
}

/// `--chain` and `--object`: decimal, or hexadecimal after `0x` (as the
/// logs print chain ids).
fn parse_id(text: &str) -> Result<u64, String> {
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.map_err(|_| format!("`{text}`: expected an id, decimal or 0x-hexadecimal"))
}

/// How many objects of `behavior` the node hosts (restored ones, at start).
fn local_objects_of(node: &Node, behavior: &str) -> Result<u64, String> {
    let behavior = behavior.to_string();
    node.query(move |vm| {
        vm.local_objects()
            .filter(|(_, b)| ***b == *behavior)
            .count() as u64
    })
    .recv()
    .map_err(|_| format!("{NODE_STOPPED} while starting"))
}

/// A process under a file-size limit (`ulimit -f`) is killed by SIGXFSZ
/// when a write would pass it. With a handler installed, the write fails
/// with EFBIG instead, and the store reports it as it would a full disk:
/// the answers it held fail, the node lives on.
fn keep_running_past_file_size_limit() -> Result<(), String> {
    let noted = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGXFSZ, noted)
        .map(drop)
        .map_err(|e| format!("cannot handle SIGXFSZ: {e}"))
}

/// The `--tls-*` files: all three or none.
fn tls_files(args: &Args) -> Result<Option<TlsFiles>, String> {
    match (&args.tls_cert, &args.tls_key, &args.tls_ca) {
        (None, None, None) => Ok(None),
        (Some(cert), Some(key), Some(ca)) => Ok(Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            ca: ca.clone(),
        })),
        (cert, key, ca) => {
            let missing: Vec<&str> = [
                ("--tls-cert", cert.is_none()),
                ("--tls-key", key.is_none()),
                ("--tls-ca", ca.is_none()),
            ]
            .into_iter()
            .filter_map(|(flag, missing)| missing.then_some(flag))
            .collect();
            Err(format!(
                "TLS needs --tls-cert, --tls-key and --tls-ca together; missing: {}",
                missing.join(", ")
            ))
        }
    }
}

/// Checks a `--peer` value's syntax: HOST:PORT with a port from 1 to
/// 65535. No lookup: the reactor resolves the host at every dial.
fn check_peer(spec: &str) -> Result<(), String> {
    let expected = |host: &str| format!("expected HOST:PORT such as {host}:9001");
    let split = spec.rsplit_once(':').filter(|_| !spec.ends_with(']'));
    let Some((host, port)) = split.filter(|(_, port)| !port.is_empty()) else {
        let host = spec.trim_end_matches(':');
        let host = if host.is_empty() { "alpha" } else { host };
        return Err(format!("no port; {}", expected(host)));
    };
    if host.is_empty() {
        return Err(format!("no host; {}", expected("alpha")));
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err("an IPv6 address goes in brackets, as in [::1]:9001".into());
    }
    match port.parse::<u16>() {
        Ok(port) if port > 0 => Ok(()),
        _ => Err(format!(
            "port `{port}` is not a number from 1 to 65535; {}",
            expected(host)
        )),
    }
}

/// A size flag's value: plain bytes, or a number with a binary unit
/// (`64KiB`, `16 MiB`, `1GiB`; units in any case).
fn parse_size(text: &str) -> Result<usize, String> {
    const EXPECTED: &str =
        "expected bytes, or a number with KiB, MiB or GiB, such as 64KiB or 16MiB";
    let text = text.trim();
    let end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(end);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "kib" => 10,
        "mib" => 20,
        "gib" => 30,
        _ => return Err(format!("`{text}` is not a size: {EXPECTED}")),
    };
    let too_large = || format!("`{text}` is too large for this machine");
    let n: usize = digits
        .parse()
        .map_err(|e: std::num::ParseIntError| match e.kind() {
            std::num::IntErrorKind::PosOverflow => too_large(),
            _ => format!("`{text}` is not a size: {EXPECTED}"),
        })?;
    n.checked_mul(1 << shift).ok_or_else(too_large)
}

fn demo_local(rounds: u64) -> Result<ExitCode, String> {
    let loopback = IpAddr::from([127, 0, 0, 1]);
    // Before either node starts (see `report_unless_interrupted`).
    let interrupted = interrupted_flag()?;
    let behaviors = || {
        let mut behaviors = BehaviorRegistry::new();
        demo::pingpong::register(&mut behaviors);
        behaviors
    };
    // Both nodes are in this process: a key of their own, never written
    // (no ~/.avm needed, none created).
    let mut secret = [0; 32];
    getrandom::getrandom(&mut secret).map_err(|e| format!("no random key: {e}"))?;
    let key = avm::node::key::ClusterKey::from_bytes(&secret)?;
    let mut beta = NodeConfig::new("beta");
    beta.bind = loopback;
    beta.handle_signals = true;
    beta.cluster_key = Some(key.clone());
    let beta = Node::start(beta, behaviors(), PureRegistry::new())
        .map_err(|e| format!("cannot start beta: {e}"))?;
    demo::serve(&beta)?;

    let mut alpha = NodeConfig::new("alpha");
    alpha.bind = loopback;
    alpha.handle_signals = true;
    alpha.peers = vec![beta.local_addr().to_string()];
    alpha.cluster_key = Some(key);
    let alpha = Node::start(alpha, behaviors(), PureRegistry::new())
        .map_err(|e| format!("cannot start alpha: {e}"))?;
    let played = demo::orchestrate(&alpha, rounds, Duration::from_secs(10));
    alpha.shutdown();
    alpha.wait();
    beta.shutdown();
    beta.wait();
    report_unless_interrupted(played, &interrupted)
}

/// A node that served until stopped: 0, unless its reactor failed.
fn finish(outcome: Outcome) -> Result<ExitCode, String> {
    match outcome {
        Outcome::Stopped => Ok(ExitCode::SUCCESS),
        Outcome::Failed(reason) => Err(reason),
    }
}

/// Prints the demo's report; 0 only for the promised result.
fn report(played: Result<DemoReport, String>) -> Result<ExitCode, String> {
    let report = played.map_err(|e| format!("demo failed: {e}"))?;
    say(std::io::stdout(), &report.to_string());
    if report.succeeded() {
        return Ok(ExitCode::SUCCESS);
    }
    let why = match &report.first_failure {
        Some(reason) => format!(" (first failed call: {reason})"),
        None => String::new(),
    };
    Err(format!(
        "the demo ended with {} instead of {}{why}",
        report.result,
        report.expected()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(args: &[&str]) -> Result<Args, argh::EarlyExit> {
        Args::from_args(&["avm-node"], args)
    }

    /// Each option in `--help` with the text of its "(default ...)", if any.
    fn stated_defaults() -> HashMap<String, String> {
        let help = match parse(&["--help"]) {
            Err(exit) if exit.status.is_ok() => exit.output,
            other => panic!("--help gave {other:?}"),
        };
        // An option starts at "  --flag"; its description continues on
        // lines indented deeper; anything else ends it.
        let mut options: Vec<(String, String)> = Vec::new();
        let mut open = false;
        for line in help.lines() {
            if let Some(rest) = line.strip_prefix("  --") {
                let (flag, desc) = rest.split_once(' ').unwrap_or((rest, ""));
                options.push((format!("--{flag}"), desc.trim().to_owned()));
                open = true;
            } else if open && line.starts_with("    ") {
                let desc = &mut options.last_mut().unwrap().1;
                desc.push(' ');
                desc.push_str(line.trim());
            } else {
                open = false;
            }
        }
        assert!(options.len() > 10, "no options found in:\n{help}");
        options
            .into_iter()
            .filter_map(|(flag, desc)| {
                let (_, rest) = desc.split_once("(default ")?;
                let (value, _) = rest.split_once(')')?;
                Some((flag, value.to_owned()))
            })
            .collect()
    }

    #[test]
    fn help_states_the_defaults() {
        let stated = stated_defaults();
        let said = |flag: &str| {
            stated
                .get(flag)
                .unwrap_or_else(|| panic!("{flag} states no default: {stated:?}"))
                .as_str()
        };
        assert_eq!(said("--bind").parse(), Ok(defaults::BIND));
        assert_eq!(parse_size(said("--max-frame")), Ok(defaults::MAX_FRAME));
        assert_eq!(said("--max-frame"), "16 MiB");
        assert_eq!(
            parse_size(said("--max-write-buffer")),
            Ok(defaults::MAX_WRITE_BUFFER)
        );
        let secs = defaults::DEMO_WAIT.as_secs().to_string();
        assert_eq!(said("--demo-wait"), secs);
        assert_eq!(said("--spin-us"), defaults::SPIN.as_micros().to_string());
        let keepalive = defaults::KEEPALIVE.as_millis().to_string();
        assert_eq!(said("--keepalive-ms"), keepalive);
        let timeout = defaults::CALL_TIMEOUT.as_millis().to_string();
        assert_eq!(said("--call-timeout-ms"), timeout);
        let depth = defaults::MAX_CALL_DEPTH.to_string();
        assert_eq!(said("--max-call-depth"), depth);
        let balance = demo::bank::DEFAULT_BALANCE.to_string();
        assert_eq!(said("--bank-balance"), balance);
        let waiting = defaults::MAX_WAITING.to_string();
        assert_eq!(said("--max-waiting"), waiting);
        assert_eq!(
            stated.len(),
            10,
            "a stated default this test does not check: {stated:?}"
        );
    }

    #[test]
    fn flags_default_to_the_constants() {
        let args = parse(&[]).unwrap();
        let config = NodeConfig::new("x");
        assert_eq!(args.bind, config.bind);
        assert_eq!(args.max_frame, config.max_frame);
        assert_eq!(Duration::from_secs(args.demo_wait), defaults::DEMO_WAIT);
        assert_eq!(Duration::from_micros(args.spin_us), config.spin);
        assert_eq!(Duration::from_millis(args.keepalive_ms), config.keepalive);
        assert_eq!(
            Duration::from_millis(args.call_timeout_ms),
            config.call_timeout
        );
        assert_eq!(args.max_write_buffer, config.max_write_buffer);
        assert_eq!(args.max_call_depth, config.max_call_depth);
        assert_eq!(args.bank_accounts, None);
        assert_eq!(args.bank_balance, demo::bank::DEFAULT_BALANCE);
        assert_eq!(args.max_waiting, config.max_waiting);
    }

    #[test]
    fn flags_before_a_subcommand_are_named() {
        let argv = |a: &[&str]| {
            let mut v = vec!["avm-node".to_string()];
            v.extend(a.iter().map(|s| s.to_string()));
            v
        };
        let before = |a: &[&str]| flag_before_subcommand(&argv(a)).map(str::to_string);
        assert_eq!(
            before(&["--rounds", "5", "demo-local"]).as_deref(),
            Some("--rounds")
        );
        // A flag with a default too.
        let keepalive = before(&["--keepalive-ms", "500", "demo-local"]);
        assert_eq!(keepalive.as_deref(), Some("--keepalive-ms"));
        let http = before(&["--http", "9102", "status", "--http", "9103"]);
        assert_eq!(http.as_deref(), Some("--http"));
        assert_eq!(before(&["demo-local", "--rounds", "5"]), None);
        assert_eq!(before(&["tail", "--http", "9102"]), None);
        // No subcommand: a node, whatever its name.
        assert_eq!(before(&["--name", "x", "--port", "1"]), None);
    }

    #[test]
    fn ids_are_decimal_or_hexadecimal() {
        assert_eq!(parse_id("42"), Ok(42));
        assert_eq!(parse_id("0x2a"), Ok(42));
        assert_eq!(parse_id("0X2A"), Ok(42));
        assert!(parse_id("0xzz").unwrap_err().contains("0x-hexadecimal"));
        assert!(parse_id("-1").is_err());
    }

    #[test]
    fn http_addresses_take_a_port_an_address_or_a_name() {
        let loopback = |port| std::net::SocketAddr::from(([127, 0, 0, 1], port));
        assert_eq!(parse_http_addr("9102"), Ok(loopback(9102)));
        assert_eq!(parse_http_addr("127.0.0.1:9102"), Ok(loopback(9102)));
        assert_eq!(parse_http_addr("localhost:9102"), Ok(loopback(9102)));
        let err = parse_http_addr("no port").unwrap_err();
        assert!(err.contains("expected PORT or HOST:PORT"), "{err}");
    }

    #[test]
    fn parse_size_bytes_and_binary_units() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4096B"), Ok(4096));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("16 MiB"), Ok(16 << 20));
        assert_eq!(parse_size(" 16mib "), Ok(16 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
    }

    #[test]
    fn parse_size_refuses_what_it_cannot_read() {
        for bad in [
            "", "MiB", "16MB", "16M", "1.5MiB", "-1", "+5", "16 MiB x", "0x10",
        ] {
            let err = parse_size(bad).expect_err(bad);
            assert!(err.contains(&format!("`{}`", bad.trim())), "{err}");
            assert!(err.contains("such as 64KiB or 16MiB"), "{err}");
        }
        let most = usize::MAX >> 10;
        assert_eq!(parse_size(&format!("{most}KiB")), Ok(most << 10));
        let err = parse_size(&format!("{}KiB", most + 1)).unwrap_err();
        assert!(err.contains("too large"), "{err}");
        let err = parse_size(&format!("{}0", usize::MAX)).unwrap_err();
        assert!(err.contains("too large"), "{err}");
    }

    #[test]
    fn size_flags_take_units_and_name_a_bad_value() {
        let args = parse(&["--max-frame", "1MiB", "--max-write-buffer", "512KiB"]).unwrap();
        assert_eq!(
            (args.max_frame, args.max_write_buffer),
            (1 << 20, 512 << 10)
        );
        let err = parse(&["--max-frame", "16MB"]).unwrap_err();
        assert!(err.output.contains("--max-frame"), "{}", err.output);
        assert!(
            err.output.contains("`16MB` is not a size"),
            "{}",
            err.output
        );
    }

    #[test]
    fn check_peer_accepts_host_port() {
        for good in [
            "alpha:9001",
            "127.0.0.1:1",
            "[::1]:9001",
            "node.example:65535",
        ] {
            assert_eq!(check_peer(good), Ok(()), "{good}");
        }
    }

    #[test]
    fn check_peer_says_what_is_missing() {
        let no_port = "no port; expected HOST:PORT such as alpha:9001";
        assert_eq!(check_peer("alpha").unwrap_err(), no_port);
        assert_eq!(check_peer("alpha:").unwrap_err(), no_port);
        assert_eq!(check_peer("").unwrap_err(), no_port);
        assert!(check_peer("[::1]")
            .unwrap_err()
            .contains("such as [::1]:9001"));
        assert!(check_peer(":9001").unwrap_err().starts_with("no host;"));
        assert!(check_peer("::1").unwrap_err().contains("brackets"));
        for port in ["x", "0", "65536", "-1", "9001 "] {
            let err = check_peer(&format!("alpha:{port}")).unwrap_err();
            assert_eq!(
                err,
                format!("port `{port}` is not a number from 1 to 65535; expected HOST:PORT such as alpha:9001")
            );
        }
    }

    #[test]
    fn tls_flags_come_as_three_or_none() {
        assert_eq!(tls_files(&parse(&[]).unwrap()), Ok(None));
        let all = parse(&["--tls-cert", "c", "--tls-key", "k", "--tls-ca", "a"]).unwrap();
        let files = tls_files(&all).unwrap().unwrap();
        assert_eq!(
            (files.cert, files.key, files.ca),
            ("c".into(), "k".into(), "a".into())
        );
        let err = tls_files(&parse(&["--tls-cert", "c", "--tls-ca", "a"]).unwrap()).unwrap_err();
        assert!(err.ends_with("missing: --tls-key"), "{err}");
        let err = tls_files(&parse(&["--tls-ca", "a"]).unwrap()).unwrap_err();
        assert!(err.ends_with("missing: --tls-cert, --tls-key"), "{err}");
    }

    #[test]
    fn version_needs_no_other_flag() {
        assert!(parse(&["--version"]).unwrap().version);
    }
}
