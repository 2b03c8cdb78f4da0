"""log_validator.check_produce_batch and check_record_keys: Kafka's Produce rules, their codes,
messages and order."""

from __future__ import annotations

import struct

import pytest

from shardbroker.config.log_config import LogConfig
from shardbroker.protocol.compression import CompressionType
from shardbroker.protocol.crc import crc32c
from shardbroker.protocol.errors import ErrorCode
from shardbroker.protocol.record_batch_builder import RecordBatchBuilder
from shardbroker.protocol.record_batch_header import HEADER
from shardbroker.storage.errors import RecordValidationError, StorageError
from shardbroker.storage.log_validator import _COLUMNS_MIN_RECORDS, check_produce_batch, check_record_keys
from tests.unit.storage_batches import build_batch


def refusal(records: bytes | bytearray | None) -> tuple[int, str]:
    with pytest.raises(StorageError) as err:
        check_produce_batch(records)
    return err.value.error_code, str(err.value)


def test_one_whole_v2_batch_passes_and_its_header_comes_back() -> None:
    b = build_batch(3, producer_id=7, producer_epoch=1, base_sequence=0, attributes=4)  # lz4
    assert check_produce_batch(b) == HEADER.unpack_from(b, 0)
    assert check_produce_batch(bytes(b))[12] == 3


def test_framing_and_magic() -> None:
    good = build_batch()
    assert refusal(None) == (ErrorCode.INVALID_RECORD, "null records")
    assert refusal(b"") == (ErrorCode.INVALID_RECORD, "0 bytes cannot hold a record batch")
    assert refusal(good[:40]) == (ErrorCode.CORRUPT_MESSAGE, "40 bytes cannot hold a record batch")
    short_v1 = bytearray(good[:40])
    short_v1[16] = 1
    assert refusal(short_v1) == (
        ErrorCode.UNSUPPORTED_FOR_MESSAGE_FORMAT,
        "message format v1 is not supported: use record batch v2",
    )
    v0 = bytearray(good)
    v0[16] = 0
    assert refusal(v0) == (
        ErrorCode.UNSUPPORTED_FOR_MESSAGE_FORMAT,
        "message format v0 is not supported: use record batch v2",
    )
    v9 = bytearray(good)
    v9[16] = 9
    assert refusal(v9) == (ErrorCode.CORRUPT_MESSAGE, "invalid magic 9")
    assert refusal(good + good) == (
        ErrorCode.INVALID_RECORD,
        "Produce v3+ must carry exactly one record batch per partition",
    )
    n = len(good)
    assert refusal(good[:-3]) == (
        ErrorCode.CORRUPT_MESSAGE,
        f"batch declares {n} bytes but {n - 3} were sent",
    )


def test_codecs_5_to_7_are_refused_and_transactional_batches_accepted() -> None:
    assert refusal(build_batch(attributes=5)) == (
        ErrorCode.UNSUPPORTED_COMPRESSION_TYPE,
        "unknown compression type id 5",
    )
    # Kafka before KIP-890 part 2: the partition's producer state opens the transaction.
    assert check_produce_batch(build_batch(attributes=0x10))[5] == 0x10
    assert check_produce_batch(build_batch(attributes=0x14))[5] == 0x14
    # A bad codec is refused whatever the transactional bit; magic is named first.
    assert refusal(build_batch(attributes=0x17))[0] == ErrorCode.UNSUPPORTED_COMPRESSION_TYPE
    assert refusal(build_batch(attributes=0x17, magic=1))[0] == ErrorCode.UNSUPPORTED_FOR_MESSAGE_FORMAT


# ---- check_record_keys: a compacted topic's records need keys -----------------------------------

COMPACT = LogConfig(cleanup_policy=frozenset({"compact"}))
WHY = "Compacted topic cannot accept message without key in topic partition logs-3"


def keyed_batch(
    keys: list[bytes | None], codec: CompressionType = CompressionType.NONE, value: bytes = b"v" * 20
) -> bytearray:
    builder = RecordBatchBuilder(compression=codec)
    for k in keys:
        builder.append(value, key=k, timestamp=1_700_000_000_000)
    return bytearray(builder.build())


