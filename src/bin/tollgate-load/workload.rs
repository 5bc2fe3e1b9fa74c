//! What each call asks: the descriptor mixes of the benchmark, and the Zipf key sampler.
//!
//! Every workload names the domain its rules live in under `bench/configs/` (or the configs
//! `bench/run.sh` generates), so the same request shapes meet different rule sets: `uniform`,
//! `many-rules-exact` and `many-rules-wildcard` send the very same `client=key-<i>` descriptors
//! to a domain of 1 key-only rule, of 10,000 exact-value rules, and of N wildcard siblings.

use anyhow::{bail, ensure};
use clap::ValueEnum;

use tollgate::proto::rate_limit_descriptor::Entry;
use tollgate::proto::{RateLimitDescriptor, RateLimitRequest};

/// Distinct `route` values of `three-plus-global`.
pub const ROUTES: usize = 8;
/// Distinct `model` values of `three-plus-global`.
pub const MODELS: usize = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum WorkloadKind {
    /// One descriptor, always `client=hot`: every call on one counter.
    OneHotKey,
    /// One descriptor `client=key-<i>`, i uniform over `--keys`.
    Uniform,
    /// One descriptor `client=key-<i>`, i Zipf-distributed over `--keys` (rank 1 = key-0).
    Zipf,
    /// Three descriptors (`client` uniform over `--keys`, `route`, `model`) in a domain with a
    /// global cap: four counters per call.
    ThreePlusGlobal,
    /// `client=key-<i>` against a domain of 10,000 exact-value rules (`key-0`..): matched by a
    /// hash lookup, so it should cost what `uniform` costs.
    ManyRulesExact,
    /// `client=key-<i>` against a domain whose matching wildcard is the last of N siblings.
    ManyRulesWildcard,
}

impl WorkloadKind {
    /// The domain of `bench/configs/` (or the generated configs) that holds this workload's rules.
    pub fn default_domain(self) -> &'static str {
        match self {
            WorkloadKind::OneHotKey | WorkloadKind::Uniform | WorkloadKind::Zipf => "bench",
            WorkloadKind::ThreePlusGlobal => "bench-global",
            WorkloadKind::ManyRulesExact => "bench-exact",
            WorkloadKind::ManyRulesWildcard => "bench-wild",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            WorkloadKind::OneHotKey => "one-hot-key",
            WorkloadKind::Uniform => "uniform",
            WorkloadKind::Zipf => "zipf",
            WorkloadKind::ThreePlusGlobal => "three-plus-global",
            WorkloadKind::ManyRulesExact => "many-rules-exact",
            WorkloadKind::ManyRulesWildcard => "many-rules-wildcard",
        }
    }
}

/// Makes the requests of one workload. Shared read-only by every call task; each task brings
/// its own random generator.
#[derive(Debug)]
pub struct Workload {
    kind: WorkloadKind,
    domain: String,
    keys: usize,
    draw: Draw,
}

/// How a workload's requests are drawn, with what the drawing needs.
#[derive(Debug)]
enum Draw {
    /// The one key `client=hot`.
    HotKey,
    /// `client=key-<i>`, i uniform over the keys.
    Uniform,
    /// `client=key-<i>`, i Zipf-distributed over the keys.
    Zipf(Zipf),
    /// A uniform client, a route and a model.
    ThreePlusGlobal,
}

impl Workload {
    pub fn new(
        kind: WorkloadKind,
        domain: Option<String>,
        keys: usize,
        zipf_exponent: f64,
    ) -> anyhow::Result<Workload> {
        ensure!(keys >= 1, "--keys must be at least 1");
        let draw = match kind {
            WorkloadKind::OneHotKey => Draw::HotKey,
            WorkloadKind::Uniform
            | WorkloadKind::ManyRulesExact
            | WorkloadKind::ManyRulesWildcard => Draw::Uniform,
            WorkloadKind::Zipf => Draw::Zipf(Zipf::new(keys, zipf_exponent)?),
            WorkloadKind::ThreePlusGlobal => Draw::ThreePlusGlobal,
        };
        Ok(Workload {
            kind,
            domain: domain.unwrap_or_else(|| kind.default_domain().to_owned()),
            keys,
            draw,
        })
    }

