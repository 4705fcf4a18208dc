//! The producer's background sender: seals lingering batches, sends them to
//! partition leaders, and settles each batch from the broker's answer.
//!
//! All queue state changes happen on this task or under the accumulator
//! lock. Requests in flight are futures this task polls alongside its own
//! work (not tasks of their own: a task per request cost a spawn and a
//! hand-off per response), each independent of the others, so a slow
//! broker never stalls the rest.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt;
use skiff_protocol::api::messages::produce_request::{PartitionProduceData, TopicProduceData};
use skiff_protocol::api::messages::{ProduceRequest, ProduceResponse, TopicName};
use skiff_protocol::api::StrBytes;
use skiff_protocol::ErrorCode;

use super::accumulator::{Accumulator, PartitionQueue, TopicQueues};
use super::batch::{BatchAck, ProducerBatch};
use super::{init_producer_id, Acks, Shared};
use crate::error::{Error, Result};
use crate::net::{BrokerConnection, ResponseFuture};

/// A finished Produce request: its batches back, and the outcome.
struct Completion {
    broker: i32,
    batches: Vec<ProducerBatch>,
    result: Result<Option<ProduceResponse>>,
}

#[derive(Default)]
struct SenderState {
    in_flight_by_broker: HashMap<i32, usize>,
    in_flight_total: usize,
    bump_pending: bool,
    bump_retry_at: Option<Instant>,
    metadata_refreshing: Arc<AtomicBool>,
}

pub(super) async fn run(shared: Arc<Shared>) {
    let mut in_flight: FuturesUnordered<BoxFuture<'static, Completion>> = FuturesUnordered::new();
    let mut state = SenderState::default();
    loop {
        while let Some(Some(completion)) = in_flight.next().now_or_never() {
            settle(&shared, &mut state, completion);
        }
        if state.bump_pending
            && state.in_flight_total == 0
            && state.bump_retry_at.is_none_or(|at| at <= Instant::now())
        {
            bump_epoch(&shared, &mut state).await;
        }
        let now = Instant::now();
        let drained = drain(&shared, &mut state, now);
        let need_metadata = drained.need_metadata || shared.client.is_metadata_stale();
        if need_metadata {
            let woken = Arc::clone(&shared);
            shared.client.refresh_metadata_spaced(
                &state.metadata_refreshing,
                shared.config.retry_backoff,
                move || woken.wake.notify_one(),
            );
        }
        for (broker, batches) in drained.requests {
            *state.in_flight_by_broker.entry(broker).or_default() += 1;
            state.in_flight_total += 1;
            let request = produce_request(&shared.config, &batches);
            // Written here, in drain order, so a partition's batches reach
            // the connection in sequence order; only the wait is spawned.
            match shared.client.connected(broker) {
                Some(connection) => {
                    let written = write_request(&shared, &connection, request).await;
                    in_flight.push(Box::pin(await_response(
                        shared.config.request_timeout,
                        broker,
                        batches,
                        written,
                    )));
                }
                None => {
                    in_flight.push(Box::pin(connect_and_send(
                        Arc::clone(&shared),
                        broker,
                        batches,
                        request,
                    )));
                }
            }
        }
        let idle = shared
            .accumulator
            .lock()
            .map(|a| a.incomplete_batches() == 0)
            .unwrap_or(true);
        if shared.closing.load(Ordering::Acquire) && idle && state.in_flight_total == 0 {
            return;
        }
        let mut wake_at = drained.wake_at.unwrap_or(now + Duration::from_secs(1));
        if let Some(at) = state.bump_retry_at.filter(|_| state.bump_pending) {
            wake_at = wake_at.min(at);
        }
        tokio::select! {
            _ = shared.wake.notified() => {}
            Some(completion) = in_flight.next(), if !in_flight.is_empty() => {
                settle(&shared, &mut state, completion);
            }
            _ = tokio::time::sleep_until(wake_at.into()) => {}
        }
    }
}

struct Drained {
    requests: Vec<(i32, Vec<ProducerBatch>)>,
    wake_at: Option<Instant>,
    need_metadata: bool,
}

