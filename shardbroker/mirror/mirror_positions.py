"""Where each mirrored partition resumes: the mirror's positions, kept on the target. Opens sockets.

The positions live in the consumer group ``shardbroker-mirror.<source alias>`` on the *target*
(never checkpointed), one committed offset per target topic-partition: the next *source* offset
to mirror, with the commit's metadata ``{"target": T}``, ``T`` the target's end offset after the
last mirrored batch. Kept on the target because that is where the records land: with
``exactly.once.source.support=enabled`` the commit is part of the records' transaction.

Resuming without repeating or skipping (no transaction: the commit follows the acknowledgement,
every second, so a crash leaves mirrored records past the last commit):

1. Read the committed ``(S, T)`` of the partition (none yet: ``S`` the source's log start offset,
   ``T`` the target's log start offset).
2. If the target's end offset is below ``T``, the target partition lost records (deleted and
   recreated, or truncated): mirror it again from the source's log start offset, and say so.
3. Count the records in the target partition from ``T`` to its end, by the batch headers only
   (``recordsCount``), READ_COMMITTED (an aborted transaction of a fenced exactly-once mirror
   does not count; neither do markers). Call it ``n``.
4. Read the source from ``S`` through the mirror's own filter (READ_COMMITTED, markers and
   aborted transactions dropped) and pass over batches until ``n`` records are passed: the
   position is the end of the last batch passed. Batches are copied whole, so ``n`` always ends
   on a batch boundary; if it does not (someone else wrote to the target partition), the mirror
   resumes after the batch it stops in and says so (never a duplicate).

Step 4 counts records, not offsets, because the source may have gaps (markers, aborted
transactions, compaction) that the target does not.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from shardbroker.client.admin import AdminClient
from shardbroker.client.admin_cluster import TopicPartition
from shardbroker.client.admin_partitions import EARLIEST
from shardbroker.mirror.batch_rewrite import Selection
from shardbroker.mirror.source_fetcher import SourceFetcher

__all__ = [
    "Position",
    "PositionStore",
    "decode_metadata",
    "encode_metadata",
    "positions_group",
    "resume",
    "skip_records",
]

log = logging.getLogger("shardbroker.mirror")

#: Fetch rounds without progress before a count gives up (the partition is then left as found).
_STALLED_ROUNDS: Final = 20


def positions_group(source_alias: str) -> str:
    """The target group holding a mirror's positions (MirrorMaker 2 keeps them in Connect's
    offsets topic; a group is what any Kafka offers and any Kafka tool can show)."""
    return f"shardbroker-mirror.{source_alias}"


@dataclass(frozen=True, slots=True)
class Position:
    """The next source offset to mirror, and the target's end offset after the last batch."""

    source_offset: int
    target_offset: int


def encode_metadata(target_offset: int) -> str:
    return json.dumps({"target": target_offset})


def decode_metadata(text: str | None) -> int | None:
    """The ``target`` offset of a commit's metadata; None if absent or not ours."""
    try:
        value = json.loads(text or "")
    except ValueError:
        return None
    target = value.get("target") if isinstance(value, dict) else None
    return target if isinstance(target, int) and target >= 0 else None


class PositionStore:
    """The positions group on the target (``admin``: an AdminClient of the target)."""

    def __init__(self, admin: AdminClient, group: str) -> None:
        self.admin = admin
        self.group = group

    def load(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, Position]:
        """The committed positions of ``tps`` (target partitions) that have one."""
        found = self.admin.committed_offsets_metadata(self.group, list(tps))
        out = {}
        for tp, (offset, note) in found.items():
            target = decode_metadata(note)
            if target is not None:
                out[tp] = Position(offset, target)
        return out

    def commit(self, positions: Mapping[TopicPartition, Position]) -> None:
        if positions:
            self.admin.commit_offsets(
                self.group,
                {tp: p.source_offset for tp, p in positions.items()},
                metadata={tp: encode_metadata(p.target_offset) for tp, p in positions.items()},
            )


def skip_records(selection: Selection, records: int) -> tuple[int, int, bool]:
    """Pass over ``records`` records of ``selection``'s batches: ``(position, left, aligned)``,
    the position after the last batch passed (or the selection's end when every batch was passed),
    the records still to pass, and False when the count ended inside a batch."""
    position = selection.start
    for batch in selection.batches:
        if records <= 0:
            return position, 0, True
        records -= batch.records
        position = batch.next_offset
        if records < 0:
            return position, 0, False
    return (selection.next_position if records <= 0 else position), max(records, 0), True


def count_records(fetcher: SourceFetcher, tp: TopicPartition, start: int, end: int) -> int:
    """Records (by batch headers) in ``tp`` from ``start`` to ``end``, READ_COMMITTED."""
    return _walk(fetcher, tp, start, end, None)[1]


def _walk(
    fetcher: SourceFetcher, tp: TopicPartition, start: int, end: int | None, records: int | None
) -> tuple[int, int]:
    """Fetch ``tp`` from ``start``: with ``records`` None, count records up to ``end`` and
    answer ``(end reached, count)``; else pass ``records`` records: ``(position, passed)``."""
    position, seen, stalled = start, 0, 0
    while (
        (end is None or position < end) and (records is None or seen < records) and stalled < _STALLED_ROUNDS
    ):
        answer = fetcher.fetch({tp: position})[0]
        if answer.error is not None:
            raise answer.error
        selection = answer.selection
        assert selection is not None
        if end is None:
            end = answer.end_offset
        if records is None:
            seen += sum(b.records for b in selection.batches if end is None or b.base_offset < end)
            new = selection.next_position
        else:
            new, left, aligned = skip_records(selection, records - seen)
            seen = records - left
            if not aligned:
                log.warning(
                    "%s-%d: the target holds part of the source batch ending at %d; resuming after it",
                    tp[0],
                    tp[1],
                    new,
                )
        stalled = stalled + 1 if new == position else 0
        position = new
    return position, seen


def resume(
    source_tp: TopicPartition,
    target_tp: TopicPartition,
    committed: Position | None,
    source: SourceFetcher,
    target: SourceFetcher,
) -> Position:
    """Where ``source_tp`` resumes (the module docstring's algorithm)."""
    target_start = target.cluster.list_offsets({target_tp: EARLIEST})[target_tp]
    source_start = source.cluster.list_offsets({source_tp: EARLIEST})[source_tp]
    target_end = target.fetch({target_tp: target_start})[0].end_offset
    if committed is None:
        committed = Position(source_start, target_start)
    elif target_end < committed.target_offset:
        log.warning(
            "%s-%d: the target partition ends at %d, before the mirrored position %d (deleted or "
            "truncated): mirroring it again from the source's start",
            target_tp[0],
            target_tp[1],
            target_end,
            committed.target_offset,
        )
        committed = Position(source_start, target_start)
    begin = max(committed.target_offset, target_start)
    tail = count_records(target, target_tp, begin, target_end) if target_end > begin else 0
    if tail == 0:
        return Position(max(committed.source_offset, source_start), target_end)
    position, passed = _walk(source, source_tp, max(committed.source_offset, source_start), None, tail)
    log.info(
        "%s-%d: %d records were mirrored after the last saved position; resuming at source offset %d",
        source_tp[0],
        source_tp[1],
        passed,
        position,
    )
    return Position(position, target_end)
