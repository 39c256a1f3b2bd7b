//! `avm-node status` and `avm-node tail`: a node's `/health` and
//! `/events`, read over plain HTTP/1.1 and printed for a terminal.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;

/// How long to wait for a node to connect and answer.
const WAIT: Duration = Duration::from_secs(5);

/// Sends `GET target` to `addr`; answers the open stream, past the
/// response head, once the status is 200.
fn get(addr: SocketAddr, target: &str) -> Result<BufReader<TcpStream>, String> {
    let mut stream = TcpStream::connect_timeout(&addr, WAIT).map_err(|e| {
        format!("cannot reach {addr}: {e} (is the node running with --http {addr}?)")
    })?;
    stream
        .set_read_timeout(Some(WAIT))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {target} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n"
    )
    .map_err(|e| format!("{addr}: {e}"))?;
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    let not_http = || {
        format!(
            "{addr} did not answer in HTTP: is it the node's --http address, not its peer port?"
        )
    };
    reader.read_line(&mut status).map_err(|e| match e.kind() {
        std::io::ErrorKind::InvalidData => not_http(),
        _ => format!("{addr}: no answer: {e}"),
    })?;
    if status.is_empty() {
        return Err(format!(
            "{addr} closed the connection without an answer (at its HTTP connection limit?)"
        ));
    }
    if !status.starts_with("HTTP/") {
        return Err(not_http());
    }
    loop {
        let mut header = String::new();
        match reader.read_line(&mut header) {
            Ok(0) => return Err(format!("{addr}: the answer ended in its head")),
            Ok(_) if header == "\r\n" => break,
            Ok(_) => {}
            Err(e) => return Err(format!("{addr}: {e}")),
        }
    }
    if !status.starts_with("HTTP/1.1 200") {
        let mut body = String::new();
        let _ = reader.read_to_string(&mut body);
        return Err(format!("{target}: {} {}", status.trim(), body.trim()));
    }
    Ok(reader)
}

/// A node's `/health`, as a few lines of text.
pub fn status(addr: SocketAddr) -> Result<String, String> {
    let mut body = String::new();
    get(addr, "/health")?
        .read_to_string(&mut body)
        .map_err(|e| format!("{addr}: {e}"))?;
    let h: Value = serde_json::from_str(&body).map_err(|e| format!("{addr}: not JSON: {e}"))?;
    Ok(format_status(&h))
}

fn format_status(h: &Value) -> String {
    let n = |v: &Value| v.as_u64().map_or("-".into(), |n| n.to_string());
    let calls = &h["calls"];
    let latency = &h["remote_call_latency"];
    let mut out = format!(
        "{} (prefix {}), up {:.1} s, avm {}\n\
         objects {}, directory {}, suspended chains {}, calls in flight {}\n\
         calls: out {}, in {}, local {}, failed {}",
        h["name"].as_str().unwrap_or("?"),
        n(&h["prefix"]),
        h["uptime_s"].as_f64().unwrap_or(0.0),
        h["version"].as_str().unwrap_or("?"),
        n(&h["objects"]),
        n(&h["directory_entries"]),
        n(&h["suspended_chains"]),
        n(&h["calls_in_flight"]),
        n(&calls["remote_out"]),
        n(&calls["remote_in"]),
        n(&calls["local"]),
        n(&calls["failed"]),
    );
    if latency["count"].as_u64().unwrap_or(0) > 0 {
        out += &format!(
            "; round trip p50 <= {} us, p99 <= {} us",
            n(&latency["p50_us"]),
            n(&latency["p99_us"])
        );
    }
    let peers = h["peers"].as_array().map_or(&[][..], Vec::as_slice);
    out += &format!("\npeers: {}", if peers.is_empty() { "none" } else { "" });
    for p in peers {
        let seen = p["last_seen_ms"]
            .as_u64()
            .map_or("never".into(), |ms| format!("{ms} ms ago"));
        out += &format!(
            "\n  {:<12} {:<5} {:<22} seen {:<12} objects {}",
            // A `--peer` address not reached yet has no name.
            p["machine"]
                .as_str()
                .filter(|m| !m.is_empty())
                .unwrap_or("(--peer)"),
            if p["up"].as_bool() == Some(true) {
                "up"
            } else {
                "down"
            },
            p["address"].as_str().unwrap_or(""),
            seen,
            n(&p["objects"]),
        );
    }
    out
}

