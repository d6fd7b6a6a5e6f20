//! google.rpc.Status rendering with details.

use base64::Engine as _;
use descriptors::{Registry, codec::Codec, json::status_to_json};
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, Value};
use serde_json::json;

fn message(pool: &DescriptorPool, name: &str, json: serde_json::Value) -> DynamicMessage {
    let desc = pool.get_message_by_name(name).unwrap();
    DynamicMessage::deserialize(desc, json).unwrap()
}

fn any(pool: &DescriptorPool, type_url: &str, value: Vec<u8>) -> Value {
    let mut any = DynamicMessage::new(pool.get_message_by_name("google.protobuf.Any").unwrap());
    any.set_field_by_name("type_url", Value::String(type_url.to_owned()));
    any.set_field_by_name("value", Value::Bytes(value.into()));
    Value::Message(any)
}

#[test]
fn details_are_rendered() {
    let registry = Registry::new();
    let snapshot = registry.snapshot();
    let pool = &*snapshot.pool();

    let bad_request = message(
        pool,
        "google.rpc.BadRequest",
        json!({"fieldViolations": [{"field": "shelf.name", "description": "required"}]}),
    );
    let error_info = message(
        pool,
        "google.rpc.ErrorInfo",
        json!({"reason": "QUOTA", "domain": "example.com", "metadata": {"k": "v"}}),
    );
    let duration = message(pool, "google.protobuf.Duration", json!("1.5s"));
    let mut status = DynamicMessage::new(pool.get_message_by_name("google.rpc.Status").unwrap());
    status.set_field_by_name("code", Value::I32(3));
    status.set_field_by_name(
        "message",
        Value::String("ignored, the header wins".to_owned()),
    );
    status.set_field_by_name(
        "details",
        Value::List(vec![
            any(
                pool,
                "type.googleapis.com/google.rpc.BadRequest",
                bad_request.encode_to_vec(),
            ),
            // Any prefix is accepted.
            any(
                pool,
                "example.com/custom/prefix/google.rpc.ErrorInfo",
                error_info.encode_to_vec(),
            ),
            // No prefix at all.
            any(pool, "google.protobuf.Duration", duration.encode_to_vec()),
            // Unknown type: kept as base64.
            any(pool, "type.googleapis.com/nope.Unknown", vec![1, 2, 3]),
            // Known type, undecodable value.
            any(
                pool,
                "type.googleapis.com/google.rpc.ErrorInfo",
                vec![0x0a, 0x05],
            ),
        ]),
    );
    let bytes = status.encode_to_vec();

    let rendered = status_to_json(snapshot.codec(), 3, "bad shelf", Some(&bytes));
    assert_eq!(
        rendered,
        json!({
            "code": 3,
            "message": "bad shelf",
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.BadRequest",
                    "fieldViolations": [{"field": "shelf.name", "description": "required"}],
                },
                {
                    "@type": "example.com/custom/prefix/google.rpc.ErrorInfo",
                    "reason": "QUOTA",
                    "domain": "example.com",
                    "metadata": {"k": "v"},
                },
                {"@type": "google.protobuf.Duration", "value": "1.500s"},
                {
                    "@type": "type.googleapis.com/nope.Unknown",
                    "value": base64::engine::general_purpose::STANDARD.encode([1, 2, 3]),
                },
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "value": base64::engine::general_purpose::STANDARD.encode([0x0a, 0x05]),
                },
            ],
        })
    );
}

#[test]
fn undecodable_or_missing_details() {
    let registry = Registry::new();
    let snapshot = registry.snapshot();
    let expected = json!({"code": 5, "message": "not found", "details": []});
    assert_eq!(
        status_to_json(snapshot.codec(), 5, "not found", None),
        expected
    );
    assert_eq!(
        status_to_json(snapshot.codec(), 5, "not found", Some(b"\x0a\x05\x01")),
        expected
    );
    assert_eq!(
        status_to_json(snapshot.codec(), 5, "not found", Some(b"")),
        expected
    );
    // Even a pool without google.rpc.Status never fails.
    assert_eq!(
        status_to_json(
            &Codec::compile(&DescriptorPool::new()),
            5,
            "not found",
            Some(b"\x08\x05")
        ),
        expected
    );
}
