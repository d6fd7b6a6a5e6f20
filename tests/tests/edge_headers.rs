//! The edge: `X-Forwarded-For` / `Forwarded` / `X-Forwarded-Proto` carry
//! the real peer (inbound values kept only from trusted proxies), and HTTP
//! paths are normalized before routes and deny rules see them.

use tests::*;

/// A web app that answers with the path and forwarding headers it got.
async fn echo_app() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind(loopback())
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        let h = |n: &str| {
                            req.headers()
                                .get_all(n)
                                .iter()
                                .filter_map(|v| v.to_str().ok())
                                .collect::<Vec<_>>()
                                .join(" | ")
                        };
                        let v = serde_json::json!({
                            "path": req.uri().path(),
                            "xff": h("x-forwarded-for"),
                            "forwarded": h("forwarded"),
                            "proto": h("x-forwarded-proto"),
                        });
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from(v.to_string())),
                        ))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

fn config(web: std::net::SocketAddr) -> String {
    format!(
        "[[listeners]]\nname = \"front\"\naddress = \"127.0.0.1:0\"\nescaped_slashes = \"reject\"\n\
         [[listeners]]\nname = \"behind-lb\"\naddress = \"127.0.0.1:0\"\ntrusted_proxies = [\"127.0.0.0/8\"]\n\
         [[clusters]]\nname = \"web\"\nprotocol = \"http1\"\nendpoints = [{{ address = \"{web}\" }}]\n\
         [[routes]]\nname = \"admin\"\ncluster = \"web\"\nmatch = {{ path_prefix = \"/admin/\" }}\n\
         deny_unless = [{{ name = \"x-admin\", exact = \"yes\" }}]\n\
         [[routes]]\ncluster = \"web\"\n"
    )
}

async fn get(
    addr: std::net::SocketAddr,
    v: HttpVersion,
    path: &str,
    headers: &[(&str, &str)],
) -> HttpResponse {
    let mut b = http::Request::get(path);
    for (k, val) in headers {
        b = b.header(*k, *val);
    }
    http_call(addr, v, b.body(body("")).expect("request")).await
}

#[tokio::test]
async fn forwarding_headers_carry_the_real_peer() {
    let gw = spawn_gateway(&config(echo_app().await)).await;
    let spoof = [
        ("x-forwarded-for", "6.6.6.6"),
        ("forwarded", "for=6.6.6.6"),
        ("x-forwarded-proto", "https"),
    ];
    for v in [HttpVersion::H1, HttpVersion::H2] {
        // An untrusted client cannot claim another address.
        let r = get(gw.addr("front").expect("front"), v, "/page", &spoof).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let j = r.json();
        assert_eq!(j["xff"], "127.0.0.1", "{j}");
        assert_eq!(j["forwarded"], "for=127.0.0.1;proto=http", "{j}");
        assert_eq!(j["proto"], "http", "{j}");
        // A trusted proxy's values are kept and the peer appended.
        let r = get(gw.addr("behind-lb").expect("listener"), v, "/page", &spoof).await;
        let j = r.json();
        assert_eq!(j["xff"], "6.6.6.6, 127.0.0.1", "{j}");
        assert_eq!(
            j["forwarded"], "for=6.6.6.6, for=127.0.0.1;proto=http",
            "{j}"
        );
        assert_eq!(j["proto"], "https", "{j}");
    }
}

#[tokio::test]
async fn paths_are_normalized_before_routes_and_rules() {
    let gw = spawn_gateway(&config(echo_app().await)).await;
    let front = gw.addr("front").expect("front");
    // Dot segments and doubled slashes: the backend sees the clean path.
    let r = get(front, HttpVersion::H1, "/app//a/./b/../c", &[]).await;
    assert_eq!(r.json()["path"], "/app/a/c", "{}", r.text());
    // A dot-segment detour into /admin/ meets the admin route's deny rule.
    for path in ["/public/../admin/x", "/public/%2e%2e/admin/x", "//admin//x"] {
        let r = get(front, HttpVersion::H1, path, &[]).await;
        assert_eq!(r.status, 403, "{path}: {}", r.text());
        let r = get(front, HttpVersion::H2, path, &[("x-admin", "yes")]).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.json()["path"], "/admin/x");
    }
    // Escaped slashes: refused on `front` (reject), kept on the other.
    let r = get(front, HttpVersion::H1, "/admin%2Fx", &[]).await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = get(
        gw.addr("behind-lb").expect("listener"),
        HttpVersion::H1,
        "/files/a%2Fb",
        &[],
    )
    .await;
    assert_eq!(r.json()["path"], "/files/a%2Fb");
}
