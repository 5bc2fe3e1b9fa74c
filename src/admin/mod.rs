//! The HTTP admin port: `/healthcheck`, `/json` (proto3 JSON in and out), `/metrics`
//! (Prometheus) and `/rlconfig` (the loaded rules); for the proxy alone, `/healthcheck` and
//! `/metrics`. It decides nothing itself.

mod json;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::{FromRef, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::engine::Engine;
use crate::wire::RequestBounds;

/// Whether the service is serving: set once the config is loaded and the servers are bound,
/// cleared when draining. Read by `/healthcheck`.
#[derive(Debug, Default)]
pub struct Readiness(AtomicBool);

impl Readiness {
    pub fn set(&self, serving: bool) {
        self.0.store(serving, Ordering::SeqCst);
    }

    pub fn is_serving(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

#[derive(Clone)]
struct AdminState {
    engine: Arc<Engine>,
    bounds: RequestBounds,
    health: Health,
    json: Arc<json::JsonCodec>,
}

/// What `/healthcheck` and `/metrics` read, with or without an engine.
#[derive(Clone)]
struct Health {
    readiness: Arc<Readiness>,
    registry: Arc<Registry>,
}

impl FromRef<AdminState> for Health {
    fn from_ref(state: &AdminState) -> Health {
        state.health.clone()
    }
}

pub struct AdminOptions {
    pub bounds: RequestBounds,
    /// Largest `/json` body accepted, bytes.
    pub max_body_bytes: usize,
}

pub async fn serve_admin(
    listener: TcpListener,
    engine: Arc<Engine>,
    readiness: Arc<Readiness>,
    registry: Registry,
    options: AdminOptions,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let state = AdminState {
        engine,
        bounds: options.bounds,
        health: Health {
            readiness,
            registry: Arc::new(registry),
        },
        json: Arc::new(json::JsonCodec::new().map_err(std::io::Error::other)?),
    };
    let app = health_routes()
        .route("/json", post(json::should_rate_limit))
        .route("/rlconfig", get(rlconfig))
        .layer(axum::extract::DefaultBodyLimit::max(options.max_body_bytes))
        .with_state(state);
    serve_until(listener, app, shutdown).await
}

/// The admin port of `tollgate proxy`, which holds no engine: `/healthcheck` and `/metrics`.
pub async fn serve_health(
    listener: TcpListener,
    readiness: Arc<Readiness>,
    registry: Registry,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let health = Health {
        readiness,
        registry: Arc::new(registry),
    };
    serve_until(listener, health_routes().with_state(health), shutdown).await
}

/// `/healthcheck` and `/metrics`, on either port.
fn health_routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Health: FromRef<S>,
{
    Router::new()
        .route("/healthcheck", get(healthcheck))
        .route("/metrics", get(metrics))
}

/// Serves `app` on `listener` until `shutdown` is cancelled, then lets calls in flight finish.
async fn serve_until(
    listener: TcpListener,
    app: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

async fn healthcheck(State(state): State<Health>) -> impl IntoResponse {
    if state.readiness.is_serving() {
        (StatusCode::OK, "OK\n")
    } else {
        (StatusCode::INTERNAL_SERVER_ERROR, "NOT SERVING\n")
    }
}

async fn rlconfig(State(state): State<AdminState>) -> impl IntoResponse {
    crate::config::listing::listing(&state.engine.config().config)
}

async fn metrics(State(state): State<Health>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            e.to_string(),
        ),
    }
}
