"""Issue 6's forwarding and partition-move figures, in one run on a 2-worker broker. Starts a broker
and client threads; opens sockets.

Run::

    .venv/bin/python -m perf.bench_moves [--runs 3]      # one JSON line per run, then medians
    SHARDBROKER_PERF_QUICK=1 .venv/bin/python -m perf.bench_moves   # small sizes (the test suite)

What is measured

``forwarded/direct``
    Produce requests of one 100-record batch (100 B values, acks=1), 4 connections each with one
    request in flight, first to the partition's owner (``direct``), then the same to the other
    worker, which forwards every batch through its rings to the owner (``forwarded``): records/s
    of each and their ratio, in the same run. Every answer is checked (no error, an offset).
``move``
    A confluent-kafka idempotent producer (acks=all) writes one partition continuously while the
    partition is moved back and forth between the two workers (AlterPartitionReassignments) ``moves``
    times: each move's time from request to answer (p50, max), and afterwards the proof that no
    acknowledged record was lost, duplicated or reordered (the partition read back whole) and that
    the producer saw no error.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from perf.broker_load import running_broker
from perf.sizes import pick
from shardbroker.client.admin import AdminClient
from shardbroker.client.admin_topics import NewTopic
from shardbroker.client.connection import BrokerConnection
from shardbroker.protocol import messages as m
from shardbroker.protocol.record_batch_builder import RecordBatchBuilder

P = m.ProduceRequest


def produce_rate(
    host: str, port: int, request: m.ProduceRequest, requests: int, connections: int = 4
) -> float:
    """Records/s of ``requests`` Produce requests per connection, one in flight each."""
    records = 100
    errors: list[int] = []

    def work() -> None:
        with BrokerConnection(host, port) as conn:
            for _ in range(requests):
                answer = conn.send(request).responses[0].partition_responses[0]
                if answer.error_code or answer.base_offset < 0:
                    errors.append(answer.error_code)

    threads = [threading.Thread(target=work) for _ in range(connections)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise AssertionError(f"{len(errors)} Produce answers with errors: {sorted(set(errors))}")
    return requests * connections * records / elapsed


def forwarding(broker: Any, admin: AdminClient, requests: int) -> dict[str, float]:
    admin.create_topics([NewTopic("fwd", 1)])
    owner = admin.topic("fwd").partitions[0]
    builder = RecordBatchBuilder()
    for _ in range(100):
        builder.append(b"x" * 100)
    data = P.TopicProduceData(
        name="fwd", partition_data=[P.PartitionProduceData(index=0, records=builder.build())]
    )
    request = P(acks=1, timeout_ms=10_000, topic_data=[data])
    direct = produce_rate(broker.host, broker.ports[owner], request, requests)
    forwarded = produce_rate(broker.host, broker.ports[1 - owner], request, requests)
    return {"direct_records_per_s": direct, "forwarded_records_per_s": forwarded, "ratio": forwarded / direct}


def moves(broker: Any, admin: AdminClient, count: int) -> dict[str, Any]:
    admin.create_topics([NewTopic("mv", 1)])
    acked: list[int] = []
    failed: list[str] = []
    stop = threading.Event()

    def write() -> None:
        producer = Producer(
            {"bootstrap.servers": broker.bootstrap, "enable.idempotence": True, "linger.ms": 2}
        )

        def done(err: Any, msg: Any) -> None:
            if err is not None:
                failed.append(str(err))
            else:
                acked.append(int(msg.value()))

        i = 0
        while not stop.is_set():
            producer.produce("mv", str(i).encode(), partition=0, on_delivery=done)
            producer.poll(0)
            i += 1
            if i % 200 == 0:
                time.sleep(0.005)
        producer.flush(60)

    thread = threading.Thread(target=write)
    thread.start()
    took = []
    try:
        time.sleep(1.0)
        owner = admin.topic("mv").partitions[0]
        for k in range(count):
            target = (owner + k + 1) % 2
            start = time.perf_counter()
            error = admin.alter_partition_reassignments({("mv", 0): target})[("mv", 0)]
            took.append(time.perf_counter() - start)
            if error is not None:
                raise AssertionError(f"move {k}: {error}")
            time.sleep(0.2)
    finally:
        stop.set()
        thread.join(120)
    log = read_partition(broker.bootstrap, "mv", len(acked))
    return {
        "moves": count,
        "move_ms_p50": statistics.median(took) * 1000,
        "move_ms_max": max(took) * 1000,
        "acked": len(acked),
        "producer_errors": len(failed),
        "log_records": len(log),
        "exactly_once_in_order": log == sorted(acked) and len(set(log)) == len(log),
    }


def read_partition(bootstrap: str, topic: str, at_least: int) -> list[int]:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "bench-moves", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    out: list[int] = []
    deadline = time.monotonic() + 60
    try:
        while len(out) < at_least and time.monotonic() < deadline:
            for msg in consumer.consume(10_000, 0.5):
                if msg.error() is None:
                    out.append(int(msg.value()))
    finally:
        consumer.close()
    return out


def run_once(requests: int, count: int) -> dict[str, Any]:
    with running_broker(2, name="moves") as broker, AdminClient(broker.bootstrap) as admin:
        return {"forwarding": forwarding(broker, admin, requests), "move": moves(broker, admin, count)}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m perf.bench_moves", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--requests", type=int, default=pick(1500, 50), help="per connection (4)")
    parser.add_argument("--moves", type=int, default=pick(20, 4))
    args = parser.parse_args()
    runs = []
    for _ in range(args.runs):
        runs.append(run_once(args.requests, args.moves))
        print(json.dumps(runs[-1]), flush=True)
    if len(runs) > 1:
        series = {
            "forwarded/direct": [r["forwarding"]["ratio"] for r in runs],
            "direct records/s": [r["forwarding"]["direct_records_per_s"] for r in runs],
            "forwarded records/s": [r["forwarding"]["forwarded_records_per_s"] for r in runs],
            "move ms p50": [r["move"]["move_ms_p50"] for r in runs],
            "move ms max": [r["move"]["move_ms_max"] for r in runs],
        }
        for name, values in series.items():
            print(
                f"{name:22s} median {statistics.median(values):,.2f} ({min(values):,.2f}-{max(values):,.2f})"
            )


if __name__ == "__main__":
    main()
