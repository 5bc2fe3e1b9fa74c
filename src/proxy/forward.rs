//! Forwarding an allowed call: the request with the server's key and only the headers the
//! upstream needs, and the answer streamed back as it arrives (SSE event by event), with what
//! discloses the account stripped and the usage read on the way for the token settlement.

use std::collections::VecDeque;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use bytes::{Bytes, BytesMut};

use super::reply::ApiError;
use super::route::RouteKind;
use super::settle::Reservation;
use super::sse::{EventSplitter, parse_event};
use super::streams::Slot;
use super::usage;

/// Client headers passed upstream; everything else (the client's key, organization and project,
/// cookies, forwarding and hop-by-hop headers, `accept-encoding`) stays here.
const PASSED: &[&str] = &["content-type", "accept", "user-agent", "openai-beta"];

/// Upstream headers not passed back: hop-by-hop ones, the body's framing (re-done here), and
/// what discloses the account (its organization, project and rate limits) or sets cookies.
fn withheld(name: &HeaderName) -> bool {
    const WITHHELD: &[&str] = &[
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "proxy-authenticate",
        "content-length",
        "set-cookie",
        "openai-organization",
        "openai-project",
    ];
    WITHHELD.contains(&name.as_str()) || name.as_str().starts_with("x-ratelimit-")
}

/// The largest JSON answer read for its usage; a bigger one is passed on unread, keeping the
/// reservation whole.
const MAX_USAGE_SCAN: usize = 16 << 20;
/// The largest SSE event; a bigger one ends the stream (no OpenAI event is near it).
const MAX_EVENT: usize = 4 << 20;

pub struct Upstream {
    pub client: reqwest::Client,
    pub base: reqwest::Url,
    pub api_key: HeaderValue,
    pub organization: Option<HeaderValue>,
    pub project: Option<HeaderValue>,
    pub response_timeout: Duration,
    pub idle_timeout: Duration,
}

/// How the answer's body is read on its way back.
pub struct Reading {
    pub kind: RouteKind,
    /// Strip the usage-only chunk the proxy asked for on the client's behalf.
    pub strip_usage_chunk: bool,
    pub reservation: Option<Reservation>,
    pub slot: Option<Slot>,
}

impl Upstream {
    pub fn url(&self, path: &str, query: Option<&str>) -> reqwest::Url {
        let mut url = self.base.clone();
        let base = self.base.path().trim_end_matches('/');
        url.set_path(&format!("{base}{path}"));
        url.set_query(query);
        url
    }

