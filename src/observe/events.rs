//! The trace as a stream: one JSON object per trace event, and the filter
//! a subscriber gives in its query (`/events?object=ID&chain=ID&kind=call,error`).
//!
//! ```text
//! {"at":17,"node":"alpha","chain":2533274790395905,"kind":"call_out","object":2533274790395906,"machine":"beta"}
//! {"at":18,"node":"alpha","chain":2533274790395905,"kind":"call","object":2533274790395907,"input":"[\"ping\", 3]","output":"..."}
//! ```
//!
//! Kinds: `create`, `destroy`, `call` (a call to a local object returned),
//! `state`, `tx` (`"step":"begin"|"commit"|"abort"`), `call_out` (a call
//! left for another machine), `call_in` (a call from another machine
//! arrived), `resumed` (an answer came back, `ok`), `error`, `move` (an
//! object left for another machine, or came here). Values are shown as
//! text, cut at [`MAX_VALUE_TEXT`] bytes; errors at [`MAX_ERROR_TEXT`]
//! (a peer's reason is relayed as it came, whatever its length).

use std::fmt::Write as _;

use crate::codec::put_u64;
use crate::vm::{ChainId, Event, TraceEvent, Val};

/// Longest value text in an event; longer ones end with `…`.
pub const MAX_VALUE_TEXT: usize = 200;

/// Longest error text in an event; longer ones end with `…`.
pub const MAX_ERROR_TEXT: usize = 512;

/// Every kind, as a subscriber names it.
pub const KINDS: [&str; 10] = [
    "create", "destroy", "call", "state", "tx", "call_out", "resumed", "error", "call_in", "move",
];

/// What a subscriber wants; every field empty means everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub object: Option<u64>,
    pub chain: Option<u64>,
    /// Indexes into [`KINDS`].
    pub kinds: Vec<usize>,
}

impl Filter {
    /// Reads `object=ID&chain=ID&kind=a,b` (percent-encoded or not, as
    /// a form encoder sends `kind=a%2Cb`); any other key, or a value that
    /// is not one, is an error naming it.
    pub fn parse(query: &str) -> Result<Filter, String> {
        let mut filter = Filter::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = &*percent_decoded(value);
            let number = || {
                value
                    .parse::<u64>()
                    .map_err(|_| format!("{key}={value}: not a number"))
            };
            match key {
                "object" => filter.object = Some(number()?),
                "chain" => filter.chain = Some(number()?),
                "kind" => {
                    for kind in value.split(',').filter(|k| !k.is_empty()) {
                        let index = KINDS.iter().position(|k| *k == kind).ok_or_else(|| {
                            format!("kind={kind}: not one of {}", KINDS.join(","))
                        })?;
                        filter.kinds.push(index);
                    }
                }
                other => return Err(format!("unknown filter `{other}` (object, chain, kind)")),
            }
        }
        Ok(filter)
    }

    /// The vm trace kinds this filter can pass (bit `EventKind as usize`),
    /// so the vm keeps only those payloads.
    pub fn trace_kinds(&self) -> u32 {
        use crate::vm::EventKind as K;
        if self.kinds.is_empty() {
            return crate::vm::ALL_KINDS;
        }
        let bits = |kinds: &[K]| kinds.iter().fold(0, |m, k| m | 1 << *k as u32);
        self.kinds.iter().fold(0, |mask, &i| {
            mask | match KINDS[i] {
                "create" => bits(&[K::ObjectCreated]),
                "destroy" => bits(&[K::ObjectDestroyed]),
                "call" => bits(&[K::ObjectCalled]),
                "state" => bits(&[K::StateUpdated]),
                "tx" => bits(&[
                    K::TransactionStarted,
                    K::TransactionCommitted,
                    K::TransactionAborted,
                ]),
                "call_out" => bits(&[K::CallSuspended]),
                "resumed" => bits(&[K::CallResumed]),
                "error" => bits(&[K::ErrorOccurred]),
                "move" => bits(&[K::ObjectMoved]),
                _ => bits(&[K::CallArrived]),
            }
        })
    }

    /// Whether `event` passes.
    pub fn matches(&self, event: &Rendered) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&event.kind))
            && self.chain.is_none_or(|c| event.chain == Some(c))
            && self.object.is_none_or(|o| event.object == Some(o))
    }
}

