"""Offset syncs: MirrorMaker 2's record bytes, the emit rules, and translation that never skips."""

from __future__ import annotations

import bisect
import random
import struct

import pytest

from shardbroker.mirror.mirror_config import MirrorConfig
from shardbroker.mirror.offset_syncs import (
    MAX_SYNCS_PER_PARTITION,
    MalformedRecord,
    OffsetSync,
    OffsetSyncStore,
    OffsetSyncWriter,
    PartitionSyncs,
)


def config(**extra: str) -> MirrorConfig:
    props = {
        "source.cluster.bootstrap.servers": "127.0.0.1:1",
        "target.cluster.bootstrap.servers": "127.0.0.1:2",
        **extra,
    }
    return MirrorConfig.from_properties(props)


# -- record format -------------------------------------------------------------------------------


def test_offset_sync_bytes_are_mirrormaker_struct_encoding() -> None:
    sync = OffsetSync("orders", 3, 1000, 42)
    # Struct{topic: STRING (int16 length + UTF-8), partition: INT32}, big-endian
    assert sync.key() == b"\x00\x06orders" + b"\x00\x00\x00\x03"
    # Struct{upstreamOffset: INT64, offset: INT64}
    assert sync.value() == struct.pack(">qq", 1000, 42)
    assert OffsetSync.decode(sync.key(), sync.value()) == sync


def test_offset_sync_decodes_bytes_written_the_java_way() -> None:
    # What MirrorMaker 2 writes for topic "t\u00e9", partition 7, 2**40 -> 5 (a non-ASCII name)
    name = "t\u00e9".encode()
    key = struct.pack(">h", len(name)) + name + struct.pack(">i", 7)
    value = struct.pack(">q", 2**40) + struct.pack(">q", 5)
    assert OffsetSync.decode(key, value) == OffsetSync("t\u00e9", 7, 2**40, 5)
    # trailing bytes are ignored, as Schema.read does
    assert OffsetSync.decode(key + b"xx", value + b"yy") == OffsetSync("t\u00e9", 7, 2**40, 5)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (None, struct.pack(">qq", 1, 1), "no key"),
        (b"\x00\x02t", struct.pack(">qq", 1, 1), "inside field 'topic'"),
        (b"\x00\x01t\x00\x00", struct.pack(">qq", 1, 1), "inside field 'partition'"),
        (b"\xff\xff" + b"\x00\x00\x00\x00", struct.pack(">qq", 1, 1), "'topic' is null"),
        (b"\x00\x01\xff\x00\x00\x00\x00", struct.pack(">qq", 1, 1), "not UTF-8"),
        (OffsetSync("t", 0, 1, 1).key(), None, "no value"),
        (OffsetSync("t", 0, 1, 1).key(), b"\x00" * 12, "inside field 'offset'"),
        (OffsetSync("t", 0, 1, 1).key(), struct.pack(">qq", -1, 1), "negative"),
    ],
)
def test_malformed_offset_syncs_say_what_is_wrong(
    key: bytes | None, value: bytes | None, message: str
) -> None:
    with pytest.raises(MalformedRecord, match=message):
        OffsetSync.decode(key, value)


def test_store_skips_malformed_records_and_keeps_translating() -> None:
    store = OffsetSyncStore(config())
    store.handle_record(b"junk", b"junk")
    store.handle_record(OffsetSync("t", 0, 10, 5).key(), OffsetSync("t", 0, 10, 5).value())
    store.handle_record(None, None)
    assert store.malformed == 2
    assert store.translate("t", 0, 12) is None  # not read to the end yet
    store.mark_read_to_end()
    assert store.translate("t", 0, 12) == 6
    assert store.translate("t", 1, 12) is None  # no sync for that partition


def test_topic_names_and_location() -> None:
    writer = OffsetSyncWriter(config(**{"target.cluster.alias": "west"}))
    assert writer.topic.name == "mm2-offset-syncs.west.internal"
    assert writer.topic.cluster.bootstrap_servers == ("127.0.0.1:1",)  # the source, by default
    on_target = OffsetSyncWriter(config(**{"offset-syncs.topic.location": "target"}))
    assert on_target.topic.cluster.bootstrap_servers == ("127.0.0.1:2",)


# -- emit rules ----------------------------------------------------------------------------------


