//! The `__consumer_offsets` record decoder: disk bytes that every broker
//! start replays into the group coordinator.
//!
//! The first input byte splits the rest into key and value (255: the value
//! is null, a tombstone). A record that decodes must survive re-encoding
//! unchanged, and replaying it (twice, as a crash-and-reload would) and
//! running the coordinator's timers must not panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skiff_broker::coordinator::{CoordinatorConfig, GroupCoordinator, OffsetsRecord, SequentialIds};

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else { return };
    let (key, value) = if split == 255 {
        (rest, None)
    } else {
        let at = usize::from(split).min(rest.len());
        (&rest[..at], Some(&rest[at..]))
    };
    let Ok(Some(record)) = OffsetsRecord::decode(key, value) else { return };
    let value_bytes = record.value_bytes();
    let again = OffsetsRecord::decode(&record.key_bytes(), value_bytes.as_deref())
        .expect("a re-encoded record decodes");
    assert_eq!(again.as_ref(), Some(&record));
    let mut coordinator =
        GroupCoordinator::new(CoordinatorConfig::default(), Box::<SequentialIds>::default());
    coordinator.begin_loading(coordinator.partition_for(record.group_id()));
    coordinator.replay(1_000, &record);
    coordinator.replay(1_000, &record);
    coordinator.finish_loading(coordinator.partition_for(record.group_id()));
    let _ = coordinator.tick(2_000_000);
    let _ = coordinator.expire_offsets(2_000_000_000_000);
    let _ = coordinator.describe_group(record.group_id());
});
