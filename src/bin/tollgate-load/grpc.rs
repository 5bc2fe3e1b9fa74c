//! The one gRPC call the load generator makes, over HTTP/2 as Envoy makes it: request headers,
//! then the message in one DATA frame that ends the stream; the answer's headers, its message,
//! and the trailers that carry `grpc-status`.
//!
//! Written on the `h2` crate (the HTTP/2 of hyper and tonic, already in the tree) rather than
//! a tonic `Channel`: a `Channel` sends each call through a buffer task, hyper's dispatch task
//! and a task that pipes the request body: 13 µs of the generator's CPU a call, against 3.8
//! here, where a call is one task on one connection driver. With a `Channel` the generator's
//! one core, not the server's, was what saturated. The client does not reconnect: a
//! connection that ends fails the run.

use std::future::poll_fn;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONTENT_TYPE, HeaderValue, TE};
use http::{Method, Request, StatusCode, Uri};
use prost::Message;
use tokio::net::TcpStream;
use tonic::{Code, Status};

use tollgate::proto::{RateLimitRequest, RateLimitResponse};

const PATH: &str = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit";

/// The largest answer accepted (tonic's default bound on a decoded message).
const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

/// hyper's HTTP/2 client windows (which a tonic `Channel` uses): the generator reads every
/// answer at once, so a window only bounds how often it says so.
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;

/// One HTTP/2 connection to the server; clones share it (one per call slot). It does not
/// reconnect: a run whose connection ends has failed.
#[derive(Clone)]
pub struct RlsClient {
    send: h2::client::SendRequest<Bytes>,
    uri: Uri,
    /// How long a call may take before it fails here.
    deadline: Duration,
    /// The same deadline as every call's `grpc-timeout`, as Envoy sends its own.
    deadline_header: HeaderValue,
    /// How the connection ended, once it has (closed, reset, or gone away).
    ended: Arc<OnceLock<String>>,
}

