//! The request body's policy, applied before anything is spent: the model allow-list, output
//! caps clamped (so every call has a bounded worst case), `store` off, the client's hashed id as
//! `safety_identifier`, and usage asked for on streams so token budgets can settle.

use bytes::Bytes;
use serde_json::{Map, Value};

use super::config::ProxyConfig;
use super::reply::ApiError;
use super::route::RouteKind;

/// A body ready to forward, and what the proxy learnt from it.
#[derive(Debug)]
pub struct Prepared {
    pub body: Bytes,
    pub model: Option<String>,
    pub stream: bool,
    /// The proxy asked for a chat stream's usage chunk on the client's behalf (the client did
    /// not), so it strips that chunk on the way back.
    pub strip_usage_chunk: bool,
    /// The most tokens the call can cost: the prompt estimate plus the clamped output.
    pub worst_case_tokens: u64,
}

pub fn prepare(
    kind: RouteKind,
    raw: Bytes,
    config: &ProxyConfig,
    safety_identifier: &str,
) -> Result<Prepared, ApiError> {
    let prompt_estimate = match &config.tokens {
        Some(tokens) => (raw.len() as u64).div_ceil(tokens.bytes_per_token),
        None => 0,
    };
    let mut body = match parse_object(kind, &raw)? {
        Some(body) => body,
        None => {
            return Ok(Prepared {
                body: raw,
                model: None,
                stream: false,
                strip_usage_chunk: false,
                worst_case_tokens: 0,
            });
        }
    };
    let model = check_model(&body, config)?;
    let stream = body.get("stream") == Some(&Value::Bool(true));
    let mut strip_usage_chunk = false;
    let output = match kind {
        RouteKind::Chat => {
            let choices = choices(&body, config)?;
            let per_choice = clamp_chat_output(&mut body, config.max_output_tokens)?;
            if stream && config.tokens.is_some() {
                strip_usage_chunk = !ask_for_usage(&mut body)?;
            }
            per_choice.saturating_mul(choices)
        }
        RouteKind::Responses => clamp(&mut body, "max_output_tokens", config.max_output_tokens)?,
        RouteKind::Embeddings | RouteKind::Other => 0,
    };
    let mut attachments = 0;
    if matches!(kind, RouteKind::Chat | RouteKind::Responses) {
        // Walked once for the two checks that read it, and only when either applies.
        let inputs = if config.allow_store && config.tokens.is_none() {
            Vec::new()
        } else {
            input_objects(&body)
        };
        check_context(&body, &inputs, config)?;
        check_tools(&body, config)?;
        attachments = count_attachments(&inputs, config)?;
        // Priority processing costs more per token than the budget assumes.
        body.remove("service_tier");
        if !config.allow_store {
            body.insert("store".into(), Value::Bool(false));
        }
        if config.safety_identifier {
            body.insert("safety_identifier".into(), Value::from(safety_identifier));
        }
    }
    // A parsed body goes upstream re-serialised, changed or not, so that what is forwarded is
    // exactly what was checked: a duplicate `model` key cannot pass the allow-list here and
    // mean another model to a parser upstream that keeps the first one.
    let body = match kind {
        RouteKind::Other => raw,
        _ => Bytes::from(serde_json::to_vec(&body).map_err(|e| ApiError::invalid(e.to_string()))?),
    };
    Ok(Prepared {
        body,
        model,
        stream,
        strip_usage_chunk,
        worst_case_tokens: if kind.has_token_cost() {
            let per_attachment = config.tokens.as_ref().map_or(0, |t| t.attachment_tokens);
            prompt_estimate
                .saturating_add(output)
                .saturating_add(attachments.saturating_mul(per_attachment))
        } else {
            0
        },
    })
}

