"""log_validator.check_produce_batch: Kafka's Produce rules, their codes, messages and order."""

from __future__ import annotations

import pytest

from shardbroker.protocol.errors import ErrorCode
from shardbroker.protocol.record_batch_header import HEADER
from shardbroker.storage.errors import StorageError
from shardbroker.storage.log_validator import check_produce_batch
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
