"""The append path of a partition this worker leads (Kafka's Partition.appendRecordsToLeader).

One Produce partition (`append_to_leader`) or a local producer's lot of whole batches
(`append_batches_to_leader`, broker/local_clients.py) goes: storage/log_validator.py's Produce
rules (the only place that refuses a batch: framing, magic, codec, CRC, sizes, counts), then one
`PartitionLog.append` that stamps offsets and the leader epoch in place and writes once, then the
bookkeeping: counters, waking parked fetches, the flush the policy asks for (log_flusher.py).
Records are decoded only on compacted topics, whose records must have keys
(`log_validator.check_record_keys`: INVALID_RECORD with the keyless records' indexes, the batch
refused whole); batch bytes are never copied besides the one write. Never raises for bad input:
the error code is in the `AppendResult`.

Idempotence is the log's ProducerStateManager: a retried batch is answered with its original
offsets and NONE; OUT_OF_ORDER_SEQUENCE_NUMBER (45) and INVALID_PRODUCER_EPOCH (47) come from
there. One rule is added here: a producer id the partition has no state for must start at
sequence 0, else UNKNOWN_PRODUCER_ID (59), Kafka's rule before 2.5 and again with transactions v2
(KAFKA-18202): a gap we cannot check is refused rather than accepted silently, and clients answer
it by bumping their epoch (KIP-360) and starting again at sequence 0.

Cost (one-record batches, in-process): `PartitionLog.append` 5.2 us, `ReplicaManager.append`
6.5 us (docs/notes/replica-manager.md has the measurements).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, NamedTuple

from shardbroker.broker.log_flusher import LogFlusher
from shardbroker.broker.partition import Partition
from shardbroker.protocol.errors import ErrorCode
from shardbroker.storage.errors import RecordValidationError, StorageError
from shardbroker.storage.log import LogAppendInfo
from shardbroker.storage.log_validator import check_produce_batch, check_record_keys

__all__ = ["AppendResult", "append_batches_to_leader", "append_marker_to_leader", "append_to_leader"]

_NONE: Final = int(ErrorCode.NONE)
#: Largest single write of ``append_batches_to_leader`` (one pwritev; bounds the iovec and the
#: lock hold).
_MAX_LOT_BYTES: Final = 64 << 20


class AppendResult(NamedTuple):
    """One partition's answer to a Produce, before any durability wait."""

    error_code: int
    base_offset: int = -1
    log_append_time: int = -1
    log_start_offset: int = -1
    error_message: str | None = None
    #: acks=-1 must wait until this offset is durable (-1: nothing to wait for).
    flush_offset: int = -1
    #: ``(index in the batch, why)`` of each record that failed the batch (Produce v8+).
    record_errors: Sequence[tuple[int, str]] = ()


def append_to_leader(p: Partition, records: Any, flusher: LogFlusher) -> AppendResult:
    """Append one Produce partition's records (exactly one v2 batch)."""
    p.produce_requests += 1
    plog = p.log
    try:
        f = check_produce_batch(records)
        if "compact" in plog.config.cleanup_policy:  # LogConfig.compact, 25 ns cheaper inline
            check_record_keys(records, f, plog.config, p.topic, p.index)
        (_, _, _, _, _, _, _, _, _, pid, epoch, seq, _) = f
        if pid >= 0 and seq != 0 and pid not in plog.producer_state.producers:
            return AppendResult(
                int(ErrorCode.UNKNOWN_PRODUCER_ID),
                error_message=f"no state for producer {pid} (epoch {epoch}): first sequence must be 0",
            )
        info = plog.append(records, leader_epoch=p.leader_epoch)
    except RecordValidationError as exc:
        return AppendResult(exc.error_code, error_message=str(exc), record_errors=exc.record_errors)
    except StorageError as exc:
        return AppendResult(exc.error_code, error_message=str(exc))
    if info.duplicate:
        return AppendResult(_NONE, info.first_offset, info.log_append_time, info.log_start_offset)
    flush_offset = _appended(p, info, len(records), flusher)
    return AppendResult(
        _NONE, info.first_offset, info.log_append_time, info.log_start_offset, None, flush_offset
    )


