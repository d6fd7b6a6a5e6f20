//! Property tests: nothing panics on arbitrary input, and scalars round-trip.

use descriptors::{
    JsonOptions, Registry,
    json::{build_request, json_to_proto, proto_to_json, status_to_json},
};
use proptest::prelude::*;
use prost_reflect::{DynamicMessage, Value};

use crate::common::shared_registry;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Mostly-JSON-looking strings, to get past the first byte of the parser.
fn jsonish() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            Just("{".to_owned()),
            Just("}".to_owned()),
            Just("[".to_owned()),
            Just("]".to_owned()),
            Just(",".to_owned()),
            Just(":".to_owned()),
            Just("null".to_owned()),
            Just("\"nested\"".to_owned()),
            Just("\"child\"".to_owned()),
            Just("\"scalars\"".to_owned()),
            Just("\"fInt64\"".to_owned()),
            Just("\"any\"".to_owned()),
            Just("\"@type\"".to_owned()),
            Just("\"type.googleapis.com/example.types.v1.Scalars\"".to_owned()),
            Just("\"ts\"".to_owned()),
            Just("\"st\"".to_owned()),
            Just("\"mIntStr\"".to_owned()),
            "-?[0-9]{1,25}(\\.[0-9]+)?(e[0-9]+)?",
            "\"[a-zA-Z0-9+/=:.-]{0,12}\"",
        ],
        0..40,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn json_to_proto_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256), text in jsonish()) {
        let registry = shared_registry();
        let snapshot = registry.snapshot();
        let opts = JsonOptions { max_depth: 16, ..JsonOptions::default() };
        for desc in snapshot.pool().all_messages() {
            let mut out = Vec::new();
            let _ = json_to_proto(&desc, &bytes, &opts, &mut out);
            let _ = json_to_proto(&desc, text.as_bytes(), &opts, &mut out);
        }
    }

    #[test]
    fn proto_to_json_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let registry = shared_registry();
        let snapshot = registry.snapshot();
        let opts = JsonOptions { emit_unpopulated: true, ..JsonOptions::default() };
        for desc in snapshot.pool().all_messages() {
            let mut out = Vec::new();
            if proto_to_json(&desc, &bytes, &opts, &mut out).is_ok() {
                prop_assert!(serde_json::from_slice::<serde_json::Value>(&out).is_ok());
            } else {
                prop_assert!(out.is_empty());
            }
        }
        let _ = status_to_json(snapshot.codec(), 2, "x", Some(&bytes));
    }

    #[test]
    fn http_requests_never_panic(
        path in "/[a-z0-9/:%*{}._-]{0,30}",
        query in "[a-zA-Z0-9_.=&%+,:-]{0,40}",
        body in jsonish(),
    ) {
        let registry = shared_registry();
        let snapshot = registry.snapshot();
        for method in [http::Method::GET, http::Method::POST, http::Method::PATCH] {
            for path in [path.as_str(), "/v1/shelves", "/v1/shelves/s1:merge", "/v1/shelves/s1/books"] {
                if let Some(m) = snapshot.match_http(&method, path) {
                    let mut out = Vec::new();
                    let _ = build_request(&m, body.as_bytes(), Some(&query), &JsonOptions::default(), &mut out);
                }
            }
        }
    }

    #[test]
    fn upload_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let registry = Registry::new();
        let _ = registry.put("fuzz", &bytes);
    }

    #[test]
    fn scalars_round_trip(
        i32v in any::<i32>(), i64v in any::<i64>(), u64v in any::<u64>(),
        f64v in any::<f64>(), s in ".{0,20}", b in prop::collection::vec(any::<u8>(), 0..20),
    ) {
        let registry = shared_registry();
        let snapshot = registry.snapshot();
        let desc = snapshot.pool().get_message_by_name("example.types.v1.Scalars").unwrap();
        let mut message = DynamicMessage::new(desc.clone());
        message.set_field_by_name("f_int32", Value::I32(i32v));
        message.set_field_by_name("f_sint64", Value::I64(i64v));
        message.set_field_by_name("f_fixed64", Value::U64(u64v));
        message.set_field_by_name("f_double", Value::F64(f64v));
        message.set_field_by_name("f_string", Value::String(s));
        message.set_field_by_name("f_bytes", Value::Bytes(b.into()));
        let proto = prost::Message::encode_to_vec(&message);
        let opts = JsonOptions::default();
        let mut json = Vec::new();
        proto_to_json(&desc, &proto, &opts, &mut json).unwrap();
        let mut back = Vec::new();
        json_to_proto(&desc, &json, &opts, &mut back).unwrap();
        let mut json_again = Vec::new();
        proto_to_json(&desc, &back, &opts, &mut json_again).unwrap();
        prop_assert_eq!(String::from_utf8(json).unwrap(), String::from_utf8(json_again).unwrap());
        if !f64v.is_nan() {
            prop_assert_eq!(back, proto);
        }
    }
}
