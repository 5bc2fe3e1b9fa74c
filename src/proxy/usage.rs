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

/// What one streamed Chat Completions chunk (the `data:` payload) says, read in one parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ChatChunk {
    /// Its `usage`, when present, not null and usable.
    pub usage: Option<Usage>,
    /// It is the usage-only final chunk that `stream_options.include_usage` adds (`choices`
    /// is an empty array and `usage` is non-null); the proxy strips it when the client did not
    /// ask for it.
    pub usage_only: bool,
}

/// One streamed Chat Completions chunk (the `data:` payload); nothing when it is not JSON.
pub fn chat_chunk(data: &str) -> ChatChunk {
    let Ok(chunk) = serde_json::from_str::<Value>(data) else {
        return ChatChunk::default();
    };
    let usage = chunk.get("usage").filter(|usage| !usage.is_null());
    let no_choices = chunk
        .get("choices")
        .and_then(Value::as_array)
        .is_some_and(Vec::is_empty);
    ChatChunk {
        usage: usage.and_then(from_usage),
        usage_only: no_choices && usage.is_some(),
    }
}

/// The Responses API events that end a stream having used tokens (a response cut short by a
/// token limit has still used them).
const FINISHED: [&str; 2] = ["response.completed", "response.incomplete"];

/// One streamed Responses API event, by its `event:` name and its `data:` payload: the `usage`
/// of its `response` when its `type` is `response.completed` or `response.incomplete`.
/// OpenAI names every event after its type, so a named event of another name is not parsed
/// (the text deltas are most of a stream); an unnamed one is parsed only when its data holds
/// one of the two types.
pub fn from_responses_event(name: Option<&str>, data: &str) -> Option<Usage> {
    let may_finish = match name {
        Some(name) => FINISHED.contains(&name),
        None => FINISHED.iter().any(|kind| data.contains(kind)),
    };
    if !may_finish {
        return None;
    }
    let event: Value = serde_json::from_str(data).ok()?;
    let kind = event.get("type").and_then(Value::as_str)?;
    if !FINISHED.contains(&kind) {
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
        assert_eq!(chat_chunk(CONTENT_CHUNK).usage, None);
        assert_eq!(chat_chunk(CONTENT_CHUNK_NULL_USAGE).usage, None);
        assert_eq!(chat_chunk(USAGE_ONLY_CHUNK).usage, usage(9, 12));
        assert_eq!(chat_chunk("[DONE]").usage, None);
    }

    #[test]
    fn a_content_chunk_with_usage_is_read_too() {
        let chunk = r#"{"object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":4,"completion_tokens":2,"total_tokens":6}}"#;
        assert_eq!(
            chat_chunk(chunk),
            ChatChunk {
                usage: usage(4, 2),
                usage_only: false
            }
        );
    }

    #[test]
    fn the_include_usage_final_chunk_is_recognised() {
        assert_eq!(
            chat_chunk(USAGE_ONLY_CHUNK),
            ChatChunk {
                usage: usage(9, 12),
                usage_only: true
            }
        );
        // Recognised by its shape, even when its usage is not usable.
        assert_eq!(
            chat_chunk(r#"{"choices":[],"usage":{}}"#),
            ChatChunk {
                usage: None,
                usage_only: true
            }
        );
    }

    #[test]
    fn other_chunks_are_not_usage_only() {
        let not_usage_only = |chunk: &str| !chat_chunk(chunk).usage_only;
        assert!(not_usage_only(CONTENT_CHUNK));
        assert!(not_usage_only(CONTENT_CHUNK_NULL_USAGE));
        assert!(not_usage_only(r#"{"choices":[],"usage":null}"#));
        assert!(not_usage_only(r#"{"choices":[]}"#));
        assert!(not_usage_only(
            r#"{"usage":{"prompt_tokens":1,"completion_tokens":1}}"#
        ));
        assert!(not_usage_only(r#"{"choices":{},"usage":{}}"#));
        assert!(not_usage_only("[DONE]"));
        assert_eq!(chat_chunk("not json"), ChatChunk::default());
    }

    fn responses_event(kind: &str, usage: &str) -> String {
        format!(
            r#"{{"type":"{kind}","sequence_number":42,"response":{{"id":"resp_123","object":"response","created_at":1740855869,"status":"completed","model":"gpt-4o-mini-2024-07-18","output":[],"usage":{usage}}}}}"#
        )
    }

    const RESPONSES_USAGE: &str = r#"{"input_tokens":37,"input_tokens_details":{"cached_tokens":0},"output_tokens":11,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":48}"#;

    /// The event as OpenAI streams it: named after its type.
    fn named(data: &str) -> Option<Usage> {
        let value: Value = serde_json::from_str(data).ok()?;
        from_responses_event(value.get("type").and_then(Value::as_str), data)
    }

    #[test]
    fn a_completed_responses_event_carries_usage() {
        let event = responses_event("response.completed", RESPONSES_USAGE);
        assert_eq!(named(&event), usage(37, 11));
        assert_eq!(from_responses_event(None, &event), usage(37, 11));
    }

    #[test]
    fn an_incomplete_responses_event_carries_usage() {
        let event = responses_event("response.incomplete", RESPONSES_USAGE);
        assert_eq!(named(&event), usage(37, 11));
        assert_eq!(from_responses_event(None, &event), usage(37, 11));
    }

    #[test]
    fn other_responses_events_carry_none() {
        let created = responses_event("response.created", "null");
        let in_progress = responses_event("response.in_progress", RESPONSES_USAGE);
        let delta = r#"{"type":"response.output_text.delta","item_id":"msg_1","output_index":0,"content_index":0,"delta":"Hi","sequence_number":3}"#;
        let completed_without_usage = responses_event("response.completed", "null");
        // Even a usage object on another event type is not the final count.
        for event in [&created, &in_progress, delta, &completed_without_usage] {
            assert_eq!(named(event), None, "{event}");
            assert_eq!(from_responses_event(None, event), None, "{event}");
        }
        assert_eq!(from_responses_event(None, "[DONE]"), None);
    }

    #[test]
    fn the_event_name_decides_which_events_are_read() {
        let completed = responses_event("response.completed", RESPONSES_USAGE);
        // A named event of another type is not read, whatever its data says.
        let name = Some("response.output_text.delta");
        assert_eq!(from_responses_event(name, &completed), None);
        // A finishing name still needs the finishing type in the data.
        let in_progress = responses_event("response.in_progress", RESPONSES_USAGE);
        assert_eq!(
            from_responses_event(Some("response.completed"), &in_progress),
            None
        );
        // Text that merely mentions the type is not the event.
        let delta = r#"{"type":"response.output_text.delta","delta":"response.completed"}"#;
        assert_eq!(from_responses_event(None, delta), None);
    }
}
