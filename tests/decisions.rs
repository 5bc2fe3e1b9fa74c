//! Every row of DESIGN.md's decision rules table, through the real gRPC transport.

mod common;

use std::time::Duration;

use common::*;
use tollgate::engine::{EngineOptions, UnknownDomain};
use tollgate::proto::envoy::r#type::v3::RateLimitUnit;
use tollgate::proto::rate_limit_response::{Code, rate_limit::Unit};
use tollgate::server::ServeOptions;

const RULES: &str = r#"
domain: shop
descriptors:
  - key: client
    rate_limit: {name: per-client, unit: minute, requests_per_unit: 3}
  - key: zero
    rate_limit: {unit: minute, requests_per_unit: 0}
  - key: shadow
    shadow_mode: true
    rate_limit: {name: shadowed, unit: minute, requests_per_unit: 2}
  - key: postpaid
    rate_limit: {name: tokens, unit: day, requests_per_unit: 100, postpaid: true}
  - key: free
    rate_limit: {unlimited: true}
  - key: old
    rate_limit: {name: old-limit, unit: minute, requests_per_unit: 1}
  - key: new
    rate_limit:
      name: new-limit
      unit: minute
      requests_per_unit: 5
      replaces: [{name: old-limit}]
  - key: plan
    value: gold
    descriptors:
      - key: user
        rate_limit: {unit: second, requests_per_unit: 10}
  - key: both
    rate_limits:
      - {name: both-minute, unit: minute, requests_per_unit: 5}
      - {name: both-hour, unit: hour, requests_per_unit: 2}
  - key: week
    rate_limit: {unit: week, requests_per_unit: 1}
  - key: path
    value: "files/*"
    share_threshold: true
    rate_limit: {unit: minute, requests_per_unit: 2}
  - key: each
    value: "each/*"
    rate_limit: {unit: minute, requests_per_unit: 1}
"#;

const GLOBAL: &str = r#"
domain: ai
global:
  - {name: service-day, unit: day, requests_per_unit: 3}
descriptors:
  - key: client
    rate_limit: {name: per-client, unit: minute, requests_per_unit: 2}
  - key: tokens
    rate_limit: {name: tokens-day, unit: day, requests_per_unit: 1000}
"#;

#[tokio::test]
async fn enforced_limits_count_until_the_limit_then_deny_with_honest_feedback() {
    let server = TestServer::start(RULES).await;
    for left in [2, 1, 0] {
        let r = server.ask(simple("shop", "client", "a")).await;
        assert_eq!(overall(&r), Code::Ok);
        let s = &r.statuses[0];
        assert_eq!(code(s), Code::Ok);
        assert_eq!(s.limit_remaining, left);
        let limit = s.current_limit.as_ref().unwrap();
        assert_eq!(
            (limit.name.as_str(), limit.requests_per_unit, limit.unit),
            ("per-client", 3, Unit::Minute as i32)
        );
        assert_eq!(reset_secs(s), Some(60.0));
    }
    server.clock.advance(Duration::from_millis(15_250));
    let r = server.ask(simple("shop", "client", "a")).await;
    assert_eq!(overall(&r), Code::OverLimit);
    assert_eq!(code(&r.statuses[0]), Code::OverLimit);
    assert_eq!(r.statuses[0].limit_remaining, 0);
    assert_eq!(reset_secs(&r.statuses[0]), Some(44.75));
    // Another client has its own counter.
    assert_eq!(
        server.code_of(simple("shop", "client", "b")).await,
        Code::Ok
    );
    // The next window starts afresh.
    server.clock.advance(Duration::from_secs(45));
    let r = server.ask(simple("shop", "client", "a")).await;
    assert_eq!(overall(&r), Code::Ok);
    assert_eq!(r.statuses[0].limit_remaining, 2);
}

