//! CORS for browser callers (an extension, a web page): only listed origins, exact match.
//! A browser call from any other origin is refused before anything is spent, so no other page
//! can spend a user's budget from their browser; callers sending no `Origin` are not browsers.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::config::Cors;
use super::reply::ApiError;

/// Request headers a preflight may ask for: what OpenAI's SDKs send.
const ALLOWED_HEADERS: &[&str] = &[
    "authorization",
    "content-type",
    "accept",
    "openai-beta",
    "openai-organization",
    "openai-project",
    "x-request-id",
];

/// Headers a page's script may read from the answers.
const EXPOSED: &str =
    "retry-after, ratelimit, ratelimit-policy, x-should-retry, x-request-id, openai-processing-ms";

pub enum Origin {
    /// No `Origin` header: not a browser's cross-origin call.
    None,
    Allowed(HeaderValue),
    Refused,
}

impl Cors {
    pub fn origin(&self, headers: &HeaderMap) -> Origin {
        match headers.get(header::ORIGIN) {
            None => Origin::None,
            Some(origin)
                if self
                    .allowed_origins
                    .iter()
                    .any(|o| o.as_bytes() == origin.as_bytes()) =>
            {
                Origin::Allowed(origin.clone())
            }
            Some(_) => Origin::Refused,
        }
    }

    /// The answer to a preflight for a path the proxy serves with `methods`; [`decorate`] adds
    /// the origin headers, as it does to every answer.
    pub fn preflight(
        &self,
        methods: &str,
        request: &HeaderMap,
        token_header: Option<&str>,
    ) -> Response {
        let asked = request
            .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let allowed: Vec<String> = asked
            .split(',')
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| {
                ALLOWED_HEADERS.contains(&h.as_str())
                    || h.starts_with("x-stainless-")
                    || Some(h.as_str()) == token_header
            })
            .collect();
        let mut response = StatusCode::NO_CONTENT.into_response();
        let headers = response.headers_mut();
        if let Ok(methods) = HeaderValue::try_from(methods) {
            headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, methods);
        }
        if let Ok(allowed) = HeaderValue::try_from(allowed.join(", ")) {
            headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, allowed);
        }
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from(self.max_age_secs),
        );
        response
    }
}

/// Marks an answer to an allowed origin as readable by it.
pub fn decorate(origin: &Origin, headers: &mut HeaderMap) {
    if let Origin::Allowed(origin) = origin {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        headers.insert(header::VARY, HeaderValue::from_static("origin"));
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSED),
        );
    }
}

/// The answer to a browser call from an origin that is not listed.
pub fn refused() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "invalid_request_error",
        "This origin may not call this service.",
    )
    .code("origin_not_allowed")
}