    pub fn kind(&self) -> WorkloadKind {
        self.kind
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The next request: its descriptors drawn with `rng`.
    pub fn request(&self, rng: &mut fastrand::Rng) -> RateLimitRequest {
        let descriptors = match &self.draw {
            Draw::HotKey => vec![descriptor(&[("client", "hot".to_owned())])],
            Draw::Uniform => vec![client(rng.usize(..self.keys))],
            Draw::Zipf(zipf) => vec![client(zipf.sample(rng.f64()))],
            Draw::ThreePlusGlobal => vec![
                client(rng.usize(..self.keys)),
                descriptor(&[("route", format!("route-{}", rng.usize(..ROUTES)))]),
                descriptor(&[("model", format!("model-{}", rng.usize(..MODELS)))]),
            ],
        };
        RateLimitRequest {
            domain: self.domain.clone(),
            descriptors,
            hits_addend: 0,
        }
    }
}

fn client(i: usize) -> RateLimitDescriptor {
    descriptor(&[("client", format!("key-{i}"))])
}

fn descriptor(entries: &[(&str, String)]) -> RateLimitDescriptor {
    RateLimitDescriptor {
        entries: entries
            .iter()
            .map(|(key, value)| Entry {
                key: (*key).to_owned(),
                value: value.clone(),
            })
            .collect(),
        ..Default::default()
    }
}

/// Zipf over ranks 1..=n with P(k) ∝ 1/k^s, sampled by inverting the CDF: the cumulative
/// weights are computed once, and a uniform draw is located by binary search (O(log n) per
/// sample, 8 bytes per key; exact, no rejection loop, no extra crate).
#[derive(Debug)]
pub struct Zipf {
    /// cumulative[i] = sum of the weights of ranks 1..=i+1, normalised so the last is 1.
    cumulative: Vec<f64>,
}

impl Zipf {
    pub fn new(n: usize, exponent: f64) -> anyhow::Result<Zipf> {
        ensure!(n >= 1, "a Zipf distribution needs at least one key");
        if !(exponent.is_finite() && exponent >= 0.0) {
            bail!("--zipf-exponent must be a finite number >= 0, not {exponent}");
        }
        let mut total = 0.0;
        let mut cumulative: Vec<f64> = (1..=n)
            .map(|k| {
                total += (k as f64).powf(-exponent);
                total
            })
            .collect();
        for c in &mut cumulative {
            *c /= total;
        }
        Ok(Zipf { cumulative })
    }

    /// The 0-based index (rank - 1) for a uniform draw `u` in [0, 1).
    pub fn sample(&self, u: f64) -> usize {
        let i = self.cumulative.partition_point(|&c| c <= u);
        // Rounding may leave the last cumulative weight a hair under 1.
        i.min(self.cumulative.len() - 1)
    }

