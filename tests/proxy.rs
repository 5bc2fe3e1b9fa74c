//! The OpenAI proxy end to end: a real client, the real proxy (in-process and over gRPC), a real
//! Tollgate deciding, and a local upstream that behaves like OpenAI. Nothing leaves 127.0.0.1.

mod common;

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{Value, json};

use common::openai::Behaviour;
use common::proxy::{BOTH, Mode, ProxyUnderTest, SERVER_KEY, json_of, openai_error};
use common::{descriptor, eventually, request, with_hits};

const LIMITS: &str = "
domain: ask-ai
global:
  - {name: service-day, unit: day, requests_per_unit: 1000}
descriptors:
  - key: client
    rate_limit: {name: ip-minute, unit: minute, requests_per_unit: 3}
  - key: client_tokens
    rate_limit: {name: client-tokens, unit: day, requests_per_unit: 5000}
";

const PROXY: &str = r#"
upstream: "{upstream}"
domain: ask-ai
descriptors:
  - [{key: client, value: "{client}"}]
"#;

/// Clients named by `x-forwarded-for` from the test's own address (a trusted proxy).
const PROXY_BEHIND_LB: &str = r#"
upstream: "{upstream}"
domain: ask-ai
trusted_proxies: [127.0.0.1]
descriptors:
  - [{key: client, value: "{client}"}]
"#;

const PROXY_WITH_TOKENS: &str = r#"
upstream: "{upstream}"
domain: ask-ai
max_output_tokens: 100
descriptors:
  - [{key: client, value: "{client}"}]
tokens:
  descriptors:
    - [{key: client_tokens, value: "{client}"}]
"#;

fn limits(per_minute: u32, global_per_day: u32, tokens_per_day: u32) -> String {
    LIMITS
        .replace(
            "requests_per_unit: 3",
            &format!("requests_per_unit: {per_minute}"),
        )
        .replace(
            "requests_per_unit: 1000",
            &format!("requests_per_unit: {global_per_day}"),
        )
        .replace(
            "requests_per_unit: 5000",
            &format!("requests_per_unit: {tokens_per_day}"),
        )
}

/// What is left of `client`'s token budget, asked of the decision service without counting.
async fn tokens_left(proxy: &ProxyUnderTest, client: &str) -> u32 {
    let probe = with_hits(descriptor(&[("client_tokens", client)]), 0);
    let answer = proxy.server.ask(request("ask-ai", vec![probe])).await;
    answer.statuses[0].limit_remaining
}

/// Waits (with a deadline) until `client`'s token budget shows `left`.
async fn settles_to(proxy: &ProxyUnderTest, client: &str, left: u32) {
    let settled = eventually(Duration::from_secs(10), || async {
        tokens_left(proxy, client).await == left
    })
    .await;
    assert!(
        settled,
        "token budget of {client}: {} left, wanted {left}",
        tokens_left(proxy, client).await
    );
}

#[tokio::test]
async fn allowed_calls_go_upstream_with_the_server_key_and_nothing_of_the_account_comes_back() {
    for mode in BOTH {
        let proxy = ProxyUnderTest::start(mode, LIMITS, PROXY).await;
        let response = proxy
            .chat()
            .header("authorization", "Bearer sk-client-own-key")
            .header("openai-organization", "org-client")
            .header("openai-project", "proj_client")
            .header("cookie", "session=abc")
            .header("x-forwarded-for", "6.6.6.6")
            .header("openai-beta", "assistants=v2")
            .header("user-agent", "OpenAI/JS 4.0")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{mode:?}");
        let headers = response.headers().clone();
        let body = json_of(response).await;
        assert_eq!(body["choices"][0]["message"]["content"], "Hello world");

        let sent = proxy.upstream.last();
        assert_eq!(sent.path, "/v1/chat/completions");
        assert_eq!(
            sent.headers["authorization"],
            format!("Bearer {SERVER_KEY}")
        );
        for withheld in [
            "openai-organization",
            "openai-project",
            "cookie",
            "x-forwarded-for",
        ] {
            assert!(
                !sent.headers.contains_key(withheld),
                "{mode:?}: {withheld} went upstream"
            );
        }
        assert_eq!(sent.headers["openai-beta"], "assistants=v2");
        assert_eq!(sent.headers["user-agent"], "OpenAI/JS 4.0");
        assert_eq!(sent.body["store"], false);
        let safety = sent.body["safety_identifier"].as_str().unwrap();
        assert_eq!(safety.len(), 32, "a hash, not the address: {safety}");
        assert!(!safety.contains("127.0.0.1"));

        for stripped in [
            "openai-organization",
            "openai-project",
            "x-ratelimit-limit-requests",
            "x-ratelimit-remaining-tokens",
            "set-cookie",
        ] {
            assert!(
                !headers.contains_key(stripped),
                "{mode:?}: {stripped} came back"
            );
        }
        assert_eq!(headers["x-request-id"], "req_123");
        // The clock is at the start of a minute: the window resets in 60 s.
        assert_eq!(headers["ratelimit-policy"], "\"ip-minute\";q=3;w=60");
        assert_eq!(headers["ratelimit"], "\"ip-minute\";r=2;t=60");
    }
}

#[tokio::test]
async fn n_plus_5_concurrent_calls_with_n_left_give_n_upstream_calls_and_5_honest_429s() {
    const N: usize = 8;
    for mode in BOTH {
        let proxy =
            ProxyUnderTest::start(mode, &limits(N as u32, 100_000, 5000), PROXY_BEHIND_LB).await;
        // 19 s into the minute: the window resets in 41 s, and that is what the 429s must say.
        proxy.server.clock.advance(Duration::from_secs(19));
        for round in 0..10 {
            let client = format!("203.0.113.{round}");
            let before = proxy.upstream.calls();
            let calls = (0..N + 5).map(|_| proxy.chat().header("x-forwarded-for", &client).send());
            let responses: Vec<_> = join_all(calls)
                .await
                .into_iter()
                .map(Result::unwrap)
                .collect();
            let ok = responses.iter().filter(|r| r.status() == 200).count();
            assert_eq!(ok, N, "{mode:?} round {round}");
            assert_eq!(proxy.upstream.calls() - before, N, "{mode:?} round {round}");
            for response in responses.into_iter().filter(|r| r.status() != 200) {
                assert_eq!(response.status(), 429);
                assert_eq!(response.headers()["retry-after"], "41");
                assert_eq!(response.headers()["ratelimit"], "\"ip-minute\";r=0;t=41");
                assert!(!response.headers().contains_key("x-should-retry"));
                let message = openai_error(&json_of(response).await, "rate_limit_exceeded");
                assert!(message.contains("ip-minute"), "{message}");
            }
        }
    }
}

