//! Measures registering a large descriptor set: compile time (protox, for
//! `.proto` uploads), registration time (`Registry::put`: decode, validate,
//! index, swap) and resident memory per registered method. Prints a table.
//!
//! `cargo run --release -p descriptors --example register_large [SERVICES] [METHODS]`

use std::{fmt::Write as _, time::Instant};

use descriptors::{
    Registry,
    compile::{SourceFile, compile_protos},
};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4)
}

/// Registers a set from a file in this fresh process and prints the
/// resident memory it added (KiB), so compile-time allocations don't blur
/// the figure.
fn register_only(path: &str) {
    let bytes = std::fs::read(path).expect("read set");
    let registry = Registry::new();
    let before = rss_kib();
    registry.put("large", &bytes).expect("registers");
    let first = rss_kib().saturating_sub(before);
    for _ in 0..3 {
        registry.put("large", &bytes).expect("replaces");
    }
    let after_replaces = rss_kib().saturating_sub(before);
    eprintln!("{after_replaces}");
    println!("{first}");
}

fn main() {
    if let Some(i) = std::env::args().position(|a| a == "--register-only") {
        let path = std::env::args().nth(i + 1).expect("file");
        return register_only(&path);
    }
    let mut args = std::env::args().skip(1);
    let services: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let methods: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    // One file per service, each with its own messages, REST rules and
    // well-known-type imports, like a large API surface.
    let mut files = Vec::new();
    for s in 0..services {
        let mut src = format!(
            "syntax = \"proto3\";\npackage bench.s{s}.v1;\nimport \"google/api/annotations.proto\";\nimport \"google/protobuf/timestamp.proto\";\n"
        );
        for m in 0..methods {
            let _ = write!(
                src,
                "message Req{m} {{ string name = 1; int64 id = 2; repeated string tags = 3; google.protobuf.Timestamp at = 4; map<string, string> labels = 5; }}\n\
                 message Resp{m} {{ string name = 1; repeated Req{m} items = 2; }}\n"
            );
        }
        let _ = writeln!(src, "service Service{s} {{");
        for m in 0..methods {
            let _ = writeln!(
                src,
                "  rpc Method{m}(Req{m}) returns (Resp{m}) {{ option (google.api.http) = {{ get: \"/v1/s{s}/m{m}/{{name=things/*}}\" }}; }}"
            );
        }
        src.push_str("}\n");
        files.push(SourceFile {
            path: format!("bench/s{s}/v1/service.proto"),
            source: src,
        });
    }
    let total_methods = services * methods;

    let t = Instant::now();
    let bytes = compile_protos(&files).expect("compiles");
    let compile = t.elapsed();

    let registry = Registry::new();
    let t = Instant::now();
    registry.put("large", &bytes).expect("registers");
    let put = t.elapsed();
    let file = std::env::temp_dir().join(format!("register-large-{}.pb", std::process::id()));
    std::fs::write(&file, &bytes).expect("write set");
    let out = std::process::Command::new(std::env::current_exe().expect("exe"))
        .arg("--register-only")
        .arg(&file)
        .output()
        .expect("run");
    if std::env::var_os("REGISTER_LARGE_KEEP").is_some() {
        eprintln!("set kept in {}", file.display());
    } else {
        let _ = std::fs::remove_file(&file);
    }
    let added_kib: u64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    let replaced_kib = String::from_utf8_lossy(&out.stderr).trim().to_string();
    // A replace of the same set (what an operator's redeploy does).
    let t = Instant::now();
    registry.put("large", &bytes).expect("replaces");
    let replace = t.elapsed();
    let snap = registry.snapshot();
    assert_eq!(snap.methods().count(), total_methods);
    let t = Instant::now();
    let mut hits = 0;
    for i in 0..10_000 {
        let path = format!("/v1/s{}/m{}/things/x", i % services, i % methods);
        hits += usize::from(snap.match_http(&http::Method::GET, &path).is_some());
    }
    let matched = t.elapsed();
    assert_eq!(hits, 10_000);

    println!("| what | value |");
    println!("|---|---|");
    println!(
        "| services x methods | {services} x {methods} = {total_methods} methods, {total_methods} REST rules |"
    );
    println!("| descriptor set size | {} KiB |", bytes.len() / 1024);
    println!(
        "| compile .proto sources (protox) | {:.0} ms |",
        compile.as_secs_f64() * 1e3
    );
    println!(
        "| register (decode, validate, index, swap) | {:.0} ms |",
        put.as_secs_f64() * 1e3
    );
    println!(
        "| replace the same set | {:.0} ms |",
        replace.as_secs_f64() * 1e3
    );
    println!(
        "| resident memory added by the set (fresh process) | {added_kib} KiB ({:.2} KiB per method) |",
        added_kib as f64 / total_methods as f64
    );
    println!(
        "| resident memory after 3 more replaces (no growth = no leak) | {replaced_kib} KiB |"
    );
    println!(
        "| REST route match | {:.2} µs per request |",
        matched.as_secs_f64() * 1e6 / 10_000.0
    );
}
