//! `gateway check` and `gateway run` refuse the same configs with the same
//! message: both go through `gateway::compile::compile`. Each bad config
//! is given to `check` (what the `check` subcommand calls) and to
//! `Gateway::start`.

use gateway::{Gateway, compile, config::GatewayConfig};
use tests::*;

const FRONT: &str = "[[listeners]]\nname = \"front\"\naddress = \"127.0.0.1:0\"\n";
const CLUSTER: &str =
    "[[clusters]]\nname = \"backend\"\nendpoints = [{ address = \"127.0.0.1:1\" }]\n";
const ROUTE: &str = "[[routes]]\ncluster = \"backend\"\n";
const ADMIN: &str = "[admin]\naddress = \"127.0.0.1:0\"\n";

fn parse(toml: &str) -> GatewayConfig {
    GatewayConfig::from_toml(toml).unwrap_or_else(|e| panic!("parses: {e}\n{toml}"))
}

#[tokio::test]
async fn check_and_start_refuse_the_same_configs_with_the_same_message() {
    let missing = "/nonexistent/gateway-test/missing.pem";
    let cases: Vec<(String, String)> = vec![
        (
            format!("{FRONT}{CLUSTER}[[routes]]\ncluster = \"ghost\"\n{ADMIN}"),
            "routes[0].cluster: unknown cluster `ghost`".into(),
        ),
        (
            format!(
                "{FRONT}{CLUSTER}[[routes]]\ncluster = \"backend\"\n\
                 match = {{ headers = [{{ name = \"x\", exact = \"a\", prefix = \"b\" }}] }}\n{ADMIN}"
            ),
            "routes[0].match.headers[0]: give exactly one of `exact`, `prefix` or `present`".into(),
        ),
        (
            format!(
                "[[listeners]]\nname = \"front\"\naddress = \"127.0.0.1:0\"\n\
                 deny_unless = [{{ name = \"bad header\", exact = \"a\" }}]\n{CLUSTER}{ROUTE}{ADMIN}"
            ),
            "listeners[0].deny_unless[0].name: `bad header` is not a header name".into(),
        ),
        (
            format!(
                "[[listeners]]\nname = \"front\"\naddress = \"127.0.0.1:0\"\n\
                 tls = {{ cert_file = \"{missing}\", key_file = \"{missing}\" }}\n{CLUSTER}{ROUTE}{ADMIN}"
            ),
            format!("listeners[0].tls.cert_file: cannot read `{missing}`"),
        ),
        (
            format!(
                "{FRONT}{CLUSTER}{ROUTE}{ADMIN}[cors]\nallowed_origins = [\"*\"]\nallow_credentials = true\n"
            ),
            "cors.allow_credentials: cannot be true with \"*\" in allowed_origins".into(),
        ),
        (
            format!("{FRONT}{CLUSTER}{ROUTE}{ADMIN}[transcoding]\nmax_body_bytes = 0\n"),
            "transcoding: max_body_bytes and max_message_bytes must be greater than 0".into(),
        ),
        (
            format!("{FRONT}{CLUSTER}{ROUTE}[admin]\naddress = \"0.0.0.0:0\"\n"),
            "admin.address: 0.0.0.0:0 is not a loopback address".into(),
        ),
        (
            format!(
                "{FRONT}{CLUSTER}{ROUTE}{ADMIN}tls = {{ cert_file = \"{missing}\", key_file = \"{missing}\" }}\n"
            ),
            format!("admin.tls.cert_file: cannot read `{missing}`"),
        ),
        (
            format!("{FRONT}{CLUSTER}{ROUTE}{ADMIN}max_concurrent_uploads = 0\n"),
            "admin.max_concurrent_uploads: must be at least 1".into(),
        ),
        (
            format!(
                "{FRONT}[[clusters]]\nname = \"backend\"\nendpoints = [{{ address = \"127.0.0.1:http\" }}]\n{ROUTE}{ADMIN}"
            ),
            "clusters[0].endpoints[0].address: `127.0.0.1:http` has no valid port".into(),
        ),
        (
            format!(
                "{FRONT}[[clusters]]\nname = \"backend\"\nendpoints = [{{ address = \":8080\" }}]\n{ROUTE}{ADMIN}"
            ),
            "clusters[0].endpoints[0].address: `:8080` has no host".into(),
        ),
        (
            format!("{FRONT}{CLUSTER}{CLUSTER}{ROUTE}{ADMIN}"),
            "clusters[1].name: duplicate cluster `backend`".into(),
        ),
        (
            format!(
                "{FRONT}[[clusters]]\nname = \"backend\"\nendpoints = [{{ address = \"127.0.0.1:1\" }}]\n\
                 tls = {{ ca_file = \"{missing}\" }}\n{ROUTE}{ADMIN}"
            ),
            format!("clusters[0].tls.ca_file: cannot read `{missing}`"),
        ),
        (
            format!("{FRONT}{CLUSTER}{ROUTE}{ADMIN}[registry]\npreload = [\"{missing}\"]\n"),
            format!("cannot load descriptor set {missing}"),
        ),
    ];
    for (toml, want) in &cases {
        let checked = compile::check(parse(toml))
            .await
            .expect_err(&format!("check accepted:\n{toml}"))
            .to_string();
        let started = match Gateway::start(parse(toml)).await {
            Ok(_) => panic!("start accepted:\n{toml}"),
            Err(e) => e.to_string(),
        };
        assert_eq!(checked, started, "check and start disagree on\n{toml}");
        assert!(
            checked.contains(want.as_str()),
            "{checked:?} should contain {want:?}\n{toml}"
        );
    }
}

/// A good config passes the check, without resolving host names (that
/// stays at start: no lookup is made here), and starts.
#[tokio::test]
async fn a_good_config_passes_check_without_dns() {
    let pki = TestPki::new();
    let toml = format!(
        "[[listeners]]\nname = \"front\"\naddress = \"127.0.0.1:0\"\n\
         tls = {{ cert_file = \"{}\", key_file = \"{}\" }}\n\
         [[clusters]]\nname = \"backend\"\nendpoints = [{{ address = \"no-such-host.invalid:80\" }}]\n{ROUTE}\
         [admin]\naddress = \"127.0.0.1:0\"\ntls = {{ cert_file = \"{}\", key_file = \"{}\" }}\n\
         [cors]\nallowed_origins = [\"https://app.example\"]\nallow_credentials = true\n",
        pki.cert_file.display(),
        pki.key_file.display(),
        pki.cert_file.display(),
        pki.key_file.display(),
    );
    compile::check(parse(&toml)).await.expect("valid");
    let good = toml.replace("no-such-host.invalid:80", "127.0.0.1:1");
    compile::check(parse(&good)).await.expect("valid");
    let gw = Gateway::start(parse(&good)).await.expect("starts");
    gw.shutdown().await;
}