#[tokio::test]
async fn the_global_cap_holds_across_many_clients_and_keeps_its_volume_to_itself() {
    const CAP: usize = 25;
    for mode in BOTH {
        let proxy =
            ProxyUnderTest::start(mode, &limits(100, CAP as u32, 5000), PROXY_BEHIND_LB).await;
        let calls = (0..60).map(|i| {
            proxy
                .chat()
                .header("x-forwarded-for", format!("198.51.100.{i}"))
                .send()
        });
        let responses: Vec<_> = join_all(calls)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let ok = responses.iter().filter(|r| r.status() == 200).count();
        assert_eq!(ok, CAP, "{mode:?}");
        assert_eq!(proxy.upstream.calls(), CAP, "{mode:?}");
        for response in responses.into_iter().filter(|r| r.status() != 200) {
            assert_eq!(response.status(), 429);
            assert_eq!(response.headers()["x-should-retry"], "false");
            assert!(response.headers().contains_key("retry-after"));
            let policy = response.headers()["ratelimit-policy"]
                .to_str()
                .unwrap()
                .to_owned();
            assert!(!policy.contains(&CAP.to_string()), "{policy}");
            let message = openai_error(&json_of(response).await, "rate_limit_exceeded");
            assert!(message.contains("service-day"), "{message}");
            assert!(!message.contains(&CAP.to_string()), "{message}");
        }
    }
}

#[tokio::test]
async fn sse_events_arrive_as_the_upstream_sends_them_and_the_added_usage_chunk_is_stripped() {
    for mode in BOTH {
        let proxy = ProxyUnderTest::start(mode, LIMITS, PROXY_WITH_TOKENS).await;
        proxy.upstream.behave(Behaviour::HoldAfterFirstEvent {
            prompt: 10,
            completion: 5,
        });
        let body = json!({"model": "gpt-test", "stream": true,
                          "messages": [{"role": "user", "content": "Hi"}]});
        let mut response = proxy
            .post("/v1/chat/completions", body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        // The upstream is holding everything after its first event: this must arrive anyway.
        let first = tokio::time::timeout(Duration::from_secs(10), response.chunk())
            .await
            .expect("the first event is held back")
            .unwrap()
            .unwrap();
        assert!(String::from_utf8_lossy(&first).contains("\"role\":\"assistant\""));
        proxy.upstream.release();
        let mut rest = String::new();
        while let Some(chunk) = response.chunk().await.unwrap() {
            rest.push_str(&String::from_utf8_lossy(&chunk));
        }
        assert!(rest.contains(" world"), "{rest}");
        assert!(rest.ends_with("data: [DONE]\n\n"), "{rest}");
        assert!(
            !rest.contains("\"choices\":[]"),
            "the usage chunk reached a client that did not ask: {rest}"
        );
        // The proxy asked for the usage on the client's behalf.
        assert_eq!(
            proxy.upstream.last().body["stream_options"]["include_usage"],
            true
        );
        settles_to(&proxy, "127.0.0.1", 5000 - 15).await;
    }
}

#[tokio::test]
async fn a_client_that_asked_for_the_usage_chunk_gets_it() {
    let proxy = ProxyUnderTest::start(Mode::InProcess, LIMITS, PROXY_WITH_TOKENS).await;
    let body = json!({"model": "gpt-test", "stream": true, "stream_options": {"include_usage": true},
                      "messages": [{"role": "user", "content": "Hi"}]});
    let text = proxy
        .post("/v1/chat/completions", body)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("\"choices\":[]"), "{text}");
    assert!(text.contains("\"total_tokens\":42"), "{text}");
}

#[tokio::test]
async fn token_budgets_settle_to_the_upstreams_real_usage() {
    for mode in BOTH {
        let proxy = ProxyUnderTest::start(mode, LIMITS, PROXY_WITH_TOKENS).await;
        // JSON chat: 12 + 30 tokens.
        assert_eq!(proxy.chat().send().await.unwrap().status(), 200);
        settles_to(&proxy, "127.0.0.1", 5000 - 42).await;
        // Responses API, streamed: the usage of `response.completed`.
        proxy.upstream.behave(Behaviour::Normal {
            prompt: 100,
            completion: 7,
        });
        let body = json!({"model": "gpt-test", "input": "Hi", "stream": true});
        let text = proxy
            .post("/v1/responses", body)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(text.contains("response.completed"), "{text}");
        assert_eq!(proxy.upstream.last().body["max_output_tokens"], 100);
        settles_to(&proxy, "127.0.0.1", 5000 - 42 - 107).await;
        // Embeddings: prompt tokens only.
        proxy.upstream.behave(Behaviour::Normal {
            prompt: 9,
            completion: 0,
        });
        let body = json!({"model": "text-embedding-3-small", "input": "Hi"});
        let response = proxy.post("/v1/embeddings", body).send().await.unwrap();
        assert_eq!(response.status(), 200);
        settles_to(&proxy, "127.0.0.1", 5000 - 42 - 107 - 9).await;
    }
}

