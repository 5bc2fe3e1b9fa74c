//! A local stand-in for OpenAI's API on 127.0.0.1: Chat Completions (JSON and SSE, with
//! `stream_options.include_usage`), Responses (JSON and SSE), Embeddings and Models, each with a
//! `usage` block, plus its own 429 and 5xx on demand. It records every call it receives, so a
//! test can see exactly what the proxy sent, and can hold or stream a response forever to show
//! incremental delivery and cancellation.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// One call as the upstream received it.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Value,
}

/// How the upstream answers the next calls.
#[derive(Clone, Debug)]
pub enum Behaviour {
    /// Answers normally with this usage.
    Normal { prompt: u64, completion: u64 },
    /// OpenAI's own 429.
    RateLimited,
    /// A 500 with OpenAI's error body.
    ServerError,
    /// A stream sends its first event, then waits for [`FakeOpenAi::release`] before the rest.
    HoldAfterFirstEvent { prompt: u64, completion: u64 },
    /// A stream that sends an event every few milliseconds until the reader goes away.
    Endless,
    /// Sends nothing at all until [`FakeOpenAi::release`], then answers normally.
    Hang,
}

pub struct FakeOpenAi {
    pub addr: SocketAddr,
    state: Arc<Shared>,
}

struct Shared {
    behaviour: Mutex<Behaviour>,
    received: Mutex<Vec<Received>>,
    /// TCP connections accepted: with pooling, far fewer than calls.
    connections: AtomicUsize,
    release: Semaphore,
    /// Set when an endless stream's body was dropped before it ended: the call was cancelled.
    cancelled: AtomicBool,
}

impl FakeOpenAi {
    pub async fn start() -> FakeOpenAi {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        FakeOpenAi::serve(listener).await
    }

    /// The same over HTTPS, with a certificate for `localhost` made on the spot; returns it
    /// too (as PEM), for the client to trust.
    pub async fn start_tls() -> (FakeOpenAi, String) {
        let rcgen::CertifiedKey { cert, key_pair } =
            rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let key =
            tokio_rustls::rustls::pki_types::PrivateKeyDer::Pkcs8(key_pair.serialize_der().into());
        let config = tokio_rustls::rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key)
            .unwrap();
        let listener = TlsListener {
            tcp: TcpListener::bind("127.0.0.1:0").await.unwrap(),
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        };
        (FakeOpenAi::serve(listener).await, cert.pem())
    }

    async fn serve<L>(listener: L) -> FakeOpenAi
    where
        L: axum::serve::Listener<Addr = SocketAddr>,
    {
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Shared {
            behaviour: Mutex::new(Behaviour::Normal {
                prompt: 12,
                completion: 30,
            }),
            received: Mutex::new(Vec::new()),
            connections: AtomicUsize::new(0),
            release: Semaphore::new(0),
            cancelled: AtomicBool::new(false),
        });
        let app = Router::new().fallback(answer).with_state(state.clone());
        let counted = state.clone();
        let listener = listener.tap_io(move |_| {
            counted.connections.fetch_add(1, Ordering::SeqCst);
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        FakeOpenAi { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn behave(&self, behaviour: Behaviour) {
        *self.state.behaviour.lock().unwrap() = behaviour;
    }

    pub fn calls(&self) -> usize {
        self.state.received.lock().unwrap().len()
    }

    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    pub fn last(&self) -> Received {
        self.received()
            .pop()
            .expect("the upstream received no call")
    }

    /// Lets one held stream send the rest of its events.
    pub fn release(&self) {
        self.state.release.add_permits(1);
    }

    pub fn cancelled(&self) -> bool {
        self.state.cancelled.load(Ordering::SeqCst)
    }
}

async fn answer(State(state): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    state.received.lock().unwrap().push(Received {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        headers: parts.headers.clone(),
        body: body.clone(),
    });
    let behaviour = state.behaviour.lock().unwrap().clone();
    let (prompt, completion) = match behaviour {
        Behaviour::RateLimited => return own_429(),
        Behaviour::ServerError => return error(StatusCode::INTERNAL_SERVER_ERROR, "server_error"),
        Behaviour::Normal { prompt, completion }
        | Behaviour::HoldAfterFirstEvent { prompt, completion } => (prompt, completion),
        Behaviour::Endless => (0, 0),
        Behaviour::Hang => {
            if let Ok(permit) = state.release.acquire().await {
                permit.forget();
            }
            (1, 1)
        }
    };
    let stream = body.get("stream") == Some(&Value::Bool(true));
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("gpt-test")
        .to_owned();
    match (parts.uri.path(), stream) {
        ("/v1/chat/completions", false) => json_answer(json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "Hello world"}}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion},
        })),
        ("/v1/chat/completions", true) => {
            let include_usage =
                body.pointer("/stream_options/include_usage") == Some(&Value::Bool(true));
            let events = chat_events(&model, include_usage, prompt, completion);
            sse(state, behaviour, events)
        }
        ("/v1/responses", false) => json_answer(json!({
            "id": "resp_1", "object": "response", "status": "completed", "model": model,
            "output": [{"type": "message", "role": "assistant",
                        "content": [{"type": "output_text", "text": "Hello world"}]}],
            "usage": {"input_tokens": prompt, "output_tokens": completion,
                      "total_tokens": prompt + completion},
        })),
        ("/v1/responses", true) => {
            let completed = json!({"type": "response.completed", "response": {
                "id": "resp_1", "status": "completed",
                "usage": {"input_tokens": prompt, "output_tokens": completion,
                          "total_tokens": prompt + completion}}});
            let events = vec![
                format!(
                    "event: response.created\ndata: {}\n\n",
                    json!({"type": "response.created"})
                ),
                format!(
                    "event: response.output_text.delta\ndata: {}\n\n",
                    json!({"type": "response.output_text.delta", "delta": "Hello"})
                ),
                format!("event: response.completed\ndata: {completed}\n\n"),
            ];
            sse(state, behaviour, events)
        }
        ("/v1/embeddings", _) => json_answer(json!({
            "object": "list", "model": model,
            "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
            "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
        })),
        ("/v1/models", _) => json_answer(json!({"object": "list", "data": [{"id": "gpt-test"}]})),
        _ => error(StatusCode::NOT_FOUND, "unknown_url"),
    }
}

