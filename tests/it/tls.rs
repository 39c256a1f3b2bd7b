//! Mutual TLS (`--tls-cert`, `--tls-key`, `--tls-ca`): two nodes with
//! certificates from one CA run the demo over TLS; a node without TLS,
//! or with a certificate from another CA, never connects, and the TLS
//! node's log says why; the flags come as three or not at all.
//!
//! Certificates are made here with rcgen: a CA, and node certificates
//! naming `127.0.0.1` and `localhost`, written to a temp dir (keys 0600).

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use avm::node::{Node, NodeConfig, TlsFiles};
use avm::vm::{call, create_obj, done, BehaviorRegistry, Program, PureRegistry, Val};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

use crate::util::{assert_start_refused, keyed, temp_dir, NodeProc};

const WAIT: Duration = Duration::from_secs(10);
const STARTUP: Duration = Duration::from_secs(30);

/// A test CA: its certificate in `dir/<tag>-ca.pem`, and what signs.
struct Ca {
    dir: PathBuf,
    tag: String,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(dir: &Path, tag: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params
            .distinguished_name
            .push(DnType::CommonName, format!("avm test CA {tag}"));
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(dir.join(format!("{tag}-ca.pem")), issuer.pem()).unwrap();
        Ca {
            dir: dir.to_owned(),
            tag: tag.to_owned(),
            issuer,
        }
    }

    fn ca_path(&self) -> String {
        path_str(&self.dir.join(format!("{}-ca.pem", self.tag)))
    }

    /// A certificate for `node` (SAN 127.0.0.1 and localhost) and its key,
    /// written next to the CA's; returns `[cert, key]`.
    fn node(&self, node: &str) -> [String; 2] {
        let sans = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
        let mut params = CertificateParams::new(sans).unwrap();
        params.distinguished_name.push(DnType::CommonName, node);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let cert_path = self.dir.join(format!("{}-{node}.pem", self.tag));
        let key_path = self.dir.join(format!("{}-{node}.key", self.tag));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        write_private(&key_path, key.serialize_pem().as_bytes());
        [path_str(&cert_path), path_str(&key_path)]
    }

    /// `--tls-cert`, `--tls-key` and `--tls-ca` for `node`, signed by
    /// this CA and trusting `trust`'s.
    fn flags(&self, node: &str, trust: &Ca) -> Vec<String> {
        let [cert, key] = self.node(node);
        let ca = trust.ca_path();
        ["--tls-cert", &cert, "--tls-key", &key, "--tls-ca", &ca]
            .map(str::to_owned)
            .to_vec()
    }
}

/// Writes `bytes` to a new file only its owner may read.
fn write_private(path: &Path, bytes: &[u8]) {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
    file.write_all(bytes).unwrap();
}

/// The first line of `node`'s log containing `needle`, once there is one.
fn log_line(node: &NodeProc, needle: &str) -> String {
    node.wait_for_log(needle, WAIT);
    let log = node.stderr();
    log.lines().find(|l| l.contains(needle)).unwrap().to_owned()
}

/// Proves the node at `addr` speaks only TLS: a plaintext peer's `hello`
/// gets no `hello` back (a plaintext node sends its own at once), only a
/// TLS alert record (content type 21) or the connection's end.
fn assert_only_tls(addr: &str) {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let hello = br#"{"type":"hello","version":2,"machine_id":"plain","node_prefix":7,"nonce":"0000000000000000000000000000000000000000000000000000000000000000"}"#;
    stream
        .write_all(&(hello.len() as u32).to_be_bytes())
        .unwrap();
    stream.write_all(hello).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut answer = Vec::new();
    // Until the node closes (a reset counts as closed); WAIT at most.
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    assert!(
        !text.contains("\"hello\""),
        "{addr} answered a plaintext hello in plaintext: {text}"
    );
    assert!(
        answer.first().is_none_or(|&b| b == 21),
        "{addr} answered neither a TLS alert nor nothing: {answer:?}"
    );
}

fn path_str(path: &Path) -> String {
    path.to_str().unwrap().to_owned()
}