/// The body as a JSON object: required for the model calls, optional elsewhere (a body that is
/// not one is forwarded as it came).
fn parse_object(kind: RouteKind, raw: &[u8]) -> Result<Option<Map<String, Value>>, ApiError> {
    if kind == RouteKind::Other && raw.is_empty() {
        return Ok(None);
    }
    match serde_json::from_slice::<Value>(raw) {
        Ok(Value::Object(body)) => Ok(Some(body)),
        _ if kind == RouteKind::Other => Ok(None),
        Ok(_) => Err(ApiError::invalid("The request body must be a JSON object.")),
        Err(e) => Err(ApiError::invalid(format!(
            "The request body is not valid JSON: {e}."
        ))),
    }
}

fn check_model(
    body: &Map<String, Value>,
    config: &ProxyConfig,
) -> Result<Option<String>, ApiError> {
    let model = match body.get("model") {
        None => None,
        Some(Value::String(model)) => Some(model.clone()),
        Some(_) => {
            return Err(ApiError::invalid("'model' must be a string.").param("model"));
        }
    };
    if config.models.is_empty() {
        return Ok(model);
    }
    match &model {
        Some(name) if config.models.contains(name) => Ok(model),
        Some(name) => Err(ApiError::invalid(format!(
            "The model '{}' is not offered by this service.",
            name.chars().take(64).collect::<String>()
        ))
        .param("model")
        .code("model_not_allowed")),
        None => Err(ApiError::invalid("'model' is required.").param("model")),
    }
}

fn choices(body: &Map<String, Value>, config: &ProxyConfig) -> Result<u64, ApiError> {
    let n = match body.get("n") {
        None | Some(Value::Null) => 1,
        Some(value) => value.as_u64().filter(|n| *n >= 1).ok_or_else(|| {
            ApiError::invalid("'n' must be a whole number of at least 1.").param("n")
        })?,
    };
    if n > config.max_choices {
        return Err(
            ApiError::invalid(format!("'n' may be at most {} here.", config.max_choices))
                .param("n"),
        );
    }
    Ok(n)
}

/// Chat's two output caps: both are clamped when given, `max_completion_tokens` set when
/// neither is (some models refuse `max_tokens`, so it is never added).
fn clamp_chat_output(body: &mut Map<String, Value>, cap: Option<u64>) -> Result<u64, ApiError> {
    let legacy = if body.contains_key("max_tokens") {
        Some(clamp(body, "max_tokens", cap)?)
    } else {
        None
    };
    match legacy {
        Some(legacy) if !body.contains_key("max_completion_tokens") => Ok(legacy),
        Some(legacy) => Ok(clamp(body, "max_completion_tokens", cap)?.max(legacy)),
        None => clamp(body, "max_completion_tokens", cap),
    }
}

/// Context stored at the provider (an earlier response, a conversation, a saved prompt) is
/// refused unless storing is allowed: its cost is unknown here, and its id may be anyone's.
/// `inputs` are the body's [`input_objects`].
fn check_context(
    body: &Map<String, Value>,
    inputs: &[&Map<String, Value>],
    config: &ProxyConfig,
) -> Result<(), ApiError> {
    if config.allow_store {
        return Ok(());
    }
    if let Some(what) = stored_reference(inputs) {
        return Err(ApiError::invalid(format!(
            "'{what}' refers to something stored at the provider, which this service does not allow."
        )));
    }
    for field in ["previous_response_id", "conversation", "prompt"] {
        if body.get(field).is_some_and(|v| !v.is_null()) {
            return Err(ApiError::invalid(format!(
                "'{field}' refers to context stored at the provider, which this service does not allow."
            ))
            .param(field));
        }
    }
    Ok(())
}

/// An input item or part that points at something stored at the provider (an earlier item,
/// an uploaded file) rather than carrying its content; `inputs` are the body's
/// [`input_objects`].
fn stored_reference(inputs: &[&Map<String, Value>]) -> Option<&'static str> {
    inputs.iter().find_map(|fields| {
        if fields.get("type").and_then(Value::as_str) == Some("item_reference") {
            Some("item_reference")
        } else if fields.contains_key("file_id") {
            Some("file_id")
        } else {
            None
        }
    })
}

