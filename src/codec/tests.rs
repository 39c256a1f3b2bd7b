//! Codec tests beyond one file: golden lines (and every example line of
//! docs/protocol.md), the error
//! grid, depth bounds on a small stack, round trips, and the fuzz bodies
//! over the committed corpus plus seeded pseudo-random inputs.

use std::borrow::Cow;

use super::fuzzing::{self, XorShift};
use super::*;
use crate::vm::{ChainId, ObjectId, Val};

/// Every example line of PROTOCOL.md, in order, then a `probe` and a
/// `deadlock` (alpha, beta, gamma are prefixes 9001, 9002, 9003): the
/// deadlock-detection types are not in PROTOCOL.md's examples yet; then
/// version 2's `hello` and `auth` (docs/protocol.md's worked example), a
/// `snapshot_end`, and a probe that was passed on (`hops`).
const GOLDEN: [&str; 18] = [
    r#"{"type":"hello","version":1,"machine_id":"beta","node_prefix":9002}"#,
    r#"{"type":"create_notify","object_id":2533837740349325312,"machine_id":"beta","behavior":"pong"}"#,
    r#"{"type":"call","request_id":7,"target":2533837740349325312,"input":{"List":[{"Str":"Ping"},{"Nat":0},{"Nat":3},{"ObjectRef":2533837740349325312}]},"sender":2533556265372614656,"sender_machine":"alpha"}"#,
    r#"{"type":"call_response","request_id":7,"result":{"Ok":{"List":[{"Str":"done"},{"Nat":3}]}}}"#,
    r#"{"type":"call_response","request_id":8,"result":{"Err":"object not found: 12345"}}"#,
    r#"{"type":"ping","nonce":1}"#,
    r#"{"type":"probe","initiator":2533556265372614657,"blocked":2534119215326035969,"path":[{"chain":2533556265372614657,"object":2533837740349325312,"machine":"beta"},{"chain":2533837740349325313,"object":2534119215326035968,"machine":"gamma"}]}"#,
    r#"{"type":"deadlock","victim":2533556265372614657,"object":2533837740349325312,"cycle":[{"chain":2533556265372614657,"object":2533837740349325312,"machine":"beta"},{"chain":2533837740349325313,"object":2533556265372614656,"machine":"alpha"}]}"#,
    r#"{"type":"hello","version":2,"machine_id":"beta","node_prefix":9002,"nonce":"202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f","boot":7,"compact":1}"#,
    r#"{"type":"auth","proof":"43668d16993abee71a1944219096931a908d95716c6878dbe947ff62609a1d02"}"#,
    r#"{"type":"snapshot_end","objects":1}"#,
    r#"{"type":"probe","initiator":1,"blocked":2,"path":[],"hops":3}"#,
    r#"{"type":"name_notify","name":"pong","object_id":2533837740349325312,"machine_id":"beta"}"#,
    r#"{"type":"name_drop","name":"pong","object_id":2533837740349325312}"#,
    r#"{"type":"meta","op":"destroy","request_id":9,"target":2533837740349325312,"input":{"Just":{"Nat":5}},"sender":0,"sender_machine":"alpha","chain":2533556265372614657}"#,
    r#"{"type":"move_notify","object_id":2533556265372614657,"machine_id":"beta","epoch":1}"#,
    r#"{"type":"create_notify","object_id":2533556265372614657,"machine_id":"beta","behavior":"cell","epoch":1}"#,
    r#"{"type":"close","reason":"peer `gamma` has our node_prefix 9002"}"#,
];

fn edge(chain: u64, object: u64, machine: &'static str) -> WaitEdge<'static> {
    WaitEdge {
        chain: ChainId(chain),
        object: ObjectId(object),
        machine: machine.into(),
    }
}

fn golden_messages() -> Vec<Message<'static>> {
    let pong = ObjectId(2533837740349325312);
    vec![
        Message::Hello(Hello {
            version: 1,
            machine_id: "beta".into(),
            node_prefix: 9002,
            nonce: None,
            boot: None,
            compact: None,
        }),
        Message::CreateNotify(CreateNotify {
            object_id: pong,
            machine_id: "beta".into(),
            behavior: Some("pong".into()),
            epoch: 0,
        }),
        Message::Call(Call {
            request_id: 7,
            target: pong,
            input: Val::List(vec![
                Val::str("Ping"),
                Val::Nat(0),
                Val::Nat(3),
                Val::ObjectRef(pong),
            ]),
            sender: ObjectId(2533556265372614656),
            sender_machine: "alpha".into(),
            chain: None,
        }),
        Message::CallResponse(CallResponse {
            request_id: 7,
            result: Ok(Val::List(vec![Val::str("done"), Val::Nat(3)])),
        }),
        Message::CallResponse(CallResponse {
            request_id: 8,
            result: Err("object not found: 12345".into()),
        }),
        Message::Ping(Ping { nonce: 1 }),
        // alpha's chain 1 waits for pong on beta, whose turn beta's chain
        // 1 holds; that one waits on gamma, whose chain 1 holds the turn.
        Message::Probe(Probe {
            initiator: ChainId(2533556265372614657),
            blocked: ChainId(2534119215326035969),
            path: vec![
                edge(2533556265372614657, pong.0, "beta"),
                edge(2533837740349325313, 2534119215326035968, "gamma"),
            ],
            hops: 0,
        }),
        // alpha's chain 1, waiting on beta for pong, breaks the cycle.
        Message::Deadlock(Deadlock {
            victim: ChainId(2533556265372614657),
            object: pong,
            cycle: vec![
                edge(2533556265372614657, pong.0, "beta"),
                edge(2533837740349325313, 2533556265372614656, "alpha"),
            ],
        }),
        Message::Hello(Hello {
            version: 2,
            machine_id: "beta".into(),
            node_prefix: 9002,
            nonce: Some("202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f".into()),
            boot: Some(7),
            compact: Some(1),
        }),
        Message::Auth(Auth {
            proof: "43668d16993abee71a1944219096931a908d95716c6878dbe947ff62609a1d02".into(),
        }),
        Message::SnapshotEnd(SnapshotEnd { objects: 1 }),
        Message::Probe(Probe {
            initiator: ChainId(1),
            blocked: ChainId(2),
            path: vec![],
            hops: 3,
        }),
        Message::NameNotify(NameNotify {
            name: "pong".into(),
            object_id: pong,
            machine_id: "beta".into(),
        }),
        Message::NameDrop(NameDrop {
            name: "pong".into(),
            object_id: pong,
        }),
        Message::Meta(Meta {
            op: "destroy".into(),
            call: Call {
                request_id: 9,
                target: pong,
                input: Val::just(Val::Nat(5)),
                sender: ObjectId(0),
                sender_machine: "alpha".into(),
                chain: Some(ChainId(2533556265372614657)),
            },
        }),
        Message::MoveNotify(MoveNotify {
            object_id: ObjectId(2533556265372614657),
            machine_id: "beta".into(),
            epoch: 1,
        }),
        Message::CreateNotify(CreateNotify {
            object_id: ObjectId(2533556265372614657),
            machine_id: "beta".into(),
            behavior: Some("cell".into()),
            epoch: 1,
        }),
        Message::Close(Close {
            reason: "peer `gamma` has our node_prefix 9002".into(),
        }),
    ]
}

fn frame_of(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_raw(&mut out, payload).unwrap();
    out
}

