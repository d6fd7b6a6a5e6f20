//! Route matching: a request head (path, headers) against a compiled
//! [`RouteTable`], as `gateway::proxy::select_route` does it (first matching
//! route, then its `deny_unless` check), for
//!
//! - `small`: the HAProxy demo's three routes (two exact paths, then the
//!   `content-type: application/grpc*` default), and
//! - `large`: 200 routes mixing exact paths, path prefixes, service, method
//!   and header matchers, with the same gRPC default last.
//!
//! Each case is checked once against the route it must reach before it is
//! measured. Run with `cargo bench -p balancer --bench route`.

use std::hint::black_box;

use balancer::{
    ClusterName, RouteTable,
    config::{HeaderMatchConfig, RouteConfig, RouteMatchConfig},
};
use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue};

/// Routes in the large table, the default included.
const LARGE_ROUTES: usize = 200;

fn header(
    name: &str,
    exact: Option<&str>,
    prefix: Option<&str>,
    present: Option<bool>,
) -> HeaderMatchConfig {
    HeaderMatchConfig {
        name: name.to_owned(),
        exact: exact.map(str::to_owned),
        prefix: prefix.map(str::to_owned),
        present,
    }
}

fn route(name: &str, cluster: &str, matcher: RouteMatchConfig) -> RouteConfig {
    RouteConfig {
        name: Some(name.to_owned()),
        matcher,
        cluster: ClusterName::new(cluster),
        deny_unless: Vec::new(),
        timeout_ms: None,
        idle_timeout_ms: None,
    }
}

/// The HAProxy demo's default: any gRPC request (`req.hdr(content-type) -m
/// beg application/grpc`).
fn grpc_default() -> RouteConfig {
    route(
        "is_grpc",
        "be_default",
        RouteMatchConfig {
            headers: vec![header("content-type", None, Some("application/grpc"), None)],
            ..Default::default()
        },
    )
}

/// `examples/haproxy-demo.toml`: two exact paths, then the gRPC default.
fn small_table() -> RouteTable {
    let routes = [
        route(
            "is_codename_path",
            "be_codenameservers",
            RouteMatchConfig {
                path: Some("/CodenameCreator/KeepGettingCodenames".to_owned()),
                ..Default::default()
            },
        ),
        route(
            "is_otherservice_path",
            "be_otherservers",
            RouteMatchConfig {
                path: Some("/AnotherService/SomeFunction".to_owned()),
                ..Default::default()
            },
        ),
        grpc_default(),
    ];
    RouteTable::compile(&routes, |_| true).expect("bench routes are valid")
}

/// The gRPC service of route `i` in the large table.
fn service(i: usize) -> String {
    format!("acme.svc{i:03}.v1.Service{i:03}")
}

/// 199 routes, one per service, cycling through five kinds of matcher, then
/// the gRPC default.
fn large_table() -> RouteTable {
    let mut routes: Vec<RouteConfig> = (0..LARGE_ROUTES - 1)
        .map(|i| {
            let svc = service(i);
            let matcher = match i % 5 {
                // One method by exact path.
                0 => RouteMatchConfig {
                    path: Some(format!("/{svc}/Get")),
                    ..Default::default()
                },
                // A whole service by prefix, gRPC only.
                1 => RouteMatchConfig {
                    path_prefix: Some(format!("/{svc}/")),
                    headers: vec![header("content-type", None, Some("application/grpc"), None)],
                    ..Default::default()
                },
                // One method by service and method name.
                2 => RouteMatchConfig {
                    service: Some(svc),
                    method: Some("List".to_owned()),
                    ..Default::default()
                },
                // One tenant of a service.
                3 => RouteMatchConfig {
                    service: Some(svc),
                    headers: vec![header("x-tenant", Some(&format!("tenant-{i}")), None, None)],
                    ..Default::default()
                },
                // Canary traffic of a package.
                _ => RouteMatchConfig {
                    path_prefix: Some(format!("/acme.svc{i:03}.")),
                    headers: vec![header("x-canary", None, None, Some(true))],
                    ..Default::default()
                },
            };
            route(&format!("r{i}"), &format!("be_{i}"), matcher)
        })
        .collect();
    routes.push(grpc_default());
    RouteTable::compile(&routes, |_| true).expect("bench routes are valid")
}

