//! The engine's counters for `/metrics`. Labels are typed and drawn from the configuration
//! (domain names that were loaded) or from fixed sets, never from raw client values.

use std::collections::HashSet;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use prometheus_client::encoding::{
    EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder, MetricEncoder,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::Engine;
use crate::config::RuleTree;

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    OverLimit,
    FailedClosed,
    Unavailable,
}

impl EncodeLabelValue for Outcome {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(match self {
            Outcome::Ok => "ok",
            Outcome::OverLimit => "over_limit",
            Outcome::FailedClosed => "failed_closed",
            Outcome::Unavailable => "unavailable",
        })
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub domain: String,
    pub outcome: Outcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DomainLabel {
    pub domain: String,
}

/// A rule's metric name (cheap to clone: shared with the compiled rules).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct RuleName(pub Arc<str>);

impl EncodeLabelValue for RuleName {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(&self.0)
    }
}

/// The discriminants index [`RuleCounts`] and a rule's registered counters, in [`Self::ALL`]'s
/// order.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum RuleOutcome {
    Ok = 0,
    OverLimit = 1,
    /// OK, but a shadow-mode limit of the rule would have denied.
    ShadowOverLimit = 2,
}

impl RuleOutcome {
    const ALL: [RuleOutcome; 3] = [
        RuleOutcome::Ok,
        RuleOutcome::OverLimit,
        RuleOutcome::ShadowOverLimit,
    ];
}

impl EncodeLabelValue for RuleOutcome {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(match self {
            RuleOutcome::Ok => "ok",
            RuleOutcome::OverLimit => "over_limit",
            RuleOutcome::ShadowOverLimit => "shadow_over_limit",
        })
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabels {
    pub rule: RuleName,
    pub outcome: RuleOutcome,
}

/// Rule names that carry request values (`detailed_metric`, `value_to_metric`) come from
/// clients, so their number is bounded: past the bound, a call counts under its rule's
/// config name and the overflow is counted.
#[derive(Debug)]
pub struct ValueSeries {
    seen: Mutex<HashSet<Arc<str>>>,
    max: usize,
}

impl ValueSeries {
    pub fn new(max: usize) -> ValueSeries {
        ValueSeries {
            seen: Mutex::new(HashSet::new()),
            max,
        }
    }

    /// `name` if it is already tracked or there is room for it.
    pub fn admit(&self, name: String) -> Option<Arc<str>> {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(known) = seen.get(name.as_str()) {
            return Some(known.clone());
        }
        if seen.len() >= self.max {
            return None;
        }
        let name: Arc<str> = name.into();
        seen.insert(name.clone());
        Some(name)
    }
}

#[derive(Clone, Debug)]
pub struct EngineMetrics {
    /// Calls by configured domain and outcome.
    pub decisions: Family<DecisionLabels, Counter>,
    /// Limits in shadow mode that would have denied.
    pub shadow_denials: Family<DomainLabel, Counter>,
    /// Calls for a domain that is not configured (the name is logged, not labelled).
    pub unknown_domain: Counter,
    /// Expired counters dropped by the sweeper.
    pub swept_counters: Counter,
    /// Descriptors by the rule they matched and what it decided. Read through
    /// [`RuleDecisions`]: the loaded config holds counts not yet moved here.
    pub(super) rule_decisions: Family<RuleLabels, Counter>,
    /// Calls counted under a rule's config name because the value series were full.
    pub value_series_overflow: Counter,
    pub value_series: Arc<ValueSeries>,
}

impl EngineMetrics {
    pub fn new(max_value_series: usize) -> EngineMetrics {
        EngineMetrics {
            decisions: Family::default(),
            shadow_denials: Family::default(),
            unknown_domain: Counter::default(),
            swept_counters: Counter::default(),
            rule_decisions: Family::default(),
            value_series_overflow: Counter::default(),
            value_series: Arc::new(ValueSeries::new(max_value_series)),
        }
    }
}

impl EngineMetrics {
    /// Registers every metric; `tollgate_rule_decisions` is read through [`RuleDecisions`],
    /// which needs the engine.
    pub(super) fn register(&self, registry: &mut Registry, engine: Weak<Engine>) {
        registry.register(
            "tollgate_decisions",
            "Rate-limit calls by domain and outcome",
            self.decisions.clone(),
        );
        registry.register(
            "tollgate_shadow_denials",
            "Shadow-mode limits that would have denied a call",
            self.shadow_denials.clone(),
        );
        registry.register(
            "tollgate_unknown_domain",
            "Calls for a domain that is not configured",
            self.unknown_domain.clone(),
        );
        registry.register(
            "tollgate_swept_counters",
            "Expired counters dropped by the periodic sweep",
            self.swept_counters.clone(),
        );
        registry.register(
            "tollgate_rule_decisions",
            "Descriptors by matched rule (the reference's stats key) and outcome",
            RuleDecisions {
                engine,
                family: self.rule_decisions.clone(),
            },
        );
        registry.register(
            "tollgate_value_series_overflow",
            "Rule metrics that could not name request values: too many series",
            self.value_series_overflow.clone(),
        );
    }

