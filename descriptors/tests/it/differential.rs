//! Differential tests: the plan-driven codec (`descriptors::codec`, behind
//! `json::*`) against the prost-reflect codec it replaced (`json::legacy`).
//!
//! Random messages of `example.types.v1.Everything` (every scalar, repeated,
//! packed, map and oneof field, recursive `Nested`, `Any` holding plain and
//! well-known payloads, `Struct`/`Value`/`ListValue`, wrappers, Timestamp,
//! Duration, FieldMask, Empty) are encoded, then reshuffled on the wire
//! (fields out of order, repeated singular fields, split packed and unpacked
//! records, unknown fields) and damaged (truncated, bytes flipped). Both
//! codecs must then agree value for value on the JSON under every option, or
//! both refuse the bytes with the same kind of error.

use descriptors::{
    JsonOptions,
    json::{legacy, proto_to_json},
};
use proptest::prelude::*;
use prost::Message as _;
use prost_reflect::{DynamicMessage, Kind, MapKey, MessageDescriptor, Value};
use serde_json::Value as Json;

use crate::common::shared_registry;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 384,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A small deterministic generator (xorshift), so one proptest `u64` drives
/// a whole message.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
    fn int(&mut self) -> u64 {
        match self.below(6) {
            0 => 0,
            1 => self.below(10),
            2 => u64::MAX - self.below(3),
            3 => 1 << self.below(64),
            _ => self.next(),
        }
    }
    fn f64(&mut self) -> f64 {
        match self.below(9) {
            0 => 0.0,
            1 => -0.0,
            2 => self.below(1000) as f64,
            3 => f64::NAN,
            4 => f64::INFINITY,
            5 => 1e21 * self.below(100) as f64,
            6 => 1.0 / (1 + self.below(1_000_000)) as f64,
            _ => f64::from_bits(self.next()),
        }
    }
    fn string(&mut self) -> String {
        const PARTS: &[&str] = &[
            "a", "é", "\"", "\\", "\n", "\u{1}", "😀", "key", "/", " ", "\u{7f}",
        ];
        (0..self.below(6))
            .map(|_| PARTS[self.below(PARTS.len() as u64) as usize])
            .collect()
    }
}

const ANY_TYPES: &[&str] = &[
    "example.types.v1.Scalars",
    "example.types.v1.Nested",
    "example.types.v1.Everything",
    "google.protobuf.Duration",
    "google.protobuf.Timestamp",
    "google.protobuf.Struct",
    "google.protobuf.Value",
    "google.protobuf.Int64Value",
    "google.protobuf.Empty",
    "google.protobuf.FieldMask",
];

