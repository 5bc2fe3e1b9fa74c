//! The engine's counters for `/metrics`. Labels are typed and drawn from the configuration
//! (domain names that were loaded) or from fixed sets, never from raw client values.

use std::fmt::Write;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

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

#[derive(Clone, Debug, Default)]
pub struct EngineMetrics {
    /// Calls by configured domain and outcome.
    pub decisions: Family<DecisionLabels, Counter>,
    /// Limits in shadow mode that would have denied.
    pub shadow_denials: Family<DomainLabel, Counter>,
    /// Calls for a domain that is not configured (the name is logged, not labelled).
    pub unknown_domain: Counter,
    /// Expired counters dropped by the sweeper.
    pub swept_counters: Counter,
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
    }

    pub fn count(&self, domain: &str, outcome: Outcome) {
        self.decisions
            .get_or_create(&DecisionLabels {
                domain: domain.to_owned(),
                outcome,
            })
            .inc();
    }
}
