//! What a gRPC client sees besides decisions: health under three names, reflection v1 and
//! v1alpha (so grpcurl needs no proto files), and grpcurl itself when it is installed.

mod common;

use std::time::Duration;

use common::*;
use tokio_stream::StreamExt;
use tollgate::server::ServeOptions;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const CONFIG: &str = r#"
domain: d
descriptors:
  - key: k
    rate_limit: {name: per-k, unit: minute, requests_per_unit: 1}
"#;

const SERVICE: &str = "envoy.service.ratelimit.v3.RateLimitService";

#[tokio::test]
async fn health_is_serving_under_every_name_once_loaded() {
    let server = TestServer::start(CONFIG).await;
    let mut health = HealthClient::new(server.channel().await);
    for name in ["", "ratelimit", SERVICE] {
        let answer = health
            .check(HealthCheckRequest {
                service: name.to_owned(),
            })
            .await
            .unwrap_or_else(|s| panic!("health of {name:?}: {s:?}"))
            .into_inner();
        assert_eq!(answer.status, ServingStatus::Serving as i32, "{name:?}");
    }
}

#[tokio::test]
async fn health_turns_not_serving_when_draining_begins() {
    let options = ServeOptions {
        drain_grace: Duration::from_millis(300),
        ..Default::default()
    };
    let server = TestServer::start_with(CONFIG, options).await;
    let mut health = HealthClient::new(server.channel().await);
    let mut watch = health
        .watch(HealthCheckRequest {
            service: "ratelimit".to_owned(),
        })
        .await
        .expect("watch")
        .into_inner();
    let first = watch.next().await.expect("a first status").expect("ok");
    assert_eq!(first.status, ServingStatus::Serving as i32);
    let stopped = tokio::spawn(server.stop());
    let next = watch
        .next()
        .await
        .expect("a status on draining")
        .expect("ok");
    assert_eq!(next.status, ServingStatus::NotServing as i32);
    stopped
        .await
        .expect("stop task")
        .expect("serve ends cleanly");
}

/// Lists services through one version of the reflection API (v1 and v1alpha are the same
/// messages in two packages).
macro_rules! list_services {
    ($version:ident, $server:expr) => {{
        use tonic_reflection::pb::$version::ServerReflectionRequest;
        use tonic_reflection::pb::$version::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::$version::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::$version::server_reflection_response::MessageResponse;
        let mut client = ServerReflectionClient::new($server.channel().await);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut answers = client
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .expect(concat!("reflection ", stringify!($version)))
            .into_inner();
        match answers
            .next()
            .await
            .expect("an answer")
            .expect("ok")
            .message_response
        {
            Some(MessageResponse::ListServicesResponse(list)) => {
                list.service.into_iter().map(|s| s.name).collect::<Vec<_>>()
            }
            other => panic!("unexpected reflection answer {other:?}"),
        }
    }};
}

#[tokio::test]
async fn reflection_lists_the_service_and_health_in_v1_and_v1alpha() {
    let server = TestServer::start(CONFIG).await;
    for services in [list_services!(v1, server), list_services!(v1alpha, server)] {
        assert!(services.iter().any(|s| s == SERVICE), "{services:?}");
        assert!(
            services.iter().any(|s| s == "grpc.health.v1.Health"),
            "{services:?}"
        );
    }
}

fn grpcurl(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new("grpcurl")
        .args(args)
        .output()
        .expect("run grpcurl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_lists_and_calls_the_service_with_no_proto_files() {
    if !require_program("grpcurl", "GRPCURL") {
        return;
    }
    let server = TestServer::start(CONFIG).await;
    let addr = server.grpc_addr.to_string();
    let (ok, out, err) = tokio::task::spawn_blocking({
        let addr = addr.clone();
        move || grpcurl(&["-plaintext", &addr, "list"])
    })
    .await
    .unwrap();
    assert!(ok, "grpcurl list failed: {err}");
    assert!(out.lines().any(|l| l == SERVICE), "{out}");
    assert!(out.lines().any(|l| l == "grpc.health.v1.Health"), "{out}");

    let body = r#"{"domain":"d","descriptors":[{"entries":[{"key":"k","value":"v"}]}]}"#;
    let method = format!("{SERVICE}/ShouldRateLimit");
    for expected in ["\"OK\"", "\"OVER_LIMIT\""] {
        let (ok, out, err) = tokio::task::spawn_blocking({
            let (addr, method) = (addr.clone(), method.clone());
            move || grpcurl(&["-plaintext", "-d", body, &addr, &method])
        })
        .await
        .unwrap();
        assert!(ok, "grpcurl call failed: {err}");
        assert!(
            out.contains(&format!("\"overallCode\": {expected}")),
            "{out}"
        );
        assert!(out.contains("\"name\": \"per-k\""), "{out}");
    }
}
