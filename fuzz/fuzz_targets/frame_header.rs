//! Frame + request header + body decode for every API key and version.
//!
//! The input is a byte stream as a socket would deliver it: frames are taken
//! off it with the size check, each frame is decoded as a request. The first
//! two bytes also pick an (api key, version) to decode a *response* body with,
//! so that response decoders (used by our client) get the same treatment.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use skiff_protocol::api::{self, SUPPORTED_API_KEYS};
use skiff_protocol::frame;

/// Small enough that the fuzzer hits the limit, large enough for real requests.
const FRAME_BYTES_MAX: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let Some((&[selector, version_byte], rest)) = data.split_first_chunk::<2>() else {
        return;
    };

    // Requests, framed as on the wire.
    let mut stream = BytesMut::from(rest);
    while let Ok(Some(payload)) = frame::read_frame(&mut stream, FRAME_BYTES_MAX) {
        let _ = frame::peek_request_ids(&payload);
        if let Ok((header, request)) = api::decode_request(payload.clone()) {
            // Whatever decodes must encode again at the same version.
            let reencoded = api::encode_request(&header, &request);
            assert!(reencoded.is_ok(), "decoded request does not re-encode: {reencoded:?}");
        }
        for header_version in 0..=2 {
            let _ = frame::decode_request_header(&mut payload.clone(), header_version);
        }
    }

    // Response bodies of a chosen API and version, unframed.
    let key = SUPPORTED_API_KEYS[usize::from(selector) % SUPPORTED_API_KEYS.len()];
    if let Some(range) = api::codec_versions(key) {
        let span = (range.max - range.min + 1) as u8;
        let version = range.min + i16::from(version_byte % span);
        let mut body = Bytes::copy_from_slice(rest);
        let _ = api::decode_response_header(key, version, &mut body);
        let _ = api::decode_response_body(key, version, &mut body);
    }
});
