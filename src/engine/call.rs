//! What the engine is asked and what it answers, free of any wire format.

use std::sync::Arc;
use std::time::Duration;

use crate::config::Unit;

/// One `ShouldRateLimit` call: a domain, its descriptors, and the request-level hits.
#[derive(Clone, Debug, Default)]
pub struct Call<'a> {
    pub domain: &'a str,
    pub descriptors: Vec<CallDescriptor<'a>>,
    /// Request-level hits; 0 means 1.
    pub hits: u32,
}

#[derive(Clone, Debug, Default)]
pub struct CallDescriptor<'a> {
    pub entries: Vec<(&'a str, &'a str)>,
    /// A limit given by the caller, replacing the configured ones of this descriptor.
    pub limit_override: Option<LimitOverride>,
    /// The descriptor's own hits; `Some(0)` checks without counting.
    pub hits: Option<u64>,
    /// The hits are a refund, given back to the budget.
    pub refund: bool,
    /// The hits are a cost already incurred: counted even past every limit, never denied, and
    /// not a call of the domain's global caps. Only in-process callers (the proxy settling
    /// token usage) can ask this; the wire has no way to.
    pub settle: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimitOverride {
    pub requests_per_unit: u32,
    pub unit: Unit,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    Ok,
    OverLimit,
}

/// The answer to a call: one status per descriptor, in the call's order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub code: Code,
    pub statuses: Vec<DescriptorStatus>,
    /// The name of the domain-level cap that denied the call, if one did (never its volume).
    pub denied_by_global: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DescriptorStatus {
    pub code: Code,
    pub current_limit: Option<ReportedLimit>,
    pub limit_remaining: u32,
    /// `None` when waiting cannot help (a limit of 0, or more hits than the limit).
    pub duration_until_reset: Option<Duration>,
}

/// The limit a status reports, as Envoy shows it in `X-RateLimit-*` headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportedLimit {
    pub name: Option<Arc<str>>,
    pub requests_per_unit: u32,
    pub unit: Unit,
}
