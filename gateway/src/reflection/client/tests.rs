use super::*;

fn file(name: &str, imports: &[&str]) -> Vec<u8> {
    FileHeader {
        name: Some(name.to_owned()),
        dependency: imports.iter().map(|s| (*s).to_owned()).collect(),
    }
    .encode_to_vec()
}

fn names(set: &[u8]) -> Vec<String> {
    RawFileSet::decode(set)
        .expect("set decodes")
        .file
        .iter()
        .map(|f| {
            FileHeader::decode(f.as_slice())
                .expect("file decodes")
                .name
                .unwrap_or_default()
        })
        .collect()
}

#[test]
fn infrastructure_services_are_skipped() {
    for (service, skipped) in [
        ("grpc.reflection.v1.ServerReflection", true),
        ("grpc.reflection.v1alpha.ServerReflection", true),
        ("grpc.health.v1.Health", true),
        ("grpc.health.v2.Health", false),
        ("sample.echo.v1.Echo", false),
        ("CodenameCreator", false),
    ] {
        assert_eq!(is_infrastructure(service), skipped, "{service}");
    }
}

#[test]
fn every_file_follows_its_imports() {
    let mut files = Files::default();
    files
        .add(vec![file("a.proto", &["b.proto", "c.proto"])])
        .expect("add");
    assert_eq!(
        files.next_missing(),
        Some(("b.proto".to_owned(), "a.proto".to_owned()))
    );
    files
        .add(vec![
            file("b.proto", &["c.proto", "d.proto"]),
            file("c.proto", &[]),
            file("d.proto", &["c.proto"]),
        ])
        .expect("add");
    assert_eq!(files.next_missing(), None);
    files.add(vec![file("e.proto", &["d.proto"])]).expect("add");
    assert_eq!(
        names(&files.into_set()),
        ["c.proto", "d.proto", "b.proto", "a.proto", "e.proto"]
    );
}

#[test]
fn the_first_copy_of_a_file_wins_and_bytes_are_kept() {
    let mut original = file("a.proto", &[]);
    // An unknown field (e.g. options this side cannot decode) survives.
    original.extend_from_slice(&[0x42, 0x03, b'x', b'y', b'z']);
    let mut files = Files::default();
    files
        .add(vec![original.clone(), file("a.proto", &["x.proto"])])
        .expect("add");
    assert_eq!(files.next_missing(), None);
    let set = RawFileSet::decode(files.into_set().as_slice()).expect("set decodes");
    assert_eq!(set.file, [original]);
}

#[test]
fn bad_files_are_errors() {
    let mut files = Files::default();
    assert!(matches!(
        files.add(vec![FileHeader::default().encode_to_vec()]),
        Err(ReflectionError::NamelessFile)
    ));
    assert!(matches!(
        files.add(vec![vec![0x0a, 0x05, b'a']]),
        Err(ReflectionError::Decode(_))
    ));
}

#[test]
fn answers_map_to_files_or_errors() {
    let query = Query::FileByFilename("a.proto".into());
    assert_eq!(
        files_of(Answer::Files(vec![vec![1]]), &query).expect("files"),
        Some(vec![vec![1]])
    );
    assert_eq!(
        files_of(Answer::not_found("gone".into()), &query).expect("not found"),
        None
    );
    assert!(matches!(
        files_of(
            Answer::Error {
                code: 13,
                message: "boom".into()
            },
            &query
        ),
        Err(ReflectionError::Server { code: 13, .. })
    ));
    assert!(matches!(
        files_of(Answer::Services(vec![]), &query),
        Err(ReflectionError::UnexpectedAnswer(_))
    ));
}
