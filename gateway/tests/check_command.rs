//! `gateway check --config FILE` (the binary) refuses what
//! `gateway::compile::check` refuses, with its message, exit status 1, and
//! accepts a good config with exit status 0.

use std::{path::PathBuf, process::Command};

use gateway::{compile, config::GatewayConfig};

const BASE: &str = "[[listeners]]\nname = \"front\"\naddress = \"127.0.0.1:0\"\n\
    [[clusters]]\nname = \"backend\"\nendpoints = [{ address = \"127.0.0.1:1\" }]\n\
    [admin]\naddress = \"127.0.0.1:0\"\n";

fn write_config(test: &str, i: usize, text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "gateway-check-{}-{test}-{i}.toml",
        std::process::id()
    ));
    std::fs::write(&path, text).expect("write config");
    path
}

fn run_check(path: &PathBuf) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["check", "--config"])
        .arg(path)
        .env_remove(gateway::admin::TOKEN_ENV)
        .output()
        .expect("run gateway check");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_check_command_refuses_what_compile_refuses() {
    let bad = [
        format!("{BASE}[[routes]]\ncluster = \"ghost\"\n"),
        format!("{BASE}[cors]\nallowed_origins = [\"*\"]\nallow_credentials = true\n"),
        format!(
            "{BASE}tls = {{ cert_file = \"/nonexistent/c.pem\", key_file = \"/nonexistent/k.pem\" }}\n"
        ),
        BASE.replace("127.0.0.1:1", "127.0.0.1:http"),
    ];
    for (i, text) in bad.iter().enumerate() {
        let cfg = GatewayConfig::from_toml(text).expect("parses");
        let want = compile::check(cfg).await.expect_err(text).to_string();
        let path = write_config("bad", i, text);
        let (code, _, stderr) = run_check(&path);
        let _ = std::fs::remove_file(&path);
        assert_eq!(code, 1, "{stderr}");
        assert!(
            stderr.contains(&format!("gateway: {want}")),
            "{stderr:?} should contain {want:?}"
        );
    }
    let path = write_config(
        "good",
        0,
        &format!("{BASE}[[routes]]\ncluster = \"backend\"\n"),
    );
    let (code, stdout, stderr) = run_check(&path);
    let _ = std::fs::remove_file(&path);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.ends_with(": OK\n"), "{stdout}");
}