    fn headers(&self, client: &HeaderMap) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for &name in PASSED {
            for value in client.get_all(name) {
                headers.append(HeaderName::from_static(name), value.clone());
            }
        }
        headers.insert(header::AUTHORIZATION, self.api_key.clone());
        if let Some(organization) = &self.organization {
            headers.insert("openai-organization", organization.clone());
        }
        if let Some(project) = &self.project {
            headers.insert("openai-project", project.clone());
        }
        headers
    }

    /// Sends the call and returns the answer to stream back. An upstream that cannot be reached
    /// is a 502 in OpenAI's shape (the tokens given back), one that does not answer in time a
    /// 504 (the tokens kept: it may be working on the call, and bill it).
    pub async fn forward(
        &self,
        method: Method,
        url: reqwest::Url,
        client_headers: &HeaderMap,
        body: Bytes,
        mut reading: Reading,
    ) -> Result<(StatusCode, HeaderMap, Body), ApiError> {
        let request = self
            .client
            .request(method, url)
            .headers(self.headers(client_headers))
            .body(body);
        let sent = tokio::time::timeout(self.response_timeout, request.send()).await;
        let response = match sent {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => {
                // Only a call that never reached the upstream is surely free; one that broke
                // after it was sent may be billed, so it keeps its reservation.
                if e.is_connect()
                    && let Some(reservation) = &mut reading.reservation
                {
                    reservation.nothing_used();
                }
                tracing::warn!(error = %error_chain(&e), "upstream unreachable");
                return Err(ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "server_error",
                    "The upstream API could not be reached.",
                )
                .code("upstream_unreachable"));
            }
            // The upstream may be working on it still, and bill it: the reservation stays.
            Err(_) => {
                return Err(ApiError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "server_error",
                    format!(
                        "The upstream API did not answer within {} ms.",
                        self.response_timeout.as_millis()
                    ),
                )
                .code("upstream_timeout"));
            }
        };
        let status = response.status();
        let mut headers = HeaderMap::new();
        for (name, value) in response.headers() {
            if !withheld(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        if !status.is_success() {
            // OpenAI bills no tokens for a call it refused or failed.
            if let Some(reservation) = &mut reading.reservation {
                reservation.nothing_used();
            }
            let body = redacted_error(response, self.idle_timeout).await;
            headers.remove(header::CONTENT_ENCODING);
            return Ok((status, headers, Body::from(body)));
        }
        let is_sse = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let inspector = match (
            reading.reservation.is_some() || reading.strip_usage_chunk,
            is_sse,
        ) {
            (false, _) => Inspector::Pass,
            (true, true) => Inspector::Events(EventSplitter::new(MAX_EVENT)),
            (true, false) => Inspector::Json(BytesMut::new()),
        };
        let relay = Relay {
            response,
            inspector,
            pending: VecDeque::new(),
            idle_timeout: self.idle_timeout,
            reading,
            done: false,
            failed: None,
        };
        Ok((status, headers, Body::from_stream(relay.into_stream())))
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

enum Inspector {
    Pass,
    /// A JSON answer, kept (up to a bound) to read its usage at the end.
    Json(BytesMut),
    Events(EventSplitter),
}

/// The answer on its way back. Dropping it (the client went away) drops the upstream
/// response, which closes that connection and so cancels the upstream call.
struct Relay {
    response: reqwest::Response,
    inspector: Inspector,
    pending: VecDeque<Bytes>,
    idle_timeout: Duration,
    reading: Reading,
    done: bool,
    /// Why the stream must end in an error once what is pending has gone.
    failed: Option<String>,
}

impl Relay {
    fn into_stream(self) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
        futures_util::stream::unfold(self, |mut relay| async move {
            loop {
                if let Some(next) = relay.pending.pop_front() {
                    return Some((Ok(next), relay));
                }
                if let Some(failure) = relay.failed.take() {
                    return Some((Err(std::io::Error::other(failure)), relay));
                }
                if relay.done {
                    return None;
                }
                match tokio::time::timeout(relay.idle_timeout, relay.response.chunk()).await {
                    Ok(Ok(Some(chunk))) => relay.take(chunk),
                    Ok(Ok(None)) => relay.finish(),
                    Ok(Err(e)) => {
                        relay.done = true;
                        let error = std::io::Error::other(format!("upstream body: {e}"));
                        return Some((Err(error), relay));
                    }
                    Err(_) => {
                        relay.done = true;
                        let error = std::io::Error::other("upstream went silent");
                        return Some((Err(error), relay));
                    }
                }
            }
        })
    }

    fn take(&mut self, chunk: Bytes) {
        match &mut self.inspector {
            Inspector::Pass => self.pending.push_back(chunk),
            Inspector::Json(seen) => {
                if seen.len() + chunk.len() <= MAX_USAGE_SCAN {
                    seen.extend_from_slice(&chunk);
                } else {
                    self.inspector = Inspector::Pass;
                }
                self.pending.push_back(chunk);
            }
            Inspector::Events(splitter) => match splitter.push(&chunk) {
                Ok(events) => {
                    for event in events {
                        self.event(event);
                    }
                }
                Err(e) => {
                    // Ending cleanly would pass a cut stream off as whole: abort it instead.
                    tracing::warn!(error = %e, "upstream stream aborted");
                    self.done = true;
                    self.failed = Some(e.to_string());
                }
            },
        }
    }

    /// One whole event: read for its usage, passed on unless it is the usage chunk the client
    /// did not ask for.
    fn event(&mut self, event: Bytes) {
        let Some(parsed) = parse_event(&event) else {
            self.pending.push_back(event);
            return;
        };
        let data = parsed.data.as_ref();
        let (found, strip) = match self.reading.kind {
            RouteKind::Chat => {
                let chunk = usage::chat_chunk(data);
                (
                    chunk.usage,
                    self.reading.strip_usage_chunk && chunk.usage_only,
                )
            }
            RouteKind::Responses => (usage::from_responses_event(parsed.name, data), false),
            _ => (None, false),
        };
        if let (Some(found), Some(reservation)) = (found, &mut self.reading.reservation) {
            reservation.used(found);
        }
        if !strip {
            self.pending.push_back(event);
        }
    }

    fn finish(&mut self) {
        self.done = true;
        match std::mem::replace(&mut self.inspector, Inspector::Pass) {
            Inspector::Pass => {}
            Inspector::Json(seen) => {
                if let (Some(found), Some(reservation)) =
                    (usage::from_body(&seen), &mut self.reading.reservation)
                {
                    reservation.used(found);
                }
            }
            Inspector::Events(splitter) => {
                if let Some(tail) = splitter.finish() {
                    self.pending.push_back(tail);
                }
            }
        }
        // The answer is complete: settle now, not when the client has read the last bytes.
        self.reading.reservation.take();
        self.reading.slot.take();
    }
}

/// The largest upstream error body read; a bigger one is replaced whole.
const MAX_ERROR_BODY: usize = 64 << 10;

/// What an upstream error becomes when its body cannot be read whole or is not JSON.
const GENERIC_ERROR: &[u8] =
    br#"{"error":{"message":"The upstream API failed.","type":"server_error","param":null,"code":null}}"#;

/// An upstream error's body with what identifies the account taken out of its message: OpenAI's
/// own 429s name the organization and its limits, its 401s a masked key, its 403s the project.
/// Status, `type` and `code` stay as they were; a body that cannot be read whole, in time, or
/// as JSON is replaced by a generic one rather than passed on unread.
async fn redacted_error(mut response: reqwest::Response, idle: Duration) -> Bytes {
    let mut body = BytesMut::new();
    loop {
        match tokio::time::timeout(idle, response.chunk()).await {
            Ok(Ok(Some(chunk))) if body.len() + chunk.len() <= MAX_ERROR_BODY => {
                body.extend_from_slice(&chunk);
            }
            Ok(Ok(None)) => break,
            _ => return Bytes::from_static(GENERIC_ERROR),
        }
    }
    let Ok(mut json) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return Bytes::from_static(GENERIC_ERROR);
    };
    if let Some(message) = json.pointer_mut("/error/message")
        && let Some(text) = message.as_str()
    {
        *message = serde_json::Value::from(redact(text));
    }
    Bytes::from(json.to_string())
}

