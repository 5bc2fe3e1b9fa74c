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
    /// or does not answer in time is a 502/504 in OpenAI's shape, with the tokens given back.
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
                if let Some(reservation) = &mut reading.reservation {
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
            Err(_) => {
                if let Some(reservation) = &mut reading.reservation {
                    reservation.nothing_used();
                }
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
        if !status.is_success()
            && let Some(reservation) = &mut reading.reservation
        {
            // OpenAI bills no tokens for a call it refused or failed.
            reservation.nothing_used();
        }
        let mut headers = HeaderMap::new();
        for (name, value) in response.headers() {
            if !withheld(name) {
                headers.append(name.clone(), value.clone());
            }
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
}

impl Relay {
    fn into_stream(self) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
        futures_util::stream::unfold(self, |mut relay| async move {
            loop {
                if let Some(next) = relay.pending.pop_front() {
                    return Some((Ok(next), relay));
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
                    tracing::warn!(error = %e, "upstream stream ended: event too large");
                    self.done = true;
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
            RouteKind::Chat => (
                usage::from_chat_chunk(data),
                self.reading.strip_usage_chunk && usage::is_usage_only_chunk(data),
            ),
            RouteKind::Responses => (usage::from_responses_event(data), false),
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
