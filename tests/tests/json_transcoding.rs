//! JSON over HTTP/1.1 and HTTP/2, transcoded to gRPC through the same
//! routes and balancer: default routes, google.api.http rules, the proto3
//! JSON mapping, streaming formats, errors, metadata, CORS, limits.

use std::time::{Duration, Instant};

use gateway::Gateway;
use serde_json::{Value, json};
use tests::*;

async fn json_gateway(servers: &[&SampleServer], extra: &str) -> Gateway {
    let gw = spawn_gateway(&format!("{extra}\n{}", simple_config(servers, ""))).await;
    gw.registry()
        .put("samples", sample_services::FILE_DESCRIPTOR_SET)
        .expect("register sample descriptors");
    gw
}

/// JSON equality with numbers compared by value (`1` == `1.0`: a
/// google.protobuf.Value number is a double).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

fn get(path: &str) -> http::Request<ReqBody> {
    http::Request::get(path).body(body("")).expect("request")
}

#[tokio::test]
async fn default_route_unary_over_http1_and_http2() {
    let s = spawn_sample("s0").await;
    let gw = json_gateway(&[&s], "").await;
    for v in [HttpVersion::H1, HttpVersion::H2] {
        let r = http_call(
            gw.first_addr(),
            v,
            json_request(
                "POST",
                "/CodenameCreator/GetCodename",
                r#"{"category":"science"}"#,
            ),
        )
        .await;
        assert_eq!(r.status, 200, "{v:?}: {}", r.text());
        assert_eq!(
            r.version,
            if v == HttpVersion::H1 {
                http::Version::HTTP_11
            } else {
                http::Version::HTTP_2
            }
        );
        assert_eq!(r.header("content-type"), "application/json");
        assert_eq!(r.header("x-server-id"), "s0");
        let name = r.json()["name"].as_str().expect("name").to_string();
        assert_eq!(name.split(' ').count(), 2, "{name}");
    }
    // No content-type and an empty body are fine: an empty request message.
    let req = http::Request::post("/CodenameCreator/GetCodename")
        .body(body(""))
        .expect("req");
    let r = http_call(gw.first_addr(), HttpVersion::H1, req).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn preload_from_config_file() {
    let s = spawn_sample("s0").await;
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("samples.pb");
    std::fs::write(&file, sample_services::FILE_DESCRIPTOR_SET).expect("write");
    let gw = spawn_gateway(&format!(
        "[registry]\npreload = [\"{}\"]\n{}",
        file.display(),
        simple_config(&[&s], "")
    ))
    .await;
    let r = http_call(gw.first_addr(), HttpVersion::H1, get("/v1/shelves/7")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["name"], "shelves/7");
}

#[tokio::test]
async fn every_type_round_trips_through_a_real_backend() {
    let s = spawn_sample("s0").await;
    let gw = json_gateway(&[&s], "").await;
    let input = json!({
        "d": 1.5, "f": -2.25, "i32": -7, "i64": "-9007199254740993", "u32": 4000000000u32, "u64": "18446744073709551615",
        "s32": -3, "s64": "-4", "fx32": 5, "fx64": "6", "sfx32": -8, "sfx64": "-9", "b": true, "s": "héllo ✓",
        "by": "AAEC/w==", "genre": "HISTORY", "nested": { "name": "shelves/1", "theme": "t", "bookCount": "3" },
        "books": [{ "name": "b1", "tags": ["x", "y"], "published": "2020-01-02T03:04:05Z", "genre": "FICTION" }],
        "nums": [1, 2, 3], "counts": { "a": "1", "b": "-2" }, "shelvesById": { "1": { "name": "one" } },
        "choiceShelf": { "theme": "oneof" },
        "ts": "2017-01-15T01:30:15.010Z", "dur": "3.500s", "mask": "a.b,cD", "st": { "k": [1, "two", null, { "z": false }] },
        "val": "text", "list": [1, { "a": "b" }], "wI64": "12", "wS": "w", "wB": false, "wBy": "AQI=", "wD": 0.5, "wU32": 7,
        "empty": {}, "any": { "@type": "type.googleapis.com/sample.library.v1.Shelf", "name": "in-any" },
        "opt": 0, "snakeCaseField": "x"
    });
    let r = http_call(
        gw.first_addr(),
        HttpVersion::H2,
        json_request("POST", "/v1/types:echo", &input.to_string()),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let out = r.json();
    for (k, v) in input.as_object().expect("object") {
        assert!(same(&out[k], v), "field {k}: {} != {v}", out[k]);
    }
    // Original (proto) field names are accepted too, and numbers for
    // int64 and enums, URL-safe base64 for bytes.
    let alt = json!({ "snake_case_field": "y", "i64": 5, "genre": 2, "by": "AAEC_w", "shelves_by_id": { "2": {} } });
    let r = http_call(
        gw.first_addr(),
        HttpVersion::H1,
        json_request("POST", "/v1/types:echo", &alt.to_string()),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let out = r.json();
    assert_eq!(out["snakeCaseField"], "y");
    assert_eq!(out["i64"], "5");
    assert_eq!(out["genre"], "SCIENCE");
    assert_eq!(out["by"], "AAEC/w==");
}

/// Google's protobuf for Python (`json_format`, upb) as the oracle of the
/// JSON mapping: random `AllTypes` messages (every scalar at its edges,
/// control and non-BMP characters, unknown enum numbers, maps, oneof,
/// optional, every well-known type, `Any` of seven types) written by
/// json_format, keys shuffled at times, through the gateway and a real
/// backend; json_format must read the same message back, and the reply must
/// be the JSON it writes with the same options: 1,000 with the defaults,
/// 1,000 with every output option on (`tests/python/json_format_oracle.py`).
#[tokio::test]
async fn python_protobufs_json_format_reads_back_what_it_wrote() {
    let s = spawn_sample("s0").await;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_secs() % 100_000);
    for options in [
        "",
        "emit_unpopulated,preserve_proto_field_names,enums_as_ints",
    ] {
        let config: String = options
            .split(',')
            .filter(|o| !o.is_empty())
            .map(|o| format!("{o} = true\n"))
            .collect();
        let gw = json_gateway(&[&s], &format!("[transcoding.json]\n{config}")).await;
        let args = [
            gw.first_addr().to_string(),
            repo_path("sample-services/proto").display().to_string(),
            repo_path("proto").display().to_string(),
            "1000".to_owned(),
            seed.to_string(),
            options.to_owned(),
        ];
        let context = format!("seed {seed}, options {options:?}");
        let v = run_python_script("json_format_oracle.py", &args, 120, &context).await;
        assert_eq!(v["checked"], 1000, "{v}");
    }
}

#[tokio::test]
async fn output_options_are_configurable() {
    let s = spawn_sample("s0").await;
    let gw = json_gateway(
        &[&s],
        "[transcoding.json]\nemit_unpopulated = true\npreserve_proto_field_names = true\nenums_as_ints = true\n",
    )
    .await;
    let r = http_call(
        gw.first_addr(),
        HttpVersion::H1,
        json_request("POST", "/v1/types:echo", r#"{"genre":"SCIENCE"}"#),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let out = r.json();
    assert_eq!(out["genre"], 2);
    assert_eq!(out["snake_case_field"], "");
    assert_eq!(out["i32"], 0);
    assert!(out.get("snakeCaseField").is_none());
}

#[tokio::test]
async fn rest_routes_map_path_query_and_body() {
    let s = spawn_sample("s0").await;
    let gw = json_gateway(&[&s], "").await;
    let a = gw.first_addr();
    let call = |req| http_call(a, HttpVersion::H1, req);

    let r = call(get("/v1/shelves/12")).await;
    assert_eq!(
        (r.status.as_u16(), r.json()["name"].clone()),
        (200, json!("shelves/12")),
        "{}",
        r.text()
    );
    assert_eq!(r.json()["bookCount"], "42");
    // additional_bindings
    let r = call(get("/v1/shelf/abc")).await;
    assert_eq!(r.json()["name"], "abc", "{}", r.text());
    // body: "shelf" + query param
    let r = call(json_request(
        "POST",
        "/v1/shelves?shelf_id=s9",
        r#"{"theme":"sci-fi"}"#,
    ))
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        (r.json()["name"].clone(), r.json()["theme"].clone()),
        (json!("shelves/s9"), json!("sci-fi"))
    );
    // path param + body field + query
    let r = call(json_request(
        "POST",
        "/v1/shelves/1/books?bookId=b1",
        r#"{"title":"Dune","pages":412}"#,
    ))
    .await;
    assert_eq!(r.json()["name"], "shelves/1/books/b1", "{}", r.text());
    assert_eq!(r.json()["pages"], 412);
    // nested path param {book.name=...}, FieldMask from the query
    let r = call(json_request(
        "PATCH",
        "/v1/shelves/1/books/2?updateMask=title,pages",
        r#"{"title":"New"}"#,
    ))
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["name"], "shelves/1/books/2");
    assert_eq!(r.json()["title"], "New (updated: title,pages)");
    // DELETE -> Empty
    let r = call(
        http::Request::delete("/v1/shelves/1/books/2")
            .body(body(""))
            .expect("req"),
    )
    .await;
    assert_eq!((r.status.as_u16(), r.json()), (200, json!({})));
    // custom verb, body "*"
    let r = call(json_request(
        "POST",
        "/v1/shelves/1/books/2:move",
        r#"{"destinationShelf":"shelves/9"}"#,
    ))
    .await;
    assert_eq!(r.json()["name"], "shelves/9/books/2", "{}", r.text());
    // response_body
    let r = call(get("/v1/shelves/1/books/2/author")).await;
    assert_eq!(
        r.json(),
        json!("Author of shelves/1/books/2"),
        "{}",
        r.text()
    );
    // {path=**}
    let r = call(get("/v1/files/a/b/c.txt")).await;
    assert_eq!(r.json()["path"], "a/b/c.txt", "{}", r.text());
    // all fields from the query: nested, repeated, enum, int64, bool
    let r = call(get("/v1/books:search?query=dune&tags=a&tags=b&filter.author=Herbert&filter.year=1965&minPages=100&genre=SCIENCE&available=true")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["echo"],
        json!({ "query": "dune", "tags": ["a", "b"], "filter": { "author": "Herbert", "year": 1965 }, "minPages": "100", "genre": "SCIENCE", "available": true })
    );
    // no rule for this method + path
    let r = call(get("/v1/nothing/here")).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["code"], 5);
    assert!(
        r.json()["message"]
            .as_str()
            .expect("msg")
            .contains("/v1/nothing/here")
    );
}

#[tokio::test]
async fn bad_json_is_400_with_the_field_path_and_unknown_fields_configurable() {
    let s = spawn_sample("s0").await;
    let gw = json_gateway(&[&s], "").await;
    let a = gw.first_addr();
    let r = http_call(
        a,
        HttpVersion::H1,
        json_request("POST", "/v1/types:echo", r#"{"nested":{"bogus":1}}"#),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let e = r.json();
    assert_eq!(e["code"], 3);
    let msg = e["message"].as_str().expect("message");
    assert!(msg.contains("nested") && msg.contains("bogus"), "{msg}");
    let r = http_call(
        a,
        HttpVersion::H1,
        json_request("POST", "/v1/types:echo", r#"{"i32":"not a number"}"#),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(
        r.json()["message"].as_str().expect("m").contains("i32"),
        "{}",
        r.text()
    );
    let r = http_call(
        a,
        HttpVersion::H1,
        json_request("POST", "/v1/types:echo", "{not json"),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        s.stats.requests(),
        0,
        "bad requests never reach the backend"
    );

    let s2 = spawn_sample("s1").await;
    let gw = json_gateway(&[&s2], "[transcoding.json]\nignore_unknown_fields = true\n").await;
    let r = http_call(
        gw.first_addr(),
        HttpVersion::H1,
        json_request("POST", "/v1/types:echo", r#"{"bogus":1,"s":"ok"}"#),
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), r.json()["s"].clone()),
        (200, json!("ok")),
        "{}",
        r.text()
    );
}

#[tokio::test]
async fn grpc_status_maps_to_http_status_with_details() {
    let s = spawn_sample("s0").await;
    let gw = json_gateway(&[&s], "").await;
    let rows = [
        (3, 400),
        (9, 400),
        (11, 400),
        (16, 401),
        (7, 403),
        (5, 404),
        (6, 409),
        (10, 409),
        (8, 429),
        (1, 499),
        (12, 501),
        (14, 503),
        (4, 504),
        (2, 500),
        (13, 500),
        (15, 500),
    ];
    for (code, http) in rows {
        let body = json!({ "code": code, "message": format!("failure ✗ {code}") }).to_string();
        let r = http_call(
            gw.first_addr(),
            HttpVersion::H1,
            json_request("POST", "/v1/fail", &body),
        )
        .await;
        assert_eq!(r.status.as_u16(), http, "code {code}: {}", r.text());
        assert_eq!(r.json()["code"], code);
        assert_eq!(r.json()["message"], format!("failure ✗ {code}"));
        assert_eq!(r.header("content-type"), "application/json");
    }
    let r = http_call(
        gw.first_addr(),
        HttpVersion::H2,
        json_request(
            "POST",
            "/v1/fail",
            r#"{"code":3,"message":"bad","withDetails":true}"#,
        ),
    )
    .await;
    assert_eq!(r.status, 400);
    let details = r.json()["details"].clone();
    assert_eq!(
        details[0]["@type"], "type.googleapis.com/google.rpc.BadRequest",
        "{details}"
    );
    assert_eq!(details[0]["fieldViolations"][0]["field"], "name");
    assert_eq!(
        details[1]["@type"],
        "type.googleapis.com/google.rpc.ErrorInfo"
    );
    assert_eq!(details[1]["reason"], "TEST_REASON");
    assert_eq!(details[1]["metadata"]["k"], "v");
}

async fn watch(
    addr: std::net::SocketAddr,
    accept: &str,
    query: &str,
) -> (http::StatusCode, String, Vec<(Instant, bytes::Bytes)>) {
    let req = http::Request::get(format!("/v1/shelves/1:watch?{query}"))
        .header("accept", accept)
        .body(body(""))
        .expect("req");
    let resp = http_send(addr, HttpVersion::H1, req).await;
    let status = resp.status();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (status, ct, timed_chunks(resp.into_body()).await)
}

#[tokio::test]
async fn server_streams_arrive_incrementally_in_each_format() {
    let s = spawn_sample("s0").await;
    let gw = json_gateway(&[&s], "").await;
    for (accept, ct) in [
        ("application/x-ndjson", "application/x-ndjson"),
        ("text/event-stream", "text/event-stream"),
        ("application/json", "application/json"),
        ("*/*", "application/x-ndjson"),
    ] {
        let (status, got_ct, chunks) =
            watch(gw.first_addr(), accept, "count=4&intervalMs=100").await;
        assert_eq!((status.as_u16(), got_ct.as_str()), (200, ct), "{accept}");
        let text: String = chunks
            .iter()
            .map(|(_, b)| String::from_utf8_lossy(b))
            .collect();
        // The messages came one by one, ~100 ms apart, not together.
        let with_data: Vec<_> = chunks.iter().filter(|(_, b)| b.len() > 2).collect();
        assert!(
            with_data.len() >= 4,
            "{accept}: {} chunks: {text}",
            with_data.len()
        );
        let spread = with_data[3].0 - with_data[0].0;
        assert!(
            spread >= Duration::from_millis(200),
            "{accept}: batched? {spread:?}"
        );
        let books: Vec<Value> = match ct {
            "application/x-ndjson" => text
                .lines()
                .map(|l| serde_json::from_str(l).expect("ndjson line"))
                .collect(),
            "text/event-stream" => text
                .split("\n\n")
                .filter(|e| !e.is_empty())
                .map(|e| {
                    serde_json::from_str(e.strip_prefix("data: ").expect("data event"))
                        .expect("json")
                })
                .collect(),
            _ => serde_json::from_str::<Vec<Value>>(&text).expect("json array"),
        };
        assert_eq!(books.len(), 4, "{accept}: {text}");
        assert!(
            books.iter().all(|b| b["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("shelves/1/books/"))),
            "{text}"
        );
    }
}

#[tokio::test]
async fn a_mid_stream_error_ends_each_format_with_an_error_record() {
    let s = spawn_sample("s0").await;
    let gw = json_gateway(&[&s], "").await;
    let q = "count=5&intervalMs=10&failAfter=2&failCode=10";
    let (status, _, chunks) = watch(gw.first_addr(), "application/x-ndjson", q).await;
    assert_eq!(status, 200);
    let text: String = chunks
        .iter()
        .map(|(_, b)| String::from_utf8_lossy(b))
        .collect();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("line"))
        .collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(lines[2]["error"]["code"], 10, "{text}");
    assert!(lines[2]["error"]["message"].is_string());

    let (_, _, chunks) = watch(gw.first_addr(), "text/event-stream", q).await;
    let text: String = chunks
        .iter()
        .map(|(_, b)| String::from_utf8_lossy(b))
        .collect();
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events.len(), 3, "{text}");
    let last = events[2]
        .strip_prefix("event: error\ndata: ")
        .expect("error event");
    assert_eq!(
        serde_json::from_str::<Value>(last).expect("json")["code"],
        10
    );

    let (_, _, chunks) = watch(gw.first_addr(), "application/json", q).await;
    let text: String = chunks
        .iter()
        .map(|(_, b)| String::from_utf8_lossy(b))
        .collect();
    let arr: Vec<Value> = serde_json::from_str(&text).expect("a complete JSON array");
    assert_eq!(arr.len(), 3);
    assert_eq!(arr[2]["error"]["code"], 10);

    // Failing before the first message: a plain JSON error with the
    // proper HTTP status, not a 200 stream.
    let r = http_call(
        gw.first_addr(),
        HttpVersion::H1,
        json_request(
            "POST",
            "/sample.echo.v1.Echo/ServerStream",
            r#"{"count":3,"statusCode":7,"statusMessage":"nope"}"#,
        ),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["code"], 7);
    assert_eq!(r.json()["message"], "nope");
    // An empty stream: an empty body (NDJSON) or [] (JSON array).
    let (status, _, chunks) = watch(gw.first_addr(), "application/json", "count=0").await;
    let text: String = chunks
        .iter()
        .map(|(_, b)| String::from_utf8_lossy(b))
        .collect();
    assert_eq!((status.as_u16(), text.as_str()), (200, "[]"));
}

/// An `Any` whose `@type` comes after its fields, naming a type of another
/// file, is read by prost-reflect with the whole descriptor pool: when the
/// pool was released, the gateway builds it on a blocking thread (never on
/// the connection's worker thread) and the call goes on, unary and NDJSON
/// client streams alike.
#[tokio::test]
async fn an_any_read_by_prost_reflect_has_the_pool_built_off_the_worker() {
    let s = spawn_sample("s0").await;
    let gw = json_gateway(&[&s], "").await;
    let any = r#"{"message":"hi","@type":"type.googleapis.com/sample.echo.v1.EchoRequest"}"#;
    assert!(gw.registry().release_idle_pool(Duration::ZERO));
    let req = json_request(
        "POST",
        "/v1/types:echo",
        &format!(r#"{{"s":"x","any":{any}}}"#),
    );
    let r = http_call(gw.first_addr(), HttpVersion::H1, req).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["any"]["message"], "hi", "{}", r.text());
    assert!(gw.registry().pool_is_built());

    // A client stream of such messages, to a method the backend does not
    // implement: the line is converted (after the build) and sent, and the
    // backend's UNIMPLEMENTED comes back.
    let set = descriptors::compile_protos(&[descriptors::SourceFile {
        path: "keep.proto".to_owned(),
        source: "syntax = \"proto3\";\npackage keep.v1;\nimport \"google/protobuf/any.proto\";\n\
                 message Holder { google.protobuf.Any payload = 1; }\n\
                 service Keeper { rpc Collect(stream Holder) returns (Holder); }\n"
            .to_owned(),
    }])
    .expect("compile keep.proto");
    gw.registry()
        .put("keep", &set)
        .expect("register keep.proto");
    assert!(gw.registry().release_idle_pool(Duration::ZERO));
    let req = http::Request::post("/keep.v1.Keeper/Collect")
        .header("content-type", "application/x-ndjson")
        .body(body(format!("{{\"payload\":{any}}}\n")))
        .expect("req");
    let r = http_call(gw.first_addr(), HttpVersion::H1, req).await;
    assert_eq!(
        r.json()["code"],
        12,
        "UNIMPLEMENTED from the backend: {}",
        r.text()
    );
    assert!(gw.registry().pool_is_built());
}

/// A stream reply whose `Any` holds a type the codec leaves to prost-reflect
/// (a proto2 group), from a grpcio backend: a worker thread builds no
/// descriptor pool, so the message waits while one is built on a blocking
/// thread, then is rendered (the stream ended INTERNAL without the wait).
#[tokio::test]
async fn a_stream_reply_that_needs_the_descriptor_pool_waits_for_it() {
    let py = spawn_py_backend().await;
    let gw = spawn_gateway(&cluster_config(
        &[format!("{{ name = \"py\", address = \"{}\" }}", py.addr)],
        "",
    ))
    .await;
    let source = |path: &str, source: &str| descriptors::SourceFile {
        path: path.to_owned(),
        source: source.to_owned(),
    };
    let set = descriptors::compile_protos(&[
        source(
            "mirror_group.proto",
            "syntax = \"proto2\";\npackage mirror.v1;\n\
             message Grouped { optional group G = 1 { optional int32 x = 2; } }\n",
        ),
        source(
            "mirror.proto",
            "syntax = \"proto3\";\npackage mirror.v1;\nimport \"google/protobuf/any.proto\";\n\
             message Holder { google.protobuf.Any payload = 1; }\nmessage Ask {}\n\
             service Mirror { rpc Grouped(Ask) returns (stream Holder); }\n",
        ),
    ])
    .expect("compile the mirror protos");
    gw.registry().put("mirror", &set).expect("register them");
    assert!(gw.registry().release_idle_pool(Duration::ZERO));
    let req = json_request("POST", "/mirror.v1.Mirror/Grouped", "{}");
    let r = http_call(gw.first_addr(), HttpVersion::H1, req).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let lines = r.json_lines();
    assert_eq!(lines.len(), 2, "{}", r.text());
    for line in &lines {
        assert_eq!(
            line["payload"]["@type"], "type.googleapis.com/mirror.v1.Grouped",
            "{line}"
        );
        assert_eq!(line["payload"]["g"]["x"], 5, "{line}");
    }
    assert!(gw.registry().pool_is_built());
}

#[tokio::test]
async fn client_streaming_and_bidi_take_ndjson() {
    let s = spawn_sample("s0").await;
    let gw = json_gateway(&[&s], "").await;
    // Client streaming over chunked HTTP/1.1.
    let (tx, b) = channel_body();
    let req = http::Request::post("/sample.library.v1.LibraryService/BulkCreate")
        .header("content-type", "application/x-ndjson")
        .body(b)
        .expect("req");
    let addr = gw.first_addr();
    let call = tokio::spawn(async move {
        use http_body_util::BodyExt;
        let resp = http_send(addr, HttpVersion::H1, req).await;
        let status = resp.status();
        (
            status,
            resp.into_body().collect().await.expect("body").to_bytes(),
        )
    });
    for t in ["A", "B", "C"] {
        tx.send(bytes::Bytes::from(format!("{{\"title\":\"{t}\"}}\n")))
            .await
            .expect("send");
    }
    drop(tx);
    let (status, bytes) = within(10, "bulk create", call).await.expect("join");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    let v: Value = serde_json::from_slice(&bytes).expect("json");
    assert_eq!(v, json!({ "count": 3, "titles": ["A", "B", "C"] }));

    // Bidi over HTTP/2: each reply line arrives before the next request line.
    let (tx, b) = channel_body();
    let req = http::Request::post("/sample.library.v1.LibraryService/Chat")
        .body(b)
        .expect("req");
    tx.send(bytes::Bytes::from_static(b"{\"title\":\"one\"}\n"))
        .await
        .expect("send");
    let resp = http_send(gw.first_addr(), HttpVersion::H2, req).await;
    assert_eq!(resp.status(), 200);
    use http_body_util::BodyExt;
    let mut stream = resp.into_body();
    let first = within(5, "first reply", stream.frame())
        .await
        .expect("frame")
        .expect("ok")
        .into_data()
        .expect("data");
    assert_eq!(
        serde_json::from_slice::<Value>(&first).expect("json")["title"],
        "echo: one"
    );
    tx.send(bytes::Bytes::from_static(b"{\"title\":\"two\"}\n"))
        .await
        .expect("send");
    let second = within(5, "second reply", stream.frame())
        .await
        .expect("frame")
        .expect("ok")
        .into_data()
        .expect("data");
    assert_eq!(
        serde_json::from_slice::<Value>(&second).expect("json")["title"],
        "echo: two"
    );
    drop(tx);
    let rest = within(5, "end", timed_chunks(stream)).await;
    assert!(
        rest.is_empty(),
        "{:?}",
        rest.iter()
            .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
            .collect::<Vec<_>>()
    );

    // A bad line fails the call with INVALID_ARGUMENT.
    let req = http::Request::post("/sample.library.v1.LibraryService/BulkCreate")
        .body(body("{\"title\":\"ok\"}\n{\"pages\":\"many\"}\n"))
        .expect("req");
    let r = http_call(gw.first_addr(), HttpVersion::H1, req).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["code"], 3);
}

#[tokio::test]
async fn metadata_flows_both_ways() {
    let s = spawn_sample("s0").await;
    let gw = json_gateway(
        &[&s],
        "[transcoding.forward_headers]\ndeny = [\"x-internal\"]\n",
    )
    .await;
    let req = http::Request::post("/sample.echo.v1.Echo/Unary")
        .header("content-type", "application/json")
        .header("x-token", "abc")
        .header("x-blob-bin", "AAEC")
        .header("x-internal", "secret")
        .body(body(r#"{"message":"hi"}"#))
        .expect("req");
    let r = http_call(gw.first_addr(), HttpVersion::H1, req).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["message"], "hi");
    // Echoed as response headers, and the trailers came back as headers.
    assert_eq!(r.header("x-token"), "abc");
    assert_eq!(r.header("x-blob-bin"), "AAEC");
    assert_eq!(r.header("trailer-x-token"), "abc");
    assert_eq!(r.header("x-internal"), "", "denied header not forwarded");
    assert_eq!(r.header("x-server-id"), "s0");
    assert!(r.headers.get("grpc-status").is_none());
}

#[tokio::test]
async fn cors_preflight_and_cross_origin_call() {
    let s = spawn_sample("s0").await;
    let gw = json_gateway(
        &[&s],
        "[cors]\nallowed_origins = [\"http://app.example\"]\nexposed_headers = [\"x-server-id\"]\nmax_age_secs = 60\n",
    )
    .await;
    let pre = http::Request::builder()
        .method("OPTIONS")
        .uri("/v1/shelves/1")
        .header("origin", "http://app.example")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "x-token, content-type")
        .body(body(""))
        .expect("req");
    let r = http_call(gw.first_addr(), HttpVersion::H1, pre).await;
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("access-control-allow-origin"),
        "http://app.example"
    );
    assert!(r.header("access-control-allow-methods").contains("GET"));
    assert_eq!(
        r.header("access-control-allow-headers"),
        "x-token, content-type"
    );
    assert_eq!(r.header("access-control-max-age"), "60");
    assert_eq!(s.stats.requests(), 0, "preflight never reaches a backend");

    let req = http::Request::get("/v1/shelves/1")
        .header("origin", "http://app.example")
        .body(body(""))
        .expect("req");
    let r = http_call(gw.first_addr(), HttpVersion::H1, req).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        "http://app.example"
    );
    assert_eq!(r.header("access-control-expose-headers"), "x-server-id");

    let req = http::Request::get("/v1/shelves/1")
        .header("origin", "http://evil.example")
        .body(body(""))
        .expect("req");
    let r = http_call(gw.first_addr(), HttpVersion::H1, req).await;
    assert_eq!(r.header("access-control-allow-origin"), "");
}