fn message(rng: &mut Rng, desc: &MessageDescriptor, depth: usize) -> DynamicMessage {
    let mut m = DynamicMessage::new(desc.clone());
    match desc.full_name() {
        "google.protobuf.Any" => {
            let name = ANY_TYPES[rng.below(ANY_TYPES.len() as u64) as usize];
            let payload_desc = desc.parent_pool().get_message_by_name(name).unwrap();
            let payload = if depth == 0 {
                DynamicMessage::new(payload_desc)
            } else {
                message(rng, &payload_desc, depth - 1)
            };
            let url = match rng.below(12) {
                0 => name.to_owned(),             // no slash: refused
                1 => "x/no.such.Type".to_owned(), // unknown: refused
                2 => format!("example.com/a/{name}"),
                _ => format!("type.googleapis.com/{name}"),
            };
            m.set_field_by_name("type_url", Value::String(url));
            m.set_field_by_name("value", Value::Bytes(payload.encode_to_vec().into()));
            return m;
        }
        "google.protobuf.Timestamp" | "google.protobuf.Duration" => {
            let seconds = match rng.below(5) {
                0 => rng.next() as i64, // mostly out of range
                _ => rng.below(253_402_300_799) as i64 - rng.below(62_135_596_800) as i64,
            };
            let nanos = match rng.below(5) {
                0 => rng.next() as i32,
                _ => rng.below(1_000_000_000) as i32,
            };
            m.set_field_by_name("seconds", Value::I64(seconds));
            m.set_field_by_name("nanos", Value::I32(nanos));
            return m;
        }
        "google.protobuf.FieldMask" => {
            let paths = (0..rng.below(3))
                .map(|_| {
                    Value::String(
                        ["a_b.c", "x", "bad__name", "camelCase", "f_int32.r_msg", ""]
                            [rng.below(6) as usize]
                            .to_owned(),
                    )
                })
                .collect();
            m.set_field_by_name("paths", Value::List(paths));
            return m;
        }
        "google.protobuf.Value" => {
            let kind = if depth == 0 {
                rng.below(4)
            } else {
                rng.below(6)
            };
            let pool = desc.parent_pool();
            match kind {
                0 => m.set_field_by_name("null_value", Value::EnumNumber(0)),
                1 => m.set_field_by_name("bool_value", Value::Bool(rng.chance(2))),
                2 => m.set_field_by_name(
                    "number_value",
                    Value::F64(if rng.chance(8) {
                        f64::NAN
                    } else {
                        rng.below(1 << 20) as f64 / 4.0
                    }),
                ),
                3 => m.set_field_by_name("string_value", Value::String(rng.string())),
                4 => {
                    let list = pool
                        .get_message_by_name("google.protobuf.ListValue")
                        .unwrap();
                    m.set_field_by_name(
                        "list_value",
                        Value::Message(message(rng, &list, depth - 1)),
                    );
                }
                _ => {
                    let st = pool.get_message_by_name("google.protobuf.Struct").unwrap();
                    m.set_field_by_name(
                        "struct_value",
                        Value::Message(message(rng, &st, depth - 1)),
                    );
                }
            }
            return m;
        }
        _ => {}
    }
    for field in desc.fields() {
        if !rng.chance(2) {
            continue;
        }
        let taken = field
            .containing_oneof()
            .is_some_and(|oneof| !oneof.is_synthetic() && oneof.fields().any(|f| m.has_field(&f)));
        if taken && rng.chance(2) {
            continue;
        }
        let kind = field.kind();
        if field.is_map() {
            let entry = kind.as_message().unwrap().clone();
            let key_kind = entry.map_entry_key_field().kind();
            let value_field = entry.map_entry_value_field();
            let mut map = std::collections::HashMap::new();
            for _ in 0..rng.below(5) {
                let key = match key_kind {
                    Kind::String => MapKey::String(rng.string()),
                    Kind::Int64 => MapKey::I64(rng.int() as i64 % 1000),
                    Kind::Bool => MapKey::Bool(rng.chance(2)),
                    _ => MapKey::I32(rng.below(100) as i32),
                };
                map.insert(key, value(rng, &value_field.kind(), depth));
            }
            m.set_field(&field, Value::Map(map));
        } else if field.is_list() {
            let n = if depth == 0 && kind.as_message().is_some() {
                0
            } else {
                rng.below(4)
            };
            let list = (0..n).map(|_| value(rng, &kind, depth)).collect();
            m.set_field(&field, Value::List(list));
        } else {
            if depth == 0 && kind.as_message().is_some() {
                continue;
            }
            m.set_field(&field, value(rng, &kind, depth));
        }
    }
    m
}

fn value(rng: &mut Rng, kind: &Kind, depth: usize) -> Value {
    match kind {
        Kind::Double => Value::F64(rng.f64()),
        Kind::Float => Value::F32(rng.f64() as f32),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(rng.int() as i32),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(rng.int() as i64),
        Kind::Uint32 | Kind::Fixed32 => Value::U32(rng.int() as u32),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(rng.int()),
        Kind::Bool => Value::Bool(rng.chance(2)),
        Kind::String => Value::String(rng.string()),
        Kind::Bytes => Value::Bytes(
            (0..rng.below(7))
                .map(|_| rng.next() as u8)
                .collect::<Vec<_>>()
                .into(),
        ),
        Kind::Enum(e) => Value::EnumNumber(if rng.chance(5) {
            7
        } else {
            rng.below(e.values().len() as u64) as i32
        }),
        Kind::Message(m) => {
            // Wrappers hold finite values: the tree codec printed a
            // non-finite FloatValue/DoubleValue as `null` (see `non_finite_wrappers`).
            if matches!(
                m.full_name(),
                "google.protobuf.DoubleValue" | "google.protobuf.FloatValue"
            ) {
                let mut w = DynamicMessage::new(m.clone());
                let v = rng.below(1 << 20) as f64 / 8.0;
                let field = m.get_field_by_name("value").unwrap();
                w.set_field(
                    &field,
                    if field.kind() == Kind::Float {
                        Value::F32(v as f32)
                    } else {
                        Value::F64(v)
                    },
                );
                return Value::Message(w);
            }
            Value::Message(message(rng, m, depth.saturating_sub(1)))
        }
    }
}

/// The top-level records of a message's encoding.
fn records(mut bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let start = bytes;
        let key = prost::encoding::decode_varint(&mut bytes).unwrap();
        match key & 7 {
            0 => {
                prost::encoding::decode_varint(&mut bytes).unwrap();
            }
            1 => bytes = &bytes[8..],
            5 => bytes = &bytes[4..],
            2 => {
                let len = prost::encoding::decode_varint(&mut bytes).unwrap() as usize;
                bytes = &bytes[len..];
            }
            _ => unreachable!("no groups in these protos"),
        }
        out.push(start[..start.len() - bytes.len()].to_vec());
    }
    out
}

