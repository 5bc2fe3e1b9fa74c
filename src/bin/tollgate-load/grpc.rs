//! The one gRPC call the load generator makes, over HTTP/2 as Envoy makes it: request headers,
//! then the message in one DATA frame that ends the stream; the answer's headers, its message,
//! and the trailers that carry `grpc-status`.
//!
//! Written on the `h2` crate (the HTTP/2 of hyper and tonic, already in the tree) rather than
//! a tonic `Channel`: a `Channel` sends each call through a buffer task, hyper's dispatch task
//! and a task that pipes the request body, about 13 µs of the generator's CPU a call against
//! the servers' 6–8 µs, so the generator's one core, not the server's, was what saturated.
//! Here a call is one task on one connection driver.

use std::future::poll_fn;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONTENT_TYPE, HeaderValue, TE};
use http::{Method, Request, StatusCode, Uri};
use prost::Message;
use tokio::net::TcpStream;
use tonic::{Code, Status};

use tollgate::proto::{RateLimitRequest, RateLimitResponse};

const PATH: &str = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit";

/// hyper's HTTP/2 client windows (which a tonic `Channel` uses): the generator reads every
/// answer at once, so a window only bounds how often it says so.
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;

/// One HTTP/2 connection to the server; clones share it (one per call slot).
#[derive(Clone)]
pub struct RlsClient {
    send: h2::client::SendRequest<Bytes>,
    uri: Uri,
    /// Every call's `grpc-timeout`: the caller's deadline, as Envoy sends its own.
    deadline: HeaderValue,
}

impl RlsClient {
    /// Connects to `addr` (`http://host:port`; gRPC without TLS) and starts the connection's
    /// driver task on the current runtime.
    pub async fn connect(addr: &str, deadline: Duration) -> anyhow::Result<RlsClient> {
        use anyhow::Context;
        let base: Uri = addr
            .parse()
            .with_context(|| format!("--addr {addr} is not a valid URI"))?;
        anyhow::ensure!(
            base.scheme_str() == Some("http"),
            "--addr {addr}: only http:// (gRPC without TLS) is supported"
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
        // A connection's end shows in every call on it as an error; nothing to do here.
        tokio::spawn(async move {
            let _ = connection.await;
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
            deadline: grpc_timeout(deadline),
        })
    }

    /// One `ShouldRateLimit` call. Transport and protocol failures come back as a `Status`
    /// (UNAVAILABLE and INTERNAL), as tonic's client reports them.
    pub async fn should_rate_limit(
        &mut self,
        request: &RateLimitRequest,
    ) -> Result<RateLimitResponse, Status> {
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
        let mut message = Chunks::default();
        while let Some(chunk) = stream.data().await {
            let chunk = chunk.map_err(transport)?;
            let _ = stream.flow_control().release_capacity(chunk.len());
            message.push(chunk);
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

    /// The request's headers, as Envoy's gRPC client sends them.
    fn head(&self) -> Request<()> {
        let mut head = Request::new(());
        *head.method_mut() = Method::POST;
        *head.uri_mut() = self.uri.clone();
        let headers = head.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert(TE, HeaderValue::from_static("trailers"));
        headers.insert("grpc-timeout", self.deadline.clone());
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

/// The DATA frames of one answer; nearly always a single one, kept without a copy.
#[derive(Default)]
struct Chunks {
    first: Option<Bytes>,
    rest: Option<BytesMut>,
}

impl Chunks {
    fn push(&mut self, chunk: Bytes) {
        match (&self.first, &mut self.rest) {
            (None, _) => self.first = Some(chunk),
            (Some(_), Some(rest)) => rest.extend_from_slice(&chunk),
            (Some(first), None) => {
                let mut rest = BytesMut::with_capacity(first.len() + chunk.len());
                rest.extend_from_slice(first);
                rest.extend_from_slice(&chunk);
                self.rest = Some(rest);
            }
        }
    }

    fn into_bytes(self) -> Bytes {
        match (self.first, self.rest) {
            (_, Some(rest)) => rest.freeze(),
            (first, None) => first.unwrap_or_default(),
        }
    }
}

fn transport(e: h2::Error) -> Status {
    Status::unavailable(format!("HTTP/2: {e}"))
}

/// `deadline` as a `grpc-timeout` value: at most eight digits, in the finest unit that fits,
/// rounded up (a deadline is never sent shorter than asked).
fn grpc_timeout(deadline: Duration) -> HeaderValue {
    const UNITS: [(u128, char); 6] = [
        (1, 'n'),
        (1_000, 'u'),
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

    /// Answers by the request's domain: `refuse` with RESOURCE_EXHAUSTED; otherwise OVER_LIMIT
    /// with one status per descriptor whose limit is named after the `grpc-timeout` the call
    /// arrived with, followed by as many `x` as the descriptor's first value says.
    struct Scripted;

    #[tonic::async_trait]
    impl RateLimitService for Scripted {
        async fn should_rate_limit(
            &self,
            request: GrpcRequest<RateLimitRequest>,
        ) -> Result<GrpcResponse<Decision>, Status> {
            let timeout = request
                .metadata()
                .get("grpc-timeout")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("none")
                .to_owned();
            let request = request.into_inner();
            if request.domain == "refuse" {
                return Err(Status::resource_exhausted("too busy, try later"));
            }
            let statuses = request
                .descriptors
                .iter()
                .map(|d| {
                    let pad = d.entries[0].value.parse().unwrap_or(0);
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
            Ok(GrpcResponse::new(Decision {
                code: Decided::OverLimit,
                statuses,
                denied_by_global: None,
            }))
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
        assert_eq!(names[0], "2500000u");
        assert_eq!(names[1], "2500000uxxx");
        assert_eq!(names[2].len(), 8 + 40_000);
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
    fn deadlines_are_written_in_the_finest_unit_that_fits_eight_digits() {
        for (deadline, header) in [
            (Duration::from_millis(2_500), "2500000u"),
            (Duration::from_secs(5), "5000000u"),
            (Duration::from_nanos(99_999_999), "99999999n"),
            (Duration::from_nanos(100_000_001), "100001u"),
            (Duration::from_secs(60), "60000000u"),
            (Duration::from_secs(600), "600000m"),
            (Duration::from_secs(100_000), "100000S"),
            (Duration::from_secs(100_000_000), "1666667M"),
            (Duration::MAX, "99999999H"),
        ] {
            assert_eq!(grpc_timeout(deadline), header, "{deadline:?}");
        }
    }
}