fn earliest(current: &mut Option<Instant>, candidate: Instant) {
    *current = Some(current.map_or(candidate, |c| c.min(candidate)));
}

/// Seals lingering batches, fails expired ones, and takes the batches that
/// can be sent now, grouped by leader.
fn drain(shared: &Shared, state: &mut SenderState, now: Instant) -> Drained {
    let config = &shared.config;
    let mut drained = Drained {
        requests: Vec::new(),
        wake_at: None,
        need_metadata: false,
    };
    let Ok(mut acc) = shared.accumulator.lock() else {
        return drained;
    };
    let seal_all = shared.flushing.load(Ordering::Acquire) > 0
        || shared.memory_waiters.load(Ordering::Acquire) > 0
        || shared.closing.load(Ordering::Acquire);
    let idempotent = acc.identity.is_idempotent();
    let mut by_broker: HashMap<i32, (Vec<ProducerBatch>, usize)> = HashMap::new();
    let mut to_seal = Vec::new();
    let client = &shared.client;
    for queues in &acc.topics {
        for (partition, queue) in queues.partitions.iter().enumerate() {
            if let Some(open) = &queue.open {
                let due = open.created + config.linger;
                if seal_all {
                    to_seal.push((Arc::clone(&queues.name), partition as i32));
                } else if due > now {
                    earliest(&mut drained.wake_at, due);
                } else if can_send_now(state, queues, partition, queue, idempotent, client, config)
                {
                    to_seal.push((Arc::clone(&queues.name), partition as i32));
                }
                // Otherwise the lingered batch stays open and keeps taking
                // records until a request completes (which wakes the sender),
                // as in Kafka: sealing it now would queue a batch per record
                // behind the busy connection.
            }
        }
    }
    for (topic, partition) in to_seal {
        acc.seal(&topic, partition);
    }
    for failure in std::mem::take(&mut acc.seal_failures) {
        shared.buffer.add_permits(failure.reserved_bytes);
        note_failure(shared, Some(&failure.error), failure.records);
        shared.done.notify_waiters();
    }
    let mut expired = Vec::new();
    let mut refused = 0usize;
    for queues in &mut acc.topics {
        for (index, queue) in queues.partitions.iter_mut().enumerate() {
            let partition = index as i32;
            expire(queue, config.delivery_timeout, now, &mut expired);
            let Some(head) = queue.ready.front() else {
                continue;
            };
            earliest(&mut drained.wake_at, head.created + config.delivery_timeout);
            if state.bump_pending {
                continue;
            }
            if let Some(at) = head.retry_at.filter(|at| *at > now) {
                earliest(&mut drained.wake_at, at);
                continue;
            }
            let Some(leader) = client.cached_leader(&queues.name, partition) else {
                drained.need_metadata = true;
                continue;
            };
            if !queue.may_pipeline(idempotent, config.max_in_flight) {
                continue;
            }
            let broker_in_flight = state.in_flight_by_broker.get(&leader).copied().unwrap_or(0);
            if broker_in_flight >= config.max_in_flight {
                continue;
            }
            let entry = by_broker.entry(leader).or_default();
            if !entry.0.is_empty() && entry.1 + head.bytes.len() > config.max_request_size {
                refused += 1;
                continue;
            }
            if let Some(mut batch) = queue.ready.pop_front() {
                batch.sent_behind_others = queue.in_flight > 0;
                entry.1 += batch.bytes.len();
                entry.0.push(batch);
                queue.in_flight += 1;
            }
        }
    }
    if refused > 0 {
        // Left over because a request was full: send them in the next round.
        drained.wake_at = Some(now);
    }
    for batch in expired {
        if idempotent {
            state.bump_pending = true;
        }
        let error = Error::DeliveryTimeout {
            timeout: config.delivery_timeout,
            last_error: batch
                .last_error
                .as_ref()
                .map_or_else(|| "no attempt finished".to_string(), ToString::to_string),
        };
        finish(shared, &mut acc, batch, Err(error));
    }
    drained.requests = by_broker
        .into_iter()
        .map(|(broker, (batches, _))| (broker, batches))
        .collect();
    drained
}

