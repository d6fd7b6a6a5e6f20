//! Registry: put / replace / remove, versions, and every rejection leaving the
//! snapshot untouched.

use std::sync::Arc;

use descriptors::{DescriptorError, ErrorKind, Registry};
use prost::Message as _;
use prost_types::{
    DescriptorProto, FieldDescriptorProto, FileDescriptorProto, FileDescriptorSet,
    field_descriptor_proto::{Label, Type},
};

use crate::common::{LIBRARY, TYPES, compile, compile_source};

const GET_SHELF: &str = "/example.library.v1.LibraryService/GetShelf";

/// Asserts that `put` fails with `check` and leaves the snapshot as it was.
fn rejected(registry: &Registry, name: &str, bytes: &[u8]) -> DescriptorError {
    let before = registry.snapshot();
    let err = registry.put(name, bytes).unwrap_err();
    assert!(
        Arc::ptr_eq(&before, &registry.snapshot()),
        "snapshot changed after {err}"
    );
    err
}

#[test]
fn bundled_set_is_always_there() {
    let registry = Registry::new();
    let snapshot = registry.snapshot();
    let pool = &*snapshot.pool();
    for name in [
        "google.rpc.Status",
        "google.rpc.BadRequest",
        "google.rpc.ErrorInfo",
        "google.api.HttpRule",
        "google.api.HttpBody",
        "google.protobuf.Any",
        "google.protobuf.Timestamp",
        "google.protobuf.Struct",
        "google.protobuf.FieldMask",
    ] {
        assert!(pool.get_message_by_name(name).is_some(), "{name}");
    }
    assert!(pool.get_enum_by_name("google.rpc.Code").is_some());
    assert!(pool.get_extension_by_name("google.api.http").is_some());
    assert_eq!(snapshot.sets().count(), 0);
    assert_eq!(snapshot.methods().count(), 0);
}

#[test]
fn put_replace_remove_and_versions() {
    let registry = Registry::new();
    let library = compile(&[LIBRARY]);

    let outcome = registry.put("library", &library).unwrap();
    assert!(!outcome.replaced);
    let set = &outcome.set;
    assert_eq!(set.name, "library");
    assert_eq!(set.version, 1);
    assert_eq!(set.size_bytes, library.len());
    assert!(set.files.iter().any(|f| f == LIBRARY));
    assert_eq!(set.services, ["example.library.v1.LibraryService"]);
    assert!(set.methods.iter().any(|m| m == GET_SHELF));
    assert!(
        set.http_rules
            .iter()
            .any(|r| r == "GET /v1/{name=shelves/*}")
    );
    assert!(
        set.http_rules
            .iter()
            .any(|r| r == "MOVE /v1/{name=shelves/*/books/*}")
    );
    assert!(set.http_rules.iter().any(|r| r == "GET /v2/{name=**}"));

    let snapshot = registry.snapshot();
    assert_eq!(snapshot.set_bytes("library"), Some(library.as_slice()));
    let method = snapshot.method(GET_SHELF).unwrap();
    assert_eq!(method.service(), "example.library.v1.LibraryService");
    assert_eq!(method.name(), "GetShelf");
    assert_eq!(method.input_name(), "example.library.v1.GetShelfRequest");
    assert_eq!(method.output_name(), "example.library.v1.Shelf");
    assert_eq!(&*method.set_name, "library");
    assert!(!method.client_streaming && !method.server_streaming);
    let stream = snapshot
        .method("/example.library.v1.LibraryService/StreamBooks")
        .unwrap();
    assert!(!stream.client_streaming && stream.server_streaming);
    let get_book = snapshot
        .method("/example.library.v1.LibraryService/GetBook")
        .unwrap();
    assert_eq!(get_book.bindings.len(), 3);
    let ping = snapshot
        .method("/example.library.v1.LibraryService/Ping")
        .unwrap();
    assert!(ping.bindings.is_empty());

    // Replace: version 2.
    let outcome = registry.put("library", &library).unwrap();
    assert!(outcome.replaced);
    assert_eq!(outcome.set.version, 2);

    // A second set.
    let outcome = registry.put("types", &compile(&[TYPES])).unwrap();
    assert_eq!(outcome.set.version, 1);
    let snapshot = registry.snapshot();
    let names: Vec<_> = snapshot.sets().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["library", "types"]);
    assert!(
        snapshot
            .method("/example.types.v1.TypesService/EchoStream")
            .is_some_and(|m| m.client_streaming && m.server_streaming)
    );
    // Old snapshots stay valid.
    let old = snapshot.clone();

    registry.remove("types").unwrap();
    let snapshot = registry.snapshot();
    assert!(
        snapshot
            .method("/example.types.v1.TypesService/Echo")
            .is_none()
    );
    assert!(snapshot.method(GET_SHELF).is_some());
    assert!(old.method("/example.types.v1.TypesService/Echo").is_some());
    assert!(matches!(
        registry.remove("types"),
        Err(DescriptorError::UnknownSet(name)) if name == "types"
    ));
    assert_eq!(
        registry.remove("nope").unwrap_err().kind(),
        ErrorKind::NotFound
    );

    // Versions continue after a remove.
    let outcome = registry.put("types", &compile(&[TYPES])).unwrap();
    assert!(!outcome.replaced);
    assert_eq!(outcome.set.version, 2);
}

