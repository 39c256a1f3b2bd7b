//! The cluster page in a real browser: headless Chromium loads beta's `/`
//! while alpha plays a long PingPong against it, and the page's DOM must
//! show both nodes and a call count that grows. Chromium is driven over
//! the DevTools protocol (a WebSocket, spoken here by hand: no crate for
//! it). Where Chromium is not installed the test says so and passes
//! without running (`.ci/run` installs it).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::observe::{beta_with_http, get};
use crate::util::{temp_dir, NodeProc, TempDir, ENDLESS_ROUNDS};

const LIMIT: Duration = Duration::from_secs(30);

/// The Chromium binary: `$AVM_CHROMIUM`, or the first of the usual names
/// that runs.
fn chromium() -> Option<String> {
    let candidates = std::env::var("AVM_CHROMIUM")
        .ok()
        .into_iter()
        .chain(["chromium", "chromium-browser", "google-chrome"].map(String::from));
    candidates.into_iter().find(|c| {
        Command::new(c)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// A headless Chromium showing `url`, killed on drop.
struct Browser {
    child: Child,
    devtools_port: u16,
    /// Dropped after the child is killed and reaped (`Drop` runs first).
    _profile: TempDir,
    _scratch: TempDir,
}

impl Browser {
    fn open(binary: &str, url: &str) -> Browser {
        let profile = temp_dir("avm-chromium");
        let scratch = TempDir::short("avm-cr");
        let child = Command::new(binary)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--remote-debugging-port=0",
                &format!("--user-data-dir={}", profile.display()),
                url,
            ])
            // Chromium's own scratch files (and sockets) go where the
            // guard removes them.
            .env("TMPDIR", &*scratch)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chromium");
        // The guard first: if Chromium never says where it listens, the
        // panic below still kills it before its directories go.
        let mut browser = Browser {
            child,
            devtools_port: 0,
            _profile: profile,
            _scratch: scratch,
        };
        // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/...",
        // read on a thread of its own so that a Chromium that hangs without
        // saying it fails the test at LIMIT instead of hanging it. The
        // thread then drains the pipe until Chromium exits.
        let stderr = BufReader::new(browser.child.stderr.take().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stderr.lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("ws://127.0.0.1:").nth(1) {
                    let _ = tx.send(rest.split('/').next().and_then(|p| p.parse().ok()));
                }
            }
        });
        let port = rx.recv_timeout(LIMIT).ok().flatten();
        browser.devtools_port = port.unwrap_or_else(|| {
            panic!("chromium did not print its DevTools address within {LIMIT:?}")
        });
        browser
    }

    /// `GET /json/list`: the browser's targets. Read by Content-Length:
    /// the DevTools server keeps the connection open.
    fn json_list(&self) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.devtools_port)).unwrap();
        s.set_read_timeout(Some(LIMIT)).unwrap();
        s.write_all(b"GET /json/list HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .unwrap();
        let mut reader = BufReader::new(s);
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("a DevTools answer");
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; length];
        reader
            .read_exact(&mut body)
            .expect("the DevTools answer's body");
        String::from_utf8_lossy(&body).into_owned()
    }

    /// The WebSocket path of the page showing `url`.
    fn page_path(&self, url: &str) -> String {
        let deadline = Instant::now() + LIMIT;
        loop {
            let body = self.json_list();
            let body = body.as_str();
            let pages: Value = serde_json::from_str(body).unwrap_or(json!([]));
            let found = pages.as_array().and_then(|p| {
                p.iter()
                    .find(|t| t["type"] == "page" && t["url"].as_str() == Some(url))
            });
            if let Some(page) = found {
                let ws = page["webSocketDebuggerUrl"]
                    .as_str()
                    .expect("a debugger url");
                let at = ws.find("/devtools/").unwrap_or_else(|| panic!("{ws}"));
                return ws[at..].to_string();
            }
            assert!(Instant::now() < deadline, "no page for {url}: {body}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The DevTools protocol over one WebSocket: client frames are masked
/// (RFC 6455 requires it), server frames are not.
struct DevTools {
    stream: TcpStream,
    next_id: u64,
}

impl DevTools {
    fn connect(port: u16, path: &str) -> DevTools {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(LIMIT)).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        )
        .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        DevTools { stream, next_id: 1 }
    }

    fn send(&mut self, text: &[u8]) {
        let mut frame = vec![0x81];
        match text.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= 0xffff => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mask = [0x12, 0x34, 0x56, 0x78];
        frame.extend_from_slice(&mask);
        frame.extend(text.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&frame).unwrap();
    }

    fn receive(&mut self) -> Value {
        loop {
            let mut head = [0u8; 2];
            self.stream.read_exact(&mut head).unwrap();
            let len = match head[1] & 0x7f {
                126 => {
                    let mut n = [0u8; 2];
                    self.stream.read_exact(&mut n).unwrap();
                    u64::from(u16::from_be_bytes(n))
                }
                127 => {
                    let mut n = [0u8; 8];
                    self.stream.read_exact(&mut n).unwrap();
                    u64::from_be_bytes(n)
                }
                n => u64::from(n),
            };
            let mut payload = vec![0u8; len as usize];
            self.stream.read_exact(&mut payload).unwrap();
            if head[0] & 0x0f == 1 {
                return serde_json::from_slice(&payload).expect("a JSON message");
            }
        }
    }

    /// Evaluates `expression` in the page; answers its value.
    fn evaluate(&mut self, expression: &str) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let call = json!({"id": id, "method": "Runtime.evaluate",
                          "params": {"expression": expression, "returnByValue": true}});
        self.send(call.to_string().as_bytes());
        loop {
            let msg = self.receive();
            if msg["id"] == id {
                return msg["result"]["result"]["value"].clone();
            }
        }
    }
}

