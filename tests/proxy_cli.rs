//! The proxy through the `tollgate` binary: `serve --proxy-config` (in-process) and
//! `proxy --rls-addr` (beside a separate service), on the shipped browser-extension example,
//! and the refusals that keep a misconfigured proxy from ever starting.

mod common;

use std::process::Command;

use serde_json::json;

use common::openai::FakeOpenAi;
use common::process::{BIN, bound_address, log_until_bound, spawn, wall_clock_minute};

const EXAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/examples/proxy/browser-extension.yaml"
);

/// The shipped example, pointed at the local upstream, written to a temporary file.
fn example_against(upstream: &FakeOpenAi, name: &str, edit: impl Fn(String) -> String) -> String {
    let text = std::fs::read_to_string(EXAMPLE).unwrap();
    let text = edit(text.replace("https://api.openai.com", &upstream.url()));
    let path = std::env::temp_dir().join(format!("tollgate-{name}-{}.yaml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// `tollgate serve` on ephemeral ports with the proxy of `config`, holding `api_key`.
fn serve_with_proxy(config: &str, api_key: &str) -> Command {
    let mut command = Command::new(BIN);
    command
        .args([
            "serve",
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ])
        .args(["--proxy-config", config, "--proxy-addr", "127.0.0.1:0"])
        .env("OPENAI_API_KEY", api_key);
    command
}

async fn chat(proxy_addr: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("http://{proxy_addr}/v1/chat/completions"))
        .header("authorization", "Bearer sk-client")
        .header(
            "origin",
            "chrome-extension://abcdefghijklmnopabcdefghijklmnop",
        )
        .body(
            json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]})
                .to_string(),
        )
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_and_proxy_run_the_shipped_example_in_both_modes() {
    let upstream = FakeOpenAi::start().await;
    let config = example_against(&upstream, "both-modes", |t| t);

    let (_serve, mut lines) = spawn(serve_with_proxy(&config, "sk-cli-in-process"));
    let grpc = bound_address(&mut lines, "gRPC");
    let in_process = bound_address(&mut lines, "OpenAI proxy");
    std::thread::spawn(move || lines.for_each(drop));

    // The limit below is per minute of the real clock: note the minute the two calls start in.
    let first_minute = wall_clock_minute();
    let response = chat(&in_process).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "chrome-extension://abcdefghijklmnopabcdefghijklmnop"
    );
    assert_eq!(
        upstream.last().headers["authorization"],
        "Bearer sk-cli-in-process"
    );

    let mut command = Command::new(BIN);
    command
        .args([
            "proxy",
            "--proxy-config",
            &config,
            "--proxy-addr",
            "127.0.0.1:0",
        ])
        .args(["--rls-addr", &format!("http://{grpc}")])
        .args(["--http-addr", "127.0.0.1:0"])
        .env("OPENAI_API_KEY", "sk-cli-remote")
        // The proxy alone on the one-thread runtime (as in a pod with one CPU); `serve` above
        // runs on the machine's CPUs.
        .env("TOKIO_WORKER_THREADS", "1");
    let (_proxy, mut lines) = spawn(command);
    let early = log_until_bound(&mut lines, "HTTP admin");
    let log = early.join("\n");
    assert!(log.contains("tokio runtime: CurrentThread"), "{log}");
    let mut early = early.into_iter();
    let remote = bound_address(&mut early, "OpenAI proxy");
    let admin = bound_address(&mut early, "HTTP admin");
    std::thread::spawn(move || lines.for_each(drop));
    let response = chat(&remote).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        upstream.last().headers["authorization"],
        "Bearer sk-cli-remote"
    );
    // Both proxies count against the one service: 2 of the address's 10 a minute are gone
    // (or 1, if the minute turned between the two calls).
    let state = response.headers()["ratelimit"].to_str().unwrap().to_owned();
    let left: &[u32] = if wall_clock_minute() == first_minute {
        &[8]
    } else {
        &[8, 9]
    };
    assert!(
        left.iter()
            .any(|r| state.starts_with(&format!("\"ip-minute\";r={r};"))),
        "{state}"
    );
    // The proxy alone has health and metrics of its own, for a pod's probes.
    let health = reqwest::get(format!("http://{admin}/healthcheck"))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let metrics = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .unwrap();
    let metrics = metrics.text().await.unwrap();
    let forwarded = "tollgate_proxy_calls_total{outcome=\"forwarded\"} 1";
    assert!(metrics.contains(forwarded), "{metrics}");
    let _ = std::fs::remove_file(config);
}

#[tokio::test]
async fn the_proxy_refuses_to_start_without_its_api_key() {
    let upstream = FakeOpenAi::start().await;
    let config = example_against(&upstream, "no-key", |t| t);
    for subcommand in [
        &["proxy"][..],
        &[
            "serve",
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ],
    ] {
        let out = Command::new(BIN)
            .args(subcommand)
            .args(["--proxy-config", &config, "--proxy-addr", "127.0.0.1:0"])
            .env_remove("OPENAI_API_KEY")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{subcommand:?}");
        let errors = String::from_utf8_lossy(&out.stderr);
        assert!(errors.contains("$OPENAI_API_KEY is not set"), "{errors}");
    }
    let _ = std::fs::remove_file(config);
}

#[tokio::test]
async fn a_proxy_domain_that_is_not_loaded_is_refused_by_serve_and_validate() {
    let upstream = FakeOpenAi::start().await;
    let config = example_against(&upstream, "typo", |t| {
        t.replace("domain: ask-ai", "domain: ask-ia")
    });
    let out = serve_with_proxy(&config, "sk-test").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let errors = String::from_utf8_lossy(&out.stderr);
    assert!(
        errors.contains("domain 'ask-ia' is not in the rate-limit config"),
        "{errors}"
    );
    assert!(
        !errors.contains("addr="),
        "refused only after binding:\n{errors}"
    );

    let out = Command::new(BIN)
        .args(["validate", "--proxy-config", &config])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("'ask-ia'"));
    let out = Command::new(BIN)
        .args(["validate", "--proxy-config", EXAMPLE])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_file(config);
}

#[test]
fn a_bad_proxy_config_is_refused_with_file_and_line() {
    let path = std::env::temp_dir().join(format!("tollgate-bad-proxy-{}.yaml", std::process::id()));
    std::fs::write(&path, "upstream: http://127.0.0.1:1\ndomain: ask-ai\ndescriptors:\n  - [{key: a, value: \"{nope}\"}]\n").unwrap();
    let out = Command::new(BIN)
        .args(["proxy", "--proxy-config", &path.display().to_string()])
        .env("OPENAI_API_KEY", "sk-test")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let errors = String::from_utf8_lossy(&out.stderr);
    assert!(
        errors.contains(&format!("{}:4:", path.display())) && errors.contains("{nope}"),
        "{errors}"
    );
    let _ = std::fs::remove_file(path);
}

#[test]
fn an_rls_address_without_its_scheme_is_refused_at_once() {
    let out = Command::new(BIN)
        .args([
            "proxy",
            "--proxy-config",
            EXAMPLE,
            "--rls-addr",
            "127.0.0.1:8081",
        ])
        .env("OPENAI_API_KEY", "sk-test")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let errors = String::from_utf8_lossy(&out.stderr);
    assert!(
        errors.contains("needs its scheme: http://127.0.0.1:8081"),
        "{errors}"
    );
}