fn all_frames(dec: &mut FrameDecoder, parts: &[&[u8]]) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    for part in parts {
        let mut part = *part;
        while !part.is_empty() {
            part = &part[dec.fill(part)..];
            while let Some(p) = dec.next_frame().unwrap() {
                frames.push(p.to_vec());
            }
        }
    }
    frames
}

#[test]
fn golden_lines_parse() {
    for (line, want) in GOLDEN.iter().zip(golden_messages()) {
        assert_eq!(decode(line.as_bytes()), Ok(want), "{line}");
    }
}

#[test]
fn golden_lines_reencode_byte_identical() {
    for line in GOLDEN {
        let msg = decode(line.as_bytes()).unwrap();
        let mut out = Vec::new();
        encode(&mut out, &msg).unwrap();
        assert_eq!(out, frame_of(line.as_bytes()), "{line}");
    }
}

#[test]
fn golden_frames_split_at_every_byte() {
    for line in GOLDEN {
        let bytes = frame_of(line.as_bytes());
        for at in 0..=bytes.len() {
            let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
            let frames = all_frames(&mut dec, &[&bytes[..at], &bytes[at..]]);
            assert_eq!(frames, vec![line.as_bytes().to_vec()], "split at {at}");
            assert_eq!(dec.buffered(), 0);
        }
    }
}

#[test]
fn golden_stream_split_at_every_byte() {
    let stream: Vec<u8> = GOLDEN.iter().flat_map(|l| frame_of(l.as_bytes())).collect();
    for at in 0..=stream.len() {
        let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
        let frames = all_frames(&mut dec, &[&stream[..at], &stream[at..]]);
        let parsed: Vec<_> = frames
            .iter()
            .map(|f| decode(f).unwrap().into_owned())
            .collect();
        assert_eq!(parsed, golden_messages(), "split at {at}");
    }
}

#[test]
fn roundtrip_every_message_type_and_optional_field() {
    let mut msgs = golden_messages();
    msgs.push(Message::Call(Call {
        request_id: u64::MAX,
        target: ObjectId(0),
        input: Val::Nothing,
        sender: ObjectId(u64::MAX),
        sender_machine: "".into(),
        chain: Some(ChainId(9002 << 48 | 1)),
    }));
    msgs.push(Message::CreateNotify(CreateNotify {
        object_id: ObjectId(1),
        machine_id: "a\"b\\c\n😀".into(),
        behavior: None,
        epoch: u16::MAX,
    }));
    msgs.push(Message::DestroyNotify(DestroyNotify {
        object_id: ObjectId(5),
    }));
    msgs.push(Message::Pong(Pong { nonce: u64::MAX }));
    msgs.push(Message::Probe(Probe {
        initiator: ChainId(0),
        blocked: ChainId(u64::MAX),
        path: vec![],
        hops: 0,
    }));
    msgs.push(Message::Deadlock(Deadlock {
        victim: ChainId(u64::MAX),
        object: ObjectId(0),
        cycle: vec![],
    }));
    let escaped = WaitEdge {
        machine: "a\"b\\c\n\u{1}😀".into(),
        ..edge(u64::MAX, u64::MAX, "")
    };
    msgs.push(Message::Probe(Probe {
        initiator: ChainId(1),
        blocked: ChainId(2),
        path: vec![escaped.clone(), edge(0, 0, "")],
        hops: 0,
    }));
    msgs.push(Message::Deadlock(Deadlock {
        victim: ChainId(1),
        object: ObjectId(2),
        cycle: vec![escaped],
    }));
    for (i, msg) in msgs.iter().enumerate() {
        fuzzing::roundtrip(msg, i * 7);
    }
}

#[test]
fn roundtrip_val_of_every_shape() {
    let leaves = [
        Val::Nat(u64::MAX),
        Val::Bool(false),
        Val::str("\u{0}\"\\/é"),
        Val::Nothing,
        Val::ObjectRef(ObjectId(1 << 63)),
        Val::TxRef(crate::vm::TxId(7)),
        Val::List(vec![]),
    ];
    let mut vals: Vec<Val> = leaves.to_vec();
    for leaf in &leaves {
        vals.push(Val::List(vec![leaf.clone(), leaf.clone()]));
        vals.push(Val::pair(leaf.clone(), Val::just(leaf.clone())));
    }
    for (i, v) in vals.into_iter().enumerate() {
        let msg = Message::CallResponse(CallResponse {
            request_id: i as u64,
            result: Ok(v),
        });
        fuzzing::roundtrip(&msg, i);
    }
}

#[test]
fn roundtrip_seeded_random_messages() {
    let mut rng = XorShift::new(0x5eed);
    for _ in 0..3000 {
        let len = rng.below(200);
        fuzzing::message_roundtrip(&rng.bytes(len));
    }
}

#[test]
fn bounded_val_serializes_like_derive() {
    let mut rng = XorShift::new(42);
    for _ in 0..1000 {
        let len = rng.below(200);
        if let Message::Call(c) =
            fuzzing::message_from_bytes(&[&[1u8][..], &rng.bytes(len)].concat())
        {
            if c.input.depth() <= MAX_VAL_DEPTH {
                let bounded = val::BoundedVal {
                    val: &c.input,
                    depth: 1,
                };
                let derived = serde_json::to_string(&c.input).unwrap();
                assert_eq!(serde_json::to_string(&bounded).unwrap(), derived);
            }
        }
    }
}

#[test]
fn decode_borrows_unescaped_strings() {
    let Message::Hello(h) = decode(GOLDEN[0].as_bytes()).unwrap() else {
        panic!()
    };
    assert!(matches!(h.machine_id, Cow::Borrowed("beta")));
    let escaped = br#"{"type":"hello","version":1,"machine_id":"b\"e\u00e9","node_prefix":1}"#;
    let Message::Hello(h) = decode(escaped).unwrap() else {
        panic!()
    };
    assert!(matches!(h.machine_id, Cow::Owned(ref s) if s == "b\"e\u{e9}"));
}

