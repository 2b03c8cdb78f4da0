"""Compressed batches (gzip, snappy, lz4, zstd) round-trip through the broker with every client.

The broker stores batches as clients sent them (DESIGN.md: never re-encoded), so what each
client reads back must decompress to exactly what was produced, at dense offsets. kafka-python
takes part only with the codecs its optional libraries provide in this environment (it has no
built-in snappy, lz4 or zstd); the other clients do all four.
"""

from __future__ import annotations

import warnings

import pytest

from tests.integration.broker_process import BrokerProcess
from tests.integration.kafka_clients import (
    CLIENTS,
    check_partition_logs,
    consume,
    create_topic,
    end_offsets,
    make_messages,
    produce,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import kafka.codec

pytestmark = pytest.mark.integration

CODECS = ("gzip", "snappy", "lz4", "zstd")
PARTITIONS = 3
COUNT = 3_000


def kafka_python_has(codec: str) -> bool:
    return bool(getattr(kafka.codec, f"has_{codec}")())


def clients_for(codec: str) -> list[str]:
    return [c for c in CLIENTS if c != "kafka-python" or kafka_python_has(codec)]


@pytest.mark.parametrize(
    ("producer", "codec"), [(client, codec) for codec in CODECS for client in clients_for(codec)]
)
def test_compressed_batches_round_trip(module_broker: BrokerProcess, producer: str, codec: str) -> None:
    bootstrap = module_broker.bootstrap
    topic = f"compressed-{codec}-{producer}"
    create_topic(bootstrap, topic, PARTITIONS)
    messages = make_messages(COUNT, keys=31, tag=f"{codec}-{producer}", value_size=200)
    acked = produce(producer, bootstrap, topic, messages, compression=codec)
    ends = end_offsets("confluent", bootstrap, topic, PARTITIONS)
    assert sum(ends.values()) == COUNT, ends
    if acked is not None:
        assert len(acked) == COUNT
    for reader in clients_for(codec):
        records = consume(reader, bootstrap, topic, ends)
        check_partition_logs(records, messages, ends, f"{codec} by {producer}, read by {reader}")


def test_compressed_batches_are_stored_compressed(module_broker: BrokerProcess) -> None:
    """The log keeps the client's compressed batch: 3,000 very compressible values of 200 B take far
    less than their 600 kB on disk (a broker that decompressed on the way in would store >600 kB)."""
    bootstrap = module_broker.bootstrap
    topic = "compressed-on-disk"
    create_topic(bootstrap, topic, 1)
    messages = make_messages(COUNT, keys=31, tag="disk", value_size=200)
    produce("confluent", bootstrap, topic, messages, compression="zstd")
    logs = list((module_broker.data_dir / f"{topic}-0").glob("*.log"))
    assert logs, f"no segment files in {module_broker.data_dir / f'{topic}-0'}"
    on_disk = sum(p.stat().st_size for p in logs)
    assert 0 < on_disk < COUNT * 200 // 4, f"{on_disk} bytes on disk for {COUNT * 200} bytes of values"
