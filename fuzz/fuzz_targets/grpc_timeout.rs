//! `grpc-timeout` parsing (balancer/src/grpc/timeout.rs): never a panic, and
//! whatever parses encodes back to a value that parses, no shorter.
#![no_main]

use gateway_fuzz::grpc_timeout;
use http::HeaderValue;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    if let Some(timeout) = grpc_timeout::parse(&value) {
        let again = grpc_timeout::parse(&grpc_timeout::encode(timeout));
        assert!(
            again.is_some_and(|t| t >= timeout),
            "{timeout:?} -> {again:?}"
        );
    }
});
