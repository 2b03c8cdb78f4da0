"""The consumer protocol's subscription and assignment bytes (protocol/consumer_protocol.py, over
the ConsumerProtocol* classes generated from Kafka's specs): bytes librdkafka sends, our own
layout, and the malformed inputs that must raise ProtocolError (kafka-python's bytes: in
test_kafka_python_interop.py)."""

from __future__ import annotations

import pytest

from shardbroker.protocol.consumer_protocol import (
    ConsumerAssignment,
    ConsumerSubscription,
    decode_consumer_assignment,
    decode_consumer_subscription,
    encode_consumer_assignment,
    encode_consumer_subscription,
)
from shardbroker.protocol.errors import ProtocolError
from shardbroker.protocol.messages import ConsumerProtocolAssignment, ConsumerProtocolSubscription
from shardbroker.protocol.primitives import INT16, INT32

# Captured from librdkafka 2.16 (confluent-kafka) against our broker, through DescribeGroups:
# one "range" member with client.rack=rackA, then two "cooperative-sticky" members of topic fx
# (2 partitions) after their second rebalance (owned partitions, generation 2, sticky user data).
LIBRDKAFKA_RANGE_SUBSCRIPTION = "000300000001000266780000000000000000ffffffff00057261636b41"
LIBRDKAFKA_RANGE_ASSIGNMENT = "0000000000010002667800000002000000000000000100000000"
LIBRDKAFKA_STICKY_SUBSCRIPTION = (
    "0003000000010002667800000014000000010002667800000001000000010000000200000001000266780000000100000001"
    "000000020000"
)
LIBRDKAFKA_STICKY_ASSIGNMENT = (
    "000000000001000266780000000100000001000000140000000100026678000000010000000100000002"
)
STICKY_USER_DATA = bytes.fromhex("0000000100026678000000010000000100000002")


def test_librdkafka_range_member() -> None:
    sub = decode_consumer_subscription(bytes.fromhex(LIBRDKAFKA_RANGE_SUBSCRIPTION))
    assert sub == ConsumerSubscription(3, ["fx"], b"", {}, -1, "rackA")
    got = decode_consumer_assignment(bytes.fromhex(LIBRDKAFKA_RANGE_ASSIGNMENT))
    assert got == ConsumerAssignment(0, {"fx": [0, 1]}, b"")


def test_librdkafka_cooperative_sticky_member() -> None:
    raw = bytes.fromhex(LIBRDKAFKA_STICKY_SUBSCRIPTION)
    sub = decode_consumer_subscription(raw)
    assert sub == ConsumerSubscription(3, ["fx"], STICKY_USER_DATA, {"fx": [1]}, 2, "")
    got = decode_consumer_assignment(bytes.fromhex(LIBRDKAFKA_STICKY_ASSIGNMENT))
    assert got == ConsumerAssignment(0, {"fx": [1]}, STICKY_USER_DATA)
    # The generated class writes the same bytes back.
    msg, version = ConsumerProtocolSubscription.decode_versioned(raw)
    assert msg.encode_versioned(version) == raw


def test_our_bytes_are_the_v0_layout() -> None:
    # The layout our consumer sends: version 0, topics, null user data.
    assert encode_consumer_subscription(["a", "bc"]) == bytes.fromhex("00000000000200016100026263ffffffff")
    assert encode_consumer_assignment({"t": [3, 1]}, version=1) == bytes.fromhex(
        "000100000001000174000000020000000300000001ffffffff"
    )


def _s(text: str) -> bytes:
    return INT16.pack(len(text)) + text.encode()


def test_subscription_versions() -> None:
    v0 = encode_consumer_subscription(["a", "b"])
    assert decode_consumer_subscription(v0).topics == ["a", "b"]
    v3 = (
        INT16.pack(3)
        + INT32.pack(1)
        + _s("a")
        + INT32.pack(2)
        + b"ud"
        + INT32.pack(1)
        + _s("a")
        + INT32.pack(2)
        + INT32.pack(0)
        + INT32.pack(1)
        + INT32.pack(7)
        + _s("rack1")
    )
    sub = decode_consumer_subscription(v3)
    assert (sub.version, sub.topics, sub.user_data) == (3, ["a"], b"ud")
    assert (sub.owned_partitions, sub.generation_id, sub.rack_id) == ({"a": [0, 1]}, 7, "rack1")
    # A later version's extra fields are ignored, as Kafka does.
    later = decode_consumer_subscription(INT16.pack(9) + v3[2:] + b"more")
    assert (later.version, later.topics, later.rack_id) == (9, ["a"], "rack1")


def test_malformed_subscriptions_raise() -> None:
    good = encode_consumer_subscription(["a", "bc"])
    for cut in range(len(good)):
        with pytest.raises(ProtocolError):
            decode_consumer_subscription(good[:cut])
    bad = [
        INT16.pack(0) + INT32.pack(1) + INT16.pack(9) + b"ab",  # topic longer than the data
        INT16.pack(0) + INT32.pack(2**30),  # more topics than bytes
        INT16.pack(0) + INT32.pack(1) + _s("a") + b"\xff\xfe",  # not UTF-8 ... and no user data
        INT16.pack(-1) + good[2:],  # a negative version
    ]
    for raw in bad:
        with pytest.raises(ProtocolError):
            decode_consumer_subscription(raw)


def test_assignment_layout_and_truncation() -> None:
    raw = encode_consumer_assignment({"t": [3, 1]}, version=1)
    got = decode_consumer_assignment(raw)
    assert (got.version, got.partitions, got.user_data) == (1, {"t": [3, 1]}, None)
    assert decode_consumer_assignment(b"").partitions == {}
    for cut in range(1, len(raw) - 4):
        with pytest.raises(ProtocolError):
            decode_consumer_assignment(raw[:cut])
    with pytest.raises(ProtocolError):
        decode_consumer_assignment(INT16.pack(0) + INT32.pack(2**30))


def test_repeated_topic_is_merged() -> None:
    TP = ConsumerProtocolAssignment.TopicPartition
    parts = [TP(topic="t", partitions=[0]), TP(topic="t", partitions=[2])]
    raw = ConsumerProtocolAssignment(assigned_partitions=parts).encode_versioned(0)
    assert decode_consumer_assignment(raw).partitions == {"t": [0, 2]}