/// The same message (or one a decoder merges the same way) encoded
/// differently: records shuffled, some repeated, unknown fields added.
fn reshuffle(rng: &mut Rng, bytes: &[u8]) -> Vec<u8> {
    let mut recs = records(bytes);
    for i in (1..recs.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        recs.swap(i, j);
    }
    if !recs.is_empty() && rng.chance(2) {
        let r = recs[rng.below(recs.len() as u64) as usize].clone();
        let at = rng.below(recs.len() as u64 + 1) as usize;
        recs.insert(at, r);
    }
    if rng.chance(2) {
        // Unknown fields: varint 900, bytes 901, fixed32 902, a group 903.
        let unknown: &[&[u8]] = &[
            &[0xa0, 0x38, 0x05],
            &[0xaa, 0x38, 0x02, 0x61, 0x62],
            &[0xb5, 0x38, 1, 2, 3, 4],
            &[0xbb, 0x38, 0x08, 0x01, 0xbc, 0x38],
        ];
        let at = rng.below(recs.len() as u64 + 1) as usize;
        recs.insert(at, unknown[rng.below(4) as usize].to_vec());
    }
    recs.concat()
}

fn damage(rng: &mut Rng, bytes: &mut Vec<u8>) {
    if bytes.is_empty() {
        return;
    }
    match rng.below(3) {
        0 => bytes.truncate(rng.below(bytes.len() as u64) as usize),
        _ => {
            for _ in 0..=rng.below(3) {
                let i = rng.below(bytes.len() as u64) as usize;
                bytes[i] ^= 1 << rng.below(8);
            }
        }
    }
}