/// Whether a batch sealed now on this partition would go out in this round:
/// nothing is queued ahead of it and its leader's connection has room. An
/// unknown leader counts as sendable, so the batch is sealed and the drain
/// asks for metadata.
fn can_send_now(
    state: &SenderState,
    queues: &TopicQueues,
    partition: usize,
    queue: &PartitionQueue,
    idempotent: bool,
    client: &crate::client::Client,
    config: &super::ProducerConfig,
) -> bool {
    if !queue.ready.is_empty() || !queue.may_pipeline(idempotent, config.max_in_flight) {
        return false;
    }
    match client.cached_leader(&queues.name, partition as i32) {
        Some(leader) => {
            state.in_flight_by_broker.get(&leader).copied().unwrap_or(0) < config.max_in_flight
        }
        None => true,
    }
}

/// Moves batches past their delivery timeout out of the queue.
fn expire(
    queue: &mut PartitionQueue,
    timeout: Duration,
    now: Instant,
    out: &mut Vec<ProducerBatch>,
) {
    // Only a prefix can be removed without leaving a sent batch behind an
    // unsent older one; batches are in creation order, so expiry is too.
    while queue
        .ready
        .front()
        .is_some_and(|b| b.created + timeout <= now)
    {
        if let Some(batch) = queue.ready.pop_front() {
            out.push(batch);
        }
    }
}

fn note_failure(shared: &Shared, error: Option<&Error>, records: i32) {
    shared
        .failed_records
        .fetch_add(u64::try_from(records).unwrap_or(0), Ordering::AcqRel);
    if let (Some(error), Ok(mut first)) = (error, shared.first_failure.lock()) {
        if first.is_none() {
            *first = Some(error.clone());
        }
    }
}

/// Completes a batch: resolves its records' futures and frees its buffer.
fn finish(shared: &Shared, acc: &mut Accumulator, batch: ProducerBatch, result: Result<BatchAck>) {
    if let Err(error) = &result {
        note_failure(shared, Some(error), batch.records);
    }
    // Memory first: a caller woken by its delivery may send at once.
    shared.buffer.add_permits(batch.reserved_bytes);
    batch.outcome.complete(result);
    acc.complete(batch.id);
    acc.recycle(batch.bytes);
    shared.done.notify_waiters();
}

fn produce_request(config: &super::ProducerConfig, batches: &[ProducerBatch]) -> ProduceRequest {
    let mut topics: Vec<TopicProduceData> = Vec::new();
    for batch in batches {
        let data = PartitionProduceData::default()
            .with_index(batch.partition)
            .with_records(Some(batch.bytes.clone()));
        match topics
            .iter_mut()
            .find(|t| t.name.0.as_str() == &*batch.topic)
        {
            Some(topic) => topic.partition_data.push(data),
            None => topics.push(
                TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_string(batch.topic.to_string())))
                    .with_partition_data(vec![data]),
            ),
        }
    }
    ProduceRequest::default()
        .with_transactional_id(None)
        .with_acks(config.acks.wire_value())
        .with_timeout_ms(i32::try_from(config.request_timeout.as_millis()).unwrap_or(i32::MAX))
        .with_topic_data(topics)
}

/// A written Produce request: its response to wait for, or none (acks=0).
type Written = Result<Option<ResponseFuture<ProduceResponse>>>;

async fn write_request(
    shared: &Shared,
    connection: &Arc<BrokerConnection>,
    request: ProduceRequest,
) -> Written {
    if shared.config.acks == Acks::None {
        connection.send_only(request).await.map(|_| None)
    } else {
        connection.send(request).await.map(Some)
    }
}

