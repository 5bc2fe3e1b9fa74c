//! The codec of Tollgate's `RateLimitService`: requests decoded by prost, answers written by
//! the service itself ([`EncodedResponse`], straight from the engine's decision) and copied
//! into the frame here.

use bytes::BufMut;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, EncodeBuf, Encoder};
use tonic_prost::ProstDecoder;

use crate::proto::RateLimitRequest;
use crate::wire::EncodedResponse;

/// The buffer each call's request is read into and its answer framed in. tonic's default is
/// 8 KiB, which glibc's allocator serves from its shared heap rather than its per-thread cache
/// (up to 1,032 bytes), at about 1,000 instructions a call for the two (callgrind). Envoy's
/// requests and Tollgate's answers are a few hundred bytes; a larger message grows its buffer.
/// The second figure is tonic's default, and only matters to streaming answers.
fn buffers() -> BufferSettings {
    BufferSettings::new(1024, 32 * 1024)
}

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
        ProstDecoder::new(buffers())
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

    fn buffer_settings(&self) -> BufferSettings {
        buffers()
    }
}
