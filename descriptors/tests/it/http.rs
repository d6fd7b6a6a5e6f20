//! google.api.http matching and request building.

use descriptors::{
    BodySpec, DescriptorError, HttpMatch, JsonOptions, Registry, Snapshot, json::build_request,
};
use http::Method;
use prost_reflect::{DynamicMessage, ReflectMessage as _, Value};

use crate::common::{compile_source, registry};

const SVC: &str = "/example.library.v1.LibraryService/";

fn method(m: &str) -> Method {
    Method::from_bytes(m.as_bytes()).unwrap()
}

/// The expected method name and path parameters, or no match.
type Expected = Option<(&'static str, &'static [(&'static str, &'static str)])>;

#[test]
fn matching_table() {
    let registry = registry();
    let snapshot = registry.snapshot();
    let cases: &[(&str, &str, Expected)] = &[
        ("GET", "/v1/shelves", Some(("ListShelves", &[]))),
        (
            "GET",
            "/v1/shelves/s1",
            Some(("GetShelf", &[("name", "shelves/s1")])),
        ),
        // No verb in the template: `:merge` is part of the segment.
        (
            "GET",
            "/v1/shelves/s1:merge",
            Some(("GetShelf", &[("name", "shelves/s1:merge")])),
        ),
        // Multi-segment variables keep %2F encoded, decode the rest.
        (
            "GET",
            "/v1/shelves/a%2Fb%20c",
            Some(("GetShelf", &[("name", "shelves/a%2Fb c")])),
        ),
        (
            "GET",
            "/v1/shelves/s1/books/b1",
            Some(("GetBook", &[("name", "shelves/s1/books/b1")])),
        ),
        // Additional bindings.
        (
            "GET",
            "/v1/books/42",
            Some(("GetBook", &[("book_id", "42")])),
        ),
        // Single-segment variables decode everything.
        (
            "GET",
            "/v1/books/a%2Fb",
            Some(("GetBook", &[("book_id", "a/b")])),
        ),
        ("GET", "/v2/a/b/c", Some(("GetBook", &[("name", "a/b/c")]))),
        ("GET", "/v2/a", Some(("GetBook", &[("name", "a")]))),
        // Verbs on literal paths.
        ("GET", "/v1/books:search", Some(("SearchBooks", &[]))),
        ("GET", "/v1/books:count", Some(("CountBooks", &[]))),
        ("GET", "/v1/books:stream", Some(("StreamBooks", &[]))),
        ("GET", "/v1/books:nothing", None),
        (
            "POST",
            "/v1/shelves/s1:merge",
            Some(("MergeShelves", &[("name", "shelves/s1")])),
        ),
        ("POST", "/v1/shelves/s1", None),
        ("POST", "/v1/shelves", Some(("CreateShelf", &[]))),
        (
            "POST",
            "/v1/shelves/s1/books",
            Some(("CreateBook", &[("parent", "shelves/s1")])),
        ),
        // `**` then a verb.
        (
            "POST",
            "/v1/a/b:c/d:undelete",
            Some(("UndeleteAnything", &[("path", "a/b:c/d")])),
        ),
        (
            "POST",
            "/v1/shelves/s1:undelete",
            Some(("UndeleteAnything", &[("path", "shelves/s1")])),
        ),
        (
            "PATCH",
            "/v1/shelves/s1/books/b1",
            Some(("UpdateBook", &[("book.name", "shelves/s1/books/b1")])),
        ),
        ("PATCH", "/v1/shelves/s1", None),
        // Custom method.
        (
            "MOVE",
            "/v1/shelves/s1/books/b1",
            Some(("MoveBook", &[("name", "shelves/s1/books/b1")])),
        ),
        ("MOVE", "/v1/shelves/s1", None),
        // Nested field path.
        (
            "GET",
            "/v1/authors/le-guin",
            Some(("GetAuthor", &[("author.id", "le-guin")])),
        ),
        // Anonymous `*` then `**`.
        (
            "GET",
            "/v1/files/x/a/b",
            Some(("GetFile", &[("path", "a/b")])),
        ),
        ("GET", "/v1/files/x", Some(("GetFile", &[("path", "")]))),
        (
            "DELETE",
            "/v1/shelves/s1",
            Some(("DeleteShelf", &[("name", "shelves/s1")])),
        ),
        ("DELETE", "/v1/shelves", None),
        ("PUT", "/v1/shelves/s1", None),
        ("GET", "/v1/shelves/s1/books", None),
        ("GET", "/v1/shelves/", None),
        ("GET", "/v3/x", None),
        ("GET", "/", None),
        ("GET", "", None),
        ("GET", "v1/shelves", None),
        // A query string is not part of the path.
        (
            "GET",
            "/v1/books/42?x=1",
            Some(("GetBook", &[("book_id", "42")])),
        ),
        // The default gRPC route is not an HTTP rule.
        ("POST", "/example.library.v1.LibraryService/GetShelf", None),
    ];
    for (m, path, expected) in cases {
        let got = snapshot.match_http(&method(m), path);
        match (expected, got) {
            (None, None) => {}
            (Some((name, params)), Some(got)) => {
                assert_eq!(got.method.grpc_path, format!("{SVC}{name}"), "{m} {path}");
                let params: Vec<(String, String)> = params
                    .iter()
                    .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
                    .collect();
                assert_eq!(got.path_params, params, "{m} {path}");
            }
            (expected, got) => panic!(
                "{m} {path}: expected {expected:?}, got {:?}",
                got.map(|g| g.method.grpc_path.clone())
            ),
        }
    }
}

