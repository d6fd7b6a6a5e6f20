//! `GET /metrics` on the admin listener: after known traffic the scraped
//! values are exactly what they should be; unknown paths add no label
//! values; and a real Prometheus scrapes the gateway and computes `rate()`
//! and `histogram_quantile` from it (`#[ignore]`: needs the `prometheus`
//! binary, which `scripts/test.sh` installs).

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use futures_util::StreamExt;
use gateway::Gateway;
use sample_services::{
    codename::{NameRequest, codename_creator_client::CodenameCreatorClient},
    echo::{EchoRequest, echo_client::EchoClient},
};
use tests::*;
use tonic::Code;

const TOKEN: &str = "metrics-test-token";

/// Listener `front` (catch-all route, plus a route naming
/// `/CodenameCreator/GetCodename` that needs `x-pass: ok`), listener `small`
/// (one connection at most), listener `tls`, admin with a token; one worker
/// thread, so the upstream connections are known (one per worker).
fn config(s: &SampleServer, pki: &TestPki) -> String {
    format!(
        "workers = 1\n[[listeners]]\nname = \"front\"\naddress = \"127.0.0.1:0\"\n\
         [[listeners]]\nname = \"small\"\naddress = \"127.0.0.1:0\"\nmax_connections = 1\n\
         [[listeners]]\nname = \"tls\"\naddress = \"127.0.0.1:0\"\n\
         tls = {{ cert_file = \"{}\", key_file = \"{}\" }}\n\
         [[clusters]]\nname = \"backend\"\nendpoints = [{{ name = \"s0\", address = \"{}\" }}]\n\
         [[routes]]\nname = \"codename\"\ncluster = \"backend\"\n\
         match = {{ path = \"/CodenameCreator/GetCodename\" }}\n\
         deny_unless = [{{ name = \"x-pass\", exact = \"ok\" }}]\n\
         [[routes]]\nname = \"all\"\ncluster = \"backend\"\n\
         [admin]\naddress = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n",
        pki.cert_file.display(),
        pki.key_file.display(),
        s.addr
    )
}

/// Scrapes `GET /metrics` in the Prometheus text format.
async fn scrape(gw: &Gateway) -> String {
    let admin = gw.admin_addr().expect("admin");
    let req = http::Request::get("/metrics").body(body("")).expect("req");
    let r = http_call(admin, HttpVersion::H1, req).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("content-type"),
        "text/plain; version=0.0.4; charset=utf-8"
    );
    r.text()
}

/// `name{labels}` -> value, for every sample line.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// The series of a request metric, labels in their exposition order; the
/// route is `codename` for CodenameCreator calls, `all` (the catch-all of
/// [`config`]) for the others.
fn req(metric: &str, cluster: &str, svc: &str, method: &str, proto: &str, code: &str) -> String {
    let route = if svc == "CodenameCreator" {
        "codename"
    } else {
        "all"
    };
    req_on(metric, route, cluster, svc, method, proto, code)
}

/// [`req`] on `route`.
fn req_on(
    metric: &str,
    route: &str,
    cluster: &str,
    svc: &str,
    method: &str,
    proto: &str,
    code: &str,
) -> String {
    format!(
        "{metric}{{listener=\"front\",route=\"{route}\",cluster=\"{cluster}\",grpc_service=\"{svc}\",grpc_method=\"{method}\",protocol=\"{proto}\",grpc_code=\"{code}\",http_status_class=\"2xx\"}}"
    )
}

/// The series of `gateway_stream_messages` (`suffix`: `count`, `sum`).
fn messages(suffix: &str, svc: &str, method: &str, proto: &str, direction: &str) -> String {
    format!(
        "gateway_stream_messages_{suffix}{{listener=\"front\",route=\"all\",cluster=\"backend\",grpc_service=\"{svc}\",grpc_method=\"{method}\",protocol=\"{proto}\",direction=\"{direction}\"}}"
    )
}

