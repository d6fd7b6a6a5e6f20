//! In-flight accounting and outcome reporting, through a lease and a
//! leased body.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Empty, StreamBody};

use super::*;
use crate::{
    cluster::Cluster,
    config::{ClusterConfig, EndpointConfig, OutlierConfig},
    dns::{Resolve, SystemResolver},
};

/// A cluster of two endpoints that ejects after `consecutive` failures
/// (UNAVAILABLE counts), never more than one of them.
async fn cluster(consecutive: u32) -> Arc<Cluster> {
    let endpoint = |port: u16| EndpointConfig {
        address: format!("127.0.0.1:{port}"),
        name: None,
        weight: 1,
    };
    let cfg = ClusterConfig {
        name: ClusterName::new("c"),
        endpoints: vec![endpoint(1), endpoint(2)],
        protocol: Default::default(),
        lb: Default::default(),
        hash_header: None,
        retry: None,
        outlier_detection: Some(OutlierConfig {
            consecutive_failures: consecutive,
            statuses: vec!["UNAVAILABLE".into()],
            base_ejection_ms: 30_000,
            max_ejection_ms: 300_000,
            max_ejection_percent: 50,
        }),
        connect_timeout_ms: 1_000,
        max_requests_per_endpoint: 1_024,
        max_http1_connections_per_endpoint: None,
        max_queue: 1_024,
        queue_timeout_ms: 1_000,
        max_connect_attempts: 3,
        max_connections_per_endpoint: 8,
        keepalive_interval_ms: 0,
        idle_timeout_ms: 600_000,
        health_check: None,
        tls: None,
        dns_refresh_ms: 5_000,
        descriptors_from_reflection: false,
        reflection_interval_ms: 60_000,
    };
    let resolver: Arc<dyn Resolve> = Arc::new(SystemResolver);
    Arc::new(
        Cluster::new(&cfg, "clusters[0]", &resolver)
            .await
            .expect("cluster"),
    )
}

/// A lease on endpoint 0, its slot taken as the queue does.
fn lease(c: &Arc<Cluster>) -> Lease {
    let ep = c.endpoints()[0].clone();
    assert!(ep.try_acquire(None));
    Lease::new(c.clone(), ep)
}

fn status(code: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("grpc-status", HeaderValue::from_str(code).expect("value"));
    h
}

type Frames = Vec<Result<Frame<Bytes>, BoxError>>;
type TestBody =
    StreamBody<futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, BoxError>>>>;

fn body(frames: Frames) -> TestBody {
    StreamBody::new(futures_util::stream::iter(frames))
}

fn data() -> Result<Frame<Bytes>, BoxError> {
    Ok(Frame::data(Bytes::from_static(b"\0\0\0\0\0")))
}

fn trailers(h: HeaderMap) -> Result<Frame<Bytes>, BoxError> {
    Ok(Frame::trailers(h))
}

fn reset() -> Result<Frame<Bytes>, BoxError> {
    Err("stream reset".into())
}

#[tokio::test]
async fn a_lease_counts_in_flight_until_dropped_and_reports_once() {
    let c = cluster(2).await;
    let ep = c.endpoints()[0].clone();
    let l = lease(&c);
    assert_eq!(ep.in_flight(), 1);
    l.record(Outcome::Failed);
    l.record(Outcome::Failed);
    assert!(l.is_recorded());
    assert!(!ep.is_ejected(), "the second report of a lease is ignored");
    drop(l);
    assert_eq!(ep.in_flight(), 0);
    lease(&c).record_status(None);
    assert!(ep.is_ejected(), "two leases, two failures");
    assert_eq!(ep.in_flight(), 0);
}

#[tokio::test]
async fn a_lease_dropped_without_a_report_counts_for_nothing() {
    let c = cluster(1).await;
    let ep = c.endpoints()[0].clone();
    let l = lease(&c);
    assert!(!l.is_recorded());
    drop(l);
    assert!(!ep.is_ejected());
    assert_eq!(ep.in_flight(), 0);
}

#[tokio::test]
async fn a_leased_body_reports_what_it_shows_and_frees_the_slot_at_its_end() {
    // (gRPC?, frames, counts as a failure)
    let table: Vec<(&str, bool, Frames, bool)> = vec![
        (
            "UNAVAILABLE in trailers",
            true,
            vec![data(), trailers(status("14"))],
            true,
        ),
        (
            "OK in trailers",
            true,
            vec![data(), trailers(status("0"))],
            false,
        ),
        (
            "unlisted status",
            true,
            vec![data(), trailers(status("5"))],
            false,
        ),
        (
            "trailers without status",
            true,
            vec![data(), trailers(HeaderMap::new())],
            true,
        ),
        ("reset", true, vec![data(), reset()], true),
        ("end without trailers", true, vec![data()], false),
        ("HTTP reset", false, vec![data(), reset()], true),
        (
            "HTTP trailers",
            false,
            vec![data(), trailers(HeaderMap::new())],
            false,
        ),
        ("HTTP end", false, vec![data()], false),
    ];
    for (case, grpc, frames, failed) in table {
        let c = cluster(1).await;
        let ep = c.endpoints()[0].clone();
        let b = if grpc {
            LeasedBody::grpc(&HeaderMap::new(), body(frames), lease(&c))
        } else {
            LeasedBody::http(body(frames), lease(&c))
        };
        let mut b = std::pin::pin!(b);
        while let Some(frame) = b.frame().await {
            if frame.is_err() {
                break;
            }
        }
        assert_eq!(ep.in_flight(), 0, "{case}: slot freed at the end");
        assert_eq!(ep.is_ejected(), failed, "{case}");
        assert!(b.lease().is_none(), "{case}");
    }
}

#[tokio::test]
async fn a_trailers_only_head_reports_at_once() {
    for (head, failed) in [
        (status("14"), true),
        (status("0"), false),
        (HeaderMap::new(), true),
    ] {
        let c = cluster(1).await;
        let ep = c.endpoints()[0].clone();
        let b = LeasedBody::grpc(&head, Empty::<Bytes>::new(), lease(&c));
        assert!(b.is_end_stream());
        assert_eq!((ep.is_ejected(), ep.in_flight()), (failed, 0), "{head:?}");
    }
}

#[tokio::test]
async fn a_leased_body_dropped_early_reports_nothing() {
    let c = cluster(1).await;
    let ep = c.endpoints()[0].clone();
    let mut b = LeasedBody::grpc(
        &HeaderMap::new(),
        body(vec![data(), trailers(status("14"))]),
        lease(&c),
    );
    assert!(b.frame().await.is_some());
    assert_eq!(ep.in_flight(), 1, "still streaming");
    drop(b);
    assert_eq!((ep.is_ejected(), ep.in_flight()), (false, 0));
}
