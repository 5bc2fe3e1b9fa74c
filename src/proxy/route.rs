//! Which calls the proxy lets through: a route is a method and a path pattern, matched against
//! the normalised path, so `/v1//models/../chat/completions` is judged (and forwarded) as what
//! it means, `/v1/chat/completions`, and nothing can slip past the list by spelling.

use axum::http::Method;

#[derive(Clone, Debug)]
pub struct Route {
    pub method: Method,
    /// As written, e.g. `/v1/models/{model}`; also the value of the `{route}` placeholder.
    pub pattern: String,
    segments: Vec<Segment>,
    pub kind: RouteKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Exact(String),
    /// `{name}`: any one non-empty segment.
    Any,
}

/// What the proxy knows about a route's body and answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteKind {
    Chat,
    Responses,
    Embeddings,
    Other,
}

impl RouteKind {
    /// Whether a call of this kind has a token cost the proxy can bound and read back.
    pub fn has_token_cost(self) -> bool {
        matches!(
            self,
            RouteKind::Chat | RouteKind::Responses | RouteKind::Embeddings
        )
    }
}

/// The method OpenAI serves each well-known path with, for routes written without one.
const KNOWN_METHODS: &[(&str, &str)] = &[
    ("/v1/chat/completions", "POST"),
    ("/v1/responses", "POST"),
    ("/v1/embeddings", "POST"),
    ("/v1/completions", "POST"),
    ("/v1/moderations", "POST"),
    ("/v1/models", "GET"),
    ("/v1/models/{model}", "GET"),
];

impl Route {
    /// `POST /v1/chat/completions`, or a well-known path alone.
    pub fn parse(text: &str) -> Result<Route, String> {
        let text = text.trim();
        let (method, pattern) = match text.split_once(' ') {
            Some((method, path)) => (method.to_owned(), path.trim()),
            None => match KNOWN_METHODS.iter().find(|(path, _)| *path == text) {
                Some((_, method)) => ((*method).to_owned(), text),
                None => {
                    return Err(format!(
                        "route '{text}': give the method too, e.g. 'POST {text}'"
                    ));
                }
            },
        };
        let method = match method.as_str() {
            "GET" => Method::GET,
            "POST" => Method::POST,
            "DELETE" => Method::DELETE,
            other => {
                return Err(format!(
                    "route '{text}': method '{other}' is not one of GET, POST, DELETE"
                ));
            }
        };
        if !pattern.starts_with("/") || normalise_path(pattern).as_deref() != Ok(pattern) {
            return Err(format!(
                "route '{text}': the path must be absolute and normalised (no '//', '.', '..', \
                 trailing '/' or escapes)"
            ));
        }
        let segments = pattern
            .split('/')
            .skip(1)
            .map(|s| {
                if s.starts_with('{') && s.ends_with('}') {
                    Segment::Any
                } else {
                    Segment::Exact(s.to_owned())
                }
            })
            .collect();
        let kind = match pattern {
            "/v1/chat/completions" => RouteKind::Chat,
            "/v1/responses" => RouteKind::Responses,
            "/v1/embeddings" => RouteKind::Embeddings,
            _ => RouteKind::Other,
        };
        Ok(Route {
            method,
            pattern: pattern.to_owned(),
            segments,
            kind,
        })
    }

    /// Whether this route only asks a model (or lists the models): the calls a proxy exists
    /// for. Anything else reads or changes what the whole account holds (stored completions,
    /// files, vector stores, ...) or mints credentials that escape the proxy (realtime
    /// sessions), and a pattern with a `{…}` segment may match any of those.
    pub fn is_model_call(&self) -> bool {
        const MODEL_CALLS: &[(&str, &str)] = &[
            ("POST", "/v1/chat/completions"),
            ("POST", "/v1/responses"),
            ("POST", "/v1/embeddings"),
            ("POST", "/v1/completions"),
            ("POST", "/v1/moderations"),
            ("POST", "/v1/images/generations"),
            ("POST", "/v1/audio/speech"),
            ("POST", "/v1/audio/transcriptions"),
            ("POST", "/v1/audio/translations"),
            ("GET", "/v1/models"),
            ("GET", "/v1/models/{model}"),
        ];
        let any = self.segments.iter().filter(|s| **s == Segment::Any).count();
        let lists_one_model =
            self.pattern.starts_with("/v1/models/{") && any == 1 && self.segments.len() == 3;
        MODEL_CALLS.iter().any(|(method, pattern)| {
            self.method.as_str() == *method
                && (self.pattern == *pattern || (*method == "GET" && lists_one_model))
        })
    }

