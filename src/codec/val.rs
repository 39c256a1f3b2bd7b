//! Depth-bounded Val (de)serialization, and a depth-bounded skip for
//! unknown fields.
//!
//! serde_json's own recursion limit is disabled by `decode` (it counts
//! every JSON level, so it would refuse Vals far shallower than 128); these
//! seeds enforce the protocol's bound instead, checked *before* descending,
//! so the native stack holds at most [`MAX_VAL_DEPTH`] Val levels (or
//! [`MAX_IGNORED_DEPTH`] JSON levels of an unknown field) whatever the input.
//!
//! ```text
//!  {"List":[{"Nat":1},{"Just":"Nothing"}]}
//!  depth 1  depth 2    depth 2   depth 3         (scalars are depth 1)
//! ```
//!
//! Errors are reported twice on purpose: the precise [`DecodeError`] goes
//! into the [`Ctx`] slot, and a serde error (whose text nobody reads)
//! unwinds the parse.

use std::cell::Cell;
use std::fmt;

use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor,
};
use serde::ser::{self, Serialize, SerializeSeq, SerializeTupleVariant, Serializer};

use super::error::DecodeError;
use crate::vm::{ObjectId, TxId, Val};

/// Deepest Val accepted or sent: scalars are depth 1.
pub const MAX_VAL_DEPTH: usize = 128;
/// Deepest JSON nesting skipped in a field: room for any legal Val (each
/// Val level is at most an object and an array) and the two levels around
/// it in the deepest known field, `result`'s `{"Ok": ...}` or a wait edge.
/// With `"type"` last, every field is skipped once before it is read, so
/// a legal one must fit; an unknown field gets the 256 levels the
/// protocol page promises, and two more.
pub const MAX_IGNORED_DEPTH: usize = 2 * MAX_VAL_DEPTH + 2;

/// Side channel for the precise error of one `decode` call.
#[derive(Debug, Default)]
pub(crate) struct Ctx {
    err: Cell<Option<DecodeError>>,
    /// Set when `"type"` was not the first key: not an error, a request
    /// for the two-pass path.
    pub rescan: Cell<bool>,
}

impl Ctx {
    /// Records `e` unless an inner, more precise error is already there.
    pub(crate) fn note(&self, e: DecodeError) {
        if self.err.get().is_none() {
            self.err.set(Some(e));
        }
    }

    /// Records `e` and returns the serde error that unwinds the parse.
    pub(crate) fn fail<E: de::Error>(&self, e: DecodeError) -> E {
        self.note(e);
        E::custom("avm codec error")
    }

    pub(crate) fn get(&self) -> Option<DecodeError> {
        self.err.get()
    }
}

/// Deserializes one Val at `depth` (1 for a field's top Val).
#[derive(Clone, Copy)]
pub(crate) struct ValSeed<'c> {
    pub ctx: &'c Ctx,
    pub depth: usize,
    pub field: &'static str,
}

impl ValSeed<'_> {
    fn child(self) -> Self {
        ValSeed {
            depth: self.depth + 1,
            ..self
        }
    }
}

const VARIANTS: &[&str] = &[
    "Nat",
    "Bool",
    "Str",
    "List",
    "Pair",
    "Nothing",
    "Just",
    "ObjectRef",
    "TxRef",
];

impl<'de> DeserializeSeed<'de> for ValSeed<'_> {
    type Value = Val;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Val, D::Error> {
        if self.depth > MAX_VAL_DEPTH {
            return Err(self.ctx.fail(DecodeError::TooDeep { field: self.field }));
        }
        // `deserialize_enum`, like the derive: measured 10-20% faster than
        // `deserialize_any` + a map visitor. The price: serde_json calls a
        // number, array, bool or null where a Val belongs a *syntax* error,
        // so `decode` reports InvalidJson (with its column) for those.
        d.deserialize_enum("Val", VARIANTS, self)
    }
}

impl<'de> Visitor<'de> for ValSeed<'_> {
    type Value = Val;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Val")
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Val, A::Error> {
        let (variant, access) = data.variant_seed(VariantSeed)?;
        Ok(match variant {
            0 => Val::Nat(access.newtype_variant()?),
            1 => Val::Bool(access.newtype_variant()?),
            2 => Val::Str(access.newtype_variant()?),
            3 => Val::List(access.newtype_variant_seed(ListSeed(self.child()))?),
            4 => {
                let (a, b) = access.newtype_variant_seed(PairSeed(self.child()))?;
                Val::Pair(Box::new(a), Box::new(b))
            }
            5 => {
                access.unit_variant()?;
                Val::Nothing
            }
            6 => Val::Just(Box::new(access.newtype_variant_seed(self.child())?)),
            7 => Val::ObjectRef(ObjectId(access.newtype_variant()?)),
            _ => Val::TxRef(TxId(access.newtype_variant()?)),
        })
    }
}

/// A Val variant name, as its index in `VARIANTS`; no allocation even for
/// an escaped name.
struct VariantSeed;

