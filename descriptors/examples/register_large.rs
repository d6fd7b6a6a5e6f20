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

/// The gateway binary's allocator (see gateway/src/main.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "common/rss.rs"]
mod rss;
use rss::rss_kib;

/// Registers a set from a file in this fresh process and prints the
/// resident memory it added (KiB), so compile-time allocations don't blur
/// the figure: after the first put, after 3 replaces with the same bytes,
/// then after 3 replaces alternating with a changed set (`changed`, then
/// the original, then `changed`), one figure per line.
fn register_only(path: &str, changed: &str) {
    let bytes = std::fs::read(path).expect("read set");
    let changed = std::fs::read(changed).expect("read changed set");
    let registry = Registry::new();
    let before = rss_kib();
    registry.put("large", &bytes).expect("registers");
    println!("{}", settled_rss_kib(&registry).saturating_sub(before));
    for _ in 0..3 {
        registry.put("large", &bytes).expect("replaces");
    }
    println!("{}", settled_rss_kib(&registry).saturating_sub(before));
    for set in [&changed, &bytes, &changed] {
        registry.put("large", set).expect("replaces");
    }
    println!("{}", settled_rss_kib(&registry).saturating_sub(before));
}

/// Resident memory in the steady state: once the registry's prost-reflect
/// pool is dropped (the gateway drops it 30 s after its last use), and the
/// allocator has returned what was freed (mimalloc gives freed pages back
/// to the OS about a second later, on its next allocations, as a running
/// gateway makes for every request).
fn settled_rss_kib(registry: &Registry) -> u64 {
    registry.release_idle_pool(std::time::Duration::ZERO);
    // Until it stops falling (at most ~12 s): mimalloc purges a little on
    // each of its later allocations.
    let mut last = rss_kib();
    for _ in 0..10 {
        std::thread::sleep(std::time::Duration::from_millis(1200));
        let churn: Vec<Vec<u8>> = (0..2000).map(|i| vec![0u8; 16 + i % 512]).collect();
        drop(churn);
        let now = rss_kib();
        if now + 64 >= last {
            return now.min(last);
        }
        last = now;
    }
    last
}

/// One file per service, each with its own messages, REST rules and
/// well-known-type imports, like a large API surface. `changed` adds a
/// field to every request message (a new version of the same API).
fn sources(services: usize, methods: usize, changed: bool) -> Vec<SourceFile> {
    let extra = if changed { " string note = 6;" } else { "" };
    let mut files = Vec::new();
    for s in 0..services {
        let mut src = format!(
            "syntax = \"proto3\";\npackage bench.s{s}.v1;\nimport \"google/api/annotations.proto\";\nimport \"google/protobuf/timestamp.proto\";\n"
        );
        for m in 0..methods {
            let _ = write!(
                src,
                "message Req{m} {{ string name = 1; int64 id = 2; repeated string tags = 3; google.protobuf.Timestamp at = 4; map<string, string> labels = 5;{extra} }}\n\
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
    files
}

fn main() {
    if let Some(i) = std::env::args().position(|a| a == "--register-only") {
        let path = std::env::args().nth(i + 1).expect("file");
        let changed = std::env::args().nth(i + 2).expect("changed file");
        return register_only(&path, &changed);
    }
    let mut args = std::env::args().skip(1);
    let services: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let methods: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    let files = sources(services, methods, false);
    let total_methods = services * methods;

    let t = Instant::now();
    let bytes = compile_protos(&files).expect("compiles");
    let compile = t.elapsed();

    let registry = Registry::new();
    let t = Instant::now();
    registry.put("large", &bytes).expect("registers");
    let put = t.elapsed();
    let changed = compile_protos(&sources(services, methods, true)).expect("compiles");
    let dir = std::env::temp_dir();
    let file = dir.join(format!("register-large-{}.pb", std::process::id()));
    let changed_file = dir.join(format!("register-large-{}-changed.pb", std::process::id()));
    std::fs::write(&file, &bytes).expect("write set");
    std::fs::write(&changed_file, &changed).expect("write set");
    let out = std::process::Command::new(std::env::current_exe().expect("exe"))
        .arg("--register-only")
        .arg(&file)
        .arg(&changed_file)
        .output()
        .expect("run");
    if std::env::var_os("REGISTER_LARGE_KEEP").is_some() {
        eprintln!(
            "sets kept in {} and {}",
            file.display(),
            changed_file.display()
        );
    } else {
        let _ = std::fs::remove_file(&file);
        let _ = std::fs::remove_file(&changed_file);
    }
    let figures: Vec<u64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().parse().unwrap_or(0))
        .collect();
    let figure = |i: usize| figures.get(i).copied().unwrap_or(0);
    let added_kib = figure(0);
    // A replace of the same set (what an operator's redeploy does).
    let t = Instant::now();
    registry.put("large", &bytes).expect("replaces");
    let replace = t.elapsed();
    let snap = registry.snapshot();
    assert_eq!(snap.methods().count(), total_methods);
    // What server reflection costs once the pool was dropped.
    registry.release_idle_pool(std::time::Duration::ZERO);
    let t = Instant::now();
    assert!(
        snap.pool()
            .get_service_by_name("bench.s0.v1.Service0")
            .is_some()
    );
    let rebuild = t.elapsed();
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
        "| rebuild the dropped descriptor pool (server reflection) | {:.0} ms |",
        rebuild.as_secs_f64() * 1e3
    );
    println!(
        "| resident memory added by the set (fresh process) | {added_kib} KiB ({:.2} KiB per method) |",
        added_kib as f64 / total_methods as f64
    );
    println!(
        "| resident memory after 3 more replaces (no growth = no leak) | {} KiB |",
        figure(1)
    );
    println!(
        "| then after 3 replaces alternating with a changed set | {} KiB |",
        figure(2)
    );
    println!(
        "| REST route match | {:.2} µs per request |",
        matched.as_secs_f64() * 1e6 / 10_000.0
    );
}
