//! `decode`: the hand-written map visitors behind [`Message`].
//!
//! One seed per pass, all sharing one [`Ctx`] for the precise error:
//!
//! ```text
//!  MessageSeed { known: None }      first key "type"? -> body parser
//!     | first key is something else: ctx.rescan, unwind
//!  ScanSeed                          every key, values skipped -> Kind
//!  MessageSeed { known: Some(kind) } body parser, "type" skipped once
//! ```
//!
//! Body parsers keep one `Option` per field: a second occurrence is
//! `DuplicateField`, a `None` at the end is `MissingField`, a failing value
//! is `WrongType` (unless something deeper already said why).
//!
//! The edges of a `probe`'s `path` and a `deadlock`'s `cycle` follow the
//! same rules, in `wait.rs`.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};

use super::error::{DecodeError, TypeName};
use super::message::{
    Auth, Call, CallResponse, Close, CreateNotify, Deadlock, DestroyNotify, Hello, Kind, Message,
    Meta, MoveNotify, NameDrop, NameNotify, Ping, Pong, Probe, SnapshotEnd, KINDS, TYPE_NAMES,
};
use super::val::{Ctx, IgnoreSeed, ValSeed};
use super::wait::{EdgesSeed, CYCLE, PATH};
use crate::vm::{ChainId, ObjectId, Val};

/// A `call`'s fields in order, then `meta`'s `op`.
const CALL_FIELDS: [&str; 7] = [
    "request_id",
    "target",
    "input",
    "sender",
    "sender_machine",
    "chain",
    "op",
];

/// Parse one frame payload (no header).
pub fn decode(payload: &[u8]) -> Result<Message<'_>, DecodeError> {
    // The same two messages from a peer that writes them compact.
    if super::compact::is_compact(payload) {
        return super::compact::decode(payload);
    }
    // The two messages of every remote call, in avm's own shape (`fast`).
    if let Some(msg) = super::fast::decode(payload) {
        return Ok(msg);
    }
    decode_with_serde(payload)
}

/// [`decode`] without the fast path: what it must agree with.
pub(super) fn decode_with_serde(payload: &[u8]) -> Result<Message<'_>, DecodeError> {
    if payload.is_empty() {
        return Err(DecodeError::Empty);
    }
    // Validating up front lets serde_json skip per-string checks and gives
    // InvalidUtf8 its own error, wherever the bad byte is.
    let text = std::str::from_utf8(payload).map_err(|e| DecodeError::InvalidUtf8 {
        valid_up_to: e.valid_up_to(),
    })?;
    let ctx = Ctx::default();
    match parse(
        text,
        MessageSeed {
            ctx: &ctx,
            known: None,
        },
    ) {
        Err(_) if ctx.rescan.get() && ctx.get().is_none() => {
            let kind = parse(text, ScanSeed { ctx: &ctx }).map_err(|e| map_err(&ctx, e))?;
            let seed = MessageSeed {
                ctx: &ctx,
                known: Some(kind),
            };
            parse(text, seed).map_err(|e| map_err(&ctx, e))
        }
        other => other.map_err(|e| map_err(&ctx, e)),
    }
}

/// One whole-payload parse, with serde_json's recursion limit off: the
/// seeds bound the depth themselves.
fn parse<'de, S: DeserializeSeed<'de>>(text: &'de str, seed: S) -> serde_json::Result<S::Value> {
    let mut de = serde_json::Deserializer::from_str(text);
    de.disable_recursion_limit();
    let v = seed.deserialize(&mut de)?;
    de.end()?;
    Ok(v)
}

fn map_err(ctx: &Ctx, e: serde_json::Error) -> DecodeError {
    use serde_json::error::Category;
    match e.classify() {
        // A syntax error wins over a field's WrongType note: the field
        // failed because the JSON did.
        Category::Syntax | Category::Eof | Category::Io => DecodeError::InvalidJson {
            line: e.line(),
            column: e.column(),
        },
        // Every field attributes its own errors, so an unattributed data
        // error is the top level's: `deserialize_map` on a non-object.
        Category::Data => ctx.get().unwrap_or(DecodeError::NotAnObject),
    }
}

