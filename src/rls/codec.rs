//! The codec of Tollgate's `RateLimitService`: requests decoded by prost, answers written
//! straight from the engine's [`Decision`] ([`crate::wire::encode_response`]).

use tonic::Status;
use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic_prost::ProstDecoder;

use crate::engine::Decision;
use crate::proto::RateLimitRequest;
use crate::wire::encode_response;

/// Named in `build.rs` as the codec of the generated server.
#[derive(Clone, Copy, Debug, Default)]
pub struct RlsCodec;

impl Codec for RlsCodec {
    type Encode = Decision;
    type Decode = RateLimitRequest;
    type Encoder = DecisionEncoder;
    type Decoder = ProstDecoder<RateLimitRequest>;

    fn encoder(&mut self) -> DecisionEncoder {
        DecisionEncoder
    }

    fn decoder(&mut self) -> ProstDecoder<RateLimitRequest> {
        ProstDecoder::default()
    }
}

/// Writes each answer's protobuf bytes into the gRPC frame tonic is building.
#[derive(Clone, Copy, Debug, Default)]
pub struct DecisionEncoder;

impl Encoder for DecisionEncoder {
    type Item = Decision;
    type Error = Status;

    fn encode(&mut self, decision: Decision, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        encode_response(decision, buf);
        Ok(())
    }
}
