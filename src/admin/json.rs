//! `POST /json`: the same decision as gRPC, in the proto3 JSON mapping. The mapping comes from
//! prost-reflect over the very descriptors the gRPC service is built from, not by hand.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};

use super::AdminState;
use crate::engine::Code;
use crate::proto::RateLimitResponse;
use crate::wire::{WireRequest, to_call, to_response};

pub(super) struct JsonCodec {
    request: MessageDescriptor,
    response: MessageDescriptor,
}

impl JsonCodec {
    /// Fails only if the embedded descriptors are broken: a build defect, found at start-up.
    pub fn new() -> Result<JsonCodec, String> {
        let pool = DescriptorPool::decode(crate::proto::FILE_DESCRIPTOR_SET)
            .map_err(|e| format!("embedded descriptors: {e}"))?;
        let find = |name: &str| {
            pool.get_message_by_name(name)
                .ok_or_else(|| format!("embedded descriptors lack {name}"))
        };
        Ok(JsonCodec {
            request: find("envoy.service.ratelimit.v3.RateLimitRequest")?,
            response: find("envoy.service.ratelimit.v3.RateLimitResponse")?,
        })
    }

    /// The request's protobuf bytes, for [`WireRequest::parse`] as the gRPC service reads them.
    fn to_protobuf(&self, body: &[u8]) -> Result<Vec<u8>, String> {
        let descriptor = self.request.clone();
        let mut de = serde_json::Deserializer::from_slice(body);
        let dynamic = DynamicMessage::deserialize(descriptor, &mut de)
            .map_err(|e| format!("invalid RateLimitRequest JSON: {e}"))?;
        de.end()
            .map_err(|e| format!("invalid RateLimitRequest JSON: {e}"))?;
        Ok(dynamic.encode_to_vec())
    }

    fn encode(&self, response: &RateLimitResponse) -> Result<String, String> {
        let descriptor = self.response.clone();
        let dynamic = DynamicMessage::decode(descriptor, response.encode_to_vec().as_slice())
            .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        let mut ser = serde_json::Serializer::new(&mut out);
        dynamic
            .serialize_with_options(&mut ser, &SerializeOptions::new())
            .map_err(|e| e.to_string())?;
        String::from_utf8(out).map_err(|e| e.to_string())
    }
}

pub(super) async fn should_rate_limit(State(state): State<AdminState>, body: Bytes) -> Response {
    let request = match state.json.to_protobuf(&body) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
    };
    let request = match WireRequest::parse(&request, &state.bounds) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let call = match to_call(&request, &state.bounds) {
        Ok(c) => c,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let decision = match state.engine.should_rate_limit(&call) {
        Ok(d) => d,
        Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    };
    let status = match decision.code {
        Code::Ok => StatusCode::OK,
        Code::OverLimit => StatusCode::TOO_MANY_REQUESTS,
    };
    match state.json.encode(&to_response(decision)) {
        Ok(json) => (
            status,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            json,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
    }
}
