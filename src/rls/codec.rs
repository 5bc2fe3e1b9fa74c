//! The codec of Tollgate's `RateLimitService`: requests decoded by prost, answers written by
//! the service itself ([`EncodedResponse`], straight from the engine's decision) and copied
//! into the frame here.

use bytes::BufMut;
use tonic::Status;
use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic_prost::ProstDecoder;

use crate::proto::RateLimitRequest;
use crate::wire::EncodedResponse;

/// Named in `build.rs` as the codec of the generated server.
#[derive(Clone, Copy, Debug, Default)]
pub struct RlsCodec;

impl Codec for RlsCodec {
    type Encode = EncodedResponse;
    type Decode = RateLimitRequest;
    type Encoder = ResponseEncoder;
    type Decoder = ProstDecoder<RateLimitRequest>;

    fn encoder(&mut self) -> ResponseEncoder {
        ResponseEncoder
    }

    fn decoder(&mut self) -> ProstDecoder<RateLimitRequest> {
        ProstDecoder::default()
    }
}

/// Writes each answer's protobuf bytes into the gRPC frame tonic is building.
#[derive(Clone, Copy, Debug, Default)]
pub struct ResponseEncoder;

impl Encoder for ResponseEncoder {
    type Item = EncodedResponse;
    type Error = Status;

    fn encode(&mut self, answer: EncodedResponse, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.put_slice(answer.as_bytes());
        Ok(())
    }
}