impl<'de> DeserializeSeed<'de> for VariantSeed {
    type Value = usize;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
        d.deserialize_identifier(self)
    }
}

impl<'de> Visitor<'de> for VariantSeed {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Val variant")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<usize, E> {
        VARIANTS
            .iter()
            .position(|n| *n == v)
            .ok_or_else(|| E::unknown_variant(v, VARIANTS))
    }
}

/// `[Val, ...]`, each item one level deeper than the List.
struct ListSeed<'c>(ValSeed<'c>);

impl<'de> DeserializeSeed<'de> for ListSeed<'_> {
    type Value = Vec<Val>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<Val>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ListSeed<'_> {
    type Value = Vec<Val>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of Vals")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Val>, A::Error> {
        // Cap the hint: it comes from the peer (serde_json gives none).
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(v) = seq.next_element_seed(self.0)? {
            items.push(v);
        }
        Ok(items)
    }
}

/// `[Val, Val]`, exactly two.
struct PairSeed<'c>(ValSeed<'c>);

impl<'de> DeserializeSeed<'de> for PairSeed<'_> {
    type Value = (Val, Val);

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(Val, Val), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for PairSeed<'_> {
    type Value = (Val, Val);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a pair of Vals")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(Val, Val), A::Error> {
        let Some(a) = seq.next_element_seed(self.0)? else {
            return Err(de::Error::invalid_length(0, &self));
        };
        let Some(b) = seq.next_element_seed(self.0)? else {
            return Err(de::Error::invalid_length(1, &self));
        };
        // A third element is a wrong type, not a syntax error: read it,
        // depth-bounded, to say so.
        let ignore = IgnoreSeed {
            ctx: self.0.ctx,
            depth: 1,
            field: self.0.field,
        };
        if seq.next_element_seed(ignore)?.is_some() {
            return Err(de::Error::invalid_length(3, &self));
        }
        Ok((a, b))
    }
}

/// Skips one JSON value of any shape, at most [`MAX_IGNORED_DEPTH`] deep,
/// without allocating (strings are compared or dropped in place).
#[derive(Clone, Copy)]
pub(crate) struct IgnoreSeed<'c> {
    pub ctx: &'c Ctx,
    pub depth: usize,
    pub field: &'static str,
}

impl<'de> DeserializeSeed<'de> for IgnoreSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if self.depth > MAX_IGNORED_DEPTH {
            return Err(self.ctx.fail(DecodeError::TooDeep { field: self.field }));
        }
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for IgnoreSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let child = IgnoreSeed {
            depth: self.depth + 1,
            ..self
        };
        while seq.next_element_seed(child)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let child = IgnoreSeed {
            depth: self.depth + 1,
            ..self
        };
        // Keys are JSON strings: skipping one never recurses.
        while map.next_key::<de::IgnoredAny>()?.is_some() {
            map.next_value_seed(child)?;
        }
        Ok(())
    }
}

/// Serializes a Val byte-identically to its derived `Serialize`, but fails
/// past [`MAX_VAL_DEPTH`] instead of sending what the peer must refuse (or
/// recursing without bound).
pub(crate) struct BoundedVal<'v> {
    pub val: &'v Val,
    pub depth: usize,
}

impl Serialize for BoundedVal<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.depth > MAX_VAL_DEPTH {
            return Err(ser::Error::custom("Val too deep"));
        }
        let child = |val| BoundedVal {
            val,
            depth: self.depth + 1,
        };
        match self.val {
            Val::Nat(n) => s.serialize_newtype_variant("Val", 0, "Nat", n),
            Val::Bool(b) => s.serialize_newtype_variant("Val", 1, "Bool", b),
            Val::Str(v) => s.serialize_newtype_variant("Val", 2, "Str", v),
            Val::List(items) => s.serialize_newtype_variant(
                "Val",
                3,
                "List",
                &BoundedList {
                    items,
                    depth: self.depth + 1,
                },
            ),
            Val::Pair(a, b) => {
                let mut t = s.serialize_tuple_variant("Val", 4, "Pair", 2)?;
                t.serialize_field(&child(a))?;
                t.serialize_field(&child(b))?;
                t.end()
            }
            Val::Nothing => s.serialize_unit_variant("Val", 5, "Nothing"),
            Val::Just(v) => s.serialize_newtype_variant("Val", 6, "Just", &child(v)),
            Val::ObjectRef(id) => s.serialize_newtype_variant("Val", 7, "ObjectRef", &id.0),
            Val::TxRef(id) => s.serialize_newtype_variant("Val", 8, "TxRef", &id.0),
        }
    }
}

struct BoundedList<'v> {
    items: &'v [Val],
    depth: usize,
}

impl Serialize for BoundedList<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.items.len()))?;
        for val in self.items {
            seq.serialize_element(&BoundedVal {
                val,
                depth: self.depth,
            })?;
        }
        seq.end()
    }
}