#[test]
fn most_specific_rule_wins() {
    let source = r#"
syntax = "proto3";
package example.spec.v1;
import "google/api/annotations.proto";
message Req { string a = 1; string b = 2; }
service S {
  rpc Any(Req) returns (Req) { option (google.api.http) = { get: "/s/{a=**}" }; }
  rpc One(Req) returns (Req) { option (google.api.http) = { get: "/s/{a}" }; }
  rpc Special(Req) returns (Req) { option (google.api.http) = { get: "/s/special" }; }
  rpc Verb(Req) returns (Req) { option (google.api.http) = { get: "/{a=**}:verb" }; }
  rpc LitThenStar(Req) returns (Req) { option (google.api.http) = { get: "/t/x/{a}" }; }
  rpc StarThenLit(Req) returns (Req) { option (google.api.http) = { get: "/t/{a}/y" }; }
  rpc Root(Req) returns (Req) { option (google.api.http) = { get: "/{a}/{b}" }; }
}
"#;
    let registry = Registry::new();
    registry
        .put("spec", &compile_source("spec.proto", source))
        .unwrap();
    let snapshot = registry.snapshot();
    let name = |path: &str| {
        snapshot
            .match_http(&Method::GET, path)
            .map(|m| m.method.name().to_owned())
    };
    assert_eq!(name("/s/special").as_deref(), Some("Special"));
    assert_eq!(name("/s/other").as_deref(), Some("One"));
    assert_eq!(name("/s/a/b").as_deref(), Some("Any"));
    assert_eq!(name("/s").as_deref(), Some("Any"));
    assert_eq!(name("/s/x:verb").as_deref(), Some("Verb"));
    assert_eq!(name("/t/x/y").as_deref(), Some("LitThenStar"));
    assert_eq!(name("/t/z/y").as_deref(), Some("StarThenLit"));
    // Literal-indexed and wildcard-first routes are compared with each other.
    assert_eq!(name("/q/r").as_deref(), Some("Root"));
    assert_eq!(name("/s/r").as_deref(), Some("One"));
}

fn request(
    snapshot: &Snapshot,
    m: &str,
    path: &str,
    body: &str,
    query: Option<&str>,
    opts: &JsonOptions,
) -> Result<(HttpMatch, DynamicMessage), DescriptorError> {
    let matched = snapshot
        .match_http(&method(m), path)
        .unwrap_or_else(|| panic!("{m} {path} should match"));
    let mut out = Vec::new();
    build_request(&matched, body.as_bytes(), query, opts, &mut out)?;
    let message = DynamicMessage::decode(matched.method.input().unwrap(), out.as_slice()).unwrap();
    Ok((matched, message))
}

fn ok(snapshot: &Snapshot, m: &str, path: &str, body: &str, query: Option<&str>) -> DynamicMessage {
    request(snapshot, m, path, body, query, &JsonOptions::default())
        .unwrap()
        .1
}

fn err(
    snapshot: &Snapshot,
    m: &str,
    path: &str,
    body: &str,
    query: Option<&str>,
) -> DescriptorError {
    request(snapshot, m, path, body, query, &JsonOptions::default()).unwrap_err()
}

/// The JSON rendering of a decoded message, for compact assertions.
fn json(message: &DynamicMessage) -> serde_json::Value {
    serde_json::to_value(message).unwrap()
}

