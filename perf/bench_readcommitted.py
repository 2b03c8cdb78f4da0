"""Issue 16's read_committed figure: consuming a log with 10 % aborted data read_committed vs
read_uncommitted, same broker, same client, same run; and what isolation costs the Fetch handler.

Starts a broker (2 workers) and consumer processes; opens sockets; writes partition logs.

Run::

    .venv/bin/python -m perf readcommitted [--runs 3]     # one JSON line, then medians
    SHARDBROKER_PERF_QUICK=1 .venv/bin/python -m perf readcommitted   # 20,000 records

The log: topic ``clients`` (4 partitions) is created, the broker stopped, and each partition's
log written with the storage API as a transactional producer and its coordinator would leave
it: 100 B records in transactions of 1,000 (5 batches of 200, then the COMMIT or ABORT marker),
every 10th transaction aborted; the broker is started again on it. Then one confluent-kafka
consumer process reads every partition from the beginning with ``isolation.level``
read_uncommitted (every data record) and read_committed (the 90 % committed: the broker lists
the aborted transactions with each fetch, the client drops their batches and the markers), in
turn, each run both ways (``perf.bench_clients.consume_rate``: steady state after the first
batch). The figure is the ratio of delivered msgs/s, read_committed / read_uncommitted (target
>= 0.8); next to it the ratio of the times to drain the log. The same for the LocalConsumer
(``poll_columns``, in this process): records/s both ways.

``handler``: ``handle_fetch`` in-process on one partition of 8 batches (one Fetch reading them
all, a file region), microseconds per request for each isolation level, in a log without
transactions (the read_uncommitted path every consumer takes, whose cost must not grow) and in
one with an aborted transaction in range.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
from pathlib import Path
from typing import Any, Final

import numpy as np

from perf.bench_clients import PARTITIONS, TOPIC, VALUE_SIZE, consume_rate
from perf.broker_load import running_broker
from perf.sizes import pick
from shardbroker.client.local_consumer import LocalConsumer
from shardbroker.config.log_config import LogConfig
from shardbroker.loadgen.runner import ensure_topic
from shardbroker.protocol.control_records import ControlRecordType, build_control_batch
from shardbroker.protocol.crc import crc32c
from shardbroker.protocol.record_batch_header import ATTRIBUTES_OFFSET, CRC_START, TRANSACTIONAL_BIT
from shardbroker.protocol.uniform_batch import encode_uniform_batch
from shardbroker.storage.file_names import partition_dir_name
from shardbroker.storage.log import PartitionLog

TARGET_RATIO: Final = 0.8
BATCH_RECORDS: Final = 200
TXN_BATCHES: Final = 5
ABORT_EVERY: Final = 10
ISOLATIONS: Final = ("read_uncommitted", "read_committed")


def _txn_batch(values: np.ndarray[Any, Any], pid: int, seq: int, timestamp: int) -> bytes:
    """A transactional batch of equal records (the uniform encoder, attributes patched)."""
    out = bytearray(61 + values.shape[0] * (values.shape[1] + 16))
    size = encode_uniform_batch(
        out, values, None, timestamp, producer_id=pid, producer_epoch=0, base_sequence=seq
    )
    batch = out[:size]
    batch[ATTRIBUTES_OFFSET + 1] |= TRANSACTIONAL_BIT  # the low byte of the big-endian int16
    batch[CRC_START - 4 : CRC_START] = crc32c(bytes(batch[CRC_START:])).to_bytes(4, "big")
    return bytes(batch)


def write_log(directory: Path, records: int, pid: int) -> tuple[int, int]:
    """Append ``records`` records in transactions (module docstring); ``(committed, all)``."""
    values = np.full((BATCH_RECORDS, VALUE_SIZE), ord("x"), dtype=np.uint8)
    now = int(time.time() * 1000)
    plog = PartitionLog.open(directory, LogConfig())
    committed = written = seq = txn = 0
    try:
        while written < records:
            n_txn = 0
            for _ in range(TXN_BATCHES):
                n = min(BATCH_RECORDS, records - written)
                if n <= 0:
                    break
                plog.append(_txn_batch(values[:n], pid, seq, now))
                seq += n
                written += n
                n_txn += n
            abort = txn % ABORT_EVERY == 3  # 1 in 10 (also in a quick run's 5 transactions)
            kind = ControlRecordType.ABORT if abort else ControlRecordType.COMMIT
            marker = build_control_batch(
                kind, producer_id=pid, producer_epoch=0, coordinator_epoch=0, timestamp=now
            )
            plog.append(marker, allow_control=True)
            committed += 0 if abort else n_txn
            txn += 1
    finally:
        plog.close()
    return committed, written


def local_rate(data_dir: Path, isolation: str, expected: int) -> dict[str, float]:
    """Records/s of LocalConsumers reading every partition with ``poll_columns``."""
    got = 0
    consumers = [
        LocalConsumer(str(data_dir), TOPIC, p, isolation_level=isolation)  # type: ignore[arg-type]
        for p in range(PARTITIONS)
    ]
    try:
        started = time.perf_counter()  # attaching (a socket, a ring each) is not timed
        cpu = time.process_time()
        for consumer in consumers:
            while (columns := consumer.poll_columns()) is not None:
                got += len(columns)
        wall = time.perf_counter() - started
    finally:
        for consumer in consumers:
            consumer.close()
    if got != expected:
        raise RuntimeError(f"LocalConsumer {isolation}: read {got}, expected {expected}")
    return {"records_per_s": got / wall, "wall_s": wall, "cpu_s": time.process_time() - cpu}


def run_once(messages: int, rounds: int = 1) -> dict[str, Any]:
    with running_broker(2, name="readcommitted") as broker:
        ensure_topic(broker.bootstrap, TOPIC, PARTITIONS, timeout=60)
        assert broker.stop() == 0
        counts = {
            p: write_log(broker.data_dir / partition_dir_name(TOPIC, p), messages // PARTITIONS, 1000 + p)
            for p in range(PARTITIONS)
        }
        broker.start()
        workers = broker.worker_pids()
        per = {
            "read_uncommitted": {p: c[1] for p, c in counts.items()},
            "read_committed": {p: c[0] for p, c in counts.items()},
        }
        tcp: dict[str, list[dict[str, float]]] = {i: [] for i in ISOLATIONS}
        local: dict[str, list[dict[str, float]]] = {i: [] for i in ISOLATIONS}
        for _ in range(rounds):
            for iso in ISOLATIONS:
                client = {"isolation.level": iso}
                total = sum(per[iso].values())
                tcp[iso].append(consume_rate(broker.bootstrap, workers, total, 1, client, per[iso]))
                local[iso].append(local_rate(broker.data_dir, iso, total))
    ratios = [
        c["msgs_per_s"] / u["msgs_per_s"]
        for u, c in zip(tcp["read_uncommitted"], tcp["read_committed"], strict=True)
    ]
    drain = [
        u["wall_s"] / c["wall_s"] for u, c in zip(tcp["read_uncommitted"], tcp["read_committed"], strict=True)
    ]
    local_ratios = [
        c["records_per_s"] / u["records_per_s"]
        for u, c in zip(local["read_uncommitted"], local["read_committed"], strict=True)
    ]
    return {
        "records": sum(c[1] for c in counts.values()),
        "committed": sum(c[0] for c in counts.values()),
        "tcp": tcp,
        "local": local,
        "read_committed_ratio": statistics.median(ratios),
        "drain_time_ratio": statistics.median(drain),
        "local_ratio": statistics.median(local_ratios),
        "met": statistics.median(ratios) >= TARGET_RATIO,
    }


def handler_us(requests: int = 5000) -> dict[str, float]:
    """Microseconds per ``handle_fetch`` of one partition (module docstring), per isolation level,
    without and with transactions in the log."""
    import tempfile

    from shardbroker.broker.handlers.fetch import handle_fetch
    from shardbroker.protocol import messages as m
    from tests.unit.replica_fakes import Harness, batch, image, run, topic

    tid = uuid.UUID(int=7)
    img = image(topic("t", 1, topic_id=tid))

    def request(isolation: int) -> m.FetchRequest:
        part = m.FetchRequest.FetchPartition(partition=0, fetch_offset=0, partition_max_bytes=1 << 20)
        return m.FetchRequest(
            max_wait_ms=0,
            min_bytes=1,
            max_bytes=1 << 20,
            isolation_level=isolation,
            topics=[m.FetchRequest.FetchTopic(topic="t", topic_id=tid, partitions=[part])],
        )

    async def timed(h: Harness, isolation: int) -> float:
        ctx, req = h.ctx(1, 12), request(isolation)
        for _ in range(200):
            await handle_fetch(ctx, req)
        best = float("inf")
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(requests):
                await handle_fetch(ctx, req)
            best = min(best, (time.perf_counter() - started) / requests)
        return best * 1e6

    async def main(root: Path) -> dict[str, float]:
        out: dict[str, float] = {}
        async with Harness(root, img) as h:
            for _ in range(8):
                h.replicas.append("t", 0, batch(10))
            for iso in (0, 1):
                out[f"plain_{ISOLATIONS[iso]}_us"] = await timed(h, iso)
            p = h.replicas.get("t", 0)
            assert p is not None
            now = int(time.time() * 1000)
            values = np.full((10, VALUE_SIZE), ord("x"), dtype=np.uint8)
            p.log.append(_txn_batch(values, 77, 0, now))
            marker = build_control_batch(
                ControlRecordType.ABORT, producer_id=77, producer_epoch=0, coordinator_epoch=0, timestamp=now
            )
            p.log.append(marker, allow_control=True)
            for iso in (0, 1):
                out[f"txn_{ISOLATIONS[iso]}_us"] = await timed(h, iso)
        return out

    with tempfile.TemporaryDirectory(prefix="shardbroker-perf-rc-") as root:
        return run(main(Path(root)))


def test_read_committed_figure_quick() -> None:
    """Every committed record read back read_committed, every record read_uncommitted, by both
    consumers (timings not judged)."""
    result = run_once(pick(1_000_000, 20_000))
    assert result["committed"] < result["records"] and result["read_committed_ratio"] > 0
    assert handler_us(50)["txn_read_committed_us"] > 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perf readcommitted", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="consume rounds, each both ways")
    parser.add_argument("--messages", type=int, default=pick(1_000_000, 20_000))
    args = parser.parse_args(argv)
    result = run_once(args.messages, args.runs)
    result["handler"] = handler_us()
    print(json.dumps(result), flush=True)
    for iso in ISOLATIONS:
        rates = [r["msgs_per_s"] for r in result["tcp"][iso]]
        local = [r["records_per_s"] for r in result["local"][iso]]
        print(
            f"{iso:17s} confluent median {statistics.median(rates):,.0f} msgs/s ({min(rates):,.0f}-"
            f"{max(rates):,.0f}); LocalConsumer median {statistics.median(local):,.0f} records/s"
        )
    print(
        f"read_committed/read_uncommitted {result['read_committed_ratio']:.2f} (target >= {TARGET_RATIO}); "
        f"drain time ratio {result['drain_time_ratio']:.2f}; LocalConsumer {result['local_ratio']:.2f}"
    )
    print("handler us/request: " + ", ".join(f"{k} {v:.1f}" for k, v in result["handler"].items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