/// Every JSON object inside the call's `messages` or `input`, however deep.
fn input_objects(body: &Map<String, Value>) -> Vec<&Map<String, Value>> {
    let mut objects = Vec::new();
    let mut pending: Vec<&Value> = ["messages", "input"]
        .iter()
        .filter_map(|k| body.get(*k))
        .collect();
    while let Some(value) = pending.pop() {
        match value {
            Value::Array(items) => pending.extend(items),
            Value::Object(fields) => {
                objects.push(fields);
                pending.extend(fields.values());
            }
            _ => {}
        }
    }
    objects
}

/// Only the caller's own functions: hosted tools (web search, file search over the account's
/// stores, code interpreter, ...) are billed per use and can read the account's data.
fn check_tools(body: &Map<String, Value>, config: &ProxyConfig) -> Result<(), ApiError> {
    if config.allow_hosted_tools {
        return Ok(());
    }
    if body.get("web_search_options").is_some_and(|v| !v.is_null()) {
        return Err(
            ApiError::invalid("Web search is not offered by this service.")
                .param("web_search_options"),
        );
    }
    let Some(Value::Array(tools)) = body.get("tools") else {
        return Ok(());
    };
    for tool in tools {
        let kind = tool.get("type").and_then(Value::as_str).unwrap_or_default();
        if !matches!(kind, "function" | "custom") {
            return Err(ApiError::invalid(format!(
                "Tool type '{}' is not offered by this service; only functions are.",
                kind.chars().take(64).collect::<String>()
            ))
            .param("tools"));
        }
    }
    Ok(())
}

/// Content parts whose token cost their bytes do not show (images), counted so the worst case
/// can allow for each; files and audio, whose cost has no bound here, are refused while token
/// budgets are kept. `inputs` are the body's [`input_objects`].
fn count_attachments(
    inputs: &[&Map<String, Value>],
    config: &ProxyConfig,
) -> Result<u64, ApiError> {
    if config.tokens.is_none() {
        return Ok(0);
    }
    let mut images = 0u64;
    for fields in inputs {
        match fields.get("type").and_then(Value::as_str) {
            Some("image_url" | "input_image") => images += 1,
            Some(kind @ ("file" | "input_file" | "input_audio")) => {
                return Err(ApiError::invalid(format!(
                    "Content of type '{kind}' is not offered by this service."
                )));
            }
            _ => {}
        }
    }
    Ok(images)
}

/// Clamps `field` to `cap` (setting it when absent); the result is the call's output bound,
/// 0 when nothing bounds it (no cap configured and none asked).
fn clamp(
    body: &mut Map<String, Value>,
    field: &'static str,
    cap: Option<u64>,
) -> Result<u64, ApiError> {
    let asked = match body.get(field) {
        None | Some(Value::Null) => None,
        Some(value) => Some(value.as_u64().ok_or_else(|| {
            ApiError::invalid(format!("'{field}' must be a whole number.")).param(field)
        })?),
    };
    let bound = match (asked, cap) {
        (Some(asked), Some(cap)) => asked.min(cap),
        (None, Some(cap)) => cap,
        (Some(asked), None) => asked,
        (None, None) => return Ok(0),
    };
    body.insert(field.into(), Value::from(bound));
    Ok(bound)
}

/// Sets `stream_options.include_usage`; returns whether the client had asked for it.
fn ask_for_usage(body: &mut Map<String, Value>) -> Result<bool, ApiError> {
    let options = body
        .entry("stream_options")
        .or_insert_with(|| Value::Object(Map::new()));
    if options.is_null() {
        *options = Value::Object(Map::new());
    }
    let Value::Object(options) = options else {
        return Err(
            ApiError::invalid("'stream_options' must be an object.").param("stream_options")
        );
    };
    let asked = options.get("include_usage") == Some(&Value::Bool(true));
    options.insert("include_usage".into(), Value::Bool(true));
    Ok(asked)
}
