//! The proxy's counters for `/metrics`: how its calls ended (each call counted once), the calls
//! the decision service failed to decide, and the tokens reserved and settled. Every label
//! comes from a fixed set, never from what a client sent.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// How a call to the proxy ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum CallOutcome {
    /// Sent upstream; its answer (whatever its status) went back.
    Forwarded,
    /// Denied by a limit (or the per-client stream cap): a 429 of the proxy's own.
    RateLimited,
    /// Refused before anything was spent: unknown route, CORS, body, policy.
    Refused,
    /// The decision service failed, so the call was denied (a 503). Let through under
    /// `on_limiter_error: allow`, a call ends as whatever happened to it next; the failures
    /// under either policy are counted apart ([`ProxyMetrics::limiter_error`]).
    LimiterError,
    /// The upstream could not be reached or did not answer in time.
    UpstreamError,
    /// The kill switch is on.
    Disabled,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum TokenFlow {
    /// Reserved before forwarding: each call's worst case.
    Reserved,
    /// Given back once the real usage was known.
    Refunded,
    /// Charged beyond a reservation.
    Excess,
}

impl EncodeLabelValue for CallOutcome {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        encoder.write_str(match self {
            CallOutcome::Forwarded => "forwarded",
            CallOutcome::RateLimited => "rate_limited",
            CallOutcome::Refused => "refused",
            CallOutcome::LimiterError => "limiter_error",
            CallOutcome::UpstreamError => "upstream_error",
            CallOutcome::Disabled => "disabled",
        })
    }
}

impl EncodeLabelValue for TokenFlow {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        encoder.write_str(match self {
            TokenFlow::Reserved => "reserved",
            TokenFlow::Refunded => "refunded",
            TokenFlow::Excess => "excess",
        })
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    outcome: CallOutcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    flow: TokenFlow,
}

/// Cheap to clone: every family shares its counters.
#[derive(Clone, Debug, Default)]
pub struct ProxyMetrics {
    calls: Family<CallLabels, Counter>,
    limiter_errors: Counter,
    tokens: Family<TokenLabels, Counter>,
}

impl ProxyMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "tollgate_proxy_calls",
            "Calls to the OpenAI proxy, by how they ended",
            self.calls.clone(),
        );
        registry.register(
            "tollgate_proxy_limiter_errors",
            "Calls the decision service failed to decide, denied or let through as \
             on_limiter_error says",
            self.limiter_errors.clone(),
        );
        registry.register(
            "tollgate_proxy_tokens",
            "Tokens reserved before forwarding, refunded and charged beyond the reservation",
            self.tokens.clone(),
        );
    }

    pub fn call(&self, outcome: CallOutcome) {
        self.calls.get_or_create(&CallLabels { outcome }).inc();
    }

    /// The decision service failed to decide a call (whatever the call then became).
    pub fn limiter_error(&self) {
        self.limiter_errors.inc();
    }

    pub fn tokens(&self, flow: TokenFlow, tokens: u64) {
        self.tokens
            .get_or_create(&TokenLabels { flow })
            .inc_by(tokens);
    }
}
