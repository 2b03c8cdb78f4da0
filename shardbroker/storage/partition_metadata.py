"""Kafka's PartitionMetadataFile: ``partition.metadata``, the topic id of a partition directory.

Layout (UTF-8 text, PartitionMetadataFile.java), two lines::

    version: 0
    topic_id: 3k1Zb9QhTcqK6sB7e3kUXw

``topic_id`` is Kafka's ``Uuid.toString``: the 16 bytes in URL-safe base64 without padding (22
characters); the zero id is not a topic id. Written atomically (checkpoint.write_atomically).

Why: a directory left by an older incarnation of a topic (deleted while its worker was down) is
recognised by its topic id and deleted instead of being served as the new topic's. The broker
treats a missing or malformed file as unknown and rewrites it when it opens the partition, so a
bad one is repairable; `shardbroker check` reports it through `parse_partition_metadata`.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from pathlib import Path
from typing import Final

from shardbroker.storage.checkpoint import write_atomically
from shardbroker.storage.file_names import PARTITION_METADATA_FILE

__all__ = [
    "PartitionMetadataError",
    "parse_partition_metadata",
    "read_partition_metadata",
    "write_partition_metadata",
]

_VERSION: Final = 0


class PartitionMetadataError(ValueError):
    """A ``partition.metadata`` that does not parse as Kafka's PartitionMetadataReadBuffer reads it."""


def _encode_topic_id(topic_id: uuid.UUID) -> str:
    """Kafka's Uuid.toString: URL-safe base64 of the 16 bytes, without padding."""
    return base64.urlsafe_b64encode(topic_id.bytes).decode().rstrip("=")


def parse_partition_metadata(text: str) -> uuid.UUID:
    """The topic id of a ``partition.metadata`` text; PartitionMetadataError if malformed."""
    lines = text.splitlines()
    fields = []
    for number, key in enumerate(("version", "topic_id")):
        if number >= len(lines):
            raise PartitionMetadataError(f"line {number + 1} ({key}) is missing")
        name, sep, value = lines[number].partition(":")
        if not sep or name != key or not value.strip():
            raise PartitionMetadataError(f"line {number + 1} is {lines[number]!r}, expected '{key}: ...'")
        fields.append(value.strip())
    if fields[0] != str(_VERSION):
        raise PartitionMetadataError(f"unsupported version {fields[0]!r} (only {_VERSION} is known)")
    raw = fields[1]
    try:
        decoded = base64.b64decode(raw + "=" * (-len(raw) % 4), altchars=b"-_", validate=True)
        topic_id = uuid.UUID(bytes=decoded)
    except (binascii.Error, ValueError):
        raise PartitionMetadataError(f"topic_id {raw!r} is not a base64 topic id of 16 bytes") from None
    if topic_id.int == 0:
        raise PartitionMetadataError("topic_id is the zero id")
    return topic_id


def read_partition_metadata(directory: Path) -> uuid.UUID | None:
    """The topic id recorded in ``directory``; None if the file is missing, unreadable or malformed."""
    try:
        return parse_partition_metadata((directory / PARTITION_METADATA_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_partition_metadata(directory: Path, topic_id: uuid.UUID) -> None:
    text = f"version: {_VERSION}\ntopic_id: {_encode_topic_id(topic_id)}\n"
    write_atomically(directory / PARTITION_METADATA_FILE, text.encode())