#[tokio::test]
async fn concurrent_calls_cannot_overshoot_the_token_budget() {
    for mode in BOTH {
        for round in 0..5 {
            let body =
                json!({"model": "gpt-test", "messages": [{"role": "user", "content": "Hi"}]});
            let reservation = body.to_string().len() as u64 + 100;
            // Every call really costs its whole worst case: nothing is given back, so a budget
            // of 7.5 reservations admits exactly 7 calls, however many arrive at once.
            const BUDGET_CALLS: u64 = 7;
            let budget = reservation * BUDGET_CALLS + reservation / 2;
            let limits = limits(1000, 100_000, budget as u32);
            let proxy = ProxyUnderTest::start(mode, &limits, PROXY_WITH_TOKENS).await;
            let prompt = reservation - 100;
            proxy.upstream.behave(Behaviour::Normal {
                prompt,
                completion: 100,
            });
            let calls = (0..20).map(|_| proxy.post("/v1/chat/completions", body.clone()).send());
            let responses: Vec<_> = join_all(calls)
                .await
                .into_iter()
                .map(Result::unwrap)
                .collect();
            let ok = responses.iter().filter(|r| r.status() == 200).count() as u64;
            assert_eq!(ok, BUDGET_CALLS, "{mode:?} round {round}");
            for response in responses.into_iter().filter(|r| r.status() != 200) {
                assert_eq!(response.status(), 429);
                assert_eq!(json_of(response).await["error"]["type"], "tokens");
            }
            settles_to(&proxy, "127.0.0.1", (budget - reservation * ok) as u32).await;
        }
    }
}

#[tokio::test]
async fn upstream_errors_keep_their_status_and_body_and_give_the_tokens_back() {
    for mode in BOTH {
        let proxy = ProxyUnderTest::start(mode, LIMITS, PROXY_WITH_TOKENS).await;
        proxy.upstream.behave(Behaviour::RateLimited);
        let response = proxy.chat().send().await.unwrap();
        assert_eq!(response.status(), 429);
        assert!(
            !response
                .headers()
                .contains_key("x-ratelimit-limit-requests")
        );
        openai_error(&json_of(response).await, "insufficient_quota");
        proxy.upstream.behave(Behaviour::ServerError);
        let response = proxy.chat().send().await.unwrap();
        assert_eq!(response.status(), 500);
        openai_error(&json_of(response).await, "server_error");
        settles_to(&proxy, "127.0.0.1", 5000).await;
    }
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_502_in_openais_shape_with_the_tokens_back() {
    for mode in BOTH {
        let (_refusing, address) = common::refusing_address();
        let dead = format!("http://{address}");
        let yaml = PROXY_WITH_TOKENS.replace("\"{upstream}\"", &format!("\"{dead}\""));
        let proxy = ProxyUnderTest::start(mode, LIMITS, &yaml).await;
        let response = proxy.chat().send().await.unwrap();
        assert_eq!(response.status(), 502, "{mode:?}");
        openai_error(&json_of(response).await, "upstream_unreachable");
        settles_to(&proxy, "127.0.0.1", 5000).await;
    }
}

#[tokio::test]
async fn a_limiter_that_cannot_be_reached_denies_with_503_and_calls_nothing() {
    let (_refusing, address) = common::refusing_address();
    let dead = format!("http://{address}");
    for (policy, want, outcome) in [("deny", 503, "limiter_error"), ("allow", 200, "forwarded")] {
        let upstream = common::openai::FakeOpenAi::start().await;
        let yaml = format!("{PROXY}on_limiter_error: {policy}\n");
        let (url, stop, proxy) =
            common::proxy::standalone_proxy(&yaml, &upstream, &dead, Duration::from_millis(50))
                .await;
        let response = reqwest::Client::new()
            .post(url)
            .body(json!({"model": "m", "messages": []}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), want, "on_limiter_error: {policy}");
        if want == 503 {
            openai_error(&json_of(response).await, "rate_limiter_unavailable");
            assert_eq!(upstream.calls(), 0);
        } else {
            assert_eq!(upstream.calls(), 1);
        }
        // One call, counted once, as how it ended; the failure is counted apart under either
        // policy.
        let metrics = common::proxy::metrics_of(&proxy);
        let calls: Vec<&str> = (metrics.lines())
            .filter(|line| line.starts_with("tollgate_proxy_calls_total{"))
            .collect();
        let line = format!("tollgate_proxy_calls_total{{outcome=\"{outcome}\"}} 1");
        assert_eq!(calls, [line.as_str()], "on_limiter_error: {policy}");
        assert!(
            (metrics.lines()).any(|line| line == "tollgate_proxy_limiter_errors_total 1"),
            "on_limiter_error: {policy}, no limiter error counted in:\n{metrics}"
        );
        stop.cancel();
    }
}

#[tokio::test]
async fn cors_allows_only_the_listed_origins() {
    let yaml =
        format!("{PROXY}cors: {{allowed_origins: [\"chrome-extension://goodextension\"]}}\n");
    let proxy = ProxyUnderTest::start(Mode::InProcess, LIMITS, &yaml).await;
    let preflight = |origin: &str| {
        proxy
            .http
            .request(
                reqwest::Method::OPTIONS,
                format!("{}/v1/chat/completions", proxy.url),
            )
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type, x-stainless-os, x-stainless-retry-count, x-evil",
            )
            .send()
    };
    let good = preflight("chrome-extension://goodextension").await.unwrap();
    assert_eq!(good.status(), 204);
    assert_eq!(
        good.headers()["access-control-allow-origin"],
        "chrome-extension://goodextension"
    );
    assert_eq!(good.headers()["vary"], "origin");
    assert_eq!(good.headers()["access-control-allow-methods"], "POST");
    assert_eq!(
        good.headers()["access-control-allow-headers"],
        "authorization, content-type, x-stainless-os, x-stainless-retry-count"
    );
    let bad = preflight("https://evil.example").await.unwrap();
    assert_eq!(bad.status(), 403);
    assert!(!bad.headers().contains_key("access-control-allow-origin"));

    let call = proxy
        .chat()
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(call.status(), 403);
    openai_error(&json_of(call).await, "origin_not_allowed");
    assert_eq!(
        proxy.upstream.calls(),
        0,
        "a refused origin reached the upstream"
    );
    let call = proxy
        .chat()
        .header("origin", "chrome-extension://goodextension")
        .send()
        .await
        .unwrap();
    assert_eq!(call.status(), 200);
    assert_eq!(
        call.headers()["access-control-allow-origin"],
        "chrome-extension://goodextension"
    );
    let exposed = call.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap();
    assert!(
        exposed.contains("retry-after") && exposed.contains("ratelimit"),
        "{exposed}"
    );
}