    /// Whether a normalised path matches this route's pattern, whatever the method.
    pub fn matches_path(&self, path: &str) -> bool {
        let mut given = path.split('/').skip(1);
        for segment in &self.segments {
            match (segment, given.next()) {
                (Segment::Exact(want), Some(got)) if want == got => {}
                (Segment::Any, Some(got)) if !got.is_empty() => {}
                _ => return false,
            }
        }
        given.next().is_none()
    }
}

impl Route {
    /// The routes served when the file lists none: the model calls, and listing models.
    pub fn defaults() -> Vec<Route> {
        [
            "POST /v1/chat/completions",
            "POST /v1/responses",
            "POST /v1/embeddings",
            "GET /v1/models",
        ]
        .iter()
        .filter_map(|text| Route::parse(text).ok())
        .collect()
    }

    pub(super) fn same_as(&self, other: &Route) -> bool {
        self.method == other.method && self.pattern == other.pattern
    }
}

/// Why a path cannot be normalised.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path climbs above the root")]
    AboveRoot,
    #[error(
        "the path has a '\\', a control or non-ASCII character, an escaped '/', or a broken escape"
    )]
    BadEscape,
}

/// Resolves `.` and `..`, collapses repeated slashes, drops a trailing slash and decodes escapes
/// of unreserved characters (`%2e` is `.`). An escaped slash, backslash or control character is
/// refused: upstreams disagree on what it means, so no reading of it is safe.
pub fn normalise_path(raw: &str) -> Result<String, PathError> {
    let decoded = decode_unreserved(raw)?;
    let mut out: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                out.pop().ok_or(PathError::AboveRoot)?;
            }
            s => out.push(s),
        }
    }
    Ok(format!("/{}", out.join("/")))
}

fn decode_unreserved(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'%' {
            let hex = raw.get(i + 1..i + 3).ok_or(PathError::BadEscape)?;
            let value = u8::from_str_radix(hex, 16).map_err(|_| PathError::BadEscape)?;
            let unreserved = value.is_ascii_alphanumeric() || b"-._~".contains(&value);
            if unreserved {
                out.push(value as char);
            } else if value.is_ascii_control() || value == b'/' || value == b'\\' {
                return Err(PathError::BadEscape);
            } else {
                // Other escapes stay escaped, as they came.
                out.push_str(&raw[i..i + 3]);
            }
            i += 3;
        } else if c == b'\\' || c.is_ascii_control() || !c.is_ascii() {
            return Err(PathError::BadEscape);
        } else {
            // Only ASCII gets here, so one byte is one character.
            out.push(c as char);
            i += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalising_resolves_what_a_path_means() {
        let cases = [
            ("/v1/chat/completions", "/v1/chat/completions"),
            ("//v1//chat/completions/", "/v1/chat/completions"),
            ("/v1/./chat/completions", "/v1/chat/completions"),
            ("/v1/models/../chat/completions", "/v1/chat/completions"),
            ("/v1/%2e%2E/v1/chat/completions", "/v1/chat/completions"),
            ("/v1/%63hat/completions", "/v1/chat/completions"),
            ("/v1/models/a%20b", "/v1/models/a%20b"),
            ("/", "/"),
        ];
        for (raw, want) in cases {
            assert_eq!(normalise_path(raw).as_deref(), Ok(want), "{raw}");
        }
    }

    #[test]
    fn normalising_refuses_what_has_no_safe_meaning() {
        assert_eq!(normalise_path("/v1/../.."), Err(PathError::AboveRoot));
        for raw in [
            "/v1%2fchat/completions",
            "/v1\\chat",
            "/v1/%zz",
            "/v1/%2",
            "/a%00",
            "/v1/ch\u{e4}t",
        ] {
            assert_eq!(normalise_path(raw), Err(PathError::BadEscape), "{raw}");
        }
    }

    #[test]
    fn routes_match_method_and_whole_path() {
        let chat = Route::parse("POST /v1/chat/completions").unwrap();
        assert_eq!(chat.kind, RouteKind::Chat);
        assert!(chat.matches_path("/v1/chat/completions"));
        assert!(!chat.matches_path("/v1/chat/completions/abc"));
        assert!(!chat.matches_path("/v1/chat"));
        let model = Route::parse("/v1/models/{model}").unwrap();
        assert_eq!(model.method, Method::GET);
        assert!(model.matches_path("/v1/models/gpt-4o"));
        assert!(!model.matches_path("/v1/models/"));
        assert!(!model.matches_path("/v1/models/a/b"));
    }

    #[test]
    fn routes_must_be_explicit() {
        assert!(
            Route::parse("/v1/files")
                .unwrap_err()
                .contains("give the method")
        );
        assert!(Route::parse("PATCH /v1/x").unwrap_err().contains("PATCH"));
        assert!(
            Route::parse("POST /v1//x")
                .unwrap_err()
                .contains("normalised")
        );
        assert!(Route::parse("POST v1/x").unwrap_err().contains("absolute"));
    }
}
