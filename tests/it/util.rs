//! Spawning nodes and watching their output.
//!
//! Nodes bind port 0 wherever their port need not be known before they
//! start, and [`NodeProc::port`] reads the real one back from the log.
//! Where it must be known first (two nodes naming each other with
//! `--peer`, a node naming itself), [`with_picked_ports`] picks ports and
//! starts over on other ones if a node finds its port taken.
//!
//! Log assertions go through a [`LogMark`]: take one before sending the
//! input, then look only at the lines written after it.
//!
//! Every node of the test process, spawned or embedded, shares one cluster
//! key, [`test_key`], kept in [`test_key_file`]: [`NodeProc`] passes it as
//! `--cluster-key-file` (unless the test gives its own) and [`keyed`] sets
//! it in a `NodeConfig`. No test reads or writes the real `$HOME/.avm`.

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use avm::node::NodeConfig;
use sha2::{Digest, Sha256};

/// How many sets of picked ports [`with_picked_ports`] tries.
const PORT_TRIES: usize = 5;

/// How long a node may take to bind its port and say so.
const STARTUP: Duration = Duration::from_secs(30);

/// Runs `start` with `n` distinct ports that were free a moment ago, until
/// it returns `Some`: `start` returns `None` when one of its nodes found
/// its port taken meanwhile ([`NodeProc::try_start_on`]), and everything
/// it started is dropped (killed) before the next try.
pub fn with_picked_ports<T>(n: usize, mut start: impl FnMut(&[u16]) -> Option<T>) -> T {
    for _ in 0..PORT_TRIES {
        // Held together, so that the ports differ.
        let listeners: Vec<TcpListener> = (0..n)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        drop(listeners);
        if let Some(started) = start(&ports) {
            return started;
        }
    }
    panic!("{PORT_TRIES} sets of picked ports were all taken before the nodes could bind them");
}

/// A port that was free a moment ago. Another process may take it before
/// the node binds it: prefer port 0 and [`NodeProc::port`], or
/// [`with_picked_ports`], which starts over when that happens.
#[allow(dead_code)] // kept for tests/it/cli.rs, on another branch
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The flag naming a node's cluster key file.
pub const KEY_FLAG: &str = "--cluster-key-file";

/// 32 bytes that differ at every call in this process and between
/// processes (the clock, the pid and a counter, hashed): nonces and keys
/// for tests, not a CSPRNG.
pub fn unique_bytes() -> [u8; 32] {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let mut hash = Sha256::new();
    hash.update(b"avm-it");
    hash.update(nanos.to_be_bytes());
    hash.update(std::process::id().to_be_bytes());
    hash.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    hash.finalize().into()
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of the hex string `text`; `None` unless it is all hex digits
/// in pairs.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    // from_str_radix alone would take a sign.
    if !text.len().is_multiple_of(2) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A fresh, empty directory, removed with all it holds when dropped.
///
/// [`TempDir::new`] lives in cargo's scratch dir for integration tests
/// (`target/tmp`), named after its tag, this process and the clock, so
/// whatever outlives the test process (the shared key's directory, or one
/// a killed run left) goes with `cargo clean`, not into the system's
/// `/tmp`; only [`TempDir::short`] is there. A test that hands the path to
/// a node keeps the guard alive until the node is done.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        TempDir::under(Path::new(env!("CARGO_TARGET_TMPDIR")), tag)
    }

    /// One in the system's temp dir (`$TMPDIR`, `/tmp` unless set), for a
    /// path that must stay short: a program that makes unix sockets in it
    /// (Chromium's `TMPDIR`) fails once their paths pass 107 bytes, as
    /// under a deep checkout.
    pub fn short(tag: &str) -> TempDir {
        TempDir::under(&std::env::temp_dir(), tag)
    }

    fn under(parent: &Path, tag: &str) -> TempDir {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = parent.join(format!("{tag}-{}-{nanos}", std::process::id()));
        // A fresh one: never another guard's (which would remove it).
        std::fs::create_dir_all(parent).unwrap();
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        TempDir(dir)
    }

    /// The directory, kept for the rest of the process (the shared key's,
    /// which spawned nodes read until the last test ends).
    fn keep(self) -> PathBuf {
        let path = self.0.clone();
        std::mem::forget(self);
        path
    }
}

impl std::ops::Deref for TempDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh, empty [`TempDir`] named after `tag`.
pub fn temp_dir(tag: &str) -> TempDir {
    TempDir::new(tag)
}

/// Writes a fresh cluster key (64 lowercase hex chars and a newline) to
/// `dir/cluster-key`, mode 0600, and returns the file's path and the key
/// as a node reads it (the 64 chars).
pub fn write_key_file(dir: &Path) -> (PathBuf, Vec<u8>) {
    let path = dir.join("cluster-key");
    let key = hex(&unique_bytes());
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
    file.write_all(format!("{key}\n").as_bytes()).unwrap();
    // The umask cannot add bits, but say it outright.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    (path, key.into_bytes())
}

