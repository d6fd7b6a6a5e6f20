//! The codec's benchmark messages, shared by `benches/json.rs` and
//! `examples/peak_alloc.rs`: the test protos registered, and JSON bodies of
//! three shapes.

use std::path::PathBuf;

use descriptors::Registry;

/// A registry of the test protos (`example.library.v1`, `example.types.v1`).
pub(crate) fn registry() -> Registry {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let fds = protox::Compiler::new([root.join("tests/protos"), root.join("../proto")])
        .expect("include paths exist")
        .include_imports(true)
        .open_files([
            "example/library/v1/library.proto",
            "example/types/v1/types.proto",
        ])
        .expect("test protos compile")
        .encode_file_descriptor_set();
    let registry = Registry::new();
    registry.put("bench", &fds).expect("test protos register");
    registry
}

/// A small `Book` (~75 bytes).
pub(crate) fn small_json() -> String {
    r#"{"name":"shelves/1/books/2","author":"Le Guin","title":"Lathe","pages":387}"#.to_owned()
}

/// An `Everything` with `messages` repeated messages, `entries` map
/// entries and as many repeated strings, nested messages and WKTs.
pub(crate) fn everything_json(messages: usize, entries: usize) -> String {
    let scalars = r#"{"fDouble":1.25,"fFloat":-2.5,"fInt32":-32,"fInt64":"-9007199254740993","fUint32":7,"fUint64":"18446744073709551615","fSint32":-7,"fSint64":"-8","fFixed32":9,"fFixed64":"10","fBool":true,"fString":"hello, world","fBytes":"AAEC/w=="}"#;
    let r_msg = vec![scalars; messages].join(",");
    let map: Vec<String> = (0..entries).map(|i| format!(r#""key{i}":{i}"#)).collect();
    let strings: Vec<String> = (0..entries)
        .map(|i| format!(r#""value number {i}""#))
        .collect();
    let mut nested = r#"{"name":"leaf"}"#.to_owned();
    for depth in 0..8 {
        nested = format!(
            r#"{{"name":"level {depth}","child":{nested},"children":[{{"name":"a"}},{{"name":"b"}}]}}"#
        );
    }
    format!(
        r#"{{"scalars":{scalars},"rMsg":[{r_msg}],"mStrInt":{{{}}},"rString":[{}],"nested":{nested},"ts":"2017-01-15T01:30:15.010Z","dur":"3.5s","any":{{"@type":"type.googleapis.com/example.types.v1.Scalars","fInt32":5}}}}"#,
        map.join(","),
        strings.join(",")
    )
}

/// A `Nested` tree `depth` levels deep, `fanout` children per node.
pub(crate) fn nested_json(depth: usize, fanout: usize) -> String {
    if depth == 0 {
        return r#"{"name":"leaf"}"#.to_owned();
    }
    let child = nested_json(depth - 1, fanout);
    let children = vec![child.clone(); fanout].join(",");
    format!(r#"{{"name":"level {depth}","child":{child},"children":[{children}]}}"#)
}