// --- Attacker input -------------------------------------------------------------------------

const ONE_PER_MINUTE: &str = "
domain: ask-ai
descriptors:
  - key: client
    rate_limit: {name: ip-minute, unit: minute, requests_per_unit: 1}
";

#[tokio::test]
async fn a_spoofed_forwarded_header_from_an_untrusted_peer_buys_nothing() {
    for mode in BOTH {
        let proxy = ProxyUnderTest::start(mode, ONE_PER_MINUTE, PROXY).await;
        let first = proxy
            .chat()
            .header("x-forwarded-for", "1.1.1.1")
            .send()
            .await
            .unwrap();
        assert_eq!(first.status(), 200);
        let second = proxy
            .chat()
            .header("x-forwarded-for", "2.2.2.2")
            .send()
            .await
            .unwrap();
        assert_eq!(
            second.status(),
            429,
            "{mode:?}: a new x-forwarded-for bought a new budget"
        );
    }
}

#[tokio::test]
async fn a_forged_left_most_entry_behind_a_trusted_proxy_is_not_believed() {
    for mode in BOTH {
        let proxy = ProxyUnderTest::start(mode, ONE_PER_MINUTE, PROXY_BEHIND_LB).await;
        let forged = |left: &str| {
            proxy
                .chat()
                .header("x-forwarded-for", format!("{left}, 203.0.113.7"))
                .send()
        };
        assert_eq!(forged("6.6.6.6").await.unwrap().status(), 200);
        assert_eq!(forged("7.7.7.7").await.unwrap().status(), 429, "{mode:?}");
        let other = proxy
            .chat()
            .header("x-forwarded-for", "203.0.113.8")
            .send()
            .await
            .unwrap();
        assert_eq!(
            other.status(),
            200,
            "{mode:?}: the trusted hop's client has its own budget"
        );
    }
}

#[tokio::test]
async fn an_ipv4_mapped_ipv6_peer_is_its_ipv4_address() {
    // Listening on an IPv6 socket, an IPv4 client appears as ::ffff:127.0.0.1; only once turned
    // back into 127.0.0.1 does it match the trusted proxy, whose header then names the client.
    let proxy = ProxyUnderTest::start_on(
        Mode::InProcess,
        ONE_PER_MINUTE,
        PROXY_BEHIND_LB,
        "[::ffff:127.0.0.1]:0",
    )
    .await;
    assert!(proxy.addr.is_ipv6());
    let url = format!("http://127.0.0.1:{}/v1/chat/completions", proxy.addr.port());
    for client in ["203.0.113.1", "203.0.113.2"] {
        let response = proxy
            .http
            .post(&url)
            .header("x-forwarded-for", client)
            .body(json!({"model": "m", "messages": []}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{client} was not told apart");
    }
}

#[tokio::test]
async fn a_disallowed_method_on_an_allowed_path_is_404_before_any_budget_is_spent() {
    for mode in BOTH {
        let proxy = ProxyUnderTest::start(mode, ONE_PER_MINUTE, PROXY).await;
        for method in [
            reqwest::Method::GET,
            reqwest::Method::DELETE,
            reqwest::Method::PUT,
        ] {
            let response = proxy
                .http
                .request(method.clone(), format!("{}/v1/chat/completions", proxy.url))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 404, "{method}");
            let message = openai_error(&json_of(response).await, "unknown_url");
            assert!(message.contains(method.as_str()), "{message}");
        }
        assert_eq!(proxy.upstream.calls(), 0);
        assert_eq!(
            proxy.chat().send().await.unwrap().status(),
            200,
            "{mode:?}: budget was spent"
        );
    }
}

#[tokio::test]
async fn a_path_is_judged_and_forwarded_as_what_it_normalises_to() {
    let proxy = ProxyUnderTest::start(Mode::InProcess, LIMITS, PROXY).await;
    let body = json!({"model": "m", "messages": []});
    for path in [
        "/v1/models/../chat/completions",
        "//v1//chat/completions/",
        "/v1/%63hat/completions",
    ] {
        let response = proxy.post(path, body.clone()).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(proxy.upstream.last().path, "/v1/chat/completions", "{path}");
    }
    let before = proxy.upstream.calls();
    for path in [
        "/v1/chat/completions/../../files",
        "/v1/chat%2fcompletions",
        "/v1/../../etc",
    ] {
        let response = proxy.post(path, body.clone()).send().await.unwrap();
        assert!(
            matches!(response.status().as_u16(), 400 | 404),
            "{path}: {}",
            response.status()
        );
    }
    assert_eq!(proxy.upstream.calls(), before);
}

#[tokio::test]
async fn an_oversized_body_is_413_and_goes_nowhere() {
    for mode in BOTH {
        let yaml = format!("{PROXY}max_body_bytes: 1000\n");
        let proxy = ProxyUnderTest::start(mode, ONE_PER_MINUTE, &yaml).await;
        let big =
            json!({"model": "m", "messages": [{"role": "user", "content": "x".repeat(2000)}]});
        let response = proxy
            .post("/v1/chat/completions", big)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 413);
        openai_error(&json_of(response).await, "request_too_large");
        // Chunked, with no length declared up front: the limit holds as the bytes arrive.
        let chunk = "x".repeat(2000);
        let chunked = format!("{:x}\r\n{chunk}\r\n0\r\n\r\n", chunk.len());
        let head = "POST /v1/chat/completions HTTP/1.1\r\ntransfer-encoding: chunked";
        assert_eq!(raw(&proxy, head, chunked.as_bytes()).await, 413, "{mode:?}");
        assert_eq!(proxy.upstream.calls(), 0);
        assert_eq!(
            proxy.chat().send().await.unwrap().status(),
            200,
            "{mode:?}: budget was spent"
        );
    }
}

