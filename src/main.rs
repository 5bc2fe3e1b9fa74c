//! The `tollgate` binary: parses flags (each also an environment variable), sets up logging,
//! loads and validates the config before binding anything, then hands over to the library.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tokio::net::TcpListener;

use tollgate::clock::SystemClock;
use tollgate::config::{
    ConfigErrors, LoadOptions, RateLimitConfig, default::default_config, load::load_path,
};
use tollgate::engine::{EngineOptions, UnknownDomain};
use tollgate::proto::RateLimitRequest;
use tollgate::proxy::{Limiter, Proxy, ProxyConfig, Remote, Secrets, load_proxy_config};
use tollgate::rls::{GrpcOptions, Keepalive};
use tollgate::server::{Listeners, ProxyListener, ServeOptions, serve, serve_proxy_alone};
use tollgate::wire::RequestBounds;

#[derive(Parser)]
#[command(
    version,
    about = "A rate-limit decision sidecar for Envoy (ShouldRateLimit)"
)]
struct Cli {
    /// Log filter, in tracing's EnvFilter syntax.
    #[arg(long, global = true, env = "TOLLGATE_LOG", default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve Envoy's rate-limit API over gRPC, and the admin HTTP port.
    Serve(ServeArgs),
    /// Check a config file or directory (without one: the embedded default) and print a summary,
    /// or the errors with file:line; with --proxy-config, the proxy's file too.
    Validate {
        path: Option<PathBuf>,
        #[arg(long, env = "TOLLGATE_MERGE_DOMAINS")]
        merge_domains: bool,
        /// A proxy config to check, also against the rate-limit config's domains.
        #[arg(long)]
        proxy_config: Option<PathBuf>,
    },
    /// Ask a rate-limit service one question and print the answer (exit 0 OK, 2 OVER_LIMIT).
    Check(CheckArgs),
    /// Run the OpenAI forwarding proxy alone, asking a rate-limit service over gRPC.
    Proxy(ProxyArgs),
}

#[derive(Args)]
struct ProxyArgs {
    /// The proxy's YAML config.
    #[arg(long, env = "TOLLGATE_PROXY_CONFIG")]
    proxy_config: PathBuf,
    /// The rate-limit service to ask (Tollgate, or any Envoy-compatible one).
    #[arg(
        long,
        env = "TOLLGATE_RLS_ADDR",
        default_value = "http://127.0.0.1:8081"
    )]
    rls_addr: String,
    /// Where to listen; overrides `listen:` in the file.
    #[arg(long, env = "TOLLGATE_PROXY_ADDR")]
    proxy_addr: Option<SocketAddr>,
    /// How long calls in flight (streams too) may go on after SIGTERM/SIGINT.
    #[arg(long, env = "TOLLGATE_DRAIN_GRACE_SECS", default_value_t = 10)]
    drain_grace_secs: u64,
    /// Also serve /healthcheck and /metrics here (e.g. for a pod's probes).
    #[arg(long, env = "TOLLGATE_HTTP_ADDR")]
    http_addr: Option<SocketAddr>,
}