/// A key of the message object.
pub(super) enum Key {
    Type,
    /// Index into the body's field list.
    Field(usize),
    Unknown,
}

/// Reads a key without allocating, even when it has escapes.
#[derive(Clone, Copy)]
pub(super) struct KeySeed(pub(super) &'static [&'static str]);

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Key;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Key, D::Error> {
        d.deserialize_identifier(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
        if v == "type" {
            return Ok(Key::Type);
        }
        Ok(match self.0.iter().position(|n| *n == v) {
            Some(i) => Key::Field(i),
            None => Key::Unknown,
        })
    }
}

/// The `"type"` value: `Ok(kind)`, or `Err(name)` for a type this version
/// does not know.
struct TypeSeed;

impl<'de> DeserializeSeed<'de> for TypeSeed {
    type Value = Result<Kind, TypeName>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for TypeSeed {
    type Value = Result<Kind, TypeName>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a message type")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(match TYPE_NAMES.iter().position(|n| *n == v) {
            Some(i) => Ok(KINDS[i]),
            None => Err(TypeName::new(v)),
        })
    }
}

fn read_type<'de, A: MapAccess<'de>>(ctx: &Ctx, map: &mut A) -> Result<Kind, A::Error> {
    match map.next_value_seed(TypeSeed) {
        Ok(Ok(kind)) => Ok(kind),
        Ok(Err(name)) => Err(ctx.fail(DecodeError::UnknownType(name))),
        Err(e) => {
            ctx.note(DecodeError::WrongType { field: "type" });
            Err(e)
        }
    }
}

fn skip<'de, A: MapAccess<'de>>(
    ctx: &Ctx,
    map: &mut A,
    field: &'static str,
) -> Result<(), A::Error> {
    map.next_value_seed(IgnoreSeed {
        ctx,
        depth: 1,
        field,
    })
}

/// Reads the value of `field` into `slot`, attributing failures: a second
/// occurrence is `DuplicateField`, a failing value `WrongType` unless
/// something deeper already said why.
pub(super) fn read_field<'de, A, T, S>(
    ctx: &Ctx,
    map: &mut A,
    field: &'static str,
    slot: &mut Option<T>,
    seed: S,
) -> Result<(), A::Error>
where
    A: MapAccess<'de>,
    S: DeserializeSeed<'de, Value = T>,
{
    if slot.is_some() {
        return Err(ctx.fail(DecodeError::DuplicateField { field }));
    }
    match map.next_value_seed(seed) {
        Ok(v) => {
            *slot = Some(v);
            Ok(())
        }
        Err(e) => {
            ctx.note(DecodeError::WrongType { field });
            Err(e)
        }
    }
}

pub(super) fn need<T, E: de::Error>(
    ctx: &Ctx,
    field: &'static str,
    slot: Option<T>,
) -> Result<T, E> {
    slot.ok_or_else(|| ctx.fail(DecodeError::MissingField { field }))
}

/// Pass 1 (`known: None`) or pass 3 (`known: Some`).
struct MessageSeed<'c> {
    ctx: &'c Ctx,
    known: Option<Kind>,
}

