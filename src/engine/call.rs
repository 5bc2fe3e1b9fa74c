//! What the engine is asked and what it answers, free of any wire format.

use std::borrow::Cow;
use std::time::Duration;

use crate::config::Unit;

/// One `ShouldRateLimit` call: a domain, its descriptors, and the request-level hits.
///
/// The descriptors are anything the engine can read as one ([`Descriptor`]): in-process
/// callers build [`CallDescriptor`]s, the gRPC service lends the validated wire message, so a
/// call over the wire is decided without copying its descriptors.
#[derive(Clone, Debug)]
pub struct Call<'a, D: Descriptor = CallDescriptor<'a>> {
    pub domain: &'a str,
    pub descriptors: Cow<'a, [D]>,
    /// Request-level hits; 0 means 1.
    pub hits: u32,
}

/// What the engine reads of one descriptor of a call. `Clone` because a [`Call`] may own its
/// descriptors or borrow them.
pub trait Descriptor: Clone {
    /// The entries, in order: `(key, value)`.
    fn entries(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + Clone;
    /// A limit given by the caller, replacing the configured ones of this descriptor.
    fn limit_override(&self) -> Option<LimitOverride>;
    /// The descriptor's own hits; `Some(0)` checks without counting.
    fn hits(&self) -> Option<u64>;
    /// The hits are a refund, given back to the budget.
    fn refund(&self) -> bool;
    /// The hits are a cost already incurred (see [`CallDescriptor::settle`]).
    fn settle(&self) -> bool;
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

impl Descriptor for CallDescriptor<'_> {
    fn entries(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + Clone {
        self.entries.iter().copied()
    }
    fn limit_override(&self) -> Option<LimitOverride> {
        self.limit_override
    }
    fn hits(&self) -> Option<u64> {
        self.hits
    }
    fn refund(&self) -> bool {
        self.refund
    }
    fn settle(&self) -> bool {
        self.settle
    }
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
    pub name: Option<String>,
    pub requests_per_unit: u32,
    pub unit: Unit,
}