#[derive(Args)]
struct ServeArgs {
    /// A YAML file, or a directory of *.yaml/*.yml files. Without it: the embedded default.
    #[arg(long, env = "TOLLGATE_CONFIG")]
    config: Option<PathBuf>,
    /// Accept several files for one domain and merge their descriptors.
    #[arg(long, env = "TOLLGATE_MERGE_DOMAINS")]
    merge_domains: bool,
    #[arg(long, env = "TOLLGATE_GRPC_ADDR", default_value = "127.0.0.1:8081")]
    grpc_addr: SocketAddr,
    #[arg(long, env = "TOLLGATE_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    http_addr: SocketAddr,
    /// What a call for an unconfigured domain gets.
    #[arg(
        long,
        env = "TOLLGATE_UNKNOWN_DOMAIN",
        value_enum,
        default_value = "allow"
    )]
    unknown_domain: UnknownDomainFlag,
    /// Decide and count as usual, but always answer OK.
    #[arg(long, env = "TOLLGATE_SHADOW")]
    shadow: bool,
    /// Shard actors owning the per-descriptor counters (1 to 65536).
    #[arg(long, env = "TOLLGATE_SHARDS", default_value_t = 64,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new()
            .range(1..=tollgate::store::MAX_SHARDS as u64))]
    shards: usize,
    /// Most counters held at once; past it, new keys fail (closed where a limit says so).
    #[arg(long, env = "TOLLGATE_MAX_KEYS", default_value_t = 1_000_000)]
    max_keys: usize,
    /// Most rule metric series naming request values (detailed_metric, value_to_metric).
    #[arg(long, env = "TOLLGATE_MAX_VALUE_SERIES", default_value_t = 10_000)]
    max_value_series: usize,
    #[arg(long, env = "TOLLGATE_MAX_CONNECTIONS", default_value_t = 10_000)]
    max_connections: usize,
    #[arg(long, env = "TOLLGATE_MAX_CONCURRENT_STREAMS", default_value_t = 1_024)]
    max_concurrent_streams: u32,
    /// Longest a call may take, ms; a caller's shorter grpc-timeout wins.
    #[arg(long, env = "TOLLGATE_REQUEST_TIMEOUT_MS", default_value_t = 1_000)]
    request_timeout_ms: u64,
    /// Silence on a gRPC connection before TCP keepalive probes its peer, seconds; 0: no probes.
    #[arg(long, env = "TOLLGATE_KEEPALIVE_INTERVAL_SECS", default_value_t = 30)]
    keepalive_interval_secs: u64,
    /// How long the probes may go unanswered before the connection is dropped, seconds.
    #[arg(long, env = "TOLLGATE_KEEPALIVE_TIMEOUT_SECS", default_value_t = 10)]
    keepalive_timeout_secs: u64,
    /// Largest request message (gRPC) or body (/json), bytes.
    #[arg(long, env = "TOLLGATE_MAX_MESSAGE_BYTES", default_value_t = 1 << 20)]
    max_message_bytes: usize,
    #[arg(long, env = "TOLLGATE_MAX_DESCRIPTORS", default_value_t = 64)]
    max_descriptors: usize,
    #[arg(long, env = "TOLLGATE_MAX_ENTRIES", default_value_t = 32)]
    max_entries: usize,
    /// Longest descriptor key, value or domain, bytes.
    #[arg(long, env = "TOLLGATE_MAX_STRING_BYTES", default_value_t = 1024)]
    max_string_bytes: usize,
    #[arg(long, env = "TOLLGATE_MAX_HITS", default_value_t = 1_000_000_000)]
    max_hits: u64,
    #[arg(long, env = "TOLLGATE_SWEEP_INTERVAL_SECS", default_value_t = 10)]
    sweep_interval_secs: u64,
    /// How long in-flight calls may finish after SIGTERM/SIGINT.
    #[arg(long, env = "TOLLGATE_DRAIN_GRACE_SECS", default_value_t = 10)]
    drain_grace_secs: u64,
    /// Also run the OpenAI forwarding proxy from this file, deciding in this process.
    #[arg(long, env = "TOLLGATE_PROXY_CONFIG")]
    proxy_config: Option<PathBuf>,
    /// Where the proxy listens; overrides `listen:` in its file.
    #[arg(long, env = "TOLLGATE_PROXY_ADDR")]
    proxy_addr: Option<SocketAddr>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum UnknownDomainFlag {
    /// Answer OK (the reference service's behaviour), log and count it.
    Allow,
    /// Answer OVER_LIMIT.
    Deny,
}

impl From<UnknownDomainFlag> for UnknownDomain {
    fn from(flag: UnknownDomainFlag) -> Self {
        match flag {
            UnknownDomainFlag::Allow => UnknownDomain::Allow,
            UnknownDomainFlag::Deny => UnknownDomain::Deny,
        }
    }
}

#[derive(Args)]
struct CheckArgs {
    #[arg(
        long,
        env = "TOLLGATE_CHECK_ADDR",
        default_value = "http://127.0.0.1:8081"
    )]
    addr: String,
    #[arg(long)]
    domain: String,
    /// `key=value[,key2=value2]`; repeat for several descriptors.
    #[arg(long = "descriptor", required = true)]
    descriptors: Vec<String>,
    /// Request-level hits (0 means 1).
    #[arg(long, default_value_t = 0)]
    hits: u32,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&cli.log))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let result = match cli.command {
        Command::Validate {
            path,
            merge_domains,
            proxy_config,
        } => validate(path.as_deref(), merge_domains, proxy_config.as_deref()),
        command => match tollgate::runtime::build() {
            Ok(runtime) => runtime.block_on(async {
                if !matches!(command, Command::Check(_)) {
                    tracing::info!("tokio runtime: {}", tollgate::runtime::describe(&runtime));
                }
                match command {
                    Command::Serve(args) => run_serve(args).await.map(|()| ExitCode::SUCCESS),
                    Command::Check(args) => run_check(args).await,
                    Command::Proxy(args) => run_proxy(args).await.map(|()| ExitCode::SUCCESS),
                    Command::Validate { .. } => unreachable!("handled above"),
                }
            }),
            Err(e) => Err(e.into()),
        },
    };
    result.unwrap_or_else(|e| {
        eprintln!("tollgate: {e:#}");
        ExitCode::FAILURE
    })
}

