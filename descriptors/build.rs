//! Compiles the bundled googleapis protos (`../proto/google/{api,rpc}`) and the
//! protobuf well-known types with protox (no system `protoc`) and writes the
//! encoded `FileDescriptorSet` to `$OUT_DIR/bundled_descriptor_set.bin`, which
//! `lib.rs` embeds as `BUNDLED_DESCRIPTOR_SET`.
//!
//! `encode_file_descriptor_set` (not `prost_types::FileDescriptorSet::encode`)
//! is used on purpose: it keeps extension options such as `google.api.http`.
//!
//! It also writes `$OUT_DIR/bundled_sources.rs`: a `&[(&str, &str)]` table of
//! every `.proto` under `../proto/google/{api,rpc}` (import name, source text
//! via `include_str!`), which `compile.rs` resolves imports of uploaded
//! `.proto` files against, so the binary needs no files at run time.

use std::{
    env,
    path::{Path, PathBuf},
};

/// Files compiled into the bundled set; their imports come along.
const BUNDLED_FILES: &[&str] = &[
    "google/rpc/status.proto",
    "google/rpc/error_details.proto",
    "google/rpc/code.proto",
    "google/api/annotations.proto",
    "google/api/http.proto",
    "google/api/httpbody.proto",
    // The well-known types, so every upload may import them without shipping them.
    "google/protobuf/any.proto",
    "google/protobuf/api.proto",
    "google/protobuf/descriptor.proto",
    "google/protobuf/duration.proto",
    "google/protobuf/empty.proto",
    "google/protobuf/field_mask.proto",
    "google/protobuf/source_context.proto",
    "google/protobuf/struct.proto",
    "google/protobuf/timestamp.proto",
    "google/protobuf/type.proto",
    "google/protobuf/wrappers.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for file in BUNDLED_FILES
        .iter()
        .filter(|f| !f.starts_with("google/protobuf/"))
    {
        println!("cargo:rerun-if-changed=../proto/{file}");
    }
    let bytes = protox::Compiler::new(["../proto"])?
        .include_imports(true)
        .include_source_info(false)
        .open_files(BUNDLED_FILES)?
        .encode_file_descriptor_set();
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("bundled_descriptor_set.bin"), bytes)?;
    write_bundled_sources(&out_dir)?;
    Ok(())
}

/// Directories (relative to `../proto`) whose `.proto` files, recursively,
/// are embedded as sources for compiling uploads.
const SOURCE_DIRS: &[&str] = &["google/api", "google/rpc"];

/// Writes `bundled_sources.rs`: `&[("google/api/http.proto", include_str!("/abs/..")), ..]`,
/// sorted by name so the output is reproducible.
fn write_bundled_sources(out_dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?)
        .join("..")
        .join("proto");
    let mut files = Vec::new();
    for dir in SOURCE_DIRS {
        // A directory in rerun-if-changed makes cargo rescan it, so added or
        // removed files are picked up too.
        println!("cargo:rerun-if-changed=../proto/{dir}");
        collect_protos(&root, &root.join(dir), &mut files)?;
    }
    files.sort();
    let mut table = String::from("&[\n");
    for (name, path) in &files {
        let path = path.to_str().ok_or("non-UTF-8 path under ../proto")?;
        table.push_str(&format!("    ({name:?}, include_str!({path:?})),\n"));
    }
    table.push_str("]\n");
    std::fs::write(out_dir.join("bundled_sources.rs"), table)?;
    Ok(())
}

/// Appends `(import name, absolute path)` of every `.proto` under `dir`.
fn collect_protos(
    root: &Path,
    dir: &Path,
    out: &mut Vec<(String, PathBuf)>,
) -> Result<(), Box<dyn std::error::Error>> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(root, &path, out)?;
        } else if path.extension().is_some_and(|e| e == "proto") {
            let relative = path.strip_prefix(root)?;
            let name = relative
                .components()
                .map(|c| {
                    c.as_os_str()
                        .to_str()
                        .ok_or("non-UTF-8 path under ../proto")
                })
                .collect::<Result<Vec<_>, _>>()?
                .join("/");
            out.push((name, path));
        }
    }
    Ok(())
}
