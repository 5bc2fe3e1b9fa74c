//! `tollgate-ceiling`: a benchmark-only server, never a rate limiter.
//!
//! A bare tonic server on the same stack as Tollgate (tonic, prost, the same generated server
//! and codec: requests decoded by prost, answers written by `tollgate::wire::EncodedResponse`;
//! the service's own runtime policy from `tollgate::runtime`) that answers every
//! `ShouldRateLimit` with a constant OK: overall OK and one OK status per request descriptor,
//! nothing else. It decides nothing and counts nothing. Its throughput and CPU time per call
//! under a given load are the practical limit of this stack on this machine; `bench/run.sh`
//! reports Tollgate as a ratio of it. Like Tollgate's gRPC server it sets TCP_NODELAY, allows
//! 1,024 streams per connection and honours a caller's deadline (`grpc-timeout`, which tonic
//! reads for every server); it has none of Tollgate's health, reflection, own time bound on a
//! call or connection bounds.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

use tollgate::engine::{Code, DescriptorStatus};
use tollgate::proto::RateLimitRequest;
use tollgate::rls::{RateLimitService, RateLimitServiceServer};
use tollgate::wire::EncodedResponse;

#[derive(Parser)]
#[command(about = "Benchmark ceiling: answers every ShouldRateLimit with a constant OK")]
struct Args {
    #[arg(long, default_value = "127.0.0.1:8081")]
    grpc_addr: SocketAddr,
}

/// Answers OK to everything.
struct ConstantOk;

#[tonic::async_trait]
impl RateLimitService for ConstantOk {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<EncodedResponse>, Status> {
        let descriptors = request.get_ref().descriptors.len();
        Ok(Response::new(EncodedResponse::new(
            Code::Ok,
            std::iter::repeat_n(&OK, descriptors),
            None,
        )))
    }
}

/// The status of every descriptor: OK, and nothing else.
const OK: DescriptorStatus<&str> = DescriptorStatus {
    code: Code::Ok,
    current_limit: None,
    limit_remaining: 0,
    duration_until_reset: None,
};

fn main() -> ExitCode {
    let args = Args::parse();
    let served = tollgate::runtime::build()
        .context("starting the tokio runtime")
        .and_then(|runtime| {
            eprintln!(
                "tollgate-ceiling: tokio runtime: {}",
                tollgate::runtime::describe(&runtime)
            );
            runtime.block_on(serve(args.grpc_addr))
        });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tollgate-ceiling: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(addr: SocketAddr) -> anyhow::Result<()> {
    let incoming = TcpIncoming::bind(addr)
        .with_context(|| format!("binding gRPC on {addr}"))?
        .with_nodelay(Some(true));
    // Port 0 picks a free port; say which.
    let bound = incoming.local_addr().context("reading the bound address")?;
    eprintln!("tollgate-ceiling: serving constant OK on {bound} (benchmark only)");
    Server::builder()
        .max_concurrent_streams(1_024)
        .add_service(RateLimitServiceServer::new(ConstantOk))
        .serve_with_incoming_shutdown(incoming, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("serving gRPC")
}
