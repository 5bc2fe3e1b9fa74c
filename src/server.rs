//! Running the service: the gRPC server, the admin server and the sweeper, as one unit.
//!
//! Every task runs in one `JoinSet` under one cancellation token. Shutdown (the `shutdown`
//! future resolving) marks the service NOT_SERVING, stops accepting, lets in-flight calls
//! finish within a grace period, and reports whether they did. A task that fails takes the
//! whole service down with its error, never silently. The proxy alone (`tollgate proxy`) runs
//! the same way, with its own servers.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::admin::{AdminOptions, Readiness, serve_admin, serve_health};
use crate::clock::SharedClock;
use crate::config::RateLimitConfig;
use crate::engine::{Engine, EngineOptions};
use crate::proxy::config::{DomainNotLoaded, check_domain};
use crate::proxy::{Limiter, Proxy, ProxyConfig, ProxyError, Secrets, serve_proxy};
use crate::rls::{GrpcError, GrpcOptions, serve_grpc, set_health};

#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub engine: EngineOptions,
    pub grpc: GrpcOptions,
    /// Largest `/json` body, bytes.
    pub admin_max_body_bytes: usize,
    /// How often expired counters are dropped.
    pub sweep_interval: Duration,
    /// How long in-flight calls may take to finish after shutdown begins.
    pub drain_grace: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            engine: EngineOptions::default(),
            grpc: GrpcOptions::default(),
            admin_max_body_bytes: 1 << 20,
            sweep_interval: Duration::from_secs(10),
            drain_grace: Duration::from_secs(10),
        }
    }
}

/// Where to serve. The listeners are bound by the caller, so tests bind port 0.
pub struct Listeners {
    pub grpc: TcpListener,
    pub admin: Option<TcpListener>,
    /// The OpenAI proxy, deciding in this process.
    pub proxy: Option<ProxyListener>,
}

pub struct ProxyListener {
    pub listener: TcpListener,
    pub config: ProxyConfig,
    pub secrets: Secrets,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Grpc(#[from] GrpcError),
    #[error("admin server failed: {0}")]
    Admin(#[from] std::io::Error),
    #[error(transparent)]
    ProxyDomain(#[from] DomainNotLoaded),
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    #[error("proxy server failed: {0}")]
    ProxyServer(std::io::Error),
    #[error("a server stopped before shutdown was asked for")]
    StoppedEarly,
    #[error("a server task panicked: {0}")]
    Panicked(#[from] tokio::task::JoinError),
}

/// Serves `config` until `shutdown` resolves, then drains. Each config received on `reloads`
/// replaces the one in force as a whole (the sender validates it first: a bad file never gets
/// here); calls in flight finish on the config they started with.
pub async fn serve(
    listeners: Listeners,
    config: RateLimitConfig,
    clock: SharedClock,
    options: ServeOptions,
    mut reloads: mpsc::Receiver<RateLimitConfig>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let proxy_domain = listeners.proxy.as_ref().map(|p| p.config.domain.clone());
    if let Some(proxy) = &listeners.proxy {
        proxy.config.check_domain(&config)?;
    }
    let engine = Arc::new(Engine::new(config, clock, options.engine.clone()));
    let mut registry = Registry::default();
    engine.register_metrics(&mut registry);
    // Built before any server starts, so a bad proxy setting stops everything, and its
    // counters are on `/metrics` from the first call.
    let proxy = match listeners.proxy {
        Some(ProxyListener {
            listener,
            config,
            secrets,
        }) => {
            let limiter = Limiter::InProcess(engine.clone());
            let proxy = Arc::new(Proxy::new(config, &secrets, limiter)?);
            proxy.metrics().register(&mut registry);
            Some((listener, proxy))
        }
        None => None,
    };
    let (reporter, health) = tonic_health::server::health_reporter();
    // tonic-health starts "" as SERVING; nothing is, until every server is up.
    set_health(&reporter, ServingStatus::NotServing).await;
    let readiness = Arc::new(Readiness::default());
    let stop = CancellationToken::new();

    let mut tasks: JoinSet<Result<(), ServeError>> = JoinSet::new();
    tasks.spawn(run_grpc(
        listeners.grpc,
        engine.clone(),
        options.grpc.clone(),
        health,
        stop.clone(),
    ));
    if let Some(listener) = listeners.admin {
        let admin = AdminOptions {
            bounds: options.grpc.request,
            max_body_bytes: options.admin_max_body_bytes,
        };
        let (engine, readiness, stop) = (engine.clone(), readiness.clone(), stop.clone());
        tasks.spawn(async move {
            Ok(serve_admin(listener, engine, readiness, registry, admin, stop).await?)
        });
    }
    if let Some((listener, proxy)) = proxy {
        let stop = stop.clone();
        tasks.spawn(async move {
            serve_proxy(listener, proxy, stop)
                .await
                .map_err(ServeError::ProxyServer)
        });
    }
    {
        let (engine, stop) = (engine.clone(), stop.clone());
        let interval = options.sweep_interval;
        tasks.spawn(async move {
            engine.run_sweeper(interval, stop.cancelled()).await;
            Ok(())
        });
    }
    {
        let (engine, stop) = (engine.clone(), stop.clone());
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    reload = reloads.recv() => match reload {
                        Some(config) => {
                            let checked = match &proxy_domain {
                                Some(domain) => check_domain(domain, &config),
                                None => Ok(()),
                            };
                            match checked {
                                Ok(()) => {
                                    engine.replace_config(config);
                                    tracing::info!("configuration reloaded");
                                }
                                Err(e) => tracing::error!(
                                    "reload refused, keeping the config in force: {e}"
                                ),
                            }
                        }
                        // Nobody can reload any more; keep serving what we have.
                        None => {
                            stop.cancelled().await;
                            return Ok(());
                        }
                    },
                }
            }
        });
    }
    // The config was loaded before we were called and every listener is bound: serving.
    let ready = Ready {
        readiness: &readiness,
        grpc: Some(&reporter),
    };
    supervise(tasks, ready, stop, options.drain_grace, shutdown).await
}

