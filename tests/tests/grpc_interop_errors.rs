//! The error path with gRPC implementations other than tonic: a Python
//! grpcio (C-core) backend answering every status code with a unicode
//! message in every call shape, read through the gateway by a grpcio
//! client, a tonic client, a raw HTTP/2 client (the frames themselves) and
//! JSON callers. C-core clients refuse what tonic tolerates (a trailers-only
//! head followed by an empty DATA frame), so each shape is checked here.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use prost::Message as _;
use sample_services::{
    echo::{EchoRequest, echo_client::EchoClient},
    google_rpc,
};
use serde_json::Value;
use tests::*;

fn gateway_config(backend: SocketAddr) -> String {
    cluster_config(
        &[format!("{{ name = \"py\", address = \"{backend}\" }}")],
        "",
    )
}

fn message_for(code: i32) -> String {
    format!("ünïcödé ✓ code {code}: 100% sûr")
}

/// Runs the grpcio error matrix client against `addr`.
async fn grpcio_matrix(addr: SocketAddr) -> BTreeMap<String, Value> {
    let protos = repo_path("sample-services/proto").display().to_string();
    let out = run_python_script(
        "grpcio_error_matrix.py",
        &[addr.to_string(), protos],
        120,
        "grpcio matrix",
    )
    .await;
    let rows: Vec<Value> = serde_json::from_value(out).expect("a list of rows");
    rows.into_iter()
        .map(|r| (r["case"].as_str().expect("case").to_string(), r))
        .collect()
}

#[tokio::test]
async fn grpcio_client_gets_every_status_of_a_grpcio_backend_through_the_gateway() {
    let py = spawn_py_backend().await;
    let gw = spawn_gateway(&gateway_config(py.addr)).await;
    let direct = grpcio_matrix(py.addr).await;
    let via = grpcio_matrix(gw.first_addr()).await;
    assert_eq!(direct.len(), via.len());
    for code in 1..=16 {
        let msg = message_for(code);
        for (shape, received) in [
            ("unary", 0),
            ("server_stream_at_once", 0),
            ("server_stream_after_data", 2),
            ("client_stream", 0),
            ("bidi", 1),
            ("headers_first", 0),
            ("details", 0),
        ] {
            let case = format!("{shape}/{code}");
            let got = &via[&case];
            assert_eq!(got["code"], code, "{case}: {got}");
            assert_eq!(got["message"], msg.as_str(), "{case}: {got}");
            assert_eq!(got["received"], received, "{case}: {got}");
            let reason = if shape == "details" { "PY_REASON" } else { "" };
            assert_eq!(got["reason"], reason, "{case}: {got}");
            assert_eq!(got, &direct[&case], "{case}: differs from a direct call");
        }
    }
    assert_eq!(via["ok/unary"]["code"], 0);
    assert_eq!(via["ok/server_stream"]["received"], 3);
    for case in ["unknown_method", "unknown_service"] {
        assert_eq!(via[case]["code"], 12, "{case}: {}", via[case]);
        assert_eq!(via[case], direct[case], "{case}");
    }
}

