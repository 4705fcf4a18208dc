//! Idempotent produce: InitProducerId plus hand-built batches with producer
//! ids, epochs and sequences, against a real `skiffd`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use anyhow::{bail, Result};
use common::{batch, Client, Skiffd};
use skiff_protocol::api::messages;
use skiff_protocol::api::{ApiKey, RequestKind, ResponseKind, StrBytes};
use skiff_protocol::ErrorCode;

fn init_producer_id(
    client: &mut Client,
    transactional_id: Option<&str>,
) -> Result<(i16, i64, i16)> {
    let mut request = messages::InitProducerIdRequest::default();
    request.transactional_id =
        transactional_id.map(|id| messages::TransactionalId(StrBytes::from_string(id.to_string())));
    request.transaction_timeout_ms = 60_000;
    request.producer_id = messages::ProducerId(-1);
    request.producer_epoch = -1;
    match client.call(
        ApiKey::InitProducerId,
        4,
        RequestKind::InitProducerId(request),
    )? {
        ResponseKind::InitProducerId(r) => Ok((r.error_code, r.producer_id.0, r.producer_epoch)),
        other => bail!("unexpected {other:?}"),
    }
}

/// A retried batch is answered with its original offset and stored once, also after a restart.
#[test]
fn retried_batch_is_not_duplicated() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Skiffd::start(dir.path(), &[])?;
    let mut client = broker.connect()?;
    assert_eq!(client.create_topic("idem", 1, &[])?, 0);
    let (error, producer_id, epoch) = init_producer_id(&mut client, None)?;
    assert_eq!((error, epoch), (0, 0));
    assert!(producer_id >= 0);

    let first = batch(&[b"a", b"b", b"c"], producer_id, 0, 0);
    let second = batch(&[b"d"], producer_id, 0, 3);
    assert_eq!(client.produce("idem", 0, first.clone(), -1)?, (0, 0));
    assert_eq!(
        client.produce("idem", 0, first.clone(), -1)?,
        (0, 0),
        "retry answered with the original offset"
    );
    assert_eq!(client.produce("idem", 0, second.clone(), -1)?, (0, 3));
    assert_eq!(
        client.produce("idem", 0, first.clone(), -1)?,
        (0, 0),
        "older batch in the window still recognised"
    );
    assert_eq!(
        client.list_offset("idem", 0, -1)?,
        (0, 4),
        "nothing appended twice"
    );

    drop(client);
    assert_eq!(broker.stop()?, 0);
    let broker = Skiffd::start(dir.path(), &[])?;
    let mut client = broker.connect()?;
    assert_eq!(
        client.produce("idem", 0, second, -1)?,
        (0, 3),
        "state rebuilt from the log"
    );
    assert_eq!(client.list_offset("idem", 0, -1)?, (0, 4));
    let (_, next_id, _) = init_producer_id(&mut client, None)?;
    assert!(
        next_id > producer_id,
        "producer ids are never reused ({next_id} after {producer_id})"
    );
    Ok(())
}

/// A gap in the sequence is OUT_OF_ORDER_SEQUENCE_NUMBER and appends nothing.
#[test]
fn sequence_gap_is_out_of_order() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Skiffd::start(dir.path(), &[])?;
    let mut client = broker.connect()?;
    assert_eq!(client.create_topic("gap", 1, &[])?, 0);
    let (_, producer_id, _) = init_producer_id(&mut client, None)?;
    assert_eq!(
        client
            .produce("gap", 0, batch(&[b"a", b"b"], producer_id, 0, 0), -1)?
            .0,
        0
    );
    let (error, _) = client.produce("gap", 0, batch(&[b"z"], producer_id, 0, 5), -1)?;
    assert_eq!(error, ErrorCode::OutOfOrderSequenceNumber.code());
    assert_eq!(client.list_offset("gap", 0, -1)?, (0, 2));
    // The expected sequence still works afterwards.
    assert_eq!(
        client.produce("gap", 0, batch(&[b"c"], producer_id, 0, 2), -1)?,
        (0, 2)
    );
    Ok(())
}

/// After a newer epoch of the producer wrote, the old epoch is fenced with INVALID_PRODUCER_EPOCH.
#[test]
fn old_epoch_is_fenced() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Skiffd::start(dir.path(), &[])?;
    let mut client = broker.connect()?;
    assert_eq!(client.create_topic("fence", 1, &[])?, 0);
    let (_, producer_id, _) = init_producer_id(&mut client, None)?;
    assert_eq!(
        client
            .produce("fence", 0, batch(&[b"a"], producer_id, 0, 0), -1)?
            .0,
        0
    );
    // A bumped epoch must restart its sequence at zero.
    let (error, _) = client.produce("fence", 0, batch(&[b"b"], producer_id, 1, 7), -1)?;
    assert_eq!(error, ErrorCode::OutOfOrderSequenceNumber.code());
    assert_eq!(
        client.produce("fence", 0, batch(&[b"b"], producer_id, 1, 0), -1)?,
        (0, 1)
    );
    let (error, _) = client.produce("fence", 0, batch(&[b"c"], producer_id, 0, 1), -1)?;
    assert_eq!(error, ErrorCode::InvalidProducerEpoch.code());
    assert_eq!(client.list_offset("fence", 0, -1)?, (0, 2));
    Ok(())
}

/// Transactions are not served: a transactional id is refused, not half-supported.
#[test]
fn transactional_id_is_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Skiffd::start(dir.path(), &[])?;
    let mut client = broker.connect()?;
    let (error, producer_id, _) = init_producer_id(&mut client, Some("txn-1"))?;
    assert_eq!(error, ErrorCode::TransactionalIdAuthorizationFailed.code());
    assert_eq!(producer_id, -1);
    Ok(())
}

/// Five idempotent batches pipelined on one connection (as librdkafka and the Java client
/// do with max.in.flight=5) are appended in order, none refused as out of order.
#[test]
fn pipelined_idempotent_batches_keep_their_order() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Skiffd::start(dir.path(), &[])?;
    let mut client = broker.connect()?;
    assert_eq!(client.create_topic("inflight", 1, &[])?, 0);
    let (_, producer_id, _) = init_producer_id(&mut client, None)?;
    for round in 0..20 {
        let mut ids = Vec::new();
        for i in 0..5 {
            let sequence = round * 10 + i * 2;
            let mut data = messages::produce_request::PartitionProduceData::default();
            data.records = Some(batch(&[b"x", b"y"], producer_id, 0, sequence));
            let mut topic = messages::produce_request::TopicProduceData::default();
            topic.name = messages::TopicName(StrBytes::from_string("inflight".to_string()));
            topic.partition_data = vec![data];
            let mut request = messages::ProduceRequest::default();
            request.acks = -1;
            request.timeout_ms = 10_000;
            request.topic_data = vec![topic];
            ids.push(client.send(ApiKey::Produce, 9, &RequestKind::Produce(request))?);
        }
        for (i, id) in ids.into_iter().enumerate() {
            let ResponseKind::Produce(r) = client.receive(ApiKey::Produce, 9, id)? else {
                bail!("not produce")
            };
            let p = &r.responses[0].partition_responses[0];
            assert_eq!(
                (p.error_code, p.base_offset),
                (0, i64::from(round * 10) + i as i64 * 2)
            );
        }
    }
    Ok(())
}
