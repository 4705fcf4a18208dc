//! Shared test harness: a real `skiffd` process on ephemeral loopback ports,
//! and a minimal Kafka-protocol client over TCP built on skiff-protocol.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::{Buf, Bytes};
use skiff_protocol::api::messages::{self, TopicName};
use skiff_protocol::api::{self, ApiKey, RequestKind, ResponseKind, StrBytes};
use skiff_protocol::batch::{RecordBatchBuilder, RecordBatchBuilderConfig};
use skiff_protocol::frame::RequestHeader;

/// A running broker process, killed when dropped.
pub struct Skiffd {
    pub child: Child,
    pub tcp: SocketAddr,
    pub quic: Option<SocketAddr>,
    pub metrics: Option<SocketAddr>,
    pub data_dir: PathBuf,
}

fn parse_addr(line: &str, key: &str) -> Option<SocketAddr> {
    line.split_whitespace()
        .find_map(|part| part.strip_prefix(&format!("{key}=")))
        .and_then(|value| value.parse().ok())
}

impl Skiffd {
    /// Starts `skiffd` on 127.0.0.1 ephemeral ports with `data_dir` and `extra` flags.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Result<Skiffd> {
        Skiffd::start_with(data_dir, extra, |_| {})
    }

    pub fn start_with(
        data_dir: &Path,
        extra: &[&str],
        customize: impl FnOnce(&mut Command),
    ) -> Result<Skiffd> {
        let mut command = Command::new(env!("CARGO_BIN_EXE_skiffd"));
        command
            .args([
                "--listen",
                "127.0.0.1:0",
                "--quic-listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .env(
                "SKIFF_LOG",
                std::env::var("SKIFF_LOG").unwrap_or_else(|_| "warn".to_string()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        customize(&mut command);
        let mut child = command.spawn().context("spawning skiffd")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = match lines.next() {
            Some(line) => line?,
            None => {
                let status = child.wait()?;
                bail!("skiffd exited before listening: {status}");
            }
        };
        // Keep draining stdout so the broker never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        if !line.starts_with("skiffd listening ") {
            bail!("unexpected first line {line:?}");
        }
        Ok(Skiffd {
            tcp: parse_addr(&line, "tcp").ok_or_else(|| anyhow!("no tcp= in {line:?}"))?,
            quic: parse_addr(&line, "quic"),
            metrics: parse_addr(&line, "metrics"),
            child,
            data_dir: data_dir.to_path_buf(),
        })
    }

    pub fn bootstrap(&self) -> String {
        self.tcp.to_string()
    }

    /// SIGTERM, then waits for the exit; returns the exit code.
    pub fn stop(mut self) -> Result<i32> {
        let pid = self.child.id() as i32;
        // SAFETY: sending a signal to our own child process.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let status = wait_timeout(&mut self.child, Duration::from_secs(40))?;
        status
            .code()
            .ok_or_else(|| anyhow!("skiffd died from a signal: {status}"))
    }

    /// SIGKILL: no chance to flush or mark a clean shutdown.
    pub fn kill(mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn connect(&self) -> Result<Client> {
        Client::connect(self.tcp)
    }

    /// GET /metrics.
    pub fn scrape(&self) -> Result<String> {
        let addr = self.metrics.context("metrics disabled")?;
        let mut stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
        let mut text = String::new();
        stream.read_to_string(&mut text)?;
        Ok(text)
    }
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> Result<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if std::time::Instant::now() > deadline {
            child.kill()?;
            bail!("skiffd did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Skiffd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A blocking Kafka-protocol client for tests.
pub struct Client {
    pub stream: TcpStream,
    correlation_id: i32,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Result<Client> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        stream.set_nodelay(true)?;
        Ok(Client {
            stream,
            correlation_id: 0,
        })
    }

    /// Sends one request; returns the correlation id used.
    pub fn send(&mut self, key: ApiKey, version: i16, request: &RequestKind) -> Result<i32> {
        self.correlation_id += 1;
        let header = RequestHeader {
            api_key: key as i16,
            api_version: version,
            correlation_id: self.correlation_id,
            client_id: Some("skiff-test".to_string()),
        };
        let frame = api::encode_request(&header, request)?;
        self.stream.write_all(&frame.to_contiguous())?;
        Ok(self.correlation_id)
    }

    /// Reads one response frame (without size prefix).
    pub fn read_frame(&mut self) -> Result<Bytes> {
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size)?;
        let size = i32::from_be_bytes(size);
        if !(0..=256 * 1024 * 1024).contains(&size) {
            bail!("bad response size {size}");
        }
        let mut body = vec![0u8; size as usize];
        self.stream.read_exact(&mut body)?;
        Ok(Bytes::from(body))
    }

    pub fn receive(
        &mut self,
        key: ApiKey,
        version: i16,
        correlation_id: i32,
    ) -> Result<ResponseKind> {
        let mut frame = self.read_frame()?;
        let got = api::decode_response_header(key, version, &mut frame)?;
        if got != correlation_id {
            bail!("correlation id {got}, expected {correlation_id}");
        }
        Ok(api::decode_response_body(key, version, &mut frame)?)
    }

    pub fn call(
        &mut self,
        key: ApiKey,
        version: i16,
        request: RequestKind,
    ) -> Result<ResponseKind> {
        let id = self.send(key, version, &request)?;
        self.receive(key, version, id)
    }

    pub fn write_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream.write_all(bytes)?;
        Ok(())
    }

    pub fn create_topic(
        &mut self,
        name: &str,
        partitions: i32,
        configs: &[(&str, &str)],
    ) -> Result<i16> {
        let mut topic = messages::create_topics_request::CreatableTopic::default();
        topic.name = TopicName(StrBytes::from_string(name.to_string()));
        topic.num_partitions = partitions;
        topic.replication_factor = 1;
        topic.configs = configs
            .iter()
            .map(|(k, v)| {
                let mut config = messages::create_topics_request::CreatableTopicConfig::default();
                config.name = StrBytes::from_string(k.to_string());
                config.value = Some(StrBytes::from_string(v.to_string()));
                config
            })
            .collect();
        let mut request = messages::CreateTopicsRequest::default();
        request.topics = vec![topic];
        request.timeout_ms = 10_000;
        match self.call(ApiKey::CreateTopics, 5, RequestKind::CreateTopics(request))? {
            ResponseKind::CreateTopics(r) => Ok(r.topics[0].error_code),
            other => bail!("unexpected {other:?}"),
        }
    }

    /// Produce v9 of one batch to one partition: (error code, base offset).
    pub fn produce(
        &mut self,
        topic: &str,
        partition: i32,
        records: Bytes,
        acks: i16,
    ) -> Result<(i16, i64)> {
        let response = self.produce_raw(topic, partition, records, acks)?;
        let p = &response.responses[0].partition_responses[0];
        Ok((p.error_code, p.base_offset))
    }

    pub fn produce_raw(
        &mut self,
        topic: &str,
        partition: i32,
        records: Bytes,
        acks: i16,
    ) -> Result<messages::ProduceResponse> {
        let request = Client::produce_request(topic, partition, records, acks);
        match self.call(ApiKey::Produce, 9, RequestKind::Produce(request))? {
            ResponseKind::Produce(r) => Ok(r),
            other => bail!("unexpected {other:?}"),
        }
    }

    /// Reads the Produce v9 responses to `ids`, in order: (error code, base
    /// offset) of each one's first partition.
    pub fn receive_produced(&mut self, ids: Vec<i32>) -> Result<Vec<(i16, i64)>> {
        let mut got = Vec::new();
        for id in ids {
            let ResponseKind::Produce(response) = self.receive(ApiKey::Produce, 9, id)? else {
                bail!("not a produce response");
            };
            let partition = &response.responses[0].partition_responses[0];
            got.push((partition.error_code, partition.base_offset));
        }
        Ok(got)
    }

    /// A produce of `records` to one partition.
    pub fn produce_request(
        topic: &str,
        partition: i32,
        records: Bytes,
        acks: i16,
    ) -> messages::ProduceRequest {
        let mut data = messages::produce_request::PartitionProduceData::default();
        data.index = partition;
        data.records = Some(records);
        let mut topic_data = messages::produce_request::TopicProduceData::default();
        topic_data.name = TopicName(StrBytes::from_string(topic.to_string()));
        topic_data.partition_data = vec![data];
        let mut request = messages::ProduceRequest::default();
        request.acks = acks;
        request.timeout_ms = 10_000;
        request.topic_data = vec![topic_data];
        request
    }

    pub fn fetch_request(
        topic: &str,
        partition: i32,
        offset: i64,
        max_wait_ms: i32,
        min_bytes: i32,
    ) -> messages::FetchRequest {
        let mut p = messages::fetch_request::FetchPartition::default();
        p.partition = partition;
        p.fetch_offset = offset;
        p.partition_max_bytes = 1024 * 1024;
        let mut t = messages::fetch_request::FetchTopic::default();
        t.topic = TopicName(StrBytes::from_string(topic.to_string()));
        t.partitions = vec![p];
        let mut request = messages::FetchRequest::default();
        request.replica_id = messages::BrokerId(-1);
        request.max_wait_ms = max_wait_ms;
        request.min_bytes = min_bytes;
        request.max_bytes = 50 * 1024 * 1024;
        request.session_epoch = -1;
        request.topics = vec![t];
        request
    }

    /// Fetch v12 of one partition: (error code, high watermark, records bytes).
    pub fn fetch(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_wait_ms: i32,
    ) -> Result<(i16, i64, Bytes)> {
        let request = Client::fetch_request(topic, partition, offset, max_wait_ms, 1);
        match self.call(ApiKey::Fetch, 12, RequestKind::Fetch(request))? {
            ResponseKind::Fetch(r) => {
                let p = &r.responses[0].partitions[0];
                Ok((
                    p.error_code,
                    p.high_watermark,
                    p.records.clone().unwrap_or_default(),
                ))
            }
            other => bail!("unexpected {other:?}"),
        }
    }

    /// ListOffsets v6 latest (-1) / earliest (-2).
    pub fn list_offset(
        &mut self,
        topic: &str,
        partition: i32,
        timestamp: i64,
    ) -> Result<(i16, i64)> {
        let mut p = messages::list_offsets_request::ListOffsetsPartition::default();
        p.partition_index = partition;
        p.timestamp = timestamp;
        let mut t = messages::list_offsets_request::ListOffsetsTopic::default();
        t.name = TopicName(StrBytes::from_string(topic.to_string()));
        t.partitions = vec![p];
        let mut request = messages::ListOffsetsRequest::default();
        request.replica_id = messages::BrokerId(-1);
        request.topics = vec![t];
        match self.call(ApiKey::ListOffsets, 6, RequestKind::ListOffsets(request))? {
            ResponseKind::ListOffsets(r) => {
                let p = &r.topics[0].partitions[0];
                Ok((p.error_code, p.offset))
            }
            other => bail!("unexpected {other:?}"),
        }
    }
}

/// A batch of `values` (keys `k0`, `k1`, …), optionally idempotent.
pub fn batch(values: &[&[u8]], producer_id: i64, producer_epoch: i16, base_sequence: i32) -> Bytes {
    let mut builder = RecordBatchBuilder::new(RecordBatchBuilderConfig {
        producer_id,
        producer_epoch,
        base_sequence,
        ..Default::default()
    });
    for (i, value) in values.iter().enumerate() {
        let key = format!("k{i}");
        builder.append(
            1_700_000_000_000 + i as i64,
            Some(key.as_bytes()),
            Some(value),
            &[],
        );
    }
    builder.build().expect("building a test batch")
}

/// Number of records in a buffer of batches (fetch response records).
pub fn count_records(mut records: Bytes) -> Result<usize> {
    let mut count = 0;
    while records.remaining() > 0 {
        let Some(total) = skiff_protocol::batch::BatchHeader::peek_total_bytes(&records)? else {
            break;
        };
        if total > records.len() {
            break;
        }
        let view = skiff_protocol::batch::RecordBatchView::new(records.split_to(total))?;
        count += view.header().records_count as usize;
    }
    Ok(count)
}

/// Values of all records in a buffer of batches, in order.
pub fn record_values(mut records: Bytes) -> Result<Vec<Bytes>> {
    let mut values = Vec::new();
    while records.remaining() > 0 {
        let Some(total) = skiff_protocol::batch::BatchHeader::peek_total_bytes(&records)? else {
            break;
        };
        if total > records.len() {
            break;
        }
        let view = skiff_protocol::batch::RecordBatchView::new(records.split_to(total))?;
        for record in view.records()? {
            values.push(record?.value.unwrap_or_default());
        }
    }
    Ok(values)
}
