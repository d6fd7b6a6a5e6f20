//! The proto3 JSON codec: round trips of every type, input leniency, errors
//! with field paths, options and limits.

use descriptors::{
    DescriptorError, JsonOptions, Snapshot,
    json::{json_to_proto, proto_to_json, response_to_json},
};
use prost_reflect::MessageDescriptor;
use serde_json::json;

use crate::common::registry;

fn everything(snapshot: &Snapshot) -> MessageDescriptor {
    snapshot
        .pool()
        .get_message_by_name("example.types.v1.Everything")
        .unwrap()
}

fn to_proto(
    desc: &MessageDescriptor,
    json: &str,
    opts: &JsonOptions,
) -> Result<Vec<u8>, DescriptorError> {
    let mut out = Vec::new();
    json_to_proto(desc, json.as_bytes(), opts, &mut out)?;
    Ok(out)
}

fn to_json(desc: &MessageDescriptor, proto: &[u8], opts: &JsonOptions) -> serde_json::Value {
    let mut out = Vec::new();
    proto_to_json(desc, proto, opts, &mut out).unwrap();
    serde_json::from_slice(&out).unwrap()
}

/// Canonical proto3 JSON of a message using every field kind.
fn canonical() -> serde_json::Value {
    json!({
        "scalars": {
            "fDouble": 1.25,
            "fFloat": -2.5,
            "fInt32": -32,
            "fInt64": "-9007199254740993",
            "fUint32": 4294967295u32,
            "fUint64": "18446744073709551615",
            "fSint32": -7,
            "fSint64": "-8",
            "fFixed32": 9,
            "fFixed64": "10",
            "fSfixed32": -11,
            "fSfixed64": "-12",
            "fBool": true,
            "fString": "héllo \"quoted\" \u{1F600}",
            "fBytes": "AAEC/w==",
            "fOptional": 0,
        },
        "rInt64": ["1", "-2"],
        "rString": ["a", ""],
        "rColor": ["RED", "GREEN"],
        "rMsg": [{"fInt32": 1}, {}],
        "mStrInt": {"a": 1, "b": -2},
        "mIntStr": {"-5": "minus five"},
        "mBoolMsg": {"true": {"fBool": true}},
        "mColor": {"x": "GREEN"},
        "oMsg": {"fString": "in oneof"},
        "color": "RED",
        "nested": {"name": "root", "child": {"name": "child", "children": [{"name": "grandchild"}]}},
        "any": {"@type": "type.googleapis.com/example.types.v1.Scalars", "fInt32": 5},
        "ts": "2017-01-15T01:30:15.010Z",
        "dur": "-3.500s",
        "mask": "scalars.fInt32,rMsg",
        "st": {"k": [1, "two", null, true, {"n": {}}]},
        "val": "a string value",
        "list": [1, [], {}],
        "empty": {},
        "wDouble": 0,
        "wFloat": 1.5,
        "wInt64": "0",
        "wUint64": "64",
        "wInt32": 0,
        "wUint32": 32,
        "wBool": false,
        "wString": "",
        "wBytes": "",
    })
}

#[test]
fn round_trip_every_type() {
    let registry = registry();
    let snapshot = registry.snapshot();
    let desc = everything(&snapshot);
    let opts = JsonOptions::default();
    let input = canonical().to_string();
    let proto = to_proto(&desc, &input, &opts).unwrap();
    assert_eq!(to_json(&desc, &proto, &opts), canonical());

    // Other oneof members and an Any holding a well-known type.
    let other = json!({
        "oColor": "GREEN",
        "any": {"@type": "type.googleapis.com/google.protobuf.Duration", "value": "1s"},
        "val": {"nested": [1.5, null]},
    });
    let proto = to_proto(&desc, &other.to_string(), &opts).unwrap();
    assert_eq!(to_json(&desc, &proto, &opts), other);
}

