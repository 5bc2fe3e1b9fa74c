//! Token usage as OpenAI reports it: in a whole response body, in a streamed Chat Completions
//! chunk, or in the final event of a streamed Responses API call.

use serde_json::{Map, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }
}

/// From a whole JSON response body: Chat Completions (`usage.prompt_tokens`,
/// `usage.completion_tokens`), Responses (`usage.input_tokens`, `usage.output_tokens`),
/// Embeddings (`usage.prompt_tokens`, `usage.total_tokens`, output 0). None when there is no
/// usable usage object.
pub fn from_body(body: &[u8]) -> Option<Usage> {
    let body: Value = serde_json::from_slice(body).ok()?;
    from_usage(body.get("usage")?)
}

/// One streamed Chat Completions chunk (the `data:` payload): its `usage` when present and not
/// null.
pub fn from_chat_chunk(data: &str) -> Option<Usage> {
    let chunk: Value = serde_json::from_str(data).ok()?;
    from_usage(chunk.get("usage")?)
}

/// True when the chunk is the usage-only final chunk that `stream_options.include_usage` adds
/// (`choices` is an empty array and `usage` is non-null); the proxy strips it when the client
/// did not ask for it.
pub fn is_usage_only_chunk(data: &str) -> bool {
    let Ok(chunk) = serde_json::from_str::<Value>(data) else {
        return false;
    };
    let no_choices = chunk
        .get("choices")
        .and_then(Value::as_array)
        .is_some_and(Vec::is_empty);
    let has_usage = chunk.get("usage").is_some_and(|usage| !usage.is_null());
    no_choices && has_usage
}

/// One streamed Responses API event (its `data:` payload): the `usage` of its `response` when
/// `type` is `response.completed` or `response.incomplete` (a response cut short by a token
/// limit has still used tokens).
pub fn from_responses_event(data: &str) -> Option<Usage> {
    let event: Value = serde_json::from_str(data).ok()?;
    let finished = matches!(
        event.get("type").and_then(Value::as_str),
        Some("response.completed" | "response.incomplete")
    );
    if !finished {
        return None;
    }
    from_usage(event.get("response")?.get("usage")?)
}

/// A `usage` object of any of the three shapes. The input count is required, and an output
/// or a total count besides; a count that is present but not a non-negative integer makes
/// the whole object unusable rather than be guessed at.
fn from_usage(usage: &Value) -> Option<Usage> {
    let usage = usage.as_object()?;
    let input = count(usage, "prompt_tokens").or_else(|| count(usage, "input_tokens"))??;
    let output = count(usage, "completion_tokens").or_else(|| count(usage, "output_tokens"));
    let total = count(usage, "total_tokens");
    if output.is_none() && total.is_none() {
        return None;
    }
    let output = output.unwrap_or(Some(0))?;
    let total = total.unwrap_or(Some(0))?;
    // Reasoning and other output already sit inside completion_tokens, so the total normally
    // matches; anything the total counts beyond input and output is taken as output.
    let excess = total.saturating_sub(input.saturating_add(output));
    Some(Usage {
        input_tokens: input,
        output_tokens: output.saturating_add(excess),
    })
}