/// Serves the proxy alone (`tollgate proxy`: it asks a rate-limit service over gRPC) on
/// `listener` until `shutdown` resolves, then drains within `grace`. With `health`, serves
/// `/healthcheck` and `/metrics` (the proxy's counters) there too. Either server stopping
/// before shutdown was asked for is an error.
pub async fn serve_proxy_alone(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    health: Option<TcpListener>,
    grace: Duration,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let readiness = Arc::new(Readiness::default());
    let stop = CancellationToken::new();
    let mut tasks: JoinSet<Result<(), ServeError>> = JoinSet::new();
    if let Some(listener) = health {
        let mut registry = Registry::default();
        proxy.metrics().register(&mut registry);
        let (readiness, stop) = (readiness.clone(), stop.clone());
        tasks.spawn(async move { Ok(serve_health(listener, readiness, registry, stop).await?) });
    }
    {
        let stop = stop.clone();
        tasks.spawn(async move {
            serve_proxy(listener, proxy, stop)
                .await
                .map_err(ServeError::ProxyServer)
        });
    }
    let ready = Ready {
        readiness: &readiness,
        grpc: None,
    };
    supervise(tasks, ready, stop, grace, shutdown).await
}

/// What says whether the service is serving: `/healthcheck`, and gRPC health where there is a
/// gRPC server.
struct Ready<'a> {
    readiness: &'a Readiness,
    grpc: Option<&'a HealthReporter>,
}

impl Ready<'_> {
    async fn serving(&self) {
        if let Some(reporter) = self.grpc {
            set_health(reporter, ServingStatus::Serving).await;
        }
        self.readiness.set(true);
    }

    async fn not_serving(&self) {
        self.readiness.set(false);
        if let Some(reporter) = self.grpc {
            set_health(reporter, ServingStatus::NotServing).await;
        }
    }
}

