//! The decision engine: matches a call against the loaded rules, plans the counters it
//! touches, has the actors decide and commit them as one step, and builds the statuses.
//!
//! It owns the counters (through its actors), the current configuration (swapped whole on
//! reload) and the clock. It knows nothing of gRPC or HTTP: `rls`, `admin` and `proxy`
//! translate their wire forms into a [`Call`] and a [`Decision`] back.

mod actors;
mod call;
mod metrics;
mod plan;
mod status;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus_client::registry::Registry;

pub use call::{
    Call, CallDescriptor, Code, Decision, Descriptor, DescriptorStatus, LimitOverride,
    ReportedLimit,
};
pub use metrics::EngineMetrics;

use crate::clock::SharedClock;
use crate::config::{RateLimitConfig, RuleTree};
use crate::store::KeyTableFull;
use actors::Actors;
use metrics::{ConfigCounters, DomainCounters, Outcome, RuleLabels, RuleName, RuleOutcome};
use plan::Plan;

/// What to do with a call for a domain that is not configured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UnknownDomain {
    /// Answer OK (the reference service's behaviour), log and count it.
    #[default]
    Allow,
    /// Answer OVER_LIMIT.
    Deny,
}

#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// Shard actors that own the per-descriptor counters (at most [`crate::store::MAX_SHARDS`];
    /// more are taken as that many).
    pub shards: usize,
    /// Bound on the counters held at once, over all shards.
    pub max_keys: usize,
    pub unknown_domain: UnknownDomain,
    /// Service-wide shadow mode: decide and count as usual, but always answer OK.
    pub shadow: bool,
    /// Bound on rule metric series that name request values (`detailed_metric`).
    pub max_value_series: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            shards: 64,
            max_keys: 1_000_000,
            unknown_domain: UnknownDomain::Allow,
            shadow: false,
            max_value_series: 10_000,
        }
    }
}

/// An internal failure that no fail-closed limit turned into a denial: the caller should
/// answer UNAVAILABLE so that Envoy's `failure_mode_deny` decides.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot track a new counter: {0}")]
    KeyTableFull(#[from] KeyTableFull),
}

/// The configuration as loaded, with its compiled matching tree and its metric handles.
#[derive(Debug)]
pub struct LoadedConfig {
    pub config: RateLimitConfig,
    pub rules: RuleTree,
    counters: ConfigCounters,
}

impl LoadedConfig {
    fn new(config: RateLimitConfig, metrics: &EngineMetrics) -> LoadedConfig {
        let rules = RuleTree::build(&config);
        let counters = metrics.handles(&rules);
        LoadedConfig {
            config,
            rules,
            counters,
        }
    }
}

pub struct Engine {
    config: ArcSwap<LoadedConfig>,
    log_gate: LogGate,
    actors: Actors,
    clock: SharedClock,
    options: EngineOptions,
    metrics: EngineMetrics,
}

impl Engine {
    pub fn new(config: RateLimitConfig, clock: SharedClock, options: EngineOptions) -> Engine {
        let metrics = EngineMetrics::new(options.max_value_series);
        Engine {
            config: ArcSwap::from_pointee(LoadedConfig::new(config, &metrics)),
            log_gate: LogGate::default(),
            actors: Actors::new(options.shards, options.max_keys),
            options,
            clock,
            metrics,
        }
    }

    pub fn metrics(&self) -> &EngineMetrics {
        &self.metrics
    }

    /// Registers the engine's metrics, every one drawn from this engine.
    pub fn register_metrics(self: &Arc<Self>, registry: &mut Registry) {
        self.metrics.register(registry, Arc::downgrade(self));
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<LoadedConfig> {
        self.config.load_full()
    }

    /// Replaces the configuration as a whole; calls in flight finish on the old one.
    pub fn replace_config(&self, config: RateLimitConfig) {
        self.config
            .store(Arc::new(LoadedConfig::new(config, &self.metrics)));
    }

    /// Decides `call` over every limit it matches and the domain's global caps, atomically.
    pub fn should_rate_limit<D: Descriptor>(
        &self,
        call: &Call<'_, D>,
    ) -> Result<Decision, EngineError> {
        self.should_rate_limit_with(call, |decision| decision.into_owned())
    }

    /// [`Engine::should_rate_limit`], with the decision handed to `answer` while the
    /// configuration it names limits from is held: the gRPC service writes its answer there,
    /// without a copy of each limit's name.
    pub fn should_rate_limit_with<D: Descriptor, R>(
        &self,
        call: &Call<'_, D>,
        answer: impl FnOnce(Decision<&str>) -> R,
    ) -> Result<R, EngineError> {
        let loaded = self.config.load();
        let Some(domain) = loaded.rules.domain(call.domain) else {
            self.metrics.unknown_domain.inc();
            if self.log_gate.open(self.clock.now()) {
                // The name comes from the client: log a bounded prefix of it.
                let name: String = call.domain.chars().take(64).collect();
                tracing::warn!(
                    domain = name,
                    "call for an unknown domain (logged once a second)"
                );
            }
            return Ok(answer(self.shadowed(match self.options.unknown_domain {
                UnknownDomain::Allow => allow_all(call),
                UnknownDomain::Deny => deny_all(call),
            })));
        };
        let counters = &loaded.counters.domains[domain.index];
        let mut plan = Plan::build(domain, call, &self.actors);
        let decision = match self.actors.turn(&mut plan, self.clock.as_ref()) {
            Ok((committed, now)) => status::decide(&plan, committed, now),
            Err(full) => {
                return self
                    .internal_failure(call, &plan, counters, full)
                    .map(answer);
            }
        };
        let shadow_denials = plan
            .ops
            .iter()
            .filter(|op| !op.decides && op.verdict.is_some_and(|v| !v.fits))
            .count();
        if shadow_denials > 0 {
            counters.shadow_denials.inc_by(shadow_denials as u64);
        }
        let outcome = match decision.code {
            Code::Ok => Outcome::Ok,
            Code::OverLimit => Outcome::OverLimit,
        };
        counters.outcome(outcome).inc();
        self.count_rules(domain, counters, call, &plan, &decision);
        Ok(answer(self.shadowed(decision)))
    }

    /// A call the actors could not decide: a denial where a limit fails closed, else an error
    /// for the caller to turn into UNAVAILABLE; in service-wide shadow mode, OK regardless.
    fn internal_failure<D: Descriptor>(
        &self,
        call: &Call<'_, D>,
        plan: &Plan<'_>,
        counters: &DomainCounters,
        failure: KeyTableFull,
    ) -> Result<Decision<&'static str>, EngineError> {
        let fail_closed = plan.has_fail_closed();
        if self.log_gate.open(self.clock.now()) {
            tracing::error!(error = %failure, fail_closed, "cannot decide (logged once a second)");
        }
        let outcome = if fail_closed {
            Outcome::FailedClosed
        } else {
            Outcome::Unavailable
        };
        counters.outcome(outcome).inc();
        if self.options.shadow {
            return Ok(allow_all(call));
        }
        if fail_closed {
            Ok(deny_all(call))
        } else {
            Err(failure.into())
        }
    }