async fn await_response(
    timeout: Duration,
    broker: i32,
    batches: Vec<ProducerBatch>,
    written: Written,
) -> Completion {
    let result = match written {
        Ok(Some(pending)) => {
            let connection = Arc::clone(pending.connection());
            let outcome = pending.response_within(timeout).await;
            if let Err(Error::RequestTimeout { .. }) = &outcome {
                // A late answer must not be mistaken for a newer request's.
                connection.close("request timed out");
            }
            outcome.map(Some)
        }
        Ok(None) => Ok(None),
        Err(error) => Err(error),
    };
    Completion {
        broker,
        batches,
        result,
    }
}

/// Connects (waiting out the reconnect backoff) and sends; used when the
/// broker has no open connection, so no earlier request can be overtaken.
async fn connect_and_send(
    shared: Arc<Shared>,
    broker: i32,
    batches: Vec<ProducerBatch>,
    request: ProduceRequest,
) -> Completion {
    let written = match shared.client.broker_connection(broker).await {
        Ok(connection) => write_request(&shared, &connection, request).await,
        Err(error) => Err(error),
    };
    await_response(shared.config.request_timeout, broker, batches, written).await
}

/// A partition's answer: code, base offset, log append time, message.
type PartitionAnswer = (ErrorCode, i64, i64, Option<String>);

/// Applies a finished request to the queues.
fn settle(shared: &Shared, state: &mut SenderState, completion: Completion) {
    if let Some(count) = state.in_flight_by_broker.get_mut(&completion.broker) {
        *count = count.saturating_sub(1);
    }
    state.in_flight_total = state.in_flight_total.saturating_sub(1);
    let Ok(mut acc) = shared.accumulator.lock() else {
        return;
    };
    let mut answers: HashMap<(&str, i32), PartitionAnswer> = HashMap::new();
    if let Ok(Some(response)) = &completion.result {
        for topic in &response.responses {
            for partition in &topic.partition_responses {
                answers.insert(
                    (topic.name.0.as_str(), partition.index),
                    (
                        ErrorCode::from_code(partition.error_code),
                        partition.base_offset,
                        partition.log_append_time_ms,
                        partition.error_message.as_ref().map(ToString::to_string),
                    ),
                );
            }
        }
    }
    let mut stale_metadata = false;
    let mut settled = HashSet::new();
    for batch in completion.batches {
        settled.insert((Arc::clone(&batch.topic), batch.partition));
        let outcome = match &completion.result {
            Err(error) => Err(error.clone()),
            Ok(None) => Ok(BatchAck {
                base_offset: -1,
                log_append_time_ms: -1,
            }),
            Ok(Some(_)) => match answers.get(&(&*batch.topic, batch.partition)) {
                Some((ErrorCode::None, base_offset, log_append_time_ms, _)) => Ok(BatchAck {
                    base_offset: *base_offset,
                    log_append_time_ms: *log_append_time_ms,
                }),
                // Already appended by an earlier attempt whose answer was lost.
                Some((ErrorCode::DuplicateSequenceNumber, base_offset, log_append_time_ms, _)) => {
                    Ok(BatchAck {
                        base_offset: if *base_offset >= 0 { *base_offset } else { -1 },
                        log_append_time_ms: *log_append_time_ms,
                    })
                }
                Some((code, _, _, message)) => Err(Error::kafka(
                    *code,
                    format!("produce to {}-{}", batch.topic, batch.partition),
                    message.clone(),
                )),
                None => Err(Error::kafka(
                    ErrorCode::UnknownServerError,
                    format!("produce to {}-{}", batch.topic, batch.partition),
                    Some("the response does not mention this partition".into()),
                )),
            },
        };
        stale_metadata |= outcome
            .as_ref()
            .err()
            .is_some_and(Error::invalidates_metadata);
        settle_batch(shared, state, &mut acc, batch, outcome);
    }
    drop(acc);
    if stale_metadata {
        shared.client.invalidate_metadata();
    }
    shared.wake.notify_one();
}

