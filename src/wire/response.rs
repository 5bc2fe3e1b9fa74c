//! From an engine [`Decision`] to the wire `RateLimitResponse`. Never answers UNKNOWN.

use prost_types::{Struct, Value, value::Kind};

use crate::config::Unit;
use crate::engine::{Code, Decision, DescriptorStatus, ReportedLimit};
use crate::proto::RateLimitResponse;
use crate::proto::rate_limit_response::{self, DescriptorStatus as WireStatus, RateLimit};

/// The key in `dynamic_metadata` that names the global cap that denied a call.
pub const GLOBAL_CAP_METADATA_KEY: &str = "tollgate_denied_by_global_cap";

/// Takes the decision whole, so that its names move into the answer instead of being copied.
pub fn to_response(decision: Decision) -> RateLimitResponse {
    RateLimitResponse {
        overall_code: wire_code(decision.code) as i32,
        statuses: decision.statuses.into_iter().map(to_status).collect(),
        dynamic_metadata: decision.denied_by_global.map(global_cap_metadata),
        ..Default::default()
    }
}

/// The `dynamic_metadata` of a call denied by the global cap `name`.
pub(super) fn global_cap_metadata(name: String) -> Struct {
    Struct {
        fields: [(
            GLOBAL_CAP_METADATA_KEY.to_owned(),
            Value {
                kind: Some(Kind::StringValue(name)),
            },
        )]
        .into(),
    }
}

fn to_status(status: DescriptorStatus) -> WireStatus {
    WireStatus {
        code: wire_code(status.code) as i32,
        current_limit: status.current_limit.map(to_rate_limit),
        limit_remaining: status.limit_remaining,
        duration_until_reset: status.duration_until_reset.map(wire_duration),
        quota: None,
    }
}

fn to_rate_limit(limit: ReportedLimit) -> RateLimit {
    RateLimit {
        name: limit.name.unwrap_or_default(),
        requests_per_unit: limit.requests_per_unit,
        unit: wire_unit(limit.unit) as i32,
    }
}

/// A wait as the wire's `Duration`; one too long for its seconds is the longest it holds.
pub(super) fn wire_duration(d: std::time::Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: d.subsec_nanos() as i32,
    }
}

pub fn wire_code(code: Code) -> rate_limit_response::Code {
    match code {
        Code::Ok => rate_limit_response::Code::Ok,
        Code::OverLimit => rate_limit_response::Code::OverLimit,
    }
}

pub(super) fn wire_unit(unit: Unit) -> rate_limit_response::rate_limit::Unit {
    use rate_limit_response::rate_limit::Unit as W;
    match unit {
        Unit::Second => W::Second,
        Unit::Minute => W::Minute,
        Unit::Hour => W::Hour,
        Unit::Day => W::Day,
        Unit::Week => W::Week,
        Unit::Month => W::Month,
        Unit::Year => W::Year,
    }
}
