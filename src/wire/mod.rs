//! The wire forms of Envoy's API to and from the engine's [`crate::engine::Call`] and
//! [`crate::engine::Decision`], shared by the gRPC service and the admin's `/json`: a request
//! read in place from its bytes, and a decision written straight to the bytes of the answer
//! (or to prost's message, for `/json`).

mod decode;
mod encode;
pub mod request;
pub mod response;

pub use decode::{WireDescriptor, WireOverride, WireRequest};
pub use encode::EncodedResponse;
pub use request::{InvalidRequest, RequestBounds, to_call};
pub use response::to_response;