def append_marker_to_leader(
    p: Partition, batch: bytes | bytearray, flusher: LogFlusher, transaction_version: int = 0
) -> AppendResult:
    """Append a transaction marker (a control batch the transaction coordinator built:
    broker/txn_markers.py), with the log's marker rules of its ``transaction_version`` (v1:
    producer epoch not older; v2: newer, KIP-890 part 2; both: coordinator epoch not older).
    Never a duplicate: markers carry no sequence."""
    try:
        info = p.log.append(
            bytearray(batch),
            leader_epoch=p.leader_epoch,
            allow_control=True,
            transaction_version=transaction_version,
        )
    except StorageError as exc:
        return AppendResult(exc.error_code, error_message=str(exc))
    flush_offset = _appended(p, info, len(batch), flusher)
    return AppendResult(
        _NONE, info.first_offset, info.log_append_time, info.log_start_offset, None, flush_offset
    )


def _appended(p: Partition, info: LogAppendInfo, size: int, flusher: LogFlusher) -> int:
    """Bookkeeping after a write: counters, long-poll wake-up, flush policy. Returns the offset
    an acks=all answer waits to be durable (-1: none)."""
    p.messages_in += info.record_count
    p.bytes_in += size
    if p.waiters:
        p.appended(size)
    if not info.flush_required:
        return -1
    flush_offset = info.last_offset + 1
    flusher.request_flush(p, flush_offset)
    return flush_offset


def append_batches_to_leader(
    p: Partition, batches: list[memoryview], flusher: LogFlusher
) -> list[AppendResult]:
    """Append several whole batches in one write, one result per batch, same checks and
    bookkeeping as `append_to_leader`. Idempotent batches, batches the Produce rules refuse,
    and any lot that one bad batch makes the log refuse, go through `append_to_leader` one by
    one instead, so each batch gets its own error and the good ones are still written, in order."""
    if len(batches) == 1:
        return [append_to_leader(p, batches[0], flusher)]
    counts = []
    for b in batches:
        try:
            f = check_produce_batch(b)
        except StorageError:
            return [append_to_leader(p, b, flusher) for b in batches]
        if f[9] >= 0:  # a producer id: sequences are checked batch by batch
            return [append_to_leader(p, b, flusher) for b in batches]
        counts.append(f[12])
    # Lots of at most segment.bytes: the log refuses a larger single append.
    limit = min(p.log.config.segment_bytes, _MAX_LOT_BYTES)
    if sum(len(b) for b in batches) > limit:
        out: list[AppendResult] = []
        lot: list[memoryview] = []
        size = 0
        for b in batches:
            if lot and size + len(b) > limit:
                out += append_batches_to_leader(p, lot, flusher)
                lot, size = [], 0
            lot.append(b)
            size += len(b)
        return out + append_batches_to_leader(p, lot, flusher)
    cfg = p.log.config
    if cfg.compact:  # after the split into lots, so that each batch's keys are read once
        try:
            for b in batches:
                check_record_keys(b, check_produce_batch(b), cfg, p.topic, p.index)
        except StorageError:
            return [append_to_leader(p, b, flusher) for b in batches]
    try:
        info = p.log.append(batches, leader_epoch=p.leader_epoch)
    except StorageError:
        return [append_to_leader(p, b, flusher) for b in batches]
    p.produce_requests += 1
    flush_offset = _appended(p, info, info.valid_bytes, flusher)
    results = []
    base = info.first_offset
    for count in counts:
        results.append(
            AppendResult(_NONE, base, info.log_append_time, info.log_start_offset, None, flush_offset)
        )
        base += count
    return results