/// An event as subscribers see it: its JSON, and what filters look at.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub json: Vec<u8>,
    pub kind: usize,
    pub chain: Option<u64>,
    pub object: Option<u64>,
}

/// Turns trace events into JSON lines, reusing its buffers: the reactor
/// renders every event once, whatever the number of subscribers, and
/// this is on its path while a subscriber watches, so it writes bytes
/// straight out (no intermediate JSON tree, no allocation per event in
/// the steady state).
#[derive(Debug, Default)]
pub struct Renderer {
    rendered: Rendered,
    text: String,
}

impl Default for Rendered {
    fn default() -> Rendered {
        Rendered {
            json: Vec::with_capacity(256),
            kind: 0,
            chain: None,
            object: None,
        }
    }
}

impl Renderer {
    /// The JSON line of `event`, recorded on `node`; valid until the next call.
    pub fn render(&mut self, node: &str, event: &TraceEvent) -> &Rendered {
        let r = &mut self.rendered;
        let out = &mut r.json;
        out.clear();
        r.chain = event.chain.map(|ChainId(c)| c);
        let (kind, object) = kind_and_object(&event.event);
        r.kind = KINDS.iter().position(|k| *k == kind).expect("a known kind");
        r.object = object;
        out.extend_from_slice(b"{\"at\":");
        put_u64(out, event.at);
        out.extend_from_slice(b",\"node\":");
        push_str(out, node);
        out.extend_from_slice(b",\"chain\":");
        match r.chain {
            Some(c) => put_u64(out, c),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"kind\":\"");
        out.extend_from_slice(kind.as_bytes());
        out.push(b'"');
        if let Some(o) = object {
            out.extend_from_slice(b",\"object\":");
            put_u64(out, o);
        }
        let text = &mut self.text;
        let mut field = |name: &str, value: &str| {
            out.extend_from_slice(b",\"");
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"\":");
            push_str(out, value);
        };
        match &event.event {
            Event::ObjectCreated { behavior, .. } => field("behavior", behavior),
            Event::ObjectCalled { input, output, .. } => {
                val_text(text, input);
                field("input", text);
                val_text(text, output);
                field("output", text);
            }
            Event::TransactionStarted { tx }
            | Event::TransactionCommitted { tx }
            | Event::TransactionAborted { tx } => {
                let step = match &event.event {
                    Event::TransactionStarted { .. } => "begin",
                    Event::TransactionCommitted { .. } => "commit",
                    _ => "abort",
                };
                field("step", step);
                out.extend_from_slice(b",\"tx\":");
                put_u64(out, tx.0);
            }
            Event::CallSuspended { machine, .. }
            | Event::CallArrived { machine, .. }
            | Event::ObjectMoved { machine, .. } => field("machine", machine.as_str()),
            Event::CallResumed { ok, .. } => out.extend_from_slice(if *ok {
                b",\"ok\":true"
            } else {
                b",\"ok\":false"
            }),
            Event::ErrorOccurred(e) => {
                capped_text(text, e, MAX_ERROR_TEXT);
                field("error", text);
            }
            Event::ObjectDestroyed { .. } | Event::StateUpdated { .. } => {}
        }
        out.push(b'}');
        &self.rendered
    }
}

/// The kind's name and the object an event is about.
fn kind_and_object(event: &Event) -> (&'static str, Option<u64>) {
    match event {
        Event::ObjectCreated { id, .. } => ("create", Some(id.0)),
        Event::ObjectDestroyed { id } => ("destroy", Some(id.0)),
        Event::ObjectCalled { id, .. } => ("call", Some(id.0)),
        Event::StateUpdated { id, .. } => ("state", Some(id.0)),
        Event::TransactionStarted { .. }
        | Event::TransactionCommitted { .. }
        | Event::TransactionAborted { .. } => ("tx", None),
        Event::CallSuspended { target, .. } => ("call_out", Some(target.0)),
        Event::CallResumed { .. } => ("resumed", None),
        Event::ErrorOccurred(_) => ("error", None),
        Event::CallArrived { id, .. } => ("call_in", Some(id.0)),
        Event::ObjectMoved { id, .. } => ("move", Some(id.0)),
    }
}