/// `base` followed by `extra`, as the `&str`s `NodeProc` takes.
fn args<'a>(base: &[&'a str], extra: &'a [String]) -> Vec<&'a str> {
    base.iter()
        .copied()
        .chain(extra.iter().map(String::as_str))
        .collect()
}

/// Starts beta (`--demo`, hosting pong) with `beta_tls`, then alpha
/// dialling it with `alpha_tls` for a 3-round demo that waits 3 s for
/// pong. Returns both, alpha exited, and alpha's exit success.
fn demo_pair(beta_tls: &[String], alpha_tls: &[String], wait: &str) -> (NodeProc, NodeProc, bool) {
    let beta = NodeProc::start("beta", 0, &args(&["--demo"], beta_tls));
    beta.wait_for_log("created pong", STARTUP);
    let peer = beta.addr();
    let base = [
        "--peer",
        &peer,
        "--demo",
        "--rounds",
        "3",
        "--demo-wait",
        wait,
    ];
    let mut alpha = NodeProc::start("alpha", 0, &args(&base, alpha_tls));
    let status = alpha.wait_exit(Duration::from_secs(60));
    (beta, alpha, status.success())
}

/// Two nodes whose certificates one CA signed run the demo over TLS
/// (alpha dials `127.0.0.1:PORT`, so beta's certificate must name that IP).
#[test]
fn two_tls_nodes_run_the_demo() {
    let dir = temp_dir("avm-it-tls");
    let ca = Ca::new(&dir, "one");
    let (beta, alpha, ok) = demo_pair(&ca.flags("beta", &ca), &ca.flags("alpha", &ca), "30");
    assert!(
        ok,
        "{}\n{}\nbeta:\n{}",
        alpha.stdout(),
        alpha.stderr(),
        beta.stderr()
    );
    assert!(
        alpha.stdout().contains("result: [\"done\", 3]"),
        "{}",
        alpha.stdout()
    );
    for node in [&alpha, &beta] {
        assert!(!node.stderr().contains("TLS failed"), "{}", node.stderr());
    }
    // And it was TLS: the demo would run as well over plaintext.
    assert_only_tls(&beta.addr());
}

/// A node without TLS dials a node with TLS: its hello is no TLS record,
/// so beta closes the connection, naming it and the TLS error, and alpha
/// never sees pong. Alpha reads beta's TLS alert and says, once, that
/// the peer speaks TLS.
#[test]
fn a_plaintext_node_never_connects_to_a_tls_node() {
    let dir = temp_dir("avm-it-tls-plain");
    let ca = Ca::new(&dir, "one");
    let (beta, alpha, ok) = demo_pair(&ca.flags("beta", &ca), &[], "3");
    assert!(!ok, "alpha's demo ran:\n{}", alpha.stderr());
    assert!(
        alpha.stderr().contains("no `pong` object appeared"),
        "{}",
        alpha.stderr()
    );
    let line = log_line(&beta, "TLS failed");
    assert!(line.contains("connection to 127.0.0.1:"), "{line}");
    assert!(line.contains("the peer spoke plaintext"), "{line}");
    let warned = |log: &str, what: &str| {
        log.lines()
            .filter(|l| l.contains("WARN") && l.contains(what))
            .count()
    };
    let log = alpha.stderr();
    assert_eq!(warned(&log, "the peer answered in TLS"), 1, "{log}");
    assert_eq!(warned(&log, "protocol error"), 0, "{log}");
    // alpha redials for its wait; beta says it once per address.
    let log = beta.stderr();
    let attempts = log.matches("accepted a connection").count();
    assert!(attempts >= 2, "beta saw {attempts}:\n{log}");
    assert_eq!(warned(&log, "TLS failed"), 1, "{log}");
}

