//! The `avm-node` command line: what it says and how it fails at start.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::util::{free_port, with_test_key, NodeProc};

const BIN: &str = env!("CARGO_BIN_EXE_avm-node");

#[test]
fn version_prints_the_version_and_exits_0() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout, format!("avm-node {}\n", env!("CARGO_PKG_VERSION")));
}

/// A reader that goes away (`avm-node demo-local | head -1`) costs the
/// rest of the output, not a panic: the demo's result still decides the
/// exit code. (`println!` panicked on the closed pipe: exit 101.)
#[test]
fn a_closed_stdout_is_no_panic() {
    let mut child = Command::new(BIN)
        .args(["demo-local", "--rounds", "3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}\n{stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn peer_without_a_port_fails_at_start_and_names_it() {
    let mut node = NodeProc::start("cli-peer", 0, &["--peer", "alpha"]);
    let status = node.wait_exit(Duration::from_secs(10));
    assert!(!status.success());
    let stderr = node.stderr();
    assert!(
        stderr.contains("--peer alpha: no port; expected HOST:PORT such as alpha:9001"),
        "{stderr}"
    );
    assert!(!stderr.contains("listening on"), "{stderr}");
}

#[test]
fn second_node_on_a_port_in_use_names_the_address() {
    let first = NodeProc::start("cli-first", 0, &[]);
    first.wait_for_log("listening on", Duration::from_secs(10));
    let port = first.port();
    let mut second = NodeProc::start("cli-second", port, &[]);
    let status = second.wait_exit(Duration::from_secs(10));
    assert!(!status.success());
    let stderr = second.stderr();
    let expected = format!("address 127.0.0.1:{port} in use");
    assert!(stderr.contains(&expected), "{stderr}");
    assert_eq!(stderr.matches(&format!(":{port}")).count(), 1, "{stderr}");
}

#[test]
fn rust_log_sets_a_level_per_module() {
    // Nothing listens on `peer`: the dial fails again and again, and the
    // protocol core (on the reactor thread) says so at debug level, while
    // the node's `listening on` (info, avm::node) must not show.
    let peer = format!("127.0.0.1:{}", free_port());
    let stderr = stderr_until(
        &[
            "--name",
            "cli-log",
            "--bind",
            "127.0.0.1",
            "--port",
            "0",
            "--peer",
            &peer,
        ],
        "warn,avm::protocol=debug",
        |line| line.contains(" DEBUG ") && line.contains("/reactor: ") && line.contains(&peer),
    );
    assert!(!stderr.contains("listening on"), "{stderr}");
    assert!(!stderr.contains(" INFO  cli-log/interp"), "{stderr}");
}

/// Runs `avm-node ARGS...` with `RUST_LOG=rust_log` until a line of
/// its stderr satisfies `want`, then kills it and returns its stderr so
/// far. Panics with the log after 20 s.
fn stderr_until(args: &[&str], rust_log: &str, want: impl Fn(&str) -> bool) -> String {
    let mut child = Command::new(BIN)
        .args(with_test_key(args))
        .env("RUST_LOG", rust_log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn avm-node");
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut text = String::new();
    let found = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                text.push_str(&line);
                text.push('\n');
                if want(&line) {
                    break true;
                }
            }
            Err(_) => break false,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(found, "no expected line in 20 s; stderr:\n{text}");
    text
}

/// Settings the node cannot run with are refused at start, naming the
/// flag: zero intervals (they were quietly taken as 1 ms), and a write
/// buffer under 1 MiB, a frame limit under 4 KiB, no room to wait; and
/// flags that mean something only beside another, given alone.
#[test]
fn settings_out_of_range_are_refused_naming_the_flag() {
    let cases: [(&[&str], &str); 8] = [
        (
            &["--keepalive-ms", "0"],
            "--keepalive-ms must be at least 1",
        ),
        (
            &["--call-timeout-ms", "0"],
            "--call-timeout-ms must be at least 1",
        ),
        (
            &["--max-write-buffer", "128KiB"],
            "--max-write-buffer must be at least 1MiB",
        ),
        (&["--max-frame", "100"], "--max-frame must be at least 4KiB"),
        (
            &["--max-write-buffer", "1MiB", "--max-frame", "2MiB"],
            "--max-write-buffer (1048576 bytes) must be at least --max-frame (2097152 bytes)",
        ),
        (&["--max-waiting", "0"], "--max-waiting must be at least 1"),
        (
            &["--bank-balance", "5"],
            "--bank-balance only makes sense with --bank-accounts",
        ),
        (
            &["--demo", "--demo-wait", "5"],
            "--demo-wait only makes sense with --demo --rounds",
        ),
    ];
    for (args, why) in cases {
        crate::util::assert_start_refused("cli-range", args, why);
    }
}
