"""Interop with an independent implementation: kafka-python 3.x's protocol encoders/decoders.

Two of its codecs are used: ``kafka.protocol.*`` (generated from its own copy of the specs, with
its own runtime) and ``kafka.protocol.old`` (hand-written struct schemas, independent of the
JSON specs). Bytes go both ways: ours -> kafka-python decode -> kafka-python encode must give
the same bytes and decode back to the original message.

Known kafka-python behaviour: it decodes an ApiVersions response whose error_code is non-zero at
version 0 whatever version was asked (Kafka's clients do the same, since a broker answers
UNSUPPORTED_VERSION with a v0 body), so the broker must encode such error answers at v0.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

pytest.importorskip("kafka.protocol.api_message")

import kafka.protocol.admin as kp_admin
import kafka.protocol.consumer as kp_consumer
import kafka.protocol.metadata as kp_metadata
import kafka.protocol.producer as kp_producer
from kafka.protocol.api_message import ApiMessage
from kafka.protocol.consumer.metadata import ConsumerProtocolAssignment as KAssignment
from kafka.protocol.consumer.metadata import ConsumerProtocolSubscription as KSubscription
from kafka.protocol.old import api_versions as old_api_versions
from kafka.protocol.old import fetch as old_fetch
from kafka.protocol.old import group as old_group
from kafka.protocol.old import metadata as old_metadata
from kafka.protocol.old import produce as old_produce

from shardbroker.protocol import codec, messages
from shardbroker.protocol.consumer_protocol import (
    ConsumerAssignment,
    decode_consumer_assignment,
    decode_consumer_subscription,
    encode_consumer_assignment,
)
from tests.unit.test_codec_roundtrip import build_sample, flexible


def _kafka_python_classes() -> dict[str, Any]:
    found: dict[str, Any] = {}
    for mod in (kp_metadata, kp_producer, kp_consumer, kp_admin):
        for name in dir(mod):
            obj = getattr(mod, name)
            is_message = isinstance(obj, type) and issubclass(obj, ApiMessage) and obj is not ApiMessage
            if is_message and hasattr(messages, name):
                found[name] = obj
    return found


KP = _kafka_python_classes()
CASES = [
    (name, v)
    for name, kcls in sorted(KP.items())
    for v in range(
        getattr(messages, name).VALID_VERSIONS[0],
        min(getattr(messages, name).VALID_VERSIONS[1], kcls.max_version) + 1,
    )
]


def kp_reencode(kcls: Any, data: bytes, version: int) -> bytes:
    k = kcls.decode(data, version=version)
    # A decoded kafka-python message has no header slots set; encode() touches them.
    k._header = None
    k._min_version = k._max_version = None
    return bytes(k.encode(version=version))


def test_enough_interop_coverage() -> None:
    for name in (
        "MetadataRequest",
        "ProduceRequest",
        "FetchRequest",
        "JoinGroupRequest",
        "ApiVersionsRequest",
    ):
        assert name in KP and name.replace("Request", "Response") in KP
    assert len(CASES) > 300


@pytest.mark.parametrize(("name", "version"), CASES, ids=[f"{n}-v{v}" for n, v in CASES])
def test_ours_through_kafka_python_and_back(name: str, version: int) -> None:
    ours = getattr(messages, name)
    msg = build_sample(ours, version, flexible(ours, version), random.Random(f"{name}{version}"))
    if name == "ApiVersionsResponse":
        msg.error_code = 0  # see the module docstring
    data = codec.encode(msg, version)
    theirs = kp_reencode(KP[name], data, version)
    assert theirs == data
    assert codec.decode(ours, theirs, version) == msg


# ---- messages built by kafka-python (new-style) ----------------------------------------------


@pytest.mark.parametrize("version", [0, 1, 4, 8, 9, 10, 12])
def test_metadata_request_from_kafka_python(version: int) -> None:
    K = kp_metadata.MetadataRequest
    topics = [K.MetadataRequestTopic(name="orders", version=version)]
    data = bytes(K(version=version, topics=topics, allow_auto_topic_creation=False).encode(version=version))
    got = codec.decode(messages.MetadataRequest, data, version)
    assert [t.name for t in got.topics or []] == ["orders"]
    if version >= 4:
        assert got.allow_auto_topic_creation is False


@pytest.mark.parametrize("version", [3, 7, 8, 9])
def test_produce_request_from_kafka_python(version: int) -> None:
    K = kp_producer.ProduceRequest
    batch = bytes(range(200))
    part = K.TopicProduceData.PartitionProduceData(index=2, records=batch, version=version)
    td = K.TopicProduceData(name="t", partition_data=[part], version=version)
    data = bytes(
        K(version=version, transactional_id="tx", acks=-1, timeout_ms=1500, topic_data=[td]).encode(
            version=version
        )
    )
    got = codec.decode(messages.ProduceRequest, data, version)
    assert (got.transactional_id, got.acks, got.timeout_ms) == ("tx", -1, 1500)
    p = got.topic_data[0].partition_data[0]
    assert p.index == 2 and isinstance(p.records, memoryview) and p.records == batch


@pytest.mark.parametrize("version", [4, 11, 12, 13])
def test_fetch_response_to_kafka_python(version: int) -> None:
    F = messages.FetchResponse
    msg = F(
        throttle_time_ms=3,
        session_id=9 if version >= 7 else 0,
        responses=[
            F.FetchableTopicResponse(
                topic="t" if version < 13 else "",
                topic_id=messages.UUID(int=5) if version >= 13 else messages.UUID(int=0),
                partitions=[F.PartitionData(partition_index=1, high_watermark=77, records=b"\x01" * 70)],
            )
        ],
    )
    data = codec.encode(msg, version)
    k = kp_consumer.FetchResponse.decode(data, version=version)
    assert k.throttle_time_ms == 3
    kp_part = k.responses[0].partitions[0]
    assert kp_part.high_watermark == 77 and bytes(kp_part.records) == b"\x01" * 70


@pytest.mark.parametrize("version", [0, 2, 5, 6, 7, 9])
def test_join_group_both_ways(version: int) -> None:
    K = kp_consumer.JoinGroupRequest
    proto = K.JoinGroupRequestProtocol(name="range", metadata=b"\x00\x01meta", version=version)
    data = bytes(
        K(
            version=version,
            group_id="g",
            session_timeout_ms=10000,
            rebalance_timeout_ms=30000,
            member_id="",
            protocol_type="consumer",
            protocols=[proto],
        ).encode(version=version)
    )
    got = codec.decode(messages.JoinGroupRequest, data, version)
    assert got.group_id == "g" and got.protocols[0].metadata == b"\x00\x01meta"
    R = messages.JoinGroupResponse
    resp = R(
        generation_id=4,
        protocol_name="range",
        leader="m1",
        member_id="m1",
        members=[R.JoinGroupResponseMember(member_id="m1", metadata=b"xy")],
    )
    k = kp_consumer.JoinGroupResponse.decode(codec.encode(resp, version), version=version)
    assert k.generation_id == 4 and k.leader == "m1" and bytes(k.members[0].metadata) == b"xy"


@pytest.mark.parametrize("version", [0, 1, 2, 3])
def test_api_versions_both_ways(version: int) -> None:
    K = kp_metadata.ApiVersionsRequest
    kwargs: dict[str, Any] = (
        {"client_software_name": "kp", "client_software_version": "3"} if version >= 3 else {}
    )
    got = codec.decode(
        messages.ApiVersionsRequest, bytes(K(version=version, **kwargs).encode(version=version)), version
    )
    if version >= 3:
        assert got.client_software_name == "kp"
    R = messages.ApiVersionsResponse
    resp = R(api_keys=[R.ApiVersion(api_key=0, min_version=0, max_version=11)], throttle_time_ms=0)
    k = kp_metadata.ApiVersionsResponse.decode(codec.encode(resp, version), version=version)
    assert [(a.api_key, a.max_version) for a in k.api_keys] == [(0, 11)]


# ---- kafka-python's hand-written (pre-3.0) schemas ------------------------------------------


def test_old_metadata_request_and_response() -> None:
    for v in (0, 1, 4):
        args: tuple[Any, ...] = (["a", "b"],) if v < 4 else (["a", "b"], False)
        data = old_metadata.MetadataRequest[v](*args).encode()
        got = codec.decode(messages.MetadataRequest, data, v)
        assert [t.name for t in got.topics or []] == ["a", "b"]
    R = messages.MetadataResponse
    resp = R(
        brokers=[R.MetadataResponseBroker(node_id=0, host="h", port=9092, rack=None)],
        controller_id=0,
        topics=[
            R.MetadataResponseTopic(
                name="a",
                partitions=[R.MetadataResponsePartition(partition_index=0, replica_nodes=[0], isr_nodes=[0])],
            )
        ],
    )
    k = old_metadata.MetadataResponse[1].decode(codec.encode(resp, 1))
    assert k.brokers[0][1] == "h" and k.topics[0][1] == "a" and list(k.topics[0][3][0][3]) == [0]


def test_old_produce_fetch_join_api_versions() -> None:
    data = old_produce.ProduceRequest[3](None, 1, 1000, [("t", [(0, b"batch")])]).encode()
    got = codec.decode(messages.ProduceRequest, data, 3)
    assert got.topic_data[0].partition_data[0].records == b"batch" and got.transactional_id is None
    data = old_fetch.FetchRequest[4](-1, 500, 1, 1 << 20, 0, [("t", [(0, 42, 1 << 20)])]).encode()
    got_f = codec.decode(messages.FetchRequest, data, 4)
    assert got_f.topics[0].partitions[0].fetch_offset == 42 and got_f.max_wait_ms == 500
    data = old_group.JoinGroupRequest[2]("g", 10000, 30000, "", "consumer", [("range", b"m")]).encode()
    assert codec.decode(messages.JoinGroupRequest, data, 2).protocols[0].name == "range"
    R = messages.ApiVersionsResponse
    resp = R(api_keys=[R.ApiVersion(api_key=3, min_version=0, max_version=12)], throttle_time_ms=7)
    k = old_api_versions.ApiVersionsResponse[1].decode(codec.encode(resp, 1))
    assert k.error_code == 0 and tuple(k.api_keys[0]) == (3, 0, 12) and k.throttle_time_ms == 7
    P = messages.ProduceResponse
    presp = P(
        responses=[
            P.TopicProduceResponse(
                name="t", partition_responses=[P.PartitionProduceResponse(index=0, base_offset=10)]
            )
        ]
    )
    kp = old_produce.ProduceResponse[3].decode(codec.encode(presp, 3))
    assert kp.responses[0][0] == "t" and kp.responses[0][1][0][2] == 10


# ---- consumer protocol data (version-prefixed, inside JoinGroup/SyncGroup) -------------------


@pytest.mark.parametrize("version", [0, 1, 2, 3])
def test_subscription_through_kafka_python_and_back(version: int) -> None:
    owned = [KSubscription.TopicPartition(topic="a", partitions=[0, 1], version=version)] if version else []
    theirs = KSubscription(
        version=version,
        topics=["a", "b"],
        user_data=b"ud",
        owned_partitions=owned,
        generation_id=5,
        rack_id="r",
    )
    raw = bytes(theirs.encode(version=version))
    sub = decode_consumer_subscription(raw)
    assert (sub.version, sub.topics, sub.user_data) == (version, ["a", "b"], b"ud")
    assert sub.owned_partitions == ({"a": [0, 1]} if version >= 1 else {})
    assert (sub.generation_id, sub.rack_id) == ((5 if version >= 2 else -1), ("r" if version >= 3 else None))
    msg, got_version = messages.ConsumerProtocolSubscription.decode_versioned(raw)
    assert got_version == version and msg.encode_versioned(version) == raw
    back = KSubscription.decode(msg.encode_versioned(version))
    assert back.topics == ["a", "b"] and bytes(back.user_data) == b"ud"


@pytest.mark.parametrize("version", [0, 1, 2, 3])
def test_assignment_through_kafka_python_and_back(version: int) -> None:
    ours = encode_consumer_assignment({"t": [3, 1], "u": [0]}, version=version)
    theirs = KAssignment.decode(ours)
    assert [(tp.topic, list(tp.partitions)) for tp in theirs.assigned_partitions] == [
        ("t", [3, 1]),
        ("u", [0]),
    ]
    assert bytes(theirs.encode(version=version)) == ours
    assert decode_consumer_assignment(ours) == ConsumerAssignment(version, {"t": [3, 1], "u": [0]})