/// Waits until `f` holds for a fresh scrape (records land when a
/// response ends, a moment after the client has read it), then returns
/// that scrape.
async fn scrape_until(
    gw: &Gateway,
    what: &str,
    f: impl Fn(&BTreeMap<String, f64>) -> bool,
) -> BTreeMap<String, f64> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let s = samples(&scrape(gw).await);
        if f(&s) {
            return s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} never held; last scrape:\n{s:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn value(s: &BTreeMap<String, f64>, key: &str) -> f64 {
    *s.get(key)
        .unwrap_or_else(|| panic!("no series {key} in\n{s:#?}"))
}

async fn upload(gw: &Gateway, token: &str) -> http::StatusCode {
    let admin = gw.admin_addr().expect("admin");
    let req = http::Request::put("/v1/descriptor-sets/samples")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/octet-stream")
        .body(body(sample_services::FILE_DESCRIPTOR_SET))
        .expect("req");
    http_call(admin, HttpVersion::H1, req).await.status
}

#[tokio::test]
async fn scraped_values_after_known_traffic() {
    let s = spawn_sample("s0").await;
    let pki = TestPki::new();
    let gw = spawn_gateway(&config(&s, &pki)).await;
    let front = gw.addr("front").expect("front");

    // Uploads: one refused (bad token), one accepted.
    assert_eq!(upload(&gw, "wrong").await, 401);
    assert_eq!(upload(&gw, TOKEN).await, 201);

    let ch = channel(front).await;
    let mut echo = EchoClient::new(ch.clone());
    // A unary OK.
    echo.unary(EchoRequest {
        message: "hi".into(),
        response_bytes: 100,
        ..Default::default()
    })
    .await
    .expect("unary");
    // A NOT_FOUND from the backend.
    let err = echo
        .unary(EchoRequest {
            status_code: Code::NotFound as i32,
            ..Default::default()
        })
        .await
        .expect_err("not found");
    assert_eq!(err.code(), Code::NotFound);
    // A call denied by the route rule (the route names the method).
    let err = CodenameCreatorClient::new(ch.clone())
        .get_codename(NameRequest {
            category: "x".into(),
        })
        .await
        .expect_err("denied");
    assert_eq!(err.code(), Code::PermissionDenied);
    // A server stream of 3 messages.
    let mut stream = echo
        .server_stream(EchoRequest {
            count: 3,
            ..Default::default()
        })
        .await
        .expect("stream")
        .into_inner();
    let mut n = 0;
    while let Some(m) = stream.next().await {
        m.expect("message");
        n += 1;
    }
    assert_eq!(n, 3);
    // An unregistered method (the backend answers UNIMPLEMENTED).
    let mut grpc = tonic::client::Grpc::new(ch.clone());
    grpc.ready().await.expect("ready");
    let err = grpc
        .unary::<EchoRequest, EchoRequest, _>(
            tonic::Request::new(EchoRequest::default()),
            "/no.such.Service/Call".parse().expect("path"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .expect_err("unimplemented");
    assert_eq!(err.code(), Code::Unimplemented);
    // JSON: the default route, and a REST rule (GET /v1/shelves/1).
    let r = http_call(
        front,
        HttpVersion::H1,
        json_request("POST", "/sample.echo.v1.Echo/Unary", r#"{"message":"j"}"#),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = http_call(
        front,
        HttpVersion::H1,
        http::Request::get("/v1/shelves/1")
            .body(body(""))
            .expect("req"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // JSON the codec refuses: a field the message does not have, and JSON
    // that does not parse.
    for (json, kind) in [(r#"{"nope":1}"#, "unknown_field"), ("{", "invalid_json")] {
        let r = http_call(
            front,
            HttpVersion::H1,
            json_request("POST", "/sample.echo.v1.Echo/Unary", json),
        )
        .await;
        assert_eq!(r.status, 400, "{kind}: {}", r.text());
    }
    // A client that does not speak HTTP: a protocol error on `front`.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(front)
            .await
            .expect("connect");
        tcp.write_all(b"NOT HTTP AT ALL\r\n\r\n")
            .await
            .expect("write");
        let mut buf = Vec::new();
        let _ = within(10, "garbage answered", tcp.read_to_end(&mut buf)).await;
    }
    // A TLS handshake completed on `tls` (then the client leaves).
    {
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls::pki_types::CertificateDer::pem_slice_iter(&pki.ca_pem) {
            roots.add(c.expect("pem")).expect("root");
        }
        let cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(gw.addr("tls").expect("tls"))
            .await
            .expect("tcp");
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
            .connect(name, tcp)
            .await
            .expect("handshake");
    }

    // Front: `small` takes one connection; a second is refused, and the
    // first (idle) is shed to make room. A bad TLS handshake on `tls`.
    let small = gw.addr("small").expect("small");
    let first = tokio::net::TcpStream::connect(small).await.expect("first");
    let s1 = scrape_until(&gw, "first small connection open", |s| {
        s.get("gateway_downstream_connections_open{listener=\"small\"}") == Some(&1.0)
    })
    .await;
    assert_eq!(
        value(
            &s1,
            "gateway_downstream_connections_accepted_total{listener=\"small\"}"
        ),
        1.0
    );
    let second = tokio::net::TcpStream::connect(small).await.expect("second");
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tls = tokio::net::TcpStream::connect(gw.addr("tls").expect("tls"))
            .await
            .expect("tls");
        tls.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .expect("write");
        let mut buf = Vec::new();
        let _ = within(10, "TLS close", tls.read_to_end(&mut buf)).await;
    }

    let ok = req(
        "gateway_requests_total",
        "backend",
        "sample.echo.v1.Echo",
        "Unary",
        "grpc",
        "OK",
    );
    let s = scrape_until(&gw, "every request recorded and connections settled", |s| {
        s.get(&ok) == Some(&1.0)
            && s.get("gateway_downstream_connections_refused_total{listener=\"small\",reason=\"max_connections\"}") == Some(&1.0)
            && s.get("gateway_downstream_tls_handshake_failures_total{listener=\"tls\",reason=\"error\"}") == Some(&1.0)
            && s.get("gateway_requests_in_flight{listener=\"front\"}") == Some(&0.0)
            // The gRPC channel; the HTTP/1.1 connections have closed.
            && s.get("gateway_downstream_connections_open{listener=\"front\"}") == Some(&1.0)
            && s.get("gateway_downstream_tls_handshakes_total{listener=\"tls\"}") == Some(&1.0)
            && s.keys().filter(|k| k.starts_with("gateway_requests_total{")).count() == 8
    })
    .await;
    drop((first, second));

    // Requests, exactly.
    let requests: BTreeMap<&String, &f64> = s
        .iter()
        .filter(|(k, _)| k.starts_with("gateway_requests_total{"))
        .collect();
    let expected = [
        req(
            "gateway_requests_total",
            "backend",
            "sample.echo.v1.Echo",
            "Unary",
            "grpc",
            "OK",
        ),
        req(
            "gateway_requests_total",
            "backend",
            "sample.echo.v1.Echo",
            "Unary",
            "grpc",
            "NOT_FOUND",
        ),
        req(
            "gateway_requests_total",
            "unknown",
            "CodenameCreator",
            "GetCodename",
            "grpc",
            "PERMISSION_DENIED",
        ),
        req(
            "gateway_requests_total",
            "backend",
            "sample.echo.v1.Echo",
            "ServerStream",
            "grpc",
            "OK",
        ),
        req(
            "gateway_requests_total",
            "backend",
            "unknown",
            "unknown",
            "grpc",
            "UNIMPLEMENTED",
        ),
        req(
            "gateway_requests_total",
            "backend",
            "sample.echo.v1.Echo",
            "Unary",
            "json",
            "OK",
        ),
        req(
            "gateway_requests_total",
            "backend",
            "sample.library.v1.LibraryService",
            "GetShelf",
            "json",
            "OK",
        ),
    ];
    for key in &expected {
        assert_eq!(value(&s, key), 1.0, "{key}");
    }
    let refused_json = req(
        "gateway_requests_total",
        "backend",
        "sample.echo.v1.Echo",
        "Unary",
        "json",
        "INVALID_ARGUMENT",
    )
    .replace("2xx", "4xx");
    assert_eq!(value(&s, &refused_json), 2.0, "{refused_json}");
    assert_eq!(requests.len(), expected.len() + 1, "{requests:#?}");

    // The histogram agrees with the counter; bytes went out for the OK
    // call and none for the trailers-only NOT_FOUND.
    let hist = |suffix: &str, code: &str| {
        req(
            &format!("gateway_request_duration_seconds_{suffix}"),
            "backend",
            "sample.echo.v1.Echo",
            "Unary",
            "grpc",
            code,
        )
    };
    assert_eq!(value(&s, &hist("count", "OK")), 1.0);
    let inf = hist("bucket", "OK").replace('}', ",le=\"+Inf\"}");
    assert_eq!(value(&s, &inf), 1.0, "{inf}");
    assert!(value(&s, &hist("sum", "OK")) > 0.0);
    let bytes = |code: &str| {
        value(
            &s,
            &req(
                "gateway_response_body_bytes_total",
                "backend",
                "sample.echo.v1.Echo",
                "Unary",
                "grpc",
                code,
            ),
        )
    };
    // The 100-byte payload plus the message and framing.
    assert!(bytes("OK") > 100.0, "{}", bytes("OK"));
    assert_eq!(bytes("NOT_FOUND"), 0.0);

    // Request bodies, exactly: a gRPC message is its encoding and the
    // 5-byte frame header; JSON, the body as sent; a call refused before
    // its body was read, nothing.
    let received = |cluster: &str, svc: &str, method: &str, proto: &str, code: &str| {
        value(
            &s,
            &req(
                "gateway_request_body_bytes_total",
                cluster,
                svc,
                method,
                proto,
                code,
            ),
        )
    };
    let framed = |m: EchoRequest| (prost::Message::encoded_len(&m) + 5) as f64;
    let echo_svc = "sample.echo.v1.Echo";
    assert_eq!(
        received("backend", echo_svc, "Unary", "grpc", "OK"),
        framed(EchoRequest {
            message: "hi".into(),
            response_bytes: 100,
            ..Default::default()
        })
    );
    assert_eq!(
        received("backend", echo_svc, "Unary", "grpc", "NOT_FOUND"),
        framed(EchoRequest {
            status_code: Code::NotFound as i32,
            ..Default::default()
        })
    );
    assert_eq!(
        received("backend", echo_svc, "ServerStream", "grpc", "OK"),
        framed(EchoRequest {
            count: 3,
            ..Default::default()
        })
    );
    assert_eq!(
        received("backend", echo_svc, "Unary", "json", "OK"),
        r#"{"message":"j"}"#.len() as f64
    );
    assert_eq!(
        received(
            "backend",
            "sample.library.v1.LibraryService",
            "GetShelf",
            "json",
            "OK"
        ),
        0.0
    );
    assert_eq!(
        received(
            "unknown",
            "CodenameCreator",
            "GetCodename",
            "grpc",
            "PERMISSION_DENIED"
        ),
        0.0
    );

    // Messages per call, each way: the stream's three replies, one each
    // for the unary calls (none for the trailers-only NOT_FOUND); JSON
    // counts what it transcoded (the two refused calls, none).
    for (method, proto, direction, count, sum) in [
        ("ServerStream", "grpc", "request", 1.0, 1.0),
        ("ServerStream", "grpc", "response", 1.0, 3.0),
        ("Unary", "grpc", "request", 2.0, 2.0),
        ("Unary", "grpc", "response", 2.0, 1.0),
        ("Unary", "json", "request", 3.0, 1.0),
        ("Unary", "json", "response", 3.0, 1.0),
    ] {
        let key = messages("count", echo_svc, method, proto, direction);
        assert_eq!(value(&s, &key), count, "{key}");
        let key = messages("sum", echo_svc, method, proto, direction);
        assert_eq!(value(&s, &key), sum, "{key}");
    }
    let bucket = |le: &str| {
        messages("bucket", echo_svc, "ServerStream", "grpc", "response")
            .replace('}', &format!(",le=\"{le}\"}}"))
    };
    assert_eq!(value(&s, &bucket("2")), 0.0);
    assert_eq!(value(&s, &bucket("5")), 1.0);

    // The JSON codec: one conversion per message each way (the refused
    // requests were timed too), and the failures by kind.
    let codec = |direction: &str, svc: &str, method: &str| {
        value(
            &s,
            &format!(
                "gateway_transcode_duration_seconds_count{{direction=\"{direction}\",grpc_service=\"{svc}\",grpc_method=\"{method}\"}}"
            ),
        )
    };
    assert_eq!(codec("json_to_proto", echo_svc, "Unary"), 3.0);
    assert_eq!(codec("proto_to_json", echo_svc, "Unary"), 1.0);
    let library = "sample.library.v1.LibraryService";
    assert_eq!(codec("json_to_proto", library, "GetShelf"), 1.0);
    assert_eq!(codec("proto_to_json", library, "GetShelf"), 1.0);
    for (kind, n) in [
        ("invalid_json", 1.0),
        ("unknown_field", 1.0),
        ("too_large", 0.0),
        ("too_deep", 0.0),
        ("bad_reply", 0.0),
    ] {
        let key = format!("gateway_transcode_errors_total{{kind=\"{kind}\"}}");
        assert_eq!(value(&s, &key), n, "{key}");
    }

    // Upstream, read from the balancer: the six calls that reached s0.
    let ep = "{cluster=\"backend\",endpoint=\"s0\"}";
    assert_eq!(
        value(&s, &format!("gateway_upstream_requests_total{ep}")),
        6.0
    );
    assert_eq!(
        value(&s, &format!("gateway_upstream_streams_in_flight{ep}")),
        0.0
    );
    assert_eq!(
        value(&s, &format!("gateway_upstream_connections_open{ep}")),
        1.0
    );
    assert_eq!(
        value(&s, &format!("gateway_upstream_ejections_total{ep}")),
        0.0
    );
    assert_eq!(
        value(
            &s,
            "gateway_upstream_endpoint_state{cluster=\"backend\",endpoint=\"s0\",state=\"UP\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &s,
            "gateway_upstream_endpoint_state{cluster=\"backend\",endpoint=\"s0\",state=\"DOWN\"}"
        ),
        0.0
    );
    assert_eq!(
        value(&s, "gateway_upstream_queued_requests{cluster=\"backend\"}"),
        0.0
    );
    // One connection, opened once; nothing went wrong on it.
    for (metric, n) in [
        ("gateway_upstream_connect_attempts_total", 1.0),
        ("gateway_upstream_connect_failures_total", 0.0),
        ("gateway_upstream_goaways_received_total", 0.0),
        ("gateway_upstream_resets_received_total", 0.0),
    ] {
        assert_eq!(value(&s, &format!("{metric}{ep}")), n, "{metric}");
    }
    let backend = "{cluster=\"backend\"}";
    assert_eq!(
        value(&s, &format!("gateway_upstream_retries_total{backend}")),
        0.0
    );
    assert_eq!(
        value(
            &s,
            &format!("gateway_upstream_retry_budget_exhausted_total{backend}")
        ),
        0.0
    );
    // Six admissions, none of which waited.
    assert_eq!(
        value(
            &s,
            &format!("gateway_upstream_queue_wait_seconds_count{backend}")
        ),
        6.0
    );
    assert_eq!(
        value(
            &s,
            "gateway_upstream_queue_wait_seconds_bucket{cluster=\"backend\",le=\"0.0001\"}"
        ),
        6.0
    );

    // Front: one gRPC channel, four HTTP/1.1 connections and one that
    // was not HTTP on `front`; one TLS handshake done, one failed.
    assert_eq!(
        value(
            &s,
            "gateway_downstream_connections_accepted_total{listener=\"front\"}"
        ),
        6.0
    );
    for (metric, n) in [
        (
            "gateway_downstream_protocol_errors_total{listener=\"front\"}",
            1.0,
        ),
        (
            "gateway_downstream_protocol_errors_total{listener=\"tls\"}",
            0.0,
        ),
        (
            "gateway_downstream_tls_handshakes_total{listener=\"tls\"}",
            1.0,
        ),
        (
            "gateway_downstream_tls_handshakes_total{listener=\"front\"}",
            0.0,
        ),
    ] {
        assert_eq!(value(&s, metric), n, "{metric}");
    }
    assert_eq!(
        value(
            &s,
            "gateway_downstream_connections_accepted_total{listener=\"small\"}"
        ),
        2.0
    );
    assert_eq!(
        value(
            &s,
            "gateway_downstream_connections_shed_total{listener=\"small\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &s,
            "gateway_downstream_connections_refused_total{listener=\"small\",reason=\"max_connections_per_ip\"}"
        ),
        0.0
    );
    assert!(
        value(
            &s,
            "gateway_downstream_received_bytes_total{listener=\"front\"}"
        ) > 0.0
    );
    assert!(
        value(
            &s,
            "gateway_downstream_sent_bytes_total{listener=\"front\"}"
        ) > 0.0
    );
    assert_eq!(value(&s, "gateway_buffered_request_bytes"), 0.0);
    assert_eq!(
        value(&s, "gateway_buffered_request_limit_bytes"),
        (256 * 1024 * 1024) as f64
    );

    // Registry and uploads.
    let methods = gw.registry().snapshot().methods().count() as f64;
    assert_eq!(value(&s, "gateway_registry_methods"), methods);
    assert_eq!(value(&s, "gateway_registry_descriptor_sets"), 1.0);
    // The upload's pool, kept until 30 s unused; then rebuilt on demand.
    assert_eq!(value(&s, "gateway_registry_descriptor_pool_built"), 1.0);
    assert!(gw.registry().release_idle_pool(std::time::Duration::ZERO));
    let after = samples(&scrape(&gw).await);
    assert_eq!(value(&after, "gateway_registry_descriptor_pool_built"), 0.0);
    assert_eq!(
        value(&s, "gateway_registry_set_version{set=\"samples\"}"),
        1.0
    );
    assert_eq!(
        value(&s, "gateway_registry_uploads_total{result=\"accepted\"}"),
        1.0
    );
    assert_eq!(
        value(&s, "gateway_registry_uploads_total{result=\"refused\"}"),
        1.0
    );

    // Process and build.
    assert!(value(&s, "process_resident_memory_bytes") > 1e6);
    assert!(value(&s, "process_open_fds") > 3.0);
    assert!(value(&s, "process_cpu_seconds_total") > 0.0);
    assert!(value(&s, "process_start_time_seconds") > 1.7e9);
    assert_eq!(
        value(
            &s,
            &format!(
                "gateway_build_info{{version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            )
        ),
        1.0
    );

    // The channel gone, nothing is open on `front`.
    drop((echo, grpc, ch, stream));
    scrape_until(&gw, "front connections closed", |s| {
        s.get("gateway_downstream_connections_open{listener=\"front\"}") == Some(&0.0)
    })
    .await;

    // OpenMetrics when asked for, as Prometheus does.
    let req = http::Request::get("/metrics")
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )
        .body(body(""))
        .expect("req");
    let r = http_call(gw.admin_addr().expect("admin"), HttpVersion::H1, req).await;
    assert_eq!(
        r.header("content-type"),
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let text = r.text();
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(text.contains("# TYPE gateway_requests counter"), "{text}");
    assert!(text.contains("# UNIT gateway_request_duration_seconds seconds"));
    // Every family has HELP text.
    for l in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = l.split(' ').nth(2).expect("name");
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "{name} has no HELP"
        );
    }
}

#[tokio::test]
async fn ejection_shows_in_upstream_series() {
    let a = spawn_sample("e-a").await;
    let b = spawn_sample("e-b").await;
    let gw = spawn_gateway(&format!(
        "{}outlier_detection = {{ consecutive_failures = 3, base_ejection_ms = 60000, max_ejection_percent = 50 }}\n\
         [[routes]]\ncluster = \"backend\"\n",
        base_config(&[&a, &b])
    ))
    .await;
    gw.registry()
        .put("samples", sample_services::FILE_DESCRIPTOR_SET)
        .expect("register");
    let mut echo = EchoClient::new(channel(gw.first_addr()).await);
    // Six UNAVAILABLE answers, three per server: the first to reach three
    // is ejected, the other kept (at most 50 % ejected).
    for _ in 0..6 {
        let err = echo
            .unary(EchoRequest {
                status_code: Code::Unavailable as i32,
                ..Default::default()
            })
            .await
            .expect_err("unavailable");
        assert_eq!(err.code(), Code::Unavailable);
    }
    let unavailable = req_on(
        "gateway_requests_total",
        "route0",
        "backend",
        "sample.echo.v1.Echo",
        "Unary",
        "grpc",
        "UNAVAILABLE",
    );
    let s = scrape_until(&gw, "six UNAVAILABLE recorded", |s| {
        s.get(&unavailable) == Some(&6.0)
    })
    .await;
    let sum = |prefix: &str| -> f64 {
        s.iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v)
            .sum()
    };
    assert_eq!(
        sum("gateway_upstream_ejections_total{cluster=\"backend\""),
        1.0
    );
    assert_eq!(
        sum("gateway_upstream_requests_total{cluster=\"backend\""),
        6.0
    );
    // Failed attempts are transport failures; an UNAVAILABLE status is an
    // exchange that worked (outlier detection counts it, this does not).
    assert_eq!(
        sum("gateway_upstream_failures_total{cluster=\"backend\""),
        0.0
    );
    let state = |ep: &str, st: &str| {
        value(
            &s,
            &format!(
                "gateway_upstream_endpoint_state{{cluster=\"backend\",endpoint=\"{ep}\",state=\"{st}\"}}"
            ),
        )
    };
    let ejected = ["e-a", "e-b"]
        .into_iter()
        .filter(|ep| state(ep, "EJECTED") == 1.0)
        .collect::<Vec<_>>();
    assert_eq!(ejected.len(), 1, "{s:#?}");
    let kept = if ejected[0] == "e-a" { "e-b" } else { "e-a" };
    assert_eq!(state(kept, "UP"), 1.0);
    assert_eq!(state(ejected[0], "UP"), 0.0);
}

#[tokio::test]
async fn unknown_paths_add_no_label_values() {
    let s = spawn_sample("s0").await;
    let gw = spawn_gateway(&simple_config(&[&s], "")).await;
    gw.registry()
        .put("samples", sample_services::FILE_DESCRIPTOR_SET)
        .expect("register");
    let addr = gw.first_addr();
    let send = h2_sender(addr).await;
    // Path kinds: an unknown service, an unknown method of a registered
    // service (gRPC), and an unknown JSON path.
    let call = |i: u64| {
        let mut send = send.clone();
        async move {
            let r = match i % 3 {
                0 => http::Request::post(format!("http://{addr}/rnd{i}.Svc/M{i}"))
                    .header("content-type", "application/grpc")
                    .header("te", "trailers")
                    .body(body(&b"\0\0\0\0\0"[..])),
                1 => http::Request::post(format!("http://{addr}/sample.echo.v1.Echo/M{i}"))
                    .header("content-type", "application/grpc")
                    .header("te", "trailers")
                    .body(body(&b"\0\0\0\0\0"[..])),
                _ => http::Request::post(format!("http://{addr}/v{i}/x{i}"))
                    .header("content-type", "application/json")
                    .body(body("{}")),
            }
            .expect("req");
            send.ready().await.expect("ready");
            let resp = send.send_request(r).await.expect("response");
            use http_body_util::BodyExt;
            resp.into_body().collect().await.expect("body");
        }
    };
    // One of each kind first: the series they make are all there is.
    for i in 0..3 {
        call(i).await;
    }
    let base = scrape_until(&gw, "warm-up recorded", |s| {
        s.iter()
            .filter(|(k, _)| k.starts_with("gateway_requests_total{"))
            .map(|(_, v)| v)
            .sum::<f64>()
            == 3.0
    })
    .await;
    let series_before = gw.metrics().requests.series_count();
    assert_eq!(series_before, 3);
    futures_util::stream::iter(3..10_003)
        .map(call)
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
    let s = scrape_until(&gw, "10,000 calls recorded", |s| {
        s.iter()
            .filter(|(k, _)| k.starts_with("gateway_requests_total{"))
            .map(|(_, v)| v)
            .sum::<f64>()
            == 10_003.0
    })
    .await;
    assert_eq!(gw.metrics().requests.series_count(), series_before);
    let keys = |s: &BTreeMap<String, f64>| -> Vec<String> {
        s.keys()
            .filter(|k| k.starts_with("gateway_request"))
            .cloned()
            .collect()
    };
    assert_eq!(keys(&s), keys(&base), "no new series");
    let text = scrape(&gw).await;
    assert!(!text.contains("rnd"), "a random path became a label value");
    for (svc, method, code) in [
        ("unknown", "unknown", "UNIMPLEMENTED"),
        ("sample.echo.v1.Echo", "unknown", "UNIMPLEMENTED"),
    ] {
        let k = format!(
            "gateway_requests_total{{listener=\"front\",route=\"route0\",cluster=\"backend\",grpc_service=\"{svc}\",grpc_method=\"{method}\",protocol=\"grpc\",grpc_code=\"{code}\",http_status_class=\"2xx\"}}"
        );
        assert!(value(&s, &k) > 3000.0, "{k}");
    }
}

/// What a fake HTTP/2 server answers to every request's HEADERS.
#[derive(Clone, Copy)]
enum FakeAnswer {
    /// GOAWAY(last stream 0, NO_ERROR), then the connection closes: the
    /// stream was not processed.
    GoAway,
    /// RST_STREAM(REFUSED_STREAM) on that stream; the connection stays.
    Refuse,
}

/// A fake HTTP/2 server (preface, SETTINGS, PINGs) answering every
/// request with `answer`.
async fn spawn_fake_h2(answer: FakeAnswer) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind(loopback())
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(fake_h2_connection(tcp, answer));
        }
    });
    addr
}

