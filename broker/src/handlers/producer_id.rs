//! InitProducerId (key 22), versions 0–4, for idempotent producers.
//!
//! As in Kafka, a request without a transactional id always gets a fresh
//! producer id with epoch 0 (the Java client bumps its epoch itself after a
//! sequence error, KIP-360). Transactions are not served: a transactional id
//! is refused with TRANSACTIONAL_ID_AUTHORIZATION_FAILED, which clients
//! report as fatal instead of retrying.

use std::sync::Arc;

use skiff_protocol::api::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use skiff_protocol::ErrorCode;

use crate::broker::Broker;

pub fn handle(broker: &Arc<Broker>, request: InitProducerIdRequest) -> InitProducerIdResponse {
    let mut response = InitProducerIdResponse::default();
    response.producer_id = ProducerId(-1);
    response.producer_epoch = -1;
    if request.transactional_id.is_some() {
        response.error_code = ErrorCode::TransactionalIdAuthorizationFailed.code();
        return response;
    }
    match broker.producer_ids.allocate() {
        Ok(id) => {
            response.producer_id = ProducerId(id);
            response.producer_epoch = 0;
        }
        Err(error) => {
            tracing::error!(%error, "cannot reserve producer ids");
            response.error_code = ErrorCode::KafkaStorageError.code();
        }
    }
    response
}