/// Marks the service serving and runs `tasks` until `shutdown` resolves or the first of them
/// ends; then marks it not serving, cancels `stop` and lets the tasks finish within `grace`.
/// A task ending before shutdown was asked for is a failure, even if it returned `Ok`.
async fn supervise(
    mut tasks: JoinSet<Result<(), ServeError>>,
    ready: Ready<'_>,
    stop: CancellationToken,
    grace: Duration,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    ready.serving().await;
    let early = tokio::select! {
        _ = shutdown => None,
        done = tasks.join_next() => done,
    };
    ready.not_serving().await;
    stop.cancel();
    if let Some(done) = early {
        // A server stopped on its own: that is a failure even if it returned Ok.
        tracing::error!("a server task stopped unexpectedly; shutting down");
        done??;
        return Err(ServeError::StoppedEarly);
    }
    tracing::info!(?grace, "draining");
    let drained = tokio::time::timeout(grace, async {
        while let Some(done) = tasks.join_next().await {
            done??;
        }
        Ok::<(), ServeError>(())
    })
    .await;
    match drained {
        Ok(result) => {
            tracing::info!("drained");
            result
        }
        Err(_) => {
            tracing::warn!("drain grace period ended with calls still in flight");
            Ok(())
        }
    }
}

async fn run_grpc(
    listener: TcpListener,
    engine: Arc<Engine>,
    options: GrpcOptions,
    health: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
    stop: CancellationToken,
) -> Result<(), ServeError> {
    Ok(serve_grpc(listener, engine, options, health, stop).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(readiness: &Readiness) -> Ready<'_> {
        Ready {
            readiness,
            grpc: None,
        }
    }

    #[tokio::test]
    async fn a_task_that_ends_before_shutdown_is_an_error_and_ends_readiness() {
        let readiness = Readiness::default();
        let stop = CancellationToken::new();
        let mut tasks: JoinSet<Result<(), ServeError>> = JoinSet::new();
        tasks.spawn(async { Ok(()) });
        let waiting = stop.clone();
        tasks.spawn(async move {
            waiting.cancelled().await;
            Ok(())
        });
        let never = std::future::pending::<()>();
        let served = supervise(
            tasks,
            ready(&readiness),
            stop.clone(),
            Duration::ZERO,
            never,
        );
        assert!(matches!(served.await, Err(ServeError::StoppedEarly)));
        assert!(!readiness.is_serving());
        assert!(stop.is_cancelled());
    }

    #[tokio::test]
    async fn a_task_failing_before_shutdown_gives_its_error() {
        let readiness = Readiness::default();
        let mut tasks: JoinSet<Result<(), ServeError>> = JoinSet::new();
        tasks.spawn(async { Err(ServeError::ProxyServer(std::io::Error::other("gone"))) });
        let never = std::future::pending::<()>();
        let stop = CancellationToken::new();
        let served = supervise(tasks, ready(&readiness), stop, Duration::ZERO, never);
        let error = served.await.unwrap_err();
        assert_eq!(error.to_string(), "proxy server failed: gone");
    }

    #[tokio::test]
    async fn shutdown_marks_not_serving_cancels_and_drains() {
        let readiness = Readiness::default();
        let stop = CancellationToken::new();
        let mut tasks: JoinSet<Result<(), ServeError>> = JoinSet::new();
        let waiting = stop.clone();
        tasks.spawn(async move {
            waiting.cancelled().await;
            Ok(())
        });
        let (asked, shutdown) = tokio::sync::oneshot::channel::<()>();
        let shutdown = async {
            let _ = shutdown.await;
        };
        let grace = Duration::from_secs(5);
        let served = supervise(tasks, ready(&readiness), stop.clone(), grace, shutdown);
        let ask = async {
            // Serving (once the supervisor has run) until shutdown is asked for.
            for _ in 0..1_000 {
                if readiness.is_serving() {
                    break;
                }
                tokio::task::yield_now().await;
            }
            assert!(readiness.is_serving());
            let _ = asked.send(());
        };
        let (served, ()) = tokio::join!(served, ask);
        served.unwrap();
        assert!(!readiness.is_serving());
        assert!(stop.is_cancelled());
    }
}
