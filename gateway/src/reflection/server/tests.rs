use std::sync::Arc;

use bytes::Bytes;
use descriptors::Registry;
use http_body_util::Full;
use prost::Message as _;

use super::*;
use crate::reflection::wire::NOT_FOUND;

/// `FileDescriptorProto.name` only.
#[derive(Clone, PartialEq, prost::Message)]
struct Name {
    #[prost(string, tag = "1")]
    name: String,
}

fn reflection() -> Reflection {
    let registry = Registry::new();
    registry
        .put("samples", sample_services::FILE_DESCRIPTOR_SET)
        .expect("samples register");
    Reflection::new(Arc::new(registry), None)
}

fn file_names(answer: &Answer) -> Vec<String> {
    match answer {
        Answer::Files(files) => files
            .iter()
            .map(|f| Name::decode(f.as_slice()).expect("file decodes").name)
            .collect(),
        other => panic!("not a file answer: {other:?}"),
    }
}

#[test]
fn reflection_paths() {
    for (path, expected) in [
        (
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            true,
        ),
        (
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            true,
        ),
        ("/grpc.reflection.v1.ServerReflection/Other", true),
        (
            "/grpc.reflection.v1.ServerReflectionX/ServerReflectionInfo",
            false,
        ),
        (
            "/grpc.reflection.v2.ServerReflection/ServerReflectionInfo",
            false,
        ),
        ("/sample.echo.v1.Echo/Unary", false),
        ("/", false),
        ("", false),
    ] {
        assert_eq!(is_reflection_path(path), expected, "{path}");
    }
}

#[test]
fn lists_registered_and_reflection_services() {
    let answer = reflection().answer(Query::ListServices);
    assert_eq!(
        answer,
        Answer::Services(
            [
                "CodenameCreator",
                "grpc.reflection.v1.ServerReflection",
                "grpc.reflection.v1alpha.ServerReflection",
                "sample.echo.v1.Echo",
                "sample.library.v1.LibraryService",
            ]
            .map(String::from)
            .to_vec()
        )
    );
}

#[test]
fn finds_the_file_of_every_kind_of_symbol() {
    let r = reflection();
    for symbol in [
        "sample.library.v1.LibraryService",
        "sample.library.v1.LibraryService.GetShelf",
        "sample.library.v1.Shelf",
        "sample.library.v1.Shelf.name",
        "sample.library.v1.SearchBooksRequest.Filter",
        "sample.library.v1.SearchBooksRequest.Filter.author",
        "sample.library.v1.AllTypes.choice",
        "sample.library.v1.Genre",
        "sample.library.v1.FICTION",
        "sample.library.v1.Genre.FICTION",
    ] {
        let names = file_names(&r.answer(Query::FileContainingSymbol(symbol.into())));
        assert_eq!(
            names.first().map(String::as_str),
            Some("library.proto"),
            "{symbol}"
        );
    }
    let names = file_names(&r.answer(Query::FileContainingSymbol("CodenameCreator".into())));
    assert_eq!(names, ["codename.proto"]);
    let names = file_names(&r.answer(Query::FileContainingSymbol("google.api.http".into())));
    assert_eq!(names[0], "google/api/annotations.proto");
}

#[test]
fn resolves_its_own_descriptors() {
    let r = reflection();
    for symbol in [
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection.ServerReflectionInfo",
        "grpc.reflection.v1.ServerReflectionResponse.error_response",
    ] {
        let names = file_names(&r.answer(Query::FileContainingSymbol(symbol.into())));
        assert_eq!(names.len(), 1, "{symbol}: {names:?}");
        let again = file_names(&r.answer(Query::FileByFilename(names[0].clone())));
        assert_eq!(again, names);
    }
}

#[test]
fn sends_the_file_then_each_transitive_import_once() {
    let answer = reflection().answer(Query::FileByFilename("library.proto".into()));
    let names = file_names(&answer);
    assert_eq!(names[0], "library.proto");
    for import in [
        "google/api/annotations.proto",
        "google/api/http.proto",
        "google/protobuf/descriptor.proto",
        "google/protobuf/timestamp.proto",
    ] {
        assert_eq!(
            names.iter().filter(|n| *n == import).count(),
            1,
            "{import}: {names:?}"
        );
    }
    // The http options travel with the file.
    let Answer::Files(files) = answer else {
        unreachable!()
    };
    let library = String::from_utf8_lossy(&files[0]);
    assert!(
        library.contains("/v1/{name=shelves/*}"),
        "google.api.http kept"
    );
}

#[test]
fn unknown_names_are_not_found_answers() {
    let r = reflection();
    for query in [
        Query::FileByFilename("nope.proto".into()),
        Query::FileContainingSymbol("sample.library.v1.Nope".into()),
        Query::FileContainingSymbol("sample.library.v1".into()),
        Query::FileContainingSymbol(String::new()),
        Query::FileContainingExtension {
            containing_type: "google.protobuf.MethodOptions".into(),
            number: 1,
        },
        Query::FileContainingExtension {
            containing_type: "google.protobuf.MethodOptions".into(),
            number: -1,
        },
        Query::AllExtensionNumbersOfType("nope.Nope".into()),
    ] {
        let answer = r.answer(query.clone());
        assert!(
            matches!(
                answer,
                Answer::Error {
                    code: NOT_FOUND,
                    ..
                }
            ),
            "{query:?}: {answer:?}"
        );
    }
}

#[test]
fn answers_extension_queries() {
    let r = reflection();
    let answer = r.answer(Query::FileContainingExtension {
        containing_type: "google.protobuf.MethodOptions".into(),
        number: 72_295_728,
    });
    assert_eq!(file_names(&answer)[0], "google/api/annotations.proto");
    let Answer::ExtensionNumbers {
        base_type_name,
        numbers,
    } = r.answer(Query::AllExtensionNumbersOfType(
        "google.protobuf.MethodOptions".into(),
    ))
    else {
        panic!("not an extension numbers answer")
    };
    assert_eq!(base_type_name, "google.protobuf.MethodOptions");
    assert!(numbers.contains(&72_295_728), "{numbers:?}");
}

#[tokio::test]
async fn unknown_method_is_unimplemented() {
    let req = http::Request::builder()
        .method("POST")
        .uri("/grpc.reflection.v1.ServerReflection/Nope")
        .header("content-type", "application/grpc")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let response = serve(Arc::new(Registry::new()), None, req).await;
    assert_eq!(response.status(), http::StatusCode::OK);
    assert_eq!(
        response
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok()),
        Some("12")
    );
}
