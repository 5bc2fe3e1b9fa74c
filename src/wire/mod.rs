//! The wire forms (prost types of Envoy's API) to and from the engine's [`crate::engine::Call`]
//! and [`crate::engine::Decision`], shared by the gRPC service and the admin's `/json`; and a
//! decision written straight to the bytes of the wire's answer, for the gRPC service.

mod encode;
pub mod request;
pub mod response;

pub use encode::EncodedResponse;
pub use request::{InvalidRequest, RequestBounds, to_call};
pub use response::to_response;