#[tokio::test]
async fn a_limit_of_zero_always_denies_with_no_reset() {
    let server = TestServer::start(RULES).await;
    let r = server.ask(simple("shop", "zero", "x")).await;
    assert_eq!(overall(&r), Code::OverLimit);
    assert_eq!(r.statuses[0].duration_until_reset, None);
    assert_eq!(r.statuses[0].limit_remaining, 0);
}

#[tokio::test]
async fn more_hits_than_the_limit_always_deny_and_count_nothing() {
    let server = TestServer::start(RULES).await;
    let r = server
        .ask(request(
            "shop",
            vec![with_hits(descriptor(&[("client", "a")]), 4)],
        ))
        .await;
    assert_eq!(overall(&r), Code::OverLimit);
    assert_eq!(r.statuses[0].duration_until_reset, None);
    let r = server
        .ask(request(
            "shop",
            vec![with_hits(descriptor(&[("client", "a")]), 3)],
        ))
        .await;
    assert_eq!(overall(&r), Code::Ok, "the denied call moved the counter");
    assert_eq!(r.statuses[0].limit_remaining, 0);
}

#[tokio::test]
async fn request_level_hits_count_and_zero_means_one() {
    let server = TestServer::start(RULES).await;
    let mut req = simple("shop", "client", "a");
    req.hits_addend = 2;
    assert_eq!(server.ask(req).await.statuses[0].limit_remaining, 1);
    let mut req = simple("shop", "client", "a");
    req.hits_addend = 0;
    assert_eq!(server.ask(req).await.statuses[0].limit_remaining, 0);
}

#[tokio::test]
async fn a_probe_checks_without_counting() {
    let server = TestServer::start(RULES).await;
    let probe = || request("shop", vec![with_hits(descriptor(&[("client", "a")]), 0)]);
    for _ in 0..5 {
        let r = server.ask(probe()).await;
        assert_eq!(overall(&r), Code::Ok);
        assert_eq!(r.statuses[0].limit_remaining, 3);
    }
    for _ in 0..3 {
        server.ask(simple("shop", "client", "a")).await;
    }
    let r = server.ask(probe()).await;
    assert_eq!(overall(&r), Code::OverLimit);
    assert_eq!(r.statuses[0].limit_remaining, 0);
}

#[tokio::test]
async fn a_refund_gives_budget_back_never_below_zero_and_never_denies() {
    let server = TestServer::start(RULES).await;
    for _ in 0..3 {
        server.ask(simple("shop", "client", "a")).await;
    }
    let r = server
        .ask(request(
            "shop",
            vec![refund(descriptor(&[("client", "a")]), 2)],
        ))
        .await;
    assert_eq!(overall(&r), Code::Ok);
    assert_eq!(r.statuses[0].limit_remaining, 2);
    let r = server
        .ask(request(
            "shop",
            vec![refund(descriptor(&[("client", "a")]), 50)],
        ))
        .await;
    assert_eq!(
        r.statuses[0].limit_remaining, 3,
        "clamped at a count of zero"
    );
    // A refund on a counter that does not exist creates nothing and does not deny.
    let r = server
        .ask(request(
            "shop",
            vec![refund(descriptor(&[("client", "new")]), 5)],
        ))
        .await;
    assert_eq!(overall(&r), Code::Ok);
    assert_eq!(r.statuses[0].limit_remaining, 3);
}

