//! Test helpers: compiling protos with protox (extension options kept) and a
//! registry preloaded with the test sets.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, OnceLock},
};

use descriptors::Registry;
use protox::file::{
    ChainFileResolver, File, FileResolver, GoogleFileResolver, IncludeFileResolver,
};

pub(crate) const LIBRARY: &str = "example/library/v1/library.proto";
pub(crate) const TYPES: &str = "example/types/v1/types.proto";

fn dir(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// In-memory sources, tried before the include paths.
struct Sources(HashMap<String, String>);

impl FileResolver for Sources {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        match self.0.get(name) {
            Some(source) => File::from_source(name, source),
            None => Err(protox::Error::file_not_found(name)),
        }
    }
}

/// Compiles `open` (with imports) from `sources`, tests/protos and ../proto.
pub(crate) fn compile_with(sources: &[(&str, &str)], open: &[&str]) -> Vec<u8> {
    let mut resolver = ChainFileResolver::new();
    resolver.add(Sources(
        sources
            .iter()
            .map(|(n, s)| ((*n).to_owned(), (*s).to_owned()))
            .collect(),
    ));
    resolver.add(IncludeFileResolver::new(dir("tests/protos")));
    resolver.add(IncludeFileResolver::new(dir("../proto")));
    resolver.add(GoogleFileResolver::new());
    protox::Compiler::with_file_resolver(resolver)
        .include_imports(true)
        .include_source_info(false)
        .open_files(open)
        .unwrap()
        .encode_file_descriptor_set()
}

/// Compiles files from tests/protos.
pub(crate) fn compile(open: &[&str]) -> Vec<u8> {
    compile_with(&[], open)
}

/// Compiles one in-memory file.
pub(crate) fn compile_source(name: &str, source: &str) -> Vec<u8> {
    compile_with(&[(name, source)], &[name])
}

/// A registry with the library set as `library` and the types set as `types`.
pub(crate) fn registry() -> Registry {
    let registry = Registry::new();
    registry.put("library", &library_set()).unwrap();
    registry.put("types", &types_set()).unwrap();
    registry
}

/// The compiled library set (compiled once per test binary).
pub(crate) fn library_set() -> Arc<Vec<u8>> {
    static SET: OnceLock<Arc<Vec<u8>>> = OnceLock::new();
    SET.get_or_init(|| Arc::new(compile(&[LIBRARY]))).clone()
}

/// The compiled types set (compiled once per test binary).
pub(crate) fn types_set() -> Arc<Vec<u8>> {
    static SET: OnceLock<Arc<Vec<u8>>> = OnceLock::new();
    SET.get_or_init(|| Arc::new(compile(&[TYPES]))).clone()
}

/// A registry shared by read-only tests (property tests build it once).
pub(crate) fn shared_registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(registry)
}
