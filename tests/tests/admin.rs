//! The admin API: uploading descriptor sets (binary and .proto sources),
//! hot swap under load, validation leaving the registry unchanged, auth,
//! persistence across restarts, and the CLI.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use gateway::Gateway;
use prost::Message;
use serde_json::{Value, json};
use tests::*;

const TOKEN: &str = "s3cret-token";

/// A gateway with one cluster `backend` and no routes: only uploads bound
/// to the cluster make methods reachable.
fn unrouted(servers: &[&SampleServer], extra: &str) -> String {
    format!(
        "{extra}\n{}\n[admin]\naddress = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n",
        base_config(servers)
    )
}

fn admin(gw: &Gateway) -> std::net::SocketAddr {
    gw.admin_addr().expect("admin enabled")
}

fn put(
    path: &str,
    ct: &str,
    body_bytes: impl Into<bytes::Bytes>,
    token: Option<&str>,
) -> http::Request<ReqBody> {
    let mut b = http::Request::put(path).header("content-type", ct);
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    b.body(body(body_bytes)).expect("request")
}

/// `GET /v1/shelves/{n}` over HTTP/1.1 (the LibraryService REST route).
async fn get_shelf(front: std::net::SocketAddr, n: u32) -> HttpResponse {
    http_call(
        front,
        HttpVersion::H1,
        http::Request::get(format!("/v1/shelves/{n}"))
            .body(body(""))
            .expect("req"),
    )
    .await
}

async fn list(gw: &Gateway) -> Value {
    let r = http_call(
        admin(gw),
        HttpVersion::H1,
        http::Request::get("/v1/descriptor-sets")
            .body(body(""))
            .expect("req"),
    )
    .await;
    assert_eq!(r.status, 200);
    r.json()
}

fn library_sources() -> Value {
    let library = std::fs::read_to_string(repo_path("sample-services/proto/library.proto"))
        .expect("library.proto");
    json!({ "files": { "library.proto": library } })
}

