"""File modes of a real ``shardbroker serve`` started under the usual umask 022: every file it
writes in the data dir is 0600 and every directory 0700 (segments, indexes, checkpoints, the
metadata log, the consumer offsets' partitions, the lock), every shared-memory object and FIFO of
its instance is 0600, and the data dir the harness created 0755 is named in a start
warning but left as it is."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import confluent_kafka
import pytest

from shardbroker.client.local_producer import LocalProducer
from tests.integration.broker_process import SHM_DIR, SHM_PREFIX, BrokerProcess
from tests.integration.conftest import BrokerFactory
from tests.integration.kafka_clients import create_topic, make_messages, produce_confluent

pytestmark = pytest.mark.integration


def instance_objects(broker: BrokerProcess) -> Iterator[Path]:
    """/dev/shm entries of the broker's instance: segments and FIFOs (and POSIX semaphores,
    ``sem.`` + their name, though rings use FIFOs: ipc/doorbell.py)."""
    for instance in broker.instances:
        yield from SHM_DIR.glob(f"{SHM_PREFIX}{instance}-*")
        yield from SHM_DIR.glob(f"sem.{SHM_PREFIX}{instance}-*")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_everything_the_broker_creates_is_private_to_its_user(broker_factory: BrokerFactory) -> None:
    old = os.umask(0o022)
    try:
        broker = broker_factory(workers=2)  # the harness creates the data dir: 0755
    finally:
        os.umask(old)
    topic = "modes"
    create_topic(broker.bootstrap, topic, 2)
    produce_confluent(broker.bootstrap, topic, make_messages(500, keys=7, tag="modes"))
    consumer = confluent_kafka.Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "modes-g"})
    try:  # a commit creates __consumer_offsets
        consumer.commit(offsets=[confluent_kafka.TopicPartition(topic, 0, 1)], asynchronous=False)
    finally:
        consumer.close()
    with LocalProducer(str(broker.data_dir)) as producer:  # the local client's rings and FIFOs too
        producer.send(topic, b"v", partition=1)
        producer.flush(30)
        broker.worker_pids()  # learn the instance while everything is mapped
        objects = sorted(instance_objects(broker))
        kinds = {stat.S_IFMT(p.lstat().st_mode) for p in objects}
        assert {stat.S_IFREG, stat.S_IFIFO} <= kinds
        assert {p.name: oct(mode(p)) for p in objects if mode(p) != 0o600} == {}
    assert broker.stop() == 0

    data = broker.data_dir
    entries = list(data.rglob("*"))
    assert any(p.name == "__consumer_offsets-0" for p in entries) and any(p.suffix == ".log" for p in entries)
    wrong = {
        str(p.relative_to(data)): oct(mode(p)) for p in entries if mode(p) != (0o700 if p.is_dir() else 0o600)
    }
    assert wrong == {}
    assert mode(data) == 0o755  # the operator's: reported, not changed
    warning = f"data dir {data.absolute()}: 1 files and directories are open to group or others"
    assert warning in broker.output()