/// What the test reads off the page: the node rows' ids and the count.
const LOOK: &str = "JSON.stringify({\
    nodes: [...document.querySelectorAll('#nodes tbody tr')].map(r => r.id), \
    calls: +document.getElementById('calls-total').dataset.calls})";

fn look(devtools: &mut DevTools) -> (Vec<String>, u64) {
    let text = devtools.evaluate(LOOK);
    let v: Value = serde_json::from_str(text.as_str().unwrap_or("{}")).unwrap_or_default();
    let nodes = v["nodes"]
        .as_array()
        .map(|n| {
            n.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    (nodes, v["calls"].as_u64().unwrap_or(0))
}

#[test]
fn the_cluster_page_shows_both_nodes_and_a_growing_call_count() {
    let Some(binary) = chromium() else {
        eprintln!(
            "SKIPPED: the_cluster_page_shows_both_nodes_and_a_growing_call_count: \
             no Chromium here (install the `chromium` package, or set AVM_CHROMIUM)"
        );
        return;
    };
    let (beta, port) = beta_with_http();
    let peer = beta.addr();
    let _alpha = NodeProc::start(
        "alpha",
        0,
        &[
            "--peer",
            &peer,
            "--demo",
            "--rounds",
            ENDLESS_ROUNDS,
            "--demo-wait",
            "60",
        ],
    );
    let url = format!("http://127.0.0.1:{port}/");
    assert!(get(port, "/").contains("<title>avm</title>"));
    let browser = Browser::open(&binary, &url);
    let mut devtools = DevTools::connect(browser.devtools_port, &browser.page_path(&url));

    let deadline = Instant::now() + LIMIT;
    let (nodes, first) = loop {
        let (nodes, calls) = look(&mut devtools);
        let both =
            nodes.iter().any(|n| n == "node-beta") && nodes.iter().any(|n| n == "node-alpha");
        if both && calls > 0 {
            break (nodes, calls);
        }
        assert!(
            Instant::now() < deadline,
            "the page shows {nodes:?}, {calls} calls"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let later = loop {
        std::thread::sleep(Duration::from_millis(300));
        let (_, calls) = look(&mut devtools);
        if calls > first {
            break calls;
        }
        assert!(Instant::now() < deadline, "the count stayed at {first}");
    };
    // The live log names pong by its exact id: past 2^53 a JavaScript
    // number would round it (to ...300 for ...313, say).
    let pong = beta.log_value("created pong", LIMIT);
    let exact = format!("object {pong}");
    let log = loop {
        let text = devtools.evaluate("document.getElementById('log').textContent");
        let text = text.as_str().unwrap_or("").to_string();
        if text.contains(&exact) {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "the page's log never named `{exact}`:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!(
        "browser: the page showed {nodes:?}; calls {first} then {later}; log:\n{}",
        log.lines().next().unwrap_or("")
    );
}