    /// P(index i), for tests and reports.
    #[cfg(test)]
    fn probability(&self, i: usize) -> f64 {
        self.cumulative[i] - if i == 0 { 0.0 } else { self.cumulative[i - 1] }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(request: &RateLimitRequest) -> Vec<Vec<(String, String)>> {
        request
            .descriptors
            .iter()
            .map(|d| {
                d.entries
                    .iter()
                    .map(|e| (e.key.clone(), e.value.clone()))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn zipf_frequencies_follow_the_power_law() {
        let n = 100;
        let zipf = Zipf::new(n, 1.0).unwrap();
        let harmonic: f64 = (1..=n).map(|k| 1.0 / k as f64).sum();
        let mut rng = fastrand::Rng::with_seed(7);
        let draws = 400_000;
        let mut counts = vec![0u64; n];
        for _ in 0..draws {
            counts[zipf.sample(rng.f64())] += 1;
        }
        // Rank k should come up with probability 1/(k H_n); check the head, where counts are
        // large enough for a 5% tolerance to be many standard deviations wide.
        for (i, &count) in counts.iter().enumerate().take(10) {
            let expected = draws as f64 / ((i + 1) as f64 * harmonic);
            let ratio = count as f64 / expected;
            assert!((0.95..1.05).contains(&ratio), "rank {}: {ratio}", i + 1);
        }
        // The whole tail, in aggregate.
        let tail: u64 = counts[50..].iter().sum();
        let expected_tail: f64 = (51..=n).map(|k| 1.0 / (k as f64 * harmonic)).sum();
        let ratio = tail as f64 / (expected_tail * draws as f64);
        assert!((0.95..1.05).contains(&ratio), "tail: {ratio}");
        // The probabilities it was built from.
        assert!((zipf.probability(0) - 1.0 / harmonic).abs() < 1e-12);
        assert!((zipf.probability(1) * 2.0 - zipf.probability(0)).abs() < 1e-12);
    }

    #[test]
    fn zipf_exponent_zero_is_uniform_and_bounds_hold() {
        let zipf = Zipf::new(4, 0.0).unwrap();
        assert_eq!(zipf.sample(0.0), 0);
        assert_eq!(zipf.sample(0.2499), 0);
        assert_eq!(zipf.sample(0.25), 1);
        assert_eq!(zipf.sample(0.7), 2);
        assert_eq!(zipf.sample(0.999_999_999), 3);
        // A draw of exactly 1 cannot come from fastrand, but must not index past the end.
        assert_eq!(zipf.sample(1.0), 3);
        let one = Zipf::new(1, 3.0).unwrap();
        assert_eq!(one.sample(0.5), 0);
    }

    #[test]
    fn zipf_refuses_bad_parameters() {
        assert!(Zipf::new(0, 1.0).is_err());
        assert!(Zipf::new(10, -0.5).is_err());
        assert!(Zipf::new(10, f64::NAN).is_err());
        assert!(Zipf::new(10, f64::INFINITY).is_err());
    }

    #[test]
    fn one_hot_key_is_always_the_same_descriptor() {
        let w = Workload::new(WorkloadKind::OneHotKey, None, 1000, 1.0).unwrap();
        let mut rng = fastrand::Rng::with_seed(1);
        for _ in 0..10 {
            let r = w.request(&mut rng);
            assert_eq!(r.domain, "bench");
            assert_eq!(r.hits_addend, 0);
            assert_eq!(values(&r), vec![vec![("client".into(), "hot".into())]]);
        }
    }

    #[test]
    fn uniform_covers_the_key_space_and_stays_in_it() {
        let w = Workload::new(WorkloadKind::Uniform, Some("d".into()), 5, 1.0).unwrap();
        let mut rng = fastrand::Rng::with_seed(2);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..500 {
            let r = w.request(&mut rng);
            assert_eq!(r.domain, "d");
            let v = values(&r);
            assert_eq!(v.len(), 1);
            assert_eq!(v[0].len(), 1);
            assert_eq!(v[0][0].0, "client");
            seen.insert(v[0][0].1.clone());
        }
        let expected: std::collections::BTreeSet<String> =
            (0..5).map(|i| format!("key-{i}")).collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn three_plus_global_sends_client_route_model_in_order() {
        let w = Workload::new(WorkloadKind::ThreePlusGlobal, None, 10, 1.0).unwrap();
        assert_eq!(w.domain(), "bench-global");
        let mut rng = fastrand::Rng::with_seed(3);
        for _ in 0..100 {
            let v = values(&w.request(&mut rng));
            let keys: Vec<&str> = v.iter().map(|d| d[0].0.as_str()).collect();
            assert_eq!(keys, ["client", "route", "model"]);
            assert!(v.iter().all(|d| d.len() == 1));
            let n =
                |s: &str, prefix: &str| s.strip_prefix(prefix).unwrap().parse::<usize>().unwrap();
            assert!(n(&v[0][0].1, "key-") < 10);
            assert!(n(&v[1][0].1, "route-") < ROUTES);
            assert!(n(&v[2][0].1, "model-") < MODELS);
        }
    }

    #[test]
    fn zipf_workload_favours_key_zero() {
        let w = Workload::new(WorkloadKind::Zipf, None, 1000, 1.2).unwrap();
        let mut rng = fastrand::Rng::with_seed(4);
        let hot = (0..2000)
            .filter(|_| values(&w.request(&mut rng))[0][0].1 == "key-0")
            .count();
        // P(rank 1) = 1/H(1000, 1.2) ≈ 0.23; uniform would give 0.001.
        let p: f64 = 1.0 / (1..=1000).map(|k| (k as f64).powf(-1.2)).sum::<f64>();
        let expected = 2000.0 * p;
        let sd = (2000.0 * p * (1.0 - p)).sqrt();
        assert!(
            (hot as f64 - expected).abs() < 4.0 * sd,
            "{hot} vs {expected}"
        );
    }

    #[test]
    fn many_rules_workloads_use_their_own_domains_and_the_client_shape() {
        for (kind, domain) in [
            (WorkloadKind::ManyRulesExact, "bench-exact"),
            (WorkloadKind::ManyRulesWildcard, "bench-wild"),
        ] {
            let w = Workload::new(kind, None, 10_000, 1.0).unwrap();
            let r = w.request(&mut fastrand::Rng::with_seed(5));
            assert_eq!(r.domain, domain);
            assert_eq!(values(&r)[0][0].0, "client");
            assert!(values(&r)[0][0].1.starts_with("key-"));
        }
        assert!(Workload::new(WorkloadKind::Uniform, None, 0, 1.0).is_err());
    }
}