#[test]
fn decode_type_not_first_takes_two_passes() {
    let msg = decode(br#"{"nonce":3,"x":[{"type":"pong"}],"type":"ping"}"#);
    assert_eq!(msg, Ok(Message::Ping(Ping { nonce: 3 })));
    let msg = decode(br#"{"input":"Nothing","type":"call","request_id":1,"target":2,"sender":3,"sender_machine":"m","chain":9}"#);
    assert!(matches!(
        msg,
        Ok(Message::Call(Call {
            chain: Some(ChainId(9)),
            ..
        }))
    ));
}

#[test]
fn decode_ignores_unknown_fields() {
    let msg =
        decode(br#"{"type":"ping","future":{"a":[1,2.5,-3,null,true,"s\n"]},"nonce":1,"z":{}}"#);
    assert_eq!(msg, Ok(Message::Ping(Ping { nonce: 1 })));
}

#[test]
fn decode_null_optionals_are_none() {
    let msg = decode(br#"{"type":"create_notify","object_id":1,"machine_id":"m","behavior":null}"#)
        .unwrap();
    assert!(matches!(
        msg,
        Message::CreateNotify(CreateNotify { behavior: None, .. })
    ));
    let call = br#"{"type":"call","request_id":1,"target":2,"input":"Nothing","sender":3,"sender_machine":"m","chain":null}"#;
    assert!(matches!(
        decode(call),
        Ok(Message::Call(Call { chain: None, .. }))
    ));
}

#[test]
fn decode_error_grid() {
    use DecodeError::*;
    let cases: &[(&[u8], DecodeError)] = &[
        (b"", Empty),
        (b"{\"type\":\"ping\xff\"}", InvalidUtf8 { valid_up_to: 13 }),
        (b"{\"type\":\n\"ping\",}", InvalidJson { line: 2, column: 8 }),
        (b"{\"type\":\"ping\",\"nonce\":1", InvalidJson { line: 1, column: 24 }),
        (b"{\"type\":\"ping\",\"nonce\":1} x", InvalidJson { line: 1, column: 27 }),
        (b"[1]", NotAnObject),
        (b"7", NotAnObject),
        (b"\"ping\"", NotAnObject),
        (b"{\"type\":\"pling\",\"nonce\":1}", UnknownType(TypeName::new("pling"))),
        (b"{\"nonce\":1,\"type\":\"pling\"}", UnknownType(TypeName::new("pling"))),
        (b"{}", MissingField { field: "type" }),
        (b"{\"nonce\":1}", MissingField { field: "type" }),
        (b"{\"type\":\"ping\"}", MissingField { field: "nonce" }),
        (b"{\"type\":7}", WrongType { field: "type" }),
        (b"{\"type\":\"ping\",\"nonce\":\"1\"}", WrongType { field: "nonce" }),
        (b"{\"type\":\"ping\",\"nonce\":-1}", WrongType { field: "nonce" }),
        (b"{\"type\":\"hello\",\"version\":1,\"machine_id\":\"a\",\"node_prefix\":65536}", WrongType { field: "node_prefix" }),
        (b"{\"type\":\"destroy_notify\",\"object_id\":1.5}", WrongType { field: "object_id" }),
        (b"{\"type\":\"ping\",\"nonce\":1,\"nonce\":2}", DuplicateField { field: "nonce" }),
        (b"{\"type\":\"ping\",\"type\":\"ping\",\"nonce\":1}", DuplicateField { field: "type" }),
        (b"{\"nonce\":1,\"type\":\"ping\",\"type\":\"ping\"}", DuplicateField { field: "type" }),
        (b"{\"type\":\"call_response\",\"request_id\":1,\"result\":{\"Maybe\":1}}", WrongType { field: "result" }),
        (b"{\"type\":\"call_response\",\"request_id\":1,\"result\":{\"Err\":1}}", WrongType { field: "result" }),
        (b"{\"type\":\"call_response\",\"request_id\":1,\"result\":\"Ok\"}", WrongType { field: "result" }),
        (b"{\"type\":\"call_response\",\"request_id\":1,\"result\":{\"Ok\":{\"Pair\":[\"Nothing\"]}}}", WrongType { field: "result" }),
        (b"{\"type\":\"call_response\",\"request_id\":1,\"result\":{\"Ok\":{\"Pair\":[\"Nothing\",\"Nothing\",\"Nothing\"]}}}", WrongType { field: "result" }),
        (b"{\"type\":\"call_response\",\"request_id\":1,\"result\":{\"Ok\":{\"Nat\":1,\"Bool\":true}}}", InvalidJson { line: 1, column: 62 }),
        (b"{\"type\":\"call_response\",\"request_id\":1,\"result\":{\"Ok\":{\"Foo\":1}}}", WrongType { field: "result" }),
    ];
    for (payload, want) in cases {
        let got = decode(payload);
        assert_eq!(got, Err(*want), "{}", String::from_utf8_lossy(payload));
        assert_eq!(
            got.unwrap_err().is_unknown_type(),
            matches!(want, UnknownType(_))
        );
    }
}

/// `{"type":"call_response",...,"result":{"Ok":V}}` with V `depth` Lists deep.
fn nested_response(depth: usize, open: &str, close: &str, leaf: &str) -> Vec<u8> {
    let mut s = String::from(r#"{"type":"call_response","request_id":1,"result":{"Ok":"#);
    s.push_str(&open.repeat(depth - 1));
    s.push_str(leaf);
    s.push_str(&close.repeat(depth - 1));
    s.push_str("}}");
    s.into_bytes()
}

/// With `"type"` last, every field is skipped once before it is read:
/// a legal answer as deep as a Val may be (`{"List":[...]}` levels and
/// the `{"Ok": ...}` around them) must pass that skip too.
#[test]
fn the_deepest_legal_answer_decodes_with_type_last() {
    let leaf = r#"{"List":[]}"#;
    let first = nested_response(MAX_VAL_DEPTH, r#"{"List":["#, "]}", leaf);
    let text = String::from_utf8(first).unwrap();
    let body = text.strip_prefix(r#"{"type":"call_response","#).unwrap();
    let last = format!(r#"{{{},"type":"call_response"}}"#, &body[..body.len() - 1]);
    let decoded = decode(last.as_bytes());
    let Ok(Message::CallResponse(CallResponse { result: Ok(v), .. })) = decoded else {
        panic!("{decoded:?}")
    };
    assert_eq!(v.depth(), MAX_VAL_DEPTH);
}

#[test]
fn val_depth_128_accepted_129_too_deep() {
    for (open, close) in [
        (r#"{"List":["#, "]}"),
        (r#"{"Just":"#, "}"),
        (r#"{"Pair":["Nothing","#, "]}"),
    ] {
        let payload = nested_response(MAX_VAL_DEPTH, open, close, r#"{"Nat":1}"#);
        let ok = decode(&payload);
        let Ok(Message::CallResponse(CallResponse { result: Ok(v), .. })) = ok else {
            panic!("{open}: {ok:?}")
        };
        assert_eq!(v.depth(), MAX_VAL_DEPTH);
        let payload = nested_response(MAX_VAL_DEPTH + 1, open, close, r#"{"Nat":1}"#);
        let deep = decode(&payload);
        assert_eq!(
            deep,
            Err(DecodeError::TooDeep { field: "result" }),
            "{open}"
        );
    }
}

#[test]
fn encode_refuses_val_past_max_depth() {
    let deep = (0..MAX_VAL_DEPTH).fold(Val::Nat(1), |v, _| Val::just(v));
    let msg = Message::CallResponse(CallResponse {
        request_id: 1,
        result: Ok(deep),
    });
    let mut out = b"keep".to_vec();
    assert_eq!(encode(&mut out, &msg), Err(EncodeError::TooDeep));
    assert_eq!(out, b"keep");
}

/// Measured need for the deepest legal input (a 128-level Pair chain):
/// under 96 KiB optimized, about 700 KiB unoptimized (debug frames are
/// big and unshared), so the test stack depends on the profile.
const SMALL_STACK: usize = if cfg!(debug_assertions) { 1024 } else { 256 } * 1024;

/// Runs `f` on a thread with a small stack: a recursion without bound
/// would overflow it (and abort the test binary) long before 1,000,000.
fn on_small_stack(f: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .stack_size(SMALL_STACK)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn million_deep_unknown_field_is_too_deep_on_small_stack() {
    on_small_stack(|| {
        const N: usize = 1_000_000;
        for (open, close) in [("[", "]"), (r#"{"a":"#, "}")] {
            let payload = format!(
                r#"{{"type":"ping","x":{}1{},"nonce":1}}"#,
                open.repeat(N),
                close.repeat(N)
            );
            assert_eq!(
                decode(payload.as_bytes()),
                Err(DecodeError::TooDeep { field: "(unknown)" })
            );
            // Same in the two-pass path, where the scan skips it first.
            let payload = format!(
                r#"{{"x":{}1{},"type":"ping","nonce":1}}"#,
                open.repeat(N),
                close.repeat(N)
            );
            assert_eq!(
                decode(payload.as_bytes()),
                Err(DecodeError::TooDeep { field: "(unknown)" })
            );
        }
        let payload = "[".repeat(N);
        assert_eq!(decode(payload.as_bytes()), Err(DecodeError::NotAnObject));
    });
}

#[test]
fn million_deep_val_is_an_error_on_small_stack() {
    on_small_stack(|| {
        const N: usize = 1_000_000;
        // serde_json's enum path calls `[` where a Val belongs a syntax
        // error, at the first `[`, without descending.
        let arrays = nested_response(N, "[", "]", "1");
        assert_eq!(
            decode(&arrays),
            Err(DecodeError::InvalidJson {
                line: 1,
                column: 55
            })
        );
        let lists = nested_response(N, r#"{"List":["#, "]}", r#"{"Nat":1}"#);
        assert_eq!(
            decode(&lists),
            Err(DecodeError::TooDeep { field: "result" })
        );
        let justs = nested_response(N, r#"{"Just":"#, "}", r#"{"Nat":1}"#);
        assert_eq!(
            decode(&justs),
            Err(DecodeError::TooDeep { field: "result" })
        );
        // The deepest legal Val, and the deepest legal skip, fit too.
        let ok = nested_response(MAX_VAL_DEPTH, r#"{"List":["#, "]}", r#"{"Nat":1}"#);
        assert!(decode(&ok).is_ok());
        let skip = format!(
            r#"{{"type":"ping","x":{}1{},"nonce":1}}"#,
            "[".repeat(MAX_IGNORED_DEPTH - 1),
            "]".repeat(MAX_IGNORED_DEPTH - 1)
        );
        assert_eq!(
            decode(skip.as_bytes()),
            Ok(Message::Ping(Ping { nonce: 1 }))
        );
    });
}

/// A `probe` (or, with `deadlock`, a `deadlock`) payload whose list holds
/// `n` copies of `edge`; with `type_last`, `"type"` comes last (two passes).
fn wait_payload(deadlock: bool, n: usize, edge: &str, type_last: bool) -> Vec<u8> {
    let (ty, head, list) = if deadlock {
        ("deadlock", r#""victim":1,"object":2"#, "cycle")
    } else {
        ("probe", r#""initiator":1,"blocked":2"#, "path")
    };
    let edges = vec![edge; n].join(",");
    let body = format!(r#"{head},"{list}":[{edges}]"#);
    let s = if type_last {
        format!(r#"{{{body},"type":"{ty}"}}"#)
    } else {
        format!(r#"{{"type":"{ty}",{body}}}"#)
    };
    s.into_bytes()
}

const EDGE: &str = r#"{"chain":3,"object":4,"machine":"m"}"#;

#[test]
fn wait_path_64_accepted_65_too_long() {
    for deadlock in [false, true] {
        for type_last in [false, true] {
            let case = format!("deadlock {deadlock}, type last {type_last}");
            for n in [0, 1, MAX_WAIT_PATH] {
                let payload = wait_payload(deadlock, n, EDGE, type_last);
                let edges = match decode(&payload) {
                    Ok(Message::Probe(p)) if !deadlock => p.path,
                    Ok(Message::Deadlock(d)) if deadlock => d.cycle,
                    other => panic!("{case}, {n} edges: {other:?}"),
                };
                assert_eq!(edges, vec![edge(3, 4, "m"); n], "{case}");
            }
            let field = if deadlock { "cycle" } else { "path" };
            let long = wait_payload(deadlock, MAX_WAIT_PATH + 1, EDGE, type_last);
            assert_eq!(decode(&long), Err(DecodeError::TooLong { field }), "{case}");
            // Refused at the 65th edge's first byte: a broken 65th edge, or
            // a thousand more, say the same.
            let mut bad = wait_payload(deadlock, MAX_WAIT_PATH, EDGE, type_last);
            let at = bad
                .windows(2)
                .position(|w| w == b"]}" || w == b"],")
                .unwrap();
            bad.splice(at..at, br#",{"chain":"x"}"#.iter().copied());
            assert_eq!(decode(&bad), Err(DecodeError::TooLong { field }), "{case}");
            let many = wait_payload(deadlock, 1000, EDGE, type_last);
            assert_eq!(decode(&many), Err(DecodeError::TooLong { field }), "{case}");
        }
    }
}

#[test]
fn encode_refuses_wait_path_past_max() {
    let edges = vec![edge(1, 2, "m"); MAX_WAIT_PATH + 1];
    let long = [
        Message::Probe(Probe {
            initiator: ChainId(1),
            blocked: ChainId(2),
            path: edges.clone(),
            hops: 0,
        }),
        Message::Deadlock(Deadlock {
            victim: ChainId(1),
            object: ObjectId(2),
            cycle: edges,
        }),
    ];
    for mut msg in long {
        let mut out = b"keep".to_vec();
        assert_eq!(encode(&mut out, &msg), Err(EncodeError::TooLong));
        assert_eq!(out, b"keep");
        match &mut msg {
            Message::Probe(p) => p.path.pop(),
            Message::Deadlock(d) => d.cycle.pop(),
            _ => unreachable!(),
        };
        fuzzing::roundtrip(&msg, 100);
    }
}

#[test]
fn decode_wait_edge_skips_unknown_fields() {
    let odd =
        r#"{"machine":"m","type":"x","note":{"a":[1,{"b":null}]},"object":4,"chain":3,"z":[]}"#;
    for deadlock in [false, true] {
        for type_last in [false, true] {
            let payload = wait_payload(deadlock, 2, odd, type_last);
            let msg = decode(&payload).unwrap();
            assert_eq!(
                msg.wait_edges(),
                Some(&[edge(3, 4, "m"), edge(3, 4, "m")][..])
            );
        }
    }
    // An unknown value `n` levels deep: its top sits at depth 3 (list,
    // edge, value), so at most MAX_IGNORED_DEPTH - 2, in either pass.
    let deep = |n: usize| {
        format!(
            r#"{{"x":{}1{},"chain":3,"object":4,"machine":"m"}}"#,
            "[".repeat(n - 1),
            "]".repeat(n - 1)
        )
    };
    for type_last in [false, true] {
        let ok = wait_payload(false, 1, &deep(MAX_IGNORED_DEPTH - 2), type_last);
        assert!(decode(&ok).is_ok(), "type last {type_last}");
        let too_deep = wait_payload(true, 1, &deep(MAX_IGNORED_DEPTH - 1), type_last);
        // The type-last scan skips the whole list as one unknown field.
        let field = if type_last {
            "(unknown)"
        } else {
            "cycle[].(unknown)"
        };
        assert_eq!(decode(&too_deep), Err(DecodeError::TooDeep { field }));
    }
}

#[test]
fn decode_wait_edge_borrows_unescaped_machine() {
    let edge = r#"{"chain":3,"object":4,"machine":"beta"}"#;
    let escaped = r#"{"chain":3,"object":4,"machine":"b\"e\u00e9ta\\"}"#;
    let payload = wait_payload(false, 2, &[edge, escaped].join(","), false);
    let Ok(Message::Probe(p)) = decode(&payload) else {
        panic!()
    };
    assert_eq!(p.path.len(), 4);
    assert!(matches!(p.path[0].machine, Cow::Borrowed("beta")));
    assert!(matches!(p.path[1].machine, Cow::Owned(ref s) if s == "b\"e\u{e9}ta\\"));
    let owned = Message::Probe(p.clone()).into_owned();
    assert_eq!(owned, Message::Probe(p));
}

#[test]
fn decode_wait_error_grid() {
    use DecodeError::*;
    // `{"type":T,BODY}`
    #[rustfmt::skip]
    let bodies: &[(&str, &str, DecodeError)] = &[
        ("probe", r#""initiator":1,"blocked":2"#, MissingField { field: "path" }),
        ("probe", r#""blocked":2,"path":[]"#, MissingField { field: "initiator" }),
        ("deadlock", r#""victim":1,"cycle":[]"#, MissingField { field: "object" }),
        ("deadlock", r#""object":1,"cycle":[]"#, MissingField { field: "victim" }),
        ("probe", r#""initiator":"1","blocked":2,"path":[]"#, WrongType { field: "initiator" }),
        ("deadlock", r#""victim":1,"object":1.5,"cycle":[]"#, WrongType { field: "object" }),
        ("probe", r#""initiator":1,"blocked":2,"path":{}"#, WrongType { field: "path" }),
        ("probe", r#""initiator":1,"blocked":2,"path":null"#, WrongType { field: "path" }),
        ("deadlock", r#""victim":1,"object":2,"cycle":[],"cycle":[]"#, DuplicateField { field: "cycle" }),
    ];
    // `path` in `{"type":"probe","initiator":1,"blocked":2,"path":[ENTRIES]}`,
    // `cycle` in `{"type":"deadlock","victim":1,"object":2,"cycle":[ENTRIES]}`
    #[rustfmt::skip]
    let entries: &[(&str, &str, DecodeError)] = &[
        ("path", r#"{"chain":1,"object":2}"#, MissingField { field: "path[].machine" }),
        ("path", r#"{"object":2,"machine":"m"}"#, MissingField { field: "path[].chain" }),
        ("cycle", r#"{"chain":1,"machine":"m"}"#, MissingField { field: "cycle[].object" }),
        ("cycle", r#"{"chain":1,"object":2,"machine":"m"},{}"#, MissingField { field: "cycle[].chain" }),
        ("path", r#"{"chain":"1","object":2,"machine":"m"}"#, WrongType { field: "path[].chain" }),
        ("cycle", r#"{"chain":1,"object":-2,"machine":"m"}"#, WrongType { field: "cycle[].object" }),
        ("path", r#"{"chain":1,"object":2,"machine":7}"#, WrongType { field: "path[].machine" }),
        ("cycle", r#"{"chain":1,"object":2,"machine":null}"#, WrongType { field: "cycle[].machine" }),
        ("path", "1", WrongType { field: "path[]" }),
        ("path", r#"["m"]"#, WrongType { field: "path[]" }),
        ("cycle", r#"{"chain":1,"object":2,"machine":"m"},null"#, WrongType { field: "cycle[]" }),
        ("path", r#"{"chain":1,"chain":1}"#, DuplicateField { field: "path[].chain" }),
        ("cycle", r#"{"machine":"m","machine":"m"}"#, DuplicateField { field: "cycle[].machine" }),
        ("path", r#"{"chain":1,"object":2,"machine":"m",}"#, InvalidJson { line: 1, column: 87 }),
    ];
    let bodies = bodies
        .iter()
        .map(|(ty, body, e)| (format!(r#"{{"type":"{ty}",{body}}}"#), *e));
    let entries = entries.iter().map(|(list, entries, e)| {
        let head = match *list {
            "path" => r#""type":"probe","initiator":1,"blocked":2"#,
            _ => r#""type":"deadlock","victim":1,"object":2"#,
        };
        (format!(r#"{{{head},"{list}":[{entries}]}}"#), *e)
    });
    for (payload, want) in bodies.chain(entries) {
        assert_eq!(decode(payload.as_bytes()), Err(want), "{payload}");
    }
}

#[test]
fn million_deep_unknown_field_in_edge_is_too_deep_on_small_stack() {
    on_small_stack(|| {
        const N: usize = 1_000_000;
        let edge = format!(
            r#"{{"chain":1,"x":{}1{},"object":2,"machine":"m"}}"#,
            r#"{"a":"#.repeat(N),
            "}".repeat(N)
        );
        for type_last in [false, true] {
            let payload = wait_payload(false, 1, &edge, type_last);
            // The two-pass scan skips the whole path as one unknown field.
            let field = if type_last {
                "(unknown)"
            } else {
                "path[].(unknown)"
            };
            assert_eq!(decode(&payload), Err(DecodeError::TooDeep { field }));
        }
    });
}

#[test]
fn error_types_are_small_and_display() {
    assert!(std::mem::size_of::<DecodeError>() <= 24);
    assert!(std::mem::size_of::<FrameError>() <= 16);
    assert!(std::mem::size_of::<EncodeError>() <= 24);
    let e = DecodeError::InvalidJson { line: 1, column: 2 };
    assert_eq!(e.to_string(), "invalid JSON at line 1 column 2");
    let e = DecodeError::TooLong { field: "path" };
    assert_eq!(e.to_string(), "field `path` has too many entries");
    assert_eq!(
        FrameError::TooLarge { len: 9, max: 8 }.to_string(),
        "frame length 9 over the maximum 8"
    );
    // An unknown type is named: escaped, and cut (on a character
    // boundary) with a mark.
    let named = |t: &str| DecodeError::UnknownType(TypeName::new(t)).to_string();
    assert_eq!(named("gossip"), "unknown message type `gossip`");
    assert_eq!(named("a\nb"), "unknown message type `a\\nb`");
    assert_eq!(
        named("create_notify_extended_v2"),
        "unknown message type `create_notify_extended…`"
    );
    assert_eq!(
        named(&"é".repeat(12)),
        format!("unknown message type `{}…`", "é".repeat(11))
    );
}

#[test]
fn type_names_match_wire() {
    for (line, msg) in GOLDEN.iter().zip(golden_messages()) {
        assert!(line.starts_with(&format!(r#"{{"type":"{}""#, msg.type_name())));
    }
}

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

#[test]
fn fuzz_frame_decoder_corpus() {
    let inputs = corpus("frame_decoder");
    assert!(inputs.len() >= 10);
    for input in inputs {
        fuzzing::frame_decoder(&input);
    }
}

#[test]
fn fuzz_message_roundtrip_corpus() {
    let inputs = corpus("message_roundtrip");
    assert!(inputs.len() >= 7);
    for input in inputs {
        fuzzing::message_roundtrip(&input);
    }
}

/// Streams of valid frames with a few bytes flipped, in random modes.
#[test]
fn fuzz_frame_decoder_seeded_random() {
    let mut rng = XorShift::new(7);
    for _ in 0..3000 {
        let mut input = rng.bytes(2);
        for _ in 0..rng.below(6) {
            let len = rng.below(80);
            let msg = fuzzing::message_from_bytes(&rng.bytes(len));
            // Half as a compact peer gets them (`objects` has no JSON form).
            let version = if rng.below(2) == 0 {
                compact::VERSION
            } else {
                0
            };
            if encode_for(&mut input, &msg, DEFAULT_MAX_FRAME, version).is_err() {
                continue;
            }
        }
        for _ in 0..rng.below(3) {
            let at = rng.below(input.len());
            input[at] = rng.next_u64() as u8;
        }
        fuzzing::frame_decoder(&input);
    }
    for _ in 0..1000 {
        let len = rng.below(64);
        fuzzing::frame_decoder(&rng.bytes(len));
    }
}

/// Writes the seed corpus (`cargo test --lib write_seed_corpus -- --ignored`).
#[test]
#[ignore]
fn write_seed_corpus() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    };
    let mut all = Vec::new();
    for (i, line) in GOLDEN.iter().enumerate() {
        let frame = frame_of(line.as_bytes());
        all.extend_from_slice(&frame);
        // mode 0: default max, chunks of 1; mode 12: chunks up to 1500.
        write(
            "frame_decoder",
            &format!("golden_{i}"),
            &[&[12u8, i as u8][..], &frame].concat(),
        );
        write(
            "frame_decoder",
            &format!("golden_{i}_bytewise"),
            &[&[0u8, 0][..], &frame].concat(),
        );
    }
    // The same messages in compact form, where it carries them.
    for (i, msg) in golden_messages().iter().enumerate() {
        let mut frame = Vec::new();
        encode_for(&mut frame, msg, DEFAULT_MAX_FRAME, 1).unwrap();
        if compact::is_compact(&frame[HEADER_LEN..]) {
            let seed = [&[12u8, i as u8][..], &frame].concat();
            write("frame_decoder", &format!("compact_{i}"), &seed);
        }
    }
    // A snapshot's `objects` (compact version 2), which has no JSON form.
    let mut frame = Vec::new();
    encode_for(
        &mut frame,
        &Message::Objects(two_objects()),
        DEFAULT_MAX_FRAME,
        compact::VERSION,
    )
    .unwrap();
    write(
        "frame_decoder",
        "compact_objects",
        &[&[12u8, 0][..], &frame].concat(),
    );
    for (mode, name) in [
        (0u8, "stream_1"),
        (4, "stream_8"),
        (8, "stream_64"),
        (12, "stream_1500"),
    ] {
        write("frame_decoder", name, &[&[mode, 3][..], &all].concat());
    }
    let bad: [(&str, Vec<u8>); 9] = [
        ("empty_frame", vec![0, 0, 0, 0]),
        ("too_large", vec![0xff, 0xff, 0xff, 0xff]),
        ("truncated", frame_of(GOLDEN[5].as_bytes())[..10].to_vec()),
        ("bad_utf8", frame_of(b"{\"type\":\"\xff\"}")),
        ("type_last", frame_of(br#"{"nonce":1,"type":"ping"}"#)),
        ("unknown_type", frame_of(br#"{"type":"gossip","nonce":1}"#)),
        (
            "deep_unknown",
            frame_of(format!(r#"{{"type":"ping","x":{}}}"#, "[".repeat(300)).as_bytes()),
        ),
        (
            "wait_path_65",
            frame_of(&wait_payload(false, MAX_WAIT_PATH + 1, EDGE, false)),
        ),
        (
            "wait_edge_missing_machine",
            frame_of(&wait_payload(true, 2, r#"{"chain":1,"object":2}"#, false)),
        ),
    ];
    for (name, frame) in bad {
        write("frame_decoder", name, &[&[0u8, 5][..], &frame].concat());
    }
    write(
        "frame_decoder",
        "small_max",
        &[&[1u8, 30][..], &all].concat(),
    );
    write(
        "frame_decoder",
        "max_256_chunks_17",
        &[&[2u8 | 5 << 2, 9][..], &all].concat(),
    );
    for t in 0..super::message::KINDS.len() as u8 {
        write(
            "message_roundtrip",
            &format!("type_{t}"),
            &[t, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 3, 2, 9, 9, 1],
        );
    }
    write("message_roundtrip", "deep_val", &[1, 0, 0, 9, 9, 5, 9, 3]);
    // type, initiator/victim, blocked/object, then the long-list branch
    // with 62 + 2 and 62 + 3 edges.
    write("message_roundtrip", "wait_path_64", &[7, 0, 1, 0, 2, 0, 2]);
    write("message_roundtrip", "wait_cycle_65", &[8, 0, 1, 0, 2, 0, 3]);
}

#[test]
fn probe_hops_round_trip_and_default_to_zero() {
    let probe = Message::Probe(Probe {
        initiator: ChainId(1),
        blocked: ChainId(2),
        path: vec![],
        hops: 3,
    });
    let mut out = Vec::new();
    encode(&mut out, &probe).unwrap();
    assert!(std::str::from_utf8(&out[HEADER_LEN..])
        .unwrap()
        .contains("\"hops\":3"));
    assert_eq!(decode(&out[HEADER_LEN..]).unwrap(), probe);
    let bare = br#"{"type":"probe","initiator":1,"blocked":2,"path":[]}"#;
    match decode(bare).unwrap() {
        Message::Probe(p) => assert_eq!(p.hops, 0),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_calls_op_field_is_unknown_and_ignored_a_metas_is_required() {
    let call = br#"{"type":"call","request_id":1,"target":2,"input":"Nothing","sender":0,"sender_machine":"a","op":5}"#;
    assert!(
        matches!(decode(call), Ok(Message::Call(_))),
        "{:?}",
        decode(call)
    );
    let meta = br#"{"type":"meta","request_id":1,"target":2,"input":"Nothing","sender":0,"sender_machine":"a"}"#;
    assert_eq!(
        decode(meta).unwrap_err(),
        DecodeError::MissingField { field: "op" }
    );
}

/// The compact call of `docs/protocol.md`'s worked example, byte for byte.
#[test]
fn compact_call_golden_bytes() {
    let call = Message::Call(Call {
        request_id: 7,
        target: ObjectId(0x232a_0000_0000_0001),
        input: Val::just(Val::Nat(3)),
        sender: ObjectId(0x2329_0000_0000_0002),
        sender_machine: "alpha".into(),
        chain: Some(ChainId(0x2329_0000_0000_0005)),
    });
    let mut out = Vec::new();
    encode_for(&mut out, &call, DEFAULT_MAX_FRAME, 1).unwrap();
    let expected: &[u8] = &[
        0, 0, 0, 50, // length, big-endian
        0x01, 0x01, // call, chain present
        7, 0, 0, 0, 0, 0, 0, 0, // request_id
        1, 0, 0, 0, 0, 0, 0x2a, 0x23, // target: beta's (prefix 9002) object 1
        2, 0, 0, 0, 0, 0, 0x29, 0x23, // sender: alpha's (prefix 9001) object 2
        5, 0, 0, 0, 0, 0, 0x29, 0x23, // chain: alpha's chain 5
        5, b'a', b'l', b'p', b'h', b'a', // sender_machine
        0x07, 0x01, 3, 0, 0, 0, 0, 0, 0, 0, // Just(Nat(3))
    ];
    assert_eq!(out, expected);
    assert_eq!(decode(&out[HEADER_LEN..]), Ok(call));

    let answer = Message::CallResponse(CallResponse {
        request_id: 7,
        result: Ok(Val::Nothing),
    });
    out.clear();
    encode_for(&mut out, &answer, DEFAULT_MAX_FRAME, 1).unwrap();
    assert_eq!(out, [0, 0, 0, 10, 0x02, 7, 0, 0, 0, 0, 0, 0, 0, 0x00]);
    assert_eq!(decode(&out[HEADER_LEN..]), Ok(answer));
}

#[test]
fn compact_is_only_for_peers_that_offered_it_and_only_for_calls() {
    let call = Message::Call(Call {
        request_id: 1,
        target: ObjectId(2),
        input: Val::Nat(3),
        sender: ObjectId(4),
        sender_machine: "alpha".into(),
        chain: None,
    });
    let mut json = Vec::new();
    encode_for(&mut json, &call, DEFAULT_MAX_FRAME, 0).unwrap();
    assert_eq!(json[HEADER_LEN], b'{');
    // An error answer, a notice and a long machine name stay JSON.
    let long_name = Message::Call(Call {
        sender_machine: "m".repeat(256).into(),
        ..match call.clone() {
            Message::Call(c) => c,
            _ => unreachable!(),
        }
    });
    let others = [
        Message::CallResponse(CallResponse {
            request_id: 1,
            result: Err("no such object".into()),
        }),
        Message::DestroyNotify(DestroyNotify {
            object_id: ObjectId(9),
        }),
        long_name,
    ];
    for msg in others {
        let mut out = Vec::new();
        encode_for(&mut out, &msg, DEFAULT_MAX_FRAME, 1).unwrap();
        assert_eq!(out[HEADER_LEN], b'{', "{msg:?}");
        assert_eq!(decode(&out[HEADER_LEN..]), Ok(msg));
    }
}

#[test]
fn compact_decode_error_grid() {
    let good: &[u8] = &[0x02, 7, 0, 0, 0, 0, 0, 0, 0, 0x01, 3, 0, 0, 0, 0, 0, 0, 0];
    assert!(decode(good).is_ok());
    let compact_at = |at| Err(DecodeError::Compact { at });
    // Truncated anywhere: the byte where the missing field starts.
    assert_eq!(decode(&good[..5]), compact_at(1));
    assert_eq!(decode(&good[..9]), compact_at(9));
    assert_eq!(decode(&good[..12]), compact_at(10));
    // A byte after the value.
    assert_eq!(decode(&[good, &[0]].concat()), compact_at(18));
    // An unknown value tag.
    let mut bad = good.to_vec();
    bad[9] = 0x0a;
    assert_eq!(decode(&bad), compact_at(9));
    // A call with an unknown flag, and one whose machine is not UTF-8.
    let call: &[u8] = &[
        0x01, 0x00, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 1,
        b'a', 0x00,
    ];
    assert!(decode(call).is_ok());
    let mut bad = call.to_vec();
    bad[1] = 0x02;
    assert_eq!(decode(&bad), compact_at(1));
    bad = call.to_vec();
    bad[27] = 0xff;
    assert_eq!(decode(&bad), compact_at(27));
    // A list that claims more items than the payload holds fails at its
    // end (what it may reserve meanwhile: `tools/alloc-count`).
    let list: &[u8] = &[
        0x02, 1, 0, 0, 0, 0, 0, 0, 0, 0x09, 0xff, 0xff, 0xff, 0xff, 0x00,
    ];
    assert_eq!(decode(list), compact_at(15));
    // A string that is not UTF-8: the first bad byte.
    let s: &[u8] = &[0x02, 1, 0, 0, 0, 0, 0, 0, 0, 0x06, 2, 0, 0, 0, b'a', 0xc3];
    assert_eq!(decode(s), compact_at(15));
}

#[test]
fn compact_val_depth_128_accepted_129_too_deep() {
    // Justs around a string long enough that the value budget (one
    // value per 8 bytes) is not what stops them.
    let payload = |depth: usize| {
        let mut p = vec![0x02, 1, 0, 0, 0, 0, 0, 0, 0];
        p.extend(std::iter::repeat_n(0x07, depth - 1));
        p.extend_from_slice(&[0x06, 0, 4, 0, 0]);
        p.extend(std::iter::repeat_n(b'x', 1024));
        p
    };
    assert!(decode(&payload(MAX_VAL_DEPTH)).is_ok());
    assert_eq!(
        decode(&payload(MAX_VAL_DEPTH + 1)),
        Err(DecodeError::TooDeep { field: "result" })
    );
    // A million levels: refused at the limit, not by the stack.
    on_small_stack(move || {
        assert_eq!(
            decode(&payload(1_000_000)),
            Err(DecodeError::TooDeep { field: "result" })
        );
    });
}

/// One value per 8 payload bytes, plus 16: a denser compact payload is
/// refused at its first value past the budget, and the encoder sends such
/// a value as JSON, so a frame never costs more than a few times its size.
#[test]
fn compact_values_are_at_most_one_per_8_bytes_plus_16() {
    // 9 + 5 + 40 = 54 bytes: a budget of 6 + 16 = 22 values, for a list
    // and 40 items; the 22nd item (at 14 + 21) is one too many.
    let mut dense = vec![0x02, 1, 0, 0, 0, 0, 0, 0, 0, 0x09, 40, 0, 0, 0];
    dense.extend(std::iter::repeat_n(0x00, 40));
    assert_eq!(decode(&dense), Err(DecodeError::Compact { at: 35 }));
    let msg = Message::CallResponse(CallResponse {
        request_id: 1,
        result: Ok(Val::List(vec![Val::Nothing; 40])),
    });
    let mut out = Vec::new();
    encode_for(&mut out, &msg, DEFAULT_MAX_FRAME, 1).unwrap();
    assert_eq!(out[HEADER_LEN], b'{', "too dense: JSON");
    assert_eq!(decode(&out[HEADER_LEN..]), Ok(msg));
    // Small structured answers fit in the slack: Pair(Bool, Bool) is 12
    // bytes and 3 values; a list of 100 Nats is 914 bytes and 101 values.
    let fits = [
        Val::pair(Val::Bool(true), Val::Bool(false)),
        Val::List(vec![Val::Nat(7); 100]),
    ];
    for v in fits {
        let msg = Message::CallResponse(CallResponse {
            request_id: 1,
            result: Ok(v),
        });
        out.clear();
        encode_for(&mut out, &msg, DEFAULT_MAX_FRAME, 1).unwrap();
        assert_eq!(out[HEADER_LEN], compact::CALL_RESPONSE, "{msg:?}");
        assert_eq!(decode(&out[HEADER_LEN..]), Ok(msg));
    }
}

/// Two of alpha's (prefix 9001) objects in one `objects` frame, as
/// docs/protocol.md's worked example shows them.
fn two_objects() -> Objects<'static> {
    let mut objects = Objects::default();
    let ping = objects.behavior_index("ping").unwrap();
    let pong = objects.behavior_index("pong").unwrap();
    objects.push(ObjectId(0x2329_0000_0000_0001), ping, 0);
    objects.push(ObjectId(0x2329_0000_0000_0002), pong, 3);
    objects
}

#[test]
fn compact_objects_golden_bytes() {
    let msg = Message::Objects(two_objects());
    let mut out = Vec::new();
    encode_for(&mut out, &msg, DEFAULT_MAX_FRAME, 2).unwrap();
    let expected: &[u8] = &[
        0, 0, 0, 38,   // length, big-endian
        0x03, // objects
        2,    // behaviors
        4, b'p', b'i', b'n', b'g', // behavior 0
        4, b'p', b'o', b'n', b'g', // behavior 1
        2, 0, 0, 0, // count
        1, 0, 0, 0, 0, 0, 0x29, 0x23, 0, 0, 0, // object 1, ping, epoch 0
        2, 0, 0, 0, 0, 0, 0x29, 0x23, 1, 3, 0, // object 2, pong, epoch 3
    ];
    assert_eq!(out, expected);
    let Message::Objects(objects) = decode(&out[HEADER_LEN..]).unwrap() else {
        panic!("not objects");
    };
    assert_eq!(objects, two_objects());
    let entries: Vec<ObjectEntry> = objects.iter().collect();
    assert_eq!(
        entries,
        [
            ObjectEntry {
                object_id: ObjectId(0x2329_0000_0000_0001),
                behavior: 0,
                epoch: 0
            },
            ObjectEntry {
                object_id: ObjectId(0x2329_0000_0000_0002),
                behavior: 1,
                epoch: 3
            },
        ]
    );
    assert_eq!(objects.behaviors(), ["ping", "pong"]);
    assert_eq!(
        Message::Objects(objects).into_owned().type_name(),
        "objects"
    );
    assert_eq!(two_objects().wire_len(), 38);
}

/// `objects` has no JSON form: below compact version 2 it is refused,
/// and nothing is written.
#[test]
fn compact_objects_only_for_a_peer_that_offered_version_2() {
    let msg = Message::Objects(two_objects());
    for version in [0, 1] {
        let mut out = b"before".to_vec();
        assert_eq!(
            encode_for(&mut out, &msg, DEFAULT_MAX_FRAME, version),
            Err(EncodeError::NoJsonForm)
        );
        assert_eq!(out, b"before");
    }
    assert!(encode(&mut Vec::new(), &msg).is_err());
    assert!(serde_json::to_string(&msg).is_err());
}

#[test]
fn compact_objects_decode_error_grid() {
    let mut frame = Vec::new();
    encode_for(
        &mut frame,
        &Message::Objects(two_objects()),
        DEFAULT_MAX_FRAME,
        2,
    )
    .unwrap();
    let good = &frame[HEADER_LEN..];
    assert!(decode(good).is_ok());
    let compact_at = |at| Err(DecodeError::Compact { at });
    // Cut short: the table, the count, the entries (where they start).
    assert_eq!(decode(&good[..1]), compact_at(1));
    assert_eq!(decode(&good[..4]), compact_at(3));
    assert_eq!(decode(&good[..14]), compact_at(12));
    assert_eq!(decode(&good[..20]), compact_at(16));
    assert_eq!(decode(&good[..good.len() - 1]), compact_at(16));
    // A byte after the last entry.
    assert_eq!(decode(&[good, &[0]].concat()), compact_at(good.len()));
    // A behavior index past the table: that index's byte.
    let mut bad = good.to_vec();
    bad[16 + 11 + 8] = 2;
    assert_eq!(decode(&bad), compact_at(16 + 11 + 8));
    // A behavior name that is not UTF-8: its first bad byte.
    bad = good.to_vec();
    bad[9] = 0xff;
    assert_eq!(decode(&bad), compact_at(9));
    // A count the payload cannot hold: where the entries start; one over
    // the most a frame may hold: the count.
    bad = good.to_vec();
    bad[12..16].copy_from_slice(&100u32.to_le_bytes());
    assert_eq!(decode(&bad), compact_at(16));
    bad[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(decode(&bad), compact_at(12));
    // More entries than a frame may hold, even with the bytes there: the
    // count's offset (4,096 is the most).
    let entries = |count: usize| {
        let mut frame = vec![0x03, 1, 1, b'x'];
        frame.extend_from_slice(&(count as u32).to_le_bytes());
        frame.extend(std::iter::repeat_n(0, count * compact::OBJECT_ENTRY));
        frame
    };
    assert!(decode(&entries(compact::MAX_OBJECTS_PER_FRAME)).is_ok());
    assert_eq!(
        decode(&entries(compact::MAX_OBJECTS_PER_FRAME + 1)),
        compact_at(4)
    );
    // No table and no entries is a (useless) run of nothing.
    let empty: &[u8] = &[0x03, 0, 0, 0, 0, 0];
    assert_eq!(decode(empty), Ok(Message::Objects(Objects::default())));
    // An entry with no table to index.
    let orphan: &[u8] = &[0x03, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    assert_eq!(decode(orphan), compact_at(6 + 8));
}

/// An `objects` past the decoder's entry limit is refused when encoded,
/// not sent to be refused by the peer; one at the limit round-trips.
#[test]
fn compact_objects_past_the_entry_limit_are_not_encoded() {
    let mut objects = Objects::default();
    let b = objects.behavior_index("cell").unwrap();
    for i in 0..compact::MAX_OBJECTS_PER_FRAME as u64 {
        objects.push(ObjectId(i + 1), b, 0);
    }
    let mut out = Vec::new();
    let msg = Message::Objects(objects.clone());
    encode_for(&mut out, &msg, 1 << 20, compact::OBJECTS_VERSION).unwrap();
    assert_eq!(decode(&out[HEADER_LEN..]), Ok(msg));
    objects.push(ObjectId(0), b, 0);
    out.clear();
    let msg = Message::Objects(objects);
    let refused = encode_for(&mut out, &msg, 1 << 20, compact::OBJECTS_VERSION);
    assert_eq!(refused, Err(EncodeError::TooManyObjects));
    assert!(out.is_empty(), "nothing written");
}

/// The table takes each name once, and refuses what the layout cannot
/// carry: a name over 255 bytes, a 256th name.
#[test]
fn compact_objects_table_limits() {
    let mut objects = Objects::default();
    assert_eq!(objects.behavior_index("a"), Some(0));
    assert_eq!(objects.behavior_index("b"), Some(1));
    assert_eq!(objects.behavior_index("a"), Some(0));
    assert_eq!(objects.behavior_index(&"x".repeat(256)), None);
    assert_eq!(objects.behavior_index(&"x".repeat(255)), Some(2));
    for i in 3..255 {
        assert_eq!(objects.behavior_index(&i.to_string()), Some(i as u8));
    }
    assert_eq!(objects.behavior_index("one too many"), None);
    assert_eq!(objects.behavior_index("a"), Some(0));
    objects.push(ObjectId(1), 254, 0);
    let mut out = Vec::new();
    encode_for(
        &mut out,
        &Message::Objects(objects.clone()),
        DEFAULT_MAX_FRAME,
        2,
    )
    .unwrap();
    assert_eq!(out.len(), HEADER_LEN + objects.wire_len());
    assert_eq!(decode(&out[HEADER_LEN..]), Ok(Message::Objects(objects)));
}

/// Every one-line message in a `json` (or plain) block of docs/protocol.md
/// decodes,
/// and encodes back to the same bytes: the page's examples are what the
/// code sends.
#[test]
fn every_json_example_of_the_protocol_page_round_trips() {
    let page = include_str!("../../docs/protocol.md");
    let (mut in_block, mut in_json) = (false, false);
    let mut checked = 0;
    for line in page.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("```") {
            // A fence opens a block (```json or a bare ``` is checked) or
            // closes the one open.
            in_block = !in_block;
            in_json = in_block && (trimmed == "```json" || trimmed == "```");
            continue;
        }
        // `<...>` marks a placeholder, not a message to check.
        if !in_json || !trimmed.starts_with("{\"type\"") || trimmed.contains('<') {
            continue;
        }
        let msg = decode(trimmed.as_bytes()).unwrap_or_else(|e| panic!("{trimmed}: {e}"));
        let mut out = Vec::new();
        encode_for(&mut out, &msg, DEFAULT_MAX_FRAME, 0).unwrap();
        assert_eq!(
            std::str::from_utf8(&out[HEADER_LEN..]).unwrap(),
            trimmed,
            "re-encoded differently"
        );
        checked += 1;
    }
    assert!(checked >= 29, "found only {checked} examples");
}
