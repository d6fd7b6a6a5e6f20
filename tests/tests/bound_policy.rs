//! Policy applies to every request: methods of a descriptor set bound to a
//! cluster (an upload's `?cluster=`, or a reflection-fed set) still pass the
//! routes' deny rules and timeouts, and a binding that would take a method
//! the routes send to another cluster is refused.

use std::time::{Duration, Instant};

use sample_services::echo::{EchoRequest, echo_client::EchoClient};
use tests::*;
use tonic::Request;

const TOKEN: &str = "s3cret-token";

fn put_set(cluster: &str) -> http::Request<ReqBody> {
    http::Request::put(format!("/v1/descriptor-sets/samples?cluster={cluster}"))
        .header("content-type", "application/octet-stream")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(body(sample_services::FILE_DESCRIPTOR_SET))
        .expect("request")
}

/// Clusters `backend` (s0) and `other` (s1); a catch-all route to
/// `backend` with a deny rule and a timeout, plus `routes`.
fn config(s0: &SampleServer, s1: &SampleServer, routes: &str) -> String {
    format!(
        "[[listeners]]\nname = \"front\"\naddress = \"127.0.0.1:0\"\n\
         [[clusters]]\nname = \"backend\"\nendpoints = [{{ name = \"s0\", address = \"{}\" }}]\n\
         [[clusters]]\nname = \"other\"\nendpoints = [{{ name = \"s1\", address = \"{}\" }}]\n\
         {routes}\n\
         [[routes]]\nname = \"all\"\ncluster = \"backend\"\ntimeout_ms = 300\n\
         deny_unless = [{{ name = \"x-key\", exact = \"k\" }}]\n\
         [admin]\naddress = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n",
        s0.addr, s1.addr
    )
}

fn with_key<T>(msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("x-key", "k".parse().expect("value"));
    r
}

#[tokio::test]
async fn bound_methods_obey_the_routes_deny_rules_and_timeouts() {
    let s0 = spawn_sample("s0").await;
    let s1 = spawn_sample("s1").await;
    let gw = spawn_gateway(&config(&s0, &s1, "")).await;
    let admin = gw.admin_addr().expect("admin");
    let r = http_call(admin, HttpVersion::H1, put_set("other")).await;
    assert_eq!(r.status, 201, "{}", r.text());

    let mut client = EchoClient::new(channel(gw.first_addr()).await);
    // Denied without the header, as any call through the catch-all route.
    let e = client
        .unary(EchoRequest::default())
        .await
        .expect_err("denied");
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    let r = http_call(
        gw.first_addr(),
        HttpVersion::H1,
        json_request("POST", "/sample.echo.v1.Echo/Unary", "{}"),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());

    // Allowed with it, and sent to the bound cluster.
    let reply = client
        .unary(with_key(EchoRequest::default()))
        .await
        .expect("bound call");
    assert_eq!(reply.into_inner().server_id, "s1");

    // The route's timeout applies to the bound method.
    let t = Instant::now();
    let e = client
        .slow(with_key(EchoRequest {
            interval_ms: 5_000,
            ..Default::default()
        }))
        .await
        .expect_err("deadline");
    assert_eq!(e.code(), tonic::Code::DeadlineExceeded, "{e:?}");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
}

#[tokio::test]
async fn a_binding_that_takes_a_routed_method_is_refused() {
    let s0 = spawn_sample("s0").await;
    let s1 = spawn_sample("s1").await;
    let routes = "[[routes]]\nname = \"echo\"\ncluster = \"backend\"\n\
                  match = { service = \"sample.echo.v1.Echo\" }\n";
    let gw = spawn_gateway(&config(&s0, &s1, routes)).await;
    let admin = gw.admin_addr().expect("admin");
    let r = http_call(admin, HttpVersion::H1, put_set("other")).await;
    assert_eq!(r.status, 409, "{}", r.text());
    let msg = r.json()["error"]["message"]
        .as_str()
        .expect("message")
        .to_string();
    assert!(
        msg.contains("/sample.echo.v1.Echo/") && msg.contains("route `echo`"),
        "{msg}"
    );
    // Nothing registered.
    assert!(
        gw.registry()
            .snapshot()
            .method("/sample.echo.v1.Echo/Unary")
            .is_none()
    );
    // Bound to the cluster the route names: accepted.
    let r = http_call(admin, HttpVersion::H1, put_set("backend")).await;
    assert_eq!(r.status, 201, "{}", r.text());
}

#[tokio::test]
async fn a_reflection_fed_set_cannot_claim_routed_methods() {
    let s0 = spawn_sample("s0").await;
    let s1 = spawn_sample("s1").await;
    // `other` fetches its servers' descriptors by reflection; the Echo
    // service is routed to `backend`, so the reflected set is refused.
    let toml = format!(
        "[[listeners]]\nname = \"front\"\naddress = \"127.0.0.1:0\"\n\
         [[clusters]]\nname = \"backend\"\nendpoints = [{{ name = \"s0\", address = \"{}\" }}]\n\
         [[clusters]]\nname = \"other\"\ndescriptors_from_reflection = true\nreflection_interval_ms = 500\n\
         endpoints = [{{ name = \"s1\", address = \"{}\" }}]\n\
         [[routes]]\nname = \"echo\"\ncluster = \"backend\"\nmatch = {{ service = \"sample.echo.v1.Echo\" }}\n",
        s0.addr, s1.addr
    );
    let gw = spawn_gateway(&toml).await;
    let log = wait_for_log(&["Reflected descriptors refused", "route `echo`"]).await;
    assert!(log.is_some(), "{}", logs());
    assert!(gw.registry().snapshot().set("other").is_none());
    let mut client = EchoClient::new(channel(gw.first_addr()).await);
    let reply = client
        .unary(EchoRequest::default())
        .await
        .expect("routed call");
    assert_eq!(reply.into_inner().server_id, "s0");
}