#[tokio::test]
async fn tonic_client_gets_every_status_of_a_grpcio_backend_through_the_gateway() {
    let py = spawn_py_backend().await;
    let gw = spawn_gateway(&gateway_config(py.addr)).await;
    let mut client = EchoClient::new(channel(gw.first_addr()).await);
    for code in 1..=16 {
        let msg = message_for(code);
        let fail = EchoRequest {
            status_code: code,
            status_message: msg.clone(),
            ..Default::default()
        };
        let e = client.unary(fail.clone()).await.expect_err("unary fails");
        assert_eq!(e.code() as i32, code, "unary: {e:?}");
        assert_eq!(e.message(), msg);

        let mut stream = client
            .server_stream(EchoRequest {
                count: 3,
                fail_after: 2,
                ..fail.clone()
            })
            .await
            .expect("stream head")
            .into_inner();
        let mut seen = 0;
        let e = loop {
            match stream.message().await {
                Ok(Some(_)) => seen += 1,
                Ok(None) => panic!("stream ended without the status"),
                Err(e) => break e,
            }
        };
        assert_eq!((seen, e.code() as i32), (2, code), "{e:?}");
        assert_eq!(e.message(), msg);

        let e = client
            .client_stream(tokio_stream::iter(vec![
                fail.clone(),
                EchoRequest::default(),
            ]))
            .await
            .expect_err("client stream fails");
        assert_eq!(e.code() as i32, code, "client stream: {e:?}");
        assert_eq!(e.message(), msg);

        let details = client
            .unary(EchoRequest {
                message: "details".into(),
                ..fail.clone()
            })
            .await
            .expect_err("details");
        assert_eq!(details.code() as i32, code);
        let status = google_rpc::Status::decode(details.details()).expect("google.rpc.Status");
        assert_eq!((status.code, status.message.as_str()), (code, msg.as_str()));
        let info =
            google_rpc::ErrorInfo::decode(status.details[0].value.as_slice()).expect("ErrorInfo");
        assert_eq!(info.reason, "PY_REASON");
    }
}

/// The frames themselves: a trailers-only answer from the backend, and one
/// from the gateway, are one HEADERS frame with END_STREAM; a status after
/// data comes in trailers.
#[tokio::test]
async fn trailers_only_answers_stay_one_headers_frame() {
    let py = spawn_py_backend().await;
    // Only the Echo service is routed, so other paths get the gateway's own
    // UNIMPLEMENTED.
    let gw = spawn_gateway(&format!(
        "[[listeners]]\nname = \"front\"\naddress = \"127.0.0.1:0\"\n\
         [[clusters]]\nname = \"py\"\nendpoints = [{{ address = \"{}\" }}]\n\
         [[routes]]\ncluster = \"py\"\nmatch = {{ path_prefix = \"/sample.echo.v1.Echo/\" }}\n",
        py.addr
    ))
    .await;
    let mut h2 = raw_h2(gw.first_addr()).await;
    let req = EchoRequest {
        status_code: 5,
        status_message: "gone".into(),
        ..Default::default()
    };
    // Backend trailers-only.
    let (head, body) = raw_call(&mut h2, "/sample.echo.v1.Echo/Unary", &req).await;
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["grpc-status"], "5");
    assert_eq!(head.headers()["grpc-message"], "gone");
    assert!(
        body.is_end_stream(),
        "a trailers-only answer must end with its HEADERS frame (no DATA after it)"
    );
    // Backend headers, then trailers, no DATA.
    let hf = EchoRequest {
        message: "headers-first".into(),
        ..req.clone()
    };
    let (head, mut body) = raw_call(&mut h2, "/sample.echo.v1.Echo/Unary", &hf).await;
    assert!(head.headers().get("grpc-status").is_none());
    assert!(!body.is_end_stream());
    assert!(body.data().await.is_none(), "no DATA frame");
    let trailers = body.trailers().await.expect("trailers").expect("present");
    assert_eq!(trailers["grpc-status"], "5");
    // Gateway-made: unknown method when no route matches.
    let (head, body) = raw_call(&mut h2, "/no.Route/Here", &req).await;
    assert_eq!(head.headers()["grpc-status"], "12", "{head:?}");
    assert!(body.is_end_stream(), "gateway errors are trailers-only too");
}