def flushed(writer: OffsetSyncWriter, *, promote: bool = False) -> list[tuple[int, int]]:
    sent: list[OffsetSync] = []

    def capture(syncs: list[OffsetSync]) -> list[OffsetSync]:
        sent.extend(syncs)
        return []

    writer._send = capture  # type: ignore[method-assign]
    writer.flush(promote=promote)
    return [(s.upstream_offset, s.downstream_offset) for s in sent]


def test_first_batch_after_start_emits_then_contiguous_batches_wait_for_lag() -> None:
    writer = OffsetSyncWriter(config(**{"offset.lag.max": "100"}))
    writer.promote_interval_s = 3600
    writer.record("t", 0, 500, 0)
    assert flushed(writer) == [(500, 0)]
    writer.record("t", 0, 550, 50)  # contiguous, 50 past the sync: delayed
    writer.record("t", 0, 600, 100)  # 100 - (0 + 1) = 99 < 100: delayed
    assert flushed(writer) == []
    writer.record("t", 0, 601, 101)  # 101 - 1 >= 100: due
    assert flushed(writer) == [(601, 101)]
    writer.record("t", 0, 650, 150)
    assert flushed(writer, promote=True) == [(650, 150)]  # the delayed sync, on promotion


def test_skipped_source_offsets_and_backwards_moves_emit() -> None:
    writer = OffsetSyncWriter(config(**{"offset.lag.max": "1000"}))
    writer.promote_interval_s = 3600
    writer.record("t", 0, 0, 0)
    writer.record("t", 0, 10, 10)
    assert flushed(writer) == [(0, 0)]
    writer.record("t", 0, 25, 20)  # a transaction marker / compacted gap between batches
    assert flushed(writer) == [(25, 20)]
    writer.record("t", 0, 5, 30)  # source went backwards (topic recreated)
    assert flushed(writer) == [(5, 30)]
    writer.record("t", 0, 15, 3)  # target went backwards (truncated)
    assert flushed(writer) == [(15, 3)]
    writer.record("t", 1, 7, 7)  # another partition: its own first sync
    assert flushed(writer) == [(7, 7)]


def test_newest_sync_per_partition_wins_and_failures_are_retried() -> None:
    writer = OffsetSyncWriter(config(**{"offset.lag.max": "0"}))
    writer.record("t", 0, 0, 0)
    writer.record("t", 0, 1, 1)
    writer.record("t", 0, 2, 2)
    assert [(s.upstream_offset, s.downstream_offset) for s in writer.pending()] == [(2, 2)]
    writer._send = lambda syncs: syncs  # type: ignore[method-assign]
    writer.flush()
    assert [s.upstream_offset for s in writer.pending()] == [2]  # kept for the next flush
    writer.record("t", 0, 3, 3)
    writer._send = lambda syncs: syncs  # type: ignore[method-assign]
    writer.flush()
    assert [s.upstream_offset for s in writer.pending()] == [3]  # a failed older one never overrides


# -- translation ---------------------------------------------------------------------------------


def test_translation_rule() -> None:
    syncs = PartitionSyncs()
    syncs.add(100, 10)
    syncs.add(200, 60)
    assert syncs.translate(99) is None  # before every sync: too old to translate
    assert syncs.translate(100) == 10  # exactly a sync
    assert syncs.translate(101) == 11  # past it: one past the sync's copy, never more
    assert syncs.translate(199) == 11
    assert syncs.translate(200) == 60
    assert syncs.translate(10**12) == 61


def test_backwards_syncs_clear_the_history() -> None:
    syncs = PartitionSyncs()
    syncs.add(100, 10)
    syncs.add(200, 60)
    syncs.add(50, 70)  # upstream went back: the source topic was recreated
    assert syncs.syncs() == [(50, 70)]
    syncs.add(80, 5)  # downstream went back: the target was truncated
    assert syncs.syncs() == [(80, 5)]
    assert syncs.translate(70) is None
    syncs.add(80, 9)  # same upstream, newer answer replaces
    assert syncs.syncs() == [(80, 9)]


