//! The engine against a model: thousands of random calls (charges, probes, refunds, the
//! proxy's settlements (counted past every limit, no call of the global cap), several
//! descriptors, the same key twice, shadow and postpaid limits, a global cap, time passing)
//! decided by the engine and by a plain sequential model of DESIGN.md's decision table, which
//! must agree on every overall code and every status.

use std::collections::HashMap;
use std::time::Duration;

use tollgate::clock::ManualClock;
use tollgate::config::{LoadOptions, load::load_sources};
use tollgate::engine::{Call, CallDescriptor, Code, Decision, Engine, EngineOptions};

const CONFIG: &str = r#"
domain: m
global:
  - {name: cap, unit: minute, requests_per_unit: 20}
descriptors:
  - key: a
    rate_limit: {unit: minute, requests_per_unit: 5}
  - key: b
    rate_limit: {unit: minute, requests_per_unit: 3, postpaid: true}
  - key: s
    shadow_mode: true
    rate_limit: {unit: minute, requests_per_unit: 2}
"#;

/// Limits by key: (volume, postpaid, shadow).
fn limit_of(key: &str) -> (u64, bool, bool) {
    match key {
        "a" => (5, false, false),
        "b" => (3, true, false),
        _ => (2, false, true),
    }
}

const CAP: u64 = 20;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Charge(u64),
    Probe,
    Refund(u64),
    /// A cost already incurred (in-process callers only): counted whatever the limit says.
    Settle(u64),
}

/// A small deterministic generator (xorshift), so a failure replays exactly.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// The model: counts per counter, each tagged with the window it counts in.
#[derive(Default)]
struct Model {
    counts: HashMap<String, (u64, u64)>,
}

impl Model {
    fn stored(&self, key: &str, window: u64) -> u64 {
        match self.counts.get(key) {
            Some(&(w, c)) if w == window => c,
            _ => 0,
        }
    }

    /// (overall OK?, per descriptor (denied?, remaining)), committing as the table says.
    fn decide(&mut self, call: &[(String, Kind)], window: u64) -> (bool, Vec<(bool, u64)>) {
        // Decide every descriptor over the counts as earlier parts of the call leave them.
        let mut seen: HashMap<&str, u64> = HashMap::new();
        let mut denies = Vec::new();
        for (key, kind) in call {
            let (volume, postpaid, shadow) = limit_of(&key[..1]);
            let count = *seen.entry(key).or_insert_with(|| self.stored(key, window));
            let (fits, after) = match *kind {
                Kind::Charge(h) if postpaid => (count < volume, count + h),
                Kind::Charge(h) => (count + h <= volume, count + h),
                Kind::Probe => (count < volume, count),
                Kind::Refund(h) => (true, count.saturating_sub(h)),
                Kind::Settle(h) => (true, count + h),
            };
            seen.insert(key, after);
            denies.push(!fits && !shadow);
        }
        let charges = call.iter().any(|(_, k)| matches!(k, Kind::Charge(_)));
        let probes = call.iter().any(|(_, k)| *k == Kind::Probe);
        let global = self.stored("cap", window);
        let global_denies = (charges && global + 1 > CAP) || (!charges && probes && global >= CAP);
        let ok = !global_denies && !denies.iter().any(|&d| d);

        let before: HashMap<&str, u64> = call
            .iter()
            .map(|(k, _)| (k.as_str(), self.stored(k, window)))
            .collect();
        let mut refund_chain = before.clone();
        let mut refund_after = Vec::new();
        for (key, kind) in call {
            if let Kind::Refund(h) = kind {
                let c = refund_chain.get_mut(key.as_str()).expect("seen");
                *c = c.saturating_sub(*h);
                refund_after.push(Some(*c));
            } else {
                refund_after.push(None);
            }
        }
        if ok {
            for (key, count) in &seen {
                self.counts.insert((*key).to_owned(), (window, *count));
            }
            if charges {
                self.counts.insert("cap".into(), (window, global + 1));
            }
        } else {
            for (key, count) in &refund_chain {
                if before[key] != *count {
                    self.counts.insert((*key).to_owned(), (window, *count));
                }
            }
        }
        let statuses = call
            .iter()
            .zip(&denies)
            .zip(&refund_after)
            .map(|(((key, _), &denied), refunded)| {
                let (volume, _, _) = limit_of(&key[..1]);
                if global_denies || denied {
                    return (true, 0);
                }
                let count = match (ok, refunded) {
                    (true, _) => seen[key.as_str()],
                    (false, Some(c)) => *c,
                    (false, None) => before[key.as_str()],
                };
                (false, volume.saturating_sub(count))
            })
            .collect();
        (ok, statuses)
    }
}

fn random_call(rng: &mut Rng) -> Vec<(String, Kind)> {
    let n = 1 + rng.below(3);
    (0..n)
        .map(|_| {
            let key = match rng.below(6) {
                0..=2 => format!("a{}", rng.below(2)),
                3 | 4 => format!("b{}", rng.below(2)),
                _ => "s0".to_owned(),
            };
            let kind = match rng.below(11) {
                0..=5 => Kind::Charge(1 + rng.below(3)),
                6 | 7 => Kind::Probe,
                8 | 9 => Kind::Refund(1 + rng.below(2)),
                _ => Kind::Settle(1 + rng.below(4)),
            };
            (key, kind)
        })
        .collect()
}

fn engine_decides(engine: &Engine, call: &[(String, Kind)]) -> Decision {
    let descriptors: Vec<_> = call
        .iter()
        .map(|(key, kind)| CallDescriptor {
            entries: vec![(&key[..1], &key[1..])],
            hits: Some(match kind {
                Kind::Charge(h) | Kind::Refund(h) | Kind::Settle(h) => *h,
                Kind::Probe => 0,
            }),
            refund: matches!(kind, Kind::Refund(_)),
            settle: matches!(kind, Kind::Settle(_)),
            ..Default::default()
        })
        .collect();
    let call = Call {
        domain: "m",
        descriptors: descriptors.into(),
        hits: 0,
    };
    engine
        .should_rate_limit(&call)
        .expect("no internal failure")
}

#[test]
fn the_engine_agrees_with_the_model_on_thousands_of_random_calls() {
    let config = load_sources(&[("m.yaml".into(), CONFIG.into())], &LoadOptions::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let start = Duration::from_secs(1_800_000_000);
    let clock = ManualClock::new(start);
    let engine = Engine::new(config, clock.clone(), EngineOptions::default());
    let mut model = Model::default();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut now = start;
    for step in 0..20_000 {
        if rng.below(4) == 0 {
            now += Duration::from_millis(rng.below(20_000));
            clock.set(now);
        }
        let window = now.as_secs() / 60;
        let call = random_call(&mut rng);
        let decision = engine_decides(&engine, &call);
        let (ok, statuses) = model.decide(&call, window);
        let context = || format!("step {step}, call {call:?}, engine {decision:?}");
        assert_eq!(decision.code == Code::Ok, ok, "overall: {}", context());
        for (i, (status, (denied, remaining))) in decision.statuses.iter().zip(statuses).enumerate()
        {
            assert_eq!(
                status.code == Code::OverLimit,
                denied,
                "status {i} code: {}",
                context()
            );
            assert_eq!(
                u64::from(status.limit_remaining),
                remaining,
                "status {i}: {}",
                context()
            );
        }
    }
}