#[tokio::test]
async fn a_stream_abandoned_half_way_cancels_the_upstream_and_keeps_the_reservation() {
    for mode in BOTH {
        let proxy = ProxyUnderTest::start(mode, LIMITS, PROXY_WITH_TOKENS).await;
        proxy.upstream.behave(Behaviour::Endless);
        let body = json!({"model": "gpt-test", "stream": true, "messages": []});
        let reservation = body.to_string().len() as u32 + 100;
        let mut response = proxy
            .post("/v1/chat/completions", body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert!(response.chunk().await.unwrap().is_some());
        drop(response);
        let cancelled = eventually(Duration::from_secs(10), || async {
            proxy.upstream.cancelled()
        })
        .await;
        assert!(
            cancelled,
            "{mode:?}: the upstream call went on after the client left"
        );
        // Nothing was settled: the whole worst case stays charged.
        assert_eq!(
            tokens_left(&proxy, "127.0.0.1").await,
            5000 - reservation,
            "{mode:?}"
        );
    }
}

#[tokio::test]
async fn the_body_policy_applies_before_anything_is_spent() {
    let yaml = format!("{PROXY}models: [gpt-test]\nmax_output_tokens: 50\nmax_choices: 2\n");
    let proxy = ProxyUnderTest::start(Mode::InProcess, ONE_PER_MINUTE, &yaml).await;
    let call = |body: Value| proxy.post("/v1/chat/completions", body).send();
    let other_model = call(json!({"model": "gpt-expensive", "messages": []}))
        .await
        .unwrap();
    assert_eq!(other_model.status(), 400);
    openai_error(&json_of(other_model).await, "model_not_allowed");
    // Embeddings bodies are forwarded as they came, but their model is checked all the same.
    let other_embedding = proxy
        .post(
            "/v1/embeddings",
            json!({"model": "text-embedding-3-large", "input": "Hi"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(other_embedding.status(), 400);
    openai_error(&json_of(other_embedding).await, "model_not_allowed");
    let too_many = call(json!({"model": "gpt-test", "n": 3, "messages": []}))
        .await
        .unwrap();
    assert_eq!(too_many.status(), 400);
    let not_json = proxy
        .http
        .post(format!("{}/v1/chat/completions", proxy.url))
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), 400);
    assert_eq!(proxy.upstream.calls(), 0);

    let body = json!({"model": "gpt-test", "n": 2, "max_completion_tokens": 5000, "store": true,
                      "safety_identifier": "someone-else", "messages": []});
    assert_eq!(call(body).await.unwrap().status(), 200);
    let sent = proxy.upstream.last().body;
    assert_eq!(sent["max_completion_tokens"], 50);
    assert_eq!(sent["store"], false);
    assert_ne!(sent["safety_identifier"], "someone-else");
}

#[tokio::test]
async fn the_kill_switch_answers_503_without_asking_anyone() {
    let yaml = format!("{PROXY}enabled: false\n");
    let proxy = ProxyUnderTest::start(Mode::InProcess, ONE_PER_MINUTE, &yaml).await;
    let response = proxy.chat().send().await.unwrap();
    assert_eq!(response.status(), 503);
    openai_error(&json_of(response).await, "service_disabled");
    assert_eq!(proxy.upstream.calls(), 0);
}

#[tokio::test]
async fn a_client_may_hold_only_so_many_streams_at_once() {
    let yaml = format!("{PROXY}max_streams_per_client: 1\n");
    let proxy = ProxyUnderTest::start(Mode::InProcess, LIMITS, &yaml).await;
    proxy.upstream.behave(Behaviour::HoldAfterFirstEvent {
        prompt: 1,
        completion: 1,
    });
    let body = json!({"model": "gpt-test", "stream": true, "messages": []});
    let mut held = proxy
        .post("/v1/chat/completions", body.clone())
        .send()
        .await
        .unwrap();
    assert!(held.chunk().await.unwrap().is_some());
    let second = proxy
        .post("/v1/chat/completions", body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), 429);
    openai_error(&json_of(second).await, "too_many_concurrent_streams");
    proxy.upstream.release();
    while held.chunk().await.unwrap().is_some() {}
    proxy.upstream.behave(Behaviour::Normal {
        prompt: 1,
        completion: 1,
    });
    let third = proxy
        .post("/v1/chat/completions", body)
        .send()
        .await
        .unwrap();
    assert_eq!(third.status(), 200, "the slot was not given back");
}

#[tokio::test]
async fn in_process_the_proxy_refuses_a_domain_that_is_not_loaded() {
    let upstream = common::openai::FakeOpenAi::start().await;
    let config = common::proxy::proxy_config(&PROXY.replace("ask-ai", "ask-ia"), &upstream);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = tollgate::server::ProxyListener {
        listener,
        config,
        secrets: common::proxy::secrets(),
    };
    let server = common::TestServer::start_full(LIMITS, Default::default(), Some(proxy)).await;
    let error = server.stop().await.unwrap_err();
    assert!(
        error
            .to_string()
            .contains("'ask-ia' is not in the rate-limit config"),
        "{error}"
    );
}

#[tokio::test]
async fn upstream_connections_are_pooled_and_reused() {
    let proxy = ProxyUnderTest::start(Mode::InProcess, LIMITS, PROXY).await;
    for _ in 0..3 {
        assert_eq!(proxy.chat().send().await.unwrap().status(), 200);
    }
    assert_eq!(proxy.upstream.calls(), 3);
    assert_eq!(
        proxy.upstream.connections(),
        1,
        "each call opened its own connection"
    );
}

/// The reservation of the shared chat body: its size plus the 100-token output cap.
fn chat_reservation() -> u32 {
    json!({"model": "gpt-test", "messages": [{"role": "user", "content": "Hi"}]})
        .to_string()
        .len() as u32
        + 100
}

#[tokio::test]
async fn an_upstream_that_does_not_answer_in_time_is_a_504_and_may_still_bill_so_the_tokens_stay() {
    let yaml = format!("{PROXY_WITH_TOKENS}upstream_response_timeout_ms: 200\n");
    let proxy = ProxyUnderTest::start(Mode::InProcess, LIMITS, &yaml).await;
    proxy.upstream.behave(Behaviour::Hang);
    let response = proxy.chat().send().await.unwrap();
    assert_eq!(response.status(), 504);
    openai_error(&json_of(response).await, "upstream_timeout");
    assert_eq!(
        tokens_left(&proxy, "127.0.0.1").await,
        5000 - chat_reservation()
    );
    proxy.upstream.release();
}

const PROXY_WITH_INSTALL_TOKENS: &str = r#"
upstream: "{upstream}"
domain: ask-ai
client_token_header: x-install-id
descriptors:
  - [{key: install, value: "{client}"}]
  - [{key: client, value: "{ip}"}]
"#;

#[tokio::test]
async fn install_tokens_tell_clients_apart_but_rotating_them_buys_nothing() {
    let limits = "
domain: ask-ai
descriptors:
  - key: install
    rate_limit: {name: install-minute, unit: minute, requests_per_unit: 1}
  - key: client
    rate_limit: {name: ip-minute, unit: minute, requests_per_unit: 3}
";
    for mode in BOTH {
        let proxy = ProxyUnderTest::start(mode, limits, PROXY_WITH_INSTALL_TOKENS).await;
        let call = |token: &'static str| proxy.chat().header("x-install-id", token).send();
        assert_eq!(call("install-a").await.unwrap().status(), 200);
        let again = call("install-a").await.unwrap();
        assert_eq!(again.status(), 429, "{mode:?}");
        assert!(
            json_of(again).await["error"]["message"]
                .as_str()
                .unwrap()
                .contains("install-minute")
        );
        assert_eq!(call("install-b").await.unwrap().status(), 200);
        assert_eq!(call("install-c").await.unwrap().status(), 200);
        // A fresh token each time still runs into the address's own limit.
        let rotated = call("install-d").await.unwrap();
        assert_eq!(rotated.status(), 429, "{mode:?}");
        assert!(
            json_of(rotated).await["error"]["message"]
                .as_str()
                .unwrap()
                .contains("ip-minute")
        );
        let ids: Vec<_> = proxy
            .upstream
            .received()
            .iter()
            .map(|r| r.body["safety_identifier"].clone())
            .collect();
        assert_ne!(ids[0], ids[1], "installs share a safety identifier");
    }
}

#[tokio::test]
async fn a_reload_that_drops_the_proxys_domain_is_refused() {
    let proxy = ProxyUnderTest::start(Mode::InProcess, ONE_PER_MINUTE, PROXY).await;
    assert_eq!(proxy.chat().send().await.unwrap().status(), 200);
    // Three sends through a channel of one: once the third is in, the first has been handled.
    for _ in 0..3 {
        let other = common::config("domain: other\ndescriptors:\n  - key: client\n");
        proxy.server.reload.send(other).await.unwrap();
    }
    // Had it been applied, ask-ai would be an unknown domain, and unknown domains are allowed.
    let response = proxy.chat().send().await.unwrap();
    assert_eq!(
        response.status(),
        429,
        "the limits went away with the reload"
    );
}

/// Sends `head` (request line and headers, no blank line) and `body` over a plain socket, as
/// written: no client library resolves or rewrites anything. Returns the status code.
async fn raw(proxy: &ProxyUnderTest, head: &str, body: &[u8]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let request = format!("{head}\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n");
    socket.write_all(request.as_bytes()).await.unwrap();
    socket.write_all(body).await.unwrap();
    let mut answer = Vec::new();
    socket.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status: {answer}"))
}

#[tokio::test]
async fn paths_are_judged_as_written_on_the_wire_once_normalised() {
    for mode in BOTH {
        let proxy = ProxyUnderTest::start(mode, &limits(100, 1000, 5000), PROXY).await;
        let body = json!({"model": "m", "messages": []}).to_string();
        let post =
            |target: &str| format!("POST {target} HTTP/1.1\r\ncontent-length: {}", body.len());
        for target in [
            "/v1/models/../chat/completions",
            "/v1/%2e%2E/v1/chat/completions",
            "/v1/./chat//completions",
            // Absolute form: the host named is not where the call goes.
            "http://evil.example/v1/chat/completions",
        ] {
            assert_eq!(
                raw(&proxy, &post(target), body.as_bytes()).await,
                200,
                "{mode:?} {target}"
            );
            assert_eq!(
                proxy.upstream.last().path,
                "/v1/chat/completions",
                "{target}"
            );
        }
        let before = proxy.upstream.calls();
        for (target, want) in [
            ("/v1/chat/completions/../../files", 404),
            ("/v1/chat%2Fcompletions", 400),
            ("/v1/../../v1/chat/completions", 404),
        ] {
            assert_eq!(
                raw(&proxy, &post(target), body.as_bytes()).await,
                want,
                "{mode:?} {target}"
            );
        }
        for method in ["HEAD", "PATCH", "OPTIONS"] {
            let head = format!("{method} /v1/chat/completions HTTP/1.1\r\ncontent-length: 0");
            assert_eq!(raw(&proxy, &head, b"").await, 404, "{mode:?} {method}");
        }
        assert_eq!(proxy.upstream.calls(), before, "{mode:?}");
    }
}

#[tokio::test]
async fn the_upstreams_own_errors_do_not_disclose_the_account() {
    for mode in BOTH {
        let proxy = ProxyUnderTest::start(mode, LIMITS, PROXY).await;
        proxy.upstream.behave(Behaviour::RateLimited);
        let response = proxy.chat().send().await.unwrap();
        assert_eq!(response.status(), 429);
        let body = json_of(response).await;
        let message = openai_error(&body, "insufficient_quota");
        assert_eq!(body["error"]["type"], "insufficient_quota");
        for secret in ["Secret123", "30000", "29990"] {
            assert!(!message.contains(secret), "{mode:?}: {message}");
        }
        assert!(
            message.contains("Rate limit reached for gpt-test"),
            "{message}"
        );
    }
}

#[tokio::test]
async fn the_configured_organization_and_project_replace_the_clients() {
    let yaml = format!("{PROXY}organization: org-mine\nproject: proj_mine\n");
    let proxy = ProxyUnderTest::start(Mode::InProcess, LIMITS, &yaml).await;
    let response = proxy
        .chat()
        .header("openai-organization", "org-theirs")
        .header("openai-project", "proj_theirs")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let sent = proxy.upstream.last();
    assert_eq!(
        sent.headers
            .get_all("openai-organization")
            .iter()
            .collect::<Vec<_>>(),
        ["org-mine"]
    );
    assert_eq!(
        sent.headers
            .get_all("openai-project")
            .iter()
            .collect::<Vec<_>>(),
        ["proj_mine"]
    );
}

#[tokio::test]
async fn hosted_tools_stored_context_and_priority_tiers_are_not_the_clients_to_use() {
    let proxy = ProxyUnderTest::start(Mode::InProcess, LIMITS, PROXY).await;
    for (body, param) in [
        (
            json!({"model": "m", "input": "hi", "tools": [{"type": "file_search", "vector_store_ids": ["vs_1"]}]}),
            "tools",
        ),
        (
            json!({"model": "m", "input": "hi", "previous_response_id": "resp_someone_elses"}),
            "previous_response_id",
        ),
        (
            json!({"model": "m", "input": "hi", "conversation": "conv_1"}),
            "conversation",
        ),
        (
            json!({"model": "m", "input": [{"type": "item_reference", "id": "msg_1"}]}),
            "input",
        ),
        (
            json!({"model": "m", "input": [{"role": "user", "content": [
                {"type": "input_image", "file_id": "file-1"}]}]}),
            "input",
        ),
    ] {
        let response = proxy.post("/v1/responses", body).send().await.unwrap();
        assert_eq!(response.status(), 400, "{param}");
        let body = json_of(response).await;
        if param != "input" {
            assert_eq!(body["error"]["param"], param);
        }
    }
    let search = json!({"model": "m", "messages": [], "web_search_options": {}});
    let response = proxy
        .post("/v1/chat/completions", search)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400, "web_search_options");
    assert_eq!(proxy.upstream.calls(), 0);
    let body = json!({"model": "m", "input": "hi", "service_tier": "priority",
                      "tools": [{"type": "function", "name": "f", "parameters": {}}]});
    assert_eq!(
        proxy
            .post("/v1/responses", body)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let sent = proxy.upstream.last().body;
    assert!(sent.get("service_tier").is_none(), "{sent}");
}

#[tokio::test]
async fn images_are_reserved_for_what_they_cost_not_for_their_bytes() {
    let yaml = format!("{PROXY_WITH_TOKENS}upstream_response_timeout_ms: 200\n");
    let proxy = ProxyUnderTest::start(Mode::InProcess, LIMITS, &yaml).await;
    // A call that times out keeps its whole reservation: that shows what it was.
    proxy.upstream.behave(Behaviour::Hang);
    let body = json!({"model": "gpt-test", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]});
    let reservation = body.to_string().len() as u32 + 100 + 2000;
    assert_eq!(
        proxy
            .post("/v1/chat/completions", body)
            .send()
            .await
            .unwrap()
            .status(),
        504
    );
    assert_eq!(tokens_left(&proxy, "127.0.0.1").await, 5000 - reservation);
    proxy.upstream.release();
    let file = json!({"model": "gpt-test", "messages": [{"role": "user", "content": [
        {"type": "file", "file": {"file_id": "file-1"}}]}]});
    assert_eq!(
        proxy
            .post("/v1/chat/completions", file)
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
}

/// A rate-limit service that answers every call with `answer`, or never answers at all.
async fn fake_limiter(answer: Option<tollgate::proto::RateLimitResponse>) -> String {
    use tollgate::proto::{
        RateLimitRequest, RateLimitResponse, RateLimitService, RateLimitServiceServer,
    };
    struct Fixed(RateLimitResponse);
    #[tonic::async_trait]
    impl RateLimitService for Fixed {
        async fn should_rate_limit(
            &self,
            _: tonic::Request<RateLimitRequest>,
        ) -> Result<tonic::Response<RateLimitResponse>, tonic::Status> {
            Ok(tonic::Response::new(self.0.clone()))
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    match answer {
        Some(answer) => {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            let service = RateLimitServiceServer::new(Fixed(answer));
            tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(service)
                    .serve_with_incoming(incoming),
            );
        }
        // Accepts connections and holds them, saying nothing.
        None => {
            tokio::spawn(async move {
                let mut held = Vec::new();
                while let Ok((socket, _)) = listener.accept().await {
                    held.push(socket);
                }
            });
        }
    }
    url
}

#[tokio::test]
async fn a_limiter_that_stalls_or_answers_nonsense_is_failed_closed_on() {
    use tollgate::proto::RateLimitResponse;
    use tollgate::proto::rate_limit_response::Code;
    let no_statuses = RateLimitResponse {
        overall_code: Code::Ok as i32,
        ..Default::default()
    };
    let unknown = RateLimitResponse {
        overall_code: Code::Unknown as i32,
        ..Default::default()
    };
    for (what, answer) in [
        ("stalls", None),
        ("no statuses", Some(no_statuses)),
        ("UNKNOWN", Some(unknown)),
    ] {
        let limiter = fake_limiter(answer).await;
        let upstream = common::openai::FakeOpenAi::start().await;
        let (url, stop) =
            common::proxy::standalone(PROXY, &upstream, &limiter, Duration::from_millis(50)).await;
        let started = std::time::Instant::now();
        let response = reqwest::Client::new()
            .post(url)
            .body(json!({"model": "m", "messages": []}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 503, "a limiter that {what}");
        openai_error(&json_of(response).await, "rate_limiter_unavailable");
        assert_eq!(upstream.calls(), 0, "a limiter that {what}");
        // Not a timing claim: only that the decision timeout, not some default, ended the wait.
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "a limiter that {what}"
        );
        stop.cancel();
    }
}

#[tokio::test]
async fn usage_beyond_the_reservation_is_charged_and_the_budget_ends_exhausted() {
    for mode in BOTH {
        let proxy = ProxyUnderTest::start(mode, &limits(100, 1000, 1000), PROXY_WITH_TOKENS).await;
        // Far more than the worst case the proxy could see (an image it did not count, say).
        proxy.upstream.behave(Behaviour::Normal {
            prompt: 2000,
            completion: 1000,
        });
        assert_eq!(proxy.chat().send().await.unwrap().status(), 200);
        settles_to(&proxy, "127.0.0.1", 0).await;
        let next = proxy.chat().send().await.unwrap();
        assert_eq!(next.status(), 429, "{mode:?}");
        assert_eq!(json_of(next).await["error"]["type"], "tokens");
    }
}

#[tokio::test]
async fn in_process_an_excess_is_counted_whole_and_is_no_call_of_the_global_cap() {
    let proxy =
        ProxyUnderTest::start(Mode::InProcess, &limits(100, 2, 5000), PROXY_WITH_TOKENS).await;
    let used = u64::from(chat_reservation()) + 250;
    proxy.upstream.behave(Behaviour::Normal {
        prompt: used - 100,
        completion: 100,
    });
    assert_eq!(proxy.chat().send().await.unwrap().status(), 200);
    settles_to(&proxy, "127.0.0.1", 5000 - used as u32).await;
    // The global cap allows two calls a day: the settlement must not have been one of them.
    assert_eq!(proxy.chat().send().await.unwrap().status(), 200);
    assert_eq!(proxy.chat().send().await.unwrap().status(), 429);
}

#[tokio::test]
async fn an_https_upstream_is_verified_through_rustls() {
    let (upstream, ca) = common::openai::FakeOpenAi::start_tls().await;
    let ca_file = std::env::temp_dir().join(format!("tollgate-ca-{}.pem", std::process::id()));
    std::fs::write(&ca_file, ca).unwrap();
    let https = format!("https://localhost:{}", upstream.addr.port());
    for (trusted, want) in [(true, 200), (false, 502)] {
        let mut yaml = PROXY.replace("\"{upstream}\"", &format!("\"{https}\""));
        if trusted {
            yaml.push_str(&format!("upstream_ca_file: \"{}\"\n", ca_file.display()));
        }
        let server = common::TestServer::start(LIMITS).await;
        let limiter = server.grpc_url();
        let (url, stop) =
            common::proxy::standalone(&yaml, &upstream, &limiter, Duration::from_secs(5)).await;
        let body = json!({"model": "m", "messages": []}).to_string();
        let response = reqwest::Client::new()
            .post(url)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), want, "trusting the local CA: {trusted}");
        stop.cancel();
    }
    // Only the call made with the CA trusted got through; the other failed its handshake.
    assert_eq!(upstream.calls(), 1);
    assert_eq!(
        upstream.last().headers["authorization"],
        format!("Bearer {SERVER_KEY}")
    );
    let _ = std::fs::remove_file(ca_file);
}