#[test]
fn body_star_with_path_precedence() {
    let registry = registry();
    let snapshot = registry.snapshot();
    let (matched, message) = request(
        &snapshot,
        "POST",
        "/v1/shelves/s1:merge",
        r#"{"name": "ignored", "otherShelf": "shelves/s2"}"#,
        Some("other_shelf=from-query"),
        &JsonOptions::default(),
    )
    .unwrap();
    assert_eq!(matched.binding.body, BodySpec::Whole);
    assert_eq!(
        json(&message),
        serde_json::json!({"name": "shelves/s1", "otherShelf": "shelves/s2"})
    );
    // Empty body: just the path.
    let message = ok(&snapshot, "POST", "/v1/shelves/s1:merge", "", None);
    assert_eq!(json(&message), serde_json::json!({"name": "shelves/s1"}));
    // JSON errors report their path.
    match err(
        &snapshot,
        "POST",
        "/v1/shelves/s1:merge",
        r#"{"bogus": 1}"#,
        None,
    ) {
        DescriptorError::InvalidJson { path, .. } => assert_eq!(path, "bogus"),
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn body_field() {
    let registry = registry();
    let snapshot = registry.snapshot();
    let message = ok(
        &snapshot,
        "POST",
        "/v1/shelves",
        r#"{"name": "shelves/s1", "theme": "sf", "bookCount": "5"}"#,
        Some("request_id=r1&shelf.theme=ignored"),
    );
    assert_eq!(
        json(&message),
        serde_json::json!({
            "shelf": {"name": "shelves/s1", "theme": "sf", "bookCount": "5"},
            "requestId": "r1",
        })
    );

    // Path variable inside the body field wins over the body.
    let message = ok(
        &snapshot,
        "PATCH",
        "/v1/shelves/s1/books/b1",
        r#"{"name": "other", "title": "The Dispossessed", "pages": 387}"#,
        Some("update_mask=title,pages"),
    );
    assert_eq!(
        json(&message),
        serde_json::json!({
            "book": {"name": "shelves/s1/books/b1", "title": "The Dispossessed", "pages": 387},
            "updateMask": "title,pages",
        })
    );

    // Errors inside the body field carry the field name.
    match err(
        &snapshot,
        "POST",
        "/v1/shelves/s1/books",
        r#"{"pages": "many"}"#,
        None,
    ) {
        DescriptorError::InvalidJson { path, message } => {
            assert_eq!(path, "book.pages", "{message}");
        }
        other => panic!("unexpected {other}"),
    }
    match err(
        &snapshot,
        "POST",
        "/v1/shelves/s1/books",
        r#"{"bogus": 1}"#,
        None,
    ) {
        DescriptorError::InvalidJson { path, .. } => assert_eq!(path, "book.bogus"),
        other => panic!("unexpected {other}"),
    }
    // A body that tries to escape its field is just invalid JSON.
    assert!(matches!(
        err(
            &snapshot,
            "POST",
            "/v1/shelves/s1/books",
            r#"{}, "parent": "x""#,
            None
        ),
        DescriptorError::InvalidJson { .. }
    ));
    // An empty body leaves the field unset.
    let message = ok(&snapshot, "POST", "/v1/shelves/s1/books", " ", None);
    assert_eq!(json(&message), serde_json::json!({"parent": "shelves/s1"}));
}

#[test]
fn no_body_query_parameters() {
    let registry = registry();
    let snapshot = registry.snapshot();
    let query = "page_size=10&pageToken=a+b%26c&filter.author=Le%20Guin&filter.pages.min=100\
        &tags=x&tags=y&genre=SCIENCE&genres=FICTION&genres=2&min_books=9007199254740993\
        &include_empty=true&since=2017-01-15T01:30:15Z&max_age=3.5s&read_mask=pageSize,filter.author\
        &limit=7&cursor=-_8&by_name=n&ratio=0.5&big=18446744073709551615";
    // The body is ignored without a body rule.
    let message = ok(
        &snapshot,
        "GET",
        "/v1/shelves",
        r#"{"pageSize": 99}"#,
        Some(query),
    );
    assert_eq!(
        json(&message),
        serde_json::json!({
            "pageSize": 10,
            "pageToken": "a b&c",
            "filter": {"author": "Le Guin", "pages": {"min": 100}},
            "tags": ["x", "y"],
            "genre": "SCIENCE",
            "genres": ["FICTION", "SCIENCE"],
            "minBooks": "9007199254740993",
            "includeEmpty": true,
            "since": "2017-01-15T01:30:15Z",
            "maxAge": "3.500s",
            "readMask": "pageSize,filter.author",
            "limit": 7,
            "cursor": "+/8=",
            "byName": "n",
            "ratio": 0.5,
            "big": "18446744073709551615",
        })
    );
    // Enum numbers, bool 0/1, negative ints, empty values.
    let message = ok(
        &snapshot,
        "GET",
        "/v1/shelves",
        "",
        Some("genre=1&include_empty=1&page_size=-3&page_token="),
    );
    assert_eq!(
        json(&message),
        serde_json::json!({"genre": "FICTION", "includeEmpty": true, "pageSize": -3})
    );
    // Nothing at all.
    let message = ok(&snapshot, "GET", "/v1/shelves", "", None);
    assert_eq!(json(&message), serde_json::json!({}));
}

#[test]
fn query_parameter_errors() {
    let registry = registry();
    let snapshot = registry.snapshot();
    for (query, expected_path) in [
        ("bogus=1", "bogus"),
        ("filter.bogus=1", "filter.bogus"),
        ("page_size=abc", "page_size"),
        ("page_size=99999999999", "page_size"),
        ("genre=NOPE", "genre"),
        ("include_empty=yes", "include_empty"),
        ("since=yesterday", "since"),
        ("max_age=forever", "max_age"),
        ("cursor=%%%", "cursor"),
        ("filter=x", "filter"),
        ("labels=x", "labels"),
        ("tags.x=1", "tags.x"),
        ("page_size=1&page_size=2", "page_size"),
        ("by_name=a&by_id=3", "by_id"),
        ("page_token=%FF", "page_token"),
    ] {
        match err(&snapshot, "GET", "/v1/shelves", "", Some(query)) {
            DescriptorError::InvalidPath { path, message } => {
                assert_eq!(path, expected_path, "{query}: {message}");
            }
            other => panic!("{query}: unexpected {other}"),
        }
    }
    // Unknown parameters can be ignored.
    let opts = JsonOptions {
        ignore_unknown_fields: true,
        ..JsonOptions::default()
    };
    let (_, message) = request(
        &snapshot,
        "GET",
        "/v1/shelves",
        "",
        Some("bogus=1&page_size=2&a.b.c=d"),
        &opts,
    )
    .unwrap();
    assert_eq!(json(&message), serde_json::json!({"pageSize": 2}));
}

#[test]
fn path_parameters() {
    let registry = registry();
    let snapshot = registry.snapshot();
    // int64 from a path segment.
    let message = ok(&snapshot, "GET", "/v1/books/42", "", None);
    assert_eq!(json(&message), serde_json::json!({"bookId": "42"}));
    match err(&snapshot, "GET", "/v1/books/forty-two", "", None) {
        DescriptorError::InvalidPath { path, .. } => assert_eq!(path, "book_id"),
        other => panic!("unexpected {other}"),
    }
    // Path wins over the query.
    let message = ok(&snapshot, "GET", "/v1/shelves/s1", "", Some("name=other"));
    assert_eq!(json(&message), serde_json::json!({"name": "shelves/s1"}));
    // Nested path fields; the query may set siblings but not the bound field.
    let message = ok(
        &snapshot,
        "GET",
        "/v1/authors/le-guin",
        "",
        Some("author.display_name=Ursula&author.id=ignored"),
    );
    assert_eq!(
        json(&message),
        serde_json::json!({"author": {"id": "le-guin", "displayName": "Ursula"}})
    );
    // Decoded values.
    let message = ok(&snapshot, "GET", "/v1/books/7?x", "", None);
    assert_eq!(message.descriptor().name(), "GetBookRequest");
    let message = ok(&snapshot, "GET", "/v1/files/x/a%20b/c", "", None);
    assert_eq!(
        message.get_field_by_name("path").unwrap().as_ref(),
        &Value::String("a b/c".to_owned())
    );
}

#[test]
fn too_deep_body() {
    let registry = registry();
    let snapshot = registry.snapshot();
    let opts = JsonOptions {
        max_depth: 2,
        ..JsonOptions::default()
    };
    let err = request(
        &snapshot,
        "POST",
        "/v1/shelves",
        r#"{"createTime": {"a": {"b": 1}}}"#,
        None,
        &opts,
    )
    .unwrap_err();
    assert!(matches!(err, DescriptorError::TooDeep { max: 2 }), "{err}");
}

/// `build_request` (the codec, parameters appended as wire fields) against
/// `json::legacy::build_request` (a `DynamicMessage`): the same message, or
/// the same error, for every binding shape: body `*` with path parameters,
/// a body field with path and query parameters, no body with every query
/// parameter type, parameters set to their default over a body value,
/// oneof members, repeated keys, unknown and malformed parameters.
#[test]
fn parameters_on_the_wire_equal_the_dynamic_message() {
    let registry = registry();
    let snapshot = registry.snapshot();
    let query = "page_size=10&pageToken=a+b%26c&filter.author=Le%20Guin&filter.pages.min=100\
        &tags=x&tags=y&genre=SCIENCE&genres=FICTION&genres=2&min_books=9007199254740993\
        &include_empty=true&since=2017-01-15T01:30:15Z&max_age=3.5s&read_mask=pageSize,filter.author\
        &limit=7&cursor=-_8&by_name=n&ratio=0.5&big=18446744073709551615";
    let cases: &[(&str, &str, &str, Option<&str>)] = &[
        (
            "POST",
            "/v1/shelves/s1:merge",
            r#"{"name": "x", "otherShelf": "shelves/s2"}"#,
            Some("other_shelf=q"),
        ),
        ("POST", "/v1/shelves/s1:merge", "", None),
        ("POST", "/v1/shelves/s1:merge", r#"{"bogus": 1}"#, None),
        (
            "POST",
            "/v1/shelves",
            r#"{"name": "shelves/s1", "theme": "sf", "bookCount": "5"}"#,
            Some("request_id=r1&shelf.theme=ignored"),
        ),
        ("POST", "/v1/shelves", r#"{"bookCount": "5"}"#, None),
        ("POST", "/v1/shelves", r#"{"bookCount": "x"}"#, None),
        ("POST", "/v1/shelves", r#"[1]"#, None),
        ("POST", "/v1/shelves", " ", Some("request_id=r2")),
        (
            "PATCH",
            "/v1/shelves/s1/books/b1",
            r#"{"name": "other", "title": "T", "pages": 387}"#,
            Some("update_mask=title,pages"),
        ),
        (
            "PATCH",
            "/v1/shelves/s1/books/b1",
            r#"{"title": "T"}"#,
            Some("update_mask=title&update_mask=pages"),
        ),
        (
            "POST",
            "/v1/shelves/s1/books",
            r#"{"title": "T", "pages": 10}"#,
            Some("book_id=b9"),
        ),
        ("GET", "/v1/shelves", r#"{"pageSize": 99}"#, Some(query)),
        (
            "GET",
            "/v1/shelves",
            "",
            Some("genre=1&include_empty=1&page_size=-3&page_token="),
        ),
        (
            "GET",
            "/v1/shelves",
            "",
            Some("page_size=0&include_empty=false&ratio=0"),
        ),
        ("GET", "/v1/shelves", "", Some("page_size=1&page_size=2")),
        ("GET", "/v1/shelves", "", Some("nope=1")),
        ("GET", "/v1/shelves", "", Some("page_size=ten")),
        ("GET", "/v1/shelves", "", Some("genre=NOPE")),
        ("GET", "/v1/shelves", "", Some("since=yesterday")),
        ("GET", "/v1/shelves", "", Some("by_name=a&by_id=3")),
        ("GET", "/v1/shelves", "", Some("by_id=3")),
        ("GET", "/v1/books/42", "", None),
        ("GET", "/v1/books/forty-two", "", None),
        ("GET", "/v1/shelves/s1", "", Some("name=other")),
        ("GET", "/v1/files/x/a%20b/c", "", None),
        (
            "GET",
            "/v1/books:search",
            "",
            Some("query=dune&tags=a&tags=b&filter.author=Herbert&genre=SCIENCE"),
        ),
    ];
    let opts = JsonOptions::default();
    for &(m, path, body, query) in cases {
        let Some(matched) = snapshot.match_http(&method(m), path) else {
            panic!("{m} {path} should match");
        };
        let mut new = Vec::new();
        let mut old = Vec::new();
        let a = build_request(&matched, body.as_bytes(), query, &opts, &mut new);
        let b = descriptors::json::legacy::build_request(
            &matched,
            body.as_bytes(),
            query,
            &opts,
            &mut old,
        );
        let case = format!("{m} {path} {body} {query:?}");
        match (a, b) {
            (Ok(()), Ok(())) => {
                let input = matched.method.input().unwrap();
                let new = DynamicMessage::decode(input.clone(), new.as_slice()).unwrap();
                let old = DynamicMessage::decode(input, old.as_slice()).unwrap();
                assert_eq!(json(&new), json(&old), "{case}");
            }
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "{case}"),
            (a, b) => panic!("{case}: codec {a:?}, legacy {b:?}"),
        }
    }
}