/// The head of a tonic unary call, plus `extra` headers.
fn grpc_headers(content_type: &'static str, extra: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("content-type", HeaderValue::from_static(content_type));
    h.insert("te", HeaderValue::from_static("trailers"));
    h.insert("user-agent", HeaderValue::from_static("tonic/0.14.0"));
    h.insert("grpc-timeout", HeaderValue::from_static("5000m"));
    h.insert(
        "grpc-accept-encoding",
        HeaderValue::from_static("identity, deflate, gzip"),
    );
    h.insert("mysecretpassphrase", HeaderValue::from_static("abc123"));
    for (name, value) in extra {
        h.insert(
            *name,
            HeaderValue::from_str(value).expect("bench header value"),
        );
    }
    h
}

/// What `gateway::proxy::select_route` does with the table (less the
/// listener's deny rules): the first matching route, unless its
/// `deny_unless` rejects the request.
fn select<'a>(table: &'a RouteTable, path: &str, headers: &HeaderMap) -> Option<&'a ClusterName> {
    let route = table.route(path, headers)?;
    if route.denied_by(headers).is_some() {
        return None;
    }
    Some(&route.cluster)
}

/// One measured request, and the route it must reach (`None`: no route).
struct Case<'a> {
    name: &'static str,
    path: String,
    headers: HeaderMap,
    want: Option<&'a str>,
}

fn bench_table(c: &mut Criterion, group: &str, table: &RouteTable, cases: &[Case]) {
    let mut group = c.benchmark_group(group);
    for case in cases {
        let got = table.route(&case.path, &case.headers).map(|r| &*r.name);
        assert_eq!(got, case.want, "case {}", case.name);
        group.bench_function(case.name, |b| {
            b.iter(|| select(table, black_box(&case.path), black_box(&case.headers)));
        });
    }
    group.finish();
}

fn route_match(c: &mut Criterion) {
    let grpc = "application/grpc";
    let small = small_table();
    bench_table(
        c,
        "route/small_3",
        &small,
        &[
            Case {
                name: "first",
                path: "/CodenameCreator/KeepGettingCodenames".to_owned(),
                headers: grpc_headers(grpc, &[]),
                want: Some("is_codename_path"),
            },
            Case {
                name: "last_specific",
                path: "/AnotherService/SomeFunction".to_owned(),
                headers: grpc_headers(grpc, &[]),
                want: Some("is_otherservice_path"),
            },
            Case {
                name: "default",
                path: "/sample.echo.v1.Echo/Unary".to_owned(),
                headers: grpc_headers("application/grpc+proto", &[]),
                want: Some("is_grpc"),
            },
            Case {
                name: "no_match",
                path: "/sample.echo.v1.Echo/Unary".to_owned(),
                headers: grpc_headers("application/json", &[]),
                want: None,
            },
        ],
    );

    let large = large_table();
    let near_end = LARGE_ROUTES - 2;
    assert_eq!(
        near_end % 5,
        3,
        "the near-end route matches service + header"
    );
    let near_end_name = format!("r{near_end}");
    bench_table(
        c,
        &format!("route/large_{LARGE_ROUTES}"),
        &large,
        &[
            Case {
                name: "first",
                path: format!("/{}/Get", service(0)),
                headers: grpc_headers(grpc, &[]),
                want: Some("r0"),
            },
            Case {
                name: "near_end",
                path: format!("/{}/Get", service(near_end)),
                headers: grpc_headers(grpc, &[("x-tenant", &format!("tenant-{near_end}"))]),
                want: Some(&near_end_name),
            },
            Case {
                name: "default",
                path: "/sample.echo.v1.Echo/Unary".to_owned(),
                headers: grpc_headers(grpc, &[("x-tenant", "tenant-3")]),
                want: Some("is_grpc"),
            },
            Case {
                name: "no_match",
                path: "/v1/shelves/1/books".to_owned(),
                headers: grpc_headers("application/json", &[]),
                want: None,
            },
        ],
    );
}

criterion_group!(benches, route_match);
criterion_main!(benches);
