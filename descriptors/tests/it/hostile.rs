//! Hostile input: the inputs that used to abort the process (a 5,000-level
//! query chain, an `Any` nested 20,000 deep, a deep `Struct`, deep status
//! details) and the limits that now refuse them, each checked at and just
//! past its bound.

use std::time::{Duration, Instant};

use descriptors::{
    DescriptorError, ErrorKind, JsonOptions, Registry, Snapshot,
    json::{
        DEFAULT_MAX_DEPTH, MAX_QUERY_PARAMS, build_request, json_to_proto, proto_to_json,
        status_to_json,
    },
    wire::MAX_MESSAGE_NESTING,
};
use http::Method;
use prost_reflect::MessageDescriptor;

use crate::common::{compile, compile_source};

pub(crate) const HOSTILE: &str = "example/hostile/v1/hostile.proto";
const NODE: &str = "example.hostile.v1.Node";
const NODE_URL: &str = "type.googleapis.com/example.hostile.v1.Node";

fn snapshot() -> std::sync::Arc<Snapshot> {
    let registry = Registry::new();
    registry.put("hostile", &compile(&[HOSTILE])).unwrap();
    registry.snapshot()
}

fn node(snapshot: &Snapshot) -> MessageDescriptor {
    snapshot.pool().get_message_by_name(NODE).unwrap()
}

// === wire builders: nested messages built inside out in O(size) ===

/// A message under construction, its bytes kept reversed so that wrapping
/// it in one more level is an append, not a copy.
struct Rev(Vec<u8>);

impl Rev {
    fn new(inner: &[u8]) -> Self {
        Self(inner.iter().rev().copied().collect())
    }

    fn prepend(&mut self, bytes: &[u8]) {
        self.0.extend(bytes.iter().rev());
    }

    /// The current bytes become the length-delimited field `number`.
    fn wrap(&mut self, number: u32) {
        let mut head = Vec::new();
        prost::encoding::encode_key(
            number,
            prost::encoding::WireType::LengthDelimited,
            &mut head,
        );
        prost::encoding::encode_varint(self.0.len() as u64, &mut head);
        self.prepend(&head);
    }

    /// Prepends the length-delimited field `number` holding `value`.
    fn prepend_field(&mut self, number: u32, value: &[u8]) {
        let mut field = Vec::new();
        prost::encoding::encode_key(
            number,
            prost::encoding::WireType::LengthDelimited,
            &mut field,
        );
        prost::encoding::encode_varint(value.len() as u64, &mut field);
        field.extend_from_slice(value);
        self.prepend(&field);
    }

    fn finish(self) -> Vec<u8> {
        self.0.into_iter().rev().collect()
    }
}

/// `Node { any: Any(Node { any: ... Node { name: "leaf" } }) }`, `levels` Anys.
pub(crate) fn nested_any(levels: usize) -> Vec<u8> {
    anys_around(levels, b"\x12\x04leaf")
}

/// `levels` Anys as in [`nested_any`] around a `Node` of fields `inner`.
fn anys_around(levels: usize, inner: &[u8]) -> Vec<u8> {
    let mut rev = Rev::new(inner);
    for _ in 0..levels {
        rev.wrap(2); // Any.value
        rev.prepend_field(1, NODE_URL.as_bytes()); // Any.type_url
        rev.wrap(8); // Node.any
    }
    rev.finish()
}

/// `Node { value: {"a": {"a": ... {}}} }`, `levels` Structs.
pub(crate) fn nested_struct(levels: usize) -> Vec<u8> {
    let mut rev = Rev::new(b"\x08\x00"); // Value { null_value: NULL_VALUE }
    for _ in 0..levels {
        rev.wrap(2); // entry.value
        rev.prepend_field(1, b"a"); // entry.key
        rev.wrap(1); // Struct.fields
        rev.wrap(5); // Value.struct_value
    }
    rev.wrap(10); // Node.value
    rev.finish()
}

/// `Node { child: Node { child: ... } }`, `levels` deep.
fn nested_child(levels: usize) -> Vec<u8> {
    let mut rev = Rev::new(b"\x12\x01x");
    for _ in 0..levels {
        rev.wrap(1);
    }
    rev.finish()
}

/// A `google.rpc.Status` whose one detail is `detail` as an Any of `url`.
fn status_with_detail(url: &str, detail: &[u8]) -> Vec<u8> {
    let mut rev = Rev::new(detail);
    rev.wrap(2);
    rev.prepend_field(1, url.as_bytes());
    rev.wrap(3); // Status.details
    rev.prepend(b"\x08\x03"); // code: INVALID_ARGUMENT
    rev.finish()
}

