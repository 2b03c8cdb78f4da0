"""Live partition moves against a real two-worker broker: a partition moved back and forth while an
idempotent producer and a consumer group keep running (nothing acknowledged lost, duplicated or
reordered, the consumer sees everything, no worker restarts); a Produce sent to the worker that
does not own the partition is forwarded and answered; ``shardbroker partitions`` end to end; kcat
and kafka-python producing across moves.

Starts broker processes, CLI and kcat subprocesses, and client threads; opens sockets.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from shardbroker.client.admin import AdminClient
from shardbroker.client.connection import BrokerConnection
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode
from shardbroker.protocol.record_batch_builder import RecordBatchBuilder
from tests.faults.load import GroupLoad
from tests.faults.logs import check_acked_exactly_once
from tests.integration.broker_process import REPO, BrokerProcess, wait_for
from tests.integration.kafka_clients import (
    IO_TIMEOUT,
    Rec,
    consume,
    create_topic,
    end_offsets,
    index_of,
    kcat,
    make_messages,
)

with warnings.catch_warnings():  # kafka-python 3.0 uses importlib.resources APIs 3.11 deprecates
    warnings.simplefilter("ignore", DeprecationWarning)
    import kafka

pytestmark = pytest.mark.integration

CLI_TIMEOUT = 120.0


def placement(admin: AdminClient, topic: str, partition: int) -> tuple[int, int]:
    """(owning worker, leader epoch) from Metadata."""
    info = admin.topic(topic)
    return info.partitions[partition], info.leader_epochs[partition]


def move(admin: AdminClient, topic: str, partition: int, worker: int) -> None:
    error = admin.alter_partition_reassignments({(topic, partition): worker})[(topic, partition)]
    assert error is None, f"moving {topic}-{partition} to worker {worker}: {error}"
    assert placement(admin, topic, partition)[0] == worker, "Metadata right after the move"


def read_back(bootstrap: str, topic: str) -> list[Rec]:
    """Partition 0 of ``topic`` from its start to its end, read with confluent-kafka."""
    ends = end_offsets("confluent", bootstrap, topic, 1)
    return consume("confluent", bootstrap, topic, ends)


# -- (a) moves under produce and consume -----------------------------------------------------------


def run_moves_under_load(
    broker: BrokerProcess, moves: int, rate: float, config: dict[str, str] | None = None
) -> None:
    topic = "moving"
    create_topic(broker.bootstrap, topic, 1, config)
    workers_before = broker.worker_pids()
    # rounds of 5,000 messages until stopped (each round a tag of its own: order is checked per tag)
    load = GroupLoad(broker.bootstrap, topic, 5000, rounds=None, members=1, group="movers", rate=rate)
    with AdminClient(broker.bootstrap, timeout=30) as admin:
        owner, epoch = placement(admin, topic, 0)
        load.start()
        try:
            load.wait_acked(200)
            for _ in range(moves):
                acked = len(load.acked)
                owner = 1 - owner
                move(admin, topic, 0, owner)
                load.wait_acked(acked + 20)  # producing goes on after every move
            load.stop_producing()
            acked_records = load.finish_producing()
            assert placement(admin, topic, 0) == (owner, epoch + moves)
            ends = end_offsets("confluent", broker.bootstrap, topic, 1)
            load.wait_consumed(ends)
        finally:
            load.stop()
    log = read_back(broker.bootstrap, topic)
    assert len(log) == ends[0] == len(acked_records), (len(log), ends, len(acked_records))
    check_acked_exactly_once({0: log}, acked_records, f"{moves} moves")
    # the consumer saw every record, each as the log holds it; re-reads only after a rebalance
    consumed = load.consumed[0]
    at = {r.offset: r for r in log}
    assert all(at.get(r.offset) == r for r in consumed), "the consumer saw a record the log does not hold"
    assert {r.offset for r in consumed} == set(at), "the consumer missed records"
    if load.assignments[0] == 1:
        offsets = [r.offset for r in consumed]
        assert offsets == sorted(set(offsets)), "the consumer saw records twice without a rebalance"
    assert broker.worker_pids() == workers_before, "a worker restarted"


def test_partition_moved_back_and_forth_under_produce_and_consume(broker: BrokerProcess) -> None:
    run_moves_under_load(broker, moves=20, rate=1000)


@pytest.mark.slow
def test_partition_moved_back_and_forth_soak(broker: BrokerProcess) -> None:
    # Handed-over files close after file.delete.delay.ms: at Kafka's 60 s, ~15 moves a second
    # hold 2,700 descriptors and the worker hits its limit of 1,024 (EMFILE).
    run_moves_under_load(broker, moves=1000, rate=3000, config={"file.delete.delay.ms": "1000"})


def open_data_files(broker: BrokerProcess, node: int) -> int:
    """Files under the broker's data dir that worker ``node`` holds open."""
    count = 0
    for fd in Path(f"/proc/{broker.worker_pid(node)}/fd").iterdir():
        with contextlib.suppress(OSError):
            count += os.readlink(fd).startswith(str(broker.data_dir))
    return count