/// The other way round: a TLS node dials a plaintext one, whose answer
/// is no TLS record; the TLS node says so, and nothing connects.
#[test]
fn a_tls_node_never_connects_to_a_plaintext_node() {
    let dir = temp_dir("avm-it-tls-plain2");
    let ca = Ca::new(&dir, "one");
    let (beta, alpha, ok) = demo_pair(&[], &ca.flags("alpha", &ca), "3");
    assert!(!ok, "alpha's demo ran:\n{}", alpha.stderr());
    assert!(
        alpha.stderr().contains("no `pong` object appeared"),
        "{}\nbeta:\n{}",
        alpha.stderr(),
        beta.stderr()
    );
    let line = log_line(&alpha, "TLS failed");
    assert!(line.contains("connection to 127.0.0.1:"), "{line}");
    // alpha redials for its 3 s wait, and every attempt fails the same
    // way: beta saw several, and each side warned once, beta naming the
    // mistake.
    let attempts = beta.stderr().matches("accepted a connection").count();
    let warnings = |log: &str, what: &str| {
        log.lines()
            .filter(|l| l.contains("WARN") && l.contains(what))
            .count()
    };
    assert!(attempts >= 2, "beta saw {attempts}:\n{}", beta.stderr());
    assert_eq!(
        warnings(&alpha.stderr(), "TLS failed"),
        1,
        "{}",
        alpha.stderr()
    );
    let stranger = "a TLS handshake arrived on this plaintext port";
    assert_eq!(warnings(&beta.stderr(), stranger), 1, "{}", beta.stderr());
    assert_eq!(
        warnings(&beta.stderr(), "protocol error"),
        0,
        "{}",
        beta.stderr()
    );
}

/// Alpha's certificate comes from another CA (though alpha trusts beta's
/// CA): beta refuses it during the TLS handshake, naming the reason.
#[test]
fn a_certificate_from_another_ca_is_refused() {
    let dir = temp_dir("avm-it-tls-ca");
    let ours = Ca::new(&dir, "ours");
    let theirs = Ca::new(&dir, "theirs");
    let (beta, alpha, ok) = demo_pair(
        &ours.flags("beta", &ours),
        &theirs.flags("alpha", &ours),
        "3",
    );
    assert!(!ok, "alpha's demo ran:\n{}", alpha.stderr());
    let line = log_line(&beta, "TLS failed");
    assert!(line.contains("connection to 127.0.0.1:"), "{line}");
    assert!(line.contains("invalid peer certificate"), "{line}");
}

/// The TLS flags come as three: one missing fails the start, naming it.
#[test]
fn tls_cert_without_key_fails_at_start() {
    let dir = temp_dir("avm-it-tls-flags");
    let ca = Ca::new(&dir, "one");
    let [cert, _] = ca.node("beta");
    assert_start_refused(
        "beta",
        &["--tls-cert", &cert, "--tls-ca", &ca.ca_path()],
        "missing: --tls-key",
    );
}

/// A TLS file that is not what it should be fails the start, naming it.
#[test]
fn a_bad_tls_file_fails_at_start_naming_it() {
    let dir = temp_dir("avm-it-tls-bad");
    let ca = Ca::new(&dir, "one");
    let [cert, key] = ca.node("beta");
    let garbage = path_str(&dir.join("garbage.pem"));
    std::fs::write(&garbage, "not PEM at all\n").unwrap();
    let absent = path_str(&dir.join("absent.pem"));
    for (cert, key, ca, named) in [
        (&garbage, &key, ca.ca_path(), &garbage),
        (&cert, &garbage, ca.ca_path(), &garbage),
        (&cert, &key, absent.clone(), &absent),
    ] {
        let flags = ["--tls-cert", cert, "--tls-key", key, "--tls-ca", &ca];
        assert_start_refused("beta", &flags, named);
    }
}

