"""Issue 16's transaction figures: transactional produce as a ratio of idempotent produce, and
the commit latency, on one 2-worker broker. Starts a broker and client processes; opens sockets.

    .venv/bin/python -m perf transactions [--runs 3]     # progress on stderr, one JSON line, medians
    SHARDBROKER_PERF_QUICK=1 .venv/bin/python -m perf transactions   # tiny counts

``produce`` (topic ``clients``, 4 partitions, 2 led by each worker): confluent-kafka produces
    100 B values round-robin over the partitions (linger.ms=5, acks=all, enable.idempotence,
    delivery reports for failures only), 3,000,000 per arm, after a warm-up of each arm: the
    ``idempotent`` arm (first produce() to the end of flush()) and the ``transactional`` one (the
    same and a transactional.id; committed after each 100 ms of producing: first produce() to
    the last commit_transaction()), in turn, order rotated each round. Delivery is proven by
    the end offsets (every record, and a marker per partition and commit). The figure:
    transactional / idempotent records/s within a round (target >= 0.8), median and range;
    with each rate the workers' CPU seconds and the requests they answered (their /metrics).
``commit``: transactions of 10 records to each partition (the markers of 2 go through the rings
    to the other worker): ``end_txn``, EndTxn sent -> answer on our protocol client
    (shardbroker.client.connection); ``complete``, EndTxn sent -> the next AddPartitionsToTxn
    accepted (markers and CompleteCommit written; CONCURRENT_TRANSACTIONS until then, retried
    every 0.2 ms); ``confluent``, commit_transaction() after a flush(). p50, p99, max.

Measured (2 shared cores, load average ~2; docs/notes/transactions-perf.md has the profile):
transactional / idempotent 0.99 (0.88-1.40 over 5 rounds; 0.92 (0.75-1.31) under more load),
~700,000 records/s each; the workers are busy ~20 % of the time, the transactional path 5 % of
that. EndTxn p50 0.19 ms, p99 0.92 ms; complete p50 0.94 ms, p99 4.4 ms; commit_transaction()
p50 0.43 ms, p99 1.1 ms.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any, Final

import confluent_kafka
from prometheus_client.parser import text_string_to_metric_families

from perf.bench_clients import PARTITIONS, TOPIC, VALUE_SIZE, end_offsets
from perf.broker_load import running_broker
from perf.sizes import pick
from shardbroker.client.connection import BrokerConnection
from shardbroker.ipc.procfs import cpu_seconds
from shardbroker.loadgen.runner import ensure_topic
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode
from shardbroker.protocol.record_batch_builder import RecordBatchBuilder
from tests.integration.broker_process import BrokerProcess

TARGET_RATIO: Final = 0.8
TXN_INTERVAL_S: Final = 0.1
ARMS: Final = ("idempotent", "transactional")
RECORDS_PER_PARTITION: Final = 10  # per transaction, in the commit latency figure
_PRODUCER: Final = {"linger.ms": 5, "acks": "all", "enable.idempotence": True}
_ADD_V, _END_V = 3, 4  # the client-side AddPartitionsToTxn; EndTxn before KIP-890 part 2
PUBLISH_S: Final = 1.1
RETRY_S: Final = 0.0002  # AddPartitionsToTxn again while the last commit completes
COUNTED: Final = ("Produce", "AddPartitionsToTxn", "EndTxn")
Progress = Callable[[str], None]


def _producer(bootstrap: str, messages: int, transactional_id: str | None, **extra: Any) -> Any:
    settings = {
        "bootstrap.servers": bootstrap,
        **_PRODUCER,
        "queue.buffering.max.messages": max(messages + 1, 100_000),
        "queue.buffering.max.kbytes": 2 * 1024 * 1024,
        **extra,
    }
    if transactional_id is not None:
        settings |= {"transactional.id": transactional_id, "transaction.timeout.ms": 60_000}
    producer = confluent_kafka.Producer(settings)
    if transactional_id is not None:
        producer.init_transactions(60)
    return producer


def _settled_offsets(bootstrap: str, expected: int) -> int:
    """The sum of the end offsets once it reaches ``expected`` (30 s at most): the markers of a
    commit follow its EndTxn's answer."""
    deadline = time.monotonic() + 30
    while (offsets := end_offsets(bootstrap, range(PARTITIONS))) < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return offsets


def _warm_up(producer: Any, transactional: bool) -> int:
    """A record to each partition, delivered: connections, metadata and producer id come
    before the clock starts (init_transactions already waits for the id, idempotence does not).
    The offsets it takes (records and markers)."""
    if transactional:
        producer.begin_transaction()
    for p in range(PARTITIONS):
        producer.produce(TOPIC, b"warm-up", partition=p)
    if transactional:
        producer.commit_transaction(60)
    if producer.flush(60):
        raise RuntimeError("warm-up: records not delivered")
    return PARTITIONS * (2 if transactional else 1)


