//! The engine alone under real threads, many rounds: exactly K, all or nothing, and memory
//! that follows the active keys.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use prometheus_client::registry::Registry;

use tollgate::clock::ManualClock;
use tollgate::config::{LoadOptions, load::load_sources};
use tollgate::engine::{Call, CallDescriptor, Code, Engine, EngineOptions};

const CONFIG: &str = r#"
domain: d
global:
  - {name: cap, unit: minute, requests_per_unit: 50}
descriptors:
  - key: k
    rate_limit: {unit: minute, requests_per_unit: 7}
  - key: a
    rate_limit: {unit: minute, requests_per_unit: 1000}
  - key: b
    rate_limit: {unit: minute, requests_per_unit: 5}
"#;

/// A domain with no fail-closed limit at all.
const OPEN: &str = r#"
domain: open
descriptors:
  - key: a
    rate_limit: {unit: minute, requests_per_unit: 1000}
"#;

fn engine(options: EngineOptions) -> (Arc<Engine>, Arc<ManualClock>) {
    let config = load_sources(
        &[
            ("t.yaml".into(), CONFIG.into()),
            ("open.yaml".into(), OPEN.into()),
        ],
        &LoadOptions::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let clock = ManualClock::new(Duration::from_secs(1_800_000_000));
    (Arc::new(Engine::new(config, clock.clone(), options)), clock)
}

fn call<'a>(descriptors: &[&[(&'a str, &'a str)]]) -> Call<'a> {
    Call {
        domain: "d",
        descriptors: descriptors
            .iter()
            .map(|entries| CallDescriptor {
                entries: entries.to_vec(),
                ..Default::default()
            })
            .collect(),
        hits: 0,
    }
}

/// Runs `per_thread` calls on each of `threads` threads, all released at once; returns OKs.
fn race(engine: &Arc<Engine>, threads: usize, per_thread: usize, key: &str, value: &str) -> usize {
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (engine, barrier) = (engine.clone(), barrier.clone());
            let (key, value) = (key.to_owned(), value.to_owned());
            thread::spawn(move || {
                barrier.wait();
                (0..per_thread)
                    .filter(|_| {
                        let decision = engine
                            .should_rate_limit(&call(&[&[(&key, &value)]]))
                            .expect("no internal failure");
                        decision.code == Code::Ok
                    })
                    .count()
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().expect("thread")).sum()
}

#[test]
fn exactly_k_per_key_over_many_rounds_of_threads() {
    let (engine, clock) = engine(EngineOptions::default());
    for round in 0..500 {
        clock.advance(Duration::from_secs(60));
        let ok = race(&engine, 4, 5, "k", &format!("v{round}"));
        assert_eq!(ok, 7, "round {round}");
    }
}

#[test]
fn exactly_the_global_cap_over_many_rounds_of_threads() {
    let (engine, clock) = engine(EngineOptions::default());
    for round in 0..300 {
        clock.advance(Duration::from_secs(60));
        // Key `a` allows 1000 a minute: only the cap of 50 binds.
        let ok = race(&engine, 4, 30, "a", &format!("v{round}"));
        assert_eq!(ok, 50, "round {round}");
    }
}

#[test]
fn all_or_nothing_across_descriptors_under_threads() {
    let (engine, clock) = engine(EngineOptions::default());
    for round in 0..300 {
        clock.advance(Duration::from_secs(60));
        let (va, vb) = (format!("a{round}"), format!("b{round}"));
        let barrier = Arc::new(Barrier::new(4));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let (engine, barrier) = (engine.clone(), barrier.clone());
                let (va, vb) = (va.clone(), vb.clone());
                thread::spawn(move || {
                    barrier.wait();
                    (0..10)
                        .filter(|_| {
                            let c = call(&[&[("a", &va)], &[("b", &vb)]]);
                            engine.should_rate_limit(&c).expect("decided").code == Code::Ok
                        })
                        .count()
                })
            })
            .collect();
        let ok: usize = handles.into_iter().map(|h| h.join().expect("thread")).sum();
        assert_eq!(ok, 5, "round {round}: b allows 5");
        // `a` was charged only by the 5 committed calls, not by the 35 denied ones.
        let probe = Call {
            descriptors: vec![CallDescriptor {
                entries: vec![("a", &va)],
                hits: Some(0),
                ..Default::default()
            }]
            .into(),
            ..call(&[])
        };
        let status = &engine.should_rate_limit(&probe).expect("decided").statuses[0];
        assert_eq!(status.limit_remaining, 995, "round {round}");
    }
}