impl RlsClient {
    /// Connects to `addr` (`http://host:port`; gRPC without TLS) and starts the connection's
    /// driver task on the current runtime. Every call carries `deadline` and fails past it.
    pub async fn connect(addr: &str, deadline: Duration) -> anyhow::Result<RlsClient> {
        let base: Uri = addr
            .parse()
            .with_context(|| format!("--addr {addr} is not a valid URI"))?;
        anyhow::ensure!(
            base.scheme_str() == Some("http"),
            "--addr {addr}: only http:// (gRPC without TLS) is supported"
        );
        anyhow::ensure!(
            matches!(base.path(), "" | "/") && base.query().is_none(),
            "--addr {addr}: give the server only (http://host:port), no path"
        );
        let authority = base
            .authority()
            .with_context(|| format!("--addr {addr} has no host"))?
            .clone();
        let port = authority.port_u16().unwrap_or(80);
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let tcp = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect((host, port)))
            .await
            .context("connect timed out after 5 s")?
            .context("tcp connect")?;
        tcp.set_nodelay(true).context("setting TCP_NODELAY")?;
        let (send, connection) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .enable_push(false)
            .handshake(tcp)
            .await
            .context("HTTP/2 handshake")?;
        // A connection's end shows in the calls it fails, and ends the run (`ensure_open`)
        // rather than let every later call on it fail at once, over and over.
        let ended = Arc::new(OnceLock::new());
        let ending = Arc::clone(&ended);
        tokio::spawn(async move {
            let how = match connection.await {
                Ok(()) => "closed by the server".to_owned(),
                Err(e) => e.to_string(),
            };
            let _ = ending.set(how);
        });
        let uri = Uri::builder()
            .scheme("http")
            .authority(authority)
            .path_and_query(PATH)
            .build()
            .context("building the method's URI")?;
        Ok(RlsClient {
            send,
            uri,
            deadline,
            deadline_header: grpc_timeout(deadline),
            ended,
        })
    }

    /// An error once the connection has ended: every later call on it would fail at once.
    pub fn ensure_open(&self) -> anyhow::Result<()> {
        match self.ended.get() {
            None => Ok(()),
            Some(how) => anyhow::bail!("the connection to the server ended during the run: {how}"),
        }
    }

    /// One `ShouldRateLimit` call. A failure to carry it or a malformed answer comes back as a
    /// `Status` too: UNAVAILABLE for an HTTP/2 error, INTERNAL for an answer that breaks the
    /// protocol, DEADLINE_EXCEEDED for no answer within the deadline; any fails the run.
    pub async fn should_rate_limit(
        &mut self,
        request: &RateLimitRequest,
    ) -> Result<RateLimitResponse, Status> {
        let deadline = self.deadline;
        tokio::time::timeout(deadline, self.call(request))
            .await
            .unwrap_or_else(|_| {
                Err(Status::deadline_exceeded(format!(
                    "no answer within {deadline:?}"
                )))
            })
    }

    async fn call(&mut self, request: &RateLimitRequest) -> Result<RateLimitResponse, Status> {
        poll_fn(|cx| self.send.poll_ready(cx))
            .await
            .map_err(transport)?;
        let (answer, mut body) = self
            .send
            .send_request(self.head(), false)
            .map_err(transport)?;
        body.send_data(grpc_frame(request), true)
            .map_err(transport)?;
        let (head, mut stream) = answer.await.map_err(transport)?.into_parts();
        if head.status != StatusCode::OK {
            return Err(Status::internal(format!("HTTP status {}", head.status)));
        }
        // Trailers-only: an error (or an empty answer) in the headers themselves.
        if let Some(status) = Status::from_header_map(&head.headers) {
            return Err(if status.code() == Code::Ok {
                Status::internal("an OK status with no message")
            } else {
                status
            });
        }
        let mut message = Body::Empty;
        while let Some(chunk) = stream.data().await {
            let chunk = chunk.map_err(transport)?;
            stream
                .flow_control()
                .release_capacity(chunk.len())
                .map_err(transport)?;
            message = message.push(chunk);
            if message.len() > MAX_ANSWER_BYTES {
                return Err(Status::internal(format!(
                    "an answer over {MAX_ANSWER_BYTES} bytes"
                )));
            }
        }
        let trailers = stream
            .trailers()
            .await
            .map_err(transport)?
            .ok_or_else(|| Status::internal("the answer ended without trailers"))?;
        match Status::from_header_map(&trailers) {
            Some(status) if status.code() != Code::Ok => Err(status),
            Some(_) => decode(message.into_bytes()),
            None => Err(Status::internal("the trailers carry no grpc-status")),
        }
    }

    /// The request's headers: those Envoy's gRPC client sends, in its order.
    fn head(&self) -> Request<()> {
        let mut head = Request::new(());
        *head.method_mut() = Method::POST;
        *head.uri_mut() = self.uri.clone();
        let headers = head.headers_mut();
        headers.insert(TE, HeaderValue::from_static("trailers"));
        headers.insert("grpc-timeout", self.deadline_header.clone());
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        head
    }
}

/// A request as one gRPC message on the wire: uncompressed flag, big-endian length, protobuf.
pub fn grpc_frame(request: &RateLimitRequest) -> Bytes {
    let len = request.encoded_len();
    let mut frame = BytesMut::with_capacity(5 + len);
    frame.extend_from_slice(&[0]);
    frame.extend_from_slice(&(len as u32).to_be_bytes());
    // Cannot fail: the buffer was sized by `encoded_len`.
    let _ = request.encode(&mut frame);
    frame.freeze()
}

/// The answer's body: one gRPC message, uncompressed.
fn decode(mut body: Bytes) -> Result<RateLimitResponse, Status> {
    if body.len() < 5 {
        return Err(Status::internal(format!(
            "an answer of {} bytes has no message",
            body.len()
        )));
    }
    let compressed = body.get_u8();
    let len = body.get_u32() as usize;
    if compressed != 0 {
        return Err(Status::internal("a compressed answer (none was asked for)"));
    }
    if len != body.len() {
        return Err(Status::internal(format!(
            "the message says {len} bytes, the body holds {}",
            body.len()
        )));
    }
    RateLimitResponse::decode(body)
        .map_err(|e| Status::internal(format!("the answer does not decode: {e}")))
}

