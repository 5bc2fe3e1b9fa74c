//! Asking for a decision: the engine in this process, or any Envoy-compatible rate-limit
//! service over gRPC (the thin client). Both answer with an engine [`Decision`]; anything that
//! is not a well-formed answer in time is a [`LimiterError`], which the proxy fails closed on.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::config::Unit;
use crate::engine::{
    Call, Code, Decision, Descriptor, DescriptorStatus, Engine, EngineError, LimitOverride,
    ReportedLimit,
};
use crate::proto::rate_limit_descriptor::Entry;
use crate::proto::rate_limit_response::{self, rate_limit::Unit as WireUnit};
use crate::proto::{
    RateLimitDescriptor, RateLimitRequest, RateLimitResponse, RateLimitServiceClient,
};
use crate::wire::response::GLOBAL_CAP_METADATA_KEY;

/// One descriptor of a question, owned (the proxy builds it from a template per call). The
/// engine in this process reads it in place ([`Descriptor`]); the thin client copies it into a
/// wire request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ask {
    pub entries: Vec<(String, String)>,
    /// The descriptor's own hits; `None` is one request.
    pub hits: Option<u64>,
    pub refund: bool,
    /// The hits are a cost already incurred (see [`crate::engine::CallDescriptor::settle`]).
    /// Only the engine in this process honours it: the wire has no way to ask for it, so over
    /// gRPC such an ask is a plain charge.
    pub settle: bool,
}

impl Ask {
    pub fn charge(entries: Vec<(String, String)>, hits: Option<u64>) -> Ask {
        Ask {
            entries,
            hits,
            refund: false,
            settle: false,
        }
    }
}

