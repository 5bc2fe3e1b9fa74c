//! The harness every integration test shares: a real Tollgate on 127.0.0.1 port 0 with a
//! manual clock, and a real gRPC client.
#![allow(dead_code)] // each test binary uses its own part of the harness

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use tollgate::clock::ManualClock;
use tollgate::config::{LoadOptions, RateLimitConfig, load::load_sources};
use tollgate::proto::rate_limit_descriptor::{Entry, RateLimitOverride};
use tollgate::proto::rate_limit_response::{Code, DescriptorStatus};
use tollgate::proto::{
    RateLimitDescriptor, RateLimitRequest, RateLimitResponse, RateLimitServiceClient,
};
use tollgate::server::{Listeners, ProxyListener, ServeError, ServeOptions, serve};

pub mod openai;
pub mod process;
pub mod proxy;

/// A day-aligned instant (so minute, hour and day windows all start here), 2027-01-15.
pub const T0: Duration = Duration::from_secs(20_834 * 86_400);

pub struct TestServer {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub clock: Arc<ManualClock>,
    /// Sends a replacement config, as the binary does on SIGHUP.
    pub reload: mpsc::Sender<RateLimitConfig>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServeError>>,
}

impl TestServer {
    pub async fn start(yaml: &str) -> TestServer {
        TestServer::start_with(yaml, ServeOptions::default()).await
    }

    pub async fn start_with(yaml: &str, options: ServeOptions) -> TestServer {
        TestServer::start_full(yaml, options, None).await
    }

    /// As [`Self::start_with`], also serving the OpenAI proxy in-process.
    pub async fn start_full(
        yaml: &str,
        options: ServeOptions,
        proxy: Option<ProxyListener>,
    ) -> TestServer {
        let config = config(yaml);
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc_addr = grpc.local_addr().unwrap();
        let http_addr = admin.local_addr().unwrap();
        let clock = ManualClock::new(T0);
        let (stop, stopped) = oneshot::channel();
        let listeners = Listeners {
            proxy,
            grpc,
            admin: Some(admin),
        };
        let (reload, reloads) = mpsc::channel(1);
        let shutdown = async {
            let _ = stopped.await;
        };
        let task = tokio::spawn(serve(
            listeners,
            config,
            clock.clone(),
            options,
            reloads,
            shutdown,
        ));
        TestServer {
            grpc_addr,
            http_addr,
            clock,
            reload,
            stop: Some(stop),
            task,
        }
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc_addr)
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http_addr)
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.grpc_url())
            .unwrap()
            .connect()
            .await
            .expect("connect to the test server")
    }

    pub async fn client(&self) -> RateLimitServiceClient<Channel> {
        RateLimitServiceClient::new(self.channel().await)
    }

    /// Asks and expects an answer (not a gRPC error).
    pub async fn ask(&self, request: RateLimitRequest) -> RateLimitResponse {
        self.client()
            .await
            .should_rate_limit(request)
            .await
            .unwrap_or_else(|s| panic!("call failed: {s:?}"))
            .into_inner()
    }

    /// Asks and returns only the overall code.
    pub async fn code_of(&self, request: RateLimitRequest) -> Code {
        overall(&self.ask(request).await)
    }

    /// Stops the server and returns how `serve` ended.
    pub async fn stop(mut self) -> Result<(), ServeError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.expect("serve task panicked")
    }
}

/// Loads a test config from YAML text.
pub fn config(yaml: &str) -> RateLimitConfig {
    load_sources(
        &[("test.yaml".to_owned(), yaml.to_owned())],
        &LoadOptions::default(),
    )
    .unwrap_or_else(|e| panic!("test config does not load:\n{e}"))
}

/// A descriptor of `key=value` entries.
pub fn descriptor(entries: &[(&str, &str)]) -> RateLimitDescriptor {
    RateLimitDescriptor {
        entries: entries
            .iter()
            .map(|(k, v)| Entry {
                key: (*k).to_owned(),
                value: (*v).to_owned(),
            })
            .collect(),
        ..Default::default()
    }
}

