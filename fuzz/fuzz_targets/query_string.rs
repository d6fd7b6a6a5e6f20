//! The google.api.http request mapping with fuzzed query strings (and a
//! fuzzed body for the `body: "data"` rule): recursive field chains, repeated,
//! oneof and map fields, percent-decoding.
#![no_main]

use descriptors::{JsonOptions, json};
use http::Method;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let snapshot = gateway_fuzz::snapshot();
    let (query, body) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let query = String::from_utf8_lossy(query);
    let (method, path) = match selector % 3 {
        0 => (Method::GET, "/v1/nodes/n1"),
        1 => (Method::GET, "/v1/nodes"),
        _ => (Method::PUT, "/v1/nodes/trees/t1/leaves/l1"),
    };
    let Some(m) = snapshot.match_http(&method, path) else {
        return;
    };
    let opts = JsonOptions {
        ignore_unknown_fields: selector & 4 != 0,
        ..JsonOptions::default()
    };
    let mut out = Vec::new();
    let _ = json::build_request(&m, body, Some(&query), &opts, &mut out);
});