def broker_requests(broker: BrokerProcess) -> Counter[str]:
    """Requests the broker answered, by API (of `COUNTED`): its /metrics, summed over the
    workers, after a wait for the workers' next publication (their 1 s tick)."""
    time.sleep(PUBLISH_S)
    url = f"http://{broker.host}:{broker.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    out: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            api = s.labels.get("api")
            if s.name == "shardbroker_requests_total" and api in COUNTED:
                out[api] += int(s.value)
    return out


def produce_arm(
    broker: BrokerProcess, workers: list[int], messages: int, transactional: bool, *, count: bool = True
) -> dict[str, float]:
    """Delivered records/s of one arm (module docstring); commits, the workers' CPU and, with
    ``count``, the requests they answered (`broker_requests`: 2 s more)."""
    bootstrap, failed = broker.bootstrap, 0

    def on_delivery(err: Any, _msg: Any) -> None:
        nonlocal failed
        failed += err is not None

    tid = f"perf-txn-{uuid.uuid4().hex[:8]}" if transactional else None
    producer = _producer(
        bootstrap, messages, tid, on_delivery=on_delivery, **{"delivery.report.only.error": True}
    )
    produce, value, commits = producer.produce, b"x" * VALUE_SIZE, 0
    start_offsets = end_offsets(bootstrap, range(PARTITIONS))
    before = _settled_offsets(bootstrap, start_offsets + _warm_up(producer, transactional))
    requests = broker_requests(broker) if count else None
    cpu = cpu_seconds(*workers)
    started = time.perf_counter()
    if transactional:
        producer.begin_transaction()
    commit_at = started + TXN_INTERVAL_S
    for i in range(messages):
        produce(TOPIC, value, partition=i % PARTITIONS)
        if transactional and i & 255 == 255 and time.perf_counter() >= commit_at:
            producer.commit_transaction(60)
            commits += 1
            producer.begin_transaction()
            commit_at = time.perf_counter() + TXN_INTERVAL_S
    if transactional:
        producer.commit_transaction(60)
        commits += 1
    left = producer.flush(300)
    elapsed = time.perf_counter() - started
    used = cpu_seconds(*workers) - cpu
    expected = messages + commits * PARTITIONS  # every transaction wrote every partition
    appended = _settled_offsets(bootstrap, before + expected) - before
    if left or failed or appended != expected:
        raise RuntimeError(f"produce: {appended} appended of {expected}, {failed} failed, {left} left")
    out = {"records_per_s": messages / elapsed, "wall_s": elapsed, "commits": commits, "workers_cpu_s": used}
    if requests is not None:
        answered = broker_requests(broker) - requests
        out |= {f"{api}_requests": float(answered[api]) for api in COUNTED}
    return out


def produce_ratios(broker: BrokerProcess, messages: int, rounds: int, progress: Progress) -> dict[str, Any]:
    """Both arms per round, order rotated; transactional / idempotent within each round."""
    workers = broker.worker_pids()
    arms: dict[str, list[dict[str, float]]] = {arm: [] for arm in ARMS}
    ratios = []
    for arm in ARMS:  # a fresh broker's first writes; __transaction_state's creation
        warm = produce_arm(broker, workers, messages // 4, arm == "transactional", count=False)
        progress(f"warm-up {arm} (not counted): {warm['records_per_s']:,.0f} records/s")
    for r in range(rounds):
        for arm in ARMS if r % 2 == 0 else ARMS[::-1]:
            arms[arm].append(produce_arm(broker, workers, messages, arm == "transactional"))
            a = arms[arm][-1]
            progress(
                f"round {r + 1}/{rounds} {arm}: {a['records_per_s']:,.0f} records/s, "
                f"{a['Produce_requests']:,.0f} Produce, {a['commits']:.0f} commits, "
                f"{a['AddPartitionsToTxn_requests']:.0f} AddPartitionsToTxn"
            )
        ratios.append(arms["transactional"][-1]["records_per_s"] / arms["idempotent"][-1]["records_per_s"])
    return {
        "messages": messages,
        "arms": arms,
        "ratios": ratios,
        "ratio": statistics.median(ratios),
        "met": statistics.median(ratios) >= TARGET_RATIO,
    }


def _percentiles(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))] * 1000,
        "max_ms": ordered[-1] * 1000,
    }