def test_history_is_bounded_and_keeps_the_oldest() -> None:
    syncs = PartitionSyncs()
    for u in range(0, 10**6, 7):
        syncs.add(u, u // 2)
    assert len(syncs) <= MAX_SYNCS_PER_PARTITION + 1
    kept = syncs.syncs()
    assert kept[0] == (0, 0) and kept[-1][0] == (10**6 - 1) // 7 * 7
    head = kept[-1][0]
    for u in range(0, head, 997):
        used = max(s for s, _ in kept if s <= u)
        assert u - used <= (head - u) * 6 // 10 + 7, (u, used, head)


def simulate(rng: random.Random, batches: int) -> tuple[dict[int, int], list[tuple[int, int]], int]:
    """A mirror run: source offsets with gaps (compaction, markers, aborted batches dropped),
    copied batch by batch; returns source offset -> target offset of every copied record, the
    (first upstream, first downstream) of each batch, and the source end offset."""
    copies: dict[int, int] = {}
    batch_starts: list[tuple[int, int]] = []
    up, down = rng.randrange(0, 1000), 0
    for _ in range(batches):
        offsets: list[int] = []
        for _ in range(rng.randrange(1, 20)):
            offsets.append(up)
            up += 1 if rng.random() < 0.8 else rng.randrange(2, 6)  # gaps inside a batch
        base = offsets[0]
        batch_starts.append((base, down))
        for o in offsets:  # pass-through keeps offset deltas within the batch
            copies[o] = down + (o - base)
        down += offsets[-1] - base + 1
        if rng.random() < 0.3:
            up += rng.randrange(1, 4)  # a marker or compacted records between batches
    return copies, batch_starts, up


@pytest.mark.parametrize("seed", range(25))
@pytest.mark.parametrize("lag_max", [0, 1, 10, 100])
def test_moved_groups_never_skip_a_record(seed: int, lag_max: int) -> None:
    """Exhaustive over every committed position: the translated offset is at or before the copy
    of the first record the group has not read, and re-reads only since the sync used."""
    rng = random.Random(seed)
    copies, batch_starts, end = simulate(rng, 60)
    writer = OffsetSyncWriter(config(**{"offset.lag.max": str(lag_max)}))
    writer.promote_interval_s = 3600
    store = OffsetSyncStore(config())
    written: list[tuple[int, int]] = []
    restart_at = len(batch_starts) // 2
    for i, (u, d) in enumerate(batch_starts):
        if i == restart_at:  # a mirror restart: a new writer, whose first batch emits again
            writer = OffsetSyncWriter(config(**{"offset.lag.max": str(lag_max)}))
            writer.promote_interval_s = 3600
        writer.record("t", 0, u, d)
        if rng.random() < 0.5:
            written += flushed(writer, promote=rng.random() < 0.2)
    written += flushed(writer, promote=True)
    for su, sd in written:
        store.handle_record(OffsetSync("t", 0, su, sd).key(), OffsetSync("t", 0, su, sd).value())
    store.mark_read_to_end()
    copied = sorted(copies)
    target_end = max(copies.values()) + 1
    oldest_sync = min(su for su, _ in written)
    assert store.translate("t", 0, oldest_sync - 1) is None
    for committed in range(oldest_sync, end + 1):
        translated = store.translate("t", 0, committed)
        assert translated is not None
        i = bisect.bisect_left(copied, committed)
        next_copy = copies[copied[i]] if i < len(copied) else target_end
        assert translated <= next_copy, (committed, translated, next_copy)
        assert translated >= 0


def test_translation_is_exact_at_syncs_and_bounded_by_lag_max() -> None:
    """With contiguous offsets and offset.lag.max = 10, a group near the end re-reads at most a sync
    interval (10 records and a batch); further back, at most 0.6 times its distance more."""
    writer = OffsetSyncWriter(config(**{"offset.lag.max": "10"}))
    writer.promote_interval_s = 3600
    store = OffsetSyncStore(config())
    for i in range(0, 1000, 5):  # batches of 5 records, source offset i -> target i + 3
        writer.record("t", 0, i, i + 3)
        for su, sd in flushed(writer):
            store.handle_record(OffsetSync("t", 0, su, sd).key(), OffsetSync("t", 0, su, sd).value())
    store.mark_read_to_end()
    head = 995
    for committed in range(0, 1000):
        translated = store.translate("t", 0, committed)
        assert translated is not None
        rereads = committed + 3 - translated
        # syncs every 15 records (10 + a batch); older ones thinned out with the distance
        assert 0 <= rereads <= (head - committed) * 6 // 10 + 15, (committed, translated)
        if committed >= 980:
            assert rereads <= 15
