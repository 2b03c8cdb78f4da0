"""After a fault: open every partition log of a stopped broker's data dir the way a broker start
does (storage recovery), and read every record back. Opens and writes files (recovery may cut a
torn tail and rebuild indexes, exactly as the next start would).

``shardbroker check DATA_DIR`` (shardbroker/cli/check.py, in progress as this is written) is the
offline verifier meant for this; :func:`read_data_dir` should become "check exits 0, then read"
once it lands. Until then the proof is that recovery opens every partition and that every batch
passes ``RecordBatch.validate`` (length, magic, CRC-32C, records decode).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from shardbroker.protocol.records import iter_batches
from shardbroker.storage.file_names import parse_partition_dir
from shardbroker.storage.log import PartitionLog
from tests.integration.kafka_clients import Rec, index_of

__all__ = ["check_acked_exactly_once", "read_data_dir"]

READ_CHUNK = 1 << 20


def _partition_dirs(data_dir: Path) -> Iterable[tuple[Path, str, int]]:
    for child in sorted(data_dir.iterdir()):
        if not child.is_dir():
            continue
        try:
            topic, partition = parse_partition_dir(child.name)
        except ValueError:
            continue  # the controller's metadata dir and anything else that is not a partition
        yield child, topic, partition


def read_data_dir(data_dir: Path) -> dict[str, dict[int, list[Rec]]]:
    """topic -> partition -> every record from log start to log end, after recovery."""
    out: dict[str, dict[int, list[Rec]]] = defaultdict(dict)
    for directory, topic, partition in _partition_dirs(data_dir):
        log = PartitionLog.open(directory, topic=topic, partition=partition)
        try:
            records: list[Rec] = []
            offset, end = log.log_start_offset, log.log_end_offset
            while offset < end:
                data = log.read_bytes(offset, READ_CHUNK)
                assert data, f"{directory.name}: nothing to read at {offset} below the log end {end}"
                for batch in iter_batches(data, allow_partial_tail=True):
                    batch.validate(produce=False)
                    records += [
                        Rec(
                            partition,
                            r.offset,
                            None if r.key is None else bytes(r.key),
                            bytes(r.value or b""),
                        )
                        for r in batch.records()
                        if r.offset >= offset
                    ]
                    offset = batch.next_offset
            out[topic][partition] = records
        finally:
            log.close()
    return dict(out)


def check_acked_exactly_once(logs: Mapping[int, Sequence[Rec]], acked: Sequence[Rec], what: str) -> None:
    """Every acknowledged record is in the log at the offset it was acknowledged with; no message
    is there twice (a retried batch written again); each partition's offsets are dense and its
    messages in production order (per tag of kafka_clients.make_messages: one run each)."""
    position = {(r.partition, r.offset): r for recs in logs.values() for r in recs}
    missing = [r for r in acked if position.get((r.partition, r.offset)) != r]
    assert not missing, (
        f"{what}: {len(missing)} of {len(acked)} acknowledged records missing, e.g. {missing[:3]}"
    )
    for partition, recs in logs.items():
        if recs:
            first = recs[0].offset
            assert [r.offset for r in recs] == list(range(first, first + len(recs))), (
                f"{what}: partition {partition} offsets are not dense"
            )
        values = [r.value for r in recs]
        assert len(set(values)) == len(values), f"{what}: partition {partition} holds a message twice"
        for tag in {v.split(b":", 1)[0] for v in values}:  # one production run per tag
            order = [index_of(v) for v in values if v.startswith(tag + b":")]
            assert order == sorted(order), f"{what}: partition {partition} out of production order"
