//! A real browser as the user: headless Chromium loads a page from another
//! origin (a static server started here) that calls the gateway with
//! `fetch()`: a unary JSON call (with a CORS preflight) and a server
//! stream read incrementally through a ReadableStream. The page posts what
//! it saw back to the static server, and the test asserts it.

use std::{convert::Infallible, net::SocketAddr, process::Stdio, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, service::service_fn};
use serde_json::Value;
use tests::*;
use tokio::sync::mpsc;

const PAGE: &str = r#"<!doctype html>
<html><body><pre id="out">running</pre>
<script>
const GW = "__GATEWAY__";
async function run() {
  const result = {};
  try {
    const r = await fetch(GW + "/CodenameCreator/GetCodename", {
      method: "POST",
      headers: { "content-type": "application/json", "x-token": "browser" },
      body: JSON.stringify({ category: "space" }),
    });
    result.unaryStatus = r.status;
    result.unaryServer = r.headers.get("x-server-id");
    result.unary = await r.json();

    const s = await fetch(GW + "/v1/shelves/1:watch?count=4&intervalMs=150", { headers: { accept: "application/x-ndjson" } });
    result.streamStatus = s.status;
    const reader = s.body.getReader();
    const decoder = new TextDecoder();
    const t0 = performance.now();
    result.chunks = [];
    let buffered = "";
    result.books = [];
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      result.chunks.push(Math.round(performance.now() - t0));
      buffered += decoder.decode(value, { stream: true });
      let nl;
      while ((nl = buffered.indexOf("\n")) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        if (line.trim()) result.books.push(JSON.parse(line));
      }
    }
  } catch (e) {
    result.error = String(e);
  }
  document.getElementById("out").textContent = JSON.stringify(result);
  await fetch("/result", { method: "POST", body: JSON.stringify(result) });
}
run();
</script></body></html>"#;

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            std::process::Command::new(b)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
}

/// Serves the page and receives the page's report.
async fn static_server(gateway: SocketAddr) -> (SocketAddr, mpsc::Receiver<Value>) {
    let listener = tokio::net::TcpListener::bind(loopback())
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::channel(1);
    let page = PAGE.replace("__GATEWAY__", &format!("http://{gateway}"));
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let page = page.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let page = page.clone();
                    let tx = tx.clone();
                    async move {
                        let resp = if req.uri().path() == "/result" {
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|c| c.to_bytes())
                                .unwrap_or_default();
                            if let Ok(v) = serde_json::from_slice(&body) {
                                let _ = tx.send(v).await;
                            }
                            Response::new(Full::new(Bytes::from_static(b"ok")))
                        } else if req.uri().path() == "/" {
                            let mut r = Response::new(Full::new(Bytes::from(page)));
                            r.headers_mut()
                                .insert("content-type", "text/html".parse().expect("ct"));
                            r
                        } else {
                            let mut r = Response::new(Full::new(Bytes::new()));
                            *r.status_mut() = http::StatusCode::NOT_FOUND;
                            r
                        };
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    (addr, rx)
}

#[tokio::test]
#[ignore = "needs Chromium (Debian package `chromium`); scripts/test.sh installs it and runs ignored tests"]
async fn browser_fetch_unary_and_streaming_cross_origin() {
    let browser = chromium()
        .expect("chromium is not installed: apt-get install chromium (scripts/test.sh does)");
    let mut opts = ServerOptions::new("browser-backend");
    opts.codename_interval = Duration::from_millis(100);
    let s = spawn_sample_with(opts).await;
    // The page's origin is only known after binding the static server, and
    // the gateway's address is needed for the page: bind the gateway
    // first with a permissive origin list for 127.0.0.1 pages.
    let gw = spawn_gateway(&format!(
        "[cors]\nallowed_origins = [\"*\"]\nexposed_headers = [\"x-server-id\"]\n{}",
        simple_config(&[&s], "")
    ))
    .await;
    gw.registry()
        .put("samples", sample_services::FILE_DESCRIPTOR_SET)
        .expect("register");
    let (page, mut results) = static_server(gw.first_addr()).await;

    let profile = tempfile::tempdir().expect("profile dir");
    let mut child = tokio::process::Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("http://{page}/"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start chromium");
    let result = tokio::time::timeout(Duration::from_secs(60), results.recv()).await;
    let _ = child.start_kill();
    let _ = child.wait().await;
    let result = result
        .expect("the page reported within 60 s")
        .expect("report");

    assert!(result.get("error").is_none(), "{result}");
    assert_eq!(result["unaryStatus"], 200, "{result}");
    assert_eq!(
        result["unaryServer"], "browser-backend",
        "exposed header readable: {result}"
    );
    assert_eq!(
        result["unary"]["name"]
            .as_str()
            .map(|n| n.split(' ').count()),
        Some(2),
        "{result}"
    );
    assert_eq!(result["streamStatus"], 200);
    let books = result["books"].as_array().expect("books");
    assert_eq!(books.len(), 4, "{result}");
    assert!(books.iter().all(|b| {
        b["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("shelves/1/books/"))
    }));
    // Read incrementally: the chunks came over time, not in one piece.
    let chunks: Vec<u64> = result["chunks"]
        .as_array()
        .expect("chunks")
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    assert!(chunks.len() >= 3, "{result}");
    assert!(
        chunks[chunks.len() - 1] - chunks[0] >= 300,
        "stream was batched: {chunks:?}"
    );
}