#[tokio::test]
async fn upload_then_call_by_json_and_grpc_without_restart() {
    let s = spawn_sample("s0").await;
    let gw = spawn_gateway(&unrouted(&[&s], "")).await;
    // Before: unknown to the gateway.
    let r = get_shelf(gw.first_addr(), 1).await;
    assert_eq!(r.status, 404);

    let r = http_call(
        admin(&gw),
        HttpVersion::H1,
        put(
            "/v1/descriptor-sets/samples?cluster=backend",
            "application/octet-stream",
            sample_services::FILE_DESCRIPTOR_SET,
            Some(TOKEN),
        ),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let v = r.json();
    assert_eq!(v["name"], "samples");
    assert_eq!(v["version"], 1);
    assert_eq!(v["cluster"], "backend");
    let services: Vec<&str> = v["services"]
        .as_array()
        .expect("services")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        services.contains(&"sample.library.v1.LibraryService")
            && services.contains(&"CodenameCreator"),
        "{v}"
    );
    assert!(
        v["http_rules"]
            .as_array()
            .expect("rules")
            .iter()
            .any(|r| r == "GET /v1/{name=shelves/*}"),
        "{v}"
    );

    // JSON and gRPC at once, right away.
    let json_call = get_shelf(gw.first_addr(), 1);
    let mut grpc = sample_services::codename::codename_creator_client::CodenameCreatorClient::new(
        channel(gw.first_addr()).await,
    );
    let grpc_call = grpc.get_codename(sample_services::codename::NameRequest::default());
    let (j, g) = tokio::join!(json_call, grpc_call);
    assert_eq!(
        (j.status.as_u16(), j.json()["name"].clone()),
        (200, json!("shelves/1")),
        "{}",
        j.text()
    );
    assert!(g.is_ok(), "{g:?}");

    // Detail, binary download, services, clusters, health.
    let r = http_call(
        admin(&gw),
        HttpVersion::H1,
        http::Request::get("/v1/descriptor-sets/samples?format=binary")
            .body(body(""))
            .expect("req"),
    )
    .await;
    assert_eq!(r.body.as_ref(), sample_services::FILE_DESCRIPTOR_SET);
    let r = http_call(
        admin(&gw),
        HttpVersion::H2,
        http::Request::get("/v1/services")
            .body(body(""))
            .expect("req"),
    )
    .await;
    let services = r.json()["services"].clone();
    let lib = services
        .as_array()
        .expect("list")
        .iter()
        .find(|s| s["name"] == "sample.library.v1.LibraryService")
        .expect("library");
    let shelf_method = lib["methods"]
        .as_array()
        .expect("methods")
        .iter()
        .find(|m| m["name"] == "GetShelf")
        .expect("GetShelf");
    assert_eq!(
        shelf_method["grpc_path"],
        "/sample.library.v1.LibraryService/GetShelf"
    );
    assert_eq!(
        shelf_method["json_path"],
        "POST /sample.library.v1.LibraryService/GetShelf"
    );
    assert_eq!(shelf_method["cluster"], "backend");
    assert!(
        shelf_method["http_rules"].as_array().expect("rules").len() == 2,
        "{shelf_method}"
    );
    let r = http_call(
        admin(&gw),
        HttpVersion::H1,
        http::Request::get("/v1/clusters")
            .body(body(""))
            .expect("req"),
    )
    .await;
    assert_eq!(
        r.json()["clusters"][0]["endpoints"][0]["state"],
        "UP",
        "{}",
        r.text()
    );
    assert!(
        r.json()["clusters"][0]["endpoints"][0]["total_requests"]
            .as_u64()
            .expect("total")
            >= 2
    );
    let r = http_call(
        admin(&gw),
        HttpVersion::H1,
        http::Request::get("/healthz").body(body("")).expect("req"),
    )
    .await;
    assert_eq!(r.status, 200);

    // Replace: 200 and version 2; delete: 204 and gone.
    let r = http_call(
        admin(&gw),
        HttpVersion::H1,
        put(
            "/v1/descriptor-sets/samples?cluster=backend",
            "application/x-protobuf",
            sample_services::FILE_DESCRIPTOR_SET,
            Some(TOKEN),
        ),
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), r.json()["version"].clone()),
        (200, json!(2))
    );
    let del = http::Request::delete("/v1/descriptor-sets/samples")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(body(""))
        .expect("req");
    assert_eq!(
        http_call(admin(&gw), HttpVersion::H1, del).await.status,
        204
    );
    let r = get_shelf(gw.first_addr(), 1).await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn upload_proto_sources_with_imports_and_well_known_types() {
    let s = spawn_sample("s0").await;
    let gw = spawn_gateway(&unrouted(&[&s], "")).await;
    // library.proto imports google/api/annotations.proto and several
    // google/protobuf well-known types; none are uploaded.
    let r = http_call(
        admin(&gw),
        HttpVersion::H1,
        put(
            "/v1/descriptor-sets/library?cluster=backend",
            "application/json",
            library_sources().to_string(),
            Some(TOKEN),
        ),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = http_call(
        gw.first_addr(),
        HttpVersion::H1,
        json_request(
            "POST",
            "/v1/types:echo",
            r#"{"ts":"2020-01-01T00:00:00Z","dur":"1s"}"#,
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["ts"], "2020-01-01T00:00:00Z");

    // Several files importing each other, as multipart/form-data.
    let types = "syntax = \"proto3\";\npackage shop.v1;\nimport \"google/protobuf/timestamp.proto\";\nmessage Order { string id = 1; google.protobuf.Timestamp at = 2; }\n";
    let svc = "syntax = \"proto3\";\npackage shop.v1;\nimport \"shop/v1/types.proto\";\nimport \"google/api/annotations.proto\";\n\
               service Shop { rpc GetOrder(Order) returns (Order) { option (google.api.http) = { get: \"/v1/orders/{id}\" }; } }\n";
    let boundary = "XyZboundary";
    let mut mp = String::new();
    for (path, src) in [("shop/v1/types.proto", types), ("shop/v1/shop.proto", svc)] {
        mp.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{path}\"\r\nContent-Type: text/plain\r\n\r\n{src}\r\n"
        ));
    }
    mp.push_str(&format!("--{boundary}--\r\n"));
    let r = http_call(
        admin(&gw),
        HttpVersion::H1,
        put(
            "/v1/descriptor-sets/shop",
            &format!("multipart/form-data; boundary={boundary}"),
            mp,
            Some(TOKEN),
        ),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["http_rules"], json!(["GET /v1/orders/{id}"]));

    // A compile error names file, line and column.
    let bad = json!({ "files": { "bad/b.proto": "syntax = \"proto3\";\nmessage B {\n  Missing m = 1;\n}\n" } });
    let r = http_call(
        admin(&gw),
        HttpVersion::H1,
        put(
            "/v1/descriptor-sets/bad",
            "application/json",
            bad.to_string(),
            Some(TOKEN),
        ),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let msg = r.json()["error"]["message"]
        .as_str()
        .expect("message")
        .to_string();
    assert!(msg.contains("bad/b.proto:3:3"), "{msg}");
}

#[tokio::test]
async fn bad_uploads_are_refused_and_change_nothing() {
    let s = spawn_sample("s0").await;
    let gw = spawn_gateway(&unrouted(&[&s], "")).await;
    let r = http_call(
        admin(&gw),
        HttpVersion::H1,
        put(
            "/v1/descriptor-sets/samples",
            "application/octet-stream",
            sample_services::FILE_DESCRIPTOR_SET,
            Some(TOKEN),
        ),
    )
    .await;
    assert_eq!(r.status, 201);
    let before = list(&gw).await;

    // A set whose import is missing.
    let a = "syntax = \"proto3\";\npackage a;\nimport \"b.proto\";\nmessage A { b.B b = 1; }\n";
    let b = "syntax = \"proto3\";\npackage b;\nmessage B {}\n";
    let compiled = descriptors::compile::compile_protos(&[
        descriptors::compile::SourceFile {
            path: "a.proto".into(),
            source: a.into(),
        },
        descriptors::compile::SourceFile {
            path: "b.proto".into(),
            source: b.into(),
        },
    ])
    .expect("compiles");
    let mut set = prost_types::FileDescriptorSet::decode(compiled.as_slice()).expect("decode");
    set.file.retain(|f| f.name() == "a.proto");
    let missing_dep = set.encode_to_vec();

    let conflict = json!({ "files": { "dup.proto": "syntax = \"proto3\";\npackage sample.library.v1;\nservice LibraryService { }\n" } });
    let collision = json!({ "files": { "other.proto":
        "syntax = \"proto3\";\npackage other;\nimport \"google/api/annotations.proto\";\nmessage R { string name = 1; }\n\
         service Other { rpc Get(R) returns (R) { option (google.api.http) = { get: \"/v1/{name=shelves/*}\" }; } }\n" } });
    let cases: Vec<(&str, http::Request<ReqBody>, u16, &str)> = vec![
        (
            "undecodable",
            put(
                "/v1/descriptor-sets/x",
                "application/octet-stream",
                &b"\xff\xff\xff not protobuf"[..],
                Some(TOKEN),
            ),
            400,
            "not an encoded FileDescriptorSet",
        ),
        (
            "missing dependency",
            put(
                "/v1/descriptor-sets/x",
                "application/octet-stream",
                missing_dep,
                Some(TOKEN),
            ),
            400,
            "b.proto",
        ),
        (
            "name owned by another set",
            put(
                "/v1/descriptor-sets/x",
                "application/json",
                conflict.to_string(),
                Some(TOKEN),
            ),
            409,
            "samples",
        ),
        (
            "REST route collision",
            put(
                "/v1/descriptor-sets/x",
                "application/json",
                collision.to_string(),
                Some(TOKEN),
            ),
            409,
            "/v1/{name=shelves/*}",
        ),
        (
            "unknown cluster",
            put(
                "/v1/descriptor-sets/x?cluster=ghost",
                "application/octet-stream",
                sample_services::FILE_DESCRIPTOR_SET,
                Some(TOKEN),
            ),
            400,
            "ghost",
        ),
        (
            "content type",
            put("/v1/descriptor-sets/x", "text/plain", "hi", Some(TOKEN)),
            415,
            "content-type",
        ),
        (
            "bad name",
            put(
                "/v1/descriptor-sets/..%2Fetc",
                "application/octet-stream",
                sample_services::FILE_DESCRIPTOR_SET,
                Some(TOKEN),
            ),
            400,
            "invalid set name",
        ),
        (
            "no token",
            put(
                "/v1/descriptor-sets/x",
                "application/octet-stream",
                sample_services::FILE_DESCRIPTOR_SET,
                None,
            ),
            401,
            "Authorization",
        ),
        (
            "wrong token",
            put(
                "/v1/descriptor-sets/x",
                "application/octet-stream",
                sample_services::FILE_DESCRIPTOR_SET,
                Some("nope"),
            ),
            401,
            "invalid admin token",
        ),
    ];
    for (what, req, status, needle) in cases {
        let r = http_call(admin(&gw), HttpVersion::H1, req).await;
        assert_eq!(r.status.as_u16(), status, "{what}: {}", r.text());
        let msg = r.json()["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            msg.contains(needle),
            "{what}: {msg:?} should mention {needle:?}"
        );
        assert_eq!(list(&gw).await, before, "{what}: registry changed");
    }
    // A replace that fails validation leaves the old set in place.
    let r = http_call(
        admin(&gw),
        HttpVersion::H1,
        put(
            "/v1/descriptor-sets/samples",
            "application/octet-stream",
            &b"\x0a\x03bad"[..],
            Some(TOKEN),
        ),
    )
    .await;
    assert!(r.status.is_client_error(), "{}", r.text());
    assert_eq!(list(&gw).await, before);
    // Delete without a token: refused, still there.
    let del = http::Request::delete("/v1/descriptor-sets/samples")
        .body(body(""))
        .expect("req");
    assert_eq!(
        http_call(admin(&gw), HttpVersion::H1, del).await.status,
        401
    );
    assert_eq!(list(&gw).await, before);
    let del = http::Request::delete("/v1/descriptor-sets/nope")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(body(""))
        .expect("req");
    assert_eq!(
        http_call(admin(&gw), HttpVersion::H1, del).await.status,
        404
    );
}

#[tokio::test]
async fn replacing_a_set_under_load_fails_no_call() {
    let s = spawn_sample("s0").await;
    let gw = spawn_gateway(&unrouted(&[&s], "")).await;
    let upload = |gw_admin| async move {
        let r = http_call(
            gw_admin,
            HttpVersion::H1,
            put(
                "/v1/descriptor-sets/samples?cluster=backend",
                "application/octet-stream",
                sample_services::FILE_DESCRIPTOR_SET,
                Some(TOKEN),
            ),
        )
        .await;
        assert!(r.status.is_success(), "{}", r.text());
    };
    upload(admin(&gw)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    // A steady stream of unary JSON calls.
    let front = gw.first_addr();
    let unary = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let r = get_shelf(front, 1).await;
                if r.status == 200 {
                    ok.fetch_add(1, Ordering::Relaxed)
                } else {
                    failed.fetch_add(1, Ordering::Relaxed)
                };
            }
        })
    };
    // A bidi stream over gRPC, open across the swaps.
    let mut chat = sample_services::library::library_service_client::LibraryServiceClient::new(
        channel(front).await,
    );
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut replies = chat
        .chat(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("chat")
        .into_inner();
    for i in 0..10 {
        upload(admin(&gw)).await;
        tx.send(sample_services::library::Book {
            title: format!("{i}"),
            ..Default::default()
        })
        .await
        .expect("send");
        let reply = within(5, "chat reply", replies.message())
            .await
            .expect("reply ok")
            .expect("reply");
        assert_eq!(reply.title, format!("echo: {i}"));
        // At least two more unary calls after each swap, however fast the
        // swaps go.
        let done = (i + 1) * 2;
        within(5, "unary calls after a swap", async {
            while ok.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) < done {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await;
    }
    drop(tx);
    stop.store(true, Ordering::Relaxed);
    unary.await.expect("join");
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "failed calls during swaps ({} ok)",
        ok.load(Ordering::Relaxed)
    );
    assert!(ok.load(Ordering::Relaxed) > 10);
    assert_eq!(list(&gw).await["descriptor_sets"][0]["version"], 11);
}

#[tokio::test]
async fn uploads_persist_across_restart_and_corrupt_files_are_skipped() {
    let s = spawn_sample("s0").await;
    let dir = tempfile::tempdir().expect("tmp");
    let extra = format!("[registry]\ndata_dir = \"{}\"\n", dir.path().display());
    let gw = spawn_gateway(&unrouted(&[&s], &extra)).await;
    let r = http_call(
        admin(&gw),
        HttpVersion::H1,
        put(
            "/v1/descriptor-sets/samples?cluster=backend",
            "application/octet-stream",
            sample_services::FILE_DESCRIPTOR_SET,
            Some(TOKEN),
        ),
    )
    .await;
    assert_eq!(r.status, 201);
    let r = http_call(
        admin(&gw),
        HttpVersion::H1,
        put(
            "/v1/descriptor-sets/library2",
            "application/json",
            json!({"files": {"x/y.proto": "syntax = \"proto3\";\npackage x.y;\nmessage M {}\n"}})
                .to_string(),
            Some(TOKEN),
        ),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let del = http::Request::delete("/v1/descriptor-sets/library2")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(body(""))
        .expect("req");
    assert_eq!(
        http_call(admin(&gw), HttpVersion::H1, del).await.status,
        204
    );
    gw.shutdown().await;

    // A corrupt file beside the good one.
    let corrupt = dir.path().join("descriptor-sets").join("corrupt.dset");
    std::fs::write(&corrupt, b"{\"cluster\":null}\n\xff\xff garbage").expect("write");
    let gw = spawn_gateway(&unrouted(&[&s], &extra)).await;
    let r = get_shelf(gw.first_addr(), 3).await;
    assert_eq!(
        (r.status.as_u16(), r.json()["name"].clone()),
        (200, json!("shelves/3")),
        "{}",
        r.text()
    );
    let sets = list(&gw).await;
    let names: Vec<&str> = sets["descriptor_sets"]
        .as_array()
        .expect("sets")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["samples"],
        "deleted set stays deleted; corrupt one skipped"
    );
    assert_eq!(sets["descriptor_sets"][0]["cluster"], "backend");
    assert!(
        wait_for_log(&["corrupt.dset", "Skipping"]).await.is_some(),
        "{}",
        logs()
    );
    assert!(corrupt.exists(), "never deleted");
}

#[tokio::test]
async fn admin_refuses_non_loopback_without_token() {
    let toml = "[[listeners]]\nname = \"a\"\naddress = \"127.0.0.1:0\"\n[admin]\naddress = \"0.0.0.0:0\"\n";
    let cfg = gateway::config::GatewayConfig::from_toml(toml).expect("parses");
    let err = match Gateway::start(cfg).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("started without a token on 0.0.0.0"),
    };
    assert!(
        err.contains("admin.address") && err.contains("GATEWAY_ADMIN_TOKEN"),
        "{err}"
    );
}

