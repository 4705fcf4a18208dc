//! From one request frame to one response frame, shared by TCP and QUIC.
//!
//! Order of checks, each with its own answer:
//! 1. fewer than 8 bytes: not even a correlation id to answer with → close;
//! 2. API key/version not in [`SERVED`](crate::handlers::SERVED) →
//!    UNSUPPORTED_VERSION in the KIP-511 shape (v0 ApiVersions body, v0
//!    header). For ApiVersions this is exactly what KIP-511 prescribes; for
//!    any other API no schema exists that the broker could answer in (an
//!    unknown key has none at all), and this shape carries the error code
//!    and the correlation id while keeping the connection usable;
//! 3. body does not decode → close with a log line (Kafka does the same:
//!    after a malformed body the stream position cannot be trusted);
//! 4. handler → response encoded at the request's version.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use futures::future::BoxFuture;
use skiff_protocol::api::{self, ApiKey, Frame, ResponseKind};
use skiff_protocol::frame;
use skiff_protocol::ErrorCode;

use crate::broker::Broker;
use crate::handlers::{self, Started};

/// What to send back for one request frame.
#[derive(Debug)]
pub enum Outcome {
    Respond(Frame),
    /// The protocol wants no response (Produce with acks=0).
    Silent,
    /// Close the connection after the responses before this one.
    Close(String),
}

/// The Kafka name of an API key ("Produce", "JoinGroup", …), for metrics
/// and logs; "Unknown" for keys the codec does not know.
fn api_name(key: i16) -> &'static str {
    static NAMES: OnceLock<HashMap<i16, &'static str>> = OnceLock::new();
    let names = NAMES.get_or_init(|| {
        // Built once: one small string per API the codec knows.
        (0..=i16::from(u8::MAX))
            .filter_map(|raw| ApiKey::try_from(raw).ok().map(|key| (raw, key)))
            .map(|(raw, key)| (raw, &*Box::leak(format!("{key:?}").into_boxed_str())))
            .collect()
    });
    names.get(&key).copied().unwrap_or("Unknown")
}

/// The result of [`dispatch`]: an outcome now, or a future that yields it.
pub enum Dispatched {
    Ready(Outcome),
    Later(BoxFuture<'static, Outcome>),
}

impl Dispatched {
    /// Waits for the outcome (QUIC streams, where order between streams is free).
    pub async fn outcome(self) -> Outcome {
        match self {
            Dispatched::Ready(outcome) => outcome,
            Dispatched::Later(future) => future.await,
        }
    }
}

/// Handles one request frame (without its size prefix). Runs the request's
/// side effects before returning, so calling it in arrival order applies
/// requests in arrival order; what is left (durability waits, long polls,
/// encoding their responses) is returned as a future.
/// `client` is the peer's address, for the APIs that report it.
pub fn dispatch(broker: &Arc<Broker>, request: Bytes, client: std::net::IpAddr) -> Dispatched {
    let started = Instant::now();
    let (key, version, correlation_id) = match frame::peek_request_ids(&request) {
        Ok(ids) => ids,
        Err(error) => {
            broker.metrics.frame_rejected();
            return Dispatched::Ready(Outcome::Close(format!(
                "request frame too short for a header: {error}"
            )));
        }
    };
    let name = api_name(key);
    let api_key = match ApiKey::try_from(key) {
        Ok(api_key) if handlers::is_served(key, version) => api_key,
        _ => {
            tracing::debug!(
                api_key = key,
                api_version = version,
                "unsupported API or version"
            );
            broker.metrics.request(name, key, started.elapsed(), true);
            return Dispatched::Ready(Outcome::Respond(api::encode_api_versions_fallback(
                correlation_id,
                ErrorCode::UnsupportedVersion.code(),
                &handlers::served_raw(),
            )));
        }
    };
    let (header, body) = match api::decode_request(request) {
        Ok(decoded) => decoded,
        Err(error) => {
            broker.metrics.frame_rejected();
            broker.metrics.request(name, key, started.elapsed(), true);
            return Dispatched::Ready(Outcome::Close(format!(
                "malformed {name} v{version} request: {error}"
            )));
        }
    };
    let respond = Responder {
        broker: Arc::clone(broker),
        api_key,
        version,
        correlation_id,
        name,
        started,
    };
    match handlers::start(broker, &header, body, client) {
        Ok(Started::Done(response)) => Dispatched::Ready(respond.finish(Ok(response))),
        Ok(Started::Later(future)) => Dispatched::Later(Box::pin(async move {
            let response = future.await;
            respond.finish(Ok(response))
        })),
        Err(error) => Dispatched::Ready(respond.finish(Err(error))),
    }
}

/// Encodes a handler's response and records the request's metrics.
struct Responder {
    broker: Arc<Broker>,
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    name: &'static str,
    started: Instant,
}

impl Responder {
    fn finish(self, result: Result<Option<ResponseKind>, handlers::HandlerError>) -> Outcome {
        let Responder {
            broker,
            api_key,
            version,
            correlation_id,
            name,
            started,
        } = self;
        let outcome = match result {
            Ok(Some(response)) => {
                match api::encode_response(correlation_id, api_key, version, &response) {
                    Ok(frame) => Outcome::Respond(frame),
                    Err(error) => {
                        tracing::error!(api = name, version, %error, "cannot encode response");
                        Outcome::Close(format!("cannot encode {name} v{version} response: {error}"))
                    }
                }
            }
            Ok(None) => Outcome::Silent,
            Err(error) => Outcome::Close(error.to_string()),
        };
        broker.metrics.request(
            name,
            api_key as i16,
            started.elapsed(),
            matches!(outcome, Outcome::Close(_)),
        );
        outcome
    }
}
