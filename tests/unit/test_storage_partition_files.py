"""partition_metadata.py, leader_epoch_checkpoint.py and the ``-delete`` directory names: Kafka's
text formats, byte for byte, and what a malformed file reads as."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from shardbroker.storage import file_names as fn
from shardbroker.storage.checkpoint import CheckpointError
from shardbroker.storage.leader_epoch_checkpoint import (
    parse_leader_epochs,
    read_leader_epochs,
    write_leader_epochs,
)
from shardbroker.storage.partition_metadata import (
    PartitionMetadataError,
    parse_partition_metadata,
    read_partition_metadata,
    write_partition_metadata,
)

TOPIC_ID = uuid.UUID("de4d5f6f-2a7b-4c1e-9f3a-0123456789ab")


def test_partition_metadata_is_kafkas_text_format(tmp_path: Path) -> None:
    assert read_partition_metadata(tmp_path) is None
    write_partition_metadata(tmp_path, TOPIC_ID)
    # Kafka's Uuid.toString: URL-safe base64 of the 16 bytes, no padding.
    assert (tmp_path / "partition.metadata").read_text() == "version: 0\ntopic_id: 3k1fbyp7TB6fOgEjRWeJqw\n"
    assert read_partition_metadata(tmp_path) == TOPIC_ID
    assert not (tmp_path / ("partition.metadata" + fn.TMP_SUFFIX)).exists()


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "line 1"),
        ("version: 0\n", "line 2"),
        ("version: 1\ntopic_id: 3k1fbyp7TB6fOgEjRWeJqw\n", "unsupported version"),
        ("topic_id: 3k1fbyp7TB6fOgEjRWeJqw\nversion: 0\n", "expected 'version"),
        ("version: 0\ntopic_id: 3k1fbyp7TB6f\n", "16 bytes"),
        ("version: 0\ntopic_id: 3k1fbyp7TB6fOgEjRWeJ*w\n", "16 bytes"),
        ("version: 0\ntopic_id: AAAAAAAAAAAAAAAAAAAAAA\n", "zero id"),
    ],
)
def test_malformed_partition_metadata(tmp_path: Path, text: str, why: str) -> None:
    with pytest.raises(PartitionMetadataError, match=why):
        parse_partition_metadata(text)
    (tmp_path / fn.PARTITION_METADATA_FILE).write_text(text)
    assert read_partition_metadata(tmp_path) is None  # the broker rewrites it


def test_leader_epoch_checkpoint_is_kafkas_text_format(tmp_path: Path) -> None:
    assert read_leader_epochs(tmp_path) == []
    write_leader_epochs(tmp_path, [(0, 0), (3, 1234)])
    assert (tmp_path / "leader-epoch-checkpoint").read_text() == "0\n2\n0 0\n3 1234\n"
    assert read_leader_epochs(tmp_path) == [(0, 0), (3, 1234)]
    write_leader_epochs(tmp_path, [])
    assert (tmp_path / "leader-epoch-checkpoint").read_text() == "0\n0\n"


@pytest.mark.parametrize("text", ["", "1\n0\n", "0\n2\n0 0\n", "0\n1\n0\n", "0\n1\n0 x\n", "0\n1\n0 1 2\n"])
def test_malformed_leader_epoch_checkpoints(tmp_path: Path, text: str) -> None:
    path = tmp_path / fn.LEADER_EPOCH_CHECKPOINT
    path.write_text(text)
    with pytest.raises(CheckpointError):
        parse_leader_epochs(path)
    assert read_leader_epochs(tmp_path) == []  # a new history at the current epoch


def test_delete_dir_names(tmp_path: Path) -> None:
    doomed = fn.delete_dir(tmp_path / "my-topic-3")
    assert doomed.parent == tmp_path
    assert doomed.name.startswith("my-topic-3.") and doomed.name.endswith("-delete")
    assert len(doomed.name) == len("my-topic-3.") + 32 + len("-delete")
    assert fn.is_delete_dir(doomed.name)
    assert not fn.is_delete_dir("my-topic-3") and not fn.is_delete_dir("to-delete")
    with pytest.raises(ValueError):
        fn.parse_partition_dir(doomed.name)  # never served as a partition