/// The test process's cluster key file, written on first use in a fresh
/// [`TempDir`] kept for the process (`target/tmp/avm-it-key-<pid>-<nanos>/cluster-key`,
/// mode 0600).
pub fn test_key_file() -> PathBuf {
    shared_key().0.clone()
}

/// The test process's cluster key, as the nodes read it from
/// [`test_key_file`]: its 64 ASCII hex chars, the newline trimmed.
pub fn test_key() -> Vec<u8> {
    shared_key().1.clone()
}

fn shared_key() -> &'static (PathBuf, Vec<u8>) {
    static KEY: OnceLock<(PathBuf, Vec<u8>)> = OnceLock::new();
    KEY.get_or_init(|| write_key_file(&temp_dir("avm-it-key").keep()))
}

/// Gives an embedded node's config the test key, as [`NodeProc`] gives it
/// to a spawned node.
pub fn keyed(config: &mut NodeConfig) {
    config.cluster_key = Some(avm::node::key::ClusterKey::from_bytes(&test_key()).unwrap());
}

/// A node embedded in the test process: loopback, the test key, these
/// peers and behaviors.
pub fn embedded(
    name: &str,
    peers: Vec<String>,
    behaviors: avm::vm::BehaviorRegistry,
) -> avm::node::Node {
    let mut config = NodeConfig::new(name);
    config.bind = std::net::IpAddr::from([127, 0, 0, 1]);
    config.peers = peers;
    keyed(&mut config);
    avm::node::Node::start(config, behaviors, avm::vm::PureRegistry::new())
        .unwrap_or_else(|e| panic!("starting {name}: {e}"))
}

/// `args` with `--cluster-key-file` naming the test key added, unless they
/// name a key file already.
pub fn with_test_key(args: &[&str]) -> Vec<OsString> {
    let mut all: Vec<OsString> = args.iter().map(OsString::from).collect();
    if !args.contains(&KEY_FLAG) {
        all.push(KEY_FLAG.into());
        all.push(test_key_file().into());
    }
    all
}

/// A position in a node's log: the lines written after it are those
/// caused by whatever the test did after taking it.
#[derive(Clone, Copy, Debug)]
pub struct LogMark(usize);

#[derive(Default)]
struct Text {
    text: String,
    /// The stream reached EOF: the process exited, nothing more will come.
    closed: bool,
}

#[derive(Default)]
struct Captured {
    state: Mutex<Text>,
    changed: Condvar,
}

/// A running `avm-node` whose stdout and stderr are captured. Killed on drop.
pub struct NodeProc {
    pub name: String,
    child: Child,
    stdout: Arc<Captured>,
    stderr: Arc<Captured>,
}

impl NodeProc {
    /// Starts `avm-node --name NAME --bind 127.0.0.1 --port PORT ARGS...`,
    /// logging at `AVM_TEST_LOG` (default `info`). Port 0 lets the node
    /// pick one; [`NodeProc::port`] tells which.
    pub fn start(name: &str, port: u16, args: &[&str]) -> NodeProc {
        let level = std::env::var("AVM_TEST_LOG").unwrap_or_else(|_| "info".into());
        NodeProc::start_logging(name, port, args, &level)
    }

    /// [`NodeProc::start`] with `RUST_LOG` set to `level`.
    pub fn start_logging(name: &str, port: u16, args: &[&str], level: &str) -> NodeProc {
        NodeProc::spawn(name, port, &with_test_key(args), level, &[])
    }

    /// [`NodeProc::start`] without the automatic `--cluster-key-file`, and
    /// with the environment variables `env` set (such as a `HOME` of the
    /// test's own, for a node that then keeps its key there).
    pub fn start_without_key(
        name: &str,
        port: u16,
        args: &[&str],
        env: &[(&str, &Path)],
    ) -> NodeProc {
        let level = std::env::var("AVM_TEST_LOG").unwrap_or_else(|_| "info".into());
        NodeProc::spawn(name, port, args, &level, env)
    }

    fn spawn(
        name: &str,
        port: u16,
        args: &[impl AsRef<OsStr>],
        level: &str,
        env: &[(&str, &Path)],
    ) -> NodeProc {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_avm-node"));
        cmd.args([
            "--name",
            name,
            "--bind",
            "127.0.0.1",
            "--port",
            &port.to_string(),
        ])
        .args(args)
        .envs(env.iter().copied())
        .env("RUST_LOG", level)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn avm-node");
        let stdout = capture(child.stdout.take().unwrap());
        let stderr = capture(child.stderr.take().unwrap());
        NodeProc {
            name: name.to_owned(),
            child,
            stdout,
            stderr,
        }
    }