/// Follows a node's `/events?query`, writing one readable line per
/// event to `out`. Ends `Ok` when `out` is closed (a closed pipe), and
/// `Err` saying why when the stream ends: the node closed it (it
/// stopped), or, having sent heartbeats, sent nothing for three of them
/// (gone, or stuck). A query the node would refuse is refused
/// here first, naming what is wrong.
pub fn tail(addr: SocketAddr, query: &str, mut out: impl Write) -> Result<(), String> {
    crate::observe::events::Filter::parse(query)?;
    let target = if query.is_empty() {
        "/events".to_string()
    } else {
        format!("/events?{query}")
    };
    let mut reader = get(addr, &target)?;
    // On stderr: stdout is the events, for a pipe.
    eprintln!("following {addr}{target}; Ctrl-C to stop");
    // A quiet stream carries the node's heartbeat: once one has come, a
    // silence of three is a node gone or stuck. (Until then none is
    // awaited: a node from before heartbeats sends none.)
    let silence = 3 * crate::observe::http::Limits::default().heartbeat;
    reader
        .get_ref()
        .set_read_timeout(None)
        .map_err(|e| e.to_string())?;
    let mut heartbeats = false;
    let mut event_name = String::new();
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(format!(
                    "{addr}: nothing for {silence:?}, not even a heartbeat: the node is gone or stuck"
                ));
            }
            Err(e) => return Err(format!("{addr}: {e}")),
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.starts_with(": heartbeat") && !heartbeats {
            heartbeats = true;
            reader
                .get_ref()
                .set_read_timeout(Some(silence))
                .map_err(|e| e.to_string())?;
        } else if let Some(name) = line.strip_prefix("event: ") {
            event_name = name.to_string();
        } else if let Some(data) = line.strip_prefix("data: ") {
            let text = match serde_json::from_str::<Value>(data) {
                Ok(v) if event_name == "dropped" => {
                    format!(
                        "({} events dropped: this terminal fell behind)",
                        v["dropped"]
                    )
                }
                Ok(v) => format_event(&v),
                Err(_) => data.to_string(),
            };
            event_name.clear();
            if writeln!(out, "{text}").is_err() {
                return Ok(()); // the reader went away (a closed pipe)
            }
        }
    }
    Err(format!("{addr} closed the stream (the node stopped?)"))
}

/// One event as a terminal line. Control characters are shown escaped:
/// an error's text may be a peer's, and must not drive the terminal.
fn format_event(e: &Value) -> String {
    let mut line = format!(
        "{} {:<8} chain {}",
        e["node"].as_str().unwrap_or("?"),
        e["kind"].as_str().unwrap_or("?"),
        // In hex, as the logs write a chain (`ChainId`'s Display).
        e["chain"]
            .as_u64()
            .map_or("-".into(), |c| format!("{c:#x}")),
    );
    for key in [
        "object", "machine", "behavior", "input", "output", "step", "ok", "error",
    ] {
        if let Some(v) = e.get(key) {
            let text = v.as_str().map_or_else(|| v.to_string(), str::to_string);
            line += &format!(" {key}={text}");
        }
    }
    if line.contains(char::is_control) {
        line = line
            .chars()
            .map(|c| match c.is_control() {
                true => c.escape_default().to_string(),
                false => c.to_string(),
            })
            .collect();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn status_names_the_node_its_calls_and_each_peer() {
        let h = json!({"name":"beta","prefix":9002,"uptime_s":3.5,"version":"0.1.0",
            "objects":1,"directory_entries":1,"suspended_chains":0,"calls_in_flight":0,
            "calls":{"remote_out":5,"remote_in":6,"local":7,"failed":1},
            "remote_call_latency":{"count":5,"p50_us":250,"p99_us":1000},
            "peers":[{"machine":"alpha","address":"127.0.0.1:9001","up":true,"last_seen_ms":12,"objects":1},
                {"machine":"","address":"gamma:9003","up":false,"last_seen_ms":null,"objects":0}]});
        let text = format_status(&h);
        assert!(text.starts_with("beta (prefix 9002), up 3.5 s"), "{text}");
        assert!(
            text.contains("calls: out 5, in 6, local 7, failed 1; round trip p50 <= 250 us"),
            "{text}"
        );
        assert!(
            text.contains("alpha") && text.contains(" up ") && text.contains("12 ms ago"),
            "{text}"
        );
        assert!(text.contains("(--peer)     down  gamma:9003"), "{text}");
    }

    #[test]
    fn a_peers_control_characters_reach_the_terminal_escaped() {
        let e = json!({"node":"alpha","chain":7,"kind":"error",
            "error":"remote call failed: \u{1b}]0;owned\u{7} \r\n"});
        let line = format_event(&e);
        assert!(!line.contains(char::is_control), "{line:?}");
        assert!(line.contains("\\u{1b}]0;owned"), "{line}");
    }

    #[test]
    fn an_event_line_reads_left_to_right() {
        let e =
            json!({"at":1,"node":"alpha","chain":7,"kind":"call_out","object":42,"machine":"beta"});
        assert_eq!(
            format_event(&e),
            "alpha call_out chain 0x7 object=42 machine=beta"
        );
    }
}
