//! JSON -> protobuf on the hostile schema, then back: never a panic, a hang
//! or a stack overflow, whatever the JSON.
#![no_main]

use descriptors::{JsonOptions, json};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let desc = gateway_fuzz::node();
    let opts = JsonOptions::default();
    let mut proto = Vec::new();
    if json::json_to_proto(&desc, data, &opts, &mut proto).is_ok() {
        let mut out = Vec::new();
        let _ = json::proto_to_json(&desc, &proto, &opts, &mut out);
    }
});