    /// Counts each matched descriptor under its rule's metric name.
    fn count_rules<D: Descriptor>(
        &self,
        domain: &crate::config::DomainRules,
        counters: &DomainCounters,
        call: &Call<'_, D>,
        plan: &Plan<'_>,
        decision: &Decision<&str>,
    ) {
        let per_descriptor = plan.descriptors.iter().zip(call.descriptors.iter());
        for ((d, descriptor), status) in per_descriptor.zip(&decision.statuses) {
            let Some(rule) = d.rule else { continue };
            let shadow_denied = plan.ops[d.ops.clone()]
                .iter()
                .any(|op| !op.decides && op.verdict.is_some_and(|v| !v.fits));
            let outcome = match status.code {
                Code::OverLimit => RuleOutcome::OverLimit,
                Code::Ok if shadow_denied => RuleOutcome::ShadowOverLimit,
                Code::Ok => RuleOutcome::Ok,
            };
            if !rule.metric_has_values {
                counters.rules[rule.id].inc(outcome);
                continue;
            }
            let name = domain.metric_name(rule, descriptor.entries());
            let admitted = self.metrics.value_series.admit(name);
            match admitted {
                Some(name) => {
                    let labels = RuleLabels {
                        rule: RuleName(name),
                        outcome,
                    };
                    self.metrics.rule_decisions.get_or_create(&labels).inc();
                }
                None => {
                    self.metrics.value_series_overflow.inc();
                    counters.rules[rule.id].inc(outcome);
                }
            }
        }
    }

    /// Drops the counters of windows that have ended; returns how many.
    pub fn sweep(&self) -> usize {
        let now = self.clock.now();
        (0..self.actors.count())
            .map(|actor| self.sweep_actor(actor, now))
            .sum()
    }

    /// [`Engine::sweep`], yielding after each actor: on a current-thread runtime a sweep of a
    /// million keys in one go would hold up every connection meanwhile.
    pub async fn sweep_yielding(&self) -> usize {
        let now = self.clock.now();
        let mut swept = 0;
        for actor in 0..self.actors.count() {
            swept += self.sweep_actor(actor, now);
            tokio::task::yield_now().await;
        }
        swept
    }

    /// Sweeps one actor, counting what it dropped.
    fn sweep_actor(&self, actor: usize, now: Duration) -> usize {
        let dropped = self.actors.sweep(actor, now);
        self.metrics.swept_counters.inc_by(dropped as u64);
        dropped
    }

    /// Counters held right now (for tests and metrics).
    pub fn counters(&self) -> usize {
        self.actors.len()
    }

    /// Sweeps every `interval` until `shutdown` resolves.
    pub async fn run_sweeper(&self, interval: Duration, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = ticks.tick() => {
                    let swept = self.sweep_yielding().await;
                    tracing::debug!(swept, "swept expired counters");
                }
            }
        }
    }

    fn shadowed<N>(&self, mut decision: Decision<N>) -> Decision<N> {
        if self.options.shadow {
            decision.code = Code::Ok;
        }
        decision
    }
}

/// Every descriptor OK with no limit (an unknown domain allowed, or shadow over a failure).
fn allow_all<D: Descriptor, N>(call: &Call<'_, D>) -> Decision<N> {
    uniform(call, Code::Ok)
}

/// Every descriptor OVER_LIMIT with nothing to wait for (an unknown domain refused, or a
/// fail-closed failure).
fn deny_all<D: Descriptor, N>(call: &Call<'_, D>) -> Decision<N> {
    uniform(call, Code::OverLimit)
}

fn uniform<D: Descriptor, N>(call: &Call<'_, D>, code: Code) -> Decision<N> {
    Decision {
        code,
        statuses: call
            .descriptors
            .iter()
            .map(|_| DescriptorStatus {
                code,
                current_limit: None,
                limit_remaining: 0,
                duration_until_reset: None,
            })
            .collect(),
        denied_by_global: None,
    }
}

/// Lets a log line through at most once a second, so that a client cannot flood the log.
#[derive(Debug, Default)]
struct LogGate {
    last_second: AtomicU64,
}

impl LogGate {
    fn open(&self, now: Duration) -> bool {
        let second = now.as_secs() + 1; // never 0, so the first call always logs
        self.last_second.swap(second, Ordering::Relaxed) != second
    }
}