fn chat_events(model: &str, include_usage: bool, prompt: u64, completion: u64) -> Vec<String> {
    let chunk = |delta: Value, finish: Value| {
        let mut chunk = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk",
            "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        // With include_usage, OpenAI sends `"usage": null` on every chunk but the last.
        if include_usage {
            chunk["usage"] = Value::Null;
        }
        chunk
    };
    let mut events = vec![
        chunk(json!({"role": "assistant", "content": ""}), Value::Null),
        chunk(json!({"content": "Hello"}), Value::Null),
        chunk(json!({"content": " world"}), Value::Null),
        chunk(json!({}), json!("stop")),
    ];
    if include_usage {
        events.push(
            json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": model,
            "choices": [],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion}}),
        );
    }
    let mut events: Vec<String> = events.iter().map(|e| format!("data: {e}\n\n")).collect();
    events.push("data: [DONE]\n\n".to_owned());
    events
}

/// Sets the flag when dropped before being disarmed: the body was abandoned mid-way.
struct CancelGuard(Arc<Shared>, bool);

impl CancelGuard {
    /// The body ended as it should: not a cancellation.
    fn ended(mut self) {
        self.1 = true;
    }
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if !self.1 {
            self.0.cancelled.store(true, Ordering::SeqCst);
        }
    }
}

fn sse(state: Arc<Shared>, behaviour: Behaviour, events: Vec<String>) -> Response {
    let stream = futures_util::stream::unfold(
        (0usize, events, CancelGuard(state, false), behaviour),
        |(i, events, guard, behaviour)| async move {
            let event = match &behaviour {
                Behaviour::Endless => {
                    // The stand-in's own pace, as a model streams tokens: not a wait for
                    // state (tests poll the cancellation flag with a deadline).
                    if i > 0 {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    if i >= 100_000 {
                        guard.ended();
                        return None;
                    }
                    format!(
                        "data: {}\n\n",
                        json!({"object": "chat.completion.chunk",
                        "choices": [{"index": 0, "delta": {"content": "x"}}]})
                    )
                }
                _ => {
                    if i == 1 && matches!(behaviour, Behaviour::HoldAfterFirstEvent { .. }) {
                        guard.0.release.acquire().await.ok()?.forget();
                    }
                    match events.get(i) {
                        Some(event) => event.clone(),
                        None => {
                            guard.ended();
                            return None;
                        }
                    }
                }
            };
            Some((
                Ok::<_, Infallible>(Bytes::from(event)),
                (i + 1, events, guard, behaviour),
            ))
        },
    );
    let mut response = Response::new(Body::from_stream(stream));
    let headers = response.headers_mut();
    headers.insert(
        "content-type",
        "text/event-stream; charset=utf-8".parse().unwrap(),
    );
    account_headers(headers);
    response
}

fn json_answer(body: Value) -> Response {
    let mut response = axum::Json(body).into_response();
    account_headers(response.headers_mut());
    response
}

/// What OpenAI sends that discloses the account, and what it sends that is the client's.
fn account_headers(headers: &mut HeaderMap) {
    headers.insert("openai-organization", "org-secret".parse().unwrap());
    headers.insert("openai-project", "proj_secret".parse().unwrap());
    headers.insert("x-ratelimit-limit-requests", "10000".parse().unwrap());
    headers.insert("x-ratelimit-remaining-tokens", "149984".parse().unwrap());
    headers.insert("set-cookie", "__cf_bm=abc; path=/".parse().unwrap());
    headers.insert("x-request-id", "req_123".parse().unwrap());
    headers.insert("openai-processing-ms", "42".parse().unwrap());
}

fn own_429() -> Response {
    let mut response = (
        StatusCode::TOO_MANY_REQUESTS,
        axum::Json(json!({"error": {
            "message": "Rate limit reached for gpt-test in organization org-Secret123 on tokens per min (TPM): Limit 30000, Used 29990, Requested 400.",
            "type": "insufficient_quota", "param": null, "code": "insufficient_quota"}})),
    )
        .into_response();
    account_headers(response.headers_mut());
    response
}

fn error(status: StatusCode, code: &str) -> Response {
    (
        status,
        axum::Json(
            json!({"error": {"message": "The upstream failed.", "type": "server_error",
                                    "param": null, "code": code}}),
        ),
    )
        .into_response()
}

/// TLS over a TCP listener, for axum: a connection whose handshake fails is dropped.
struct TlsListener {
    tcp: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}