#[test]
fn lenient_input_forms() {
    let registry = registry();
    let snapshot = registry.snapshot();
    let desc = everything(&snapshot);
    let opts = JsonOptions::default();
    let canonical = to_proto(
        &desc,
        r#"{"scalars": {"fInt64": "12", "fUint64": "13", "fBytes": "+/8=", "fFloat": 1, "fInt32": 3}, "color": "GREEN", "rColor": ["RED"]}"#,
        &opts,
    )
    .unwrap();
    for variant in [
        // Original field names, int64 as numbers, URL-safe base64, enum numbers.
        r#"{"scalars": {"f_int64": 12, "f_uint64": 13, "f_bytes": "-_8", "f_float": 1.0, "f_int32": 3}, "color": 2, "r_color": [1]}"#,
        // Numbers as strings, unpadded base64, an exponent.
        r#"{"scalars": {"fInt64": "12", "fUint64": "13", "fBytes": "+/8", "fFloat": "1", "fInt32": 3e0}, "color": "GREEN", "rColor": ["RED"]}"#,
        // Nulls are absent fields.
        r#"{"scalars": {"fInt64": 12, "fUint64": 13, "fBytes": "+/8=", "fFloat": 1, "fInt32": 3, "fString": null}, "color": "GREEN", "rColor": ["RED"], "nested": null}"#,
    ] {
        let proto = to_proto(&desc, variant, &opts).unwrap();
        assert_eq!(
            to_json(&desc, &proto, &opts),
            to_json(&desc, &canonical, &opts),
            "{variant}"
        );
    }
}

/// An `Any` of `Empty` is read as Python's json_format writes it (no
/// "value": Empty's fields, none) and as prost-reflect and this codec do
/// (`"value": {}`), and written the second way.
#[test]
fn an_any_of_empty_is_read_with_or_without_value() {
    let registry = registry();
    let snapshot = registry.snapshot();
    let desc = everything(&snapshot);
    let opts = JsonOptions::default();
    let url = "type.googleapis.com/google.protobuf.Empty";
    let with = to_proto(
        &desc,
        &json!({"any": {"@type": url, "value": {}}}).to_string(),
        &opts,
    )
    .unwrap();
    let without = to_proto(&desc, &json!({"any": {"@type": url}}).to_string(), &opts).unwrap();
    assert_eq!(with, without);
    assert_eq!(
        to_json(&desc, &without, &opts),
        json!({"any": {"@type": url, "value": {}}})
    );
    // Other well-known types still need their "value".
    let duration = json!({"any": {"@type": "type.googleapis.com/google.protobuf.Duration"}});
    assert!(to_proto(&desc, &duration.to_string(), &opts).is_err());
}

#[test]
fn empty_body_is_empty_message() {
    let registry = registry();
    let snapshot = registry.snapshot();
    let desc = everything(&snapshot);
    for body in ["", "  \n\t", "{}", " { } "] {
        assert!(
            to_proto(&desc, body, &JsonOptions::default())
                .unwrap()
                .is_empty(),
            "{body:?}"
        );
    }
}

