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
//! arrived), `resumed` (an answer came back, `ok`), `error`. Values are shown as text, cut at [`MAX_VALUE_TEXT`] bytes.

use std::fmt::Write as _;

use serde_json::{json, Value};

use crate::vm::{ChainId, Event, TraceEvent, Val};

/// Longest value text in an event; longer ones end with `…`.
pub const MAX_VALUE_TEXT: usize = 200;

/// Every kind, as a subscriber names it.
pub const KINDS: [&str; 9] = [
    "create", "destroy", "call", "state", "tx", "call_out", "resumed", "error", "call_in",
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
    /// Reads `object=ID&chain=ID&kind=a,b`; any other key, or a value
    /// that is not one, is an error naming it.
    pub fn parse(query: &str) -> Result<Filter, String> {
        let mut filter = Filter::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
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

    /// Whether `event` passes.
    pub fn matches(&self, event: &Rendered) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&event.kind))
            && self.chain.is_none_or(|c| event.chain == Some(c))
            && self.object.is_none_or(|o| event.object == Some(o))
    }
}

/// An event as subscribers see it: its JSON, and what filters look at.
#[derive(Debug)]
pub struct Rendered {
    pub json: Vec<u8>,
    pub kind: usize,
    pub chain: Option<u64>,
    pub object: Option<u64>,
}

fn text(v: &Val) -> String {
    let mut s = String::new();
    let _ = write!(s, "{v}");
    if s.len() > MAX_VALUE_TEXT {
        let mut cut = MAX_VALUE_TEXT;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// The JSON line of `event`, recorded on `node`.
pub fn render(node: &str, event: &TraceEvent) -> Rendered {
    let chain = event.chain.map(|ChainId(c)| c);
    let (kind, object, fields): (&str, Option<u64>, Value) = match &event.event {
        Event::ObjectCreated { id, behavior } => {
            ("create", Some(id.0), json!({ "behavior": &**behavior }))
        }
        Event::ObjectDestroyed { id } => ("destroy", Some(id.0), json!({})),
        Event::ObjectCalled { id, input, output } => (
            "call",
            Some(id.0),
            json!({ "input": text(input), "output": text(output) }),
        ),
        Event::StateUpdated { id, .. } => ("state", Some(id.0), json!({})),
        Event::TransactionStarted { tx } => ("tx", None, json!({ "tx": tx.0, "step": "begin" })),
        Event::TransactionCommitted { tx } => ("tx", None, json!({ "tx": tx.0, "step": "commit" })),
        Event::TransactionAborted { tx } => ("tx", None, json!({ "tx": tx.0, "step": "abort" })),
        Event::CallSuspended {
            machine, target, ..
        } => (
            "call_out",
            Some(target.0),
            json!({ "machine": machine.as_str() }),
        ),
        Event::CallResumed { ok, .. } => ("resumed", None, json!({ "ok": ok })),
        Event::ErrorOccurred(e) => ("error", None, json!({ "error": e.to_string() })),
        Event::CallArrived { id, machine } => (
            "call_in",
            Some(id.0),
            json!({ "machine": machine.as_str() }),
        ),
    };
    let mut line = json!({ "at": event.at, "node": node, "chain": chain, "kind": kind });
    if let (Value::Object(line), Value::Object(fields)) = (&mut line, fields) {
        if let Some(object) = object {
            line.insert("object".into(), object.into());
        }
        line.extend(fields);
    }
    Rendered {
        json: serde_json::to_vec(&line).expect("a JSON value"),
        kind: KINDS.iter().position(|k| *k == kind).expect("a known kind"),
        chain,
        object,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::{MachineId, ObjectId, SuspendToken};

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
}
