"""Control messages and the metadata image survive the trip through a ring frame unchanged."""

from __future__ import annotations

import uuid

import pytest

from shardbroker.ipc.control import (
    ControlMessageError,
    ControlReply,
    ControlRequest,
    MetadataApplied,
    MetadataPush,
    decode_control,
    encode_control,
)
from shardbroker.metadata.image import BrokerEndpoint, MetadataImage, PartitionImage, TopicImage


def sample_image() -> MetadataImage:
    topic = TopicImage(
        name="orders",
        topic_id=uuid.UUID(int=7),
        partitions=(PartitionImage(0, leader=0, leader_epoch=3), PartitionImage(1, leader=1)),
        configs={"retention.ms": "60000"},
    )
    return MetadataImage(
        version=12,
        cluster_id="c1",
        controller_id=0,
        brokers=(BrokerEndpoint(0, "127.0.0.1", 9092), BrokerEndpoint(1, "127.0.0.1", 9093)),
        topics={"orders": topic},
    )


def test_image_round_trips_through_a_metadata_push() -> None:
    image = sample_image()
    message = decode_control(encode_control(MetadataPush(image.to_dict())))
    assert isinstance(message, MetadataPush)
    assert MetadataImage.from_dict(message.image) == image


def test_image_lookups() -> None:
    image = sample_image()
    assert [p.partition for _, p in image.partitions_led_by(1)] == [1]
    assert image.topics_by_id[uuid.UUID(int=7)].name == "orders"
    assert image.topics["orders"].partition(2) is None
    assert image.broker(1) == BrokerEndpoint(1, "127.0.0.1", 9093)


@pytest.mark.parametrize(
    "message",
    [
        ControlRequest(5, "create_topics", {"topics": [{"name": "t", "num_partitions": 3}]}),
        ControlReply(5, {"topics": [{"name": "t", "error_code": 0}]}),
        MetadataApplied(42),
    ],
)
def test_messages_round_trip(message: ControlRequest | ControlReply | MetadataApplied) -> None:
    assert decode_control(encode_control(message)) == message


@pytest.mark.parametrize("frame", [b"", b"[]", b'{"kind": "nope"}', b'{"kind": "applied"}', b"\xff"])
def test_garbage_is_refused_with_the_control_error(frame: bytes) -> None:
    with pytest.raises(ControlMessageError):
        decode_control(frame)