impl Descriptor for Ask {
    fn entries(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + Clone {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
    fn limit_override(&self) -> Option<LimitOverride> {
        None
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

/// How long a settlement may take over gRPC: it is off the call's path, so it can wait for a
/// busy service far longer than a decision can.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum LimiterError {
    #[error("the rate-limit service did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the rate-limit service failed: {0}")]
    Status(#[from] tonic::Status),
    #[error("the rate-limit service's answer makes no sense: {0}")]
    Garbage(&'static str),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

#[derive(Debug, thiserror::Error)]
pub enum RemoteAddrError {
    #[error("'{0}' needs its scheme: http://{0}")]
    NoScheme(String),
    #[error(transparent)]
    Invalid(#[from] tonic::transport::Error),
}

#[derive(Clone)]
pub enum Limiter {
    InProcess(Arc<Engine>),
    Remote(Remote),
}

#[derive(Clone)]
pub struct Remote {
    client: RateLimitServiceClient<Channel>,
    timeout: Duration,
}

impl Remote {
    /// A client of the service at `addr` (`http://host:port`). Connects lazily and reconnects
    /// by itself, so a service that starts later, or restarts, is picked up.
    pub fn new(addr: &str, timeout: Duration) -> Result<Remote, RemoteAddrError> {
        if !(addr.starts_with("http://") || addr.starts_with("https://")) {
            return Err(RemoteAddrError::NoScheme(addr.to_owned()));
        }
        let channel = Endpoint::from_shared(addr.to_owned())?
            .connect_timeout(timeout.max(Duration::from_millis(200)))
            .tcp_nodelay(true)
            .connect_lazy();
        Ok(Remote {
            client: RateLimitServiceClient::new(channel),
            timeout,
        })
    }
}

impl Limiter {
    /// Whether it decides in this process: then each of its futures (`decide`, `refund`,
    /// `charge_excess`) completes on its first poll, as the engine never awaits, so a caller
    /// may drive one to its end at once instead of spawning it.
    pub fn decides_in_process(&self) -> bool {
        match self {
            Limiter::InProcess(_) => true,
            Limiter::Remote(_) => false,
        }
    }

    pub async fn decide(&self, domain: &str, asks: &[Ask]) -> Result<Decision, LimiterError> {
        match self {
            Limiter::InProcess(engine) => Ok(engine.should_rate_limit(&call(domain, asks))?),
            Limiter::Remote(remote) => remote.ask(domain, asks, remote.timeout).await,
        }
    }

    /// Gives `hits` back on each descriptor (a reservation larger than the real cost).
    pub async fn refund(
        &self,
        domain: &str,
        descriptors: &[Vec<(String, String)>],
        hits: u64,
    ) -> Result<(), LimiterError> {
        let asks: Vec<Ask> = descriptors
            .iter()
            .map(|entries| Ask {
                refund: true,
                ..Ask::charge(entries.clone(), Some(hits))
            })
            .collect();
        match self {
            Limiter::InProcess(engine) => {
                engine.should_rate_limit_with(&call(domain, &asks), |_| ())?;
            }
            Limiter::Remote(remote) => {
                remote.ask(domain, &asks, SETTLE_TIMEOUT).await?;
            }
        }
        Ok(())
    }

    /// Counts `hits` more on each descriptor: a cost already incurred beyond its reservation.
    /// In-process it is counted whatever the limits say, and is no call of the global caps.
    /// Over the wire it is a plain charge; refused, it is replaced by a charge of what is
    /// left, so the budget at least ends at its limit. Returns whether all of it was counted.
    pub async fn charge_excess(
        &self,
        domain: &str,
        descriptors: &[Vec<(String, String)>],
        hits: u64,
    ) -> Result<bool, LimiterError> {
        let asks: Vec<Ask> = descriptors
            .iter()
            .map(|entries| Ask {
                settle: true,
                ..Ask::charge(entries.clone(), Some(hits))
            })
            .collect();
        let remote = match self {
            // Refused only when the key table is full and a limit fails closed.
            Limiter::InProcess(engine) => {
                let code = engine.should_rate_limit_with(&call(domain, &asks), |d| d.code)?;
                return Ok(code == Code::Ok);
            }
            Limiter::Remote(remote) => remote,
        };
        if remote.ask(domain, &asks, SETTLE_TIMEOUT).await?.code == Code::Ok {
            return Ok(true);
        }
        for entries in descriptors {
            let probe = [Ask::charge(entries.clone(), Some(0))];
            let left = remote.ask(domain, &probe, SETTLE_TIMEOUT).await?;
            let left = left.statuses.first().map_or(0, |s| s.limit_remaining);
            if left > 0 {
                let rest = [Ask::charge(entries.clone(), Some(u64::from(left)))];
                if remote.ask(domain, &rest, SETTLE_TIMEOUT).await?.code != Code::Ok {
                    tracing::warn!("the rest of a token budget could not be charged either");
                }
            }
        }
        Ok(false)
    }
}

impl Remote {
    async fn ask(
        &self,
        domain: &str,
        asks: &[Ask],
        timeout: Duration,
    ) -> Result<Decision, LimiterError> {
        let mut request = tonic::Request::new(to_request(domain, asks));
        request.set_timeout(timeout);
        let mut client = self.client.clone();
        let answer = tokio::time::timeout(timeout, client.should_rate_limit(request))
            .await
            .map_err(|_| LimiterError::Timeout(timeout))??;
        from_response(answer.into_inner(), asks.len())
    }
}

/// The asks as a call of the engine in this process, borrowed as they are.
fn call<'a>(domain: &'a str, asks: &'a [Ask]) -> Call<'a, Ask> {
    Call {
        domain,
        descriptors: Cow::Borrowed(asks),
        hits: 0,
    }
}

fn to_request(domain: &str, asks: &[Ask]) -> RateLimitRequest {
    RateLimitRequest {
        domain: domain.to_owned(),
        descriptors: asks
            .iter()
            .map(|ask| RateLimitDescriptor {
                entries: ask
                    .entries
                    .iter()
                    .map(|(key, value)| Entry {
                        key: key.clone(),
                        value: value.clone(),
                    })
                    .collect(),
                hits_addend: ask.hits,
                is_negative_hits: ask.refund,
                ..Default::default()
            })
            .collect(),
        hits_addend: 0,
    }
}

fn from_response(response: RateLimitResponse, asked: usize) -> Result<Decision, LimiterError> {
    let code = code(response.overall_code)?;
    // The reference service answers one status per descriptor; fewer would leave a limit
    // unexplained, so it is not an answer to this question.
    if response.statuses.len() != asked {
        return Err(LimiterError::Garbage("not one status per descriptor"));
    }
    let statuses = response
        .statuses
        .into_iter()
        .map(|status| {
            Ok(DescriptorStatus {
                code: code_of_status(status.code)?,
                current_limit: status.current_limit.and_then(reported_limit),
                limit_remaining: status.limit_remaining,
                duration_until_reset: status
                    .duration_until_reset
                    .map(
                        |d| match (u64::try_from(d.seconds), u32::try_from(d.nanos)) {
                            (Ok(secs), Ok(nanos)) if nanos < 1_000_000_000 => {
                                Ok(Duration::new(secs, nanos))
                            }
                            _ => Err(LimiterError::Garbage("a negative duration_until_reset")),
                        },
                    )
                    .transpose()?,
            })
        })
        .collect::<Result<_, LimiterError>>()?;
    let denied_by_global = response
        .dynamic_metadata
        .and_then(|metadata| metadata.fields.get(GLOBAL_CAP_METADATA_KEY).cloned())
        .and_then(|value| match value.kind {
            Some(prost_types::value::Kind::StringValue(name)) => Some(name),
            _ => None,
        });
    Ok(Decision {
        code,
        statuses,
        denied_by_global,
    })
}

fn code(wire: i32) -> Result<Code, LimiterError> {
    match rate_limit_response::Code::try_from(wire) {
        Ok(rate_limit_response::Code::Ok) => Ok(Code::Ok),
        Ok(rate_limit_response::Code::OverLimit) => Ok(Code::OverLimit),
        _ => Err(LimiterError::Garbage(
            "overall_code is neither OK nor OVER_LIMIT",
        )),
    }
}

/// A status's code; UNKNOWN in a status (the reference sends it for no limit) reads as OK.
fn code_of_status(wire: i32) -> Result<Code, LimiterError> {
    match rate_limit_response::Code::try_from(wire) {
        Ok(rate_limit_response::Code::OverLimit) => Ok(Code::OverLimit),
        Ok(_) => Ok(Code::Ok),
        Err(_) => Err(LimiterError::Garbage("a status has an unknown code")),
    }
}

fn reported_limit(limit: rate_limit_response::RateLimit) -> Option<ReportedLimit> {
    let unit = match WireUnit::try_from(limit.unit).ok()? {
        WireUnit::Second => Unit::Second,
        WireUnit::Minute => Unit::Minute,
        WireUnit::Hour => Unit::Hour,
        WireUnit::Day => Unit::Day,
        WireUnit::Week => Unit::Week,
        WireUnit::Month => Unit::Month,
        WireUnit::Year => Unit::Year,
        WireUnit::Unknown => return None,
    };
    Some(ReportedLimit {
        name: (!limit.name.is_empty()).then_some(limit.name),
        requests_per_unit: limit.requests_per_unit,
        unit,
    })
}
