//! What the proxy answers by itself: errors in OpenAI's envelope
//! (`{"error":{"message","type","param","code"}}`), so SDKs surface them as they would
//! OpenAI's own, and the rate-limit feedback headers in the IETF draft's syntax.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::config::Unit;
use crate::engine::{Code, Decision, DescriptorStatus, ReportedLimit};

pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
pub const SHOULD_RETRY: HeaderName = HeaderName::from_static("x-should-retry");

/// An answer in OpenAI's error shape.
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub code: Option<&'static str>,
    pub param: Option<&'static str>,
    pub message: String,
    /// Boxed: most errors carry none, and results stay small.
    pub headers: Box<HeaderMap>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            kind,
            code: None,
            param: None,
            message: message.into(),
            headers: Box::default(),
        }
    }

    pub fn code(mut self, code: &'static str) -> ApiError {
        self.code = Some(code);
        self
    }

    pub fn param(mut self, param: &'static str) -> ApiError {
        self.param = Some(param);
        self
    }

    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    pub fn not_found(method: &str, path: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("Invalid URL ({method} {path}): this proxy does not serve it"),
        )
        .code("unknown_url")
    }

    pub fn unavailable(message: impl Into<String>, code: &'static str) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", message).code(code)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }});
        let mut response = (self.status, axum::Json(body)).into_response();
        response.headers_mut().extend(*self.headers);
        response
    }
}

/// The decision's descriptors, each with the name it is shown under.
pub struct Feedback<'a> {
    pub decision: &'a Decision,
    /// The statuses from this index on are token budgets (their units are tokens, not
    /// requests): the proxy asks its request descriptors first.
    pub tokens_from: usize,
    /// The tokens the call reserved (its worst case), 0 without token budgets.
    pub reserved: u64,
}

