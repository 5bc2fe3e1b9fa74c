//! Exactly K under real concurrency: many simultaneous gRPC calls over several HTTP/2
//! connections, round after round, for a per-client limit, a global cap and both at once.

mod common;

use std::time::Duration;

use common::*;
use tokio::task::JoinSet;
use tollgate::proto::rate_limit_response::Code;
use tollgate::proto::{RateLimitRequest, RateLimitServiceClient};
use tonic::transport::Channel;

const CONFIG: &str = r#"
domain: ai
global:
  - {name: service-day, unit: day, requests_per_unit: 25}
descriptors:
  - key: client
    rate_limit: {name: per-client, unit: minute, requests_per_unit: 10}
  - key: user
    rate_limit: {name: per-user, unit: minute, requests_per_unit: 3}
"#;

/// Fires every request at once, spread over `clients`, and returns the decisions in order.
async fn fire(
    clients: &[RateLimitServiceClient<Channel>],
    requests: Vec<RateLimitRequest>,
) -> Vec<Code> {
    let mut calls = JoinSet::new();
    for (i, request) in requests.into_iter().enumerate() {
        let mut client = clients[i % clients.len()].clone();
        calls.spawn(async move {
            let response = client
                .should_rate_limit(request)
                .await
                .expect("call failed");
            (i, overall(&response.into_inner()))
        });
    }
    let mut codes = vec![Code::Unknown; calls.len()];
    while let Some(done) = calls.join_next().await {
        let (i, code) = done.expect("call task panicked");
        codes[i] = code;
    }
    codes
}

async fn clients(server: &TestServer, n: usize) -> Vec<RateLimitServiceClient<Channel>> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(RateLimitServiceClient::new(server.channel().await));
    }
    out
}

fn oks(codes: &[Code]) -> usize {
    codes.iter().filter(|&&c| c == Code::Ok).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_k_of_many_concurrent_calls_on_one_key_pass() {
    let server = TestServer::start(CONFIG).await;
    let clients = clients(&server, 4).await;
    for round in 0..40 {
        // A fresh day each round, so the global cap never interferes here.
        server.clock.advance(Duration::from_secs(86_400));
        let key = format!("client-{round}");
        // Calls in a day count against the cap of 25: stay under it with 24 calls.
        let requests = (0..24).map(|_| simple("ai", "client", &key)).collect();
        let codes = fire(&clients, requests).await;
        assert_eq!(oks(&codes), 10, "round {round}: {codes:?}");
        assert!(codes.iter().all(|&c| c == Code::Ok || c == Code::OverLimit));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_the_global_cap_passes_across_many_clients() {
    let server = TestServer::start(CONFIG).await;
    let clients = clients(&server, 4).await;
    for round in 0..30 {
        server.clock.advance(Duration::from_secs(86_400));
        let requests = (0..80)
            .map(|i| simple("ai", "client", &format!("r{round}-c{i}")))
            .collect();
        let codes = fire(&clients, requests).await;
        assert_eq!(oks(&codes), 25, "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn per_client_limits_and_the_global_cap_hold_together() {
    let server = TestServer::start(CONFIG).await;
    let clients = clients(&server, 4).await;
    for round in 0..30 {
        server.clock.advance(Duration::from_secs(86_400));
        // 12 users x 8 calls: users allow 12 x 3 = 36, the cap 25.
        let requests: Vec<_> = (0..96)
            .map(|i| simple("ai", "user", &format!("r{round}-u{}", i % 12)))
            .collect();
        let users: Vec<usize> = (0..96).map(|i| i % 12).collect();
        let codes = fire(&clients, requests).await;
        assert_eq!(oks(&codes), 25, "round {round}");
        for user in 0..12 {
            let passed = codes
                .iter()
                .zip(&users)
                .filter(|(c, u)| **c == Code::Ok && **u == user)
                .count();
            assert!(
                passed <= 3,
                "round {round}: user {user} passed {passed} times"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn denied_calls_of_a_greedy_client_never_spend_the_global_cap() {
    let server = TestServer::start(CONFIG).await;
    let clients = clients(&server, 4).await;
    for round in 0..30 {
        server.clock.advance(Duration::from_secs(86_400));
        let greedy = format!("greedy-{round}");
        // 150 calls of one greedy user (3 may pass) race 40 distinct polite users.
        let mut requests: Vec<_> = (0..150).map(|_| simple("ai", "user", &greedy)).collect();
        requests.extend((0..40).map(|i| simple("ai", "user", &format!("polite-{round}-{i}"))));
        let codes = fire(&clients, requests).await;
        let greedy_ok = oks(&codes[..150]);
        let polite_ok = oks(&codes[150..]);
        assert_eq!(greedy_ok, 3, "round {round}");
        assert_eq!(
            polite_ok, 22,
            "round {round}: the cap is 25, the greedy user took 3"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_abandoned_mid_flight_are_all_or_nothing_and_hold_nothing_back() {
    let server = TestServer::start(CONFIG).await;
    let clients = clients(&server, 4).await;
    for round in 0..30 {
        server.clock.advance(Duration::from_secs(86_400));
        let (a, b) = (format!("a-{round}"), format!("b-{round}"));
        let pair = || {
            request(
                "ai",
                vec![descriptor(&[("client", &a)]), descriptor(&[("client", &b)])],
            )
        };
        // Calls on two keys at once, abandoned at arbitrary points of their flight.
        let mut calls = JoinSet::new();
        for i in 0..16 {
            let mut client = clients[i % clients.len()].clone();
            let request = pair();
            calls.spawn(async move { client.should_rate_limit(request).await });
        }
        for _ in 0..(round % 5) {
            tokio::task::yield_now().await;
        }
        calls.abort_all();
        while calls.join_next().await.is_some() {}

        // Each abandoned call counted on both keys or on neither, never on one: a probe of
        // both in one call (one atomic turn) sees the same count on each.
        let mut probe = pair();
        for d in &mut probe.descriptors {
            d.hits_addend = Some(0);
        }
        let statuses = server.ask(probe).await.statuses;
        assert_eq!(
            statuses[0].limit_remaining, statuses[1].limit_remaining,
            "round {round}"
        );
        // And nothing is reserved or held back: what a probe sees can be spent, exactly,
        // by one call that asks for all of it.
        let left = statuses[0].limit_remaining;
        if left > 0 {
            let all = request(
                "ai",
                vec![with_hits(descriptor(&[("client", &a)]), u64::from(left))],
            );
            let answer = server.ask(all).await;
            // Abandoned calls may still land in between; if one did, it took units first.
            if overall(&answer) == Code::Ok {
                assert_eq!(answer.statuses[0].limit_remaining, 0, "round {round}");
            }
        }
    }
}