pub fn with_hits(mut d: RateLimitDescriptor, hits: u64) -> RateLimitDescriptor {
    d.hits_addend = Some(hits);
    d
}

pub fn refund(mut d: RateLimitDescriptor, hits: u64) -> RateLimitDescriptor {
    d.hits_addend = Some(hits);
    d.is_negative_hits = true;
    d
}

pub fn with_override(
    mut d: RateLimitDescriptor,
    requests_per_unit: u32,
    unit: tollgate::proto::envoy::r#type::v3::RateLimitUnit,
) -> RateLimitDescriptor {
    d.limit = Some(RateLimitOverride {
        requests_per_unit,
        unit: unit as i32,
    });
    d
}

pub fn request(domain: &str, descriptors: Vec<RateLimitDescriptor>) -> RateLimitRequest {
    RateLimitRequest {
        domain: domain.to_owned(),
        descriptors,
        hits_addend: 0,
    }
}

/// One descriptor of one entry.
pub fn simple(domain: &str, key: &str, value: &str) -> RateLimitRequest {
    request(domain, vec![descriptor(&[(key, value)])])
}

pub fn overall(response: &RateLimitResponse) -> Code {
    Code::try_from(response.overall_code).expect("a known overall code")
}

pub fn code(status: &DescriptorStatus) -> Code {
    Code::try_from(status.code).expect("a known status code")
}

pub fn reset_secs(status: &DescriptorStatus) -> Option<f64> {
    status
        .duration_until_reset
        .map(|d| d.seconds as f64 + f64::from(d.nanos) / 1e9)
}

/// Polls `condition` until it holds or `deadline` passes.
pub async fn eventually<F, Fut>(deadline: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + deadline;
    let mut poll = tokio::time::interval(Duration::from_millis(5));
    loop {
        poll.tick().await;
        if condition().await {
            return true;
        }
        if tokio::time::Instant::now() >= end {
            return false;
        }
    }
}

/// An address on 127.0.0.1 that refuses connections for as long as the returned socket lives:
/// the port is bound but never listened on, so nothing else can take it meanwhile (a listener
/// bound and dropped frees its port for the next server a test starts, which then answers).
pub fn refusing_address() -> (tokio::net::TcpSocket, SocketAddr) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let address = socket.local_addr().unwrap();
    (socket, address)
}

/// Whether a third-party program is on PATH; if not, skips loudly, or fails when
/// `TOLLGATE_REQUIRE_<NAME>=1` says it must be there (as CI does).
pub fn require_program(program: &str, env_name: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()));
    if !found {
        let var = format!("TOLLGATE_REQUIRE_{env_name}");
        if std::env::var(&var).as_deref() == Ok("1") {
            panic!("{program} is required ({var}=1) but is not on PATH");
        }
        eprintln!(
            "\n!!!!!!!! SKIPPED: `{program}` is not installed; this test did not run. !!!!!!!!\n\
             !!!!!!!! Install it (see README) or set {var}=1 to make this a failure. !!!!!!!!\n"
        );
    }
    found
}

/// Sends `body` as the request message as it is: bytes the client did not build from a
/// `RateLimitRequest`.
pub async fn raw_call(channel: Channel, body: &[u8]) -> Result<RateLimitResponse, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit",
    );
    grpc.unary(tonic::Request::new(body.to_vec()), path, RawRequestCodec)
        .await
        .map(tonic::Response::into_inner)
}

/// Sends raw bytes as the request; decodes the answer with prost.
#[derive(Clone, Copy)]
struct RawRequestCodec;

impl tonic::codec::Codec for RawRequestCodec {
    type Encode = Vec<u8>;
    type Decode = RateLimitResponse;
    type Encoder = RawRequestCodec;
    type Decoder = tonic_prost::ProstDecoder<RateLimitResponse>;

    fn encoder(&mut self) -> Self::Encoder {
        RawRequestCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::new(tonic::codec::BufferSettings::default())
    }
}

impl tonic::codec::Encoder for RawRequestCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        body: Vec<u8>,
        buf: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(buf, &body);
        Ok(())
    }
}
