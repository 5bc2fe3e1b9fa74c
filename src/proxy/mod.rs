//! The OpenAI forwarding proxy: an app calls it as it would call OpenAI, without the key; the
//! proxy names the caller, asks the decision service (in-process or over gRPC), forwards allowed
//! calls with the server's key and streams the answer back, and answers denials itself with
//! OpenAI-shaped 429s carrying honest retry feedback.
//!
//! One call, in order: kill switch, path normalised and matched against the routes (404 before
//! anything is spent), CORS, body size (413) and body policy (400), stream slot, one decision
//! over the request limits and the token reservation together, then forwarding.

mod body;
pub mod config;
mod cors;
mod forward;
pub mod identity;
pub mod limiter;
pub mod metrics;
mod reply;
pub mod route;
mod settle;
pub mod sse;
mod streams;
pub mod usage;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ring::hmac;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{ProxyConfig, load_proxy_config, parse_proxy_config};
pub use limiter::{Limiter, Remote};

use crate::engine::Code;
use config::{OnLimiterError, Vars};
use cors::Origin;
use forward::{Reading, Upstream};
use identity::IdentityPolicy;
use limiter::{Ask, LimiterError};
use metrics::{CallOutcome, ProxyMetrics, TokenFlow};
use reply::{ApiError, Feedback};
use route::{PathError, Route, normalise_path};
use settle::Reservation;
use streams::StreamSlots;

/// The longest install token accepted; longer is a client error, not a new identity.
const MAX_TOKEN_BYTES: usize = 256;

/// What the proxy holds that nobody else may: read from the environment, never from its file.
#[derive(Clone)]
pub struct Secrets {
    pub api_key: String,
    /// Keys the hashes of clients (`{client}` with install tokens, `safety_identifier`);
    /// `None` uses the API key.
    pub hash_key: Option<String>,
}

