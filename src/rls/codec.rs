//! The codec of Tollgate's `RateLimitService`: each request handed over as its bytes, for the
//! service to read in place ([`crate::wire::WireRequest`]); each answer written by the service
//! itself ([`EncodedResponse`], straight from the engine's decision) and copied into the frame
//! here.

use bytes::{Buf, BufMut, Bytes};
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use crate::wire::EncodedResponse;

/// The buffer each call's request is read into and its answer framed in (the benchmark
/// ceiling's codec too). tonic's default is 8 KiB, which glibc's allocator serves from its
/// shared heap rather than its per-thread cache (up to 1,032 bytes), at about 1,000 instructions a call for the two (callgrind). Envoy's
/// requests and Tollgate's answers are a few hundred bytes; a larger message grows its buffer.
/// The second figure is tonic's default, and only matters to streaming answers.
pub fn buffer_settings() -> BufferSettings {
    BufferSettings::new(1024, 32 * 1024)
}

/// Named in `build.rs` as the codec of the generated server.
#[derive(Clone, Copy, Debug, Default)]
pub struct RlsCodec;

impl Codec for RlsCodec {
    type Encode = EncodedResponse;
    type Decode = Bytes;
    type Encoder = ResponseEncoder;
    type Decoder = RequestBytes;

    fn encoder(&mut self) -> ResponseEncoder {
        ResponseEncoder
    }

    fn decoder(&mut self) -> RequestBytes {
        RequestBytes
    }
}

/// Hands over each request message's bytes as they arrived: split off tonic's buffer, not
/// copied.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestBytes;

impl Decoder for RequestBytes {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(buf.copy_to_bytes(buf.remaining())))
    }

    fn buffer_settings(&self) -> BufferSettings {
        buffer_settings()
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
        buffer_settings()
    }
}