    /// Counter handles for every domain and rule of `rules`, made once per loaded config so
    /// that a decision only increments atomics.
    pub fn handles(&self, rules: &RuleTree) -> ConfigCounters {
        let mut domains: Vec<_> = rules.domains().collect();
        domains.sort_by_key(|d| d.index);
        let domains = domains
            .into_iter()
            .map(|d| {
                let label = |outcome| DecisionLabels {
                    domain: d.name.clone(),
                    outcome,
                };
                let decision = |outcome| self.decisions.get_or_create(&label(outcome)).clone();
                let rule_totals = |name: &Arc<str>| {
                    RuleOutcome::ALL.map(|outcome| {
                        let labels = RuleLabels {
                            rule: RuleName(name.clone()),
                            outcome,
                        };
                        self.rule_decisions.get_or_create(&labels).clone()
                    })
                };
                DomainCounters {
                    ok: decision(Outcome::Ok),
                    over_limit: decision(Outcome::OverLimit),
                    failed_closed: decision(Outcome::FailedClosed),
                    unavailable: decision(Outcome::Unavailable),
                    shadow_denials: self
                        .shadow_denials
                        .get_or_create(&DomainLabel {
                            domain: d.name.clone(),
                        })
                        .clone(),
                    rules: d.metric_names().map(|_| RuleCounts::default()).collect(),
                    rule_totals: d.metric_names().map(rule_totals).collect(),
                }
            })
            .collect();
        ConfigCounters { domains }
    }
}

/// Counter handles of one loaded config, by [`crate::config::DomainRules::index`].
#[derive(Debug)]
pub struct ConfigCounters {
    pub domains: Vec<DomainCounters>,
}

impl ConfigCounters {
    /// Moves every rule's pending counts into its registered counters.
    fn flush(&self) {
        for domain in &self.domains {
            for (counts, totals) in domain.rules.iter().zip(&domain.rule_totals) {
                for (count, total) in counts.0.iter().zip(totals) {
                    let n = count.swap(0, Ordering::Relaxed);
                    if n > 0 {
                        total.inc_by(n);
                    }
                }
            }
        }
    }
}

/// A config is retired once the last call deciding on it is done: what it counted since the
/// last read of `/metrics` goes to the registered counters then.
impl Drop for ConfigCounters {
    fn drop(&mut self) {
        self.flush();
    }
}

#[derive(Debug)]
pub struct DomainCounters {
    pub ok: Counter,
    pub over_limit: Counter,
    pub failed_closed: Counter,
    pub unavailable: Counter,
    pub shadow_denials: Counter,
    /// Each rule's decisions not yet on `/metrics`, by [`crate::config::Node::id`].
    pub rules: Box<[RuleCounts]>,
    /// Each rule's registered counters, by [`crate::config::Node::id`] and [`RuleOutcome`].
    rule_totals: Box<[[Counter; 3]]>,
}

impl DomainCounters {
    pub fn outcome(&self, outcome: Outcome) -> &Counter {
        match outcome {
            Outcome::Ok => &self.ok,
            Outcome::OverLimit => &self.over_limit,
            Outcome::FailedClosed => &self.failed_closed,
            Outcome::Unavailable => &self.unavailable,
        }
    }
}

/// One rule's decisions by outcome, counted since `/metrics` was last read.
///
/// A row of three atomics per rule, side by side, because a prometheus-client counter is an
/// allocation of its own: with 10,000 rules, a call's increment of a random rule's counter read
/// one cold line to find the counter and wrote another.
/// The counts move into the registered counters when `/metrics` is read ([`RuleDecisions`])
/// and when the config is retired.
#[derive(Debug, Default)]
pub struct RuleCounts([AtomicU64; 3]);

impl RuleCounts {
    pub fn inc(&self, outcome: RuleOutcome) {
        self.0[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// `tollgate_rule_decisions` as registered: the per-rule counters, once the config in force has
/// moved its pending counts ([`RuleCounts`]) into them, so that a read shows every decision made
/// before it.
#[derive(Debug)]
struct RuleDecisions {
    engine: Weak<Engine>,
    family: Family<RuleLabels, Counter>,
}

impl EncodeMetric for RuleDecisions {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        if let Some(engine) = self.engine.upgrade() {
            engine.config().counters.flush();
        }
        self.family.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        self.family.metric_type()
    }

    fn is_empty(&self) -> bool {
        self.family.is_empty()
    }
}
