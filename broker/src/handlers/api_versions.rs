//! ApiVersions (key 18), versions 0–4.
//!
//! A client that asks for a version we do not know gets the KIP-511
//! fallback instead (see `server::dispatch`): a v0 body with error 35.

use skiff_protocol::api::messages::api_versions_response::ApiVersion;
use skiff_protocol::api::messages::{ApiVersionsRequest, ApiVersionsResponse};

use super::SERVED;

pub fn handle(_version: i16, _request: &ApiVersionsRequest) -> ApiVersionsResponse {
    let mut response = ApiVersionsResponse::default();
    response.error_code = 0;
    response.api_keys = SERVED
        .iter()
        .map(|&(key, min, max)| {
            let mut api = ApiVersion::default();
            api.api_key = key as i16;
            api.min_version = min;
            api.max_version = max;
            api
        })
        .collect();
    response
}
