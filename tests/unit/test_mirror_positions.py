"""mirror_positions: the commit metadata and the restart's record count over source batches."""

from __future__ import annotations

from shardbroker.mirror.batch_rewrite import select_batches
from shardbroker.mirror.mirror_positions import (
    decode_metadata,
    encode_metadata,
    positions_group,
    skip_records,
)
from shardbroker.protocol.control_records import ControlRecordType, build_control_batch
from shardbroker.protocol.record_batch_builder import RecordBatchBuilder


def _batch(base: int, n: int) -> bytes:
    b = RecordBatchBuilder(base_offset=base)
    for i in range(n):
        b.append(b"v%d" % i, timestamp=1)
    return b.build()


def test_metadata_round_trip_and_foreign_metadata() -> None:
    assert decode_metadata(encode_metadata(1234)) == 1234
    for foreign in (None, "", "x", "[1]", '{"target": -1}', '{"target": "7"}', '{"other": 1}'):
        assert decode_metadata(foreign) is None
    assert positions_group("east") == "shardbroker-mirror.east"


def test_skip_counts_records_over_gaps() -> None:
    marker = build_control_batch(
        ControlRecordType.COMMIT, producer_id=1, producer_epoch=0, coordinator_epoch=0, base_offset=10
    )
    sel = select_batches(_batch(0, 4) + _batch(4, 6) + marker + _batch(11, 5), 0)
    # the target holds the first two batches (10 records): resume after them
    assert skip_records(sel, 10) == (10, 0, True)
    # the target holds all three: the marker is passed over too
    assert skip_records(sel, 15) == (16, 0, True)
    # nothing mirrored past the commit
    assert skip_records(sel, 0) == (0, 0, True)
    # more than this fetch holds: fetch on from its end
    assert skip_records(sel, 20) == (16, 5, True)
    # a count that ends inside a batch: after the batch (never a duplicate), flagged
    assert skip_records(sel, 7) == (10, 0, False)