impl<'de> DeserializeSeed<'de> for MessageSeed<'_> {
    type Value = Message<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Message<'de>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for MessageSeed<'_> {
    type Value = Message<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a message object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Message<'de>, A::Error> {
        let ctx = self.ctx;
        let (kind, type_seen) = match self.known {
            Some(kind) => (kind, false),
            None => match map.next_key_seed(KeySeed(&[]))? {
                Some(Key::Type) => (read_type(ctx, &mut map)?, true),
                Some(_) => {
                    ctx.rescan.set(true);
                    return Err(de::Error::custom("type not first"));
                }
                None => return Err(ctx.fail(DecodeError::MissingField { field: "type" })),
            },
        };
        let mut body = Body {
            ctx,
            map,
            type_seen,
        };
        match kind {
            Kind::Hello => body.hello().map(Message::Hello),
            Kind::Call => body.call().map(Message::Call),
            Kind::CallResponse => body.call_response().map(Message::CallResponse),
            Kind::CreateNotify => body.create_notify().map(Message::CreateNotify),
            Kind::DestroyNotify => body.destroy_notify().map(Message::DestroyNotify),
            Kind::Ping => body.nonce().map(|nonce| Message::Ping(Ping { nonce })),
            Kind::Pong => body.nonce().map(|nonce| Message::Pong(Pong { nonce })),
            Kind::Probe => body.probe().map(Message::Probe),
            Kind::Deadlock => body.deadlock().map(Message::Deadlock),
            Kind::Auth => body.auth().map(Message::Auth),
            Kind::Close => body.close().map(Message::Close),
            Kind::SnapshotEnd => body.snapshot_end().map(Message::SnapshotEnd),
            Kind::NameNotify => body.name_notify().map(Message::NameNotify),
            Kind::NameDrop => body.name_drop().map(Message::NameDrop),
            Kind::Meta => body.meta().map(Message::Meta),
            Kind::MoveNotify => body.move_notify().map(Message::MoveNotify),
        }
    }
}

/// Pass 2: finds the one `"type"`, skipping every value.
struct ScanSeed<'c> {
    ctx: &'c Ctx,
}

impl<'de> DeserializeSeed<'de> for ScanSeed<'_> {
    type Value = Kind;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Kind, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ScanSeed<'_> {
    type Value = Kind;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a message object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Kind, A::Error> {
        let mut kind = None;
        while let Some(key) = map.next_key_seed(KeySeed(&[]))? {
            match key {
                Key::Type if kind.is_some() => {
                    return Err(self.ctx.fail(DecodeError::DuplicateField { field: "type" }))
                }
                Key::Type => kind = Some(read_type(self.ctx, &mut map)?),
                _ => skip(self.ctx, &mut map, "(unknown)")?,
            }
        }
        kind.ok_or_else(|| self.ctx.fail(DecodeError::MissingField { field: "type" }))
    }
}

/// The rest of one message object, after (or around) its `"type"`.
struct Body<'c, A> {
    ctx: &'c Ctx,
    map: A,
    type_seen: bool,
}

/// A `&str` when the JSON string has no escapes, else an owned copy.
pub(super) struct CowStr;

impl<'de> DeserializeSeed<'de> for CowStr {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for CowStr {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
}

/// `null` or an absent field is `None` (serde's usual reading of an
/// optional field).
struct OptCowStr;

impl<'de> DeserializeSeed<'de> for OptCowStr {
    type Value = Option<Cow<'de, str>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for OptCowStr {
    type Value = Option<Cow<'de, str>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or null")
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        CowStr.deserialize(d).map(Some)
    }
}

/// `{"Ok": Val}` or `{"Err": string}`.
struct ResultSeed<'c>(&'c Ctx);

impl<'de> DeserializeSeed<'de> for ResultSeed<'_> {
    type Value = Result<Val, Cow<'de, str>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ResultSeed<'_> {
    type Value = Result<Val, Cow<'de, str>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(r#"{"Ok": Val} or {"Err": string}"#)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let Some(ok) = map.next_key_seed(OkSeed)? else {
            return Err(de::Error::invalid_length(0, &self));
        };
        let result = if ok {
            let seed = ValSeed {
                ctx: self.0,
                depth: 1,
                field: "result",
            };
            Ok(map.next_value_seed(seed)?)
        } else {
            Err(map.next_value_seed(CowStr)?)
        };
        if map.next_key_seed(OkSeed)?.is_some() {
            return Err(de::Error::invalid_length(2, &self));
        }
        Ok(result)
    }
}

/// `"Ok"` is true, `"Err"` false, anything else an error.
struct OkSeed;

impl<'de> DeserializeSeed<'de> for OkSeed {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_identifier(self)
    }
}