fn validate(
    path: Option<&std::path::Path>,
    merge_domains: bool,
    proxy_config: Option<&std::path::Path>,
) -> anyhow::Result<ExitCode> {
    let config = match load_rules(path, merge_domains) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            return Ok(ExitCode::FAILURE);
        }
    };
    print!("{}", config.summary());
    let Some(proxy_path) = proxy_config else {
        return Ok(ExitCode::SUCCESS);
    };
    let proxy = match load_proxy_config(proxy_path) {
        Ok(proxy) => proxy,
        Err(errors) => {
            eprintln!("{errors}");
            return Ok(ExitCode::FAILURE);
        }
    };
    if let Err(e) = proxy.check_domain(&config) {
        eprintln!("{}: {e}", proxy_path.display());
        return Ok(ExitCode::FAILURE);
    }
    let routes: Vec<String> = proxy
        .routes
        .iter()
        .map(|r| format!("{} {}", r.method, r.pattern))
        .collect();
    println!(
        "proxy {}: domain {}, upstream {}, routes: {} (environment variables are read only when \
         it starts)",
        proxy_path.display(),
        proxy.domain,
        proxy.upstream,
        routes.join(", ")
    );
    Ok(ExitCode::SUCCESS)
}

/// The rate-limit rules at `path` (a file or a directory), or without one the embedded default.
fn load_rules(
    path: Option<&std::path::Path>,
    merge_domains: bool,
) -> Result<RateLimitConfig, ConfigErrors> {
    match path {
        Some(path) => load_path(path, &LoadOptions { merge_domains }),
        None => default_config(),
    }
}

/// The rules `serve` is given, at start and on SIGHUP.
fn load_config(args: &ServeArgs) -> anyhow::Result<RateLimitConfig> {
    load_rules(args.config.as_deref(), args.merge_domains)
        .map_err(|errors| anyhow::anyhow!("the config is not valid:\n{errors}"))
}

async fn run_serve(args: ServeArgs) -> anyhow::Result<()> {
    // Everything is parsed and validated before anything is bound.
    let config = load_config(&args)?;
    for line in config.summary().lines() {
        tracing::info!("{line}");
    }
    let options = serve_options(&args);
    let proxy = match &args.proxy_config {
        Some(path) => {
            let (proxy, secrets) = load_proxy(path, args.proxy_addr)?;
            // `server::serve` refuses it too; here it is refused before anything is bound.
            proxy
                .check_domain(&config)
                .with_context(|| path.display().to_string())?;
            Some((proxy, secrets))
        }
        None => None,
    };
    let grpc = TcpListener::bind(args.grpc_addr)
        .await
        .with_context(|| format!("binding gRPC on {}", args.grpc_addr))?;
    let admin = TcpListener::bind(args.http_addr)
        .await
        .with_context(|| format!("binding HTTP admin on {}", args.http_addr))?;
    tracing::info!(addr = %grpc.local_addr()?, "gRPC (ShouldRateLimit, health, reflection)");
    tracing::info!(addr = %admin.local_addr()?, "HTTP admin (/healthcheck /json /metrics /rlconfig)");
    let proxy = match proxy {
        Some((config, secrets)) => {
            let listener = bind_proxy(&config).await?;
            Some(ProxyListener {
                listener,
                config,
                secrets,
            })
        }
        None => None,
    };
    let listeners = Listeners {
        grpc,
        admin: Some(admin),
        proxy,
    };
    let (reload, reloads) = tokio::sync::mpsc::channel(1);
    reload_on_sighup(args, reload);
    serve(
        listeners,
        config,
        Arc::new(SystemClock),
        options,
        reloads,
        shutdown_signal(),
    )
    .await?;
    Ok(())
}

