//! `tollgate check`: a small gRPC client that asks a rate-limit service one question and prints
//! the answer, for operators and scripts.

use std::fmt::Write;

use crate::proto::rate_limit_descriptor::Entry;
use crate::proto::rate_limit_response::{Code, rate_limit::Unit};
use crate::proto::{
    RateLimitDescriptor, RateLimitRequest, RateLimitResponse, RateLimitServiceClient,
};

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("descriptor '{0}' is not of the form key=value[,key2=value2]")]
    BadDescriptor(String),
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: tonic::transport::Error,
    },
    #[error("the service answered {}: {}", .0.code(), .0.message())]
    Call(#[from] tonic::Status),
}

/// Parses `k=v,k2=v2` into a descriptor's entries.
pub fn parse_descriptor(text: &str) -> Result<RateLimitDescriptor, CheckError> {
    let entries = text
        .split(',')
        .map(|pair| {
            pair.split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .map(|(k, v)| Entry {
                    key: k.to_owned(),
                    value: v.to_owned(),
                })
                .ok_or_else(|| CheckError::BadDescriptor(text.to_owned()))
        })
        .collect::<Result<_, _>>()?;
    Ok(RateLimitDescriptor {
        entries,
        ..Default::default()
    })
}

pub async fn check(addr: &str, request: RateLimitRequest) -> Result<RateLimitResponse, CheckError> {
    let mut client = RateLimitServiceClient::connect(addr.to_owned())
        .await
        .map_err(|source| CheckError::Connect {
            addr: addr.to_owned(),
            source,
        })?;
    Ok(client.should_rate_limit(request).await?.into_inner())
}

/// One line for the overall code, then one per descriptor.
pub fn render(request: &RateLimitRequest, response: &RateLimitResponse) -> String {
    let code = |c: i32| Code::try_from(c).map_or("INVALID", |c| c.as_str_name());
    let mut out = format!("{}\n", code(response.overall_code));
    for (descriptor, status) in request.descriptors.iter().zip(&response.statuses) {
        let entries: Vec<String> = descriptor
            .entries
            .iter()
            .map(|e| format!("{}={}", e.key, e.value))
            .collect();
        let _ = write!(out, "  {}: {}", entries.join(","), code(status.code));
        if let Some(limit) = &status.current_limit {
            let unit = Unit::try_from(limit.unit).map_or("?", |u| u.as_str_name());
            let _ = write!(
                out,
                " limit={}/{}{} remaining={}",
                limit.requests_per_unit,
                unit.to_ascii_lowercase(),
                if limit.name.is_empty() {
                    String::new()
                } else {
                    format!(" name={}", limit.name)
                },
                status.limit_remaining
            );
        }
        if let Some(reset) = &status.duration_until_reset {
            let _ = write!(
                out,
                " reset={}.{:03}s",
                reset.seconds,
                reset.nanos / 1_000_000
            );
        }
        out.push('\n');
    }
    out
}