impl Feedback<'_> {
    /// `RateLimit-Policy` and `RateLimit` for every status that reports a limit. Global caps
    /// have no status of their own, so their volume never shows.
    pub fn headers(&self, headers: &mut HeaderMap) {
        let mut policy = Vec::new();
        let mut state = Vec::new();
        for (name, status, _) in self.named() {
            let Some(limit) = &status.current_limit else {
                continue;
            };
            let name = sf_string(&name);
            policy.push(format!(
                "{name};q={};w={}",
                limit.requests_per_unit,
                limit.unit.seconds()
            ));
            let reset = status.duration_until_reset.map_or(0, ceil_secs);
            state.push(format!("{name};r={};t={reset}", status.limit_remaining));
        }
        if !policy.is_empty()
            && let Ok(value) = HeaderValue::try_from(policy.join(", "))
        {
            headers.insert(RATELIMIT_POLICY, value);
        }
        if !state.is_empty()
            && let Ok(value) = HeaderValue::try_from(state.join(", "))
        {
            headers.insert(RATELIMIT, value);
        }
    }

    /// Each status with its limit's name (or a stable generated one) and whether it is a
    /// token budget.
    fn named(&self) -> impl Iterator<Item = (String, &DescriptorStatus, bool)> {
        let tokens_from = self.tokens_from;
        self.decision
            .statuses
            .iter()
            .enumerate()
            .map(move |(i, status)| {
                let is_tokens = i >= tokens_from;
                let (kind, index) = if is_tokens {
                    ("tokens", i - tokens_from)
                } else {
                    ("requests", i)
                };
                let name = match &status.current_limit {
                    Some(ReportedLimit {
                        name: Some(name), ..
                    }) => name.to_string(),
                    Some(limit) => format!("{kind}-{index}-per-{}", limit.unit.as_str()),
                    None => String::new(),
                };
                (name, status, is_tokens)
            })
    }

    /// The 429 for a denied call: which limit, when to retry, and whether to.
    pub fn denial(&self) -> ApiError {
        let decision = self.decision;
        let denying: Vec<(String, &DescriptorStatus, bool)> = self
            .named()
            .filter(|(_, status, _)| status.code == Code::OverLimit)
            .collect();
        // The call fits again only once every denying limit has reset.
        let wait: Option<Duration> = if denying
            .iter()
            .any(|(_, s, _)| s.duration_until_reset.is_none())
        {
            None
        } else {
            denying
                .iter()
                .filter_map(|(_, s, _)| s.duration_until_reset)
                .max()
        };
        let long = |unit: Unit| unit.seconds() >= Unit::Day.seconds();
        // A global cap counts calls; under it every status shows 0 left, tokens or not.
        let by_tokens = decision.denied_by_global.is_none() && denying.iter().any(|(_, _, t)| *t);
        let mut message = match (&decision.denied_by_global, denying.first()) {
            (Some(cap), _) => format!(
                "The service's shared budget '{cap}' is used up for now; this is not your own limit."
            ),
            (None, Some((name, status, tokens))) => match &status.current_limit {
                Some(limit) => format!(
                    "Rate limit reached for '{name}': {} {} per {}.",
                    limit.requests_per_unit,
                    if *tokens { "tokens" } else { "requests" },
                    limit.unit.as_str(),
                ),
                None => "Rate limit reached.".to_owned(),
            },
            (None, None) => "Rate limit reached.".to_owned(),
        };
        match wait {
            Some(wait) => message.push_str(&format!(" Try again in {}s.", ceil_secs(wait))),
            None if by_tokens => message.push_str(&format!(
                " This call's worst case ({} tokens: its prompt and its output cap) is more than \
                 the budget can ever hold; ask for fewer output tokens.",
                self.reserved
            )),
            None => message.push_str(" This call cannot fit in the limit however long you wait."),
        }
        let mut error = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            if by_tokens { "tokens" } else { "requests" },
            message,
        )
        .code("rate_limit_exceeded");
        if let Some(wait) = wait {
            error.headers.insert(
                axum::http::header::RETRY_AFTER,
                HeaderValue::from(ceil_secs(wait)),
            );
        }
        let hopeless = wait.is_none_or(|wait| wait > Duration::from_secs(60))
            || decision.denied_by_global.is_some()
            || denying.iter().any(|(_, s, _)| {
                s.current_limit
                    .as_ref()
                    .is_some_and(|limit| long(limit.unit))
            });
        if hopeless {
            // OpenAI's SDKs retry 429s by themselves, and wait at most 60 s for Retry-After.
            error
                .headers
                .insert(SHOULD_RETRY, HeaderValue::from_static("false"));
        }
        self.headers(&mut error.headers);
        error
    }
}

/// Whole seconds, rounded up, at least 1 while anything is left: a client told 0 retries
/// into the same window.
fn ceil_secs(d: Duration) -> u64 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    secs.max(1)
}