/// JSON equality with numbers compared as numbers (`1` equals `1.0`).
fn same(a: &Json, b: &Json) -> bool {
    match (a, b) {
        (Json::Number(x), Json::Number(y)) => {
            match (x.as_i64(), y.as_i64(), x.as_u64(), y.as_u64()) {
                (Some(x), Some(y), _, _) => x == y,
                (_, _, Some(x), Some(y)) => x == y,
                _ => x.as_f64() == y.as_f64(),
            }
        }
        (Json::Array(x), Json::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Json::Object(x), Json::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

fn all_options() -> Vec<JsonOptions> {
    let mut all = Vec::new();
    for bits in 0..8u8 {
        all.push(JsonOptions {
            emit_unpopulated: bits & 1 != 0,
            preserve_proto_field_names: bits & 2 != 0,
            enums_as_ints: bits & 4 != 0,
            ..JsonOptions::default()
        });
    }
    all
}

/// Both codecs on `bytes`: same JSON value, or errors of the same kind.
fn agree(desc: &MessageDescriptor, bytes: &[u8], opts: &JsonOptions) -> Result<(), TestCaseError> {
    let mut new = b"x".to_vec();
    let mut old = b"x".to_vec();
    let new_res = proto_to_json(desc, bytes, opts, &mut new);
    let old_res = legacy::proto_to_json(desc, bytes, opts, &mut old);
    match (new_res, old_res) {
        (Ok(()), Ok(())) => {
            let new: Json = serde_json::from_slice(&new[1..]).map_err(|e| {
                TestCaseError::fail(format!("{e}: {}", String::from_utf8_lossy(&new)))
            })?;
            let old: Json = serde_json::from_slice(&old[1..]).unwrap();
            prop_assert!(same(&new, &old), "new {new}\nold {old}\nbytes {bytes:?}");
        }
        (Err(n), Err(o)) => {
            prop_assert_eq!(n.kind(), o.kind(), "new {} / old {}", n, o);
            prop_assert_eq!(&new, b"x", "out left as it was");
        }
        (n, o) => prop_assert!(false, "new {n:?} / old {o:?}\nbytes {bytes:?}"),
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn wire_to_json_agrees_with_prost_reflect(seed in any::<u64>()) {
        let snapshot = shared_registry().snapshot();
        let desc = snapshot.pool().get_message_by_name("example.types.v1.Everything").unwrap();
        let mut rng = Rng(seed | 1);
        let message = message(&mut rng, &desc, 3);
        let canonical = message.encode_to_vec();
        let shuffled = reshuffle(&mut rng, &canonical);
        let mut damaged = shuffled.clone();
        damage(&mut rng, &mut damaged);
        for opts in all_options() {
            agree(&desc, &canonical, &opts)?;
            agree(&desc, &shuffled, &opts)?;
            agree(&desc, &damaged, &opts)?;
        }
        // Nested types on their own, and `Any` at the root.
        for name in ["example.types.v1.Nested", "example.types.v1.Scalars", "google.protobuf.Any", "google.protobuf.Struct"] {
            let d = snapshot.pool().get_message_by_name(name).unwrap();
            let m = self::message(&mut rng, &d, 3);
            agree(&d, &reshuffle(&mut rng, &m.encode_to_vec()), &JsonOptions::default())?;
        }
    }

    #[test]
    fn wire_to_json_agrees_on_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let snapshot = shared_registry().snapshot();
        for desc in snapshot.pool().all_messages().filter(|d| d.package_name().starts_with("example")) {
            agree(&desc, &bytes, &JsonOptions { emit_unpopulated: true, ..JsonOptions::default() })?;
        }
    }
}

#[test]
fn map_keys_are_sorted_and_numbers_printed_like_protobuf() {
    let snapshot = shared_registry().snapshot();
    let desc = snapshot
        .pool()
        .get_message_by_name("example.types.v1.Everything")
        .unwrap();
    let json = serde_json::json!({
        "mStrInt": {"b": 2, "a": 1, "c": 3, "B": 0},
        "mIntStr": {"10": "ten", "-1": "minus", "2": "two"},
        "scalars": {"fDouble": 164.0, "fFloat": 2.5},
        "list": [1e21, 1e-7, 0.1, -0.0],
    });
    let mut proto = Vec::new();
    descriptors::json::json_to_proto(
        &desc,
        json.to_string().as_bytes(),
        &JsonOptions::default(),
        &mut proto,
    )
    .unwrap();
    let mut out = Vec::new();
    proto_to_json(&desc, &proto, &JsonOptions::default(), &mut out).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        r#"{"scalars":{"fDouble":164,"fFloat":2.5},"mStrInt":{"B":0,"a":1,"b":2,"c":3},"mIntStr":{"-1":"minus","2":"two","10":"ten"},"list":[1e+21,1e-7,0.1,-0]}"#
    );
}

#[test]
fn non_finite_wrappers() {
    // The tree codec printed these as `null` (serde_json's rendering of a
    // non-finite float); the proto3 mapping writes them as strings.
    let snapshot = shared_registry().snapshot();
    let desc = snapshot
        .pool()
        .get_message_by_name("example.types.v1.Everything")
        .unwrap();
    let mut out = Vec::new();
    // w_double (28) = {value: NaN}, w_float (29) = {value: -inf}
    let mut proto = vec![0xe2, 0x01, 9, 0x09];
    proto.extend_from_slice(&f64::NAN.to_le_bytes());
    proto.extend_from_slice(&[0xea, 0x01, 5, 0x0d]);
    proto.extend_from_slice(&f32::NEG_INFINITY.to_le_bytes());
    proto_to_json(&desc, &proto, &JsonOptions::default(), &mut out).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        r#"{"wDouble":"NaN","wFloat":"-Infinity"}"#
    );
}

// === JSON -> wire ===

const REPLACEMENTS: &[&str] = &[
    "null",
    "\"x\"",
    "1.5",
    "-1",
    "1e40",
    "[]",
    "{}",
    "true",
    "\"RED\"",
    "\"AAA=\"",
    "\"1s\"",
    "\"2017-01-15T01:30:15Z\"",
    "\"NaN\"",
    "0",
    "\"12\"",
    "[null]",
    "[1,\"a\"]",
    "{\"a\":1}",
    "4294967296",
    "\"-_8\"",
    "\"fInt32\"",
    "\"Infinity\"",
    "-0.0",
    "3e0",
];

/// `value` as JSON text with object keys in random order, sometimes a key
/// twice, sometimes a value swapped for another JSON value, sometimes an
/// unknown key.
fn scramble(rng: &mut Rng, value: &Json, out: &mut String, wild: bool) {
    if wild && rng.chance(40) {
        out.push_str(REPLACEMENTS[rng.below(REPLACEMENTS.len() as u64) as usize]);
        return;
    }
    match value {
        Json::Object(map) => {
            let mut entries: Vec<(&String, &Json)> = map.iter().collect();
            for i in (1..entries.len()).rev() {
                let j = rng.below(i as u64 + 1) as usize;
                entries.swap(i, j);
            }
            if !entries.is_empty() && rng.chance(6) {
                let e = entries[rng.below(entries.len() as u64) as usize];
                entries.push(e);
            }
            out.push('{');
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Json::String((*k).clone()).to_string());
                out.push(':');
                if rng.chance(20) {
                    out.push_str("null");
                } else {
                    scramble(rng, v, out, wild);
                }
            }
            if wild && rng.chance(15) {
                if !entries.is_empty() {
                    out.push(',');
                }
                out.push_str("\"bogusField\":{\"x\":[1,2]}");
            }
            out.push('}');
        }
        Json::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                scramble(rng, v, out, wild);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// `text` (compact JSON) written otherwise: whitespace between tokens, and
/// some characters of strings (keys too) as `\uXXXX` or short escapes.
fn respell(rng: &mut Rng, text: &str) -> String {
    const SPACE: [&str; 4] = [" ", "\n", "\t", "\r\n  "];
    let mut out = String::with_capacity(text.len() * 2);
    let (mut in_string, mut escaped) = (false, false);
    for c in text.chars() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            } else if rng.chance(8) {
                match c {
                    '/' => out.push_str("\\/"),
                    c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
                    c => out.push(c),
                }
                continue;
            }
            out.push(c);
            continue;
        }
        if matches!(c, '}' | ']') && rng.chance(3) {
            out.push_str(SPACE[rng.below(4) as usize]);
        }
        out.push(c);
        if c == '"' {
            in_string = true;
        } else if matches!(c, '{' | '[' | ',' | ':') && rng.chance(3) {
            out.push_str(SPACE[rng.below(4) as usize]);
        }
    }
    out
}

