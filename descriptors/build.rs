//! Compiles the bundled googleapis protos (`../proto/google/{api,rpc}`) and the
//! protobuf well-known types with protox (no system `protoc`) and writes the
//! encoded `FileDescriptorSet` to `$OUT_DIR/bundled_descriptor_set.bin`, which
//! `lib.rs` embeds as `BUNDLED_DESCRIPTOR_SET`.
//!
//! `encode_file_descriptor_set` (not `prost_types::FileDescriptorSet::encode`)
//! is used on purpose: it keeps extension options such as `google.api.http`.

use std::{env, path::PathBuf};

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
    Ok(())
}
