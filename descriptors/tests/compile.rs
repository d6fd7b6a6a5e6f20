//! `.proto` uploads compiled in-process: imports among uploaded files and of
//! the bundled googleapis/well-known protos, and compiler-style error
//! positions.

use descriptors::{
    CompileError, Registry, SourceFile,
    compile::{MAX_IMPORT_DEPTH, MAX_OPTION_NESTING},
    compile_protos,
};
use http::Method;

fn file(path: &str, source: &str) -> SourceFile {
    SourceFile {
        path: path.to_owned(),
        source: source.to_owned(),
    }
}

/// The error text of a `CompileError::Source`.
fn source_error(files: &[SourceFile]) -> String {
    match compile_protos(files) {
        Err(CompileError::Source(message)) => message,
        Err(other) => panic!("expected a source error, got {other:?}"),
        Ok(_) => panic!("expected a source error, but it compiled"),
    }
}

const COMMON: &str = r#"syntax = "proto3";
package acme.common.v1;

import "google/protobuf/timestamp.proto";

message Money {
  string currency = 1;
  int64 units = 2;
}

message Audit {
  google.protobuf.Timestamp created = 1;
}
"#;

const ORDERS: &str = r#"syntax = "proto3";
package acme.orders.v1;

import "google/api/annotations.proto";
import "google/protobuf/timestamp.proto";
import "acme/common/v1/common.proto";

service Orders {
  rpc GetOrder(GetOrderRequest) returns (Order) {
    option (google.api.http) = { get: "/v1/{name=orders/*}" };
  }
  rpc CreateOrder(CreateOrderRequest) returns (Order) {
    option (google.api.http) = { post: "/v1/orders" body: "order" };
  }
  rpc Ping(GetOrderRequest) returns (Order);
}

message GetOrderRequest { string name = 1; }
message CreateOrderRequest { Order order = 1; }
message Order {
  string name = 1;
  acme.common.v1.Money total = 2;
  google.protobuf.Timestamp placed = 3;
  acme.common.v1.Audit audit = 4;
}
"#;

#[test]
fn multi_file_upload_registers_with_http_rules() {
    // The importing file first: imports resolve among all uploaded files.
    let files = [
        file("acme/orders/v1/orders.proto", ORDERS),
        file("acme/common/v1/common.proto", COMMON),
    ];
    let fds = compile_protos(&files).unwrap();

    let registry = Registry::new();
    let outcome = registry.put("orders", &fds).unwrap();
    assert!(!outcome.replaced);
    assert_eq!(outcome.set.services, ["acme.orders.v1.Orders"]);
    assert_eq!(outcome.set.methods.len(), 3);
    assert_eq!(
        outcome.set.http_rules.len(),
        2,
        "{:?}",
        outcome.set.http_rules
    );
    // --include_imports: the imported google files are in the set too.
    for name in [
        "google/api/annotations.proto",
        "google/api/http.proto",
        "google/protobuf/timestamp.proto",
        "google/protobuf/descriptor.proto",
    ] {
        assert!(
            outcome.set.files.iter().any(|f| f == name),
            "{name} missing"
        );
    }

    let snapshot = registry.snapshot();
    let get = snapshot
        .match_http(&Method::GET, "/v1/orders/o-1")
        .expect("GET rule matches");
    assert_eq!(get.method.grpc_path, "/acme.orders.v1.Orders/GetOrder");
    let post = snapshot
        .match_http(&Method::POST, "/v1/orders")
        .expect("POST rule matches");
    assert_eq!(post.method.grpc_path, "/acme.orders.v1.Orders/CreateOrder");
    assert!(snapshot.match_http(&Method::GET, "/v1/ping").is_none());
    assert!(snapshot.method("/acme.orders.v1.Orders/Ping").is_some());
}

#[test]
fn output_is_deterministic() {
    let files = [
        file("acme/common/v1/common.proto", COMMON),
        file("acme/orders/v1/orders.proto", ORDERS),
    ];
    assert_eq!(
        compile_protos(&files).unwrap(),
        compile_protos(&files).unwrap()
    );
}

