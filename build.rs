//! Compiles the trimmed Envoy protos with a pure-Rust parser (protox), so a fresh machine needs
//! no `protoc`. The encoded descriptor set is kept for gRPC reflection and the JSON mapping.
//!
//! Tollgate's own `RateLimitService` server is generated a second time, by hand-listed method,
//! around its own codec (`crate::rls::codec`): the request's bytes are read in place
//! (`crate::wire::WireRequest`) and the answer is the engine's decision written straight to
//! the wire, not the generated messages. The benchmark ceiling's server is generated a third
//! time, into `ceiling/` (`src/bin/tollgate-ceiling.rs`): prost's decoder, as a bare tonic
//! server has it, with Tollgate's answer writer. The prost-built client and server stay for the
//! load generator and the tests.

use std::{env, path::PathBuf};

const PROTOS: &[&str] = &["proto/envoy/service/ratelimit/v3/rls.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(PROTOS)?;

    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("tollgate_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(compiler.file_descriptor_set())?;

    // Tollgate's server: the request as bytes, for `WireRequest::parse`.
    compile_service(
        "bytes::Bytes",
        "crate::wire::EncodedResponse",
        "crate::rls::codec::RlsCodec",
        &out_dir,
    )?;
    // The ceiling's: prost's request message, in the ceiling binary's own codec.
    compile_service(
        "tollgate::proto::RateLimitRequest",
        "tollgate::wire::EncodedResponse",
        "crate::CeilingCodec",
        &out_dir.join("ceiling"),
    )?;
    Ok(())
}

/// Generates a server of `RateLimitService` into `out_dir`, with the given request and answer
/// types and codec.
fn compile_service(
    input_type: &str,
    output_type: &str,
    codec_path: &str,
    out_dir: &std::path::Path,
) -> std::io::Result<()> {
    std::fs::create_dir_all(out_dir)?;
    let should_rate_limit = tonic_build::manual::Method::builder()
        .name("should_rate_limit")
        .route_name("ShouldRateLimit")
        .comment("Decides whether a call is over any limit its descriptors match.")
        .input_type(input_type)
        .output_type(output_type)
        .codec_path(codec_path)
        .build();
    let service = tonic_build::manual::Service::builder()
        .name("RateLimitService")
        .package("envoy.service.ratelimit.v3")
        .method(should_rate_limit)
        .build();
    tonic_build::manual::Builder::new()
        .build_client(false)
        .out_dir(out_dir)
        .compile(&[service]);
    Ok(())
}