#[tokio::test]
async fn body_over_the_limit_is_413() {
    let s = spawn_sample("s0").await;
    let gw = json_gateway(&[&s], "[transcoding]\nmax_body_bytes = 1024\n").await;
    let big = json!({ "s": "x".repeat(2000) }).to_string();
    let r = http_call(
        gw.first_addr(),
        HttpVersion::H1,
        json_request("POST", "/v1/types:echo", &big),
    )
    .await;
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(r.json()["code"], 8);
    let deep = format!(
        "{}{}",
        "{\"st\":".to_string() + &"{\"a\":".repeat(100),
        "1".to_string() + &"}".repeat(101)
    );
    let r = http_call(
        gw.first_addr(),
        HttpVersion::H1,
        json_request("POST", "/v1/types:echo", &deep),
    )
    .await;
    assert_eq!(r.status, 400, "too deep: {}", r.text());
}

#[tokio::test]
async fn json_calls_are_balanced_routed_and_denied_like_grpc() {
    let a = spawn_sample("a").await;
    let b = spawn_sample("b").await;
    let gw = json_gateway(&[&a, &b], "").await;
    let mut ids = Vec::new();
    for _ in 0..6 {
        let r = http_call(gw.first_addr(), HttpVersion::H1, get("/v1/shelves/1")).await;
        ids.push(r.header("x-server-id"));
    }
    assert_eq!(ids.iter().filter(|i| *i == "a").count(), 3, "{ids:?}");
    assert_eq!(ids.iter().filter(|i| *i == "b").count(), 3, "{ids:?}");

    let s = spawn_sample("s").await;
    let toml = format!(
        "[[listeners]]\nname = \"front\"\naddress = \"127.0.0.1:0\"\ndeny_unless = [{{ name = \"mysecretpassphrase\", exact = \"abc123\" }}]\n\
         [[clusters]]\nname = \"backend\"\nendpoints = [{{ address = \"{}\" }}]\n\
         [[routes]]\ncluster = \"backend\"\nmatch = {{ service = \"sample.library.v1.LibraryService\" }}\n",
        s.addr
    );
    let gw = spawn_gateway(&toml).await;
    gw.registry()
        .put("samples", sample_services::FILE_DESCRIPTOR_SET)
        .expect("register");
    let r = http_call(gw.first_addr(), HttpVersion::H1, get("/v1/shelves/1")).await;
    assert_eq!(
        (r.status.as_u16(), r.json()["code"].clone()),
        (403, json!(7))
    );
    let req = http::Request::get("/v1/shelves/1")
        .header("mysecretpassphrase", "abc123")
        .body(body(""))
        .expect("req");
    assert_eq!(
        http_call(gw.first_addr(), HttpVersion::H1, req)
            .await
            .status,
        200
    );
    // A registered method with no route: 501 UNIMPLEMENTED, JSON.
    let req = json_request("POST", "/CodenameCreator/GetCodename", "{}");
    let mut req = req;
    req.headers_mut()
        .insert("mysecretpassphrase", "abc123".parse().expect("v"));
    let r = http_call(gw.first_addr(), HttpVersion::H1, req).await;
    assert_eq!(
        (r.status.as_u16(), r.json()["code"].clone()),
        (501, json!(12))
    );
}

#[tokio::test]
async fn deadline_from_grpc_timeout_header_or_configured_default() {
    let s = spawn_sample("s0").await;
    let gw = json_gateway(&[&s], "[transcoding]\ndefault_timeout_ms = 200\n").await;
    let started = Instant::now();
    let r = http_call(
        gw.first_addr(),
        HttpVersion::H1,
        json_request(
            "POST",
            "/sample.echo.v1.Echo/Slow",
            r#"{"intervalMs":5000}"#,
        ),
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), r.json()["code"].clone()),
        (504, json!(4)),
        "{}",
        r.text()
    );
    assert!(started.elapsed() < Duration::from_secs(2));

    let mut req = json_request(
        "POST",
        "/sample.echo.v1.Echo/Slow",
        r#"{"intervalMs":5000}"#,
    );
    req.headers_mut()
        .insert("grpc-timeout", "100m".parse().expect("v"));
    let started = Instant::now();
    let r = http_call(gw.first_addr(), HttpVersion::H2, req).await;
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(started.elapsed() < Duration::from_millis(1500));
    within(
        5,
        "backend idle",
        s.stats.wait_until(|s| s.in_flight() == 0),
    )
    .await;
}
