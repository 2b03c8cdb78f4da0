"""The local fast path end to end: LocalProducer into the log, LocalConsumer out of it, against the
confluent-kafka TCP producer in the same run. Starts a broker (2 workers) and client processes'
worth of work in this process; opens files, sockets and shared memory.

``python -m perf.bench_local [--records N] [--runs R]`` prints one line per run and a summary;
the test suite runs ``test_local_bench_quick`` (small sizes, correctness only: counts verified,
no timing judged).

What is measured (100-byte values, no keys, 2 partitions led by the 2 workers):

- ``local produce``: ``LocalProducer.send_batch`` of ``--chunk`` records a call, alternating
  the two partitions, then ``flush()`` (every ack back: every batch is in its partition's
  segment file), timed from the first call to the end of the flush. Checked: the log end
  offsets grew by exactly the records sent.
- ``tcp produce``: confluent-kafka ``Producer.produce`` per record (acks=1, no idempotence,
  linger.ms=5, batch.size 1 MiB, delivery reports for failures only, as a tuned throughput
  client), then ``flush()``, records
  split over the same 2 partitions. Checked the same way. The ratio local/tcp is the figure.
- ``local consume (batches)``: ``LocalConsumer.batches()`` over both partitions from offset 0
  to the end: a batch-level rate (records counted through each batch's header; the sum must
  equal what was produced). ``local consume (columns)``: the same records, every one decoded by
  ``LocalConsumer.poll_columns`` (4 MiB of batches a call) into numpy columns (offsets,
  timestamps, key and value positions and lengths), counted from the columns, every value length
  checked: the per-record rate, where the application can address each record's key, value,
  offset and timestamp. ``local consume (records)``: ``records()`` yielding a Record object per
  record, over one partition's first ``--decode``. Consumer CPU is this process's CPU time.

Results (``python -m perf.bench_local --records 2000000 --tcp-records 200000 --runs 3``, the
shared 2-core VM at load average 1.0-1.2; median (min-max) of 3 runs)::

    local produce M msgs/s   6.42 (6.41-6.77)
    tcp produce M msgs/s     0.44 (0.43-0.45)
    ratio local/tcp          14.88 (14.15-15.28)
    producer CPU us/record   0.08 (0.08-0.08)
    workers CPU us/record    0.14 (0.11-0.16)
    local consume M msgs/s   294.47 (277.43-299.13) (batch level)
    local columns M msgs/s   8.05 (7.52-8.46) (every record, numpy)
    local records M msgs/s   0.50 (0.50-0.72) (Record objects)
    columns CPU us/record    0.12 (0.12-0.13)
    records CPU us/record    1.96 (1.38-1.99)

(An earlier run of the same code at load 0.6-1.2: columns 9.51 M/s (7.31-11.19). Before
``poll_columns``, which decodes many batches in one vectorised pass, the per-record figure was
3.86 M/s (3.79-6.85) with the former ``RawBatch.columns()``, batch by batch; the two,
alternated in one broker run: 3.98 against 8.42 M/s, client/local_consumer.py. An earlier run at load average
5-7, with a Python delivery callback per TCP record, gave local 1.88 M/s against TCP 0.13 M/s:
the callback, not the broker, bounded that baseline.)

``--authorizer-cost``: the price of the local door's ACL checks (broker/local_clients.py): the
local produce and the columns consume on two brokers in one run, one without an authorizer and
one with ``StandardAuthorizer`` (the OS user a super user, so every check is a memoised allow),
alternated ``--runs`` times; prints the rates and the ratio authorizer/none.

Targets: local produce >= 3 M msgs/s (met) and >= 3x TCP (met: 14.9x); consume >= 5 M msgs/s
(met with every record decoded: 8.05 M/s, 0.12 us of CPU a record, most of it the column decode;
Record objects, at ~1.4-2 us each in Python, stay far below).
"""

from __future__ import annotations

import argparse
import os
import pwd
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import confluent_kafka
import numpy as np

