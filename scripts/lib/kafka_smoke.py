"""Smoke check of a Kafka-compatible broker (tansu in tests), run with the test venv's Python:

    kafka_smoke.py BROKER [--messages N] [--partitions P] [--timeout S]

Creates a fresh topic, produces N keyed messages with headers, consumes them in a consumer
group with manual commits, and checks that every message arrived exactly once with its key,
headers and partition, and that the group's committed offsets equal the last offsets + 1 and
the high watermarks that fetches report. Exits non-zero with the reason when anything differs;
prints one OK line (noting where ListOffsets disagrees: tansu 0.6.0 answers it with the last
batch's base offset + 1, so nothing should rely on it against tansu).
"""

import argparse
import sys
import time
import uuid

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("broker")
    p.add_argument("--messages", type=int, default=10_000)
    p.add_argument("--partitions", type=int, default=3)
    p.add_argument("--timeout", type=float, default=60.0)
    args = p.parse_args()
    deadline = time.monotonic() + args.timeout
    topic = f"smoke-{uuid.uuid4().hex[:12]}"

    admin = AdminClient({"bootstrap.servers": args.broker})
    for fut in admin.create_topics([NewTopic(topic, num_partitions=args.partitions, replication_factor=1)]).values():
        fut.result(timeout=max(1.0, deadline - time.monotonic()))

    producer = Producer({"bootstrap.servers": args.broker, "linger.ms": 5, "enable.idempotence": False})
    failures = []

    def delivered(err, _msg):
        if err is not None:
            failures.append(str(err))

    for i in range(args.messages):
        producer.produce(
            topic,
            key=f"k{i}".encode(),
            value=f'{{"n":{i}}}'.encode(),
            headers=[("traceparent", f"00-{i:032x}-{i:016x}-01".encode())],
            partition=i % args.partitions,
            on_delivery=delivered,
        )
        if i % 1000 == 0:
            producer.poll(0)
    left = producer.flush(max(1.0, deadline - time.monotonic()))
    if left or failures:
        sys.exit(f"smoke: {left} messages undelivered, {len(failures)} failed: {failures[:3]}")

    consumer = Consumer(
        {
            "bootstrap.servers": args.broker,
            "group.id": f"{topic}-group",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            # tansu holds a fetch for the whole wait: keep it short (shared/DESIGN.md).
            "fetch.wait.max.ms": 10,
        }
    )
    consumer.subscribe([topic])
    seen = {}
    try:
        while len(seen) < args.messages and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=1000, timeout=0.5):
                if msg.error():
                    raise KafkaException(msg.error())
                n = int(msg.key()[1:])
                if n in seen:
                    sys.exit(f"smoke: message {n} delivered twice")
                if msg.partition() != n % args.partitions:
                    sys.exit(f"smoke: message {n} in partition {msg.partition()}, produced to {n % args.partitions}")
                if msg.value() != f'{{"n":{n}}}'.encode():
                    sys.exit(f"smoke: message {n} has payload {msg.value()!r}")
                hdrs = dict(msg.headers() or [])
                if hdrs.get("traceparent") != f"00-{n:032x}-{n:016x}-01".encode():
                    sys.exit(f"smoke: message {n} has headers {hdrs!r}")
                seen[n] = msg.offset()
        if len(seen) < args.messages:
            sys.exit(f"smoke: consumed {len(seen)} of {args.messages} messages within {args.timeout:.0f}s")
        consumer.commit(asynchronous=False)
        parts = [TopicPartition(topic, p) for p in range(args.partitions)]
        committed = consumer.committed(parts, timeout=10)
        notes = []
        for tp in committed:
            end = max(o for n, o in seen.items() if n % args.partitions == tp.partition) + 1
            # The high watermark that fetch responses carry; ListOffsets is not used for
            # this because tansu 0.6.0 answers it with the last batch's base offset + 1.
            _low, fetched_high = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), cached=True)
            if tp.offset != end or fetched_high != end:
                sys.exit(
                    f"smoke: partition {tp.partition}: committed {tp.offset}, high watermark from fetch "
                    f"{fetched_high}, last consumed offset + 1 = {end}"
                )
            _low, listed_high = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=10)
            if listed_high != end:
                notes.append(f"p{tp.partition} ListOffsets says {listed_high}, not {end}")
    finally:
        consumer.close()
    note = f" (known broker quirk: {'; '.join(notes)})" if notes else ""
    print(
        f"kafka smoke OK: {args.messages} messages over {args.partitions} partitions, once each, "
        f"offsets committed{note}"
    )


if __name__ == "__main__":
    main()