#[test]
fn memory_follows_the_active_keys() {
    let (engine, clock) = engine(EngineOptions::default());
    for i in 0..1_000 {
        let value = format!("v{i}");
        let open = Call {
            domain: "open",
            ..call(&[&[("a", &value)]])
        };
        assert_eq!(
            engine.should_rate_limit(&open).expect("decided").code,
            Code::Ok
        );
    }
    assert_eq!(engine.counters(), 1_000);
    // Within the window nothing is dropped; once it has ended, everything is.
    clock.advance(Duration::from_secs(59));
    assert_eq!(engine.sweep(), 0);
    clock.advance(Duration::from_secs(1));
    assert_eq!(engine.sweep(), 1_000);
    assert_eq!(engine.counters(), 0);
}

#[test]
fn a_full_key_table_fails_closed_or_unavailable_and_frees_up_when_windows_end() {
    let options = EngineOptions {
        shards: 1,
        max_keys: 10,
        ..Default::default()
    };
    let (engine, clock) = engine(options);
    for i in 0..10 {
        let value = format!("v{i}");
        engine
            .should_rate_limit(&call(&[&[("a", &value)]]))
            .expect("room");
    }
    // No fail-closed limit on `a`, but the global cap is fail-closed: the call is denied.
    let decision = engine
        .should_rate_limit(&call(&[&[("a", "one-too-many")]]))
        .expect("a fail-closed cap turns the failure into a denial");
    assert_eq!(decision.code, Code::OverLimit);
    // Where no limit is fail-closed, the failure is an error (gRPC UNAVAILABLE at the edge).
    let open = Call {
        domain: "open",
        ..call(&[&[("a", "one-too-many")]])
    };
    assert!(engine.should_rate_limit(&open).is_err());
    clock.advance(Duration::from_secs(60));
    let decision = engine
        .should_rate_limit(&call(&[&[("a", "one-too-many")]]))
        .expect("expired windows made room");
    assert_eq!(decision.code, Code::Ok);
}

/// The value of one series as `/metrics` renders `registry` (0 when absent).
fn series(registry: &Registry, series: &str) -> u64 {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).expect("the registry encodes");
    let prefix = format!("{series} ");
    text.lines()
        .find_map(|line| line.strip_prefix(prefix.as_str()))
        .map_or(0, |value| value.parse().expect("a count"))
}

#[test]
fn metrics_count_every_decision_of_many_threads_while_being_read() {
    // Many threads count on one domain and one rule at once, and reads of /metrics move the
    // rule counts out of the loaded config while calls add to them: none may be lost or
    // counted twice.
    let (engine, clock) = engine(EngineOptions::default());
    let mut registry = Registry::default();
    engine.register_metrics(&mut registry);
    let rounds = 150;
    let done = AtomicBool::new(false);
    thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                series(&registry, "tollgate_decisions_total");
            }
        });
        for round in 0..rounds {
            clock.advance(Duration::from_secs(60));
            // 20 threads x 30 calls on key `a`: the domain's cap of 50 lets 50 through.
            assert_eq!(race(&engine, 20, 30, "a", &format!("v{round}")), 50);
        }
        done.store(true, Ordering::Relaxed);
    });
    let (ok, over) = (50 * rounds, 550 * rounds);
    let decisions = |outcome: &str| {
        series(
            &registry,
            &format!(r#"tollgate_decisions_total{{domain="d",outcome="{outcome}"}}"#),
        )
    };
    let rule = |outcome: &str| {
        series(
            &registry,
            &format!(r#"tollgate_rule_decisions_total{{rule="d.a",outcome="{outcome}"}}"#),
        )
    };
    assert_eq!(decisions("ok"), ok);
    assert_eq!(decisions("over_limit"), over);
    assert_eq!(rule("ok"), ok);
    assert_eq!(rule("over_limit"), over);
}