def test_moves_leave_no_files_open(broker: BrokerProcess) -> None:
    """A worker that hands a partition over closes its files once ``file.delete.delay.ms`` has
    passed (three descriptors per move: files never closed would run a worker out of them)."""
    topic = "fd-moves"
    # a handed-over log stays open file.delete.delay.ms (60 s by default) for fetches in flight
    create_topic(broker.bootstrap, topic, 1, {"file.delete.delay.ms": "500"})
    before = {n: open_data_files(broker, n) for n in (0, 1)}
    with AdminClient(broker.bootstrap, timeout=30) as admin:
        owner, _ = placement(admin, topic, 0)
        for _ in range(30):  # an even number: back where it started
            owner = 1 - owner
            move(admin, topic, 0, owner)

    def settled() -> dict[int, int] | None:
        now = {n: open_data_files(broker, n) for n in (0, 1)}
        return now if all(now[n] <= before[n] + 1 for n in now) else None

    try:
        wait_for(settled, 20, "the workers to close the files of partitions they handed over")
    except AssertionError:
        now = {n: open_data_files(broker, n) for n in (0, 1)}
        raise AssertionError(
            f"open files under the data dir per worker: {before} before 30 moves, {now} after"
        ) from None


# -- (b) forwarding --------------------------------------------------------------------------------


def test_produce_to_the_worker_that_does_not_own_the_partition_is_forwarded(broker: BrokerProcess) -> None:
    topic = "forwarded"
    create_topic(broker.bootstrap, topic, 1)
    with AdminClient(broker.bootstrap, timeout=30) as admin:
        owner, _ = placement(admin, topic, 0)
        other = 1 - owner
        builder = RecordBatchBuilder()
        builder.append(b"via the other worker", b"k")
        request = m.ProduceRequest(
            transactional_id=None,
            acks=-1,
            timeout_ms=30_000,
            topic_data=[
                m.ProduceRequest.TopicProduceData(
                    name=topic,
                    partition_data=[m.ProduceRequest.PartitionProduceData(index=0, records=builder.build())],
                )
            ],
        )
        with BrokerConnection(broker.host, broker.ports[other], timeout=30) as conn:
            response: m.ProduceResponse = conn.send(request)
        (answer,) = [p for t in response.responses for p in t.partition_responses]
        assert (answer.index, answer.error_code, answer.error_message) == (0, ErrorCode.NONE, None)
        assert answer.base_offset == 0
        assert placement(admin, topic, 0)[0] == owner, "the partition stayed with its owner"
    assert read_back(broker.bootstrap, topic) == [Rec(0, 0, b"k", b"via the other worker")]


# -- (c) the CLI -----------------------------------------------------------------------------------


def partitions_cli(bootstrap: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shardbroker", "partitions", *argv, "--bootstrap-server", bootstrap],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        cwd=REPO,
    )


def listed(bootstrap: str, topic: str) -> dict[int, tuple[int, int]]:
    done = partitions_cli(bootstrap, "list", topic, "--format", "json")
    assert done.returncode == 0, done.stderr
    return {r["partition"]: (r["worker"], r["leader_epoch"]) for r in json.loads(done.stdout)}


