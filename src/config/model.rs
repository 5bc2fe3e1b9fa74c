//! The loaded configuration: plain data, validated, immutable once built.
//!
//! The loader (`load.rs`) produces these types from YAML; the matching tree (`tree.rs`) is
//! compiled from them. Nothing here parses or matches.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// Where something was written: file, 1-based line and column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourcePos {
    pub file: Arc<str>,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for SourcePos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// Every domain that was loaded, by name (sorted, so `/rlconfig` and summaries are stable).
#[derive(Clone, Debug, Default)]
pub struct RateLimitConfig {
    pub domains: BTreeMap<String, Domain>,
}

/// One rate-limit domain: its descriptor rules and its service-wide caps.
#[derive(Clone, Debug)]
pub struct Domain {
    pub name: String,
    /// Top-level descriptor rules, in file order (files in name order when merged).
    pub descriptors: Vec<DescriptorRule>,
    /// Domain-level `global:` caps: every call of the domain counts against each of them.
    pub global: Vec<GlobalCap>,
    /// Every file the domain was read from.
    pub files: Vec<Arc<str>>,
}

/// One `descriptors:` entry: a key, an optional value (exact, or a pattern with `*`), the limits
/// that apply when a request's last entry lands here, and nested rules for the next entry.
#[derive(Clone, Debug)]
pub struct DescriptorRule {
    pub key: String,
    /// `None` is a key-only rule (matches any value). A value containing `*` is a wildcard.
    pub value: Option<String>,
    /// From `rate_limit:` (one) or `rate_limits:` (several; the request must fit all of them).
    pub limits: Vec<Limit>,
    pub descriptors: Vec<DescriptorRule>,
    /// Every value matching this rule's wildcard shares one counter.
    pub share_threshold: bool,
    /// Metrics carry this descriptor's value (reference: `detailed_metric`, `value_to_metric`).
    pub detailed_metric: bool,
    pub value_to_metric: bool,
    /// The `metadata:` map as written, kept for `/rlconfig` and dynamic metadata.
    pub metadata: Option<serde_json::Value>,
    pub pos: SourcePos,
}

/// A limit on one descriptor rule.
#[derive(Clone, Debug)]
pub struct Limit {
    /// Reported in every status that shows the limit (from the matching tree's copy).
    pub name: Option<String>,
    /// What is counted, per window of `unit`. `Unlimited` has no counter at all.
    pub policy: LimitPolicy,
    /// Counted but never denies (descriptor-level `shadow_mode`, or the limit's own).
    pub shadow_mode: bool,
    /// Costs known only afterwards: denies once the count has reached the limit, and counts
    /// even past it.
    pub postpaid: bool,
    pub fail: FailMode,
    /// Names of other limits that this one replaces when both match one call.
    pub replaces: Vec<String>,
    pub pos: SourcePos,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitPolicy {
    Unlimited,
    PerUnit { requests_per_unit: u32, unit: Unit },
}

/// A domain-level cap. Always fail-closed: it exists to protect money.
#[derive(Clone, Debug)]
pub struct GlobalCap {
    pub name: String,
    pub requests_per_unit: u32,
    pub unit: Unit,
    pub pos: SourcePos,
}

/// What an internal failure (store down, key table full) means for a limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FailMode {
    /// The call fails with gRPC UNAVAILABLE, so Envoy's `failure_mode_deny` decides.
    #[default]
    Open,
    /// The call is denied (OVER_LIMIT).
    Closed,
}

/// Window units. Fixed windows are aligned to the Unix epoch, as the reference service does:
/// a week starts on Thursday 00:00 UTC, a month is 30 days and a year 365 days.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Unit {
    Second,
    Minute,
    Hour,
    Day,
    Week,
    Month,
    Year,
}

impl Unit {
    pub const ALL: [Unit; 7] = [
        Unit::Second,
        Unit::Minute,
        Unit::Hour,
        Unit::Day,
        Unit::Week,
        Unit::Month,
        Unit::Year,
    ];

    pub fn seconds(self) -> u64 {
        match self {
            Unit::Second => 1,
            Unit::Minute => 60,
            Unit::Hour => 3_600,
            Unit::Day => 86_400,
            Unit::Week => 604_800,
            Unit::Month => 2_592_000,
            Unit::Year => 31_536_000,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Second => "second",
            Unit::Minute => "minute",
            Unit::Hour => "hour",
            Unit::Day => "day",
            Unit::Week => "week",
            Unit::Month => "month",
            Unit::Year => "year",
        }
    }

    /// Case-insensitive, as the reference service reads units.
    pub fn parse(s: &str) -> Option<Unit> {
        Unit::ALL
            .into_iter()
            .find(|u| u.as_str().eq_ignore_ascii_case(s))
    }
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
