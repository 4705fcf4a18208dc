//! Where a poll puts what it fetched: owned records for [`Consumer::poll`],
//! or a visitor shown borrowed records for [`Consumer::poll_with`].
//!
//! [`Consumer::poll`]: super::Consumer::poll
//! [`Consumer::poll_with`]: super::Consumer::poll_with

use std::sync::Arc;

use bytes::Bytes;

use super::fetcher::{decode_records, visit_records, ConsumerRecord, PartialDecode, RecordView};

/// Takes the records of one partition's fetched record set.
pub(crate) trait RecordSink {
    /// Takes the records at or after `position`; returns the next position
    /// (see `fetcher::decode_records`).
    fn take(
        &mut self,
        topic: &Arc<str>,
        partition: i32,
        records: Bytes,
        position: i64,
        check_crcs: bool,
    ) -> Result<i64, PartialDecode>;

    /// Whether no record was taken yet.
    fn is_empty(&self) -> bool;
}

impl RecordSink for Vec<ConsumerRecord> {
    fn take(
        &mut self,
        topic: &Arc<str>,
        partition: i32,
        records: Bytes,
        position: i64,
        check_crcs: bool,
    ) -> Result<i64, PartialDecode> {
        decode_records(topic, partition, records, position, check_crcs, self)
    }

    fn is_empty(&self) -> bool {
        Vec::is_empty(self)
    }
}

/// Shows each record to a closure as it is taken.
pub(crate) struct Visitor<F> {
    pub visit: F,
    pub shown: usize,
}

impl<F: FnMut(RecordView<'_>)> RecordSink for Visitor<F> {
    fn take(
        &mut self,
        topic: &Arc<str>,
        partition: i32,
        records: Bytes,
        position: i64,
        check_crcs: bool,
    ) -> Result<i64, PartialDecode> {
        let (next, shown) = visit_records(
            topic,
            partition,
            records,
            position,
            check_crcs,
            &mut self.visit,
        )?;
        self.shown += shown;
        Ok(next)
    }

    fn is_empty(&self) -> bool {
        self.shown == 0
    }
}
