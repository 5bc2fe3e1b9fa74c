//! The proxy under test, in either of its modes, in front of a [`FakeOpenAi`], with a real
//! Tollgate deciding (its gRPC port open in both modes, so a test can probe the counters).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use tollgate::proxy::{
    Limiter, Proxy, ProxyConfig, Remote, Secrets, parse_proxy_config, serve_proxy,
};
use tollgate::server::{ProxyListener, ServeOptions};

use super::TestServer;
use super::openai::FakeOpenAi;

pub const SERVER_KEY: &str = "sk-server-secret-key";

pub fn secrets() -> Secrets {
    Secrets {
        api_key: SERVER_KEY.to_owned(),
        hash_key: None,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `tollgate serve --proxy-config`: the engine decides in-process.
    InProcess,
    /// `tollgate proxy --rls-addr`: a thin gRPC client of the service.
    Remote,
}

pub const BOTH: [Mode; 2] = [Mode::InProcess, Mode::Remote];

pub struct ProxyUnderTest {
    pub url: String,
    pub addr: SocketAddr,
    pub upstream: FakeOpenAi,
    pub server: TestServer,
    pub http: reqwest::Client,
    stop: CancellationToken,
}

/// The proxy config, with `{upstream}` replaced by the fake upstream's URL.
pub fn proxy_config(yaml: &str, upstream: &FakeOpenAi) -> ProxyConfig {
    let yaml = yaml.replace("{upstream}", &upstream.url());
    parse_proxy_config("proxy.yaml", &yaml)
        .unwrap_or_else(|e| panic!("test proxy config does not load:\n{e}"))
}

impl ProxyUnderTest {
    pub async fn start(mode: Mode, limits_yaml: &str, proxy_yaml: &str) -> ProxyUnderTest {
        ProxyUnderTest::start_on(mode, limits_yaml, proxy_yaml, "127.0.0.1:0").await
    }

    /// As [`Self::start`], the proxy listening on `bind` (e.g. an IPv4-mapped IPv6 address).
    pub async fn start_on(
        mode: Mode,
        limits_yaml: &str,
        proxy_yaml: &str,
        bind: &str,
    ) -> ProxyUnderTest {
        let upstream = FakeOpenAi::start().await;
        let mut config = proxy_config(proxy_yaml, &upstream);
        // A loaded 2-core machine running tests in parallel can take longer than the default
        // 50 ms over gRPC; the tests here are about answers, not about that deadline.
        if mode == Mode::Remote && !proxy_yaml.contains("limiter_timeout_ms") {
            config.limiter_timeout = std::time::Duration::from_secs(5);
        }
        let listener = TcpListener::bind(bind).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let server = match mode {
            Mode::InProcess => {
                let proxy = ProxyListener {
                    listener,
                    config,
                    secrets: secrets(),
                };
                TestServer::start_full(limits_yaml, ServeOptions::default(), Some(proxy)).await
            }
            Mode::Remote => {
                let server = TestServer::start(limits_yaml).await;
                spawn_remote(listener, config, &server.grpc_url(), &stop);
                server
            }
        };
        ProxyUnderTest {
            url: format!("http://{addr}"),
            addr,
            upstream,
            server,
            http: reqwest::Client::new(),
            stop,
        }
    }

    pub fn post(&self, path: &str, body: serde_json::Value) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .body(body.to_string())
    }

    pub fn chat(&self) -> reqwest::RequestBuilder {
        self.post(
            "/v1/chat/completions",
            serde_json::json!({"model": "gpt-test", "messages": [{"role": "user", "content": "Hi"}]}),
        )
    }
}

impl Drop for ProxyUnderTest {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The body of an answer as JSON.
pub async fn json_of(response: reqwest::Response) -> serde_json::Value {
    let text = response.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Asserts `body` is OpenAI's error envelope with `code`, and returns its message.
pub fn openai_error(body: &serde_json::Value, code: &str) -> String {
    let error = body
        .get("error")
        .unwrap_or_else(|| panic!("no error envelope: {body}"));
    for field in ["message", "type", "param", "code"] {
        assert!(
            error.get(field).is_some(),
            "the error has no '{field}': {body}"
        );
    }
    assert_eq!(error["code"], code, "{body}");
    error["message"].as_str().unwrap().to_owned()
}

/// A proxy alone (the `tollgate proxy` form) asking the rate-limit service at `limiter`, in
/// front of `upstream`; returns its chat completions URL and the token that stops it.
pub async fn standalone(
    yaml: &str,
    upstream: &FakeOpenAi,
    limiter: &str,
    timeout: std::time::Duration,
) -> (String, CancellationToken) {
    let (url, stop, _) = standalone_proxy(yaml, upstream, limiter, timeout).await;
    (url, stop)
}

/// [`standalone`], with the proxy itself, to read its counters ([`metrics_of`]).
pub async fn standalone_proxy(
    yaml: &str,
    upstream: &FakeOpenAi,
    limiter: &str,
    timeout: std::time::Duration,
) -> (String, CancellationToken, Arc<Proxy>) {
    let mut config = proxy_config(yaml, upstream);
    config.limiter_timeout = timeout;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/v1/chat/completions",
        listener.local_addr().unwrap()
    );
    let stop = CancellationToken::new();
    let proxy = spawn_remote(listener, config, limiter, &stop);
    (url, stop, proxy)
}

/// The proxy's counters, as `/metrics` shows them.
pub fn metrics_of(proxy: &Proxy) -> String {
    let mut registry = prometheus_client::registry::Registry::default();
    proxy.metrics().register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    text
}

/// Serves on `listener`, until `stop`, a proxy asking the rate-limit service at `limiter`.
fn spawn_remote(
    listener: TcpListener,
    config: ProxyConfig,
    limiter: &str,
    stop: &CancellationToken,
) -> Arc<Proxy> {
    let remote = Remote::new(limiter, config.limiter_timeout).unwrap();
    let proxy = Arc::new(Proxy::new(config, &secrets(), Limiter::Remote(remote)).unwrap());
    tokio::spawn(serve_proxy(listener, proxy.clone(), stop.clone()));
    proxy
}
