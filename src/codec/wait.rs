//! The wait lists of `probe` (`path`) and `deadlock` (`cycle`): at most
//! [`MAX_WAIT_PATH`] edges, counted while reading.
//!
//! ```text
//!  "path":[ {"chain":1,"object":9,"machine":"beta"}, ... , {...} ]
//!  depth 1  depth 2, one EdgeSeed per entry               entry 65: RefuseSeed
//!           (its values depth 3)                          fails at its first byte
//! ```
//!
//! An edge follows the message body's rules (`DuplicateField`,
//! `MissingField`, `WrongType`, unknown fields skipped, a `"type"` key is
//! just unknown here); errors name the field inside the list as
//! `path[].chain`, `path[].object`, `path[].machine`, an entry that is not
//! an object as `path[]`, an unknown field nesting too deep as
//! `path[].(unknown)`, and one edge too many as `TooLong { field: "path" }`
//! (`cycle[]...` alike).
//!
//! An unknown field's value inside an edge starts at depth 3 of the
//! [`MAX_IGNORED_DEPTH`](super::MAX_IGNORED_DEPTH) count, as the type-last
//! scan sees it when it skips the whole list as one value: both passes of
//! `decode` then accept and refuse the same messages.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::error::DecodeError;
use super::message::{WaitEdge, MAX_WAIT_PATH};
use super::parse::{need, read_field, CowStr, Key, KeySeed};
use super::val::{Ctx, IgnoreSeed};

/// The names errors give inside one wait list (static, so `DecodeError`
/// stays `Copy` and small).
pub(super) struct EdgeNames {
    /// The message field holding the list.
    list: &'static str,
    /// An edge that is not an object.
    edge: &'static str,
    /// `chain`, `object`, `machine` inside an edge, in [`EDGE_FIELDS`] order.
    fields: [&'static str; 3],
    /// An unknown field inside an edge that nests too deep.
    unknown: &'static str,
}

const EDGE_FIELDS: &[&str] = &["chain", "object", "machine"];

pub(super) const PATH: EdgeNames = EdgeNames {
    list: "path",
    edge: "path[]",
    fields: ["path[].chain", "path[].object", "path[].machine"],
    unknown: "path[].(unknown)",
};

pub(super) const CYCLE: EdgeNames = EdgeNames {
    list: "cycle",
    edge: "cycle[]",
    fields: ["cycle[].chain", "cycle[].object", "cycle[].machine"],
    unknown: "cycle[].(unknown)",
};

/// `[Edge, ...]`, at most [`MAX_WAIT_PATH`] edges.
#[derive(Clone, Copy)]
pub(super) struct EdgesSeed<'c>(pub(super) &'c Ctx, pub(super) &'static EdgeNames);

impl<'de> DeserializeSeed<'de> for EdgesSeed<'_> {
    type Value = Vec<WaitEdge<'de>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for EdgesSeed<'_> {
    type Value = Vec<WaitEdge<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of wait edges")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let EdgesSeed(ctx, names) = self;
        // Grows to at most MAX_WAIT_PATH edges; no size hint from the peer
        // is trusted (serde_json gives none anyway).
        let mut edges = Vec::new();
        while edges.len() < MAX_WAIT_PATH {
            match seq.next_element_seed(EdgeSeed(ctx, names))? {
                Some(edge) => edges.push(edge),
                None => return Ok(edges),
            }
        }
        // Full: the end of the list, or an error at the next element's
        // first byte, before any of it is parsed.
        let refuse = RefuseSeed(ctx, DecodeError::TooLong { field: names.list });
        match seq.next_element_seed(refuse)? {
            None => Ok(edges),
            Some(never) => match never {},
        }
    }
}

/// Fails as soon as a value is there, without reading it.
struct RefuseSeed<'c>(&'c Ctx, DecodeError);

impl<'de> DeserializeSeed<'de> for RefuseSeed<'_> {
    type Value = std::convert::Infallible;

    fn deserialize<D: Deserializer<'de>>(self, _: D) -> Result<Self::Value, D::Error> {
        Err(self.0.fail(self.1))
    }
}

/// `{"chain":u64,"object":u64,"machine":string}`, unknown fields skipped
/// (depth-bounded, counted from the message's field: see the module docs).
#[derive(Clone, Copy)]
struct EdgeSeed<'c>(&'c Ctx, &'static EdgeNames);

impl<'de> DeserializeSeed<'de> for EdgeSeed<'_> {
    type Value = WaitEdge<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<WaitEdge<'de>, D::Error> {
        let EdgeSeed(ctx, names) = self;
        d.deserialize_map(self).inspect_err(|_| {
            // Failures inside the edge have noted their own error; an
            // entry that is not an object has not.
            ctx.note(DecodeError::WrongType { field: names.edge });
        })
    }
}

impl<'de> Visitor<'de> for EdgeSeed<'_> {
    type Value = WaitEdge<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a wait edge object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<WaitEdge<'de>, A::Error> {
        let EdgeSeed(ctx, names) = self;
        let [chain_f, object_f, machine_f] = names.fields;
        let unknown = IgnoreSeed {
            ctx,
            depth: 3,
            field: names.unknown,
        };
        let (mut chain, mut object, mut machine) = (None, None, None);
        while let Some(key) = map.next_key_seed(KeySeed(EDGE_FIELDS))? {
            match key {
                Key::Field(0) => read_field(ctx, &mut map, chain_f, &mut chain, PhantomData)?,
                Key::Field(1) => read_field(ctx, &mut map, object_f, &mut object, PhantomData)?,
                Key::Field(_) => read_field(ctx, &mut map, machine_f, &mut machine, CowStr)?,
                // `"type"` means nothing inside an edge.
                Key::Type | Key::Unknown => map.next_value_seed(unknown)?,
            }
        }
        Ok(WaitEdge {
            chain: need(ctx, chain_f, chain)?,
            object: need(ctx, object_f, object)?,
            machine: need(ctx, machine_f, machine)?,
        })
    }
}