/// A SIGTERM that comes before the node handles signals itself neither
/// kills it nor is lost: the node finishes starting, then stops, exit 0.
/// Its certificate is a FIFO here, so that the start waits at a known
/// point (opening it) until the test writes the PEM.
#[test]
fn sigterm_before_the_node_handles_signals_stops_it_after_its_start() {
    let dir = temp_dir("avm-it-tls-early-term");
    let ca = Ca::new(&dir, "one");
    let [cert, key] = ca.node("beta");
    let fifo = dir.join("cert-fifo.pem");
    let made = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(made.success(), "mkfifo {}", fifo.display());
    let mut beta = NodeProc::start(
        "beta",
        0,
        &[
            "--tls-cert",
            &path_str(&fifo),
            "--tls-key",
            &key,
            "--tls-ca",
            &ca.ca_path(),
        ],
    );
    // Blocked opening the FIFO: the kernel says where it sleeps (a
    // kernel that hides it says "0"; then a pause has to do).
    let wchan = format!("/proc/{}/wchan", beta.pid());
    let deadline = Instant::now() + STARTUP;
    while !std::fs::read_to_string(&wchan).is_ok_and(|w| {
        if w.trim() == "0" {
            std::thread::sleep(Duration::from_millis(500));
        }
        w.trim() == "0" || w.contains("fifo") || w.contains("partner")
    }) {
        assert!(!beta.exited(), "beta exited:\n{}", beta.stderr());
        assert!(
            Instant::now() < deadline,
            "beta never waited on its certificate"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    beta.signal("TERM");
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !beta.exited(),
        "the SIGTERM killed beta while it started:\n{}",
        beta.stderr()
    );
    // Opening the FIFO to write waits for its reader: beta, still there.
    std::fs::write(&fifo, std::fs::read(&cert).unwrap()).unwrap();
    let status = beta.wait_exit(STARTUP);
    let log = beta.stderr();
    assert!(status.success(), "{status}\n{log}");
    assert!(log.contains("listening on"), "beta never started:\n{log}");
    assert!(log.contains("stopped before it finished starting"), "{log}");
}

fn echo_twice(input: Val) -> Program {
    done(Val::pair(input.clone(), input))
}

/// An embedded node on loopback with `tls` (and the test cluster key).
fn start_embedded(name: &str, peers: Vec<String>, tls: TlsFiles) -> Node {
    let mut behaviors = BehaviorRegistry::new();
    behaviors.register("echo_twice", echo_twice);
    let mut config = NodeConfig::new(name);
    config.bind = IpAddr::from([127, 0, 0, 1]);
    config.peers = peers;
    config.tls = Some(tls);
    keyed(&mut config);
    Node::start(config, behaviors, PureRegistry::new()).expect("start node")
}

fn tls_files(ca: &Ca, node: &str) -> TlsFiles {
    let [cert, key] = ca.node(node);
    TlsFiles {
        cert: cert.into(),
        key: key.into(),
        ca: ca.ca_path().into(),
    }
}

/// Frames far larger than rustls's 64 KiB of buffering cross TLS whole,
/// both ways: a 3 MiB input and its 6 MiB echo, several times over, so
/// that writes stop at `WouldBlock` and the full buffer many times.
#[test]
fn large_frames_cross_tls_whole() {
    let dir = temp_dir("avm-it-tls-large");
    let ca = Ca::new(&dir, "one");
    let beta = start_embedded("beta", vec![], tls_files(&ca, "beta"));
    let alpha = start_embedded(
        "alpha",
        vec![beta.local_addr().to_string()],
        tls_files(&ca, "alpha"),
    );
    let run = |node: &Node, program: Program| {
        node.submit(program)
            .recv_timeout(Duration::from_secs(30))
            .expect("the program finishes")
    };
    let echo = match run(&beta, create_obj("echo_twice")) {
        Ok(Val::ObjectRef(id)) => id,
        other => panic!("create_obj answered {other:?}"),
    };
    // alpha's call fails until it has learnt where `echo` lives.
    let deadline = Instant::now() + Duration::from_secs(20);
    while run(&alpha, call(echo, Val::Nat(1))).is_err() {
        assert!(Instant::now() < deadline, "alpha never learnt of echo");
        // Polling, with the deadline above.
        std::thread::sleep(Duration::from_millis(20));
    }
    for round in 0..4u8 {
        let text: String = (0..3 << 20)
            .map(|i: u32| char::from(b'a' + ((i + u32::from(round)) % 26) as u8))
            .collect();
        let input = Val::Str(text);
        let answer = run(&alpha, call(echo, input.clone())).unwrap();
        assert!(
            answer == Val::just(Val::pair(input.clone(), input)),
            "round {round}: the echo differs"
        );
    }
    // The frames crossed TLS, not plaintext.
    assert_only_tls(&beta.local_addr().to_string());
    alpha.shutdown();
    beta.shutdown();
}