/// Replaces organization, project and user ids and keys (wherever they stand: quoted, in
/// backticks, mid-sentence) and the figures that follow "Limit", "Used" and "Requested".
fn redact(message: &str) -> String {
    const IDS: &[&str] = &["org-", "proj_", "sk-", "user-"];
    const FIGURES: &[&str] = &["Limit ", "Used ", "Requested ", "limit "];
    let is_id_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '*');
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    'scan: while let Some(c) = rest.chars().next() {
        let at_word_start = !out.chars().next_back().is_some_and(is_id_char);
        if at_word_start {
            for prefix in IDS {
                if let Some(tail) = rest.strip_prefix(prefix) {
                    let len = tail.find(|c: char| !is_id_char(c)).unwrap_or(tail.len());
                    // An id has a digit or a mask in it; "user-provided" is a word.
                    if tail[..len].contains(|c: char| c.is_ascii_digit() || c == '*') {
                        out.push_str(prefix);
                        out.push_str("[redacted]");
                        rest = &tail[len..];
                        continue 'scan;
                    }
                }
            }
            for word in FIGURES {
                if let Some(tail) = rest.strip_prefix(word) {
                    let len = tail
                        .find(|c: char| !(c.is_ascii_digit() || c == ',' || c == '.'))
                        .unwrap_or(tail.len());
                    let figure = tail[..len].trim_end_matches([',', '.']);
                    if !figure.is_empty() {
                        out.push_str(word);
                        out.push_str("[redacted]");
                        rest = &tail[figure.len()..];
                        continue 'scan;
                    }
                }
            }
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn account_details_are_taken_out_of_upstream_messages() {
        let message = "Rate limit reached for gpt-4o in organization org-AbC123 on tokens per min \
                       (TPM): Limit 30000, Used 29500, Requested 1200. Visit https://x.example.";
        let redacted = redact(message);
        for secret in ["AbC123", "30000", "29500", "1200"] {
            assert!(!redacted.contains(secret), "{redacted}");
        }
        assert!(
            redacted.contains("organization org-[redacted] on tokens per min"),
            "{redacted}"
        );
        assert!(
            redacted.contains("Limit [redacted], Used [redacted]"),
            "{redacted}"
        );
        let key = redact("Incorrect API key provided: sk-proj-****abcd. You can find yours.");
        assert_eq!(
            key,
            "Incorrect API key provided: sk-[redacted]. You can find yours."
        );
        assert_eq!(redact("gpt-4o is fine"), "gpt-4o is fine");
    }
}