#[tokio::test]
async fn a_reflection_enabled_backend_needs_no_upload() {
    let s = spawn_sample("reflected").await;
    let toml = format!(
        "[[listeners]]\nname = \"front\"\naddress = \"127.0.0.1:0\"\n\
         [[clusters]]\nname = \"refl\"\ndescriptors_from_reflection = true\nreflection_interval_ms = 1000\nendpoints = [{{ address = \"{}\" }}]\n",
        s.addr
    );
    let gw = spawn_gateway(&toml).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let sets = list(&gw).await;
        if sets["descriptor_sets"]
            .as_array()
            .is_some_and(|a| a.iter().any(|s| s["name"] == "refl"))
        {
            assert_eq!(sets["descriptor_sets"][0]["cluster"], "refl");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never registered: {sets}\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // No route is configured: the binding alone makes both paths work.
    let r = get_shelf(gw.first_addr(), 5).await;
    assert_eq!(
        (r.status.as_u16(), r.json()["name"].clone()),
        (200, json!("shelves/5")),
        "{}",
        r.text()
    );
    let mut grpc = sample_services::codename::codename_creator_client::CodenameCreatorClient::new(
        channel(gw.first_addr()).await,
    );
    let reply = grpc
        .get_codename(sample_services::codename::NameRequest::default())
        .await
        .expect("gRPC via binding");
    assert_eq!(
        reply.metadata().get("x-server-id").expect("id"),
        "reflected"
    );
}

#[derive(clap::Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: gateway::cli::DescriptorsCmd,
}