#[test]
fn identical_files_are_shared_between_sets() {
    let registry = Registry::new();
    let library = compile(&[LIBRARY]);
    registry.put("library", &library).unwrap();
    // The same file in another set: tolerated, services not duplicated.
    let outcome = registry.put("library-copy", &library).unwrap();
    assert_eq!(outcome.set.services, ["example.library.v1.LibraryService"]);
    let snapshot = registry.snapshot();
    assert_eq!(&*snapshot.method(GET_SHELF).unwrap().set_name, "library");
    assert!(
        snapshot
            .match_http(&http::Method::GET, "/v1/shelves/1")
            .is_some()
    );
    // Remove the first owner: the copy keeps serving.
    registry.remove("library").unwrap();
    let snapshot = registry.snapshot();
    assert_eq!(
        &*snapshot.method(GET_SHELF).unwrap().set_name,
        "library-copy"
    );
    assert!(
        snapshot
            .match_http(&http::Method::GET, "/v1/shelves/1")
            .is_some()
    );
}

#[test]
fn rejects_undecodable_bytes() {
    let registry = crate::common::registry();
    // Field 1 claims 5 bytes but only one follows.
    let err = rejected(&registry, "bad", &[0x0a, 0x05, 0x01]);
    assert!(matches!(&err, DescriptorError::Decode { name, .. } if name == "bad"));
    assert_eq!(err.kind(), ErrorKind::InvalidUpload);
    assert!(err.is_client_error());
    // A file entry that is not a FileDescriptorProto.
    let err = rejected(&registry, "bad", &[0x0a, 0x02, 0x0a, 0x05]);
    assert!(matches!(err, DescriptorError::Decode { .. }));
    // Nothing at all.
    let err = rejected(&registry, "empty", b"");
    assert!(matches!(&err, DescriptorError::EmptySet { name } if name == "empty"));
    assert_eq!(err.kind(), ErrorKind::InvalidUpload);
    // Replacing an existing set with garbage keeps the old one.
    rejected(&registry, "library", &[0x0a, 0x05, 0x01]);
    assert!(registry.snapshot().method(GET_SHELF).is_some());
}

fn file(
    name: &str,
    package: &str,
    dependency: &[&str],
    messages: Vec<DescriptorProto>,
) -> FileDescriptorProto {
    FileDescriptorProto {
        name: Some(name.to_owned()),
        package: Some(package.to_owned()),
        dependency: dependency.iter().map(|d| (*d).to_owned()).collect(),
        message_type: messages,
        syntax: Some("proto3".to_owned()),
        ..Default::default()
    }
}