from perf.broker_load import running_broker
from perf.sizes import pick
from shardbroker.client.admin import AdminClient
from shardbroker.client.admin_topics import NewTopic
from shardbroker.client.local_consumer import LocalConsumer
from shardbroker.client.local_producer import DEFAULT_BATCH_SIZE, LocalProducer
from shardbroker.ipc.procfs import cpu_seconds
from tests.integration.broker_process import BrokerProcess

VALUE_SIZE = 100
PARTITIONS = 2


@dataclass
class RunResult:
    local_produce: float  # records/s
    tcp_produce: float
    consume_batches: float
    consume_columns: float
    consume_records: float
    #: CPU microseconds per record of the consumer: columns decode, Record objects.
    columns_cpu_us: float
    records_cpu_us: float
    #: CPU microseconds per record of the local produce: the producer process, the two workers.
    producer_cpu_us: float
    workers_cpu_us: float


def _ends(bootstrap: str, topic: str) -> dict[int, int]:
    with AdminClient(bootstrap) as admin:
        offsets = admin.list_offsets({(topic, p): -1 for p in range(PARTITIONS)})
    return {p: offsets[(topic, p)] for p in range(PARTITIONS)}


def _timed(work: Callable[[], None]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def _timed_cpu(work: Callable[[], None]) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds)."""
    cpu = time.process_time()
    wall = _timed(work)
    return wall, time.process_time() - cpu


def local_produce(
    broker: BrokerProcess, topic: str, records: int, chunk: int, batch_size: int = DEFAULT_BATCH_SIZE
) -> tuple[float, float, float]:
    """(records/s, producer CPU us per record, workers' CPU us per record)."""
    values = np.full((chunk, VALUE_SIZE), ord("v"), dtype=np.uint8)
    before = _ends(broker.bootstrap, topic)
    with LocalProducer(
        str(broker.data_dir), batch_size=batch_size, ring_capacity=32 * batch_size
    ) as producer:
        producer.send_batch(topic, values[:1], partition=0)  # attach to both workers first
        producer.send_batch(topic, values[:1], partition=1)
        producer.flush()
        before = _ends(broker.bootstrap, topic)

        def work() -> None:
            sent = 0
            i = 0
            while sent < records:
                n = min(chunk, records - sent)
                producer.send_batch(topic, values[:n], partition=i % PARTITIONS)
                sent += n
                i += 1
            producer.flush()

        pids = broker.worker_pids()
        cpu, workers = time.process_time(), cpu_seconds(*pids)
        elapsed = _timed(work)
        cpu, workers = time.process_time() - cpu, cpu_seconds(*pids) - workers
    after = _ends(broker.bootstrap, topic)
    got = sum(after[p] - before[p] for p in after)
    assert got == records, f"local producer: {got} records in the log, {records} sent"
    return records / elapsed, cpu / records * 1e6, workers / records * 1e6


def tcp_produce(broker: BrokerProcess, topic: str, records: int) -> float:
    failed: list[Any] = []

    def report(err: Any, _msg: Any) -> None:
        if err is not None:
            failed.append(err)

    producer = confluent_kafka.Producer(
        {
            "bootstrap.servers": broker.bootstrap,
            "acks": 1,
            "enable.idempotence": False,
            "linger.ms": 5,
            "batch.size": 1 << 20,
            "batch.num.messages": 100_000,
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 1 << 20,
            # Failures only: a Python callback per record would cost the producing thread ~1 us
            # a record and measure the callback, not the path (perf/bench_clients.py, issue 4).
            "on_delivery": report,
            "delivery.report.only.error": True,
        }
    )
    value = b"t" * VALUE_SIZE
    before = _ends(broker.bootstrap, topic)

    def work() -> None:
        produce = producer.produce
        for i in range(records):
            while True:
                try:
                    produce(topic, value, partition=i & 1)
                    break
                except BufferError:
                    producer.poll(0.01)
        assert producer.flush(120) == 0

    elapsed = _timed(work)
    assert not failed, f"tcp producer: {len(failed)} failed deliveries: {failed[:3]}"
    after = _ends(broker.bootstrap, topic)
    got = sum(after[p] - before[p] for p in after)
    assert got == records, f"tcp producer: {got} records in the log, {records} sent"
    return records / elapsed


def consume_batches(
    broker: BrokerProcess, topic: str, expected: int, *, columns: bool
) -> tuple[float, float]:
    """Every batch of both partitions, records counted from the batch headers; with
    ``columns`` every record is decoded by ``poll_columns`` instead, counted from the columns,
    and every value length is checked."""
    consumers = [LocalConsumer(str(broker.data_dir), topic, p) for p in range(PARTITIONS)]
    counted = 0

    def work() -> None:
        nonlocal counted
        for c in consumers:
            if columns:
                while (cols := c.poll_columns()) is not None:
                    assert (cols.value_lengths == VALUE_SIZE).all()
                    counted += len(cols)
            else:
                for batch in c.batches():
                    counted += batch.record_count

    try:
        elapsed, cpu = _timed_cpu(work)
    finally:
        for c in consumers:
            c.close()
    assert counted == expected, f"local consumer: {counted} records read, {expected} in the log"
    return counted / elapsed, cpu / counted * 1e6


def consume_records(broker: BrokerProcess, topic: str, limit: int) -> tuple[float, float]:
    seen = 0
    with LocalConsumer(str(broker.data_dir), topic, 0) as consumer:

        def work() -> None:
            nonlocal seen
            for record in consumer.records():
                assert record.offset == seen and record.value is not None
                seen += 1
                if seen == limit:
                    break

        elapsed, cpu = _timed_cpu(work)
    assert seen == limit, f"local consumer: {seen} records decoded, {limit} wanted"
    return seen / elapsed, cpu / seen * 1e6


def run(
    records: int, tcp_records: int, chunk: int, decode: int, runs: int, say: Callable[[str], None]
) -> list[RunResult]:
    results = []
    with running_broker(
        2, config={"num.partitions": PARTITIONS, "message.max.bytes": 4 << 20}, name="local"
    ) as broker:
        with AdminClient(broker.bootstrap) as admin:
            admin.create_topics([NewTopic(f"local{i}", PARTITIONS, 1) for i in range(runs)])
            admin.create_topics([NewTopic(f"tcp{i}", PARTITIONS, 1) for i in range(runs)])
        time.sleep(0.5)
        for i in range(runs):
            local, producer_cpu, workers_cpu = local_produce(broker, f"local{i}", records, chunk)
            tcp = tcp_produce(broker, f"tcp{i}", tcp_records)
            batches, _ = consume_batches(broker, f"local{i}", records + PARTITIONS, columns=False)
            columns, columns_cpu = consume_batches(broker, f"local{i}", records + PARTITIONS, columns=True)
            decoded, decoded_cpu = consume_records(broker, f"local{i}", min(decode, records // PARTITIONS))
            r = RunResult(
                local_produce=local,
                tcp_produce=tcp,
                consume_batches=batches,
                consume_columns=columns,
                consume_records=decoded,
                columns_cpu_us=columns_cpu,
                records_cpu_us=decoded_cpu,
                producer_cpu_us=producer_cpu,
                workers_cpu_us=workers_cpu,
            )
            say(
                f"run {i + 1}: local produce {local / 1e6:.2f} M/s (CPU per record: producer "
                f"{producer_cpu:.3f} us, workers {workers_cpu:.3f} us), tcp produce {tcp / 1e6:.2f} M/s "
                f"(ratio {local / tcp:.1f}), local consume {batches / 1e6:.2f} M/s (batch level), "
                f"{columns / 1e6:.2f} M/s (records as columns, {columns_cpu:.3f} us CPU each), "
                f"{decoded / 1e6:.3f} M/s (Record objects, {decoded_cpu:.3f} us CPU each)"
            )
            results.append(r)
    return results


def authorizer_cost(records: int, chunk: int, runs: int, say: Callable[[str], None]) -> list[float]:
    """Local produce rate with the authorizer over the rate without, per run (module docstring)."""
    plain = {"num.partitions": PARTITIONS, "message.max.bytes": 4 << 20}
    me = pwd.getpwuid(os.geteuid()).pw_name
    secured = {
        **plain,
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users": f"User:ANONYMOUS;User:{me}",
    }
    ratios = []
    with (
        running_broker(2, config=plain, name="noacl") as none,
        running_broker(2, config=secured, name="acl") as acl,
    ):
        for broker in (none, acl):
            with AdminClient(broker.bootstrap) as admin:
                admin.create_topics([NewTopic(f"t{i}", PARTITIONS, 1) for i in range(runs)])
        time.sleep(0.5)
        for i in range(runs):
            rates = {}
            for label, broker in (("none", none), ("authorizer", acl)):
                produced = local_produce(broker, f"t{i}", records, chunk)[0]
                columns = consume_batches(broker, f"t{i}", records + PARTITIONS, columns=True)[0]
                rates[label] = (produced, columns)
            ratio = rates["authorizer"][0] / rates["none"][0]
            ratios.append(ratio)
            say(
                f"run {i + 1}: local produce {rates['none'][0] / 1e6:.2f} M/s without an authorizer, "
                f"{rates['authorizer'][0] / 1e6:.2f} M/s with (ratio {ratio:.3f}); columns consume "
                f"{rates['none'][1] / 1e6:.2f} / {rates['authorizer'][1] / 1e6:.2f} M/s"
            )
    return ratios


def summary(results: list[RunResult]) -> str:
    def fmt(values: list[float], scale: float = 1e6) -> str:
        return (
            f"{statistics.median(values) / scale:.2f} ({min(values) / scale:.2f}-{max(values) / scale:.2f})"
        )

    return "\n".join(
        [
            f"local produce M msgs/s   {fmt([r.local_produce for r in results])}",
            f"tcp produce M msgs/s     {fmt([r.tcp_produce for r in results])}",
            f"ratio local/tcp          {fmt([r.local_produce / r.tcp_produce for r in results], 1)}",
            f"producer CPU us/record   {fmt([r.producer_cpu_us for r in results], 1)}",
            f"workers CPU us/record    {fmt([r.workers_cpu_us for r in results], 1)}",
            f"local consume M msgs/s   {fmt([r.consume_batches for r in results])} (batch level)",
            f"local columns M msgs/s   {fmt([r.consume_columns for r in results])} (every record, numpy)",
            f"local records M msgs/s   {fmt([r.consume_records for r in results])} (Record objects)",
            f"columns CPU us/record    {fmt([r.columns_cpu_us for r in results], 1)}",
            f"records CPU us/record    {fmt([r.records_cpu_us for r in results], 1)}",
        ]
    )


def test_local_bench_quick() -> None:
    """The whole benchmark on small sizes: every count is checked, no timing is judged."""
    results = run(pick(2_000_000, 20_000), pick(500_000, 5_000), 50_000, pick(200_000, 2_000), 1, print)
    assert len(results) == 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=2_000_000)
    parser.add_argument("--tcp-records", type=int, default=500_000)
    parser.add_argument("--chunk", type=int, default=100_000, help="records per send_batch call")
    parser.add_argument("--decode", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--authorizer-cost", action="store_true", help="local door ACL checks: with/without")
    args = parser.parse_args()
    if args.authorizer_cost:
        ratios = authorizer_cost(args.records, args.chunk, args.runs, print)
        print(
            f"ratio authorizer/none    {statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f})"
        )
        return
    results = run(args.records, args.tcp_records, args.chunk, args.decode, args.runs, print)
    print(summary(results))


if __name__ == "__main__":
    main()