#[test]
fn errors_carry_the_field_path() {
    let registry = registry();
    let snapshot = registry.snapshot();
    let desc = everything(&snapshot);
    let opts = JsonOptions::default();
    for (input, expected) in [
        (r#"{"bogus": 1}"#, "bogus"),
        (r#"{"nested": {"bogus": 1}}"#, "nested.bogus"),
        (
            r#"{"nested": {"child": {"name": "x", "bogus": {}}}}"#,
            "nested.child.bogus",
        ),
        (r#"{"rMsg": [{}, {"bogus": 1}]}"#, "rMsg[1].bogus"),
        (r#"{"scalars": {"fInt32": "x"}}"#, "scalars.fInt32"),
        (r#"{"scalars": {"fInt32": 2147483648}}"#, "scalars.fInt32"),
        (r#"{"scalars": {"fBytes": "***"}}"#, "scalars.fBytes"),
        (r#"{"color": "PURPLE"}"#, "color"),
        (r#"{"rInt64": [1, "x"]}"#, "rInt64[1]"),
        (r#"{"mIntStr": {"x": "y"}}"#, "mIntStr"),
        (r#"{"ts": "yesterday"}"#, "ts"),
        (
            r#"{"any": {"@type": "type.googleapis.com/nope.Nope"}}"#,
            "any",
        ),
        // Detected after both keys are read: reported at the enclosing object.
        (r#"{"oString": "a", "oColor": "RED"}"#, ""),
        (r#"[]"#, ""),
        (r#"{"nested": "#, "nested"),
        (r#"{} trailing"#, ""),
        ("nul", ""),
    ] {
        match to_proto(&desc, input, &opts) {
            Err(DescriptorError::InvalidJson { path, message }) => {
                assert_eq!(path, expected, "{input}: {message}");
            }
            other => panic!("{input}: unexpected {other:?}"),
        }
    }
    let err = to_proto(&desc, r#"{"bogus": 1}"#, &opts).unwrap_err();
    assert!(err.is_client_error());
    assert_eq!(err.kind(), descriptors::ErrorKind::InvalidRequest);
}

#[test]
fn ignore_unknown_fields() {
    let registry = registry();
    let snapshot = registry.snapshot();
    let desc = everything(&snapshot);
    let opts = JsonOptions {
        ignore_unknown_fields: true,
        ..JsonOptions::default()
    };
    let proto = to_proto(
        &desc,
        r#"{"bogus": {"deep": [1, 2]}, "nested": {"name": "n", "bogus": 1}, "color": "PURPLE", "rColor": ["RED", "PURPLE"]}"#,
        &opts,
    )
    .unwrap();
    assert_eq!(
        to_json(&desc, &proto, &opts),
        json!({"nested": {"name": "n"}, "rColor": ["RED"]})
    );
}

#[test]
fn output_options() {
    let registry = registry();
    let snapshot = registry.snapshot();
    let scalars = snapshot
        .pool()
        .get_message_by_name("example.types.v1.Scalars")
        .unwrap();
    let desc = everything(&snapshot);
    let proto = to_proto(
        &desc,
        r#"{"color": "GREEN", "scalars": {"fInt32": 1}}"#,
        &JsonOptions::default(),
    )
    .unwrap();

    let opts = JsonOptions {
        preserve_proto_field_names: true,
        enums_as_ints: true,
        ..JsonOptions::default()
    };
    assert_eq!(
        to_json(&desc, &proto, &opts),
        json!({"color": 2, "scalars": {"f_int32": 1}})
    );

    let opts = JsonOptions {
        emit_unpopulated: true,
        ..JsonOptions::default()
    };
    assert_eq!(
        to_json(&scalars, &[], &opts),
        json!({
            "fDouble": 0, "fFloat": 0, "fInt32": 0, "fInt64": "0", "fUint32": 0,
            "fUint64": "0", "fSint32": 0, "fSint64": "0", "fFixed32": 0, "fFixed64": "0",
            "fSfixed32": 0, "fSfixed64": "0", "fBool": false, "fString": "", "fBytes": "",
        })
    );
    let everything_json = to_json(&desc, &[], &opts);
    assert_eq!(everything_json["rInt64"], json!([]));
    assert_eq!(everything_json["mStrInt"], json!({}));
    assert_eq!(everything_json["color"], json!("COLOR_UNSPECIFIED"));
    assert_eq!(everything_json["nested"], serde_json::Value::Null);

    // Options are deserializable from config, with defaults and no unknown keys.
    let parsed: JsonOptions = serde_json::from_str(r#"{"enums_as_ints": true}"#).unwrap();
    assert!(parsed.enums_as_ints && !parsed.emit_unpopulated);
    assert_eq!(parsed.max_depth, descriptors::json::DEFAULT_MAX_DEPTH);
    assert!(serde_json::from_str::<JsonOptions>(r#"{"nope": 1}"#).is_err());
}

#[test]
fn depth_limit() {
    let registry = registry();
    let snapshot = registry.snapshot();
    let desc = everything(&snapshot);
    let nested = |levels: usize| {
        let mut s = String::new();
        for _ in 0..levels - 1 {
            s.push_str(r#"{"child": "#);
        }
        s.push_str("{}");
        s.push_str(&"}".repeat(levels - 1));
        format!(r#"{{"nested": {s}}}"#)
    };
    let opts = JsonOptions {
        max_depth: 8,
        ..JsonOptions::default()
    };
    // Root object + 7 nested levels = 8.
    to_proto(&desc, &nested(7), &opts).unwrap();
    assert!(matches!(
        to_proto(&desc, &nested(8), &opts),
        Err(DescriptorError::TooDeep { max: 8 })
    ));
    // Brackets inside strings do not count.
    let opts = JsonOptions {
        max_depth: 2,
        ..JsonOptions::default()
    };
    to_proto(&desc, r#"{"nested": {"name": "{{{{[[[[\"{{{{"}}"#, &opts).unwrap();
    // The default limit protects against deep input.
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    assert!(matches!(
        to_proto(&desc, &deep, &JsonOptions::default()),
        Err(DescriptorError::TooDeep { max: 64 })
    ));
}

#[test]
fn output_appends_and_is_restored_on_error() {
    let registry = registry();
    let snapshot = registry.snapshot();
    let desc = everything(&snapshot);
    let opts = JsonOptions::default();
    let mut out = b"prefix".to_vec();
    json_to_proto(&desc, br#"{"color": "RED"}"#, &opts, &mut out).unwrap();
    assert_eq!(out, b"prefix\x68\x01");

    let mut out = b"[".to_vec();
    proto_to_json(&desc, b"\x68\x01", &opts, &mut out).unwrap();
    assert_eq!(out, br#"[{"color":"RED"}"#);

    // Truncated protobuf.
    let mut out = b"[".to_vec();
    let err = proto_to_json(&desc, b"\x0a\x05\x01", &opts, &mut out).unwrap_err();
    assert!(matches!(err, DescriptorError::InvalidProto(_)));
    assert!(!err.is_client_error());
    assert_eq!(out, b"[");

    // An Any naming an unknown type decodes but cannot be rendered.
    let any = prost_types::Any {
        type_url: "type.googleapis.com/nope.Nope".to_owned(),
        value: vec![1, 2],
    };
    let mut proto = vec![0xa2, 0x01]; // field 20, length-delimited
    let encoded = prost::Message::encode_to_vec(&any);
    proto.push(u8::try_from(encoded.len()).unwrap());
    proto.extend_from_slice(&encoded);
    let mut out = b"[".to_vec();
    assert!(matches!(
        proto_to_json(&desc, &proto, &opts, &mut out),
        Err(DescriptorError::InvalidProto(_))
    ));
    assert_eq!(out, b"[");
}

#[test]
fn response_body() {
    let registry = registry();
    let snapshot = registry.snapshot();
    let opts = JsonOptions::default();
    let search = snapshot
        .match_http(&http::Method::GET, "/v1/books:search")
        .unwrap();
    let count = snapshot
        .match_http(&http::Method::GET, "/v1/books:count")
        .unwrap();
    let desc = &search.method.output().unwrap();
    let proto = to_proto(
        desc,
        r#"{"books": [{"title": "A", "pages": 1}, {"title": "B"}], "total": 2}"#,
        &opts,
    )
    .unwrap();
    let render = |m: &descriptors::HttpMatch, proto: &[u8], opts: &JsonOptions| {
        let mut out = Vec::new();
        response_to_json(&m.method, Some(&m.binding), proto, opts, &mut out).unwrap();
        serde_json::from_slice::<serde_json::Value>(&out).unwrap()
    };
    assert_eq!(
        render(&search, &proto, &opts),
        json!([{"title": "A", "pages": 1}, {"title": "B"}])
    );
    assert_eq!(render(&count, &proto, &opts), json!(2));
    // Unpopulated fields still render as their defaults.
    assert_eq!(render(&search, &[], &opts), json!([]));
    assert_eq!(render(&count, &[], &opts), json!(0));
    let names = JsonOptions {
        preserve_proto_field_names: true,
        ..JsonOptions::default()
    };
    assert_eq!(render(&count, &proto, &names), json!(2));
    // Without a binding (or without response_body): the whole message.
    let mut out = Vec::new();
    response_to_json(&search.method, None, &proto, &opts, &mut out).unwrap();
    let whole: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(whole["total"], json!(2));
    // A message-typed response_body.
    let source = r#"
syntax = "proto3";
package example.rb.v1;
import "google/api/annotations.proto";
message Inner { string id = 1; int64 n = 2; }
message Resp { Inner inner = 1; string other = 2; }
service S { rpc M(Resp) returns (Resp) { option (google.api.http) = { get: "/rb" response_body: "inner" }; } }
"#;
    let registry = descriptors::Registry::new();
    registry
        .put("rb", &crate::common::compile_source("rb.proto", source))
        .unwrap();
    let snapshot = registry.snapshot();
    let m = snapshot.match_http(&http::Method::GET, "/rb").unwrap();
    let proto = to_proto(
        &m.method.output().unwrap(),
        r#"{"inner": {"id": "x", "n": 5}, "other": "y"}"#,
        &opts,
    )
    .unwrap();
    assert_eq!(render(&m, &proto, &opts), json!({"id": "x", "n": "5"}));
    assert_eq!(render(&m, &[], &opts), json!({}));
}

#[test]
fn deeply_nested_protobuf_is_rejected_not_overflowed() {
    let registry = registry();
    let snapshot = registry.snapshot();
    let nested = snapshot
        .pool()
        .get_message_by_name("example.types.v1.Nested")
        .unwrap();
    // Nested { child: Nested { child: ... } } 10 000 levels deep.
    let mut proto = Vec::new();
    for _ in 0..10_000 {
        let mut outer = vec![0x12];
        prost::encoding::encode_varint(proto.len() as u64, &mut outer);
        outer.extend_from_slice(&proto);
        proto = outer;
    }
    let mut out = Vec::new();
    let err = proto_to_json(&nested, &proto, &JsonOptions::default(), &mut out).unwrap_err();
    assert!(
        matches!(err, DescriptorError::TooDeepMessage { max: 64 }),
        "{err}"
    );
    assert!(out.is_empty());
}

/// Keys out of field order, repeated, or given their default after a value:
/// the bytes the prost-reflect codec writes (the last value of a key wins,
/// fields in number order).
#[test]
fn keys_out_of_order_and_repeated() {
    let registry = registry();
    let snapshot = registry.snapshot();
    let desc = everything(&snapshot);
    let opts = JsonOptions::default();
    let docs = [
        r#"{"rString":["a","b"],"scalars":{"fString":"x","fInt32":1}}"#,
        r#"{"scalars":{"fInt32":1,"fString":"x","fInt32":2}}"#,
        r#"{"scalars":{"fString":"x","fInt32":0,"fString":""}}"#,
        r#"{"scalars":{"fString":"","fInt32":3,"fString":"y"}}"#,
        // (Map entries are left out: the old encoder wrote them in hash order.)
        r#"{"mStrInt":{"a":1},"rString":["z"],"rString":["a","b"],"scalars":{},"mStrInt":{}}"#,
        r#"{"nested":{"children":[{"name":"c"}],"name":"n","child":{"name":"d"}},"rMsg":[{"fBool":true,"fInt32":4}]}"#,
    ];
    for doc in docs {
        let mut old = Vec::new();
        descriptors::json::legacy::json_to_proto(&desc, doc.as_bytes(), &opts, &mut old).unwrap();
        assert_eq!(to_proto(&desc, doc, &opts).unwrap(), old, "{doc}");
    }
}