async fn fake_h2_connection(
    mut tcp: tokio::net::TcpStream,
    answer: FakeAnswer,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut preface = [0u8; 24];
    tcp.read_exact(&mut preface).await?;
    // Our (empty) SETTINGS.
    tcp.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await?;
    loop {
        let mut head = [0u8; 9];
        tcp.read_exact(&mut head).await?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; len];
        tcp.read_exact(&mut payload).await?;
        match (head[3], head[4] & 1) {
            (4, 0) => tcp.write_all(&[0, 0, 0, 4, 1, 0, 0, 0, 0]).await?,
            (6, 0) => {
                let mut pong = vec![0, 0, 8, 6, 1, 0, 0, 0, 0];
                pong.extend_from_slice(&payload);
                tcp.write_all(&pong).await?;
            }
            (1, _) => match answer {
                FakeAnswer::GoAway => {
                    tcp.write_all(&[0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
                        .await?;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    return Ok(());
                }
                FakeAnswer::Refuse => {
                    let mut rst = vec![0, 0, 4, 3, 0];
                    rst.extend_from_slice(&head[5..9]);
                    rst.extend_from_slice(&[0, 0, 0, 7]);
                    tcp.write_all(&rst).await?;
                }
            },
            _ => {}
        }
    }
}

#[tokio::test]
async fn upstream_connects_retries_goaways_and_resets() {
    let goaway = spawn_fake_h2(FakeAnswer::GoAway).await;
    let refuse = spawn_fake_h2(FakeAnswer::Refuse).await;
    // A port nothing listens on.
    let down = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let cluster = |name: &str, addr: SocketAddr, extra: &str| {
        format!(
            "[[clusters]]\nname = \"{name}\"\nendpoints = [{{ name = \"{name}0\", address = \"{addr}\" }}]\n{extra}\n"
        )
    };
    let route = |name: &str| {
        format!("[[routes]]\ncluster = \"{name}\"\nmatch = {{ path = \"/t.T/{name}\" }}\n")
    };
    let mut toml = "[[listeners]]\nname = \"front\"\naddress = \"127.0.0.1:0\"\n".to_string();
    toml += &cluster("goaway", goaway, "");
    toml += &cluster("refuse", refuse, "");
    toml += &cluster(
        "nobudget",
        refuse,
        "retry = { budget_percent = 0, min_retry_concurrency = 0 }",
    );
    toml += &cluster("down", down, "");
    for name in ["goaway", "refuse", "nobudget", "down"] {
        toml += &route(name);
    }
    let gw = spawn_gateway(&toml).await;
    let addr = gw.first_addr();
    let send = h2_sender(addr).await;
    for name in ["goaway", "refuse", "nobudget", "down"] {
        let mut send = send.clone();
        let r = http::Request::post(format!("http://{addr}/t.T/{name}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(body(&b"\0\0\0\0\0"[..]))
            .expect("req");
        send.ready().await.expect("ready");
        let resp = within(10, name, send.send_request(r))
            .await
            .expect("response");
        use http_body_util::BodyExt;
        resp.into_body().collect().await.expect("body");
    }
    let s = scrape_until(&gw, "four calls recorded", |s| {
        s.iter()
            .filter(|(k, _)| k.starts_with("gateway_requests_total{"))
            .map(|(_, v)| v)
            .sum::<f64>()
            == 4.0
    })
    .await;
    let ep = |metric: &str, name: &str| {
        value(
            &s,
            &format!("{metric}{{cluster=\"{name}\",endpoint=\"{name}0\"}}"),
        )
    };
    let cl = |metric: &str, name: &str| value(&s, &format!("{metric}{{cluster=\"{name}\"}}"));
    // goaway: each attempt on a new connection meets a GOAWAY; retried
    // once (max_attempts = 2).
    // refuse: both attempts refused on one connection.
    // nobudget: refused, and the retry budget (0) says no.
    // down: the connect fails; no other endpoint to try.
    for (name, attempts, failures, goaways, resets, retries, exhausted, admitted) in [
        ("goaway", 2.0, 0.0, 2.0, 0.0, 1.0, 0.0, 2.0),
        ("refuse", 1.0, 0.0, 0.0, 2.0, 1.0, 0.0, 2.0),
        ("nobudget", 1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0),
        ("down", 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0),
    ] {
        let got = [
            ep("gateway_upstream_connect_attempts_total", name),
            ep("gateway_upstream_connect_failures_total", name),
            ep("gateway_upstream_goaways_received_total", name),
            ep("gateway_upstream_resets_received_total", name),
            cl("gateway_upstream_retries_total", name),
            cl("gateway_upstream_retry_budget_exhausted_total", name),
            cl("gateway_upstream_queue_wait_seconds_count", name),
        ];
        assert_eq!(
            got,
            [
                attempts, failures, goaways, resets, retries, exhausted, admitted
            ],
            "{name}: attempts, failures, goaways, resets, retries, exhausted, admitted"
        );
    }
}

#[tokio::test]
async fn reflection_syncs_are_counted_by_result() {
    let s = spawn_sample("s0").await;
    let down = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let gw = spawn_gateway(&format!(
        "[[listeners]]\nname = \"front\"\naddress = \"127.0.0.1:0\"\n\
         [[clusters]]\nname = \"backend\"\ndescriptors_from_reflection = true\n\
         endpoints = [{{ name = \"s0\", address = \"{}\" }}]\n\
         [[clusters]]\nname = \"gone\"\ndescriptors_from_reflection = true\n\
         endpoints = [{{ name = \"g0\", address = \"{down}\" }}]\n\
         [[routes]]\ncluster = \"backend\"\n",
        s.addr
    ))
    .await;
    let key = |cluster: &str, result: &str| {
        format!(
            "gateway_registry_reflection_syncs_total{{cluster=\"{cluster}\",result=\"{result}\"}}"
        )
    };
    let registered = key("backend", "registered");
    let failed = key("gone", "failed");
    let got = scrape_until(&gw, "first syncs counted", |m| {
        m.get(&registered) == Some(&1.0) && m.get(&failed).is_some_and(|v| *v >= 1.0)
    })
    .await;
    for result in ["unchanged", "refused", "failed"] {
        assert_eq!(value(&got, &key("backend", result)), 0.0, "{result}");
    }
    assert_eq!(value(&got, &key("gone", "registered")), 0.0);
}

/// Percent-encodes a PromQL query for a URL.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Runs a PromQL instant query; the `data.result` array.
async fn prom_query(prom: SocketAddr, q: &str) -> Vec<serde_json::Value> {
    let req = http::Request::get(format!("/api/v1/query?query={}", urlencode(q)))
        .body(body(""))
        .expect("req");
    let r = http_call(prom, HttpVersion::H1, req).await;
    assert_eq!(r.status, 200, "{q}: {}", r.text());
    r.json()["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Kills the Prometheus child (by its PID, through the handle) on drop.
struct Child(tokio::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

/// Every query of `examples/grafana-dashboard.json` parses and evaluates
/// in Prometheus (its variables replaced by match-all values), and the
/// traffic and latency panels have data.
async fn dashboard_queries_evaluate(prom: SocketAddr) {
    let dash: serde_json::Value =
        serde_json::from_str(&read(&repo_path("examples/grafana-dashboard.json")))
            .expect("dashboard JSON");
    let mut checked = 0;
    for panel in dash["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("expr");
            let q = expr
                .replace("$__rate_interval", "5s")
                .replace("$listener", ".*")
                .replace("$cluster", ".*")
                .replace("$job", ".*");
            let req = http::Request::get(format!("/api/v1/query?query={}", urlencode(&q)))
                .body(body(""))
                .expect("req");
            let r = http_call(prom, HttpVersion::H1, req).await;
            assert_eq!(r.status, 200, "{q}: {}", r.text());
            assert_eq!(r.json()["status"], "success", "{q}");
            let title = panel["title"].as_str().unwrap_or_default();
            if title.starts_with("Traffic") || title.starts_with("Latency") {
                let data = r.json()["data"]["result"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                assert!(!data.is_empty(), "{title}: no data for {q}");
            }
            checked += 1;
        }
    }
    assert!(checked >= 10, "{checked} queries");
}

#[tokio::test]
#[ignore = "needs the prometheus binary (scripts/test.sh installs it)"]
async fn real_prometheus_scrapes_the_gateway() {
    let s = spawn_sample("s0").await;
    let gw = spawn_gateway(&simple_config(&[&s], "")).await;
    gw.registry()
        .put("samples", sample_services::FILE_DESCRIPTOR_SET)
        .expect("register");
    let admin = gw.admin_addr().expect("admin");
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: gateway\n    static_configs:\n      - targets: ['{admin}']\n"
        ),
    )
    .expect("config");
    // A free port for Prometheus' web listener.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let prom: SocketAddr = ([127, 0, 0, 1], port).into();
    let child = tokio::process::Command::new("prometheus")
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={prom}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("run prometheus (apt-get install prometheus)");
    let _child = Child(child);

    // Steady traffic while Prometheus scrapes every second.
    let mut echo = EchoClient::new(channel(gw.first_addr()).await);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let rate_q = "sum(rate(gateway_requests_total{grpc_method=\"Unary\",grpc_code=\"OK\"}[5s]))";
    let quantile_q = "histogram_quantile(0.9, sum by (le) (rate(gateway_request_duration_seconds_bucket{grpc_service=\"sample.echo.v1.Echo\",grpc_method=\"Unary\"}[5s])))";
    let mut ticks = 0u64;
    loop {
        for _ in 0..20 {
            echo.unary(EchoRequest {
                message: "p".into(),
                ..Default::default()
            })
            .await
            .expect("unary");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        ticks += 1;
        if ticks.is_multiple_of(10) {
            // Prometheus answers only once it is up; until then, wait.
            let up = tokio::net::TcpStream::connect(prom).await.is_ok();
            if up {
                let rate = prom_query(prom, rate_q).await;
                let quantile = prom_query(prom, quantile_q).await;
                let num = |v: &[serde_json::Value]| {
                    v.first()
                        .and_then(|r| r["value"][1].as_str())
                        .and_then(|x| x.parse::<f64>().ok())
                };
                if let (Some(r), Some(q)) = (num(&rate), num(&quantile))
                    && r > 0.0
                    && q.is_finite()
                    && q > 0.0
                {
                    // About 200 calls a second; p90 under the top bucket.
                    assert!(r > 10.0, "rate {r}");
                    assert!(q <= 300.0, "p90 {q}");
                    let up = prom_query(prom, "up{job=\"gateway\"}").await;
                    assert_eq!(up[0]["value"][1], "1", "{up:?}");
                    dashboard_queries_evaluate(prom).await;
                    return;
                }
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "Prometheus never computed rate() and histogram_quantile from the gateway"
        );
    }
}
