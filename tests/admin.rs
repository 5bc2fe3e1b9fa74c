//! The HTTP admin port: /healthcheck, /json, /rlconfig, /metrics.

mod common;

use common::*;
use serde_json::{Value, json};

const CONFIG: &str = r#"
domain: web
global:
  - {name: all, unit: day, requests_per_unit: 100}
descriptors:
  - key: ip
    rate_limit: {name: per-ip, unit: minute, requests_per_unit: 1}
"#;

async fn post_json(server: &TestServer, body: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(server.http_url("/json"))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .expect("admin reachable");
    (
        response.status().as_u16(),
        response.text().await.expect("body"),
    )
}

#[tokio::test]
async fn healthcheck_says_ok_while_serving() {
    let server = TestServer::start(CONFIG).await;
    let response = reqwest::get(server.http_url("/healthcheck")).await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.text().await.unwrap().trim(), "OK");
}

#[tokio::test]
async fn json_decides_like_grpc_in_the_proto3_json_mapping() {
    let server = TestServer::start(CONFIG).await;
    let body = json!({
        "domain": "web",
        "descriptors": [{"entries": [{"key": "ip", "value": "10.0.0.1"}]}]
    })
    .to_string();
    let (status, text) = post_json(&server, &body).await;
    assert_eq!(status, 200, "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["overallCode"], "OK");
    assert_eq!(answer["statuses"][0]["currentLimit"]["name"], "per-ip");
    assert_eq!(answer["statuses"][0]["currentLimit"]["unit"], "MINUTE");
    assert_eq!(answer["statuses"][0]["durationUntilReset"], "60s");

    let (status, text) = post_json(&server, &body).await;
    assert_eq!(status, 429, "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["overallCode"], "OVER_LIMIT");
    assert_eq!(answer["statuses"][0]["code"], "OVER_LIMIT");

    // hitsAddend as the JSON mapping writes a UInt64Value: a string or a number.
    let probe = json!({
        "domain": "web",
        "descriptors": [{"entries": [{"key": "ip", "value": "10.0.0.2"}], "hitsAddend": "0"}]
    })
    .to_string();
    let (status, text) = post_json(&server, &probe).await;
    assert_eq!(status, 200, "{text}");
}

#[tokio::test]
async fn json_refuses_bad_input_with_400_naming_the_problem() {
    let server = TestServer::start(CONFIG).await;
    for (body, gist) in [
        ("not json", "invalid RateLimitRequest JSON"),
        (r#"{"domain": 5}"#, "invalid RateLimitRequest JSON"),
        (r#"{"domian": "web"}"#, "invalid RateLimitRequest JSON"),
        (r#"{"domain": "web", "descriptors": []}"#, "descriptors"),
        (
            r#"{"domain": "web", "descriptors": [{"entries": [{"key": "", "value": "x"}]}]}"#,
            "descriptors[0].entries[0].key",
        ),
    ] {
        let (status, text) = post_json(&server, body).await;
        assert_eq!(status, 400, "{body}: {text}");
        assert!(text.contains(gist), "{body}: {text}");
    }
}

#[tokio::test]
async fn rlconfig_lists_the_loaded_rules() {
    let server = TestServer::start(CONFIG).await;
    let text = reqwest::get(server.http_url("/rlconfig"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("web.ip: 1/minute name=per-ip"), "{text}");
    assert!(text.contains("web.global: 100/day name=all"), "{text}");
}

#[tokio::test]
async fn metrics_count_decisions_by_domain_and_outcome() {
    let server = TestServer::start(CONFIG).await;
    for _ in 0..3 {
        server.ask(simple("web", "ip", "1.1.1.1")).await;
    }
    let text = reqwest::get(server.http_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(r#"tollgate_decisions_total{domain="web",outcome="ok"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"tollgate_decisions_total{domain="web",outcome="over_limit"} 2"#),
        "{text}"
    );
}
