//! Writes seed inputs for the cargo-fuzz targets in `fuzz/`: one valid batch
//! per compression codec, and one framed request per API and version, so the
//! fuzzer starts from real structure instead of rediscovering it.
//!
//! Run: `cargo run -p skiff-protocol --example fuzz_seeds -- fuzz/seeds`

use std::path::PathBuf;

use skiff_protocol::api::{self, messages, RequestKind, SUPPORTED_API_KEYS};
use skiff_protocol::batch::{Compression, RecordBatchBuilder, RecordBatchBuilderConfig};
use skiff_protocol::frame::RequestHeader;

macro_rules! default_request {
    ($key:expr, [$($variant:ident => $req:ident),* $(,)?]) => {
        match $key {
            $(api::ApiKey::$variant => RequestKind::$variant(messages::$req::default()),)*
            _ => return None,
        }
    };
}

fn request(key: api::ApiKey) -> Option<RequestKind> {
    Some(default_request!(key, [
        Produce => ProduceRequest, Fetch => FetchRequest, ListOffsets => ListOffsetsRequest,
        Metadata => MetadataRequest, OffsetCommit => OffsetCommitRequest,
        OffsetFetch => OffsetFetchRequest, FindCoordinator => FindCoordinatorRequest,
        JoinGroup => JoinGroupRequest, Heartbeat => HeartbeatRequest,
        LeaveGroup => LeaveGroupRequest, SyncGroup => SyncGroupRequest,
        DescribeGroups => DescribeGroupsRequest, ListGroups => ListGroupsRequest,
        ApiVersions => ApiVersionsRequest, CreateTopics => CreateTopicsRequest,
        DeleteTopics => DeleteTopicsRequest, InitProducerId => InitProducerIdRequest,
        DescribeConfigs => DescribeConfigsRequest, DeleteGroups => DeleteGroupsRequest,
    ]))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "fuzz/seeds".into()),
    );
    let batches = root.join("record_batch");
    let frames = root.join("frame_header");
    std::fs::create_dir_all(&batches)?;
    std::fs::create_dir_all(&frames)?;
    for codec in Compression::ALL {
        let mut builder = RecordBatchBuilder::new(RecordBatchBuilderConfig {
            compression: codec,
            ..Default::default()
        });
        builder.append(
            1_000,
            Some(b"key"),
            Some(b"value value value"),
            &[(b"h", Some(b"v"))],
        );
        builder.append(1_001, None, None, &[]);
        std::fs::write(batches.join(codec.name()), builder.build()?)?;
    }
    for (index, key) in SUPPORTED_API_KEYS.into_iter().enumerate() {
        let (Some(range), Some(body)) = (api::codec_versions(key), request(key)) else {
            continue;
        };
        for version in range.min..=range.max {
            let header = RequestHeader {
                api_key: key as i16,
                api_version: version,
                correlation_id: 1,
                client_id: Some("seed".into()),
            };
            // The target reads two selector bytes before the framed stream.
            let mut seed = vec![index as u8, (version - range.min) as u8];
            seed.extend_from_slice(&api::encode_request(&header, &body)?.to_contiguous());
            std::fs::write(frames.join(format!("{key:?}-v{version}")), seed)?;
        }
    }
    Ok(())
}
