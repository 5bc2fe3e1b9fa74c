//! The engine's counters for `/metrics`. Labels are typed and drawn from the configuration
//! (domain names that were loaded) or from fixed sets, never from raw client values.

use std::collections::HashSet;
use std::fmt::Write;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

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

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum RuleOutcome {
    Ok,
    OverLimit,
    /// OK, but a shadow-mode limit of the rule would have denied.
    ShadowOverLimit,
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
    /// Descriptors by the rule they matched and what it decided.
    pub rule_decisions: Family<RuleLabels, Counter>,
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
    pub fn register(&self, registry: &mut Registry) {
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
            self.rule_decisions.clone(),
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
                let rule = |name: &Arc<str>, outcome| {
                    let labels = RuleLabels {
                        rule: RuleName(name.clone()),
                        outcome,
                    };
                    self.rule_decisions.get_or_create(&labels).clone()
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
                    rules: d
                        .metric_names()
                        .map(|name| RuleCounters {
                            ok: rule(name, RuleOutcome::Ok),
                            over_limit: rule(name, RuleOutcome::OverLimit),
                            shadow_over_limit: rule(name, RuleOutcome::ShadowOverLimit),
                        })
                        .collect(),
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

#[derive(Debug)]
pub struct DomainCounters {
    pub ok: Counter,
    pub over_limit: Counter,
    pub failed_closed: Counter,
    pub unavailable: Counter,
    pub shadow_denials: Counter,
    /// By [`crate::config::Node::id`].
    pub rules: Vec<RuleCounters>,
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

#[derive(Debug)]
pub struct RuleCounters {
    pub ok: Counter,
    pub over_limit: Counter,
    pub shadow_over_limit: Counter,
}

impl RuleCounters {
    pub fn outcome(&self, outcome: RuleOutcome) -> &Counter {
        match outcome {
            RuleOutcome::Ok => &self.ok,
            RuleOutcome::OverLimit => &self.over_limit,
            RuleOutcome::ShadowOverLimit => &self.shadow_over_limit,
        }
    }
}
