//! A gRPC implementation other than tonic (Python grpcio) through the
//! gateway: unary and bidi. `.ci/run` installs grpcio and grpcio-tools.

use std::{process::Command, time::Duration};

use tests::*;

#[tokio::test]
async fn python_grpcio_unary_and_bidi_through_gateway() {
    let check = Command::new("python3")
        .args(["-c", "import grpc, grpc_tools"])
        .output();
    match check {
        Ok(o) if o.status.success() => {}
        _ => panic!(
            "python3 with grpcio and grpcio-tools is required: pip install grpcio grpcio-tools (see .ci/run)"
        ),
    }
    let mut opts = ServerOptions::new("py-backend");
    opts.codename_interval = Duration::from_millis(50);
    let s = spawn_sample_with(opts).await;
    let gw = spawn_gateway(&simple_config(&[&s], "")).await;
    let addr = gw.first_addr().to_string();
    let protos = repo_path("sample-services/proto").display().to_string();
    let v = run_python_script("grpcio_client.py", &[addr, protos], 60, "unary and bidi").await;
    assert_eq!(v["unary_server"], "py-backend");
    assert_eq!(v["unary"].as_str().expect("name").split(' ').count(), 2);
    let names: Vec<&str> = v["stream"]
        .as_array()
        .expect("stream")
        .iter()
        .filter_map(|n| n.as_str())
        .collect();
    assert_eq!(names.len(), 8, "{names:?}");
    // After the switch to "space", the last names use space adjectives.
    const SPACE: [&str; 10] = [
        "Astral",
        "Celestial",
        "Cosmic",
        "Galactic",
        "Interstellar",
        "Lunar",
        "Nebular",
        "Orbital",
        "Solar",
        "Stellar",
    ];
    assert!(
        names[..3]
            .iter()
            .all(|n| !SPACE.iter().any(|a| n.starts_with(a))),
        "{names:?}"
    );
    assert!(SPACE.iter().any(|a| names[7].starts_with(a)), "{names:?}");
}

/// A grpcio client whose calls are all refused at once (`deny_unless`,
/// answered before the body is read): 3,000 of them on one channel, 64 in
/// flight, all end PERMISSION_DENIED in grpcio's own status handling, none
/// UNAVAILABLE or UNKNOWN, and none reaches the backend. (grpcio sends each
/// small body with its headers, so the lingering read of late bodies is
/// covered by `connection_lifecycle::answers_before_the_request_ends_keep_the_connection`.)
#[tokio::test]
async fn grpcio_calls_refused_at_once_keep_their_connection() {
    let s = spawn_sample("s0").await;
    let gw = spawn_gateway(&simple_config(&[&s], "").replacen(
        "address = \"127.0.0.1:0\"\n",
        "address = \"127.0.0.1:0\"\ndeny_unless = [{ name = \"x-pass\", exact = \"ok\" }]\n",
        1,
    ))
    .await;
    let addr = gw.first_addr().to_string();
    let protos = repo_path("sample-services/proto").display().to_string();
    let v = run_python_script(
        "grpcio_refused_calls.py",
        &[addr, protos, "3000".to_owned()],
        120,
        "refused calls",
    )
    .await;
    assert_eq!(
        v["codes"],
        serde_json::json!({ "PERMISSION_DENIED": 3000 }),
        "{v}"
    );
    assert_eq!(s.stats.requests(), 0);
}
