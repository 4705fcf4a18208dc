"""Drives an unmodified Kafka client library against a broker, for
tests/tests/compat_python.rs.

Usage: kafka_clients.py LIB COMMAND BOOTSTRAP TOPIC [ARGS...]
  LIB      kafka-python | confluent
  produce  TOPIC COUNT COMPRESSION  -> one JSON line per record: [i, partition, offset]
  consume  TOPIC COUNT              -> one JSON line per record, every partition from offset 0
  admin    TOPIC PARTITIONS         -> creates, lists, describes and deletes TOPIC
  group    TOPIC GROUP STRATEGY STOP_FILE
                                    -> consumes TOPIC as a member of GROUP (assignor
                                       STRATEGY: range | roundrobin | cooperative-sticky),
                                       committing after every poll, until STOP_FILE exists;
                                       then closes (commit + leave). One JSON line per
                                       record {"partition", "offset", "value"}, and one
                                       {"assigned": [...]} per assignment change.
  describe GROUP                    -> {"state", "members": [{"client_id", "partitions"}],
                                        "offsets": {partition: committed}}

Records produced are key "k{i}", value "{LIB}-{i}" padded to 100+ bytes and
one header ("i", "{i}"), so the Rust side can check every byte.
Exits non-zero with a message on stderr on any failure.
"""
import json
import sys
import time


def value_of(lib, i):
    return ("%s-%d-" % (lib, i)).encode() + b"x" * 100


def fail(message):
    sys.stderr.write(message + "\n")
    sys.exit(1)


def kp_produce(bootstrap, topic, count, compression):
    from kafka import KafkaProducer

    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        compression_type=None if compression == "none" else compression,
        linger_ms=5,
    )
    futures = [
        (i, producer.send(topic, key=b"k%d" % i, value=value_of("kafka-python", i),
                          headers=[("i", str(i).encode())]))
        for i in range(count)
    ]
    producer.flush(30)
    for i, future in futures:
        metadata = future.get(timeout=30)
        print(json.dumps([i, metadata.partition, metadata.offset]))
    producer.close()


def ck_produce(bootstrap, topic, count, compression):
    from confluent_kafka import Producer

    producer = Producer({
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "compression.type": compression,
        "linger.ms": 5,
        # The Java client's default partitioner, so keyed placement is comparable.
        "partitioner": "murmur2_random",
    })
    delivered = []
    errors = []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(str(err))
        else:
            # Delivery reports carry no headers; the key holds the index.
            delivered.append((int(msg.key()[1:]), msg.partition(), msg.offset()))

    for i in range(count):
        producer.produce(topic, key=b"k%d" % i, value=value_of("confluent", i),
                         headers=[("i", str(i).encode())], on_delivery=on_delivery)
        producer.poll(0)
    left = producer.flush(30)
    if errors or left:
        fail("delivery failed: %d undelivered, errors %s" % (left, errors[:5]))
    for row in sorted(delivered):
        print(json.dumps(list(row)))


def emit(partition, offset, key, value, headers):
    print(json.dumps({
        "partition": partition,
        "offset": offset,
        "key": None if key is None else key.decode(),
        "value": value.decode(),
        "headers": [[k, None if v is None else v.decode()] for k, v in headers or []],
    }))


def kp_consume(bootstrap, topic, count):
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             auto_offset_reset="earliest")
    deadline = time.time() + 30
    partitions = None
    while partitions is None and time.time() < deadline:
        partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        fail("no partitions for %s" % topic)
    consumer.assign([TopicPartition(topic, p) for p in sorted(partitions)])
    seen = 0
    while seen < count and time.time() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            for r in records:
                emit(r.partition, r.offset, r.key, r.value, r.headers)
                seen += 1
    consumer.close()
    if seen < count:
        fail("consumed %d of %d" % (seen, count))


def ck_consume(bootstrap, topic, count):
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "compat-assign",
                         "enable.auto.commit": False})
    metadata = consumer.list_topics(topic, timeout=10)
    partitions = sorted(metadata.topics[topic].partitions)
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    deadline = time.time() + 30
    seen = 0
    while seen < count and time.time() < deadline:
        message = consumer.poll(0.5)
        if message is None:
            continue
        if message.error():
            fail("consume error: %s" % message.error())
        emit(message.partition(), message.offset(), message.key(), message.value(),
             message.headers())
        seen += 1
    consumer.close()
    if seen < count:
        fail("consumed %d of %d" % (seen, count))


def kp_admin(bootstrap, topic, partitions):
    from kafka.admin import KafkaAdminClient, NewTopic, ConfigResource, ConfigResourceType

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, partitions, 1)])
    if topic not in admin.list_topics():
        fail("created topic not listed")
    described = admin.describe_topics([topic])
    if len(described[0]["partitions"]) != partitions:
        fail("described %s" % described)
    configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    if not configs:
        fail("no configs")
    admin.delete_topics([topic])
    deadline = time.time() + 10
    while topic in admin.list_topics():
        if time.time() > deadline:
            fail("deleted topic still listed")
        time.sleep(0.1)
    print(json.dumps({"ok": True}))