#[tokio::test]
async fn a_shadow_limit_counts_past_its_limit_but_never_denies() {
    let server = TestServer::start(RULES).await;
    for expected in [1, 0, 0, 0] {
        let r = server.ask(simple("shop", "shadow", "x")).await;
        assert_eq!(overall(&r), Code::Ok);
        assert_eq!(code(&r.statuses[0]), Code::Ok);
        assert_eq!(r.statuses[0].limit_remaining, expected);
    }
    let metrics = reqwest::get(server.http_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("tollgate_shadow_denials_total{domain=\"shop\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_postpaid_limit_denies_only_once_reached_and_counts_past_it() {
    let server = TestServer::start(RULES).await;
    let spend = |hits| {
        request(
            "shop",
            vec![with_hits(descriptor(&[("postpaid", "u")]), hits)],
        )
    };
    let r = server.ask(spend(90)).await;
    assert_eq!((overall(&r), r.statuses[0].limit_remaining), (Code::Ok, 10));
    // 90 < 100: fits, and counts all 500.
    let r = server.ask(spend(500)).await;
    assert_eq!((overall(&r), r.statuses[0].limit_remaining), (Code::Ok, 0));
    let r = server.ask(spend(1)).await;
    assert_eq!(overall(&r), Code::OverLimit);
    let limit = r.statuses[0].current_limit.as_ref().unwrap();
    assert_eq!(limit.name, "tokens");
}

#[tokio::test]
async fn unlimited_is_ok_with_max_remaining_and_no_limit() {
    let server = TestServer::start(RULES).await;
    for _ in 0..10 {
        let r = server.ask(simple("shop", "free", "x")).await;
        assert_eq!(overall(&r), Code::Ok);
        assert_eq!(r.statuses[0].limit_remaining, u32::MAX);
        assert!(r.statuses[0].current_limit.is_none());
    }
}

#[tokio::test]
async fn a_replaced_limit_is_not_evaluated() {
    let server = TestServer::start(RULES).await;
    let both = || {
        request(
            "shop",
            vec![descriptor(&[("old", "x")]), descriptor(&[("new", "x")])],
        )
    };
    for left in [4, 3, 2] {
        let r = server.ask(both()).await;
        assert_eq!(overall(&r), Code::Ok);
        assert!(
            r.statuses[0].current_limit.is_none(),
            "old-limit was replaced"
        );
        assert_eq!(r.statuses[1].limit_remaining, left);
    }
    // Alone, the old limit applies (and was never counted above).
    let r = server.ask(simple("shop", "old", "x")).await;
    assert_eq!((overall(&r), r.statuses[0].limit_remaining), (Code::Ok, 0));
    assert_eq!(
        server.code_of(simple("shop", "old", "x")).await,
        Code::OverLimit
    );
}

#[tokio::test]
async fn a_descriptor_override_replaces_the_configured_limit() {
    let server = TestServer::start(RULES).await;
    let overridden = || {
        request(
            "shop",
            vec![with_override(
                descriptor(&[("client", "a")]),
                1,
                RateLimitUnit::Hour,
            )],
        )
    };
    let r = server.ask(overridden()).await;
    assert_eq!(overall(&r), Code::Ok);
    let limit = r.statuses[0].current_limit.as_ref().unwrap();
    assert_eq!(
        (limit.requests_per_unit, limit.unit),
        (1, Unit::Hour as i32)
    );
    assert_eq!(reset_secs(&r.statuses[0]), Some(3600.0));
    assert_eq!(server.code_of(overridden()).await, Code::OverLimit);
    // The configured limit's counter was not touched.
    assert_eq!(
        server.ask(simple("shop", "client", "a")).await.statuses[0].limit_remaining,
        2
    );
    // An override applies where no rule matched, in a known domain.
    let unmatched = request(
        "shop",
        vec![with_override(
            descriptor(&[("nothing", "here")]),
            1,
            RateLimitUnit::Minute,
        )],
    );
    assert_eq!(server.code_of(unmatched.clone()).await, Code::Ok);
    assert_eq!(server.code_of(unmatched).await, Code::OverLimit);
}

#[tokio::test]
async fn unmatched_descriptors_are_ok_with_no_limit() {
    let server = TestServer::start(RULES).await;
    for req in [
        simple("shop", "nobody", "x"),
        // A rule without a limit, and a request deeper than the rules.
        simple("shop", "plan", "gold"),
        request("shop", vec![descriptor(&[("client", "a"), ("more", "b")])]),
        request(
            "shop",
            vec![descriptor(&[("plan", "silver"), ("user", "u")])],
        ),
    ] {
        let r = server.ask(req).await;
        assert_eq!(overall(&r), Code::Ok);
        assert!(r.statuses[0].current_limit.is_none());
    }
    let r = server
        .ask(request(
            "shop",
            vec![descriptor(&[("plan", "gold"), ("user", "u")])],
        ))
        .await;
    assert_eq!(
        r.statuses[0]
            .current_limit
            .as_ref()
            .unwrap()
            .requests_per_unit,
        10
    );
}

#[tokio::test]
async fn several_limits_on_one_descriptor_must_all_fit() {
    let server = TestServer::start(RULES).await;
    let r = server.ask(simple("shop", "both", "x")).await;
    // Least remaining after counting: the hour limit (1 left) over the minute limit (4 left).
    let s = &r.statuses[0];
    assert_eq!(s.current_limit.as_ref().unwrap().name, "both-hour");
    assert_eq!(s.limit_remaining, 1);
    server.ask(simple("shop", "both", "x")).await;
    let r = server.ask(simple("shop", "both", "x")).await;
    assert_eq!(overall(&r), Code::OverLimit);
    assert_eq!(
        r.statuses[0].current_limit.as_ref().unwrap().name,
        "both-hour"
    );
    assert_eq!(reset_secs(&r.statuses[0]), Some(3600.0));
    // The denied call charged neither limit: the minute limit shows 2 used, not 3.
    let probe = request("shop", vec![with_hits(descriptor(&[("both", "x")]), 0)]);
    server.clock.advance(Duration::from_secs(3600));
    let r = server.ask(probe).await;
    assert_eq!(overall(&r), Code::Ok);
    assert_eq!(
        r.statuses[0].limit_remaining, 2,
        "a fresh hour: 2 of both-hour left"
    );
}

#[tokio::test]
async fn a_denied_call_reports_the_longest_wait_among_its_denying_limits() {
    let server = TestServer::start(RULES).await;
    let two = || {
        request(
            "shop",
            vec![descriptor(&[("client", "a")]), descriptor(&[("week", "w")])],
        )
    };
    assert_eq!(server.code_of(two()).await, Code::Ok);
    let r = server.ask(two()).await;
    assert_eq!(overall(&r), Code::OverLimit);
    // The week limit denies (the client limit still had room): statuses in request order.
    assert_eq!(code(&r.statuses[0]), Code::Ok);
    assert_eq!(
        r.statuses[0].limit_remaining, 2,
        "nothing counted on a denied call"
    );
    assert_eq!(code(&r.statuses[1]), Code::OverLimit);
    // T0 is a Saturday 00:00 UTC (day 20834; day 0 was a Thursday): the epoch-aligned week
    // started on Thursday and ends in 5 days.
    assert_eq!(reset_secs(&r.statuses[1]), Some(5.0 * 86_400.0));
}

#[tokio::test]
async fn share_threshold_makes_every_matching_value_share_one_counter() {
    let server = TestServer::start(RULES).await;
    assert_eq!(
        server.code_of(simple("shop", "path", "files/a")).await,
        Code::Ok
    );
    assert_eq!(
        server.code_of(simple("shop", "path", "files/b")).await,
        Code::Ok
    );
    assert_eq!(
        server.code_of(simple("shop", "path", "files/c")).await,
        Code::OverLimit
    );
    // Without share_threshold, each value has its own counter.
    for value in ["each/a", "each/b", "each/c"] {
        assert_eq!(
            server.code_of(simple("shop", "each", value)).await,
            Code::Ok
        );
    }
}

#[tokio::test]
async fn a_global_cap_counts_every_call_once_and_denies_for_everyone() {
    let server = TestServer::start(GLOBAL).await;
    for client in ["a", "b", "c"] {
        let r = server.ask(simple("ai", "client", client)).await;
        assert_eq!(overall(&r), Code::Ok);
        // The cap has no status slot: statuses report the client's own limit.
        assert_eq!(
            r.statuses[0].current_limit.as_ref().unwrap().name,
            "per-client"
        );
    }
    server.clock.advance(Duration::from_secs(30));
    let r = server
        .ask(request(
            "ai",
            vec![
                descriptor(&[("client", "d")]),
                descriptor(&[("tokens", "d")]),
            ],
        ))
        .await;
    assert_eq!(overall(&r), Code::OverLimit);
    for s in &r.statuses {
        assert_eq!(code(s), Code::OverLimit);
        assert_eq!(s.limit_remaining, 0);
        assert!(reset_secs(s).unwrap() >= 86_400.0 - 30.0);
        // Never the cap's volume.
        assert_ne!(
            s.current_limit.as_ref().map(|l| l.requests_per_unit),
            Some(3)
        );
    }
    let metadata = r
        .dynamic_metadata
        .expect("the cap's name is in dynamic metadata");
    let name = metadata.fields.values().next().and_then(|v| v.kind.clone());
    assert_eq!(
        name,
        Some(prost_types::value::Kind::StringValue("service-day".into()))
    );
}

#[tokio::test]
async fn a_client_over_its_own_limit_does_not_burn_the_global_budget() {
    let server = TestServer::start(GLOBAL).await;
    for _ in 0..2 {
        assert_eq!(
            server.code_of(simple("ai", "client", "greedy")).await,
            Code::Ok
        );
    }
    for _ in 0..20 {
        assert_eq!(
            server.code_of(simple("ai", "client", "greedy")).await,
            Code::OverLimit
        );
    }
    // One unit of the cap of 3 is left for everybody else.
    assert_eq!(
        server.code_of(simple("ai", "client", "polite")).await,
        Code::Ok
    );
    assert_eq!(
        server.code_of(simple("ai", "client", "late")).await,
        Code::OverLimit
    );
}

#[tokio::test]
async fn probes_and_refunds_do_not_spend_the_global_cap() {
    let server = TestServer::start(GLOBAL).await;
    for _ in 0..5 {
        let probe = request("ai", vec![with_hits(descriptor(&[("tokens", "a")]), 0)]);
        assert_eq!(server.code_of(probe).await, Code::Ok);
        let back = request("ai", vec![refund(descriptor(&[("tokens", "a")]), 10)]);
        assert_eq!(server.code_of(back).await, Code::Ok);
    }
    for client in ["a", "b", "c"] {
        assert_eq!(
            server.code_of(simple("ai", "client", client)).await,
            Code::Ok
        );
    }
    assert_eq!(
        server.code_of(simple("ai", "client", "d")).await,
        Code::OverLimit
    );
    // With the cap spent, a probe is denied but a refund still goes through.
    let probe = request("ai", vec![with_hits(descriptor(&[("tokens", "a")]), 0)]);
    assert_eq!(server.code_of(probe).await, Code::OverLimit);
    let back = request("ai", vec![refund(descriptor(&[("tokens", "a")]), 10)]);
    assert_eq!(server.code_of(back).await, Code::Ok);
}

#[tokio::test]
async fn the_global_cap_counts_request_hits_not_descriptor_hits() {
    let server = TestServer::start(GLOBAL).await;
    // 500 tokens on the descriptor, one call on the cap.
    let spend = request("ai", vec![with_hits(descriptor(&[("tokens", "a")]), 500)]);
    assert_eq!(server.code_of(spend).await, Code::Ok);
    for client in ["a", "b"] {
        assert_eq!(
            server.code_of(simple("ai", "client", client)).await,
            Code::Ok
        );
    }
    assert_eq!(
        server.code_of(simple("ai", "client", "c")).await,
        Code::OverLimit
    );
}

#[tokio::test]
async fn unknown_domains_are_allowed_by_default_and_denied_when_asked() {
    let server = TestServer::start(RULES).await;
    let r = server.ask(simple("nope", "client", "a")).await;
    assert_eq!(overall(&r), Code::Ok);
    assert!(r.statuses[0].current_limit.is_none());
    let metrics = reqwest::get(server.http_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("tollgate_unknown_domain_total 1"),
        "{metrics}"
    );

    let options = ServeOptions {
        engine: EngineOptions {
            unknown_domain: UnknownDomain::Deny,
            ..Default::default()
        },
        ..Default::default()
    };
    let strict = TestServer::start_with(RULES, options).await;
    let r = strict.ask(simple("nope", "client", "a")).await;
    assert_eq!(overall(&r), Code::OverLimit);
    assert_eq!(code(&r.statuses[0]), Code::OverLimit);
}

#[tokio::test]
async fn service_wide_shadow_always_answers_ok_but_keeps_real_statuses() {
    let options = ServeOptions {
        engine: EngineOptions {
            shadow: true,
            ..Default::default()
        },
        ..Default::default()
    };
    let server = TestServer::start_with(RULES, options).await;
    for _ in 0..3 {
        server.ask(simple("shop", "client", "a")).await;
    }
    for _ in 0..5 {
        let r = server.ask(simple("shop", "client", "a")).await;
        assert_eq!(overall(&r), Code::Ok);
        assert_eq!(code(&r.statuses[0]), Code::OverLimit);
        assert_eq!(r.statuses[0].limit_remaining, 0);
    }
    // Counted as decided: the 5 calls decided OVER were not counted, so a refund of 1 leaves
    // 1 unit (had they counted, the count would be 8 and a refund of 1 would leave none).
    let r = server
        .ask(request(
            "shop",
            vec![refund(descriptor(&[("client", "a")]), 1)],
        ))
        .await;
    assert_eq!(r.statuses[0].limit_remaining, 1);
}

#[tokio::test]
async fn a_full_key_table_is_unavailable_over_the_wire_unless_a_limit_fails_closed() {
    let options = ServeOptions {
        engine: EngineOptions {
            shards: 1,
            max_keys: 1,
            ..Default::default()
        },
        ..Default::default()
    };
    let server = TestServer::start_with(RULES, options).await;
    assert_eq!(
        server.code_of(simple("shop", "client", "a")).await,
        Code::Ok
    );
    let status = server
        .client()
        .await
        .should_rate_limit(simple("shop", "client", "b"))
        .await
        .expect_err("no room for a second key");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    // The key already tracked is still decided.
    assert_eq!(
        server.code_of(simple("shop", "client", "a")).await,
        Code::Ok
    );
}

#[tokio::test]
async fn a_denied_call_keeps_its_refund_of_a_key_it_also_charges() {
    let server = TestServer::start(RULES).await;
    for _ in 0..2 {
        server.ask(simple("shop", "client", "a")).await;
    }
    let r = server
        .ask(request(
            "shop",
            vec![
                with_hits(descriptor(&[("client", "a")]), 1),
                refund(descriptor(&[("client", "a")]), 2),
                descriptor(&[("zero", "z")]),
            ],
        ))
        .await;
    assert_eq!(overall(&r), Code::OverLimit);
    // The refund of 2 applied to the stored 2; the charge of the denied call did not.
    let probe = request("shop", vec![with_hits(descriptor(&[("client", "a")]), 0)]);
    assert_eq!(server.ask(probe).await.statuses[0].limit_remaining, 3);
}

#[tokio::test]
async fn statuses_follow_the_request_order_and_are_never_unknown() {
    let server = TestServer::start(RULES).await;
    let r = server
        .ask(request(
            "shop",
            vec![
                descriptor(&[("free", "x")]),
                descriptor(&[("client", "a")]),
                descriptor(&[("nobody", "x")]),
                descriptor(&[("both", "x")]),
            ],
        ))
        .await;
    assert_eq!(r.statuses.len(), 4);
    assert_eq!(r.statuses[0].limit_remaining, u32::MAX);
    assert_eq!(
        r.statuses[1].current_limit.as_ref().unwrap().name,
        "per-client"
    );
    assert!(r.statuses[2].current_limit.is_none());
    assert_eq!(
        r.statuses[3].current_limit.as_ref().unwrap().name,
        "both-hour"
    );
    assert!(r.statuses.iter().all(|s| s.code != Code::Unknown as i32));
    assert_ne!(r.overall_code, Code::Unknown as i32);
}