/// On SIGHUP, reads the config again; a config that does not validate is logged and changes
/// nothing. The handler is installed before this returns, so an early SIGHUP cannot kill us.
fn reload_on_sighup(args: ServeArgs, reload: tokio::sync::mpsc::Sender<RateLimitConfig>) {
    let args = Arc::new(args);
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(hangups) => hangups,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP: no reloads");
                return;
            }
        };
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                if args.config.is_none() {
                    tracing::info!("SIGHUP: the embedded default config has nothing to reload");
                    continue;
                }
                // Read and parsed on the blocking pool: on a current-thread runtime a large
                // file parsed in place would hold up every call meanwhile.
                let reading = Arc::clone(&args);
                let loaded = tokio::task::spawn_blocking(move || load_config(&reading))
                    .await
                    .unwrap_or_else(|e| Err(anyhow::anyhow!("reading the config failed: {e}")));
                match loaded {
                    Ok(config) => {
                        tracing::info!("SIGHUP: reloading {}", config.summary().trim_end());
                        if reload.send(config).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => tracing::error!(
                        "SIGHUP: reload refused, keeping the config in force: {e:#}"
                    ),
                }
            }
        });
    }
    #[cfg(not(unix))]
    {
        let _ = (args, reload);
    }
}

fn serve_options(args: &ServeArgs) -> ServeOptions {
    ServeOptions {
        engine: EngineOptions {
            shards: args.shards,
            max_keys: args.max_keys,
            unknown_domain: args.unknown_domain.into(),
            shadow: args.shadow,
            max_value_series: args.max_value_series,
        },
        grpc: GrpcOptions {
            request: RequestBounds {
                max_descriptors: args.max_descriptors,
                max_entries: args.max_entries,
                max_string_bytes: args.max_string_bytes,
                max_hits: args.max_hits,
            },
            max_message_bytes: args.max_message_bytes,
            max_connections: args.max_connections,
            max_concurrent_streams: args.max_concurrent_streams,
            request_timeout: Duration::from_millis(args.request_timeout_ms),
            keepalive: (args.keepalive_interval_secs > 0).then(|| Keepalive {
                idle: Duration::from_secs(args.keepalive_interval_secs),
                timeout: Duration::from_secs(args.keepalive_timeout_secs),
            }),
        },
        admin_max_body_bytes: args.max_message_bytes,
        sweep_interval: Duration::from_secs(args.sweep_interval_secs.max(1)),
        drain_grace: Duration::from_secs(args.drain_grace_secs),
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(term) => term,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the server");
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => tracing::info!("SIGINT: shutting down"),
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

async fn run_check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let descriptors = args
        .descriptors
        .iter()
        .map(|d| tollgate::check::parse_descriptor(d))
        .collect::<Result<_, _>>()?;
    let request = RateLimitRequest {
        domain: args.domain,
        descriptors,
        hits_addend: args.hits,
    };
    let response = tollgate::check::check(&args.addr, request.clone()).await?;
    print!("{}", tollgate::check::render(&request, &response));
    let over =
        response.overall_code == tollgate::proto::rate_limit_response::Code::OverLimit as i32;
    Ok(if over {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// The proxy's file and its secrets, checked before anything is bound.
fn load_proxy(
    path: &std::path::Path,
    addr: Option<SocketAddr>,
) -> anyhow::Result<(ProxyConfig, Secrets)> {
    let mut config = load_proxy_config(path)
        .map_err(|errors| anyhow::anyhow!("the proxy config is not valid:\n{errors}"))?;
    if let Some(addr) = addr {
        config.listen = addr;
    }
    let secrets = Secrets::from_env(&config).with_context(|| path.display().to_string())?;
    Ok((config, secrets))
}

async fn bind_proxy(config: &ProxyConfig) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding the proxy on {}", config.listen))?;
    tracing::info!(
        addr = %listener.local_addr()?,
        upstream = %config.upstream,
        domain = %config.domain,
        "OpenAI proxy"
    );
    Ok(listener)
}

async fn run_proxy(args: ProxyArgs) -> anyhow::Result<()> {
    let (config, secrets) = load_proxy(&args.proxy_config, args.proxy_addr)?;
    let remote = Remote::new(&args.rls_addr, config.limiter_timeout)
        .with_context(|| format!("--rls-addr {}", args.rls_addr))?;
    let listener = bind_proxy(&config).await?;
    let admin = match args.http_addr {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding HTTP admin on {addr}"))?,
        ),
        None => None,
    };
    tracing::info!(rls = %args.rls_addr, "asking this rate-limit service");
    let proxy = Arc::new(Proxy::new(config, &secrets, Limiter::Remote(remote))?);
    if let Some(listener) = &admin {
        tracing::info!(addr = %listener.local_addr()?, "HTTP admin (/healthcheck /metrics)");
    }
    let grace = Duration::from_secs(args.drain_grace_secs);
    serve_proxy_alone(listener, proxy, admin, grace, shutdown_signal()).await?;
    Ok(())
}