fn settle_batch(
    shared: &Shared,
    state: &mut SenderState,
    acc: &mut Accumulator,
    mut batch: ProducerBatch,
    outcome: Result<BatchAck>,
) {
    let config = &shared.config;
    let idempotent = acc.identity.is_idempotent();
    let identity = acc.identity;
    let Some(queue) = acc
        .queues_mut(&batch.topic)
        .and_then(|t| t.partitions.get_mut(batch.partition as usize))
    else {
        return;
    };
    queue.in_flight = queue.in_flight.saturating_sub(1);
    let error = match outcome {
        Ok(ack) => {
            if idempotent
                && batch.producer_epoch == identity.epoch
                && batch.producer_id == identity.id
            {
                queue.last_acked_sequence = batch.last_sequence();
            }
            queue.recovering = false;
            finish(shared, acc, batch, Ok(ack));
            return;
        }
        Err(error) => error,
    };
    queue.recovering = true;
    let mut retriable = error.is_retriable();
    // Overtaken by a later batch: resend as soon as the earlier one is
    // answered (recovering keeps it behind), no backoff needed.
    let mut overtaken = false;
    if idempotent {
        if let Some(code @ (ErrorCode::OutOfOrderSequenceNumber | ErrorCode::UnknownProducerId)) =
            error.code()
        {
            // Sent while an earlier batch was out: the broker handled this
            // one first, and it will succeed once the earlier one has.
            // Otherwise the broker lost or never had our state: renumber
            // under a new epoch (or id).
            if code == ErrorCode::UnknownProducerId || !batch.sent_behind_others {
                state.bump_pending = true;
            } else {
                overtaken = true;
            }
            retriable = true;
        }
    }
    let expired = batch.created + config.delivery_timeout <= Instant::now();
    if retriable && batch.attempts < config.retries && !expired {
        batch.attempts += 1;
        let backoff = config
            .retry_backoff
            .saturating_mul(1u32 << batch.attempts.min(16).saturating_sub(1))
            .min(config.retry_backoff_max);
        batch.retry_at = (!overtaken).then(|| Instant::now() + backoff);
        tracing::debug!(topic = %batch.topic, partition = batch.partition, attempt = batch.attempts, %error, "retrying batch");
        batch.last_error = Some(error);
        shared.retried_batches.fetch_add(1, Ordering::Relaxed);
        queue.requeue(batch);
        return;
    }
    let error = if expired {
        Error::DeliveryTimeout {
            timeout: config.delivery_timeout,
            last_error: error.to_string(),
        }
    } else {
        error
    };
    if idempotent {
        // The failed batch leaves a hole in the sequence: renumber the rest.
        state.bump_pending = true;
    }
    finish(shared, acc, batch, Err(error));
}

async fn bump_epoch(shared: &Shared, state: &mut SenderState) {
    let current = match shared.accumulator.lock() {
        Ok(acc) => acc.identity,
        Err(_) => return,
    };
    match init_producer_id(&shared.client, Some(current), shared.config.request_timeout).await {
        Ok(identity) => {
            tracing::debug!(?current, ?identity, "producer epoch bumped");
            if let Ok(mut acc) = shared.accumulator.lock() {
                acc.resequence(identity);
            }
            shared.epoch_bumps.fetch_add(1, Ordering::Relaxed);
            state.bump_pending = false;
            state.bump_retry_at = None;
        }
        Err(error) if !error.is_retriable() => {
            // The broker refuses to bump an id it does not know (e.g. it
            // lost its producer state): start over with a fresh id.
            tracing::debug!(%error, "epoch bump refused, asking for a new producer id");
            match init_producer_id(&shared.client, None, shared.config.request_timeout).await {
                Ok(identity) => {
                    if let Ok(mut acc) = shared.accumulator.lock() {
                        acc.resequence(identity);
                    }
                    shared.epoch_bumps.fetch_add(1, Ordering::Relaxed);
                    state.bump_pending = false;
                    state.bump_retry_at = None;
                }
                Err(error) => {
                    tracing::debug!(%error, "new producer id failed, will retry");
                    state.bump_retry_at = Some(Instant::now() + shared.config.retry_backoff);
                }
            }
        }
        Err(error) => {
            tracing::debug!(%error, "epoch bump failed, will retry");
            state.bump_retry_at = Some(Instant::now() + shared.config.retry_backoff);
        }
    }
}