    /// Starts a node on `port`, picked beforehand, and waits until it
    /// listens. `None` if the port was taken meanwhile (the node exited
    /// with `in use` in its log); panics if it failed otherwise.
    pub fn try_start_on(name: &str, port: u16, args: &[&str]) -> Option<NodeProc> {
        NodeProc::started_on(NodeProc::start(name, port, args), port)
    }

    /// [`NodeProc::try_start_on`] as [`NodeProc::start_without_key`] starts.
    pub fn try_start_without_key_on(
        name: &str,
        port: u16,
        args: &[&str],
        env: &[(&str, &Path)],
    ) -> Option<NodeProc> {
        NodeProc::started_on(NodeProc::start_without_key(name, port, args, env), port)
    }

    /// `node`, started on `port`, once it listens; `None` if it exited
    /// finding the port in use.
    fn started_on(mut node: NodeProc, port: u16) -> Option<NodeProc> {
        let name = node.name.clone();
        let listening = node.find_after(LogMark(0), "listening on ", STARTUP);
        if listening.is_some() {
            return Some(node);
        }
        node.wait_exit(STARTUP);
        let log = node.stderr();
        assert!(
            log.contains("in use"),
            "{name} did not start on port {port}:\n{log}"
        );
        None
    }

    /// The port the node listens on, from its `listening on` line
    /// (waiting for it).
    pub fn port(&self) -> u16 {
        let line = self.wait_for_log_after(LogMark(0), "listening on ", STARTUP);
        // `... listening on 127.0.0.1:PORT`, maybe followed by ` (TLS)`.
        let after = &line[line.find("listening on ").unwrap() + "listening on ".len()..];
        let addr = after.split_whitespace().next().unwrap_or("");
        addr.rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{}: no port in `{line}`", self.name))
    }

