//! Path template matching and path-variable binding: a fuzzed method and
//! request target (`path?query`) against the hostile schema's rules.
#![no_main]

use descriptors::{JsonOptions, json};
use http::Method;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let method = match selector % 4 {
        0 => Method::GET,
        1 => Method::PUT,
        2 => Method::POST,
        _ => Method::DELETE,
    };
    let target = String::from_utf8_lossy(rest);
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (&*target, None),
    };
    let snapshot = gateway_fuzz::snapshot();
    if let Some(m) = snapshot.match_http(&method, path) {
        let mut out = Vec::new();
        let _ = json::build_request(&m, b"{}", query, &JsonOptions::default(), &mut out);
    }
});