async fn cli(args: &[&str]) -> u8 {
    use clap::Parser;
    let cli = Cli::try_parse_from(std::iter::once("gateway").chain(args.iter().copied()))
        .expect("CLI arguments");
    gateway::cli::run(cli.cmd).await
}

#[tokio::test]
async fn cli_push_list_rm_against_a_running_gateway() {
    let s = spawn_sample("s0").await;
    let gw = spawn_gateway(&unrouted(&[&s], "")).await;
    let url = format!("http://{}", admin(&gw));
    let dir = tempfile::tempdir().expect("tmp");
    let set = dir.path().join("samples.pb");
    std::fs::write(&set, sample_services::FILE_DESCRIPTOR_SET).expect("write");
    let set = set.to_string_lossy().into_owned();

    // Binary set, bound to the cluster.
    assert_eq!(
        cli(&[
            "push",
            &set,
            "--cluster",
            "backend",
            "--admin",
            &url,
            "--token",
            TOKEN
        ])
        .await,
        0
    );
    let r = get_shelf(gw.first_addr(), 2).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // .proto sources with an import root: the identical echo.proto may be
    // shared by two sets.
    let protos = repo_path("sample-services/proto");
    let echo = protos.join("echo.proto").to_string_lossy().into_owned();
    let root = protos.to_string_lossy().into_owned();
    assert_eq!(
        cli(&[
            "push", &echo, "--name", "echo-src", "-I", &root, "--admin", &url, "--token", TOKEN
        ])
        .await,
        0
    );
    // A different definition of a service another set owns: refused (1).
    let other = dir.path().join("conflict.proto");
    std::fs::write(
        &other,
        "syntax = \"proto3\";\npackage sample.echo.v1;\nservice Echo {}\n",
    )
    .expect("write");
    assert_eq!(
        cli(&[
            "push",
            &other.to_string_lossy(),
            "--admin",
            &url,
            "--token",
            TOKEN
        ])
        .await,
        1
    );
    assert_eq!(cli(&["list", "--admin", &url]).await, 0);
    let names: Vec<String> = list(&gw).await["descriptor_sets"]
        .as_array()
        .expect("sets")
        .iter()
        .filter_map(|s| s["name"].as_str().map(String::from))
        .collect();
    assert_eq!(names, ["echo-src", "samples"]);
    // Errors: wrong token (refused: 1), unreachable admin (2), missing file (2).
    assert_eq!(
        cli(&["rm", "samples", "--admin", &url, "--token", "wrong"]).await,
        1
    );
    assert_eq!(cli(&["list", "--admin", "http://127.0.0.1:1"]).await, 2);
    assert_eq!(
        cli(&[
            "push",
            "/no/such/file.pb",
            "--admin",
            &url,
            "--token",
            TOKEN
        ])
        .await,
        2
    );
    // Remove, then the REST route is gone.
    assert_eq!(
        cli(&["rm", "samples", "--admin", &url, "--token", TOKEN]).await,
        0
    );
    assert_eq!(
        cli(&["rm", "samples", "--admin", &url, "--token", TOKEN]).await,
        1,
        "already gone"
    );
    let r = get_shelf(gw.first_addr(), 2).await;
    assert_eq!(r.status, 404);
    // Re-push the .proto set bound to the cluster: Echo is served by JSON.
    let code = cli(&[
        "push",
        &echo,
        "--name",
        "echo-src",
        "-I",
        &root,
        "--cluster",
        "backend",
        "--admin",
        &url,
        "--token",
        TOKEN,
    ])
    .await;
    assert_eq!(code, 0);
    let r = http_call(
        gw.first_addr(),
        HttpVersion::H1,
        json_request(
            "POST",
            "/sample.echo.v1.Echo/Unary",
            r#"{"message":"via cli"}"#,
        ),
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), r.json()["message"].clone()),
        (200, json!("via cli")),
        "{}",
        r.text()
    );
}