/// `text` with one byte's worth of damage: cut short, a character dropped,
/// or one inserted.
fn damage_text(rng: &mut Rng, text: &str) -> String {
    const INSERTS: [&str; 14] = [
        ",", ":", "}", "]", "{", "[", "\"", "\\", "0", "-", ".", "e", " x", "\u{1}",
    ];
    let bounds: Vec<usize> = (0..=text.len())
        .filter(|&i| text.is_char_boundary(i))
        .collect();
    let at = bounds[rng.below(bounds.len() as u64) as usize];
    let mut out = text[..at].to_owned();
    match rng.below(3) {
        0 => {}
        1 => out.push_str(text[at..].chars().skip(1).collect::<String>().as_str()),
        _ => {
            out.push_str(INSERTS[rng.below(INSERTS.len() as u64) as usize]);
            out.push_str(&text[at..]);
        }
    }
    out
}

/// Both readers on `json`: the same message, or both refuse it with the same error.
fn agree_json(
    desc: &MessageDescriptor,
    json: &str,
    opts: &JsonOptions,
) -> Result<(), TestCaseError> {
    // The codec's scanner accepts what its serde reader does, with the same bytes.
    if let Some((scan, serde)) = descriptors::json::codec_readers(desc, json.as_bytes(), opts) {
        prop_assert_eq!(scan, serde, "json {}", json);
    }
    let mut new = b"x".to_vec();
    let mut old = b"x".to_vec();
    let new_res = descriptors::json::json_to_proto(desc, json.as_bytes(), opts, &mut new);
    let old_res = legacy::json_to_proto(desc, json.as_bytes(), opts, &mut old);
    match (new_res, old_res) {
        (Ok(()), Ok(())) => {
            if new != old {
                // Maps: the old encoder wrote entries in hash order. The
                // same message either way: render both.
                let render = |bytes: &[u8]| {
                    let mut out = Vec::new();
                    proto_to_json(desc, bytes, &JsonOptions::default(), &mut out).map(|()| out)
                };
                let (n, o) = (render(&new[1..]), render(&old[1..]));
                prop_assert!(
                    n.is_ok() && n.as_ref().ok() == o.as_ref().ok(),
                    "json {json}\nnew {new:?}\nold {old:?}\n{n:?}\n{o:?}"
                );
            }
        }
        (Err(n), Err(o)) => {
            // Errors come from the prost-reflect reader both ways (whose
            // `Any` reader buffers keys in a hash map: its message may vary,
            // `@type` damaged by one character included).
            prop_assert_eq!(n.kind(), o.kind());
            if !json.contains('@') && !json.contains("type\"") {
                prop_assert_eq!(n.to_string(), o.to_string());
            }
            prop_assert_eq!(&new, b"x", "out left as it was");
        }
        (n, o) => prop_assert!(false, "json {json}\nnew {n:?} / old {o:?}"),
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn json_to_wire_agrees_with_prost_reflect(seed in any::<u64>()) {
        let snapshot = shared_registry().snapshot();
        let mut rng = Rng(seed | 1);
        for name in ["example.types.v1.Everything", "example.types.v1.Nested", "google.protobuf.Struct", "google.protobuf.Value"] {
            let desc = snapshot.pool().get_message_by_name(name).unwrap();
            let message = message(&mut rng, &desc, 3);
            let print = JsonOptions {
                preserve_proto_field_names: rng.chance(2),
                enums_as_ints: rng.chance(2),
                emit_unpopulated: rng.chance(4),
                ..JsonOptions::default()
            };
            let mut json = Vec::new();
            if legacy::proto_to_json(&desc, &message.encode_to_vec(), &print, &mut json).is_err() {
                continue; // e.g. an Any with an unknown type
            }
            let value: Json = serde_json::from_slice(&json).unwrap();
            for opts in [JsonOptions::default(), JsonOptions { ignore_unknown_fields: true, ..JsonOptions::default() }] {
                agree_json(&desc, &String::from_utf8(json.clone()).unwrap(), &opts)?;
                let mut text = String::new();
                scramble(&mut rng, &value, &mut text, false);
                agree_json(&desc, &text, &opts)?;
                let mut text = String::new();
                scramble(&mut rng, &value, &mut text, true);
                agree_json(&desc, &text, &opts)?;
                // The same documents spelled otherwise, and damaged.
                agree_json(&desc, &respell(&mut rng, &text), &opts)?;
                agree_json(&desc, &damage_text(&mut rng, &text), &opts)?;
            }
        }
    }
}

proptest! {
    #![proptest_config(config())]

    /// `response_body` rules: only that field's value is written.
    #[test]
    fn response_body_agrees_with_prost_reflect(seed in any::<u64>()) {
        let snapshot = shared_registry().snapshot();
        let mut rng = Rng(seed | 1);
        let mut covered = 0;
        for method in snapshot.methods() {
            for binding in method.bindings.iter().filter(|b| b.response_body.is_some()) {
                covered += 1;
                let message = message(&mut rng, &method.output().unwrap(), 2);
                let bytes = reshuffle(&mut rng, &message.encode_to_vec());
                for opts in all_options() {
                    let mut new = b"x".to_vec();
                    let mut old = b"x".to_vec();
                    let n = descriptors::json::response_to_json(method, Some(binding), &bytes, &opts, &mut new);
                    let o = legacy::response_to_json(method, Some(binding), &bytes, &opts, &mut old);
                    match (n, o) {
                        (Ok(()), Ok(())) => {
                            let new: Json = serde_json::from_slice(&new[1..]).unwrap();
                            let old: Json = serde_json::from_slice(&old[1..]).unwrap();
                            prop_assert!(same(&new, &old), "{}: new {new} old {old}", method.grpc_path);
                        }
                        (Err(n), Err(o)) => prop_assert_eq!(n.kind(), o.kind()),
                        (n, o) => prop_assert!(false, "new {n:?} / old {o:?}"),
                    }
                }
            }
        }
        prop_assert!(covered > 0);
    }
}

/// A field record: `number` with a varint value.
fn varint_rec(number: u32, value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    prost::encoding::encode_key(number, prost::encoding::WireType::Varint, &mut out);
    prost::encoding::encode_varint(value, &mut out);
    out
}

/// A field record: `number` with a length-delimited value.
fn len_rec(number: u32, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    prost::encoding::encode_key(number, prost::encoding::WireType::LengthDelimited, &mut out);
    prost::encoding::encode_varint(value.len() as u64, &mut out);
    out.extend_from_slice(value);
    out
}

/// Levels written straight from their canonical order (`codec/to_json/
/// in_order.rs`) and levels that are not canonical (sorted, last wins,
/// merged, oneofs resolved) give what the prost-reflect codec gives, under
/// every option: for each case, the records as given and with the order
/// of the records of `Everything` reversed.
#[test]
fn occurrence_orders_agree_with_prost_reflect() {
    let snapshot = shared_registry().snapshot();
    let pool = snapshot.pool();
    let everything = pool
        .get_message_by_name("example.types.v1.Everything")
        .unwrap();
    let nested = pool.get_message_by_name("example.types.v1.Nested").unwrap();
    // Scalars: f_int32 (3), f_string (14), f_optional (16).
    let scalars = [varint_rec(3, 7), len_rec(14, b"s"), varint_rec(16, 0)].concat();
    let unknown = varint_rec(900, 5);
    let entry = |key: &[u8], value: u64| [len_rec(1, key), varint_rec(2, value)].concat();
    let cases: Vec<(&str, Vec<Vec<u8>>)> = vec![
        ("canonical", vec![len_rec(1, &scalars), varint_rec(13, 1)]),
        ("descending", vec![varint_rec(13, 1), len_rec(1, &scalars)]),
        ("singular twice", vec![varint_rec(13, 1), varint_rec(13, 2)]),
        (
            "singular twice, back to default",
            vec![varint_rec(13, 2), varint_rec(13, 0)],
        ),
        (
            "message twice (merged)",
            vec![len_rec(1, &scalars), len_rec(1, &varint_rec(3, 9))],
        ),
        (
            "string twice inside",
            vec![len_rec(1, &[len_rec(14, b"a"), len_rec(14, b"b")].concat())],
        ),
        (
            "repeated split by another field",
            vec![varint_rec(2, 1), len_rec(3, b"x"), varint_rec(2, 2)],
        ),
        (
            "packed and unpacked mixed",
            vec![
                len_rec(2, &[1, 2]),
                varint_rec(2, 3),
                len_rec(2, &[4]),
                len_rec(3, b"y"),
            ],
        ),
        (
            "empty packed record only",
            vec![len_rec(2, &[]), varint_rec(13, 1)],
        ),
        (
            "empty packed records around",
            vec![len_rec(2, &[]), varint_rec(2, 5), len_rec(2, &[])],
        ),
        (
            "unknown fields between",
            vec![
                len_rec(3, b"a"),
                unknown.clone(),
                len_rec(3, b"b"),
                unknown.clone(),
            ],
        ),
        (
            "oneof members both present",
            vec![len_rec(10, b"str"), varint_rec(12, 2)],
        ),
        (
            "oneof member twice",
            vec![len_rec(11, &scalars), len_rec(11, &varint_rec(4, 3))],
        ),
        (
            "map with a duplicate key",
            vec![
                len_rec(6, &entry(b"a", 1)),
                len_rec(6, &entry(b"b", 2)),
                len_rec(6, &entry(b"a", 3)),
            ],
        ),
        (
            "more than sixteen occurrences",
            (0..40u64).map(|i| varint_rec(2, i)).collect(),
        ),
        (
            "nested levels, one out of order",
            vec![len_rec(
                14,
                &[
                    len_rec(2, &[len_rec(1, b"in")].concat()),
                    len_rec(1, b"out"),
                ]
                .concat(),
            )],
        ),
        (
            "truncated after canonical fields",
            vec![varint_rec(13, 1), vec![0x0a, 0x05, 0x08]],
        ),
        (
            "malformed after a bad string",
            vec![len_rec(3, b"\xff"), vec![0x80]],
        ),
    ];
    for (name, recs) in cases {
        let reversed: Vec<Vec<u8>> = recs.iter().rev().cloned().collect();
        for (order, bytes) in [("given", recs.concat()), ("reversed", reversed.concat())] {
            for opts in all_options() {
                agree(&everything, &bytes, &opts)
                    .unwrap_or_else(|e| panic!("{name}, {order}: {e}"));
            }
        }
    }
    // A `Nested` whose child is canonical and whose grandchild is not.
    let grandchild = [len_rec(1, b"b"), len_rec(1, b"a")].concat();
    let child = [
        len_rec(1, b"c"),
        len_rec(2, &grandchild),
        len_rec(3, &grandchild),
    ]
    .concat();
    let bytes = [len_rec(1, b"root"), len_rec(2, &child), len_rec(3, &child)].concat();
    for opts in all_options() {
        agree(&nested, &bytes, &opts).unwrap();
    }
}

proptest! {
    #![proptest_config(config())]

    /// Number literals of every shape (long mantissas, fractions, exponents
    /// near the ends of the range, leading zeros, signs) in every numeric
    /// field: the scanner reads them as the serde reader does, or both refuse.
    #[test]
    fn the_scanner_reads_numbers_as_the_serde_reader(
        negative in any::<bool>(),
        int in prop_oneof![Just("0".to_owned()), "[1-9][0-9]{0,21}", "0[0-9]{1,3}"],
        frac in proptest::option::of("[0-9]{0,20}"),
        exp in proptest::option::of((prop::sample::select(vec!["e", "E"]), prop::sample::select(vec!["", "+", "-"]), 0u32..420)),
        quoted in any::<bool>(),
    ) {
        let mut text = String::new();
        if negative {
            text.push('-');
        }
        text.push_str(&int);
        if let Some(frac) = &frac {
            text.push('.');
            text.push_str(frac);
        }
        if let Some((e, sign, n)) = &exp {
            text.push_str(&format!("{e}{sign}{n}"));
        }
        if quoted {
            text = format!("\"{text}\"");
        }
        numbers_agree(&text)?;
    }
}

/// Numbers at the edges of each type's range and of `f64`'s.
#[test]
fn the_scanner_reads_edge_numbers_as_the_serde_reader() {
    for text in [
        "0",
        "-0",
        "-0.0",
        "0.0",
        "1.0",
        "1e2",
        "1E+2",
        "1e-2",
        "0.1",
        "-1",
        "1e400",
        "-1e400",
        "1e-400",
        "1.5e-320",
        "2.2250738585072014e-308",
        "1.7976931348623157e308",
        "18446744073709551615",
        "18446744073709551616",
        "9223372036854775807",
        "9223372036854775808",
        "-9223372036854775808",
        "-9223372036854775809",
        "4294967295",
        "4294967296",
        "2147483647",
        "2147483648",
        "-2147483648",
        "-2147483649",
        "123456789012345678901234567890",
        "00",
        "01",
        "-",
        "1.",
        ".5",
        "1e",
        "1e+",
        "+1",
        "\"1\"",
        "\"-0\"",
        "\"+1\"",
        "\"007\"",
        "\"1.5\"",
        "\"1e3\"",
        "\"NaN\"",
        "\"-Infinity\"",
    ] {
        numbers_agree(text).unwrap();
    }
}

/// `text` as the value of every numeric field of `Scalars`: the scanner
/// and the serde reader write the same bytes, or both refuse.
fn numbers_agree(text: &str) -> Result<(), TestCaseError> {
    let snapshot = shared_registry().snapshot();
    let desc = snapshot
        .pool()
        .get_message_by_name("example.types.v1.Scalars")
        .unwrap();
    for field in desc.fields() {
        if !matches!(
            field.kind(),
            Kind::Bool | Kind::String | Kind::Bytes | Kind::Message(_) | Kind::Enum(_)
        ) {
            let json = format!("{{\"{}\":{text}}}", field.json_name());
            let (scan, serde) =
                descriptors::json::codec_readers(&desc, json.as_bytes(), &JsonOptions::default())
                    .unwrap();
            prop_assert_eq!(scan, serde, "{}", json);
        }
    }
    Ok(())
}

/// Map fields: the scanner writes each entry where it reads it and sorts
/// them afterwards when their keys did not come in increasing order (out of
/// order, repeated, escaped): the bytes are the serde reader's, which sorts
/// the entries by key with the last of a key winning.
#[test]
fn map_entries_are_read_in_place_or_sorted_as_the_serde_reader_does() {
    let snapshot = shared_registry().snapshot();
    let desc = snapshot
        .pool()
        .get_message_by_name("example.types.v1.Everything")
        .unwrap();
    let maps = [
        r#""mStrInt":{}"#,
        r#""mStrInt":{"a":1}"#,
        r#""mStrInt":{"a":1,"b":2,"c":0}"#,
        r#""mStrInt":{"c":1,"a":2,"b":3}"#,
        r#""mStrInt":{"a":1,"a":2}"#,
        r#""mStrInt":{"b":1,"a":2,"b":3}"#,
        r#""mStrInt":{"a":1,"\u0062":2,"c":3}"#,
        r#""mStrInt":{"":5,"a":null}"#,
        r#""mStrInt":{ "a" : 1 , "b" : 2 }"#,
        r#""mStrInt":{"a":"7","b":1e1}"#,
        r#""mStrInt":{"a":1,"b":"x"}"#,
        r#""mStrInt":{"a":1,}"#,
        r#""mStrInt":{"a":1"#,
        r#""mIntStr":{"-5":"x","2":"y","10":"z"}"#,
        r#""mIntStr":{"10":"z","2":"y"}"#,
        r#""mIntStr":{"1":"a","x":"b"}"#,
        r#""mIntStr":{"01":"a"}"#,
        r#""mBoolMsg":{"false":{"fInt32":1},"true":{}}"#,
        r#""mBoolMsg":{"true":{"fInt32":1},"false":{"fString":"s"}}"#,
        r#""mBoolMsg":{"yes":{}}"#,
        r#""mColor":{"a":"RED","b":2,"c":"NOT_A_COLOR"}"#,
        r#""mColor":{"b":"RED","a":null}"#,
    ];
    let mut accepted = 0;
    for map in maps {
        let json = format!(r#"{{"color":"RED",{map},"nested":{{"name":"n"}}}}"#);
        for opts in [
            JsonOptions::default(),
            JsonOptions {
                ignore_unknown_fields: true,
                ..JsonOptions::default()
            },
        ] {
            let (scan, serde) =
                descriptors::json::codec_readers(&desc, json.as_bytes(), &opts).unwrap();
            assert_eq!(scan, serde, "{json}");
            accepted += usize::from(scan.is_some());
            agree_json(&desc, &json, &opts).unwrap();
        }
    }
    // Refused alike, the rest: a `null` value, a key or a value not of its
    // type, an unknown enum name (unless ignored), text that is not JSON.
    assert_eq!(accepted, 29);
}
