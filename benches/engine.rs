//! Engine decisions per second, beside a baseline measured in the same run: a plain
//! single-threaded `HashMap` check-and-increment (no matching, no windows, no locks).
//! The figures that matter are the ratios; see the README's Performance section.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;
use tollgate::clock::ManualClock;
use tollgate::config::{LoadOptions, load::load_sources};
use tollgate::engine::{Call, CallDescriptor, Engine, EngineOptions};
use tollgate::proto::rate_limit_descriptor::Entry;
use tollgate::proto::{RateLimitDescriptor, RateLimitRequest};
use tollgate::wire::{EncodedResponse, RequestBounds, WireRequest, to_call};

const CONFIG: &str = r#"
domain: bench
global:
  - {name: service-day, unit: day, requests_per_unit: 4000000000}
descriptors:
  - key: client
    rate_limit: {unit: minute, requests_per_unit: 4000000000}
  - key: route
    rate_limit: {unit: minute, requests_per_unit: 4000000000}
  - key: model
    rate_limit: {unit: minute, requests_per_unit: 4000000000}
"#;

fn engine() -> Engine {
    let config = load_sources(
        &[("bench.yaml".into(), CONFIG.into())],
        &LoadOptions::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let clock = ManualClock::new(Duration::from_secs(1_800_000_000));
    Engine::new(config, clock, EngineOptions::default())
}

fn descriptor<'a>(key: &'a str, value: &'a str) -> CallDescriptor<'a> {
    CallDescriptor {
        entries: vec![(key, value)],
        ..Default::default()
    }
}

fn decisions(c: &mut Criterion) {
    let mut group = c.benchmark_group("decisions");
    group.throughput(Throughput::Elements(1));

    let mut baseline: HashMap<String, u64> = HashMap::new();
    group.bench_function("baseline_hashmap_check_and_increment", |b| {
        b.iter(|| {
            let count = baseline
                .entry(black_box("client=1.2.3.4").to_owned())
                .or_default();
            if *count < 4_000_000_000 {
                *count += 1;
            }
            black_box(*count)
        })
    });

    let one = engine();
    group.bench_function("engine_1_descriptor", |b| {
        b.iter(|| {
            let call = Call {
                domain: "bench",
                descriptors: vec![descriptor("client", black_box("1.2.3.4"))].into(),
                hits: 0,
            };
            black_box(one.should_rate_limit(&call).is_ok())
        })
    });

    let three = engine();
    group.bench_function("engine_3_descriptors_plus_global", |b| {
        b.iter(|| {
            let call = Call {
                domain: "bench",
                descriptors: vec![
                    descriptor("client", black_box("1.2.3.4")),
                    descriptor("route", black_box("/v1/chat/completions")),
                    descriptor("model", black_box("gpt-4o-mini")),
                ]
                .into(),
                hits: 0,
            };
            black_box(three.should_rate_limit(&call).is_ok())
        })
    });

    // The gRPC service's path: a request's bytes read in place, validated and lent to the engine
    // as they are (no copy of its descriptors), and the decision written as the wire answer's
    // bytes.
    let wire = engine();
    let request = RateLimitRequest {
        domain: "bench".into(),
        descriptors: [
            ("client", "1.2.3.4"),
            ("route", "/v1/chat/completions"),
            ("model", "gpt-4o-mini"),
        ]
        .iter()
        .map(|(key, value)| RateLimitDescriptor {
            entries: vec![Entry {
                key: (*key).into(),
                value: (*value).into(),
            }],
            ..Default::default()
        })
        .collect(),
        hits_addend: 0,
    }
    .encode_to_vec();
    let bounds = RequestBounds::default();
    group.bench_function("wire_3_descriptors_plus_global", |b| {
        b.iter(|| {
            let request =
                WireRequest::parse(black_box(&request), &bounds).unwrap_or_else(|e| panic!("{e}"));
            let call = to_call(&request, &bounds).unwrap_or_else(|e| panic!("{e}"));
            let answer = wire
                .should_rate_limit_with(&call, |decision| EncodedResponse::of(&decision))
                .unwrap_or_else(|e| panic!("{e}"));
            black_box(answer.as_bytes().len())
        })
    });

    // The same engine from several threads at once, for the 1-descriptor call on distinct keys.
    let shared = Arc::new(engine());
    group.bench_function("engine_1_descriptor_2_threads_distinct_keys", |b| {
        b.iter_custom(|iters| {
            let start = std::time::Instant::now();
            std::thread::scope(|s| {
                for t in 0..2 {
                    let shared = shared.clone();
                    s.spawn(move || {
                        let value = format!("client-{t}");
                        for _ in 0..iters / 2 {
                            let call = Call {
                                domain: "bench",
                                descriptors: vec![descriptor("client", &value)].into(),
                                hits: 0,
                            };
                            black_box(shared.should_rate_limit(&call).is_ok());
                        }
                    });
                }
            });
            start.elapsed()
        })
    });
    group.finish();
}

criterion_group!(benches, decisions);
criterion_main!(benches);
