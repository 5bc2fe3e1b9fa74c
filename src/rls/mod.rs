//! The gRPC face: Envoy's `RateLimitService` over the engine, gRPC health and reflection.
//!
//! It translates between the wire (prost types) and the engine's [`crate::engine::Call`] and
//! [`crate::engine::Decision`]; it decides nothing itself.

pub mod connections;
mod service;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::server::HealthReporter;

pub use connections::Keepalive;
pub use service::RlsService;

use crate::engine::Engine;
use crate::proto::RateLimitServiceServer;
use crate::wire::RequestBounds;

/// The names health is reported under: all services (""), the reference service's name, and
/// the full service name.
pub const HEALTH_NAMES: [&str; 3] = [
    "",
    "ratelimit",
    "envoy.service.ratelimit.v3.RateLimitService",
];

/// Bounds of the gRPC server. Every one is a flag with a documented default.
#[derive(Clone, Debug)]
pub struct GrpcOptions {
    pub request: RequestBounds,
    /// Largest request message accepted, bytes.
    pub max_message_bytes: usize,
    pub max_connections: usize,
    pub max_concurrent_streams: u32,
    /// Longest a call may take; a caller's shorter `grpc-timeout` wins.
    pub request_timeout: Duration,
    /// TCP keepalive of every connection; none leaves the kernel's defaults.
    pub keepalive: Option<Keepalive>,
}

impl Default for GrpcOptions {
    fn default() -> Self {
        GrpcOptions {
            request: RequestBounds::default(),
            max_message_bytes: 1 << 20,
            max_connections: 10_000,
            max_concurrent_streams: 1_024,
            request_timeout: Duration::from_secs(1),
            keepalive: Some(Keepalive {
                idle: Duration::from_secs(30),
                timeout: Duration::from_secs(10),
            }),
        }
    }
}

pub async fn set_health(reporter: &HealthReporter, status: ServingStatus) {
    for name in HEALTH_NAMES {
        reporter.set_service_status(name, status).await;
    }
}

/// Serves gRPC on `listener` until `shutdown` is cancelled, then drains in-flight calls.
pub async fn serve_grpc(
    listener: TcpListener,
    engine: Arc<Engine>,
    options: GrpcOptions,
    health: HealthServer<impl Health>,
    shutdown: CancellationToken,
) -> Result<(), GrpcError> {
    // Both reflection versions: grpcurl 1.8.6 speaks only v1alpha.
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;
    let rls = RateLimitServiceServer::new(RlsService::new(engine, options.request))
        .max_decoding_message_size(options.max_message_bytes);
    let incoming = connections::bounded_incoming(
        listener,
        options.max_connections,
        options.keepalive,
        shutdown.clone(),
    );
    Server::builder()
        .timeout(options.request_timeout)
        .max_concurrent_streams(options.max_concurrent_streams)
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(rls)
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled())
        .await?;
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    #[error("the embedded descriptor sets do not build a reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Reflection over our protos and the health service's, so `grpcurl list` needs no files.
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}
