"""Issue 4's client figures: confluent-kafka producing and consuming 1,000,000 x 100 B through a
2-worker broker, side by side in one run. Starts a broker and client processes; opens sockets.

Run::

    .venv/bin/python -m perf.bench_clients [--runs 3]     # one JSON line per run, then medians
    SHARDBROKER_PERF_QUICK=1 .venv/bin/python -m perf.bench_clients   # 20,000 messages

What is measured (4 partitions, acks=1, linger.ms=5, no keys)

``producer``
    Delivered msgs/s, from the first ``produce()`` to the end of ``flush()``, divided by the same
    client's enqueue-only rate (the same loop pointed at a closed port, nothing leaves the
    process) measured just before in the same run. Delivery reports are requested for failures
    only (``delivery.report.only.error``): a Python callback per message costs ~1 us of the core
    that runs the produce loop and the enqueue-only reference runs none, so a callback per
    message would measure the callback. Delivery is proven instead: no failure reported, nothing
    left in the queue, the end offsets grew by exactly the messages sent. Target ratio >= 0.7.
``consumer``
    One consumer process reading them back (``assign`` from the beginning, no group, batch
    ``consume(10_000)``, every message's ``error()`` checked): msgs/s from the return of the
    first ``consume()`` to the last message, not counting that first batch (steady state; the
    client's start-up, ~0.5 s of librdkafka timers whatever the broker does, is left out).
    Next to it, the CPU seconds the consumer process (all its threads) and the broker's workers
    used over the same interval: that split says who limits the rate. Target >= 1,000,000
    msgs/s.
``consumer x2``
    The same messages read by two consumer processes at once, each assigned half the
    partitions (what a consumer group of two would get): total msgs/s from the common start to
    the last message of either.

The broker's side of consuming is sendfile of stored batches; the client decodes every record
and builds a Python object per message (librdkafka's ``consume()``), so the single consumer is
bounded by one Python thread, which the CPU split shows. The capacity figure (broker without
client overhead) is ``perf/broker_load.py``, in ``python -m perf run``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import time
from collections.abc import Iterable, Mapping
from typing import Any

import confluent_kafka

from perf.broker_load import running_broker
from perf.sizes import pick
from shardbroker.ipc.procfs import cpu_seconds
from shardbroker.loadgen.runner import ensure_topic
from tests.ports import free_port_block

TOPIC = "clients"
PARTITIONS = 4
VALUE_SIZE = 100
TARGETS = {"producer_ratio": 0.7, "consumer_msgs_per_s": 1_000_000.0}
_PRODUCER = {"linger.ms": 5, "acks": 1, "enable.idempotence": False}


def _producer(bootstrap: str, messages: int, **extra: Any) -> Any:
    return confluent_kafka.Producer(
        {
            "bootstrap.servers": bootstrap,
            **_PRODUCER,
            "queue.buffering.max.messages": max(messages + 1, 100_000),
            "queue.buffering.max.kbytes": 2 * 1024 * 1024,
            **extra,
        }
    )


def _produce_loop(producer: Any, topic: str, messages: int, value: bytes) -> None:
    produce = producer.produce
    for _ in range(messages):
        try:
            produce(topic, value)
        except BufferError:
            producer.poll(0.01)
            produce(topic, value)


def enqueue_rate(messages: int) -> float:
    """msgs/s of ``produce()`` alone: the producer points at a closed port, nothing is sent."""
    producer = _producer(
        f"127.0.0.1:{free_port_block(1)}", messages, **{"message.timeout.ms": 600_000, "log_level": 0}
    )
    started = time.perf_counter()
    _produce_loop(producer, "enqueue-only", messages, b"x" * VALUE_SIZE)
    elapsed = time.perf_counter() - started
    producer.purge()
    producer.flush(0)
    return messages / elapsed


def end_offsets(bootstrap: str, partitions: Iterable[int], client: Mapping[str, Any] | None = None) -> int:
    consumer = confluent_kafka.Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "perf-watermarks", **(client or {})}
    )
    try:
        return sum(
            consumer.get_watermark_offsets(confluent_kafka.TopicPartition(TOPIC, p), timeout=30)[1]
            for p in partitions
        )
    finally:
        consumer.close()


def delivered_rate(bootstrap: str, messages: int, client: Mapping[str, Any] | None = None) -> float:
    """Delivered msgs/s; ``client``: extra producer settings (security), also used to read offsets."""
    failed = 0

    def on_delivery(err: Any, _msg: Any) -> None:
        nonlocal failed
        failed += err is not None

    before = end_offsets(bootstrap, range(PARTITIONS), client)
    producer = _producer(
        bootstrap, messages, on_delivery=on_delivery, **{"delivery.report.only.error": True, **(client or {})}
    )
    started = time.perf_counter()
    _produce_loop(producer, TOPIC, messages, b"x" * VALUE_SIZE)
    left = producer.flush(300)
    elapsed = time.perf_counter() - started
    appended = end_offsets(bootstrap, range(PARTITIONS), client) - before
    if left or failed or appended != messages:
        raise RuntimeError(f"produce: {appended} appended, {failed} failed, {left} left of {messages}")
    return messages / elapsed


def _consume(
    bootstrap: str, partitions: list[int], messages: int, go: Any, out: Any, client: Mapping[str, Any]
) -> None:
    """A consumer process: read ``messages`` from ``partitions``; report (first, last, cpu) times."""
    consumer = confluent_kafka.Consumer(
        {
            **client,
            "bootstrap.servers": bootstrap,
            "group.id": "perf-unused",  # required by the client; never joined (assign only)
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "fetch.max.bytes": 64 * 1024 * 1024,
            "max.partition.fetch.bytes": 8 * 1024 * 1024,
            "queued.min.messages": 1_000_000,
        }
    )
    go.wait()
    consumer.assign(
        [confluent_kafka.TopicPartition(TOPIC, p, confluent_kafka.OFFSET_BEGINNING) for p in partitions]
    )
    got, first_batch, first, cpu0 = 0, 0, 0.0, 0.0
    deadline = time.monotonic() + 300
    while got < messages and time.monotonic() < deadline:
        batch = consumer.consume(10_000, timeout=1.0)
        if batch and not got:  # the clock starts here: the first batch is not counted
            first, cpu0, first_batch = time.perf_counter(), time.process_time(), len(batch)
        for msg in batch:
            if msg.error() is not None:
                raise RuntimeError(f"consume error: {msg.error()}")
        got += len(batch)
    last, cpu = time.perf_counter(), time.process_time() - cpu0
    consumer.close()
    out.put((got, first_batch, first, last, cpu))


def consume_rate(
    bootstrap: str,
    workers: list[int],
    messages: int,
    processes: int,
    client: Mapping[str, Any] | None = None,
    per_partition: Mapping[int, int] | None = None,
) -> dict[str, float]:
    """msgs/s of ``processes`` consumers splitting the partitions, and who used the CPU.
    ``client``: more consumer settings (e.g. TLS); ``per_partition``: the messages each
    partition gives (default: its end offset; not so with transaction markers or aborts)."""
    ctx = mp.get_context("spawn")
    go, out = ctx.Event(), ctx.Queue()
    shares = [list(range(PARTITIONS))[i::processes] for i in range(processes)]
    if per_partition is None:
        expected = [end_offsets(bootstrap, share, client) for share in shares]
    else:
        expected = [sum(per_partition[p] for p in share) for share in shares]
    procs = [
        ctx.Process(target=_consume, args=(bootstrap, share, n, go, out, dict(client or {})), daemon=True)
        for share, n in zip(shares, expected, strict=True)
    ]
    for p in procs:
        p.start()
    time.sleep(1.0)  # imports and client start-up, outside the timed interval
    workers_cpu = cpu_seconds(*workers)
    go.set()
    results = [out.get(timeout=330) for _ in procs]
    workers_used = cpu_seconds(*workers) - workers_cpu
    for p in procs:
        p.join(30)
    got = sum(r[0] for r in results)
    if got != sum(expected) or got != messages:
        raise RuntimeError(f"consume: read {got}, expected {messages}")
    timed = got - sum(r[1] for r in results)
    start, end = min(r[2] for r in results), max(r[3] for r in results)
    return {
        "msgs_per_s": timed / (end - start),
        "consumer_cpu_s": sum(r[4] for r in results),
        "broker_workers_cpu_s": workers_used,
        "wall_s": end - start,
    }


def run_once(messages: int) -> dict[str, Any]:
    with running_broker(2, name="clients") as broker:
        ensure_topic(broker.bootstrap, TOPIC, PARTITIONS, timeout=60)
        enqueue = enqueue_rate(messages)
        delivered = delivered_rate(broker.bootstrap, messages)
        workers = broker.worker_pids()
        one = consume_rate(broker.bootstrap, workers, messages, 1)
        two = consume_rate(broker.bootstrap, workers, messages, 2)
    return {
        "messages": messages,
        "enqueue_msgs_per_s": enqueue,
        "delivered_msgs_per_s": delivered,
        "producer_ratio": delivered / enqueue,
        "consumer": one,
        "consumer_x2": two,
        "met": {
            "producer_ratio": delivered / enqueue >= TARGETS["producer_ratio"],
            "consumer_msgs_per_s": one["msgs_per_s"] >= TARGETS["consumer_msgs_per_s"],
        },
    }


def test_client_figures_quick() -> None:
    """Every message delivered and read back by one and by two consumers (timings not judged)."""
    result = run_once(pick(1_000_000, 20_000))
    assert result["producer_ratio"] > 0 and result["consumer"]["msgs_per_s"] > 0
    assert result["consumer_x2"]["msgs_per_s"] > 0


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m perf.bench_clients", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--messages", type=int, default=pick(1_000_000, 20_000))
    args = parser.parse_args()
    runs = []
    for _ in range(args.runs):
        runs.append(run_once(args.messages))
        print(json.dumps(runs[-1]), flush=True)
    if len(runs) > 1:
        series = {
            "producer_ratio": [r["producer_ratio"] for r in runs],
            "delivered_msgs_per_s": [r["delivered_msgs_per_s"] for r in runs],
            "consumer_msgs_per_s": [r["consumer"]["msgs_per_s"] for r in runs],
            "consumer_x2_msgs_per_s": [r["consumer_x2"]["msgs_per_s"] for r in runs],
        }
        for name, values in series.items():
            print(
                f"{name:24s} median {statistics.median(values):,.3f} ({min(values):,.3f}-{max(values):,.3f})"
            )


if __name__ == "__main__":
    main()