impl Secrets {
    /// The variables `config` names; an unset or empty one is an error naming it.
    pub fn from_env(config: &ProxyConfig) -> Result<Secrets, ProxyError> {
        let read = |name: &str| {
            std::env::var(name)
                .ok()
                .filter(|value| !value.trim().is_empty())
                .ok_or_else(|| ProxyError::MissingSecret(name.to_owned()))
        };
        Ok(Secrets {
            api_key: read(&config.api_key_env)?,
            hash_key: config.hash_key_env.as_deref().map(read).transpose()?,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("${0} is not set (or empty): the proxy needs it (named in its config)")]
    MissingSecret(String),
    #[error("the API key in ${0} is not a valid header value")]
    BadKey(String),
    #[error("'{0}' is not a valid header value")]
    BadHeader(&'static str),
    #[error("cannot build the upstream client: {0}")]
    Client(#[from] reqwest::Error),
}

pub struct Proxy {
    config: ProxyConfig,
    limiter: Limiter,
    upstream: Upstream,
    identity: IdentityPolicy,
    streams: StreamSlots,
    settlements: TaskTracker,
    metrics: ProxyMetrics,
    /// Keys the hashes sent upstream (safety identifiers, install tokens): derived from the API
    /// key, so they are stable across restarts and nobody without the key can reverse them.
    hasher: hmac::Key,
}

impl Proxy {
    pub fn new(
        config: ProxyConfig,
        secrets: &Secrets,
        limiter: Limiter,
    ) -> Result<Proxy, ProxyError> {
        let api_key = secrets.api_key.as_str();
        let mut bearer = HeaderValue::try_from(format!("Bearer {api_key}"))
            .map_err(|_| ProxyError::BadKey(config.api_key_env.clone()))?;
        bearer.set_sensitive(true);
        let header = |value: &Option<String>, what| {
            value
                .as_deref()
                .map(HeaderValue::try_from)
                .transpose()
                .map_err(|_| ProxyError::BadHeader(what))
        };
        let mut client = reqwest::Client::builder();
        for root in &config.upstream_roots {
            client = client.add_root_certificate(root.clone());
        }
        let client = client
            .connect_timeout(config.upstream_connect_timeout)
            .pool_idle_timeout(std::time::Duration::from_secs(90))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let upstream = Upstream {
            client,
            base: config.upstream.clone(),
            api_key: bearer,
            organization: header(&config.organization, "organization")?,
            project: header(&config.project, "project")?,
            response_timeout: config.upstream_response_timeout,
            idle_timeout: config.upstream_idle_timeout,
        };
        let identity = IdentityPolicy {
            trusted_proxies: config.trusted_proxies.clone(),
            client_header: Some(config.client_header.clone()),
            ipv6_prefix: config.ipv6_prefix,
        };
        Ok(Proxy {
            hasher: hmac::Key::new(
                hmac::HMAC_SHA256,
                secrets.hash_key.as_deref().unwrap_or(api_key).as_bytes(),
            ),
            config,
            limiter,
            upstream,
            identity,
            streams: StreamSlots::default(),
            settlements: TaskTracker::new(),
            metrics: ProxyMetrics::default(),
        })
    }

    /// Its counters, to register where `/metrics` is served.
    pub fn metrics(&self) -> &ProxyMetrics {
        &self.metrics
    }

    fn hash(&self, what: &str, text: &str) -> String {
        let tag = hmac::sign(&self.hasher, format!("{what}\0{text}").as_bytes());
        tag.as_ref()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// How long shutdown waits for token settlements still on their way to the service.
const SETTLE_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Serves the proxy on `listener` until `stop` is cancelled, then lets calls in flight finish
/// and their token settlements reach the decision service.
pub async fn serve_proxy(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let settlements = proxy.settlements.clone();
    let app = Router::new().fallback(handle).with_state(proxy);
    let served = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(stop.cancelled_owned())
    .await;
    settlements.close();
    if tokio::time::timeout(SETTLE_GRACE, settlements.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            left = settlements.len(),
            "token settlements still pending at exit"
        );
    }
    served
}

async fn handle(
    State(proxy): State<Arc<Proxy>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let origin = proxy.config.cors.origin(request.headers());
    let mut response = match call(&proxy, peer, request, &origin).await {
        Ok(response) => {
            proxy.metrics.call(CallOutcome::Forwarded);
            response
        }
        Err(error) => {
            proxy.metrics.call(outcome_of(&error));
            error.into_response()
        }
    };
    cors::decorate(&origin, response.headers_mut());
    response
}

fn outcome_of(error: &ApiError) -> CallOutcome {
    match error.code {
        Some("rate_limit_exceeded" | "too_many_concurrent_streams") => CallOutcome::RateLimited,
        Some("rate_limiter_unavailable") => CallOutcome::LimiterError,
        Some("upstream_unreachable" | "upstream_timeout") => CallOutcome::UpstreamError,
        Some("service_disabled") => CallOutcome::Disabled,
        _ => CallOutcome::Refused,
    }
}

async fn call(
    proxy: &Proxy,
    peer: SocketAddr,
    request: Request,
    origin: &Origin,
) -> Result<Response, ApiError> {
    let config = &proxy.config;
    if !config.enabled {
        return Err(ApiError::unavailable(
            "This service is switched off for now.",
            "service_disabled",
        ));
    }
    let (parts, body) = request.into_parts();
    let path = normalise_path(parts.uri.path()).map_err(|e| match e {
        PathError::AboveRoot => ApiError::not_found(parts.method.as_str(), parts.uri.path()),
        PathError::BadEscape => ApiError::invalid(format!("Invalid path: {e}.")),
    })?;
    let on_path: Vec<&Route> = config
        .routes
        .iter()
        .filter(|r| r.matches_path(&path))
        .collect();
    if parts.method == Method::OPTIONS
        && parts
            .headers
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        return preflight(proxy, &parts.headers, origin, &path, &on_path);
    }
    if matches!(origin, Origin::Refused) {
        return Err(cors::refused());
    }
    let Some(route) = on_path.iter().find(|r| r.method == parts.method) else {
        return Err(ApiError::not_found(parts.method.as_str(), &path));
    };
    let raw = read_body(body, &parts.headers, config).await?;

    let address = proxy
        .identity
        .client_address(peer, &parts.headers)
        .to_string();
    let client = match install_token(proxy, &parts.headers)? {
        Some(token) => format!("{address}/{}", proxy.hash("token", token)),
        None => address.clone(),
    };
    let prepared = body::prepare(route.kind, raw, config, &proxy.hash("client", &client))?;

    // By address: a fresh install token must not buy more streams.
    let slot = match (prepared.stream, config.max_streams_per_client) {
        (true, max) if max > 0 => Some(proxy.streams.acquire(&address, max).ok_or_else(|| {
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "requests",
                format!("At most {max} streams may be open at once per client."),
            )
            .code("too_many_concurrent_streams")
        })?),
        _ => None,
    };

    let vars = Vars {
        client: &client,
        ip: &address,
        route: &route.pattern,
        model: prepared.model.as_deref().unwrap_or("none"),
    };
    let mut asks: Vec<Ask> = (config.descriptors.iter())
        .map(|d| Ask::charge(d.fill(&vars), None))
        .collect();
    let requests = asks.len();
    let reserved = prepared.worst_case_tokens;
    if let Some(tokens) = &config.tokens
        && reserved > 0
    {
        asks.extend(
            tokens
                .descriptors
                .iter()
                .map(|d| Ask::charge(d.fill(&vars), Some(reserved))),
        );
    }

    let decision = match proxy.limiter.decide(&config.domain, &asks).await {
        Ok(decision) => Some(decision),
        Err(LimiterError::Status(status)) if status.code() == tonic::Code::InvalidArgument => {
            // The call itself is what the service refuses: no outage, and no way around it.
            return Err(ApiError::invalid(format!(
                "The rate limiter refused this call: {}",
                status.message()
            )));
        }
        // Counted as a failure here, and as a call once it has ended: let through, it ends as
        // forwarded (or however its forwarding went), not as a limiter error.
        Err(e) if config.on_limiter_error == OnLimiterError::Allow => {
            proxy.metrics.limiter_error();
            tracing::warn!(error = %e, "rate-limit service failed; allowing (on_limiter_error: allow)");
            None
        }
        Err(e) => {
            proxy.metrics.limiter_error();
            tracing::warn!(error = %e, "rate-limit service failed; denying");
            return Err(ApiError::unavailable(
                "The rate limiter cannot be reached, so no call is let through.",
                "rate_limiter_unavailable",
            ));
        }
    };
    // The reservation's first window to end bounds when a refund may still be given.
    let refund_until = decision
        .iter()
        .flat_map(|d| d.statuses.iter().skip(requests))
        .filter_map(|status| status.duration_until_reset)
        .min()
        .map_or_else(std::time::Instant::now, |reset| {
            std::time::Instant::now() + reset
        });
    let mut feedback = HeaderMap::new();
    if let Some(decision) = &decision {
        let feedback_of = Feedback {
            decision,
            tokens_from: requests,
            reserved,
        };
        if decision.code == Code::OverLimit {
            return Err(feedback_of.denial());
        }
        feedback_of.headers(&mut feedback);
    }
    // The token asks' entries, taken back for the reservation to settle.
    let token_entries: Vec<_> = asks.drain(requests..).map(|ask| ask.entries).collect();
    // Reserved only when the decision service counted it: with no decision, nothing to settle.
    let reservation = (decision.is_some() && !token_entries.is_empty()).then(|| {
        proxy.metrics.tokens(TokenFlow::Reserved, reserved);
        Reservation::new(
            proxy.limiter.clone(),
            proxy.settlements.clone(),
            proxy.metrics.clone(),
            config.domain.clone(),
            token_entries,
            reserved,
            refund_until,
        )
    });
    let reading = Reading {
        kind: route.kind,
        strip_usage_chunk: prepared.strip_usage_chunk,
        reservation,
        slot,
    };
    // A query means something only to reads; a POST's parameters are in its body.
    let query = (route.method == Method::GET)
        .then(|| parts.uri.query())
        .flatten();
    let url = proxy.upstream.url(&path, query);
    let (status, mut headers, body) = proxy
        .upstream
        .forward(
            parts.method.clone(),
            url,
            &parts.headers,
            prepared.body,
            reading,
        )
        .await
        .map_err(|mut error| {
            error.headers.extend(feedback.clone());
            error
        })?;
    headers.extend(feedback);
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Ok(response)
}

fn preflight(
    proxy: &Proxy,
    headers: &HeaderMap,
    origin: &Origin,
    path: &str,
    on_path: &[&Route],
) -> Result<Response, ApiError> {
    let Origin::Allowed(_) = origin else {
        return Err(cors::refused());
    };
    if on_path.is_empty() {
        return Err(ApiError::not_found("OPTIONS", path));
    }
    let methods: Vec<&str> = on_path.iter().map(|r| r.method.as_str()).collect();
    let token = proxy
        .config
        .client_token_header
        .as_ref()
        .map(|h| h.as_str());
    Ok(proxy
        .config
        .cors
        .preflight(&methods.join(", "), headers, token))
}

/// The body, at most `max_body_bytes` (413), arriving within `body_timeout_ms` (408).
async fn read_body(
    body: Body,
    headers: &HeaderMap,
    config: &ProxyConfig,
) -> Result<bytes::Bytes, ApiError> {
    let max = config.max_body_bytes;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!("The request body is larger than {max} bytes."),
        )
        .code("request_too_large")
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let read = tokio::time::timeout(config.body_timeout, axum::body::to_bytes(body, max)).await;
    match read {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) if is_length_limit(&e) => Err(too_large()),
        Ok(Err(e)) => Err(ApiError::invalid(format!(
            "The request body could not be read: {e}."
        ))),
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request_error",
            "The request body did not arrive in time.",
        )
        .code("request_timeout")),
    }
}

fn is_length_limit(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// The per-install token, when one is configured and sent.
fn install_token<'h>(proxy: &Proxy, headers: &'h HeaderMap) -> Result<Option<&'h str>, ApiError> {
    let Some(name) = &proxy.config.client_token_header else {
        return Ok(None);
    };
    let Some(value) = headers.get(name) else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(token) if !token.is_empty() && token.len() <= MAX_TOKEN_BYTES => Ok(Some(token)),
        _ => Err(ApiError::invalid(format!(
            "The '{name}' header must be 1 to {MAX_TOKEN_BYTES} visible ASCII characters."
        ))),
    }
}