#[test]
fn non_bundled_googleapis_files_import() {
    // client.proto and field_behavior.proto are embedded but not in the
    // bundled descriptor set: they come along in the upload.
    let src = r#"syntax = "proto3";
package acme.v1;
import "google/api/client.proto";
import "google/api/field_behavior.proto";
import "google/rpc/status.proto";
service Things {
  option (google.api.default_host) = "things.example.com";
  rpc Get(Req) returns (google.rpc.Status);
}
message Req { string id = 1 [(google.api.field_behavior) = REQUIRED]; }
"#;
    let fds = compile_protos(&[file("acme/v1/things.proto", src)]).unwrap();
    let registry = Registry::new();
    let outcome = registry.put("things", &fds).unwrap();
    assert!(
        outcome
            .set
            .files
            .iter()
            .any(|f| f == "google/api/client.proto")
    );
    assert!(registry.snapshot().method("/acme.v1.Things/Get").is_some());
}

#[test]
fn syntax_error_has_position() {
    let src = "syntax = \"proto3\";\n\nmessage Foo {\n  string name = 1\n  int32 id = 2;\n}\n";
    let message = source_error(&[file("x.proto", src)]);
    // The missing `;` is noticed at `int32` on line 5, column 3.
    assert!(message.starts_with("x.proto:5:3: "), "{message}");
    assert_eq!(message.lines().count(), 1, "{message}");
}

#[test]
fn unknown_token_position_counts_characters() {
    // A non-ASCII comment before the error on the same line: the column is in
    // characters, not bytes.
    let src = "syntax = \"proto3\";\n/* é */ message Foo { string name = 1; } $\n";
    let message = source_error(&[file("x.proto", src)]);
    assert!(message.starts_with("x.proto:2:42: "), "{message}");
}

#[test]
fn unknown_import_names_the_missing_file() {
    let src = "syntax = \"proto3\";\npackage a;\nimport \"acme/missing.proto\";\nmessage A {}\n";
    let message = source_error(&[file("a.proto", src)]);
    assert!(message.starts_with("a.proto:3:1: "), "{message}");
    assert!(message.contains("acme/missing.proto"), "{message}");
}

#[test]
fn unknown_import_in_an_imported_file() {
    let a = "syntax = \"proto3\";\nimport \"b.proto\";\n";
    let b = "syntax = \"proto3\";\n\nimport \"nowhere.proto\";\n";
    let message = source_error(&[file("a.proto", a), file("b.proto", b)]);
    assert!(message.starts_with("b.proto:3:1: "), "{message}");
    assert!(message.contains("nowhere.proto"), "{message}");
}

#[test]
fn undefined_type_has_position() {
    let src =
        "syntax = \"proto3\";\npackage p;\n\nmessage A {\n  Foo foo = 1;\n  Bar bar = 2;\n}\n";
    let message = source_error(&[file("p/a.proto", src)]);
    let lines: Vec<&str> = message.lines().collect();
    assert_eq!(lines.len(), 2, "{message}");
    assert!(lines[0].starts_with("p/a.proto:5:3: "), "{message}");
    assert!(lines[0].contains("Foo"), "{message}");
    assert!(lines[1].starts_with("p/a.proto:6:3: "), "{message}");
    assert!(lines[1].contains("Bar"), "{message}");
}

#[test]
fn duplicate_definition_points_at_the_second() {
    let src = "syntax = \"proto3\";\nmessage A {}\nmessage A {}\n";
    let message = source_error(&[file("d.proto", src)]);
    assert!(message.starts_with("d.proto:3:"), "{message}");
}

#[test]
fn reserved_number_points_at_the_field() {
    let src = "syntax = \"proto3\";\nmessage A {\n  reserved 2;\n  string s = 2;\n}\n";
    let message = source_error(&[file("r.proto", src)]);
    assert!(message.starts_with("r.proto:4:"), "{message}");
}

#[test]
fn import_cycle_is_reported() {
    let a = "syntax = \"proto3\";\nimport \"b.proto\";\n";
    let b = "syntax = \"proto3\";\nimport \"a.proto\";\n";
    let message = source_error(&[file("a.proto", a), file("b.proto", b)]);
    assert!(message.contains("cycle"), "{message}");
}

/// `option (r) = { c { c { ... } } }` nested `depth` levels.
fn nested_option_source(package: &str, depth: usize, import: &str) -> String {
    let value = format!("{}{}", "c { ".repeat(depth - 1), "} ".repeat(depth - 1));
    option_source(package, &value, import)
}

/// A proto2 file defining a recursive option type `R` and a message whose
/// option `(r)` is `{ value }`.
fn option_source(package: &str, value: &str, import: &str) -> String {
    format!(
        "syntax = \"proto2\";\npackage {package};\nimport \"google/protobuf/descriptor.proto\";\n{import}\
         message R {{ optional R c = 1; optional string s = 2; }}\n\
         extend google.protobuf.MessageOptions {{ optional R r = 50000; }}\n\
         message X {{ option (r) = {{ {value} }}; }}\n"
    )
}

