"""Typed storage errors, each carrying the Kafka error code the broker answers with.

No byte layout here; codes are from Kafka's ``Errors`` enum (clients/.../protocol/Errors.java).
The broker maps ``exc.error_code`` straight into the response, so the storage layer decides the
code where it knows why it refused (h11's ``error_status_hint`` idea).
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "CorruptRecordError",
    "DuplicateSequenceError",
    "InvalidProducerEpochError",
    "InvalidRecordError",
    "InvalidTimestampError",
    "InvalidTxnStateError",
    "KafkaStorageError",
    "LogOffsetOutOfRangeError",
    "OutOfOrderSequenceError",
    "RecordBatchTooLargeError",
    "RecordTooLargeError",
    "RecordValidationError",
    "StorageError",
    "TransactionCoordinatorFencedError",
    "UnsupportedCompressionTypeError",
    "UnsupportedForMessageFormatError",
]


class StorageError(Exception):
    """Base of every error the storage layer raises on purpose."""

    error_code: ClassVar[int] = -1  # UNKNOWN_SERVER_ERROR
    error_name: ClassVar[str] = "UNKNOWN_SERVER_ERROR"


class LogOffsetOutOfRangeError(StorageError):
    """Read or ListOffsets outside [log start offset, log end offset]."""

    error_code = 1
    error_name = "OFFSET_OUT_OF_RANGE"


class CorruptRecordError(StorageError):
    """Bad CRC, torn or malformed batch framing."""

    error_code = 2
    error_name = "CORRUPT_MESSAGE"


class RecordTooLargeError(StorageError):
    """A batch larger than ``max.message.bytes``."""

    error_code = 10
    error_name = "MESSAGE_TOO_LARGE"


class RecordBatchTooLargeError(StorageError):
    """An append larger than ``segment.bytes``: it could never fit in a segment."""

    error_code = 18
    error_name = "RECORD_LIST_TOO_LARGE"


class InvalidTimestampError(StorageError):
    error_code = 32
    error_name = "INVALID_TIMESTAMP"


class UnsupportedForMessageFormatError(StorageError):
    """Magic other than 2: this log stores record batch v2 only."""

    error_code = 43
    error_name = "UNSUPPORTED_FOR_MESSAGE_FORMAT"


class OutOfOrderSequenceError(StorageError):
    error_code = 45
    error_name = "OUT_OF_ORDER_SEQUENCE_NUMBER"


class DuplicateSequenceError(StorageError):
    """Raised internally only: duplicates are answered with the original offsets, not an error."""

    error_code = 46
    error_name = "DUPLICATE_SEQUENCE_NUMBER"


class InvalidProducerEpochError(StorageError):
    error_code = 47
    error_name = "INVALID_PRODUCER_EPOCH"


class InvalidTxnStateError(StorageError):
    """A non-transactional batch from a producer with a transaction open in this partition (Kafka's
    ProducerAppendInfo)."""

    error_code = 48
    error_name = "INVALID_TXN_STATE"


class TransactionCoordinatorFencedError(StorageError):
    """A transaction marker from a coordinator epoch older than one this producer already had."""

    error_code = 52
    error_name = "TRANSACTION_COORDINATOR_FENCED"


class KafkaStorageError(StorageError):
    """The disk failed us (ENOSPC, EIO...): the log is still readable up to its last good batch."""

    error_code = 56
    error_name = "KAFKA_STORAGE_ERROR"


class UnsupportedCompressionTypeError(StorageError):
    """Compression codec ids 5-7 (0-4: none, gzip, snappy, lz4, zstd)."""

    error_code = 76
    error_name = "UNSUPPORTED_COMPRESSION_TYPE"


class InvalidRecordError(StorageError):
    """Header fields that contradict each other (counts, offset deltas, sequences)."""

    error_code = 87
    error_name = "INVALID_RECORD"


class RecordValidationError(InvalidRecordError):
    """Records of a sound batch that break a rule of the topic, e.g. a null key on a compacted
    topic (Kafka's RecordValidationException): the whole batch is refused and ``record_errors``
    names each record, ``(index in the batch, why)``, for Produce v8+'s ``record_errors`` (KIP-467),
    so a client can tell which of its records failed the batch."""

    def __init__(self, message: str, record_errors: list[tuple[int, str]]) -> None:
        super().__init__(message)
        self.record_errors = record_errors