fn to_json(desc: &MessageDescriptor, proto: &[u8]) -> Result<String, DescriptorError> {
    let mut out = b"prefix".to_vec();
    let result = proto_to_json(desc, proto, &JsonOptions::default(), &mut out);
    match result {
        Ok(()) => Ok(String::from_utf8(out[6..].to_vec()).unwrap()),
        Err(e) => {
            assert_eq!(out, b"prefix", "out left as it was on error");
            Err(e)
        }
    }
}

// === requests: query and path field chains ===

fn get_node(snapshot: &Snapshot, query: &str) -> Result<Vec<u8>, DescriptorError> {
    let m = snapshot.match_http(&Method::GET, "/v1/nodes/n1").unwrap();
    let mut out = Vec::new();
    build_request(&m, b"", Some(query), &JsonOptions::default(), &mut out).map(|()| out)
}

#[test]
fn query_chain_of_5000_levels_is_refused() {
    let snapshot = snapshot();
    let query = format!("{}name=x", "child.".repeat(5_000));
    assert!(query.len() > 30_000);
    let started = Instant::now();
    let err = get_node(&snapshot, &query).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidRequest, "{err}");
    assert!(err.to_string().contains("deeper than 64"), "{err}");
    assert!(
        err.to_string().len() < 300,
        "the name is not echoed whole: {err}"
    );
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[test]
fn query_chain_at_the_limit_is_accepted() {
    let snapshot = snapshot();
    // 63 `child` + `name`: 64 components.
    let at = format!("{}name=x", "child.".repeat(DEFAULT_MAX_DEPTH - 1));
    let proto = get_node(&snapshot, &at).unwrap();
    let json = to_json(&node(&snapshot), &proto).unwrap();
    assert_eq!(json.matches("child").count(), DEFAULT_MAX_DEPTH - 1);

    let past = format!("{}name=x", "child.".repeat(DEFAULT_MAX_DEPTH));
    assert!(matches!(
        get_node(&snapshot, &past),
        Err(DescriptorError::InvalidPath { .. })
    ));
}

#[test]
fn too_many_query_parameters_are_refused() {
    let snapshot = snapshot();
    let at = vec!["tags=a"; MAX_QUERY_PARAMS].join("&");
    get_node(&snapshot, &at).unwrap();
    let past = vec!["tags=a"; MAX_QUERY_PARAMS + 1].join("&");
    let err = get_node(&snapshot, &past).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidRequest);
    assert!(err.to_string().contains("query parameters"), "{err}");
}

