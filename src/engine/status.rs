//! From decided counters to the statuses a caller sees (DESIGN.md, "Statuses on a denial").
//!
//! - An OK call reports, per descriptor, the limit with the least remaining after counting.
//! - A denied call reports each denying descriptor as OVER_LIMIT with remaining 0, the denying
//!   limit with the longest wait, and that wait; other descriptors as they stand, uncounted.
//! - When a global cap denies, every status is OVER_LIMIT with remaining 0 and a reset no
//!   shorter than the cap's; the cap's name is returned, never its volume.

use std::time::Duration;

use super::call::{Code, Decision, DescriptorStatus};
use super::plan::{Op, Plan};
use crate::limits::Mode;

/// How long until `op` could let the call through; `None` when waiting cannot help.
fn wait(op: &Op<'_>, now: Duration) -> Option<Duration> {
    let v = op.verdict?;
    if v.never_fits {
        return None;
    }
    Some(Duration::from_secs(v.window_end).saturating_sub(now))
}

/// Orders waits so that "never" is the longest.
fn wait_rank(w: Option<Duration>) -> Duration {
    w.unwrap_or(Duration::MAX)
}

fn denies(op: &Op<'_>) -> bool {
    op.decides && op.verdict.is_some_and(|v| !v.fits)
}

/// What `op` has left once the call is over: after counting if it was committed (or is a
/// refund, which goes through regardless), else as stored before the call.
fn remaining(op: &Op<'_>, committed: bool) -> u32 {
    let Some(v) = op.verdict else { return 0 };
    let count = if committed || op.mode == Mode::Refund {
        v.count_after
    } else {
        op.stored_count
    };
    u64::from(op.window.volume)
        .saturating_sub(count)
        .try_into()
        .unwrap_or(u32::MAX)
}

pub(crate) fn decide<'c>(plan: &Plan<'c>, committed: bool, now: Duration) -> Decision<&'c str> {
    let global_denier = plan
        .global_ops()
        .iter()
        .filter(|op| denies(op))
        .max_by_key(|op| wait_rank(wait(op, now)));
    let global_wait = global_denier.map(|op| wait(op, now));
    let statuses = plan
        .descriptors
        .iter()
        .map(|d| {
            let ops = &plan.ops[d.ops.clone()];
            let denier = ops
                .iter()
                .filter(|op| denies(op))
                .max_by_key(|op| wait_rank(wait(op, now)));
            let least = ops.iter().min_by_key(|op| remaining(op, committed));
            match (denier, global_wait) {
                (Some(op), Some(global)) => {
                    over(op.source.reported(), longest(wait(op, now), global))
                }
                (Some(op), None) => over(op.source.reported(), wait(op, now)),
                (None, Some(global)) => over(least.and_then(|op| op.source.reported()), global),
                (None, None) => match least {
                    Some(op) => DescriptorStatus {
                        code: Code::Ok,
                        current_limit: op.source.reported(),
                        limit_remaining: remaining(op, committed),
                        duration_until_reset: wait(op, now),
                    },
                    None => DescriptorStatus {
                        code: Code::Ok,
                        current_limit: None,
                        limit_remaining: if d.unlimited { u32::MAX } else { 0 },
                        duration_until_reset: None,
                    },
                },
            }
        })
        .collect();
    Decision {
        code: if committed { Code::Ok } else { Code::OverLimit },
        statuses,
        denied_by_global: global_denier.and_then(|op| match op.source {
            super::plan::LimitSource::Global(cap) => Some(cap.name.as_str()),
            _ => None,
        }),
    }
}

/// The longer of two waits, where `None` is forever.
fn longest(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    Some(a?.max(b?))
}

fn over<N>(
    current_limit: Option<super::call::ReportedLimit<N>>,
    reset: Option<Duration>,
) -> DescriptorStatus<N> {
    DescriptorStatus {
        code: Code::OverLimit,
        current_limit,
        limit_remaining: 0,
        duration_until_reset: reset,
    }
}