def key_refusal(records: bytearray, cfg: LogConfig = COMPACT) -> StorageError:
    with pytest.raises(StorageError) as err:
        check_record_keys(records, check_produce_batch(records), cfg, "logs", 3)
    return err.value


@pytest.mark.parametrize("codec", list(CompressionType))
def test_keyless_records_are_named_by_their_batch_index(codec: CompressionType) -> None:
    records = keyed_batch([b"a", None, b"c", None, b"e"], codec)
    err = key_refusal(records)
    assert isinstance(err, RecordValidationError)
    assert err.error_code == ErrorCode.INVALID_RECORD
    assert err.record_errors == [(1, WHY), (3, WHY)]
    # Kafka's LogValidator.processRecordErrors, word for word (RecordError's toString, at most 3)
    assert str(err) == (
        "One or more records have been rejected due to 2 record errors in total, and only showing "
        f"the first three errors at most: [RecordError(batchIndex=1, message='{WHY}'), "
        f"RecordError(batchIndex=3, message='{WHY}')]"
    )
    keyed = keyed_batch([b"a", b"", b"c"], codec)  # an empty key is a key
    check_record_keys(keyed, check_produce_batch(keyed), COMPACT, "logs", 3)


def test_the_message_shows_three_record_errors_and_the_list_has_them_all() -> None:
    err = key_refusal(keyed_batch([None] * 5))
    assert isinstance(err, RecordValidationError)
    assert [i for i, _ in err.record_errors] == [0, 1, 2, 3, 4]
    assert str(err).count("RecordError(") == 3 and "due to 5 record errors" in str(err)


@pytest.mark.parametrize("codec", [CompressionType.NONE, CompressionType.ZSTD])
def test_large_batches_take_the_vectorised_decoder_with_the_same_verdict(codec: CompressionType) -> None:
    # Records of varied sizes (a varint length boundary at 64 bytes) on both sides of the cut-over.
    for n in (_COLUMNS_MIN_RECORDS - 1, _COLUMNS_MIN_RECORDS + 5):
        keys = [None if i % 997 in (1, 500) else b"k" * (i % 70) for i in range(n)]
        err = key_refusal(keyed_batch(keys, codec, value=b"x" * 40))
        assert isinstance(err, RecordValidationError)
        assert [i for i, _ in err.record_errors] == [i for i, k in enumerate(keys) if k is None]


def test_damage_is_answered_by_the_batch_checks_before_the_key_check() -> None:
    bad_crc = keyed_batch([b"a", None])
    bad_crc[-1] ^= 1
    assert key_refusal(bad_crc).error_code == ErrorCode.CORRUPT_MESSAGE
    too_large = keyed_batch([None] * 20)
    cfg = LogConfig(cleanup_policy=frozenset({"compact"}), max_message_bytes=100)
    assert key_refusal(too_large, cfg).error_code == ErrorCode.MESSAGE_TOO_LARGE


def test_records_that_do_not_decode_are_corrupt() -> None:
    records = keyed_batch([b"a", b"b"])
    records += b"\x00"  # a byte after the last record, in the CRC and the length
    struct.pack_into(">i", records, 8, len(records) - 12)
    struct.pack_into(">I", records, 17, crc32c(records[21:]))
    err = key_refusal(records)
    assert err.error_code == ErrorCode.CORRUPT_MESSAGE
    assert "2 records take" in str(err)


def test_control_batches_are_not_key_checked() -> None:
    # Markers have keys; a keyless control batch shows the check is skipped, not passed (the log
    # refuses a client's control batch with its own message).
    builder = RecordBatchBuilder(is_control=True, is_transactional=True, producer_id=1, producer_epoch=0)
    builder.append(b"\x00\x00\x00\x00\x00\x00", key=None)
    control = bytearray(builder.build())
    check_record_keys(control, check_produce_batch(control), COMPACT, "logs", 3)
