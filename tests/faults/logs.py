"""After a fault: verify a stopped broker's data dir offline (``shardbroker check``'s
storage/verify/: no damage allowed; a torn tail or an index the next start rebuilds is
"repairable" and allowed), then open every partition log the way a broker start does (storage
recovery) and read every record back. Opens and writes files (recovery may cut a torn tail and
rebuild indexes, exactly as the next start would).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

from shardbroker.protocol.record_batch import iter_batches
from shardbroker.storage.log import PartitionLog
from shardbroker.storage.verify.partition import partition_dirs, verify_partition
from shardbroker.storage.verify.problems import Severity
from tests.integration.kafka_clients import Rec, index_of

__all__ = ["check_acked_exactly_once", "read_data_dir"]

READ_CHUNK = 1 << 20


def read_data_dir(data_dir: Path) -> dict[str, dict[int, list[Rec]]]:
    """topic -> partition -> every record from log start to log end, after recovery."""
    out: dict[str, dict[int, list[Rec]]] = defaultdict(dict)
    for directory in partition_dirs(data_dir):
        report = verify_partition(directory)
        damage = [p.describe(data_dir) for p in report.problems if p.severity is Severity.DAMAGE]
        assert not damage, f"{directory.name}: shardbroker check finds damage: {damage[:3]}"
        topic, partition = report.topic, report.partition
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
