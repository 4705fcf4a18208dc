//! ListOffsets (key 2), versions 1–6: earliest (-2), latest (-1), and the
//! first offset at or after a timestamp.

use std::sync::Arc;

use skiff_protocol::api::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use skiff_protocol::api::messages::{ListOffsetsRequest, ListOffsetsResponse};
use skiff_protocol::ErrorCode;

use super::storage_error_code;
use crate::broker::Broker;

const LATEST_TIMESTAMP: i64 = -1;
const EARLIEST_TIMESTAMP: i64 = -2;

pub fn handle(
    broker: &Arc<Broker>,
    version: i16,
    request: ListOffsetsRequest,
) -> ListOffsetsResponse {
    let mut response = ListOffsetsResponse::default();
    for topic in request.topics {
        let found = broker.topics.get(topic.name.as_str());
        let mut out = ListOffsetsTopicResponse::default();
        out.name = topic.name;
        for requested in topic.partitions {
            let mut result = ListOffsetsPartitionResponse::default();
            result.partition_index = requested.partition_index;
            result.timestamp = -1;
            result.offset = -1;
            let partition = found.as_ref().and_then(|t| {
                usize::try_from(requested.partition_index)
                    .ok()
                    .and_then(|i| t.partitions.get(i))
            });
            let Some(partition) = partition else {
                result.error_code = ErrorCode::UnknownTopicOrPartition.code();
                out.partitions.push(result);
                continue;
            };
            if version >= 4 {
                result.leader_epoch = 0;
            }
            let log = &partition.log;
            match requested.timestamp {
                LATEST_TIMESTAMP => result.offset = log.log_end_offset(),
                EARLIEST_TIMESTAMP => result.offset = log.log_start_offset(),
                timestamp if timestamp >= 0 => match log.offset_for_timestamp(timestamp) {
                    Ok(Some((offset, found_timestamp))) => {
                        result.offset = offset;
                        result.timestamp = found_timestamp;
                    }
                    Ok(None) => {}
                    Err(error) => result.error_code = storage_error_code(&error).code(),
                },
                _ => result.error_code = ErrorCode::InvalidRequest.code(),
            }
            out.partitions.push(result);
        }
        response.topics.push(out);
    }
    response
}
