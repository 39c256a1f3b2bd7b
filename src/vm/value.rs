//! `Val`: the only thing that crosses between objects, and between machines.
//!
//! The serde representation is the wire format of `docs/protocol.md`
//! (externally tagged: `{"Nat":42}`, `"Nothing"`, `{"Pair":[a,b]}`), so
//! `serde_json::to_writer(&val)` is byte-for-byte what a peer expects.
//!
//! Deserializing untrusted bytes goes through the codec, which bounds the
//! nesting depth (`codec` never lets a hostile frame overflow a stack); the
//! derived `Deserialize` here is for trusted, local use.
//!
//! `Val` has no hand-written `Drop`, so that code can move out of it
//! (`Val::Just(b) => *b`); dropping, cloning and comparing therefore
//! recurse once per nesting level. Values from the wire nest at most 128
//! deep; values built locally can nest as deep as a chain's calls (each
//! call's answer is wrapped in `Just`), which is why a node's threads run
//! on large stacks (`node::THREAD_STACK`). A thread of your own that
//! drives a `Vm` with deep recursion needs the same.

use serde::{Deserialize, Serialize};

use super::ids::{ObjectId, TxId};

/// A value. Cheap to move; cloning copies owned strings and lists.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Val {
    Nat(u64),
    Bool(bool),
    Str(String),
    List(Vec<Val>),
    Pair(Box<Val>, Box<Val>),
    Nothing,
    Just(Box<Val>),
    ObjectRef(ObjectId),
    TxRef(TxId),
}

impl Val {
    /// `Str` from anything string-like.
    pub fn str(s: impl Into<String>) -> Val {
        Val::Str(s.into())
    }

    /// `Just(v)`.
    pub fn just(v: Val) -> Val {
        Val::Just(Box::new(v))
    }

    /// `Pair(a, b)`.
    pub fn pair(a: Val, b: Val) -> Val {
        Val::Pair(Box::new(a), Box::new(b))
    }

    pub fn as_nat(&self) -> Option<u64> {
        match self {
            Val::Nat(n) => Some(*n),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Val::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Val::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_list(&self) -> Option<&[Val]> {
        match self {
            Val::List(items) => Some(items),
            _ => None,
        }
    }

    pub fn as_object(&self) -> Option<ObjectId> {
        match self {
            Val::ObjectRef(id) => Some(*id),
            _ => None,
        }
    }

    pub fn as_tx(&self) -> Option<TxId> {
        match self {
            Val::TxRef(id) => Some(*id),
            _ => None,
        }
    }

    /// Nesting depth: scalars are 1, `List[Nat]` is 2.
    ///
    /// Iterative, so it is safe on values of any depth.
    pub fn depth(&self) -> usize {
        let mut max = 0;
        let mut stack: Vec<(&Val, usize)> = vec![(self, 1)];
        while let Some((v, d)) = stack.pop() {
            max = max.max(d);
            match v {
                Val::List(items) => stack.extend(items.iter().map(|i| (i, d + 1))),
                Val::Pair(a, b) => {
                    stack.push((a, d + 1));
                    stack.push((b, d + 1));
                }
                Val::Just(v) => stack.push((v, d + 1)),
                _ => {}
            }
        }
        max
    }
}

impl std::fmt::Display for Val {
    /// A compact human form: `["done", 3]`, `(1, true)`, `Just(7)`, `#obj`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Val::Nat(n) => write!(f, "{n}"),
            Val::Bool(b) => write!(f, "{b}"),
            Val::Str(s) => write!(f, "{s:?}"),
            Val::List(items) => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("]")
            }
            Val::Pair(a, b) => write!(f, "({a}, {b})"),
            Val::Nothing => f.write_str("Nothing"),
            Val::Just(v) => write!(f, "Just({v})"),
            Val::ObjectRef(id) => write!(f, "{id}"),
            Val::TxRef(id) => write!(f, "tx#{}", id.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form_matches_protocol_table() {
        let cases = [
            (Val::Nat(42), r#"{"Nat":42}"#),
            (Val::Bool(true), r#"{"Bool":true}"#),
            (Val::str("hello"), r#"{"Str":"hello"}"#),
            (Val::List(vec![Val::Nat(1)]), r#"{"List":[{"Nat":1}]}"#),
            (
                Val::pair(Val::Nat(1), Val::Nothing),
                r#"{"Pair":[{"Nat":1},"Nothing"]}"#,
            ),
            (Val::Nothing, r#""Nothing""#),
            (Val::just(Val::Nat(7)), r#"{"Just":{"Nat":7}}"#),
            (
                Val::ObjectRef(ObjectId(2533837740349325312)),
                r#"{"ObjectRef":2533837740349325312}"#,
            ),
            (Val::TxRef(TxId(7)), r#"{"TxRef":7}"#),
        ];
        for (val, json) in cases {
            assert_eq!(serde_json::to_string(&val).unwrap(), json);
            assert_eq!(serde_json::from_str::<Val>(json).unwrap(), val);
        }
    }

    #[test]
    fn display_is_compact() {
        let v = Val::List(vec![Val::str("done"), Val::Nat(3)]);
        assert_eq!(v.to_string(), r#"["done", 3]"#);
    }

    #[test]
    fn depth_counts_levels() {
        assert_eq!(Val::Nat(1).depth(), 1);
        assert_eq!(Val::just(Val::List(vec![Val::Nat(1)])).depth(), 3);
    }
}