class _RawTransactions:
    """One transactional producer on our protocol client: a connection to the coordinator and to
    each worker leading a partition; sequences kept per partition."""

    def __init__(self, broker: BrokerProcess, leaders: dict[int, int], tid: str) -> None:
        self.tid, self.leaders = tid, leaders
        self.conns = {
            w: BrokerConnection(broker.host, broker.ports[w]).connect() for w in set(leaders.values())
        }
        self.coordinator_id, self.coordinator = self._coordinator(broker)
        init = self.coordinator.send(
            m.InitProducerIdRequest(transactional_id=tid, transaction_timeout_ms=60_000)
        )
        self._check(init.error_code, "InitProducerId")
        self.pid, self.epoch = init.producer_id, init.producer_epoch
        self.sequences = dict.fromkeys(leaders, 0)

    def _coordinator(self, broker: BrokerProcess) -> tuple[int, BrokerConnection]:
        conn = next(iter(self.conns.values()))
        deadline = time.monotonic() + 60
        while True:  # the first FindCoordinator creates __transaction_state
            found = conn.send(m.FindCoordinatorRequest(key=self.tid, key_type=1), 3)
            if found.error_code == ErrorCode.NONE:
                known = self.conns.get(found.node_id)
                return found.node_id, known or BrokerConnection(broker.host, found.port).connect()
            if time.monotonic() > deadline:
                self._check(found.error_code, "FindCoordinator")
            time.sleep(0.1)

    @staticmethod
    def _check(code: int, what: str) -> None:
        if code != ErrorCode.NONE:
            raise RuntimeError(f"{what}: {ErrorCode(code).name}")

    def add_partitions(self) -> int:
        """AddPartitionsToTxn of every partition, retried while the last commit completes; the
        number of CONCURRENT_TRANSACTIONS answers."""
        topic = m.AddPartitionsToTxnRequest.AddPartitionsToTxnTopic(name=TOPIC, partitions=list(self.leaders))
        request = m.AddPartitionsToTxnRequest(
            v3_and_below_transactional_id=self.tid,
            v3_and_below_producer_id=self.pid,
            v3_and_below_producer_epoch=self.epoch,
            v3_and_below_topics=[topic],
        )
        for retries in range(10_000):
            answer = self.coordinator.send(request, _ADD_V)
            codes = {
                p.partition_error_code
                for t in answer.results_by_topic_v3_and_below
                for p in t.results_by_partition
            }
            if codes != {ErrorCode.CONCURRENT_TRANSACTIONS}:
                self._check(max(codes), "AddPartitionsToTxn")
                return retries
            time.sleep(RETRY_S)
        raise RuntimeError("AddPartitionsToTxn: CONCURRENT_TRANSACTIONS for 10,000 retries")

    def produce(self) -> None:
        """``RECORDS_PER_PARTITION`` records to each partition, one Produce per worker."""
        by_worker: dict[int, list[m.ProduceRequest.PartitionProduceData]] = {}
        for partition, worker in self.leaders.items():
            builder = RecordBatchBuilder(
                producer_id=self.pid,
                producer_epoch=self.epoch,
                base_sequence=self.sequences[partition],
                is_transactional=True,
            )
            builder.extend([b"x" * VALUE_SIZE] * RECORDS_PER_PARTITION)
            self.sequences[partition] += RECORDS_PER_PARTITION
            data = m.ProduceRequest.PartitionProduceData(index=partition, records=builder.build())
            by_worker.setdefault(worker, []).append(data)
        for worker, partitions in by_worker.items():
            request = m.ProduceRequest(
                transactional_id=self.tid,
                acks=-1,
                timeout_ms=30_000,
                topic_data=[m.ProduceRequest.TopicProduceData(name=TOPIC, partition_data=partitions)],
            )
            answer = self.conns[worker].send(request)
            for p in answer.responses[0].partition_responses:
                self._check(p.error_code, f"Produce to partition {p.index}")

    def end_txn(self) -> float:
        answer = self.coordinator.send(
            m.EndTxnRequest(
                transactional_id=self.tid, producer_id=self.pid, producer_epoch=self.epoch, committed=True
            ),
            _END_V,
        )
        self._check(answer.error_code, "EndTxn")
        return time.perf_counter()

    def close(self) -> None:
        for conn in {*self.conns.values(), self.coordinator}:
            conn.close()


def end_txn_latency(broker: BrokerProcess, leaders: dict[int, int], transactions: int) -> dict[str, Any]:
    """EndTxn round trips and commit completions of our protocol client (module docstring)."""
    txn = _RawTransactions(broker, leaders, f"perf-end-txn-{uuid.uuid4().hex[:8]}")
    round_trips, completions, concurrent = [], [], 0
    try:
        txn.add_partitions()
        for k in range(transactions):
            txn.produce()
            sent = time.perf_counter()
            answered = txn.end_txn()
            round_trips.append(answered - sent)
            if k + 1 < transactions:  # the next transaction's first call says when this one ended
                concurrent += txn.add_partitions()
                completions.append(time.perf_counter() - sent)
    finally:
        txn.close()
    return {
        "transactions": transactions,
        "end_txn": _percentiles(round_trips),
        "complete": _percentiles(completions),
        "concurrent_transactions_answers": concurrent,
        "coordinator": txn.coordinator_id,
    }


