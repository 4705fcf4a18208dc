//! The consumer group protocol's embedded subscription and assignment bytes
//! (JoinGroup member metadata, SyncGroup and DescribeGroups assignments),
//! which come from other group members through the broker.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use skiff_client::group::{Assignment, Subscription};

fuzz_target!(|data: &[u8]| {
    let bytes = Bytes::copy_from_slice(data);
    if let Ok(subscription) = Subscription::decode(bytes.clone()) {
        // Whatever decodes must encode and decode to the same value.
        let again = subscription.encode().map(Subscription::decode);
        assert!(matches!(again, Ok(Ok(ref s)) if s.topics == subscription.topics));
    }
    if let Ok(assignment) = Assignment::decode(bytes) {
        let again = assignment.encode().map(Assignment::decode);
        assert!(matches!(again, Ok(Ok(ref a)) if a.partitions.len() == assignment.partitions.len()));
    }
});
