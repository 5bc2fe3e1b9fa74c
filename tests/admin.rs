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
    let text = metrics_text(&server).await;
    assert!(
        text.contains(r#"tollgate_decisions_total{domain="web",outcome="ok"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"tollgate_decisions_total{domain="web",outcome="over_limit"} 2"#),
        "{text}"
    );
}

const RULE_METRICS: &str = r#"
domain: m
descriptors:
  - key: ip
    rate_limit: {unit: minute, requests_per_unit: 1}
  - key: route
    value_to_metric: true
    descriptors:
      - key: method
        rate_limit: {unit: minute, requests_per_unit: 10}
  - key: user
    detailed_metric: true
    rate_limit: {unit: minute, requests_per_unit: 10}
"#;

#[tokio::test]
async fn rule_metrics_name_values_only_where_asked_and_within_a_bound() {
    let options = tollgate::server::ServeOptions {
        engine: tollgate::engine::EngineOptions {
            max_value_series: 2,
            ..Default::default()
        },
        ..Default::default()
    };
    let server = TestServer::start_with(RULE_METRICS, options).await;
    for ip in ["1.1.1.1", "2.2.2.2", "1.1.1.1"] {
        server.ask(simple("m", "ip", ip)).await;
    }
    server
        .ask(request(
            "m",
            vec![descriptor(&[("route", "/a"), ("method", "GET")])],
        ))
        .await;
    for user in ["bob", "eve"] {
        server.ask(simple("m", "user", user)).await;
    }
    let text = metrics_text(&server).await;
    let has = |series: &str| text.lines().any(|l| l == series);
    // Config names for plain rules: client values never become labels.
    assert!(
        has(r#"tollgate_rule_decisions_total{rule="m.ip",outcome="ok"} 2"#),
        "{text}"
    );
    assert!(
        has(r#"tollgate_rule_decisions_total{rule="m.ip",outcome="over_limit"} 1"#),
        "{text}"
    );
    // value_to_metric names the value at its level; detailed_metric names every value.
    assert!(
        has(r#"tollgate_rule_decisions_total{rule="m.route_/a.method",outcome="ok"} 1"#),
        "{text}"
    );
    assert!(
        has(r#"tollgate_rule_decisions_total{rule="m.user_bob",outcome="ok"} 1"#),
        "{text}"
    );
    // The bound of 2 value series is reached: eve is counted under the rule's config name.
    assert!(
        has(r#"tollgate_rule_decisions_total{rule="m.user",outcome="ok"} 1"#),
        "{text}"
    );
    assert!(has("tollgate_value_series_overflow_total 1"), "{text}");
}

/// The whole of `/metrics`.
async fn metrics_text(server: &TestServer) -> String {
    reqwest::get(server.http_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of one series on `/metrics`, if it is there.
async fn series(server: &TestServer, name: &str) -> Option<String> {
    let text = metrics_text(server).await;
    let prefix = format!("{name} ");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map(str::to_owned)
}

#[tokio::test]
async fn rule_metrics_count_every_decision_read_after_read_and_across_a_reload() {
    // A rule's counts are kept beside the loaded config and moved to the registered counters
    // when /metrics is read or the config is retired: neither may lose one.
    let server = TestServer::start(RULE_METRICS).await;
    let ok = r#"tollgate_rule_decisions_total{rule="m.ip",outcome="ok"}"#;
    for ip in ["1.1.1.1", "2.2.2.2"] {
        server.ask(simple("m", "ip", ip)).await;
    }
    assert_eq!(series(&server, ok).await.as_deref(), Some("2"));
    assert_eq!(
        series(&server, ok).await.as_deref(),
        Some("2"),
        "a read counts nothing"
    );
    for ip in ["3.3.3.3", "4.4.4.4"] {
        server.ask(simple("m", "ip", ip)).await;
    }
    // Three sends through a channel of one: once the third is in, the first has been applied,
    // and the config that counted the last two calls is retired, unread.
    for _ in 0..3 {
        server
            .reload
            .send(common::config(RULE_METRICS))
            .await
            .unwrap();
    }
    assert_eq!(series(&server, ok).await.as_deref(), Some("4"));
    let calls = r#"tollgate_decisions_total{domain="m",outcome="ok"}"#;
    assert_eq!(series(&server, calls).await.as_deref(), Some("4"));
    server.ask(simple("m", "ip", "5.5.5.5")).await;
    assert_eq!(series(&server, ok).await.as_deref(), Some("5"));
    assert_eq!(series(&server, calls).await.as_deref(), Some("5"));
}
