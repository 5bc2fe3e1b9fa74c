//! The wire forms (prost types of Envoy's API) to and from the engine's [`crate::engine::Call`]
//! and [`crate::engine::Decision`], shared by the gRPC service and the admin's `/json`.

pub mod request;
pub mod response;

pub use request::{InvalidRequest, RequestBounds, to_call};
pub use response::to_response;
