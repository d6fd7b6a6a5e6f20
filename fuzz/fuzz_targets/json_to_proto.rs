//! JSON -> protobuf on the hostile schema, then back: never a panic, a hang
//! or a stack overflow, whatever the JSON; and the codec's scanner accepts
//! exactly what its serde reader accepts, with the same bytes.
#![no_main]

use descriptors::{JsonOptions, json};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let desc = gateway_fuzz::node();
    let opts = JsonOptions::default();
    if let Some((scan, serde)) = json::codec_readers(&desc, data, &opts) {
        assert_eq!(scan, serde, "the scanner and the serde reader disagree");
    }
    let mut proto = Vec::new();
    if json::json_to_proto(&desc, data, &opts, &mut proto).is_ok() {
        let mut out = Vec::new();
        let _ = json::proto_to_json(&desc, &proto, &opts, &mut out);
    }
});