def ck_admin(bootstrap, topic, partitions):
    from confluent_kafka.admin import AdminClient, NewTopic, ConfigResource

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        future.result(10)
    metadata = admin.list_topics(timeout=10)
    if len(metadata.topics[topic].partitions) != partitions:
        fail("listed %s" % metadata.topics.get(topic))
    for future in admin.describe_configs([ConfigResource("topic", topic)]).values():
        if "retention.ms" not in future.result(10):
            fail("retention.ms not described")
    for future in admin.delete_topics([topic]).values():
        future.result(10)
    print(json.dumps({"ok": True}))


def kp_group(bootstrap, topic, group, strategy, stop_file):
    import os
    from kafka import KafkaConsumer, ConsumerRebalanceListener
    from kafka.coordinator.assignors.range import RangePartitionAssignor
    from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
    from kafka.coordinator.assignors.sticky.sticky_assignor import StickyPartitionAssignor

    assignors = {"range": RangePartitionAssignor, "roundrobin": RoundRobinPartitionAssignor,
                 "sticky": StickyPartitionAssignor}
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                             client_id="kafka-python",
                             enable_auto_commit=False, auto_offset_reset="earliest",
                             partition_assignment_strategy=[assignors[strategy]],
                             session_timeout_ms=10000, heartbeat_interval_ms=1000)

    # Every poll's records are committed before the next poll, so nothing
    # is left to commit on revoke (kafka-python 3 forbids blocking calls here).
    class Listener(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked):
            pass

        def on_partitions_assigned(self, assigned):
            print(json.dumps({"assigned": sorted(tp.partition for tp in assigned)}), flush=True)

    consumer.subscribe([topic], listener=Listener())
    while not os.path.exists(stop_file):
        batch = consumer.poll(timeout_ms=200)
        for records in batch.values():
            for r in records:
                print(json.dumps({"partition": r.partition, "offset": r.offset,
                                  "value": r.value.decode()}), flush=True)
        if batch:
            consumer.commit()
    consumer.close()


def ck_group(bootstrap, topic, group, strategy, stop_file):
    import os
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "client.id": "confluent",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest",
                         "partition.assignment.strategy": strategy,
                         "session.timeout.ms": 10000, "heartbeat.interval.ms": 1000})
    owned = set()

    def on_assign(c, partitions):
        if strategy == "cooperative-sticky":
            owned.update(tp.partition for tp in partitions)
            c.incremental_assign(partitions)
        else:
            owned.clear()
            owned.update(tp.partition for tp in partitions)
            c.assign(partitions)
        print(json.dumps({"assigned": sorted(owned)}), flush=True)

    def on_revoke(c, partitions):
        if partitions:
            try:
                c.commit(asynchronous=False)
            except Exception:
                pass  # nothing consumed since the last commit
        if strategy == "cooperative-sticky":
            owned.difference_update(tp.partition for tp in partitions)
            c.incremental_unassign(partitions)
        else:
            owned.clear()
            c.unassign()

    consumer.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke)
    while not os.path.exists(stop_file):
        messages = consumer.consume(500, 0.2)
        for m in messages:
            if m.error():
                fail("consume error: %s" % m.error())
            print(json.dumps({"partition": m.partition(), "offset": m.offset(),
                              "value": m.value().decode()}), flush=True)
        if messages:
            consumer.commit(asynchronous=False)
    consumer.close()


def kp_describe(bootstrap, group):
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    described = admin.describe_groups([group])[group]
    if described.get("error"):
        fail("describe_groups: %s" % described["error"])
    members = []
    for m in described["members"]:
        assignment = m.get("member_assignment") or {}
        partitions = sorted(p for t in assignment.get("assigned_partitions", [])
                            for p in t.get("partitions", []))
        members.append({"client_id": m["client_id"], "partitions": partitions})
    offsets = admin.list_group_offsets(group)[group]
    print(json.dumps({"state": described["group_state"], "members": members,
                      "offsets": {str(tp.partition): o.offset for tp, o in offsets.items()}}))


COMMANDS = {
    ("kafka-python", "produce"): kp_produce,
    ("confluent", "produce"): ck_produce,
    ("kafka-python", "consume"): kp_consume,
    ("confluent", "consume"): ck_consume,
    ("kafka-python", "admin"): kp_admin,
    ("confluent", "admin"): ck_admin,
    ("kafka-python", "group"): kp_group,
    ("confluent", "group"): ck_group,
    ("kafka-python", "describe"): kp_describe,
}


def main():
    lib, command, bootstrap, topic = sys.argv[1:5]
    rest = sys.argv[5:]
    handler = COMMANDS.get((lib, command))
    if handler is None:
        fail("unknown %s %s" % (lib, command))
    args = [int(a) if a.isdigit() else a for a in rest]
    handler(bootstrap, topic, *args)


if __name__ == "__main__":
    main()