/// `value` with its `%XX` escapes decoded (a bad escape stays as it is:
/// the filter then names it as not a number or not a kind).
fn percent_decoded(value: &str) -> std::borrow::Cow<'_, str> {
    if !value.contains('%') {
        return value.into();
    }
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match hex
            .filter(|_| bytes[i] == b'%')
            .map(|h| u8::from_str_radix(h, 16))
        {
            Some(Ok(b)) => {
                out.push(b);
                i += 3;
            }
            _ => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned().into()
}

/// `v` as text in `into`, cut at [`MAX_VALUE_TEXT`] bytes. Formatting
/// stops there too: a 16 MiB argument costs the reactor a few hundred
/// bytes of text, not 16 MiB of it.
fn val_text(into: &mut String, v: &Val) {
    capped_text(into, v, MAX_VALUE_TEXT);
}

/// `v` as text in `into`, cut at `max` bytes (formatting stops there).
fn capped_text(into: &mut String, v: &impl std::fmt::Display, max: usize) {
    into.clear();
    let mut capped = Capped(into, max);
    if write!(capped, "{v}").is_err() {
        let mut cut = max;
        while !into.is_char_boundary(cut) {
            cut -= 1;
        }
        into.truncate(cut);
        into.push('…');
    }
}

/// A `fmt::Write` that takes text up to just past its limit in bytes,
/// then fails (so formatting stops).
struct Capped<'a>(&'a mut String, usize);

impl std::fmt::Write for Capped<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        // Only what fits (and a little past, to show the cut), however
        // long the piece: a 16 MiB string comes as one.
        let room = (self.1 + 4).saturating_sub(self.0.len());
        let mut take = s.len().min(room);
        while !s.is_char_boundary(take) {
            take -= 1;
        }
        self.0.push_str(&s[..take]);
        if self.0.len() > self.1 {
            Err(std::fmt::Error)
        } else {
            Ok(())
        }
    }
}

