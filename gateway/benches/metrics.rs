//! What recording one request in the metrics costs (the access log's
//! `emit` at the end of every request): a registered gRPC method, a JSON
//! call through a REST rule (its method named by `resolve`, not matched
//! again), an unknown path; and two threads recording the same series at
//! once.
//!
//! Run with `cargo bench -p gateway --bench metrics`.

use std::{
    hint::black_box,
    sync::Arc,
    time::{Duration, SystemTime},
};

use criterion::{Criterion, criterion_group, criterion_main};
use gateway::{access_log::LogRecord, error::Termination, metrics::RequestMetrics};

/// A finished request; `grpc_method` as `resolve` names it (registered or
/// route-named methods only).
fn record(
    path: &str,
    protocol: &'static str,
    method: http::Method,
    grpc_method: Option<&str>,
) -> LogRecord {
    LogRecord {
        client: ([127, 0, 0, 1], 5000).into(),
        accepted: SystemTime::now(),
        listener: "front".into(),
        cluster: Some("backend".into()),
        server: Some("s0".into()),
        queue: Duration::ZERO,
        connect: None,
        response: Some(Duration::from_micros(300)),
        total: Duration::from_micros(420),
        status: 200,
        grpc_status: Some(0),
        bytes: 75,
        request_captures: Vec::new(),
        response_captures: Vec::new(),
        termination: Termination::Normal,
        method,
        path: path.to_string(),
        version: http::Version::HTTP_2,
        protocol,
        retries: 0,
        server_in_flight: 1,
        cluster_queued: 0,
        route: Some("route0".into()),
        grpc_method: grpc_method.map(Into::into),
        counts: Arc::default(),
        trace: None,
    }
}

fn bench(c: &mut Criterion) {
    let registry = Arc::new(descriptors::Registry::new());
    registry
        .put("samples", sample_services::FILE_DESCRIPTOR_SET)
        .expect("sample descriptors register");
    let metrics = Arc::new(RequestMetrics::new(registry, &[]));
    let grpc = record(
        "/sample.echo.v1.Echo/Unary",
        "grpc",
        http::Method::POST,
        Some("/sample.echo.v1.Echo/Unary"),
    );
    let json = record(
        "/v1/shelves/1",
        "json",
        http::Method::GET,
        Some("/sample.library.v1.LibraryService/GetShelf"),
    );
    let unknown = record("/no.such.Service/Call", "grpc", http::Method::POST, None);
    for r in [&grpc, &json, &unknown] {
        metrics.record(r);
    }
    c.bench_function("record grpc registered method", |b| {
        b.iter(|| metrics.record(black_box(&grpc)))
    });
    c.bench_function("record json rest rule", |b| {
        b.iter(|| metrics.record(black_box(&json)))
    });
    c.bench_function("record grpc unknown path", |b| {
        b.iter(|| metrics.record(black_box(&unknown)))
    });
    // Another thread hammering the same series: contention on its atomics.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let other = {
        let (metrics, stop, grpc) = (metrics.clone(), stop.clone(), grpc.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                metrics.record(&grpc);
            }
        })
    };
    c.bench_function("record grpc registered method, 2 threads", |b| {
        b.iter(|| metrics.record(black_box(&grpc)))
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = other.join();
}

criterion_group!(benches, bench);
criterion_main!(benches);
