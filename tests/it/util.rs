//! Spawning nodes and watching their output.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// A port that was free a moment ago (the kernel does not hand it out
/// again right away).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[derive(Default)]
struct Captured {
    text: Mutex<String>,
    grew: Condvar,
}

/// A running `avm-node` whose stdout and stderr are captured. Killed on drop.
pub struct NodeProc {
    pub name: String,
    child: Child,
    stdout: Arc<Captured>,
    stderr: Arc<Captured>,
}

impl NodeProc {
    /// Starts `avm-node --name NAME --bind 127.0.0.1 --port PORT ARGS...`.
    pub fn start(name: &str, port: u16, args: &[&str]) -> NodeProc {
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
        .env(
            "RUST_LOG",
            std::env::var("AVM_TEST_LOG").unwrap_or_else(|_| "info".into()),
        )
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

    /// The value after `needle` on the first log line containing it, up to
    /// the next `;` or end of line (e.g. the id in "created pong 42; ...").
    pub fn log_value(&self, needle: &str, timeout: Duration) -> String {
        self.wait_for_log(needle, timeout);
        let log = self.stderr();
        let line = log.lines().find(|l| l.contains(needle)).unwrap();
        let rest = &line[line.find(needle).unwrap() + needle.len()..];
        rest.split(';').next().unwrap().trim().to_owned()
    }

    /// Waits until stderr contains `needle`; panics with the log otherwise.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut text = self.stderr.text.lock().unwrap();
        while !text.contains(needle) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "{}: no `{needle}` in the log within {timeout:?}; log:\n{text}",
                self.name
            );
            text = self.stderr.grew.wait_timeout(text, left).unwrap().0;
        }
    }

    /// Waits for the process to exit; kills it and panics after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the capture threads see EOF.
                std::thread::sleep(Duration::from_millis(50));
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
        self.stdout.text.lock().unwrap().clone()
    }

    pub fn stderr(&self) -> String {
        self.stderr.text.lock().unwrap().clone()
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn capture(stream: impl Read + Send + 'static) -> Arc<Captured> {
    let captured = Arc::new(Captured::default());
    let sink = Arc::clone(&captured);
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 {
            sink.text.lock().unwrap().push_str(&line);
            sink.grew.notify_all();
            line.clear();
        }
    });
    captured
}