/// `s` as a JSON string: quotes, backslashes and control characters escaped.
fn push_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    for &b in s.as_bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            0..=0x1f => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            }
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::{MachineId, ObjectId, SuspendToken};

    use serde_json::{json, Value};

    fn render(node: &str, event: &TraceEvent) -> Rendered {
        Renderer::default().render(node, event).clone()
    }

    fn event(chain: Option<u64>, event: Event) -> TraceEvent {
        TraceEvent {
            at: 5,
            chain: chain.map(ChainId),
            event,
        }
    }

    #[test]
    fn a_filter_reads_its_query_and_refuses_what_it_does_not_know() {
        let f = Filter::parse("object=7&chain=9&kind=call,error").unwrap();
        assert_eq!(f.object, Some(7));
        assert_eq!(f.chain, Some(9));
        assert_eq!(f.kinds, vec![2, 7]);
        assert_eq!(Filter::parse("").unwrap(), Filter::default());
        assert!(Filter::parse("kind=nope")
            .unwrap_err()
            .contains("not one of"));
        assert!(Filter::parse("object=x")
            .unwrap_err()
            .contains("not a number"));
        assert!(Filter::parse("colour=red")
            .unwrap_err()
            .contains("unknown filter"));
    }

    #[test]
    fn events_render_with_their_chain_and_pass_filters_by_kind_chain_object() {
        let out = render(
            "alpha",
            &event(
                Some(3),
                Event::CallSuspended {
                    token: SuspendToken(1),
                    machine: MachineId::new("beta"),
                    target: ObjectId(42),
                    in_tx: None,
                },
            ),
        );
        let v: Value = serde_json::from_slice(&out.json).unwrap();
        assert_eq!(
            v,
            json!({"at":5,"node":"alpha","chain":3,"kind":"call_out","object":42,"machine":"beta"})
        );
        let pass = |q: &str| Filter::parse(q).unwrap().matches(&out);
        assert!(pass("") && pass("kind=call_out") && pass("chain=3") && pass("object=42"));
        assert!(!pass("kind=call") && !pass("chain=4") && !pass("object=41"));
    }

    #[test]
    fn strings_are_escaped_and_every_kind_is_valid_json() {
        use crate::vm::{TxId, VmError};
        let events = [
            Event::ObjectCreated {
                id: ObjectId(1),
                behavior: "we\"ird\\\n\u{1}".into(),
            },
            Event::ObjectDestroyed { id: ObjectId(1) },
            Event::StateUpdated {
                id: ObjectId(1),
                state: vec![],
            },
            Event::TransactionStarted { tx: TxId(3) },
            Event::TransactionCommitted { tx: TxId(3) },
            Event::TransactionAborted { tx: TxId(3) },
            Event::CallResumed {
                token: SuspendToken(1),
                ok: false,
            },
            Event::ErrorOccurred(VmError::UnknownObject(ObjectId(9))),
            Event::CallArrived {
                id: ObjectId(2),
                machine: MachineId::new("be\"ta"),
            },
        ];
        for e in events {
            let out = render("n\"ode", &event(Some(u64::MAX), e.clone()));
            let v: Value = serde_json::from_slice(&out.json).unwrap_or_else(|err| {
                panic!("{e:?}: {err}: {}", String::from_utf8_lossy(&out.json))
            });
            assert_eq!(v["node"], "n\"ode");
            assert_eq!(v["chain"], u64::MAX);
            assert_eq!(v["kind"], KINDS[out.kind], "{v}");
        }
        let v: Value = serde_json::from_slice(
            &render(
                "n",
                &event(
                    None,
                    Event::ObjectCreated {
                        id: ObjectId(1),
                        behavior: "we\"ird\\\n\u{1}".into(),
                    },
                ),
            )
            .json,
        )
        .unwrap();
        assert_eq!(v["behavior"], "we\"ird\\\n\u{1}");
    }

    #[test]
    fn a_filter_names_the_trace_kinds_it_needs() {
        use crate::vm::{EventKind, ALL_KINDS};
        assert_eq!(Filter::default().trace_kinds(), ALL_KINDS);
        let f = Filter::parse("kind=call_out,tx").unwrap();
        let want = [
            EventKind::CallSuspended,
            EventKind::TransactionStarted,
            EventKind::TransactionCommitted,
            EventKind::TransactionAborted,
        ];
        assert_eq!(
            f.trace_kinds(),
            want.iter().fold(0, |m, k| m | 1 << *k as u32)
        );
        // Every kind a subscriber can name maps to the kind it renders as.
        for (i, name) in KINDS.iter().enumerate() {
            let f = Filter {
                kinds: vec![i],
                ..Filter::default()
            };
            assert_ne!(f.trace_kinds(), 0, "{name}");
        }
    }

    #[test]
    fn a_percent_encoded_filter_reads_as_the_plain_one() {
        let plain = Filter::parse("kind=call,error&object=12").unwrap();
        let encoded = Filter::parse("kind=call%2Cerror&object=%31%32").unwrap();
        assert_eq!(plain.kinds, encoded.kinds);
        assert_eq!(plain.object, encoded.object);
        let err = Filter::parse("kind=call%2").unwrap_err();
        assert!(err.contains("kind=call%2"), "{err}");
    }

    #[test]
    fn long_values_are_cut() {
        let long = Val::str("x".repeat(1000));
        let out = render(
            "a",
            &event(
                None,
                Event::ObjectCalled {
                    id: ObjectId(1),
                    input: long.clone(),
                    output: long,
                },
            ),
        );
        let v: Value = serde_json::from_slice(&out.json).unwrap();
        let input = v["input"].as_str().unwrap();
        assert!(
            input.len() <= MAX_VALUE_TEXT + 3 && input.ends_with('…'),
            "{input}"
        );
        assert_eq!(v["chain"], Value::Null);
    }

    /// A peer's reason comes back as it came, however long: the event
    /// cuts it, so one failure cannot make a line too long to stream.
    #[test]
    fn long_errors_are_cut() {
        let reason = "y".repeat(300 << 10);
        let failure = crate::vm::RemoteFailure {
            target: ObjectId(1),
            reason,
        };
        let error = crate::vm::VmError::RemoteFailed(Box::new(failure));
        let out = render("a", &event(None, Event::ErrorOccurred(error)));
        assert!(out.json.len() < 1024, "{} bytes", out.json.len());
        let v: Value = serde_json::from_slice(&out.json).unwrap();
        let error = v["error"].as_str().unwrap();
        assert!(error.starts_with("remote call to") && error.ends_with('…'));
    }
}