async fn raw_h2(addr: SocketAddr) -> h2::client::SendRequest<bytes::Bytes> {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (send, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(conn);
    send
}

async fn raw_call(
    h2: &mut h2::client::SendRequest<bytes::Bytes>,
    path: &str,
    msg: &EchoRequest,
) -> (http::Response<()>, h2::RecvStream) {
    let req = http::Request::post(format!("http://front{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("request");
    let mut ready = h2.clone().ready().await.expect("ready");
    let (resp, mut send) = ready.send_request(req, false).expect("send");
    let mut frame = vec![0u8];
    let bytes = msg.encode_to_vec();
    frame.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    frame.extend_from_slice(&bytes);
    send.send_data(frame.into(), true).expect("data");
    let resp = within(10, "response head", resp).await.expect("response");
    let (parts, body) = resp.into_parts();
    // Give a DATA frame that should not exist the time to arrive.
    tokio::time::sleep(Duration::from_millis(100)).await;
    (http::Response::from_parts(parts, ()), body)
}

#[tokio::test]
async fn json_callers_get_the_grpcio_backends_statuses_and_details() {
    let py = spawn_py_backend().await;
    let gw = spawn_gateway(&gateway_config(py.addr)).await;
    gw.registry()
        .put("samples", sample_services::FILE_DESCRIPTOR_SET)
        .expect("register");
    let rows = [
        (3, 400),
        (16, 401),
        (7, 403),
        (5, 404),
        (6, 409),
        (8, 429),
        (12, 501),
        (14, 503),
        (4, 504),
        (13, 500),
    ];
    for (code, http) in rows {
        let msg = message_for(code);
        let body =
            serde_json::json!({ "statusCode": code, "statusMessage": msg, "message": "details" });
        let r = http_call(
            gw.first_addr(),
            HttpVersion::H1,
            json_request("POST", "/sample.echo.v1.Echo/Unary", &body.to_string()),
        )
        .await;
        assert_eq!(r.status.as_u16(), http, "code {code}: {}", r.text());
        let v = r.json();
        assert_eq!(v["code"], code);
        assert_eq!(v["message"], msg.as_str());
        assert_eq!(
            v["details"][0]["@type"],
            "type.googleapis.com/google.rpc.ErrorInfo"
        );
        assert_eq!(v["details"][0]["reason"], "PY_REASON");
    }
    // A server stream that fails after two messages: two lines, then the
    // error record.
    let body = serde_json::json!({ "statusCode": 9, "statusMessage": "stop ✋", "count": 3, "failAfter": 2 });
    let r = http_call(
        gw.first_addr(),
        HttpVersion::H2,
        json_request(
            "POST",
            "/sample.echo.v1.Echo/ServerStream",
            &body.to_string(),
        ),
    )
    .await;
    let lines = r.json_lines();
    assert_eq!(lines.len(), 3, "{}", r.text());
    assert_eq!(lines[2]["error"]["code"], 9);
    assert_eq!(lines[2]["error"]["message"], "stop ✋");
}

/// An upstream that answers HEADERS and then resets the stream: the
/// client gets a status in trailers (UNAVAILABLE), never a silent cut.
#[tokio::test]
async fn a_reset_after_headers_ends_with_unavailable_in_trailers() {
    let tcp = tokio::net::TcpListener::bind(loopback())
        .await
        .expect("bind");
    let backend = tcp.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((sock, _)) = tcp.accept().await {
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(sock).await else {
                    return;
                };
                while let Some(Ok((_req, mut respond))) = conn.accept().await {
                    let head = http::Response::builder()
                        .header("content-type", "application/grpc")
                        .body(())
                        .expect("head");
                    if let Ok(mut send) = respond.send_response(head, false) {
                        tokio::spawn(async move {
                            // Long enough for the head to be on its way
                            // downstream before the reset.
                            tokio::time::sleep(Duration::from_millis(300)).await;
                            send.send_reset(h2::Reason::INTERNAL_ERROR);
                        });
                    }
                }
            });
        }
    });
    let gw = spawn_gateway(&gateway_config(backend)).await;
    let mut h2 = raw_h2(gw.first_addr()).await;
    let (head, mut body) = raw_call(
        &mut h2,
        "/sample.echo.v1.Echo/Unary",
        &EchoRequest::default(),
    )
    .await;
    assert_eq!(head.status(), 200);
    assert!(head.headers().get("grpc-status").is_none(), "{head:?}");
    while let Some(d) = body.data().await {
        d.expect("no stream error downstream: the gateway ends it with trailers");
    }
    let trailers = body.trailers().await.expect("trailers").expect("present");
    assert_eq!(trailers["grpc-status"], "14", "{trailers:?}");
    let mut client = EchoClient::new(channel(gw.first_addr()).await);
    let e = client
        .unary(EchoRequest::default())
        .await
        .expect_err("fails");
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
}