impl<'de> Visitor<'de> for OkSeed {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Ok or Err")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        match v {
            "Ok" => Ok(true),
            "Err" => Ok(false),
            _ => Err(E::unknown_variant(v, &["Ok", "Err"])),
        }
    }
}

impl<'de, A: MapAccess<'de>> Body<'_, A> {
    /// The next key among `fields`, skipping unknown keys and the one
    /// `"type"` of pass 3; `None` at the end of the object.
    fn key(&mut self, fields: &'static [&'static str]) -> Result<Option<usize>, A::Error> {
        loop {
            match self.map.next_key_seed(KeySeed(fields))? {
                None => return Ok(None),
                Some(Key::Field(i)) => return Ok(Some(i)),
                Some(Key::Type) if self.type_seen => {
                    return Err(self.ctx.fail(DecodeError::DuplicateField { field: "type" }))
                }
                Some(Key::Type) => {
                    self.type_seen = true;
                    skip(self.ctx, &mut self.map, "type")?;
                }
                Some(Key::Unknown) => skip(self.ctx, &mut self.map, "(unknown)")?,
            }
        }
    }

    /// Reads the value of `field` into `slot`, attributing failures.
    fn value<T, S>(
        &mut self,
        field: &'static str,
        slot: &mut Option<T>,
        seed: S,
    ) -> Result<(), A::Error>
    where
        S: DeserializeSeed<'de, Value = T>,
    {
        read_field(self.ctx, &mut self.map, field, slot, seed)
    }

    fn val(&mut self, field: &'static str, slot: &mut Option<Val>) -> Result<(), A::Error> {
        let seed = ValSeed {
            ctx: self.ctx,
            depth: 1,
            field,
        };
        self.value(field, slot, seed)
    }

    fn u64(&mut self, field: &'static str, slot: &mut Option<u64>) -> Result<(), A::Error> {
        self.value(field, slot, PhantomData)
    }

    fn id(&mut self, field: &'static str, slot: &mut Option<ObjectId>) -> Result<(), A::Error> {
        self.value(field, slot, PhantomData)
    }

    fn str(
        &mut self,
        field: &'static str,
        slot: &mut Option<Cow<'de, str>>,
    ) -> Result<(), A::Error> {
        self.value(field, slot, CowStr)
    }

    fn need<T>(&self, field: &'static str, slot: Option<T>) -> Result<T, A::Error> {
        need(self.ctx, field, slot)
    }

    fn hello(&mut self) -> Result<Hello<'de>, A::Error> {
        const F: &[&str] = &[
            "version",
            "machine_id",
            "node_prefix",
            "nonce",
            "boot",
            "compact",
        ];
        let (mut version, mut machine_id, mut node_prefix) = (None, None, None);
        let (mut nonce, mut boot, mut compact) = (None, None, None);
        while let Some(i) = self.key(F)? {
            match i {
                0 => self.value(F[0], &mut version, PhantomData)?,
                1 => self.str(F[1], &mut machine_id)?,
                2 => self.value(F[2], &mut node_prefix, PhantomData)?,
                3 => self.str(F[3], &mut nonce)?,
                4 => self.value(F[4], &mut boot, PhantomData)?,
                _ => self.value(F[5], &mut compact, PhantomData)?,
            }
        }
        Ok(Hello {
            version: self.need(F[0], version)?,
            machine_id: self.need(F[1], machine_id)?,
            node_prefix: self.need(F[2], node_prefix)?,
            nonce,
            boot,
            compact,
        })
    }

    fn call(&mut self) -> Result<Call<'de>, A::Error> {
        self.call_like(&CALL_FIELDS[..6]).map(|(call, _)| call)
    }

    /// A `call`'s fields, and `op` too when `fields` names it (a `meta`;
    /// in a `call`, `op` is an unknown field, skipped like any other).
    fn call_like(
        &mut self,
        fields: &'static [&'static str],
    ) -> Result<(Call<'de>, Option<Cow<'de, str>>), A::Error> {
        const F: &[&str] = &CALL_FIELDS;
        let (mut request_id, mut target, mut input) = (None, None, None);
        let (mut sender, mut sender_machine, mut op) = (None, None, None);
        let mut chain: Option<Option<ChainId>> = None;
        while let Some(i) = self.key(fields)? {
            match i {
                0 => self.u64(F[0], &mut request_id)?,
                1 => self.id(F[1], &mut target)?,
                2 => self.val(F[2], &mut input)?,
                3 => self.id(F[3], &mut sender)?,
                4 => self.str(F[4], &mut sender_machine)?,
                5 => self.value(F[5], &mut chain, PhantomData)?,
                _ => self.str(F[6], &mut op)?,
            }
        }
        let call = Call {
            request_id: self.need(F[0], request_id)?,
            target: self.need(F[1], target)?,
            input: self.need(F[2], input)?,
            sender: self.need(F[3], sender)?,
            sender_machine: self.need(F[4], sender_machine)?,
            chain: chain.flatten(),
        };
        Ok((call, op))
    }

    fn call_response(&mut self) -> Result<CallResponse<'de>, A::Error> {
        const F: &[&str] = &["request_id", "result"];
        let (mut request_id, mut result) = (None, None);
        while let Some(i) = self.key(F)? {
            match i {
                0 => self.u64(F[0], &mut request_id)?,
                _ => {
                    let seed = ResultSeed(self.ctx);
                    self.value(F[1], &mut result, seed)?
                }
            }
        }
        Ok(CallResponse {
            request_id: self.need(F[0], request_id)?,
            result: self.need(F[1], result)?,
        })
    }

    fn create_notify(&mut self) -> Result<CreateNotify<'de>, A::Error> {
        const F: &[&str] = &["object_id", "machine_id", "behavior", "epoch"];
        let (mut object_id, mut machine_id, mut behavior, mut epoch) = (None, None, None, None);
        while let Some(i) = self.key(F)? {
            match i {
                0 => self.id(F[0], &mut object_id)?,
                1 => self.str(F[1], &mut machine_id)?,
                2 => self.value(F[2], &mut behavior, OptCowStr)?,
                _ => self.value(F[3], &mut epoch, PhantomData)?,
            }
        }
        Ok(CreateNotify {
            object_id: self.need(F[0], object_id)?,
            machine_id: self.need(F[1], machine_id)?,
            behavior: behavior.flatten(),
            epoch: epoch.unwrap_or(0),
        })
    }

    fn move_notify(&mut self) -> Result<MoveNotify<'de>, A::Error> {
        const F: &[&str] = &["object_id", "machine_id", "epoch"];
        let (mut object_id, mut machine_id, mut epoch) = (None, None, None);
        while let Some(i) = self.key(F)? {
            match i {
                0 => self.id(F[0], &mut object_id)?,
                1 => self.str(F[1], &mut machine_id)?,
                _ => self.value(F[2], &mut epoch, PhantomData)?,
            }
        }
        Ok(MoveNotify {
            object_id: self.need(F[0], object_id)?,
            machine_id: self.need(F[1], machine_id)?,
            epoch: self.need(F[2], epoch)?,
        })
    }

    fn destroy_notify(&mut self) -> Result<DestroyNotify, A::Error> {
        const F: &[&str] = &["object_id"];
        let mut object_id = None;
        while self.key(F)?.is_some() {
            self.id(F[0], &mut object_id)?;
        }
        Ok(DestroyNotify {
            object_id: self.need(F[0], object_id)?,
        })
    }

    /// `ping` and `pong`.
    fn nonce(&mut self) -> Result<u64, A::Error> {
        const F: &[&str] = &["nonce"];
        let mut nonce = None;
        while self.key(F)?.is_some() {
            self.u64(F[0], &mut nonce)?;
        }
        self.need(F[0], nonce)
    }

    fn probe(&mut self) -> Result<Probe<'de>, A::Error> {
        const F: &[&str] = &["initiator", "blocked", "path", "hops"];
        let (mut initiator, mut blocked, mut path, mut hops) = (None, None, None, None);
        while let Some(i) = self.key(F)? {
            match i {
                0 => self.value(F[0], &mut initiator, PhantomData)?,
                1 => self.value(F[1], &mut blocked, PhantomData)?,
                2 => {
                    let seed = EdgesSeed(self.ctx, &PATH);
                    self.value(F[2], &mut path, seed)?
                }
                _ => self.value(F[3], &mut hops, PhantomData)?,
            }
        }
        Ok(Probe {
            initiator: self.need(F[0], initiator)?,
            blocked: self.need(F[1], blocked)?,
            path: self.need(F[2], path)?,
            hops: hops.unwrap_or(0),
        })
    }

    /// A `meta`: a call's fields plus `op`, which it must have.
    fn meta(&mut self) -> Result<Meta<'de>, A::Error> {
        let (call, op) = self.call_like(&CALL_FIELDS)?;
        Ok(Meta {
            op: self.need("op", op)?,
            call,
        })
    }

    fn name_notify(&mut self) -> Result<NameNotify<'de>, A::Error> {
        const F: &[&str] = &["name", "object_id", "machine_id"];
        let (mut name, mut object_id, mut machine_id) = (None, None, None);
        while let Some(i) = self.key(F)? {
            match i {
                0 => self.str(F[0], &mut name)?,
                1 => self.id(F[1], &mut object_id)?,
                _ => self.str(F[2], &mut machine_id)?,
            }
        }
        Ok(NameNotify {
            name: self.need(F[0], name)?,
            object_id: self.need(F[1], object_id)?,
            machine_id: self.need(F[2], machine_id)?,
        })
    }

    fn name_drop(&mut self) -> Result<NameDrop<'de>, A::Error> {
        const F: &[&str] = &["name", "object_id"];
        let (mut name, mut object_id) = (None, None);
        while let Some(i) = self.key(F)? {
            match i {
                0 => self.str(F[0], &mut name)?,
                _ => self.id(F[1], &mut object_id)?,
            }
        }
        Ok(NameDrop {
            name: self.need(F[0], name)?,
            object_id: self.need(F[1], object_id)?,
        })
    }

    fn snapshot_end(&mut self) -> Result<SnapshotEnd, A::Error> {
        const F: &[&str] = &["objects"];
        let mut objects = None;
        while self.key(F)?.is_some() {
            self.value(F[0], &mut objects, PhantomData)?;
        }
        Ok(SnapshotEnd {
            objects: self.need(F[0], objects)?,
        })
    }

    fn auth(&mut self) -> Result<Auth<'de>, A::Error> {
        const F: &[&str] = &["proof"];
        let mut proof = None;
        while self.key(F)?.is_some() {
            self.str(F[0], &mut proof)?;
        }
        Ok(Auth {
            proof: self.need(F[0], proof)?,
        })
    }

    fn close(&mut self) -> Result<Close<'de>, A::Error> {
        const F: &[&str] = &["reason"];
        let mut reason = None;
        while self.key(F)?.is_some() {
            self.str(F[0], &mut reason)?;
        }
        Ok(Close {
            reason: self.need(F[0], reason)?,
        })
    }

    fn deadlock(&mut self) -> Result<Deadlock<'de>, A::Error> {
        const F: &[&str] = &["victim", "object", "cycle"];
        let (mut victim, mut object, mut cycle) = (None, None, None);
        while let Some(i) = self.key(F)? {
            match i {
                0 => self.value(F[0], &mut victim, PhantomData)?,
                1 => self.id(F[1], &mut object)?,
                _ => {
                    let seed = EdgesSeed(self.ctx, &CYCLE);
                    self.value(F[2], &mut cycle, seed)?
                }
            }
        }
        Ok(Deadlock {
            victim: self.need(F[0], victim)?,
            object: self.need(F[1], object)?,
            cycle: self.need(F[2], cycle)?,
        })
    }
}
