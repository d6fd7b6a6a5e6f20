//! protobuf -> JSON on the hostile schema (the reply path), as a whole
//! message, through `response_body`-less rendering, and as the
//! `grpc-status-details-bin` of a status.
#![no_main]

use descriptors::{JsonOptions, json};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let snapshot = gateway_fuzz::snapshot();
    let desc = gateway_fuzz::node();
    let opts = JsonOptions {
        emit_unpopulated: data.first().is_some_and(|b| b & 1 == 1),
        ..JsonOptions::default()
    };
    let mut out = Vec::new();
    if json::proto_to_json(&desc, data, &opts, &mut out).is_ok() {
        assert!(out.len() <= opts.max_json_output_bytes);
    }
    let _ = json::status_to_json(snapshot.codec(), 3, "fuzz", Some(data));
});
