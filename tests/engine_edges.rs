//! The engine's edge cases: the same key twice in one call, refunds in denied calls, clocks
//! that step back, and a full key table (fail closed, UNAVAILABLE, shadow, refunds, bounds).

use std::sync::Arc;
use std::time::Duration;

use tollgate::clock::ManualClock;
use tollgate::config::{LoadOptions, load::load_sources};
use tollgate::engine::{Call, CallDescriptor, Code, Engine, EngineOptions};

const CONFIG: &str = r#"
domain: d
descriptors:
  - key: k
    rate_limit: {name: k-minute, unit: minute, requests_per_unit: 10}
  - key: zero
    rate_limit: {unit: minute, requests_per_unit: 0}
  - key: shadow
    shadow_mode: true
    rate_limit: {unit: minute, requests_per_unit: 10}
  - key: closed
    rate_limit: {unit: minute, requests_per_unit: 10, fail: closed}
"#;

const T0: Duration = Duration::from_secs(1_800_000_000);

fn engine(options: EngineOptions) -> (Engine, Arc<ManualClock>) {
    let config = load_sources(&[("d.yaml".into(), CONFIG.into())], &LoadOptions::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let clock = ManualClock::new(T0);
    (Engine::new(config, clock.clone(), options), clock)
}

fn small_table() -> EngineOptions {
    EngineOptions {
        shards: 1,
        max_keys: 2,
        ..Default::default()
    }
}

fn charge<'a>(key: &'a str, value: &'a str, hits: u64) -> CallDescriptor<'a> {
    CallDescriptor {
        entries: vec![(key, value)],
        hits: Some(hits),
        ..Default::default()
    }
}

fn refund<'a>(key: &'a str, value: &'a str, hits: u64) -> CallDescriptor<'a> {
    CallDescriptor {
        refund: true,
        ..charge(key, value, hits)
    }
}

fn probe<'a>(key: &'a str, value: &'a str) -> CallDescriptor<'a> {
    charge(key, value, 0)
}

fn call(descriptors: Vec<CallDescriptor<'_>>) -> Call<'_> {
    Call {
        domain: "d",
        descriptors: descriptors.into(),
        hits: 0,
    }
}

/// What `key=value` has left, by a probe.
fn left(engine: &Engine, key: &str, value: &str) -> u32 {
    let decision = engine
        .should_rate_limit(&call(vec![probe(key, value)]))
        .expect("decided");
    decision.statuses[0].limit_remaining
}

#[test]
fn a_denied_call_commits_its_refunds_but_not_its_charges() {
    let (engine, _) = engine(EngineOptions::default());
    engine
        .should_rate_limit(&call(vec![charge("k", "a", 3)]))
        .expect("decided");
    // Charge 5 and refund 2 on k, and a limit of zero that denies the call.
    let decision = engine
        .should_rate_limit(&call(vec![
            charge("k", "a", 5),
            refund("k", "a", 2),
            charge("zero", "z", 1),
        ]))
        .expect("decided");
    assert_eq!(decision.code, Code::OverLimit);
    // The refund went through over the stored 3, the charge did not: 1 used, 9 left.
    assert_eq!(left(&engine, "k", "a"), 9);
    assert_eq!(decision.statuses[1].limit_remaining, 9);
}

#[test]
fn the_same_key_twice_in_a_call_counts_twice_and_reports_the_final_count() {
    let (engine, _) = engine(EngineOptions::default());
    let decision = engine
        .should_rate_limit(&call(vec![charge("k", "a", 2), charge("k", "a", 3)]))
        .expect("decided");
    assert_eq!(decision.code, Code::Ok);
    assert_eq!(decision.statuses[0].limit_remaining, 5);
    assert_eq!(decision.statuses[1].limit_remaining, 5);
    // Together more than the limit can ever hold: denied, with no reset worth waiting for.
    let decision = engine
        .should_rate_limit(&call(vec![charge("k", "b", 6), charge("k", "b", 6)]))
        .expect("decided");
    assert_eq!(decision.code, Code::OverLimit);
    assert_eq!(decision.statuses[1].duration_until_reset, None);
    assert_eq!(left(&engine, "k", "b"), 10, "nothing counted");
}

#[test]
fn values_of_every_length_count_apart() {
    let (engine, _) = engine(EngineOptions::default());
    // Short keys sit in the counter's table slot, long ones on the heap (here from a value of
    // 37 bytes: the key is the value and 10 bytes), and string lengths past 127 take two
    // bytes in a key: no value may share a counter with another, whatever its length.
    let values: Vec<String> = [0, 1, 35, 36, 37, 38, 127, 128, 300, 1000]
        .iter()
        .map(|&n| "v".repeat(n))
        .collect();
    for (i, value) in values.iter().enumerate() {
        let hits = i as u64 + 1;
        let decision = engine
            .should_rate_limit(&call(vec![charge("k", value, hits)]))
            .expect("decided");
        assert_eq!(decision.code, Code::Ok);
        assert_eq!(decision.statuses[0].limit_remaining as u64, 10 - hits);
    }
    for (i, value) in values.iter().enumerate() {
        assert_eq!(
            left(&engine, "k", value) as u64,
            10 - (i as u64 + 1),
            "value of {} bytes",
            value.len()
        );
    }
}

#[test]
fn a_refund_of_zero_is_a_no_op_that_never_denies() {
    let (engine, _) = engine(EngineOptions::default());
    engine
        .should_rate_limit(&call(vec![charge("k", "a", 10)]))
        .expect("decided");
    let decision = engine
        .should_rate_limit(&call(vec![refund("k", "a", 0)]))
        .expect("decided");
    assert_eq!(decision.code, Code::Ok);
    assert_eq!(left(&engine, "k", "a"), 0);
}

#[test]
fn a_clock_that_steps_back_never_erases_the_current_window() {
    let (engine, clock) = engine(EngineOptions::default());
    clock.set(T0 + Duration::from_secs(60));
    engine
        .should_rate_limit(&call(vec![charge("k", "a", 3)]))
        .expect("decided");
    // A step back into the previous minute: the newer window is still the one counted in.
    clock.set(T0 + Duration::from_millis(59_999));
    let decision = engine
        .should_rate_limit(&call(vec![charge("k", "a", 1)]))
        .expect("decided");
    assert_eq!(decision.statuses[0].limit_remaining, 6);
    clock.set(T0 + Duration::from_millis(60_500));
    assert_eq!(left(&engine, "k", "a"), 6);
}

#[test]
fn a_full_table_fails_closed_only_where_a_limit_says_so() {
    let (engine, _) = engine(small_table());
    for value in ["a", "b"] {
        engine
            .should_rate_limit(&call(vec![charge("k", value, 1)]))
            .expect("room");
    }
    // `fail: closed`: a denial. Otherwise: an error, which the gRPC edge makes UNAVAILABLE.
    let closed = engine
        .should_rate_limit(&call(vec![charge("closed", "c", 1)]))
        .expect("denial");
    assert_eq!(closed.code, Code::OverLimit);
    assert!(
        engine
            .should_rate_limit(&call(vec![charge("k", "c", 1)]))
            .is_err()
    );
    // Existing keys still work.
    assert_eq!(
        engine
            .should_rate_limit(&call(vec![charge("k", "a", 1)]))
            .expect("room")
            .code,
        Code::Ok
    );
}

#[test]
fn a_probe_or_refund_before_a_charge_on_a_new_key_still_needs_room() {
    let (engine, clock) = engine(small_table());
    for value in ["a", "b"] {
        engine
            .should_rate_limit(&call(vec![charge("k", value, 1)]))
            .expect("room");
    }
    // The same new key probed or refunded first, then charged, in one call: the charge
    // creates the key, so it needs room the full table does not have.
    for value in ["c", "d", "e"] {
        for first in [probe("k", value), refund("k", value, 1)] {
            let sneaky = call(vec![first, charge("k", value, 1)]);
            assert!(engine.should_rate_limit(&sneaky).is_err(), "k={value}");
            assert_eq!(engine.counters(), 2, "the bound holds (k={value})");
        }
    }
    // Counters whose window has ended are swept to make room for new ones, and still count
    // against the bound until then.
    clock.advance(Duration::from_secs(60));
    let both = call(vec![charge("k", "a", 1), charge("k", "c", 1)]);
    assert_eq!(
        engine.should_rate_limit(&both).expect("room").code,
        Code::Ok
    );
    assert!(engine.counters() <= 2, "{} counters", engine.counters());
}

#[test]
fn service_wide_shadow_answers_ok_even_when_the_table_is_full() {
    let options = EngineOptions {
        shadow: true,
        ..small_table()
    };
    let (engine, _) = engine(options);
    for value in ["a", "b"] {
        engine
            .should_rate_limit(&call(vec![charge("k", value, 1)]))
            .expect("room");
    }
    let decision = engine
        .should_rate_limit(&call(vec![charge("k", "c", 1)]))
        .expect("OK");
    assert_eq!(decision.code, Code::Ok);
}

#[test]
fn a_shadow_limit_never_fails_a_call_for_want_of_room() {
    let (engine, _) = engine(small_table());
    for value in ["a", "b"] {
        engine
            .should_rate_limit(&call(vec![charge("k", value, 1)]))
            .expect("room");
    }
    let decision = engine
        .should_rate_limit(&call(vec![charge("shadow", "s", 1)]))
        .expect("a shadow limit does not need room");
    assert_eq!(decision.code, Code::Ok);
    assert_eq!(engine.counters(), 2, "and it created no counter");
}

#[test]
fn refunds_go_through_even_when_the_call_cannot_find_room() {
    let (engine, _) = engine(small_table());
    engine
        .should_rate_limit(&call(vec![charge("k", "a", 5)]))
        .expect("room");
    engine
        .should_rate_limit(&call(vec![charge("k", "b", 1)]))
        .expect("room");
    let failed = engine.should_rate_limit(&call(vec![refund("k", "a", 4), charge("k", "c", 1)]));
    assert!(failed.is_err(), "no room for k=c");
    assert_eq!(left(&engine, "k", "a"), 9, "the refund of 4 was kept");
}

#[test]
fn one_call_cannot_push_the_table_past_its_bound() {
    let (engine, _) = engine(small_table());
    let values = ["1", "2", "3", "4", "5", "6"];
    let descriptors = values.iter().map(|v| charge("k", v, 1)).collect();
    assert!(engine.should_rate_limit(&call(descriptors)).is_err());
    assert_eq!(engine.counters(), 0, "all or nothing: no key was added");
    let two = values[..2].iter().map(|v| charge("k", v, 1)).collect();
    assert_eq!(
        engine.should_rate_limit(&call(two)).expect("room").code,
        Code::Ok
    );
    assert_eq!(engine.counters(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_sweeper_drops_expired_counters_on_its_interval() {
    let (engine, clock) = engine(EngineOptions::default());
    let engine = Arc::new(engine);
    for value in ["a", "b", "c"] {
        engine
            .should_rate_limit(&call(vec![charge("k", value, 1)]))
            .expect("decided");
    }
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let sweeper = tokio::spawn({
        let engine = engine.clone();
        async move {
            engine
                .run_sweeper(Duration::from_secs(10), async {
                    let _ = stopped.await;
                })
                .await
        }
    });
    // Ticks while the windows are live drop nothing.
    tokio::time::advance(Duration::from_secs(25)).await;
    tokio::task::yield_now().await;
    assert_eq!(engine.counters(), 3);
    // Once the windows have ended (manual clock), the next tick drops them.
    clock.advance(Duration::from_secs(60));
    tokio::time::advance(Duration::from_secs(10)).await;
    // The sweep yields between actors: let it run to its end (a bounded number of turns).
    for _ in 0..1_000 {
        if engine.counters() == 0 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(engine.counters(), 0);
    assert_eq!(engine.metrics().swept_counters.get(), 3);
    let _ = stop.send(());
    sweeper.await.expect("the sweeper stops on shutdown");
}