/// The DATA frames of one answer: nearly always a single one, kept without a copy.
enum Body {
    Empty,
    One(Bytes),
    Many(BytesMut),
}

impl Body {
    fn push(self, chunk: Bytes) -> Body {
        match self {
            Body::Empty => Body::One(chunk),
            Body::One(first) => {
                let mut all = BytesMut::with_capacity(first.len() + chunk.len());
                all.extend_from_slice(&first);
                all.extend_from_slice(&chunk);
                Body::Many(all)
            }
            Body::Many(mut all) => {
                all.extend_from_slice(&chunk);
                Body::Many(all)
            }
        }
    }

    fn len(&self) -> usize {
        match self {
            Body::Empty => 0,
            Body::One(one) => one.len(),
            Body::Many(all) => all.len(),
        }
    }

    fn into_bytes(self) -> Bytes {
        match self {
            Body::Empty => Bytes::new(),
            Body::One(one) => one,
            Body::Many(all) => all.freeze(),
        }
    }
}

fn transport(e: h2::Error) -> Status {
    Status::unavailable(format!("HTTP/2: {e}"))
}

/// `deadline` as a `grpc-timeout` value as Envoy writes one: in milliseconds, or a coarser
/// unit where milliseconds would take more than the eight digits allowed; rounded up (a
/// deadline is never sent shorter than asked).
fn grpc_timeout(deadline: Duration) -> HeaderValue {
    const UNITS: [(u128, char); 4] = [
        (1_000_000, 'm'),
        (1_000_000_000, 'S'),
        (60_000_000_000, 'M'),
        (3_600_000_000_000, 'H'),
    ];
    const MAX: u128 = 99_999_999;
    let nanos = deadline.as_nanos();
    let (amount, unit) = UNITS
        .iter()
        .map(|&(per, unit)| (nanos.div_ceil(per), unit))
        .find(|&(amount, _)| amount <= MAX)
        .unwrap_or((MAX, 'H'));
    HeaderValue::from_str(&format!("{amount}{unit}"))
        .expect("digits and a unit letter make a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    use tokio::net::TcpListener;
    use tokio_stream::wrappers::TcpListenerStream;
    use tonic::{Request as GrpcRequest, Response as GrpcResponse};

    use tollgate::config::Unit;
    use tollgate::engine::{Code as Decided, Decision, DescriptorStatus, ReportedLimit};
    use tollgate::proto::RateLimitDescriptor;
    use tollgate::proto::rate_limit_descriptor::Entry;
    use tollgate::proto::rate_limit_response::Code as WireCode;
    use tollgate::rls::{RateLimitService, RateLimitServiceServer};
    use tollgate::wire::{EncodedResponse, WireRequest};

    /// Answers by the request's domain: `refuse` with RESOURCE_EXHAUSTED; otherwise OVER_LIMIT
    /// with one status per descriptor whose limit is named after the `grpc-timeout` the call
    /// arrived with, followed by as many `x` as the descriptor's first value says.
    struct Scripted;

    #[tonic::async_trait]
    impl RateLimitService for Scripted {
        async fn should_rate_limit(
            &self,
            request: GrpcRequest<Bytes>,
        ) -> Result<GrpcResponse<EncodedResponse>, Status> {
            let timeout = request
                .metadata()
                .get("grpc-timeout")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("none")
                .to_owned();
            let bytes = request.into_inner();
            let request = WireRequest::parse(&bytes, &Default::default())
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            if request.domain == "refuse" {
                return Err(Status::resource_exhausted("too busy, try later"));
            }
            let statuses = request
                .descriptors
                .iter()
                .map(|d| {
                    let (_, value) = d.entries[0];
                    let pad = value.parse().unwrap_or(0);
                    DescriptorStatus {
                        code: Decided::OverLimit,
                        current_limit: Some(ReportedLimit {
                            name: Some(format!("{timeout}{}", "x".repeat(pad))),
                            requests_per_unit: 7,
                            unit: Unit::Minute,
                        }),
                        limit_remaining: 0,
                        duration_until_reset: Some(Duration::from_millis(1_500)),
                    }
                })
                .collect();
            Ok(GrpcResponse::new(EncodedResponse::of(&Decision {
                code: Decided::OverLimit,
                statuses,
                denied_by_global: None,
            })))
        }
    }

    async fn scripted_server() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(RateLimitServiceServer::new(Scripted))
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        format!("http://{addr}")
    }

    fn request(domain: &str, pads: &[usize]) -> RateLimitRequest {
        RateLimitRequest {
            domain: domain.to_owned(),
            descriptors: pads
                .iter()
                .map(|pad| RateLimitDescriptor {
                    entries: vec![Entry {
                        key: "pad".into(),
                        value: pad.to_string(),
                    }],
                    ..Default::default()
                })
                .collect(),
            hits_addend: 0,
        }
    }

    #[tokio::test]
    async fn a_call_returns_the_servers_answer_and_carries_its_deadline() {
        let addr = scripted_server().await;
        let mut client = RlsClient::connect(&addr, Duration::from_millis(2_500))
            .await
            .unwrap();
        // 40,000 bytes of names: the answer spans several DATA frames (16 KiB each).
        let answer = client
            .should_rate_limit(&request("d", &[0, 3, 40_000]))
            .await
            .unwrap();
        assert_eq!(answer.overall_code, WireCode::OverLimit as i32);
        let names: Vec<_> = answer
            .statuses
            .iter()
            .map(|s| s.current_limit.as_ref().unwrap().name.clone())
            .collect();
        assert_eq!(names[0], "2500m");
        assert_eq!(names[1], "2500mxxx");
        assert_eq!(names[2].len(), 5 + 40_000);
        let status = &answer.statuses[1];
        assert_eq!(status.current_limit.as_ref().unwrap().requests_per_unit, 7);
        let reset = status.duration_until_reset.unwrap();
        assert_eq!((reset.seconds, reset.nanos), (1, 500_000_000));
        // The connection carries many calls, and clones share it.
        let mut other = client.clone();
        for i in 0..50 {
            let answer = other.should_rate_limit(&request("d", &[i])).await.unwrap();
            assert_eq!(answer.statuses.len(), 1);
        }
    }

    #[tokio::test]
    async fn a_grpc_error_comes_back_as_its_status() {
        let addr = scripted_server().await;
        let mut client = RlsClient::connect(&addr, Duration::from_secs(1))
            .await
            .unwrap();
        let status = client
            .should_rate_limit(&request("refuse", &[0]))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(status.message(), "too busy, try later");
        // The connection is still good for the next call.
        assert!(client.should_rate_limit(&request("d", &[0])).await.is_ok());
    }

    #[tokio::test]
    async fn connecting_nowhere_or_over_tls_is_an_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closed = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let e = RlsClient::connect(&closed, Duration::from_secs(1)).await;
        assert!(format!("{:#}", e.err().unwrap()).contains("tcp connect"));
        let e = RlsClient::connect("https://127.0.0.1:1", Duration::from_secs(1)).await;
        assert!(e.err().unwrap().to_string().contains("only http://"));
        let e = RlsClient::connect("http://127.0.0.1:1/v1", Duration::from_secs(1)).await;
        assert!(e.err().unwrap().to_string().contains("no path"));
    }

    /// What a bare HTTP/2 server answers every call with: the cases a tonic server never
    /// produces (it sends every error trailers-only, and always a well-formed answer).
    #[derive(Clone)]
    struct Raw {
        status: u16,
        body: Option<Bytes>,
        trailers: Option<Vec<(&'static str, &'static str)>>,
        /// Drop the connection instead of answering.
        hang_up: bool,
        /// Keep the connection, and never answer.
        silent: bool,
    }

    impl Raw {
        fn answer(body: Bytes, trailers: &[(&'static str, &'static str)]) -> Raw {
            Raw {
                status: 200,
                body: Some(body),
                trailers: Some(trailers.to_vec()),
                hang_up: false,
                silent: false,
            }
        }
    }

    async fn raw_server(raw: Raw) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let raw = raw.clone();
                tokio::spawn(async move {
                    let mut connection = h2::server::handshake(tcp).await.unwrap();
                    let mut unanswered = Vec::new();
                    while let Some(Ok((_, mut respond))) = connection.accept().await {
                        if raw.hang_up {
                            return;
                        }
                        if raw.silent {
                            unanswered.push(respond);
                            continue;
                        }
                        let head = http::Response::builder()
                            .status(raw.status)
                            .header(CONTENT_TYPE, "application/grpc")
                            .body(())
                            .unwrap();
                        let headers_only = raw.body.is_none() && raw.trailers.is_none();
                        let mut send = respond.send_response(head, headers_only).unwrap();
                        if let Some(body) = &raw.body {
                            send.send_data(body.clone(), raw.trailers.is_none())
                                .unwrap();
                        }
                        if let Some(trailers) = &raw.trailers {
                            let mut map = http::HeaderMap::new();
                            for (name, value) in trailers {
                                map.insert(*name, HeaderValue::from_static(value));
                            }
                            send.send_trailers(map).unwrap();
                        }
                    }
                });
            }
        });
        format!("http://{addr}")
    }

    fn framed_answer(extra: &[u8]) -> Bytes {
        let answer = RateLimitResponse {
            overall_code: WireCode::Ok as i32,
            ..Default::default()
        };
        let mut body = vec![0];
        body.extend_from_slice(&(answer.encoded_len() as u32).to_be_bytes());
        answer.encode(&mut body).unwrap();
        body.extend_from_slice(extra);
        Bytes::from(body)
    }

    async fn raw_call(raw: Raw) -> Result<RateLimitResponse, Status> {
        let addr = raw_server(raw).await;
        let mut client = RlsClient::connect(&addr, Duration::from_secs(5))
            .await
            .unwrap();
        client.should_rate_limit(&request("d", &[0])).await
    }

    #[tokio::test]
    async fn a_broken_answer_is_an_error_never_an_answer() {
        // The well-formed answer passes, so each failure below is the one thing changed.
        let ok = raw_call(Raw::answer(framed_answer(&[]), &[("grpc-status", "0")])).await;
        assert_eq!(ok.unwrap().overall_code, WireCode::Ok as i32);

        let cases = [
            (
                Raw::answer(
                    framed_answer(&[]),
                    &[("grpc-status", "8"), ("grpc-message", "busy")],
                ),
                Code::ResourceExhausted,
                "busy",
            ),
            (
                Raw::answer(framed_answer(&[]), &[("x-other", "1")]),
                Code::Internal,
                "no grpc-status",
            ),
            (
                Raw {
                    trailers: None,
                    ..Raw::answer(framed_answer(&[]), &[])
                },
                Code::Internal,
                "without trailers",
            ),
            (
                Raw {
                    status: 503,
                    body: None,
                    trailers: None,
                    hang_up: false,
                    silent: false,
                },
                Code::Internal,
                "HTTP status 503",
            ),
            (
                Raw::answer(
                    Bytes::from_static(&[1, 0, 0, 0, 0]),
                    &[("grpc-status", "0")],
                ),
                Code::Internal,
                "compressed",
            ),
            (
                Raw::answer(framed_answer(&[0]), &[("grpc-status", "0")]),
                Code::Internal,
                "says",
            ),
            (
                Raw::answer(Bytes::new(), &[("grpc-status", "0")]),
                Code::Internal,
                "no message",
            ),
        ];
        for (raw, code, message) in cases {
            let status = raw_call(raw).await.unwrap_err();
            assert_eq!(status.code(), code, "{status:?}");
            assert!(status.message().contains(message), "{status:?}");
        }
    }

    #[tokio::test]
    async fn an_answer_larger_than_the_stream_window_arrives_whole() {
        // 3 MiB: past the 2 MiB window, so it arrives only if the client gives the window back.
        let answer = RateLimitResponse {
            statuses: vec![tollgate::proto::rate_limit_response::DescriptorStatus {
                current_limit: Some(tollgate::proto::rate_limit_response::RateLimit {
                    name: "n".repeat(3 << 20),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut body = vec![0];
        body.extend_from_slice(&(answer.encoded_len() as u32).to_be_bytes());
        answer.encode(&mut body).unwrap();
        let got = tokio::time::timeout(
            Duration::from_secs(10),
            raw_call(Raw::answer(Bytes::from(body), &[("grpc-status", "0")])),
        )
        .await
        .expect("the answer stalled")
        .unwrap();
        assert_eq!(got, answer);
    }

    #[tokio::test]
    async fn a_call_unanswered_past_its_deadline_fails() {
        let addr = raw_server(Raw {
            silent: true,
            ..Raw::answer(Bytes::new(), &[])
        })
        .await;
        let mut client = RlsClient::connect(&addr, Duration::from_millis(50))
            .await
            .unwrap();
        let request = request("d", &[0]);
        let call = client.should_rate_limit(&request);
        let status = tokio::time::timeout(Duration::from_secs(5), call)
            .await
            .expect("the call outlived its deadline")
            .unwrap_err();
        assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    }

    #[tokio::test]
    async fn a_connection_that_ends_fails_its_call_and_then_the_run() {
        let addr = raw_server(Raw {
            hang_up: true,
            ..Raw::answer(Bytes::new(), &[])
        })
        .await;
        let mut client = RlsClient::connect(&addr, Duration::from_secs(5))
            .await
            .unwrap();
        assert!(client.ensure_open().is_ok());
        let status = client
            .should_rate_limit(&request("d", &[0]))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        // The driver task notes the end as it finishes: poll for it, with a deadline.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while client.ensure_open().is_ok() {
            assert!(
                std::time::Instant::now() < deadline,
                "the end was never noted"
            );
            tokio::task::yield_now().await;
        }
        let error = client.ensure_open().unwrap_err().to_string();
        assert!(error.contains("ended during the run"), "{error}");
    }

    #[test]
    fn grpc_frame_is_prefix_then_protobuf() {
        let request = request("bench", &[1, 2, 3]);
        let frame = grpc_frame(&request);
        assert_eq!(frame[0], 0, "uncompressed");
        let len = u32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]) as usize;
        assert_eq!(len, frame.len() - 5);
        assert_eq!(RateLimitRequest::decode(&frame[5..]).unwrap(), request);
        // And an answer framed the same way decodes back, but not a short or lying one.
        let answer = RateLimitResponse {
            overall_code: WireCode::Ok as i32,
            ..Default::default()
        };
        let mut body = vec![0, 0, 0, 0, answer.encoded_len() as u8];
        answer.encode(&mut body).unwrap();
        assert_eq!(decode(Bytes::from(body.clone())).unwrap(), answer);
        body[4] += 1;
        assert!(
            decode(Bytes::from(body))
                .unwrap_err()
                .message()
                .contains("says")
        );
        assert!(decode(Bytes::from_static(&[0, 0])).is_err());
        assert!(decode(Bytes::from_static(&[1, 0, 0, 0, 0])).is_err());
    }

    #[test]
    fn deadlines_are_written_in_milliseconds_up_to_eight_digits() {
        for (deadline, header) in [
            (Duration::from_millis(2_500), "2500m"),
            (Duration::from_secs(5), "5000m"),
            (Duration::from_nanos(1), "1m"),
            (Duration::from_nanos(99_999_999), "100m"),
            (Duration::from_nanos(100_000_001), "101m"),
            (Duration::from_millis(99_999_999), "99999999m"),
            (Duration::from_millis(100_000_001), "100001S"),
            (Duration::from_secs(100_000), "100000S"),
            (Duration::from_secs(100_000_000), "1666667M"),
            (Duration::MAX, "99999999H"),
        ] {
            assert_eq!(grpc_timeout(deadline), header, "{deadline:?}");
        }
    }
}