def commit_latency_confluent(bootstrap: str, transactions: int) -> dict[str, float]:
    """commit_transaction() after flush(), after 10 records to each partition."""
    producer = _producer(bootstrap, 1000, f"perf-commit-{uuid.uuid4().hex[:8]}")
    took = []
    value = b"x" * VALUE_SIZE
    for _ in range(transactions):
        producer.begin_transaction()
        for p in range(PARTITIONS):
            for _ in range(RECORDS_PER_PARTITION):
                producer.produce(TOPIC, value, partition=p)
        if producer.flush(60):
            raise RuntimeError("commit latency: records not delivered")
        started = time.perf_counter()
        producer.commit_transaction(60)
        took.append(time.perf_counter() - started)
    return _percentiles(took)


def run_once(messages: int, rounds: int, transactions: int, progress: Progress) -> dict[str, Any]:
    config = {"message.max.bytes": 4 * 1024 * 1024, "num.partitions": PARTITIONS}
    with running_broker(2, config=config, name="transactions") as broker:
        leaders = ensure_topic(broker.bootstrap, TOPIC, PARTITIONS, timeout=60)
        if sorted(leaders.values()) != [0, 0, 1, 1]:
            raise RuntimeError(f"expected 2 partitions on each worker, got {leaders}")
        progress(f"broker up, leaders {leaders}")
        produce = produce_ratios(broker, messages, rounds, progress)
        end_txn = end_txn_latency(broker, leaders, transactions)
        progress(f"EndTxn round trip p50 {end_txn['end_txn']['p50_ms']:.2f} ms over {transactions}")
        confluent = commit_latency_confluent(broker.bootstrap, transactions)
        progress(f"commit_transaction() p50 {confluent['p50_ms']:.2f} ms over {transactions}")
    return {"produce": produce, "commit": {**end_txn, "confluent": confluent}}


def test_transactions_figures_quick() -> None:
    """Every record delivered in both arms, every commit answered (timings not judged)."""
    result = run_once(pick(300_000, 5_000), 1, pick(1000, 10), lambda _: None)
    assert result["produce"]["ratio"] > 0
    (idempotent,), (transactional,) = (result["produce"]["arms"][arm] for arm in ARMS)
    assert idempotent["EndTxn_requests"] == 0 < idempotent["Produce_requests"]
    assert transactional["EndTxn_requests"] == transactional["commits"] >= 1
    assert transactional["AddPartitionsToTxn_requests"] >= transactional["commits"]
    commit = result["commit"]
    assert commit["end_txn"]["p50_ms"] > 0 and commit["complete"]["p50_ms"] > 0
    assert commit["coordinator"] in (0, 1)
    assert commit["confluent"]["p50_ms"] > 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m perf transactions",
        description="Transactional vs idempotent produce (same run), and the commit latency.",
    )
    parser.add_argument("--runs", type=int, default=3, help="produce rounds, each over both arms [3]")
    messages, transactions = pick(3_000_000, 5_000), pick(1000, 10)
    parser.add_argument("--messages", type=int, default=messages, help=f"per arm and round [{messages:,}]")
    parser.add_argument(
        "--transactions", type=int, default=transactions, help=f"for each commit latency [{transactions:,}]"
    )
    args = parser.parse_args(argv)
    if min(args.runs, args.messages, args.transactions - 1) < 1:
        parser.error("--runs and --messages must be at least 1, --transactions at least 2")
    started = time.monotonic()

    def progress(line: str) -> None:
        print(f"[transactions {time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)

    result = run_once(args.messages, args.runs, args.transactions, progress)
    print(json.dumps(result), flush=True)
    produce = result["produce"]
    for arm in ARMS:
        rates = [r["records_per_s"] for r in produce["arms"][arm]]
        cpu = [r["workers_cpu_s"] for r in produce["arms"][arm]]
        print(
            f"produce {arm:13s} median {statistics.median(rates):,.0f} records/s "
            f"({min(rates):,.0f}-{max(rates):,.0f}); workers' CPU median {statistics.median(cpu):.2f} s"
        )
    ratios = produce["ratios"]
    print(
        f"transactional/idempotent {produce['ratio']:.2f} ({min(ratios):.2f}-{max(ratios):.2f}, "
        f"target >= {TARGET_RATIO})"
    )
    commit = result["commit"]
    for name, figures in (
        ("EndTxn round trip", commit["end_txn"]),
        ("commit complete", commit["complete"]),
        ("commit_transaction()", commit["confluent"]),
    ):
        print(
            f"{name:21s} p50 {figures['p50_ms']:.2f} ms, p99 {figures['p99_ms']:.2f} ms, "
            f"max {figures['max_ms']:.2f} ms ({commit['transactions']} transactions)"
        )
    print(f"({time.monotonic() - started:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