#[test]
fn rejects_missing_dependency() {
    let registry = crate::common::registry();
    let set = FileDescriptorSet {
        file: vec![file(
            "a.proto",
            "a",
            &["google/protobuf/timestamp.proto", "missing/b.proto"],
            vec![],
        )],
    };
    let err = rejected(&registry, "a", &set.encode_to_vec());
    match err {
        DescriptorError::MissingDependency { file, dependency } => {
            assert_eq!(file, "a.proto");
            assert_eq!(dependency, "missing/b.proto");
        }
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn rejects_unresolvable_types() {
    let registry = crate::common::registry();
    let message = DescriptorProto {
        name: Some("M".to_owned()),
        field: vec![FieldDescriptorProto {
            name: Some("f".to_owned()),
            number: Some(1),
            label: Some(Label::Optional as i32),
            r#type: Some(Type::Message as i32),
            type_name: Some(".nope.Missing".to_owned()),
            json_name: Some("f".to_owned()),
            ..Default::default()
        }],
        ..Default::default()
    };
    let set = FileDescriptorSet {
        file: vec![file("a.proto", "a", &[], vec![message])],
    };
    let err = rejected(&registry, "a", &set.encode_to_vec());
    assert!(
        matches!(&err, DescriptorError::InvalidDescriptor { name, .. } if name == "a"),
        "{err}"
    );
    assert_eq!(err.kind(), ErrorKind::InvalidUpload);
}

#[test]
fn rejects_conflicts() {
    let registry = crate::common::registry();

    // Same message full name in another file.
    let dup = compile_source(
        "dup/book.proto",
        "syntax = \"proto3\"; package example.library.v1; message Book { string x = 1; }",
    );
    let err = rejected(&registry, "dup", &dup);
    match &err {
        DescriptorError::Conflict { what, owner } => {
            assert_eq!(what, "example.library.v1.Book");
            assert_eq!(owner, "library");
        }
        other => panic!("unexpected {other}"),
    }
    assert_eq!(err.kind(), ErrorKind::Conflict);

    // Same service full name.
    let dup = compile_source(
        "dup/svc.proto",
        "syntax = \"proto3\"; package example.types.v1; message X {} service TypesService { rpc A(X) returns (X); }",
    );
    match rejected(&registry, "dup", &dup) {
        DescriptorError::Conflict { what, owner } => {
            assert_eq!(what, "example.types.v1.TypesService");
            assert_eq!(owner, "types");
        }
        other => panic!("unexpected {other}"),
    }

    // Same file name, different content.
    let dup = compile_source(LIBRARY, "syntax = \"proto3\"; package other; message Y {}");
    match rejected(&registry, "dup", &dup) {
        DescriptorError::Conflict { what, owner } => {
            assert_eq!(what, LIBRARY);
            assert_eq!(owner, "library");
        }
        other => panic!("unexpected {other}"),
    }

    // A bundled type redefined.
    let dup = compile_source(
        "my/status.proto",
        "syntax = \"proto3\"; package google.rpc; message Status { int32 code = 1; }",
    );
    match rejected(&registry, "dup", &dup) {
        DescriptorError::Conflict { what, owner } => {
            assert_eq!(what, "google.rpc.Status");
            assert_eq!(owner, "bundled");
        }
        other => panic!("unexpected {other}"),
    }

    // Replacing a set with a version that moves its own types is fine.
    let moved = compile_source(
        "moved/types.proto",
        "syntax = \"proto3\"; package example.types.v1; message Everything { string s = 1; } service TypesService { rpc Echo(Everything) returns (Everything); }",
    );
    let outcome = registry.put("types", &moved).unwrap();
    assert!(outcome.replaced);
    assert_eq!(outcome.set.files, ["moved/types.proto"]);
}

const COLLIDING: &str = r#"
syntax = "proto3";
package example.collide.v1;
import "google/api/annotations.proto";
message Req { string id = 1; string other = 2; }
service Other {
  rpc GetThing(Req) returns (Req) { option (google.api.http) = { get: "/v1/shelves/{id}" }; }
}
"#;

#[test]
fn rejects_route_collisions() {
    let registry = crate::common::registry();
    let err = rejected(
        &registry,
        "collide",
        &compile_source("collide.proto", COLLIDING),
    );
    match &err {
        DescriptorError::RouteCollision { rule, other } => {
            assert!(rule.contains("GET /v1/shelves/{id}"), "{rule}");
            assert!(
                rule.contains("/example.collide.v1.Other/GetThing"),
                "{rule}"
            );
            assert!(other.contains("GET /v1/{name=shelves/*}"), "{other}");
            assert!(other.contains("`library`"), "{other}");
        }
        other => panic!("unexpected {other}"),
    }
    assert_eq!(err.kind(), ErrorKind::Conflict);

    // Inside one set, including additional bindings and verbs.
    let inside = r#"
syntax = "proto3";
package example.inside.v1;
import "google/api/annotations.proto";
message Req { string a = 1; string b = 2; }
service S {
  rpc A(Req) returns (Req) { option (google.api.http) = { get: "/x/{a}:do" }; }
  rpc B(Req) returns (Req) {
    option (google.api.http) = { get: "/x/{b}" additional_bindings { get: "/x/{b=*}:do" } };
  }
}
"#;
    let err = rejected(
        &Registry::new(),
        "inside",
        &compile_source("inside.proto", inside),
    );
    assert!(
        matches!(err, DescriptorError::RouteCollision { .. }),
        "{err}"
    );

    // Same template, different HTTP methods or verbs: fine.
    let fine = r#"
syntax = "proto3";
package example.fine.v1;
import "google/api/annotations.proto";
message Req { string a = 1; }
service S {
  rpc A(Req) returns (Req) { option (google.api.http) = { get: "/x/{a}" }; }
  rpc B(Req) returns (Req) { option (google.api.http) = { delete: "/x/{a}" }; }
  rpc C(Req) returns (Req) { option (google.api.http) = { get: "/x/{a}:c" }; }
}
"#;
    Registry::new()
        .put("fine", &compile_source("fine.proto", fine))
        .unwrap();
}

#[test]
fn rejects_bad_rules() {
    let rule = |rule: &str| {
        format!(
            r#"
syntax = "proto3";
package example.bad.v1;
import "google/api/annotations.proto";
message Inner {{ string id = 1; }}
message Req {{ string name = 1; repeated string tags = 2; Inner inner = 3; map<string, string> m = 4; }}
service S {{ rpc M(Req) returns (Req) {{ option (google.api.http) = {{ {rule} }}; }} }}
"#
        )
    };
    for (bad, expected) in [
        (r#"get: "/v1/x" body: "nope""#, "body `nope`"),
        (
            r#"get: "/v1/x" response_body: "nope""#,
            "response_body `nope`",
        ),
        (r#"get: "/v1/{nope}""#, "`nope` is not a field"),
        (r#"get: "/v1/{tags}""#, "repeated"),
        (r#"get: "/v1/{m}""#, "repeated"),
        (r#"get: "/v1/{inner}""#, "is a message"),
        (r#"get: "/v1/{name.x}""#, "is a scalar"),
        (r#"get: "/v1/{inner.nope}""#, "`nope` is not a field"),
        (r#"get: "/v1/**/x""#, "last segment"),
        (r#"get: "v1/x""#, "must start with"),
        (r#"get: "/v1/{name}/{name}""#, "bound twice"),
        (
            r#"get: "/v1/a" additional_bindings { get: "/v1/b" additional_bindings { get: "/v1/c" } }"#,
            "may not contain",
        ),
        (
            r#"custom: { kind: "BAD KIND" path: "/v1/x" }"#,
            "invalid custom method",
        ),
        (r#"additional_bindings { body: "*" }"#, "without a pattern"),
    ] {
        let registry = crate::common::registry();
        let bytes = crate::common::compile_source("bad.proto", &rule(bad));
        let err = rejected(&registry, "bad", &bytes);
        match &err {
            DescriptorError::InvalidRule { method, message } => {
                assert_eq!(method, "/example.bad.v1.S/M");
                assert!(message.contains(expected), "{bad}: {message}");
            }
            other => panic!("{bad}: unexpected {other}"),
        }
        assert_eq!(err.kind(), ErrorKind::InvalidUpload);
    }
    // The nested path variable form is accepted.
    Registry::new()
        .put(
            "ok",
            &crate::common::compile_source("ok.proto", &rule(r#"get: "/v1/{inner.id}""#)),
        )
        .unwrap();
}

#[test]
fn failed_put_does_not_bump_version() {
    let registry = Registry::new();
    let library = compile(&[LIBRARY]);
    registry.put("library", &library).unwrap();
    rejected(&registry, "library", b"\x0a\x05\x01");
    assert_eq!(registry.put("library", &library).unwrap().set.version, 2);
}

#[test]
fn set_info_serializes() {
    let registry = crate::common::registry();
    let snapshot = registry.snapshot();
    let json = serde_json::to_value(snapshot.set("library").unwrap()).unwrap();
    assert_eq!(json["name"], "library");
    assert_eq!(json["version"], 1);
    assert!(json["http_rules"].as_array().unwrap().len() >= 15);
}

#[test]
fn shared_types_are_thread_safe() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<Registry>();
    assert_send_sync::<descriptors::Snapshot>();
    assert_send_sync::<descriptors::HttpMatch>();
    assert_send_sync::<descriptors::MethodInfo>();
    assert_send_sync::<DescriptorError>();
}

/// The prost-reflect pool is most of a registry's memory and the request
/// path does not need it: it is built when something asks for it, and the
/// gateway drops it when idle.
#[test]
fn the_descriptor_pool_is_built_only_when_asked_for() {
    use descriptors::{JsonOptions, json};
    let registry = Registry::new();
    registry.put("library", &compile(&[LIBRARY])).unwrap();
    // The put's own pool is kept until released.
    assert!(registry.pool_is_built());
    assert!(!registry.release_idle_pool(std::time::Duration::from_secs(3600)));
    assert!(registry.release_idle_pool(std::time::Duration::ZERO));
    assert!(!registry.pool_is_built());

    let snapshot = registry.snapshot();
    let opts = JsonOptions::default();
    let create = snapshot
        .method("/example.library.v1.LibraryService/CreateShelf")
        .unwrap();
    assert_eq!(create.input_name(), "example.library.v1.CreateShelfRequest");
    assert_eq!(create.output_name(), "example.library.v1.Shelf");
    // Unary JSON, a REST route with a body field, path and query
    // parameters, a reply, a status with details: all through the codec.
    let mut out = Vec::new();
    json::request_to_proto(create, br#"{"shelf": {"theme": "sf"}}"#, &opts, &mut out).unwrap();
    let matched = snapshot
        .match_http(&http::Method::POST, "/v1/shelves")
        .unwrap();
    out.clear();
    json::build_request(
        &matched,
        br#"{"theme": "sf"}"#,
        Some("request_id=r1"),
        &opts,
        &mut out,
    )
    .unwrap();
    let get = snapshot
        .match_http(&http::Method::GET, "/v1/shelves/s1")
        .unwrap();
    out.clear();
    json::build_request(&get, b"", None, &opts, &mut out).unwrap();
    let mut reply = Vec::new();
    json::response_to_json(create, None, b"\x0a\x02s1", &opts, &mut reply).unwrap();
    assert_eq!(reply, br#"{"name":"s1"}"#);
    let _ = json::status_to_json(snapshot.codec(), 3, "bad", Some(b"\x08\x03"));
    assert!(!registry.pool_is_built(), "the request path built the pool");

    // A refused document or parameter: the prost-reflect reader names the
    // error from the method's own files, without building the pool.
    out.clear();
    let err =
        json::request_to_proto(create, br#"{"shelf": {"bogus": 1}}"#, &opts, &mut out).unwrap_err();
    assert!(err.to_string().contains("shelf.bogus"), "{err}");
    let err = json::build_request(&matched, br#"{"theme": 5}"#, None, &opts, &mut out).unwrap_err();
    assert!(err.to_string().contains("theme"), "{err}");
    let list = snapshot
        .match_http(&http::Method::GET, "/v1/shelves")
        .unwrap();
    let err = json::build_request(&list, b"", Some("page_size=ten"), &opts, &mut out).unwrap_err();
    assert!(err.to_string().contains("page_size"), "{err}");
    // A oneof member from the query goes the prost-reflect way too.
    out.clear();
    json::build_request(&list, b"", Some("by_id=3"), &opts, &mut out).unwrap();
    assert!(!out.is_empty());
    assert!(!registry.pool_is_built(), "naming an error built the pool");
    // Reflection-like uses build it (and it is kept until idle).
    assert!(
        snapshot
            .pool()
            .get_message_by_name("example.library.v1.Shelf")
            .is_some()
    );
    assert!(registry.pool_is_built());
    assert_eq!(
        create.input().unwrap().full_name(),
        "example.library.v1.CreateShelfRequest"
    );

    // A put after a release rebuilds what it validates against.
    assert!(registry.release_idle_pool(std::time::Duration::ZERO));
    registry.put("types", &compile(&[TYPES])).unwrap();
    let snapshot = registry.snapshot();
    assert!(snapshot.method(GET_SHELF).is_some());
    assert!(
        snapshot
            .pool()
            .get_message_by_name("example.library.v1.Shelf")
            .is_some()
    );
}

/// A refused request names its error from the method's own files; the
/// whole pool is built only when that answer wants a type defined in
/// another file the registry has (an `Any` read by prost-reflect because
/// its `@type` is not first).
#[test]
fn refused_requests_build_the_whole_pool_only_for_types_of_other_files() {
    use descriptors::{JsonOptions, json};
    let holder = compile_source(
        "holder.proto",
        r#"syntax = "proto3";
package holder.v1;
import "google/protobuf/any.proto";
message Holder { google.protobuf.Any payload = 1; string name = 2; }
service Holders { rpc Keep(Holder) returns (Holder); }"#,
    );
    let other = compile_source(
        "other.proto",
        "syntax = \"proto3\";\npackage other.v1;\nmessage Thing { string label = 1; }",
    );
    let registry = Registry::new();
    registry.put("holder", &holder).unwrap();
    registry.put("other", &other).unwrap();
    let snapshot = registry.snapshot();
    let keep = snapshot.method("/holder.v1.Holders/Keep").unwrap();
    let opts = JsonOptions::default();
    let mut out = Vec::new();
    let mut call = |body: &str| {
        assert!(registry.release_idle_pool(std::time::Duration::ZERO) || !registry.pool_is_built());
        out.clear();
        let result = json::request_to_proto(keep, body.as_bytes(), &opts, &mut out);
        (result, registry.pool_is_built())
    };
    // Through the codec: `@type` first, whatever file defines it.
    let (ok, built) =
        call(r#"{"payload": {"@type": "type.googleapis.com/other.v1.Thing", "label": "x"}}"#);
    ok.unwrap();
    assert!(!built);
    // Refused, with escapes and an `@` but no other file's type: own files.
    let (err, built) = call(r#"{"name": "a\nb@c", "bogus": 1}"#);
    let err = err.unwrap_err().to_string();
    assert!(err.contains("bogus"), "{err}");
    assert!(!built, "an escape or an @ built the whole pool");
    // A type the registry does not have: the same error either way.
    let (err, built) =
        call(r#"{"payload": {"label": "x", "@type": "type.googleapis.com/nowhere.v1.T"}}"#);
    assert!(
        err.unwrap_err()
            .to_string()
            .contains("'nowhere.v1.T' not found")
    );
    assert!(!built);
    // Another file's type after its fields: the codec leaves it to
    // prost-reflect, whose own-files pool does not have it; the whole pool
    // does, and accepts it.
    let (ok, built) =
        call(r#"{"payload": {"label": "x", "@type": "type.googleapis.com/other.v1.Thing"}}"#);
    ok.unwrap();
    assert!(built, "the whole pool answers for other files' types");
    let mut first = Vec::new();
    json::request_to_proto(
        keep,
        br#"{"payload": {"@type": "type.googleapis.com/other.v1.Thing", "label": "x"}}"#,
        &opts,
        &mut first,
    )
    .unwrap();
    assert_eq!(out, first, "the same message whatever the key order");

    // An event loop refuses the build and does it elsewhere.
    assert!(registry.release_idle_pool(std::time::Duration::ZERO));
    let late = br#"{"payload": {"label": "x", "@type": "type.googleapis.com/other.v1.Thing"}}"#;
    let refused = descriptors::without_pool_builds(|| {
        json::request_to_proto(keep, late, &opts, &mut Vec::new())
    });
    assert!(
        matches!(refused, Err(DescriptorError::PoolNotBuilt)),
        "{refused:?}"
    );
    assert!(!registry.pool_is_built());
    keep.build_pool();
    let mut again = Vec::new();
    descriptors::without_pool_builds(|| json::request_to_proto(keep, late, &opts, &mut again))
        .unwrap();
    assert_eq!(again, first);
}

/// A method whose types the codec does not cover (a proto2 group, an
/// extension range) needs the whole pool: it says so while the pool is not
/// built, so an event loop can build it on another thread first.
#[test]
fn methods_with_types_the_codec_leaves_to_prost_reflect_say_they_need_the_pool() {
    let set = compile_source(
        "legacy.proto",
        r#"syntax = "proto2";
package legacy.v1;
message Old { optional group Inner = 1 { optional int32 n = 2; } extensions 100 to 200; }
message Plain { optional string s = 1; }
service Legacy { rpc Get(Old) returns (Plain); rpc Put(Plain) returns (Plain); }"#,
    );
    let registry = Registry::new();
    registry.put("legacy", &set).unwrap();
    assert!(registry.release_idle_pool(std::time::Duration::ZERO));
    let snapshot = registry.snapshot();
    let get = snapshot.method("/legacy.v1.Legacy/Get").unwrap();
    let put = snapshot.method("/legacy.v1.Legacy/Put").unwrap();
    assert!(get.needs_pool_built());
    assert!(!put.needs_pool_built(), "the codec covers Plain");
    get.build_pool();
    assert!(registry.pool_is_built());
    assert!(!get.needs_pool_built());
}

/// A custom `json_name` that JSON must escape: the codec's plan keeps such
/// names apart from its quoted keys, and reads and writes them as the
/// prost-reflect codec does.
#[test]
fn json_names_that_need_escaping() {
    use descriptors::{JsonOptions, json};
    let field = |name: &str, number: i32, json_name: &str| FieldDescriptorProto {
        name: Some(name.to_owned()),
        number: Some(number),
        label: Some(Label::Optional as i32),
        r#type: Some(Type::String as i32),
        json_name: Some(json_name.to_owned()),
        ..Default::default()
    };
    let message = DescriptorProto {
        name: Some("Odd".to_owned()),
        field: vec![
            field("plain", 1, "plain"),
            field("quoted", 2, "say \"hi\"\\now"),
            field("snake_case", 3, "snakeCase"),
        ],
        ..Default::default()
    };
    let set = FileDescriptorSet {
        file: vec![file("odd.proto", "odd", &[], vec![message])],
    };
    let registry = crate::common::registry();
    registry.put("odd", &set.encode_to_vec()).unwrap();
    let snapshot = registry.snapshot();
    let desc = snapshot.pool().get_message_by_name("odd.Odd").unwrap();
    let opts = JsonOptions::default();
    let input = br#"{"plain": "a", "say \"hi\"\\now": "b", "snakeCase": "c"}"#;
    let mut new = Vec::new();
    json::json_to_proto(&desc, input, &opts, &mut new).unwrap();
    let mut old = Vec::new();
    json::legacy::json_to_proto(&desc, input, &opts, &mut old).unwrap();
    assert_eq!(new, old);
    // The proto names are accepted too, and out of order.
    let mut by_proto = Vec::new();
    json::json_to_proto(
        &desc,
        br#"{"snake_case": "c", "quoted": "b", "plain": "a"}"#,
        &opts,
        &mut by_proto,
    )
    .unwrap();
    assert_eq!(by_proto, old);
    let mut text = Vec::new();
    json::proto_to_json(&desc, &new, &opts, &mut text).unwrap();
    let mut legacy_text = Vec::new();
    json::legacy::proto_to_json(&desc, &new, &opts, &mut legacy_text).unwrap();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&text).unwrap(),
        serde_json::from_slice::<serde_json::Value>(&legacy_text).unwrap()
    );
    assert!(String::from_utf8_lossy(&text).contains(r#""say \"hi\"\\now":"b""#));
}