    /// `127.0.0.1:PORT`, for another node's `--peer`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port())
    }

    /// The end of the log as it is now.
    pub fn log_mark(&self) -> LogMark {
        LogMark(self.stderr.state.lock().unwrap().text.len())
    }

    /// The log written after `mark`.
    pub fn log_after(&self, mark: LogMark) -> String {
        self.stderr.state.lock().unwrap().text[mark.0..].to_owned()
    }

    /// The value after `needle` on the first log line containing it, up to
    /// the next `;` or end of line (e.g. the id in "created pong 42; ...").
    pub fn log_value(&self, needle: &str, timeout: Duration) -> String {
        let line = self.wait_for_log_after(LogMark(0), needle, timeout);
        let rest = &line[line.find(needle).unwrap() + needle.len()..];
        rest.split(';').next().unwrap().trim().to_owned()
    }

    /// Waits until the log contains `needle` anywhere (for what a node
    /// logs on its own, such as at startup); panics with the log otherwise.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) {
        self.wait_for_log_after(LogMark(0), needle, timeout);
    }

    /// Waits until a line written after `mark` contains `needle`, and
    /// returns that line (the first such); panics with the log if none
    /// comes within `timeout` or the process exits first.
    pub fn wait_for_log_after(&self, mark: LogMark, needle: &str, timeout: Duration) -> String {
        self.find_after(mark, needle, timeout).unwrap_or_else(|| {
            panic!(
                "{}: no `{needle}` in the log after byte {} within {timeout:?}; log:\n{}",
                self.name,
                mark.0,
                self.stderr()
            )
        })
    }

    /// Waits until `count` lines written after `mark` contain `needle`;
    /// panics with the log if they do not within `timeout`.
    pub fn wait_for_count_after(
        &self,
        mark: LogMark,
        needle: &str,
        count: usize,
        timeout: Duration,
    ) {
        let deadline = Instant::now() + timeout;
        let mut state = self.stderr.state.lock().unwrap();
        // The text grows by whole lines, so counting from where the last
        // count stopped neither misses nor repeats a line.
        let (mut seen, mut scanned) = (0, mark.0);
        loop {
            seen += state.text[scanned..].matches(needle).count();
            scanned = state.text.len();
            if seen >= count {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !state.closed && !left.is_zero(),
                "{}: {seen} of {count} `{needle}` in the log after byte {} within {timeout:?}; log:\n{}",
                self.name,
                mark.0,
                state.text
            );
            state = self.stderr.changed.wait_timeout(state, left).unwrap().0;
        }
    }

    /// The first line after `mark` containing `needle`, once there is one;
    /// `None` after `timeout`, or once the log ends without it.
    fn find_after(&self, mark: LogMark, needle: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut state = self.stderr.state.lock().unwrap();
        loop {
            let after = &state.text[mark.0..];
            if let Some(at) = after.find(needle) {
                let start = after[..at].rfind('\n').map_or(0, |i| i + 1);
                let end = after[at..].find('\n').map_or(after.len(), |i| at + i);
                return Some(after[start..end].to_owned());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if state.closed || left.is_zero() {
                return None;
            }
            state = self.stderr.changed.wait_timeout(state, left).unwrap().0;
        }
    }

    /// Waits for the process to exit and for its output to be read to the
    /// end; kills it and panics after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                for stream in [&self.stdout, &self.stderr] {
                    stream.wait_closed(deadline, &self.name);
                }
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!(
                    "{} did not exit within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                    self.name,
                    self.stdout(),
                    self.stderr()
                );
            }
            // Polling, with the deadline above.
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` (a `kill` name: KILL, TERM, INT) to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {}", self.child.id());
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    /// Whether the process has exited (without waiting).
    pub fn exited(&mut self) -> bool {
        self.child.try_wait().unwrap().is_some()
    }

    pub fn stdout(&self) -> String {
        self.stdout.state.lock().unwrap().text.clone()
    }

    pub fn stderr(&self) -> String {
        self.stderr.state.lock().unwrap().text.clone()
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Captured {
    /// Waits until the stream has reached EOF; panics at `deadline`.
    fn wait_closed(&self, deadline: Instant, name: &str) {
        let mut state = self.state.lock().unwrap();
        while !state.closed {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "{name} exited but its output stayed open");
            state = self.changed.wait_timeout(state, left).unwrap().0;
        }
    }
}

fn capture(stream: impl Read + Send + 'static) -> Arc<Captured> {
    let captured = Arc::new(Captured::default());
    let sink = Arc::clone(&captured);
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 {
            sink.state.lock().unwrap().text.push_str(&line);
            sink.changed.notify_all();
            line.clear();
        }
        sink.state.lock().unwrap().closed = true;
        sink.changed.notify_all();
    });
    captured
}

/// Lowers process `pid`'s descriptor limit (with `prlimit`) until only
/// `room` more descriptors fit: the limit is on descriptor numbers, and
/// new ones take the lowest free numbers, so it is the smallest limit
/// under which `room` numbers are free.
pub fn leave_descriptors(pid: u32, room: usize) {
    let fds: std::collections::HashSet<usize> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    let (mut limit, mut free) = (0, 0);
    while free < room {
        free += usize::from(!fds.contains(&limit));
        limit += 1;
    }
    let set = std::process::Command::new("prlimit")
        .args([
            "--pid",
            &pid.to_string(),
            &format!("--nofile={limit}:{limit}"),
        ])
        .status()
        .expect("run prlimit");
    assert!(set.success(), "prlimit");
}

/// Waits for a demo alpha to exit and asserts it printed
/// `["done", rounds]`.
pub fn assert_demo_done(alpha: &mut NodeProc, rounds: u64, within: Duration) {
    let status = alpha.wait_exit(within);
    assert!(status.success(), "{}\n{}", alpha.stdout(), alpha.stderr());
    assert!(
        alpha
            .stdout()
            .contains(&format!("result: [\"done\", {rounds}]")),
        "{}",
        alpha.stdout()
    );
}

/// `--rounds` for a game that outlasts any test: a test that needs calls
/// flowing while something else happens plays this and interrupts the
/// game ([`interrupt_demo`]) once that has happened, rather than betting
/// that a fixed number of rounds lasts long enough on every machine.
pub const ENDLESS_ROUNDS: &str = "1000000000";

/// SIGINT to an orchestrator in the middle of its game: it exits 0 and
/// says it was interrupted, and no call of its game had failed (a failed
/// call would have ended the game before, with exit 1).
pub fn interrupt_demo(alpha: &mut NodeProc) {
    alpha.signal("INT");
    let status = alpha.wait_exit(Duration::from_secs(30));
    let log = alpha.stderr();
    assert!(status.success(), "{status}\n{log}");
    assert!(log.contains("the demo was interrupted"), "{log}");
    assert!(!log.contains("remote call failed"), "{log}");
    assert!(!log.contains("lost:"), "{log}");
    assert!(!log.contains("demo ended with"), "{log}");
}

/// Starts `avm-node` with `args` and asserts it refuses to start: it exits
/// non-zero before listening, saying `why`.
pub fn assert_start_refused(name: &str, args: &[&str], why: &str) {
    let mut node = NodeProc::start(name, 0, args);
    let status = node.wait_exit(Duration::from_secs(10));
    let log = node.stderr();
    assert!(!status.success(), "{log}");
    assert!(log.contains(why), "{log}");
    assert!(!log.contains("listening on"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

/// A small deterministic generator (splitmix64): no dependency for it.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