/// A chain of `n` files, `f0` importing `f1` ... importing `f{n-1}`, the last
/// one with an option value nested `option_depth` deep.
fn import_chain(n: usize, option_depth: usize) -> Vec<SourceFile> {
    (0..n)
        .map(|i| {
            let path = format!("f{i}.proto");
            if i + 1 == n {
                return file(
                    &path,
                    &nested_option_source(&format!("p{i}"), option_depth, ""),
                );
            }
            let import = format!("import \"f{}.proto\";\n", i + 1);
            file(
                &path,
                &format!("syntax = \"proto3\";\npackage p{i};\n{import}message M {{}}\n"),
            )
        })
        .collect()
}

/// Compiles on a thread with the stack of a tokio blocking-pool thread (2 MiB).
fn compile_on_small_stack(files: Vec<SourceFile>) -> Result<Vec<u8>, CompileError> {
    std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(move || compile_protos(&files))
        .unwrap()
        .join()
        .expect("no stack overflow")
}

#[test]
fn deepest_allowed_upload_fits_a_blocking_thread_stack() {
    // protox resolves imports recursively and prost-reflect parses option
    // values recursively: the worst case the limits allow must not overflow
    // (a stack overflow aborts the whole gateway).
    let files = import_chain(MAX_IMPORT_DEPTH, MAX_OPTION_NESTING);
    let fds = compile_on_small_stack(files).unwrap();
    Registry::new().put("deep", &fds).unwrap();
}

#[test]
fn import_chain_beyond_the_limit_is_rejected() {
    let files = import_chain(MAX_IMPORT_DEPTH + 1, 2);
    let Err(CompileError::Source(message)) = compile_on_small_stack(files) else {
        panic!("expected a source error");
    };
    assert!(
        message.starts_with("f0.proto: imports nest more than 64"),
        "{message}"
    );
    // The same files uploaded as a shallow fan-out are fine.
    let fan: Vec<SourceFile> = (0..200)
        .map(|i| {
            file(
                &format!("g{i}.proto"),
                &format!("syntax = \"proto3\";\npackage g{i};\n"),
            )
        })
        .chain([file(
            "all.proto",
            &(0..200)
                .map(|i| format!("import \"g{i}.proto\";\n"))
                .collect::<String>(),
        )])
        .collect();
    assert!(compile_protos(&fan).is_ok());
}

#[test]
fn option_nesting_beyond_the_limit_is_rejected() {
    let ok = nested_option_source("p", MAX_OPTION_NESTING, "");
    assert!(compile_protos(&[file("o.proto", &ok)]).is_ok());
    let deep = nested_option_source("p", MAX_OPTION_NESTING + 1, "");
    let message = source_error(&[file("o.proto", &deep)]);
    assert!(
        message.starts_with("o.proto: an option value nests messages 33 levels"),
        "{message}"
    );
    // Braces inside strings are not nesting.
    let strings = option_source(
        "p",
        &format!(r#"s: "{}\" {}""#, "{".repeat(100), "<".repeat(100)),
        "",
    );
    assert!(compile_protos(&[file("o.proto", &strings)]).is_ok());
    // ... and closing braces inside strings do not hide nesting.
    let hidden = format!(
        "{}{}",
        r#"c { s: "}" "#.repeat(MAX_OPTION_NESTING),
        "} ".repeat(MAX_OPTION_NESTING)
    );
    let message = source_error(&[file("o.proto", &option_source("p", &hidden, ""))]);
    assert!(message.contains("nests messages 33 levels"), "{message}");
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any source text compiles or is an error: never a panic.
        #[test]
        fn never_panics(src in "(syntax = \"proto3\";)?[ -~\n]{0,200}") {
            let _ = compile_protos(&[file("f.proto", &src)]);
        }

        /// Near-valid sources, one token mutated.
        #[test]
        fn never_panics_near_valid(cut in 0usize..ORDERS.len(), junk in "[{};=\"a-z0-9 ]{0,3}") {
            let mut src = ORDERS.to_owned();
            let cut = (0..=cut).rev().find(|&i| src.is_char_boundary(i)).unwrap_or(0);
            src.insert_str(cut, &junk);
            let _ = compile_protos(&[
                file("acme/orders/v1/orders.proto", &src),
                file("acme/common/v1/common.proto", COMMON),
            ]);
        }
    }
}
