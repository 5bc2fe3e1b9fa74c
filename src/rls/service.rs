//! The `ShouldRateLimit` handler: read the request, validate, ask the engine, answer.

use std::sync::Arc;

use bytes::Bytes;
use tonic::{Request, Response, Status};

use super::generated::rate_limit_service_server::RateLimitService;
use crate::engine::{Engine, EngineError};
use crate::wire::{EncodedResponse, InvalidRequest, RequestBounds, WireRequest, to_call};

pub struct RlsService {
    engine: Arc<Engine>,
    bounds: RequestBounds,
}

impl RlsService {
    pub fn new(engine: Arc<Engine>, bounds: RequestBounds) -> RlsService {
        RlsService { engine, bounds }
    }
}

#[tonic::async_trait]
impl RateLimitService for RlsService {
    /// Reads the request in place from its bytes, and writes the answer from the decision
    /// while its limit names are borrowed from the configuration;
    /// [`super::codec::RlsCodec`] copies those bytes into the gRPC frame.
    async fn should_rate_limit(
        &self,
        request: Request<Bytes>,
    ) -> Result<Response<EncodedResponse>, Status> {
        let bytes = request.into_inner();
        let invalid = |e: InvalidRequest| Status::invalid_argument(e.to_string());
        let request = WireRequest::parse(&bytes, &self.bounds).map_err(invalid)?;
        let call = to_call(&request, &self.bounds).map_err(invalid)?;
        match self
            .engine
            .should_rate_limit_with(&call, |decision| EncodedResponse::of(&decision))
        {
            Ok(answer) => Ok(Response::new(answer)),
            // UNAVAILABLE, not OK and not UNKNOWN: Envoy's `failure_mode_deny` then decides,
            // and release builds of Envoy would read an UNKNOWN overall code as OK.
            Err(e @ EngineError::KeyTableFull(_)) => Err(Status::unavailable(e.to_string())),
        }
    }
}