/// `usage[key]`: None when absent or null, `Some(None)` when present but not a count.
fn count(usage: &Map<String, Value>, key: &str) -> Option<Option<u64>> {
    usage
        .get(key)
        .filter(|value| !value.is_null())
        .map(Value::as_u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(input_tokens: u64, output_tokens: u64) -> Option<Usage> {
        Some(Usage {
            input_tokens,
            output_tokens,
        })
    }

    const CHAT_COMPLETION: &str = r#"{
        "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
        "object": "chat.completion",
        "created": 1741569952,
        "model": "gpt-4.1-2025-04-14",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": "Hello! How can I help?", "refusal": null, "annotations": []},
            "logprobs": null,
            "finish_reason": "stop"
        }],
        "usage": {
            "prompt_tokens": 19,
            "completion_tokens": 10,
            "total_tokens": 29,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
        },
        "service_tier": "default",
        "system_fingerprint": null
    }"#;

    const RESPONSE: &str = r#"{
        "id": "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b",
        "object": "response",
        "created_at": 1741476542,
        "status": "completed",
        "model": "gpt-4.1-2025-04-14",
        "output": [{"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": "Hi.", "annotations": []}]}],
        "usage": {
            "input_tokens": 36,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 87,
            "output_tokens_details": {"reasoning_tokens": 64},
            "total_tokens": 123
        }
    }"#;

    const EMBEDDINGS: &str = r#"{
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": [0.0023064255, -0.009327292]}],
        "model": "text-embedding-3-small",
        "usage": {"prompt_tokens": 8, "total_tokens": 8}
    }"#;

    const CONTENT_CHUNK: &str = r#"{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}]}"#;

    const CONTENT_CHUNK_NULL_USAGE: &str = r#"{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}"#;

    const USAGE_ONLY_CHUNK: &str = r#"{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":12,"total_tokens":21,"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}}"#;

    #[test]
    fn a_chat_completion_body() {
        assert_eq!(from_body(CHAT_COMPLETION.as_bytes()), usage(19, 10));
    }

    #[test]
    fn a_responses_body() {
        // Reasoning tokens are inside output_tokens, not added to them.
        assert_eq!(from_body(RESPONSE.as_bytes()), usage(36, 87));
    }

    #[test]
    fn an_embeddings_body_has_no_output() {
        assert_eq!(from_body(EMBEDDINGS.as_bytes()), usage(8, 0));
    }

    #[test]
    fn a_total_above_input_and_output_counts_the_excess_as_output() {
        let body = br#"{"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":20}}"#;
        assert_eq!(from_body(body), usage(10, 10));
        let body = br#"{"usage":{"prompt_tokens":10,"total_tokens":25}}"#;
        assert_eq!(from_body(body), usage(10, 15));
        // A total below the sum takes nothing away.
        let body = br#"{"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":3}}"#;
        assert_eq!(from_body(body), usage(10, 5));
    }

    #[test]
    fn a_body_without_usable_usage_is_none() {
        let bodies: [&[u8]; 11] = [
            b"",
            b"not json",
            b"[1, 2]",
            br#"{"id":"x"}"#,
            br#"{"usage":null}"#,
            br#"{"usage":"lots"}"#,
            br#"{"usage":{"completion_tokens":5,"total_tokens":5}}"#,
            br#"{"usage":{"prompt_tokens":5}}"#,
            br#"{"usage":{"prompt_tokens":-1,"completion_tokens":5}}"#,
            br#"{"usage":{"prompt_tokens":1.5,"completion_tokens":5}}"#,
            br#"{"usage":{"prompt_tokens":1,"completion_tokens":"5"}}"#,
        ];
        for body in bodies {
            assert_eq!(from_body(body), None, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn an_invalid_total_is_none() {
        let body = br#"{"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":-3}}"#;
        assert_eq!(from_body(body), None);
    }

    #[test]
    fn a_huge_count_saturates_rather_than_overflows() {
        let body = format!(
            r#"{{"usage":{{"prompt_tokens":{max},"completion_tokens":{max},"total_tokens":{max}}}}}"#,
            max = u64::MAX
        );
        let parsed = from_body(body.as_bytes()).unwrap();
        assert_eq!(
            parsed,
            Usage {
                input_tokens: u64::MAX,
                output_tokens: u64::MAX
            }
        );
        assert_eq!(parsed.total(), u64::MAX);
    }

    #[test]
    fn total_adds_input_and_output() {
        assert_eq!(
            Usage {
                input_tokens: 3,
                output_tokens: 4
            }
            .total(),
            7
        );
    }

    #[test]
    fn chat_chunks_carry_usage_only_when_it_is_set() {
        assert_eq!(from_chat_chunk(CONTENT_CHUNK), None);
        assert_eq!(from_chat_chunk(CONTENT_CHUNK_NULL_USAGE), None);
        assert_eq!(from_chat_chunk(USAGE_ONLY_CHUNK), usage(9, 12));
        assert_eq!(from_chat_chunk("[DONE]"), None);
    }

    #[test]
    fn a_content_chunk_with_usage_is_read_too() {
        let chunk = r#"{"object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":4,"completion_tokens":2,"total_tokens":6}}"#;
        assert_eq!(from_chat_chunk(chunk), usage(4, 2));
        assert!(!is_usage_only_chunk(chunk));
    }

    #[test]
    fn the_include_usage_final_chunk_is_recognised() {
        assert!(is_usage_only_chunk(USAGE_ONLY_CHUNK));
    }

    #[test]
    fn other_chunks_are_not_usage_only() {
        assert!(!is_usage_only_chunk(CONTENT_CHUNK));
        assert!(!is_usage_only_chunk(CONTENT_CHUNK_NULL_USAGE));
        assert!(!is_usage_only_chunk(r#"{"choices":[],"usage":null}"#));
        assert!(!is_usage_only_chunk(r#"{"choices":[]}"#));
        assert!(!is_usage_only_chunk(
            r#"{"usage":{"prompt_tokens":1,"completion_tokens":1}}"#
        ));
        assert!(!is_usage_only_chunk(r#"{"choices":{},"usage":{}}"#));
        assert!(!is_usage_only_chunk("[DONE]"));
    }

    fn responses_event(kind: &str, usage: &str) -> String {
        format!(
            r#"{{"type":"{kind}","sequence_number":42,"response":{{"id":"resp_123","object":"response","created_at":1740855869,"status":"completed","model":"gpt-4o-mini-2024-07-18","output":[],"usage":{usage}}}}}"#
        )
    }

    const RESPONSES_USAGE: &str = r#"{"input_tokens":37,"input_tokens_details":{"cached_tokens":0},"output_tokens":11,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":48}"#;

    #[test]
    fn a_completed_responses_event_carries_usage() {
        let event = responses_event("response.completed", RESPONSES_USAGE);
        assert_eq!(from_responses_event(&event), usage(37, 11));
    }

    #[test]
    fn an_incomplete_responses_event_carries_usage() {
        let event = responses_event("response.incomplete", RESPONSES_USAGE);
        assert_eq!(from_responses_event(&event), usage(37, 11));
    }

    #[test]
    fn other_responses_events_carry_none() {
        let created = responses_event("response.created", "null");
        assert_eq!(from_responses_event(&created), None);
        // Even a usage object on another event type is not the final count.
        let in_progress = responses_event("response.in_progress", RESPONSES_USAGE);
        assert_eq!(from_responses_event(&in_progress), None);
        let delta = r#"{"type":"response.output_text.delta","item_id":"msg_1","output_index":0,"content_index":0,"delta":"Hi","sequence_number":3}"#;
        assert_eq!(from_responses_event(delta), None);
        let completed_without_usage = responses_event("response.completed", "null");
        assert_eq!(from_responses_event(&completed_without_usage), None);
        assert_eq!(from_responses_event("[DONE]"), None);
    }
}
