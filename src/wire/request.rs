//! From a wire `RateLimitRequest` ([`WireRequest`], read in place) to an engine [`Call`],
//! refusing what is malformed or too big. Every error names the offending field, so a client
//! can fix its request.

use std::borrow::Cow;

use super::decode::{WireDescriptor, WireRequest};
use crate::config::Unit;
use crate::engine::{Call, Descriptor, LimitOverride};
use crate::proto::envoy::r#type::v3::RateLimitUnit;

/// Bounds on what one request may carry, so memory follows configuration, not clients.
#[derive(Clone, Copy, Debug)]
pub struct RequestBounds {
    pub max_descriptors: usize,
    pub max_entries: usize,
    pub max_string_bytes: usize,
    pub max_hits: u64,
}

impl Default for RequestBounds {
    fn default() -> Self {
        RequestBounds {
            max_descriptors: 64,
            max_entries: 32,
            max_string_bytes: 1024,
            max_hits: 1_000_000_000,
        }
    }
}

/// A request the service refuses, with the field it is about.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{field}: {problem}")]
pub struct InvalidRequest {
    pub field: String,
    pub problem: String,
}

fn invalid(field: impl Into<String>, problem: impl Into<String>) -> InvalidRequest {
    InvalidRequest {
        field: field.into(),
        problem: problem.into(),
    }
}

/// Checks what reading could not: required fields, string lengths and hits. The counts of
/// descriptors and entries are bounded as the request is read ([`WireRequest::parse`]).
pub fn to_call<'r, 'a>(
    request: &'r WireRequest<'a>,
    bounds: &RequestBounds,
) -> Result<Call<'r, WireDescriptor<'a>>, InvalidRequest> {
    if request.domain.is_empty() {
        return Err(invalid("domain", "must not be empty"));
    }
    check_len(|| "domain".to_owned(), request.domain, bounds)?;
    if request.descriptors.is_empty() {
        return Err(invalid(
            "descriptors",
            "at least one descriptor is required",
        ));
    }
    if u64::from(request.hits_addend) > bounds.max_hits {
        return Err(invalid(
            "hits_addend",
            format!(
                "{} is over the maximum of {}",
                request.hits_addend, bounds.max_hits
            ),
        ));
    }
    for (i, descriptor) in request.descriptors.iter().enumerate() {
        check_descriptor(i, descriptor, bounds)?;
    }
    Ok(Call {
        domain: request.domain,
        descriptors: Cow::Borrowed(&request.descriptors),
        hits: request.hits_addend,
    })
}

fn check_descriptor(
    index: usize,
    descriptor: &WireDescriptor<'_>,
    bounds: &RequestBounds,
) -> Result<(), InvalidRequest> {
    let field = |name: &str| format!("descriptors[{index}].{name}");
    if descriptor.entries.is_empty() {
        return Err(invalid(field("entries"), "at least one entry is required"));
    }
    for (j, &(key, value)) in descriptor.entries.iter().enumerate() {
        let key_field = || field(&format!("entries[{j}].key"));
        if key.is_empty() {
            return Err(invalid(key_field(), "must not be empty"));
        }
        check_len(key_field, key, bounds)?;
        check_len(|| field(&format!("entries[{j}].value")), value, bounds)?;
    }
    if let Some(h) = descriptor.hits_addend.filter(|&h| h > bounds.max_hits) {
        return Err(invalid(
            field("hits_addend"),
            format!("{h} is over the maximum of {}", bounds.max_hits),
        ));
    }
    if let Some(o) = &descriptor.limit
        && override_unit(o.unit).is_none()
    {
        return Err(invalid(field("limit.unit"), "must be a known unit"));
    }
    Ok(())
}

/// The wire descriptor as the engine reads it, in place. An override with an unknown unit
/// reads as no override: [`to_call`], the service's way in, refuses such a request first.
impl Descriptor for WireDescriptor<'_> {
    fn entries(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + Clone {
        self.entries.iter().copied()
    }
    fn limit_override(&self) -> Option<LimitOverride> {
        let o = self.limit?;
        Some(LimitOverride {
            requests_per_unit: o.requests_per_unit,
            unit: override_unit(o.unit)?,
        })
    }
    fn hits(&self) -> Option<u64> {
        self.hits_addend
    }
    fn refund(&self) -> bool {
        self.is_negative_hits
    }
    fn settle(&self) -> bool {
        false // the wire has no way to ask for a settlement
    }
}

/// `field` names the field only when there is something to report: no formatting per call.
fn check_len(
    field: impl FnOnce() -> String,
    value: &str,
    bounds: &RequestBounds,
) -> Result<(), InvalidRequest> {
    if value.len() > bounds.max_string_bytes {
        return Err(invalid(
            field(),
            format!(
                "{} bytes, at most {} allowed",
                value.len(),
                bounds.max_string_bytes
            ),
        ));
    }
    Ok(())
}

fn override_unit(raw: i32) -> Option<Unit> {
    match RateLimitUnit::try_from(raw).ok()? {
        RateLimitUnit::Unknown => None,
        RateLimitUnit::Second => Some(Unit::Second),
        RateLimitUnit::Minute => Some(Unit::Minute),
        RateLimitUnit::Hour => Some(Unit::Hour),
        RateLimitUnit::Day => Some(Unit::Day),
        RateLimitUnit::Month => Some(Unit::Month),
        RateLimitUnit::Year => Some(Unit::Year),
    }
}
