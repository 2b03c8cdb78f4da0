"""Idempotent keyed produce with each real client, read back with every client.

Per partition: dense offsets from 0, production order kept, each message exactly once, on the
partition of its key; every client's ListOffsets(latest) agrees with what was acknowledged.
"""

from __future__ import annotations

from collections import Counter

import pytest

from tests.integration.broker_process import BrokerProcess
from tests.integration.kafka_clients import (
    CLIENTS,
    Rec,
    check_partition_logs,
    consume,
    create_topic,
    end_offsets,
    make_messages,
    produce,
)

pytestmark = pytest.mark.integration

PARTITIONS = 4
#: What every client's idempotent producer and reader send here (tools/gen_compatibility.py).
ROUNDTRIP_APIS = ("ApiVersions", "Metadata", "InitProducerId", "Produce", "ListOffsets", "Fetch")


def roundtrip(broker: BrokerProcess, producer: str, topic: str, count: int) -> None:
    create_topic(broker.bootstrap, topic, PARTITIONS)
    messages = make_messages(count, keys=257, tag=producer)
    acked = produce(producer, broker.bootstrap, topic, messages)

    if acked is not None:  # kcat reports no offsets
        assert len(acked) == count, f"{producer}: {len(acked)} of {count} acknowledged"
        counts = Counter(r.partition for r in acked)
        ends = {p: counts.get(p, 0) for p in range(PARTITIONS)}
        assert len({(r.partition, r.offset) for r in acked}) == count, "two messages acked at one offset"
    else:
        ends = end_offsets("confluent", broker.bootstrap, topic, PARTITIONS)
    assert sum(ends.values()) == count, f"end offsets {ends} for {count} messages"
    assert sum(1 for n in ends.values() if n > 0) == PARTITIONS, f"keys spread over all partitions: {ends}"

    for reader in CLIENTS:
        who = f"produced by {producer}, read by {reader}"
        assert end_offsets(reader, broker.bootstrap, topic, PARTITIONS) == ends, who
        records = consume(reader, broker.bootstrap, topic, ends)
        check_partition_logs(records, messages, ends, who)
        if acked is not None:
            assert sorted(records) == sorted(Rec(r.partition, r.offset, r.key, r.value) for r in acked), (
                f"{who}: records not at the offsets the producer was given"
            )


@pytest.mark.parametrize("producer", CLIENTS)
@pytest.mark.kafka_api(*ROUNDTRIP_APIS, client=("confluent-kafka", "kafka-python", "aiokafka", "kcat"))
def test_idempotent_keyed_produce_reads_back_with_every_client(
    module_broker: BrokerProcess, producer: str
) -> None:
    roundtrip(module_broker, producer, f"roundtrip-{producer}", 20_000)


@pytest.mark.slow
@pytest.mark.parametrize("producer", CLIENTS)
def test_idempotent_keyed_produce_soak(module_broker: BrokerProcess, producer: str) -> None:
    roundtrip(module_broker, producer, f"soak-{producer}", 200_000)