#[tokio::test]
async fn the_proxys_calls_and_tokens_are_counted_on_metrics() {
    let limits = limits(1, 1000, 5000);
    let proxy = ProxyUnderTest::start(Mode::InProcess, &limits, PROXY_WITH_TOKENS).await;
    assert_eq!(proxy.chat().send().await.unwrap().status(), 200);
    assert_eq!(proxy.chat().send().await.unwrap().status(), 429);
    let unknown = proxy.post("/v1/files", json!({})).send().await.unwrap();
    assert_eq!(unknown.status(), 404);
    // The refund of the first call is settled by the time its budget shows it.
    settles_to(&proxy, "127.0.0.1", 5000 - 42).await;
    let metrics = reqwest::get(proxy.server.http_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let reservation = chat_reservation();
    for line in [
        "tollgate_proxy_calls_total{outcome=\"forwarded\"} 1".to_owned(),
        "tollgate_proxy_calls_total{outcome=\"rate_limited\"} 1".to_owned(),
        "tollgate_proxy_calls_total{outcome=\"refused\"} 1".to_owned(),
        // Only the admitted call reserved: the denied one was refused as a whole.
        format!("tollgate_proxy_tokens_total{{flow=\"reserved\"}} {reservation}"),
        format!(
            "tollgate_proxy_tokens_total{{flow=\"refunded\"}} {}",
            reservation - 42
        ),
    ] {
        assert!(metrics.contains(&line), "no '{line}' in:\n{metrics}");
    }
}

#[tokio::test]
async fn the_proxy_alone_is_ready_while_it_serves_and_drains_on_shutdown() {
    let server = common::TestServer::start(LIMITS).await;
    let upstream = common::openai::FakeOpenAi::start().await;
    let config = common::proxy::proxy_config(PROXY, &upstream);
    let remote = tollgate::proxy::Remote::new(&server.grpc_url(), Duration::from_secs(5)).unwrap();
    let limiter = tollgate::proxy::Limiter::Remote(remote);
    let proxy = tollgate::proxy::Proxy::new(config, &common::proxy::secrets(), limiter).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let health = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (proxy_addr, health_addr) = (listener.local_addr().unwrap(), health.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(tollgate::server::serve_proxy_alone(
        listener,
        proxy.into(),
        Some(health),
        Duration::from_secs(5),
        async {
            let _ = stopped.await;
        },
    ));
    let chat = reqwest::Client::new()
        .post(format!("http://{proxy_addr}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(
            json!({"model": "gpt-test", "messages": [{"role": "user", "content": "Hi"}]})
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(chat.status(), 200);
    let healthcheck = reqwest::get(format!("http://{health_addr}/healthcheck"))
        .await
        .unwrap();
    assert_eq!(healthcheck.status(), 200);
    let metrics = reqwest::get(format!("http://{health_addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let forwarded = "tollgate_proxy_calls_total{outcome=\"forwarded\"} 1";
    assert!(metrics.contains(forwarded), "{metrics}");
    stop.send(()).unwrap();
    let served = tokio::time::timeout(Duration::from_secs(10), serving)
        .await
        .expect("the proxy did not drain");
    served.unwrap().unwrap();
}
