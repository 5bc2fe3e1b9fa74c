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
///
/// Names are owned `String`s by default. [`crate::engine::Engine::should_rate_limit_with`]
/// hands out a `Decision<&str>` whose names are borrowed from the configuration in force, for
/// an answer written out at once: no copy of a name per call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision<N = String> {
    pub code: Code,
    pub statuses: Vec<DescriptorStatus<N>>,
    /// The name of the domain-level cap that denied the call, if one did (never its volume).
    pub denied_by_global: Option<N>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DescriptorStatus<N = String> {
    pub code: Code,
    pub current_limit: Option<ReportedLimit<N>>,
    pub limit_remaining: u32,
    /// `None` when waiting cannot help (a limit of 0, or more hits than the limit).
    pub duration_until_reset: Option<Duration>,
}

/// The limit a status reports, as Envoy shows it in `X-RateLimit-*` headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportedLimit<N = String> {
    pub name: Option<N>,
    pub requests_per_unit: u32,
    pub unit: Unit,
}

impl Decision<&str> {
    /// The same decision with names of its own.
    pub fn into_owned(self) -> Decision {
        Decision {
            code: self.code,
            statuses: self
                .statuses
                .into_iter()
                .map(|status| DescriptorStatus {
                    code: status.code,
                    current_limit: status.current_limit.map(|limit| ReportedLimit {
                        name: limit.name.map(str::to_owned),
                        requests_per_unit: limit.requests_per_unit,
                        unit: limit.unit,
                    }),
                    limit_remaining: status.limit_remaining,
                    duration_until_reset: status.duration_until_reset,
                })
                .collect(),
            denied_by_global: self.denied_by_global.map(str::to_owned),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_borrowed_decision_owns_every_name_it_holds() {
        fn limit<N>(name: Option<N>) -> Option<ReportedLimit<N>> {
            Some(ReportedLimit {
                name,
                requests_per_unit: 5,
                unit: Unit::Minute,
            })
        }
        fn status<N>(current_limit: Option<ReportedLimit<N>>) -> DescriptorStatus<N> {
            DescriptorStatus {
                code: Code::OverLimit,
                current_limit,
                limit_remaining: 0,
                duration_until_reset: Some(Duration::from_secs(7)),
            }
        }
        let borrowed = Decision {
            code: Code::OverLimit,
            statuses: vec![
                status(limit(Some("per_user"))),
                status(limit(None)),
                status(None),
            ],
            denied_by_global: Some("account_total"),
        };
        let owned = Decision {
            code: Code::OverLimit,
            statuses: vec![
                status(limit(Some("per_user".to_owned()))),
                status(limit(None)),
                status(None),
            ],
            denied_by_global: Some("account_total".to_owned()),
        };
        assert_eq!(borrowed.into_owned(), owned);
    }
}