def test_cli_move_list_and_refusals(broker: BrokerProcess) -> None:
    b = broker.bootstrap
    topic = "cli-moves"
    create_topic(b, topic, 2)
    with AdminClient(b, timeout=30) as admin:
        admin.find_coordinator("cli-moves-group")  # creates __consumer_offsets
        wait_for(lambda: "__consumer_offsets" in admin.metadata().topics, 30, "__consumer_offsets")
    before = listed(b, topic)
    worker, epoch = before[1]
    done = partitions_cli(b, "move", topic, "1", "--to-worker", str(1 - worker))
    assert done.returncode == 0, done.stderr
    assert (
        done.stdout
        == f"moved {topic}-1 from worker {worker} to worker {1 - worker} (leader epoch {epoch + 1})\n"
    )
    assert listed(b, topic) == {0: before[0], 1: (1 - worker, epoch + 1)}

    text = partitions_cli(b, "list", topic)
    assert text.returncode == 0
    assert re.search(rf"^{topic}\s+1\s+{1 - worker}\s+{epoch + 1}$", text.stdout, re.M), text.stdout

    again = partitions_cli(b, "move", topic, "1", "--to-worker", str(1 - worker))
    assert (again.returncode, again.stdout) == (
        0,
        f"{topic}-1 is already on worker {1 - worker} (leader epoch {epoch + 1}); nothing moved\n",
    )

    refusals = [
        (["nope", "0", "--to-worker", "1"], "UNKNOWN_TOPIC_OR_PARTITION: nope-0: "),
        ([topic, "7", "--to-worker", "1"], f"UNKNOWN_TOPIC_OR_PARTITION: {topic}-7: "),
        ([topic, "0", "--to-worker", "5"], f"INVALID_REPLICA_ASSIGNMENT: {topic}-0: Worker 5 does not exist"),
        (
            ["__consumer_offsets", "0", "--to-worker", "1"],
            "INVALID_REPLICA_ASSIGNMENT: __consumer_offsets-0: ",
        ),
        ([topic, "0", "--cancel"], f"NO_REASSIGNMENT_IN_PROGRESS: {topic}-0: "),
    ]
    for argv, reason in refusals:
        done = partitions_cli(b, "move", *argv)
        assert done.returncode == 1 and done.stdout == "", (argv, done.stdout, done.stderr)
        assert done.stderr.startswith(f"shardbroker partitions move: error: {reason}"), (argv, done.stderr)
    assert "internal" in partitions_cli(b, "move", "__consumer_offsets", "0", "--to-worker", "1").stderr
    assert listed(b, topic) == {0: before[0], 1: (1 - worker, epoch + 1)}, "a refusal changed placement"

    assert partitions_cli(b, "reassignments").stdout == "No partition moves in progress.\n"


# -- (d) other clients across moves ----------------------------------------------------------------


def produce_kcat_across(
    bootstrap: str, topic: str, chunks: Sequence[Sequence[tuple[bytes, bytes]]], between: Callable[[], None]
) -> None:
    args = [kcat(), "-P", "-b", bootstrap, "-t", topic, "-K", "\t", "-X", "enable.idempotence=true"]
    args += ["-X", "acks=all", "-X", "linger.ms=1"]
    proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdin is not None
        for chunk in chunks:
            proc.stdin.write(b"".join(k + b"\t" + v + b"\n" for k, v in chunk))
            proc.stdin.flush()
            between()
        _, err = proc.communicate(timeout=IO_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = err.decode(errors="replace")
    assert proc.returncode == 0, f"kcat -P exited {proc.returncode}: {text}"
    assert "ERROR" not in text and "failed" not in text.lower(), f"kcat -P: {text}"


def produce_kafka_python_across(
    bootstrap: str, topic: str, chunks: Sequence[Sequence[tuple[bytes, bytes]]], between: Callable[[], None]
) -> None:
    producer = kafka.KafkaProducer(
        bootstrap_servers=bootstrap,
        enable_idempotence=True,
        acks="all",
        linger_ms=1,
        request_timeout_ms=30_000,
    )
    try:
        futures: list[Any] = []
        for chunk in chunks:
            futures += [producer.send(topic, value=v, key=k, partition=0) for k, v in chunk]
            producer.flush(timeout=IO_TIMEOUT)
            between()
        for fut in futures:
            fut.get(timeout=IO_TIMEOUT)  # raises a delivery failure
    finally:
        producer.close(timeout=10)


@pytest.mark.parametrize("client", ["kcat", "kafka-python"])
def test_other_clients_keep_producing_across_moves(broker: BrokerProcess, client: str) -> None:
    topic = f"across-{client}"
    create_topic(broker.bootstrap, topic, 1)
    messages = make_messages(1000, keys=50, tag=client)
    chunks = [messages[i : i + 100] for i in range(0, len(messages), 100)]
    produce = produce_kcat_across if client == "kcat" else produce_kafka_python_across
    with AdminClient(broker.bootstrap, timeout=30) as admin:
        owner, epoch = placement(admin, topic, 0)

        def between() -> None:
            nonlocal owner
            time.sleep(0.05)  # some of the chunk is in flight when the partition moves
            owner = 1 - owner
            move(admin, topic, 0, owner)

        produce(broker.bootstrap, topic, chunks, between)
        assert placement(admin, topic, 0) == (owner, epoch + len(chunks))
    log = read_back(broker.bootstrap, topic)
    values = [r.value for r in log]
    assert sorted(values) == sorted(v for _, v in messages), "records lost or duplicated"
    assert [index_of(v) for v in values] == sorted(index_of(v) for v in values), "records out of order"
