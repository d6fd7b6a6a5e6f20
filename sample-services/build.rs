//! Compiles `proto/*.proto` with protox (no system `protoc`; googleapis imports from the
//! workspace's `../proto`), writes the encoded descriptor set to
//! `$OUT_DIR/sample_descriptor.bin` and generates tonic code for it, plus prost types for the
//! `google.rpc` error model that `LibraryService.Fail` sends.

use std::{env, path::PathBuf};

/// The services' protos: what the descriptor set holds (with all their imports).
const SERVICE_PROTOS: [&str; 3] = ["codename.proto", "echo.proto", "library.proto"];
/// Compiled to Rust too, but left out of the descriptor set.
const RPC_PROTOS: [&str; 2] = ["google/rpc/status.proto", "google/rpc/error_details.proto"];
const INCLUDES: [&str; 2] = ["proto", "../proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=../proto/google");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    // Every imported file included, like `protoc --include_imports`. Encoded
    // by protox itself: going through `prost_types` would drop extension
    // options such as `google.api.http`.
    let bytes = protox::Compiler::new(INCLUDES)?
        .include_imports(true)
        .open_files(SERVICE_PROTOS)?
        .encode_file_descriptor_set();
    std::fs::write(out_dir.join("sample_descriptor.bin"), bytes)?;

    let codegen = protox::compile(SERVICE_PROTOS.iter().chain(&RPC_PROTOS), INCLUDES)?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(codegen)?;
    Ok(())
}