#[test]
fn max_depth_above_the_nesting_limit_acts_as_it() {
    let snapshot = snapshot();
    let m = snapshot.match_http(&Method::GET, "/v1/nodes/n1").unwrap();
    let opts = JsonOptions {
        max_depth: 1_000_000,
        ..JsonOptions::default()
    };
    let query = format!("{}name=x", "child.".repeat(5_000));
    let err = build_request(&m, b"", Some(&query), &opts, &mut Vec::new()).unwrap_err();
    assert!(err.to_string().contains("deeper than 100"), "{err}");
    let json = format!("{}{}", r#"{"child":"#.repeat(150), "}".repeat(150));
    let err = json_to_proto(&node(&snapshot), json.as_bytes(), &opts, &mut Vec::new()).unwrap_err();
    assert!(
        matches!(
            err,
            DescriptorError::TooDeep {
                max: MAX_MESSAGE_NESTING
            }
        ),
        "{err:?}"
    );
}

#[test]
fn path_variable_deeper_than_the_limit_is_refused_at_registration() {
    let chain = format!("{}name", "child.".repeat(DEFAULT_MAX_DEPTH));
    let source = format!(
        r#"syntax = "proto3";
package deep.v1;
import "google/api/annotations.proto";
message Node {{ Node child = 1; string name = 2; }}
service S {{ rpc Get(Node) returns (Node) {{ option (google.api.http) = {{ get: "/v1/{{{chain}}}" }}; }} }}
"#
    );
    let set = compile_source("deep/v1/deep.proto", &source);
    let err = Registry::new().put("deep", &set).unwrap_err();
    assert!(
        matches!(err, DescriptorError::InvalidRule { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("deeper than 64"), "{err}");
}

// === replies: protobuf -> JSON ===

#[test]
fn any_nested_20000_deep_is_refused_quickly() {
    let snapshot = snapshot();
    let proto = nested_any(20_000);
    assert!(proto.len() > 900_000, "{}", proto.len());
    let started = Instant::now();
    let err = to_json(&node(&snapshot), &proto).unwrap_err();
    // Whichever bound is met first: the payloads' sum grows with the depth.
    assert!(
        matches!(
            err,
            DescriptorError::TooDeepMessage { max: 64 } | DescriptorError::AnyTooLarge { .. }
        ),
        "{err:?}"
    );
    assert_eq!(err.kind(), ErrorKind::InvalidResponse);
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[test]
fn nested_any_within_the_limit_renders() {
    let snapshot = snapshot();
    // Each Any is one JSON object: 1 + 63 levels.
    let json = to_json(&node(&snapshot), &nested_any(DEFAULT_MAX_DEPTH - 1)).unwrap();
    assert_eq!(json.matches("@type").count(), DEFAULT_MAX_DEPTH - 1);
    assert!(json.contains(r#""name":"leaf""#));
    let err = to_json(&node(&snapshot), &nested_any(DEFAULT_MAX_DEPTH)).unwrap_err();
    assert!(matches!(err, DescriptorError::TooDeepMessage { .. }));
}

#[test]
fn struct_nested_20000_deep_is_refused() {
    let snapshot = snapshot();
    let err = to_json(&node(&snapshot), &nested_struct(20_000)).unwrap_err();
    assert!(
        matches!(err, DescriptorError::TooDeepMessage { .. }),
        "{err:?}"
    );
}

#[test]
fn struct_depth_counts_json_levels() {
    let snapshot = snapshot();
    // A Struct level is one JSON object but three messages on the wire
    // (Value, Struct, map entry): 30 levels are 92 messages deep and render;
    // 40 are 122, past prost's own limit of 100 nested messages per decode
    // (which prost-reflect would hit too), refused before decoding.
    let within = to_json(&node(&snapshot), &nested_struct(30)).unwrap();
    assert_eq!(within.matches(r#"{"a":"#).count(), 30);
    let err = to_json(&node(&snapshot), &nested_struct(40)).unwrap_err();
    assert!(
        matches!(
            err,
            DescriptorError::TooDeepMessage {
                max: MAX_MESSAGE_NESTING
            }
        ),
        "{err:?}"
    );
}

#[test]
fn deep_child_chain_reply_is_refused() {
    let snapshot = snapshot();
    to_json(&node(&snapshot), &nested_child(DEFAULT_MAX_DEPTH - 1)).unwrap();
    for levels in [DEFAULT_MAX_DEPTH, 5_000, 100_000] {
        let err = to_json(&node(&snapshot), &nested_child(levels)).unwrap_err();
        assert!(
            matches!(err, DescriptorError::TooDeepMessage { .. }),
            "{levels}: {err:?}"
        );
    }
}

/// Brackets nested deepest in `json` (no brackets inside its strings).
fn bracket_depth(json: &str) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    for b in json.bytes() {
        match b {
            b'{' | b'[' => {
                depth += 1;
                max = max.max(depth);
            }
            b'}' | b']' => depth -= 1,
            _ => {}
        }
    }
    max
}

#[test]
fn json_depth_is_counted_in_every_container() {
    let snapshot = snapshot();
    let desc = node(&snapshot);
    let max = 9;
    let opts = JsonOptions {
        max_depth: max,
        ignore_unknown_fields: true,
        ..JsonOptions::default()
    };
    let value_any = r#"{"any":{"@type":"type.googleapis.com/google.protobuf.Value","value":"#;
    // (head, open, inner, close, tail): `open` and `close` repeated n times.
    let shapes = [
        (r#""#, r#"{"child":"#, "{}", "}", ""),
        (r#""#, r#"{"children":["#, "{}", "]}", ""),
        (r#""#, r#"{"children":["#, r#"{"value":[]}"#, "]}", ""),
        (r#""#, r#"{"named":{"k":"#, "{}", "}}", ""),
        (r#""#, r#"{"named":{"k":"#, r#"{"value":{}}"#, "}}", ""),
        (r#"{"data":"#, r#"{"a":"#, "{}", "}", "}"),
        (r#"{"value":"#, "[", "{}", "]", "}"),
        (r#"{"unknown":"#, "[", "{}", "]", "}"),
        (r#"{"unknown":"#, r#"{"a":"#, "[]", "}", "}"),
        (value_any, "[", "[]", "]", "}}"),
        (&format!("{value_any}1,\"unknown\":"), "[", "[]", "]", "}}"),
        (
            &format!(r#"{{"any":{{"@type":"{NODE_URL}","child":"#),
            r#"{"child":"#,
            "{}",
            "}",
            "}}",
        ),
    ];
    for (head, open, inner, close, tail) in shapes {
        for n in 0..=max + 1 {
            let json = format!("{head}{}{inner}{}{tail}", open.repeat(n), close.repeat(n));
            let depth = bracket_depth(&json);
            let result = json_to_proto(&desc, json.as_bytes(), &opts, &mut Vec::new());
            if depth <= max {
                assert!(result.is_ok(), "{json}: {result:?}");
            } else {
                assert!(
                    matches!(result, Err(DescriptorError::TooDeep { max: m }) if m == max),
                    "{json}: {result:?}"
                );
            }
        }
    }
}

#[test]
fn what_a_request_may_hold_a_reply_may_too() {
    let snapshot = snapshot();
    let desc = node(&snapshot);
    let opts = JsonOptions::default();
    // 63 nested objects inside the top one: the deepest request accepted.
    let deep_children = format!(
        "{}{{}}{}",
        r#"{"child":"#.repeat(DEFAULT_MAX_DEPTH - 1),
        "}".repeat(DEFAULT_MAX_DEPTH - 1)
    );
    let deep_lists = format!(
        "{}{{}}{}",
        r#"{"children":["#.repeat(DEFAULT_MAX_DEPTH / 2 - 1),
        "]}".repeat(DEFAULT_MAX_DEPTH / 2 - 1)
    );
    let deep_maps = format!(
        "{}{{}}{}",
        r#"{"named":{"k":"#.repeat(DEFAULT_MAX_DEPTH / 2 - 1),
        "}}".repeat(DEFAULT_MAX_DEPTH / 2 - 1)
    );
    for json in [deep_children, deep_lists, deep_maps] {
        let mut proto = Vec::new();
        json_to_proto(&desc, json.as_bytes(), &opts, &mut proto).unwrap();
        let mut out = Vec::new();
        proto_to_json(&desc, &proto, &opts, &mut out).unwrap();
    }
}

#[test]
fn any_payloads_beyond_their_budget_are_refused() {
    let snapshot = snapshot();
    // 40 levels of Any around a 200 KB blob: each level is decoded again
    // when rendered, 40 x 200 KB of work for a 200 KB message.
    let mut blob = Vec::new();
    prost::encoding::bytes::encode(12, &vec![7u8; 200_000], &mut blob);
    let err = to_json(&node(&snapshot), &anys_around(40, &blob)).unwrap_err();
    assert!(
        matches!(err, DescriptorError::AnyTooLarge { .. }),
        "{err:?}"
    );
}

#[test]
fn json_output_over_the_limit_is_refused() {
    let snapshot = snapshot();
    let desc = node(&snapshot);
    let mut proto = Vec::new();
    json_to_proto(
        &desc,
        br#"{"tags":["aaaaaaaaaa","bbbbbbbbbb","cccccccccc"]}"#,
        &JsonOptions::default(),
        &mut proto,
    )
    .unwrap();
    let opts = JsonOptions {
        max_json_output_bytes: 20,
        ..JsonOptions::default()
    };
    let mut out = b"keep".to_vec();
    let err = proto_to_json(&desc, &proto, &opts, &mut out).unwrap_err();
    assert!(
        matches!(err, DescriptorError::JsonTooLarge { max: 20 }),
        "{err:?}"
    );
    assert_eq!(out, b"keep");
    let opts = JsonOptions {
        max_json_output_bytes: 100,
        ..JsonOptions::default()
    };
    proto_to_json(&desc, &proto, &opts, &mut out).unwrap();
}

#[test]
fn deep_status_details_render_as_no_details() {
    let snapshot = snapshot();
    let started = Instant::now();
    // Details resolve a type URL without a `/` too (as its whole name).
    for url in [NODE_URL, NODE] {
        for detail in [
            nested_any(20_000),
            nested_struct(20_000),
            nested_child(5_000),
        ] {
            let bin = status_with_detail(url, &detail);
            let json = status_to_json(snapshot.codec(), 3, "bad", Some(&bin));
            assert_eq!(
                json,
                serde_json::json!({ "code": 3, "message": "bad", "details": [] })
            );
        }
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    // A shallow one still renders.
    let bin = status_with_detail(NODE_URL, &nested_any(3));
    let json = status_to_json(snapshot.codec(), 3, "bad", Some(&bin));
    assert_eq!(json["details"][0]["@type"], NODE_URL);
}

/// `levels` of `Node.child` around `inner` (a `Node`'s fields).
fn child_around(levels: usize, inner: &[u8]) -> Vec<u8> {
    let mut rev = Rev::new(inner);
    for _ in 0..levels {
        rev.wrap(1);
    }
    rev.finish()
}

/// Unknown field 20 as a group `levels` deep, closed.
fn unknown_groups(levels: usize) -> Vec<u8> {
    use prost::encoding::{WireType, encode_key};
    let mut out = Vec::new();
    for _ in 0..levels {
        encode_key(20, WireType::StartGroup, &mut out);
    }
    for _ in 0..levels {
        encode_key(20, WireType::EndGroup, &mut out);
    }
    out
}

/// A reply of a type written before is written with no pre-pass
/// (`to_json::write_unchecked`), the writer stopping where the pre-pass
/// might judge the bytes: every reply, at and past every bound, gets what
/// the first reply of its type gets (checked first), error text included.
#[test]
fn replies_after_the_first_are_judged_as_the_first() {
    let bad_string = b"\x12\x01\xff"; // name: invalid UTF-8
    let mut blob = Vec::new();
    prost::encoding::bytes::encode(12, &vec![7u8; 200_000], &mut blob);
    let big_any = anys_around(12, &blob);
    let list_group = {
        // A Struct value whose Value holds a list with an unknown group.
        let mut rev = Rev::new(&unknown_groups(3));
        rev.wrap(6); // Value.list_value
        rev.wrap(10); // Node.value
        rev.finish()
    };
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    for levels in [0, 2, 16, 17, 32, 33, 64, 65, 100, 101] {
        cases.push((format!("child {levels}"), nested_child(levels)));
        cases.push((
            format!("bad string then child {levels}"),
            [&bad_string[..], &nested_child(levels)].concat(),
        ));
        cases.push((
            format!("groups in child {levels}"),
            child_around(levels, &unknown_groups(3)),
        ));
        let mut loser = Rev::new(&nested_child(levels));
        loser.wrap(7); // Node.other, then label: other is cleared
        cases.push((
            format!("cleared oneof member {levels}"),
            [&loser.finish()[..], b"\x2a\x01x"].concat(),
        ));
        let mut overwritten = Rev::new(&nested_child(levels));
        overwritten.wrap(2); // entry.value
        overwritten.prepend_field(1, b"k");
        overwritten.wrap(4); // Node.named, then the same key again
        cases.push((
            format!("overwritten map value {levels}"),
            [&overwritten.finish()[..], b"\x22\x05\x0a\x01k\x12\x00"].concat(),
        ));
        cases.push((format!("any {levels}"), nested_any(levels)));
        cases.push((format!("struct {levels}"), nested_struct(levels)));
    }
    cases.push(("groups 120 deep".into(), unknown_groups(120)));
    cases.push(("any past its budget".into(), big_any));
    cases.push(("list with a group".into(), list_group));
    // A map field as a varint: the writer reads an entry, the pre-pass a
    // child `Node` and in it a wire type 7.
    cases.push((
        "map as a varint".into(),
        b"\x20\x05\x0a\x03\x0a\x01\x7f".to_vec(),
    ));
    let options = [0, 3, 32, 33, 64, 200].map(|max_depth| JsonOptions {
        max_depth,
        ..JsonOptions::default()
    });
    let render = |snapshot: &Snapshot, bytes: &[u8], opts: &JsonOptions| {
        let mut out = b"keep".to_vec();
        match proto_to_json(&node(snapshot), bytes, opts, &mut out) {
            Ok(()) => Ok(String::from_utf8(out[4..].to_vec()).unwrap()),
            Err(e) => {
                assert_eq!(out, b"keep");
                Err(e.to_string())
            }
        }
    };
    let warm = snapshot();
    // No reply of its type written yet (a refused one teaches nothing).
    let mut cold = snapshot();
    for opts in &options {
        for (name, bytes) in &cases {
            // The type's first reply (no size known: checked first), then
            // one after a reply of the type.
            let first = render(&cold, bytes, opts);
            if first.is_ok() {
                cold = snapshot();
            }
            render(&warm, b"\x12\x01a", opts).unwrap();
            let later = render(&warm, bytes, opts);
            assert_eq!(first, later, "{name}, max_depth {}", opts.max_depth);
        }
    }
}

#[test]
fn malformed_and_group_wire_data_is_an_error_not_a_panic() {
    let snapshot = snapshot();
    let desc = node(&snapshot);
    // Unknown field 20 as a group nested 10,000 deep, never closed.
    let mut deep_groups = Vec::new();
    for _ in 0..10_000 {
        prost::encoding::encode_key(20, prost::encoding::WireType::StartGroup, &mut deep_groups);
    }
    for bytes in [
        &b"\x0a\xff\xff\xff\xff\x0f"[..],
        b"\x0a\x05\x0a\x03",
        b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
        b"\x00",
        b"\xa3\x01",
        b"\xa4\x01",
        &deep_groups,
    ] {
        assert!(to_json(&desc, bytes).is_err(), "{bytes:?}");
    }
}

// === uploads ===

#[test]
fn unknown_syntax_upload_is_refused_not_a_panic() {
    // Found by fuzz/fuzz_targets/registry_put.rs: prost-reflect panics while
    // reporting a syntax other than proto2/proto3.
    let crash = include_bytes!("../../../fuzz/corpus/registry_put/unknown_syntax");
    for syntax in ["proto1", "editions", "proto3 "] {
        let set = prost_types::FileDescriptorSet {
            file: vec![prost_types::FileDescriptorProto {
                name: Some("x/v1/x.proto".to_owned()),
                package: Some("x.v1".to_owned()),
                syntax: Some(syntax.to_owned()),
                ..Default::default()
            }],
        };
        let registry = Registry::new();
        let err = registry
            .put("x", &prost::Message::encode_to_vec(&set))
            .unwrap_err();
        assert!(
            matches!(err, DescriptorError::UnsupportedSyntax { .. }),
            "{err:?}"
        );
        assert_eq!(err.kind(), ErrorKind::InvalidUpload);
    }
    let err = Registry::new().put("crash", crash).unwrap_err();
    assert!(
        matches!(err, DescriptorError::UnsupportedSyntax { .. }),
        "{err:?}"
    );
}

/// A message of more fields than the codec's `u16` slots hold is converted
/// all the same (by the prost-reflect codec), field numbers kept: not
/// mapped to the wrong slots, and no overflow (a debug build panicked on the
/// 65,536th oneof).
#[test]
fn a_message_of_70000_fields_and_oneofs_converts_both_ways() {
    use prost_types::{
        DescriptorProto, FieldDescriptorProto, FileDescriptorProto, FileDescriptorSet,
        OneofDescriptorProto,
        field_descriptor_proto::{Label, Type},
    };
    // 70,000 numbers, the reserved 19000-19999 left out.
    let numbers: Vec<i32> = (1..=71_000)
        .filter(|n| !(19_000..20_000).contains(n))
        .collect();
    let message = DescriptorProto {
        name: Some("Wide".to_owned()),
        field: numbers
            .iter()
            .zip(0..)
            .map(|(&n, i)| FieldDescriptorProto {
                name: Some(format!("f{n}")),
                number: Some(n),
                label: Some(Label::Optional as i32),
                r#type: Some(Type::Int32 as i32),
                json_name: Some(format!("f{n}")),
                oneof_index: Some(i),
                ..Default::default()
            })
            .collect(),
        oneof_decl: numbers
            .iter()
            .map(|n| OneofDescriptorProto {
                name: Some(format!("o{n}")),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let set = FileDescriptorSet {
        file: vec![FileDescriptorProto {
            name: Some("wide/v1/wide.proto".to_owned()),
            package: Some("wide.v1".to_owned()),
            syntax: Some("proto3".to_owned()),
            message_type: vec![message],
            ..Default::default()
        }],
    };
    let registry = Registry::new();
    registry
        .put("wide", &prost::Message::encode_to_vec(&set))
        .unwrap();
    let snapshot = registry.snapshot();
    let desc = snapshot.pool().get_message_by_name("wide.v1.Wide").unwrap();
    let mut wire = Vec::new();
    json_to_proto(
        &desc,
        br#"{"f69999": 5, "f3": 7, "f65536": 9}"#,
        &JsonOptions::default(),
        &mut wire,
    )
    .unwrap();
    // Field number order: 3, 65536, 69999.
    let mut want = vec![3 << 3, 7];
    prost::encoding::encode_varint(65_536 << 3, &mut want);
    want.push(9);
    prost::encoding::encode_varint(69_999 << 3, &mut want);
    want.push(5);
    assert_eq!(wire, want);
    assert_eq!(
        to_json(&desc, &wire).unwrap(),
        r#"{"f3":7,"f65536":9,"f69999":5}"#
    );
}