/// A structured-field string: quoted, with `"` and `\` escaped, non-ASCII dropped.
fn sf_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars().filter(|c| (' '..='~').contains(c)) {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ReportedLimit;

    fn status(
        code: Code,
        name: Option<&str>,
        rpu: u32,
        unit: Unit,
        left: u32,
        reset: Option<u64>,
    ) -> DescriptorStatus {
        DescriptorStatus {
            code,
            current_limit: Some(ReportedLimit {
                name: name.map(str::to_owned),
                requests_per_unit: rpu,
                unit,
            }),
            limit_remaining: left,
            duration_until_reset: reset.map(Duration::from_secs),
        }
    }

    fn decision(code: Code, statuses: Vec<DescriptorStatus>) -> Decision {
        Decision {
            code,
            statuses,
            denied_by_global: None,
        }
    }

    #[test]
    fn headers_follow_the_draft_syntax() {
        let d = decision(
            Code::Ok,
            vec![
                status(Code::Ok, Some("ip-minute"), 5, Unit::Minute, 3, Some(41)),
                status(Code::Ok, None, 1000, Unit::Day, 900, Some(3600)),
            ],
        );
        let mut headers = HeaderMap::new();
        Feedback {
            decision: &d,
            tokens_from: 1,
            reserved: 0,
        }
        .headers(&mut headers);
        assert_eq!(
            headers[RATELIMIT_POLICY],
            "\"ip-minute\";q=5;w=60, \"tokens-0-per-day\";q=1000;w=86400"
        );
        assert_eq!(
            headers[RATELIMIT],
            "\"ip-minute\";r=3;t=41, \"tokens-0-per-day\";r=900;t=3600"
        );
    }

    #[test]
    fn a_denial_waits_for_every_denying_limit() {
        let d = decision(
            Code::OverLimit,
            vec![
                status(
                    Code::OverLimit,
                    Some("ip-minute"),
                    5,
                    Unit::Minute,
                    0,
                    Some(41),
                ),
                status(Code::Ok, Some("ip-day"), 200, Unit::Day, 10, Some(5000)),
            ],
        );
        let error = Feedback {
            decision: &d,
            tokens_from: usize::MAX,
            reserved: 0,
        }
        .denial();
        assert_eq!(error.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(error.headers[axum::http::header::RETRY_AFTER], "41");
        assert!(!error.headers.contains_key(SHOULD_RETRY));
        assert!(
            error.message.contains("'ip-minute': 5 requests per minute"),
            "{}",
            error.message
        );
    }

    #[test]
    fn day_global_and_hopeless_denials_say_do_not_retry() {
        let day = decision(
            Code::OverLimit,
            vec![status(
                Code::OverLimit,
                Some("ip-day"),
                200,
                Unit::Day,
                0,
                Some(30),
            )],
        );
        let error = Feedback {
            decision: &day,
            tokens_from: usize::MAX,
            reserved: 0,
        }
        .denial();
        assert_eq!(error.headers[SHOULD_RETRY], "false");

        let mut global = decision(
            Code::OverLimit,
            vec![status(
                Code::OverLimit,
                Some("ip-minute"),
                5,
                Unit::Minute,
                0,
                Some(20),
            )],
        );
        global.denied_by_global = Some("service-day".into());
        let error = Feedback {
            decision: &global,
            tokens_from: usize::MAX,
            reserved: 0,
        }
        .denial();
        assert_eq!(error.headers[SHOULD_RETRY], "false");
        assert!(error.message.contains("service-day"));

        let never = decision(
            Code::OverLimit,
            vec![status(
                Code::OverLimit,
                Some("zero"),
                0,
                Unit::Minute,
                0,
                None,
            )],
        );
        let error = Feedback {
            decision: &never,
            tokens_from: usize::MAX,
            reserved: 0,
        }
        .denial();
        assert!(!error.headers.contains_key(axum::http::header::RETRY_AFTER));
        assert_eq!(error.headers[SHOULD_RETRY], "false");
    }

    #[test]
    fn names_are_quoted_safely() {
        assert_eq!(sf_string("a\"b\\c\u{e9}"), "\"a\\\"b\\\\c\"");
        assert_eq!(ceil_secs(Duration::from_millis(1500)), 2);
        assert_eq!(ceil_secs(Duration::ZERO), 1);
    }

    #[test]
    fn a_global_denial_is_about_requests_and_a_hopeless_reservation_says_why() {
        let mut global = decision(
            Code::OverLimit,
            vec![status(
                Code::OverLimit,
                Some("client-tokens"),
                1000,
                Unit::Day,
                0,
                Some(50),
            )],
        );
        global.denied_by_global = Some("service-day".into());
        let error = Feedback {
            decision: &global,
            tokens_from: 0,
            reserved: 0,
        }
        .denial();
        assert_eq!(error.kind, "requests");

        let too_big = decision(
            Code::OverLimit,
            vec![status(
                Code::OverLimit,
                Some("client-tokens"),
                500,
                Unit::Day,
                0,
                None,
            )],
        );
        let error = Feedback {
            decision: &too_big,
            tokens_from: 0,
            reserved: 1200,
        }
        .denial();
        assert_eq!(error.kind, "tokens");
        assert!(
            error.message.contains("worst case (1200 tokens"),
            "{}",
            error.message
        );
        assert!(
            error.message.contains("fewer output tokens"),
            "{}",
            error.message
        );
    }
}
