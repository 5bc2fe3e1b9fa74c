//! Compiles the trimmed Envoy protos with a pure-Rust parser (protox), so a fresh machine needs
//! no `protoc`. The encoded descriptor set is kept for gRPC reflection and the JSON mapping.
//!
//! Tollgate's own `RateLimitService` server is generated a second time, by hand-listed method,
//! so that it can answer with the engine's decision written straight to the wire
//! (`crate::rls::codec`) instead of through the generated response message (the benchmark
//! ceiling serves it too); the prost-built client and server stay for the load generator and
//! the tests.

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

    let should_rate_limit = tonic_build::manual::Method::builder()
        .name("should_rate_limit")
        .route_name("ShouldRateLimit")
        .comment("Decides whether a call is over any limit its descriptors match.")
        .input_type("crate::proto::RateLimitRequest")
        .output_type("crate::wire::EncodedResponse")
        .codec_path("crate::rls::codec::RlsCodec")
        .build();
    let service = tonic_build::manual::Service::builder()
        .name("RateLimitService")
        .package("envoy.service.ratelimit.v3")
        .method(should_rate_limit)
        .build();
    tonic_build::manual::Builder::new()
        .build_client(false)
        .compile(&[service]);
    Ok(())
}
