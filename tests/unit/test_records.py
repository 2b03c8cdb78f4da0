"""RecordBatch view, builder, varints, control batches, in-place patches; kafka-python interop."""

from __future__ import annotations

import struct
import subprocess
import sys
import types
import warnings
from collections.abc import Iterator
from pathlib import Path

import cramjam
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shardbroker.protocol.compression import (
    XERIAL_MAGIC,
    CompressionError,
    CompressionType,
    compress,
    decompress,
)
from shardbroker.protocol.control_records import ControlRecordType, build_control_batch, control_record
from shardbroker.protocol.crc import crc32c, crc32c_python
from shardbroker.protocol.errors import ErrorCode, ProtocolError
from shardbroker.protocol.primitives import (
    VarintRangeError,
    decode_uvarint,
    decode_varint,
    decode_varlong,
    encode_uvarint,
    encode_varint,
    encode_varlong,
    varint_size,
)
from shardbroker.protocol.record_batch import (
    InvalidRecordBatch,
    RecordBatch,
    assign_offsets,
    iter_batches,
    set_log_append_time,
    split_batches,
)
from shardbroker.protocol.record_batch_builder import RecordBatchBuilder
from shardbroker.protocol.record_batch_header import TimestampType

with warnings.catch_warnings():
    # kafka-python 3.0 loads its schemas with importlib.resources.read_text (deprecated in 3.11)
    warnings.simplefilter("ignore", DeprecationWarning)
    import kafka.codec
    import kafka.record.default_records as kdr
    from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

# ---- byte-level fixture --------------------------------------------------------------------------

# One record, key b"k", value b"v", timestamp 1000, no producer: every byte written out by hand.
# length 8 (zig-zag 0x10) | attributes 0 | timestampDelta 0 | offsetDelta 0 | keyLength 1 (0x02) "k"
# | valueLength 1 (0x02) "v" | headersCount 0
RECORD = bytes.fromhex("10" + "00" + "00" + "00" + "02" + "6b" + "02" + "76" + "00")
HEADER_AFTER_CRC = bytes.fromhex(
    "0000"  # attributes
    "00000000"  # lastOffsetDelta
    "00000000000003e8"  # baseTimestamp 1000
    "00000000000003e8"  # maxTimestamp 1000
    "ffffffffffffffff"  # producerId -1
    "ffff"  # producerEpoch -1
    "ffffffff"  # baseSequence -1
    "00000001"  # recordsCount
)
FIXTURE_CRC = crc32c_python(HEADER_AFTER_CRC + RECORD)  # the slow reference, not the code under test
FIXTURE = (
    bytes.fromhex("0000000000000000" + "0000003a" + "ffffffff" + "02")  # offset, length 58, epoch, magic
    + struct.pack(">I", FIXTURE_CRC)
    + HEADER_AFTER_CRC
    + RECORD
)


def test_fixture_is_what_the_builder_writes() -> None:
    b = RecordBatchBuilder()
    b.append(b"v", key=b"k", timestamp=1000)
    assert b.build() == FIXTURE
    assert len(FIXTURE) == 12 + 0x3A


def test_fixture_parses() -> None:
    rb = RecordBatch(FIXTURE)
    rb.validate()
    assert rb.base_offset == 0 and rb.batch_length == 0x3A and rb.size == len(FIXTURE)
    assert rb.partition_leader_epoch == -1 and rb.magic == 2 and rb.crc == FIXTURE_CRC
    assert rb.attributes == 0 and not rb.is_compressed and rb.compression_type == CompressionType.NONE
    assert rb.timestamp_type == TimestampType.CREATE_TIME
    assert not rb.is_transactional and not rb.is_control and not rb.has_delete_horizon
    assert rb.last_offset_delta == 0 and rb.last_offset == 0 and rb.next_offset == 1
    assert rb.base_timestamp == rb.max_timestamp == 1000
    assert rb.producer_id == -1 and rb.producer_epoch == -1 and rb.base_sequence == -1
    assert rb.last_sequence == -1
    assert rb.records_count == 1
    assert rb.header() == (0, 0x3A, -1, 2, FIXTURE_CRC, 0, 0, 1000, 1000, -1, -1, -1, 1)
    (rec,) = list(rb.records())
    assert rec.offset == 0 and rec.timestamp == 1000 and rec.attributes == 0
    assert isinstance(rec.key, memoryview) and bytes(rec.key) == b"k"
    assert isinstance(rec.value, memoryview) and bytes(rec.value) == b"v"
    assert rec.headers == ()
    # zero copy: the value is a view into the caller's buffer
    buf = bytearray(FIXTURE)
    (rec,) = list(RecordBatch(buf).records())
    buf[-2] = ord("w")
    assert rec.value is not None and bytes(rec.value) == b"w"


def test_fixture_parses_in_kafka_python() -> None:
    kb = DefaultRecordBatch(FIXTURE)
    assert kb.validate_crc()
    (m,) = list(kb)
    assert (m.offset, m.timestamp, m.key, m.value, m.headers) == (0, 1000, b"k", b"v", [])


# ---- varints -------------------------------------------------------------------------------------

VARINTS = [
    (0, "00"),
    (-1, "01"),
    (1, "02"),
    (63, "7e"),
    (-64, "7f"),
    (64, "8001"),
    (300, "d804"),
    (-8192, "ff7f"),
    (8192, "808001"),
    (2**31 - 1, "feffffff0f"),
    (-(2**31), "ffffffff0f"),
]


@pytest.mark.parametrize("value,hexed", VARINTS)
def test_varint_known_encodings(value: int, hexed: str) -> None:
    raw = bytes.fromhex(hexed)
    assert encode_varint(value) == raw
    assert encode_varlong(value) == raw
    assert decode_varint(raw, 0) == (value, len(raw))
    assert decode_varlong(raw, 0) == (value, len(raw))
    assert varint_size(value) == len(raw)


def test_varlong_extremes_and_uvarint() -> None:
    assert encode_varlong(-(2**63)) == b"\xff" * 9 + b"\x01"
    assert decode_varlong(b"\xff" * 9 + b"\x01", 0) == (-(2**63), 10)
    assert decode_varlong(b"\xfe" + b"\xff" * 8 + b"\x01", 0) == (2**63 - 1, 10)
    assert encode_uvarint(0) == b"\x00" and encode_uvarint(300) == b"\xac\x02"
    assert decode_uvarint(b"\xac\x02", 0) == (300, 2)
    assert decode_uvarint(b"\xff\xff\xff\xff\x0f", 0) == (2**32 - 1, 5)
    # out of range: a ValueError for the builder's callers, a ProtocolError for the codec's
    for encoder, value in ((encode_varint, 2**31), (encode_varlong, 2**63), (encode_uvarint, -1)):
        with pytest.raises(VarintRangeError) as info:
            encoder(value)
        assert isinstance(info.value, ValueError) and isinstance(info.value, ProtocolError)


MALFORMED_VARINTS = [
    (b"", decode_varint),
    (b"\x80", decode_varint),
    (b"\xff\xff\xff\xff\xff\x01", decode_varint),  # 6 bytes
    (b"\xff\xff\xff\xff\x7f", decode_varint),  # > 32 bits
    (b"\xff" * 10 + b"\x01", decode_varlong),  # 11 bytes
    (b"\xff" * 9 + b"\x7f", decode_varlong),  # > 64 bits
    (b"\x80\x80", decode_uvarint),
]


@pytest.mark.parametrize("raw,decoder", MALFORMED_VARINTS)
def test_varint_malformed(raw: bytes, decoder: object) -> None:
    with pytest.raises(ProtocolError) as info:
        decoder(raw, 0)  # type: ignore[operator]
    assert info.value.error_code == ErrorCode.CORRUPT_MESSAGE


@pytest.mark.parametrize("raw,decoder", [c for c in MALFORMED_VARINTS if c[1] is not decode_uvarint])
def test_malformed_varint_in_a_record_is_an_invalid_record_batch(raw: bytes, decoder: object) -> None:
    """The primitives raise ProtocolError; record decoding answers with its own typed error."""
    if decoder is decode_varlong:  # as the timestampDelta of a record that holds just it
        body = b"\x00" + raw
        records = encode_varint(len(body)) + body
    else:  # as the record length
        records = raw
    buf = bytearray(built(1)[:61] + records)
    struct.pack_into(">i", buf, 8, len(buf) - 12)
    fix_crc(buf)
    with pytest.raises(InvalidRecordBatch) as info:
        list(RecordBatch(buf).records())
    assert info.value.error_code == ErrorCode.CORRUPT_MESSAGE
    expect(buf, ErrorCode.CORRUPT_MESSAGE)


@given(st.integers(-(2**31), 2**31 - 1), st.binary(max_size=3))
def test_varint_roundtrip(value: int, suffix: bytes) -> None:
    raw = encode_varint(value)
    assert decode_varint(raw + suffix, 0) == (value, len(raw))
    assert varint_size(value) == len(raw)


@given(st.integers(-(2**63), 2**63 - 1))
def test_varlong_roundtrip(value: int) -> None:
    raw = encode_varlong(value)
    assert decode_varlong(b"\x00" + raw, 1) == (value, len(raw) + 1)


# ---- kafka-python interop ------------------------------------------------------------------------


@pytest.fixture
def kafka_python_codecs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let kafka-python use cramjam for snappy/lz4/zstd (its python-snappy/lz4/zstandard deps are
    not installed). For snappy this keeps kafka-python's own xerial framing code; for lz4 and zstd
    the frame is cramjam's on both sides, so those cases test the batch layout, not the codec."""
    snappy_shim = types.SimpleNamespace(
        compress=lambda b: bytes(cramjam.snappy.compress_raw(b)),
        decompress=lambda b: bytes(cramjam.snappy.decompress_raw(b)),
    )
    monkeypatch.setattr(kafka.codec, "snappy", snappy_shim)
    monkeypatch.setattr(kafka.codec, "lz4", types.SimpleNamespace())
    monkeypatch.setattr(kafka.codec, "zstd", types.SimpleNamespace())
    monkeypatch.setattr(kdr, "lz4_encode", lambda b: bytes(cramjam.lz4.compress(b)))
    monkeypatch.setattr(kdr, "lz4_decode", lambda b: bytes(cramjam.lz4.decompress(b)))
    monkeypatch.setattr(kdr, "zstd_encode", lambda b: bytes(cramjam.zstd.compress(b)))
    monkeypatch.setattr(kdr, "zstd_decode", lambda b: bytes(cramjam.zstd.decompress(b)))


def sample_records(
    n: int,
) -> Iterator[tuple[int, int, bytes | None, bytes | None, list[tuple[str, bytes | None]]]]:
    for i in range(n):
        key = None if i % 3 == 0 else f"key-{i}".encode()
        value = None if i == 4 else (f"value {i} " * (i * 7 + 1)).encode()
        headers: list[tuple[str, bytes | None]] = [("trace", b"abc"), ("ünï", None)] if i % 4 == 1 else []
        ts = 1_700_000_000_000 + (i * 37 if i % 2 else -i * 11)
        yield i, ts, key, value, headers


@pytest.mark.parametrize("codec", list(CompressionType))
@pytest.mark.parametrize("transactional", [False, True])
def test_parse_kafka_python_batches(
    kafka_python_codecs: None, codec: CompressionType, transactional: bool
) -> None:
    kb = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=int(codec),
        is_transactional=int(transactional),
        producer_id=4242,
        producer_epoch=3,
        base_sequence=2**31 - 5,  # last sequence wraps
        batch_size=1 << 20,
    )
    expected = list(sample_records(12))
    for i, ts, key, value, headers in expected:
        kb.append(i, timestamp=ts, key=key, value=value, headers=headers)
    raw = bytes(kb.build())
    if codec == CompressionType.SNAPPY:
        assert raw[61:].startswith(XERIAL_MAGIC)  # kafka-python writes xerial framing
    rb = RecordBatch(raw)
    rb.validate()
    assert rb.compression_type == codec and rb.is_compressed == (codec != CompressionType.NONE)
    assert rb.is_transactional == transactional
    assert rb.producer_id == 4242 and rb.producer_epoch == 3 and rb.base_sequence == 2**31 - 5
    assert rb.last_sequence == 6  # (2**31 - 5) + 11 wrapped past int32 max
    assert rb.records_count == 12 and rb.last_offset_delta == 11
    assert rb.base_timestamp == expected[0][1]
    assert rb.max_timestamp == max(e[1] for e in expected)
    got = [
        (
            r.offset,
            r.timestamp,
            None if r.key is None else bytes(r.key),
            None if r.value is None else bytes(r.value),
            [(h.key, None if h.value is None else bytes(h.value)) for h in r.headers],
        )
        for r in rb.records()
    ]
    assert got == expected


@pytest.mark.parametrize("codec", list(CompressionType))
def test_kafka_python_parses_our_batches(kafka_python_codecs: None, codec: CompressionType) -> None:
    b = RecordBatchBuilder(
        compression=codec, producer_id=77, producer_epoch=1, base_sequence=10, is_transactional=True
    )
    expected = list(sample_records(9))
    for _, ts, key, value, headers in expected:
        b.append(value, key=key, timestamp=ts, headers=headers)
    raw = b.build()
    kb = DefaultRecordBatch(raw)
    assert kb.validate_crc()
    assert kb.compression_type == int(codec)
    assert kb.producer_id == 77 and kb.producer_epoch == 1 and kb.base_sequence == 10
    assert kb.is_transactional and not kb.is_control_batch
    got = [(m.offset, m.timestamp, m.key, m.value, [tuple(h) for h in m.headers]) for m in kb]
    assert got == [(i, ts, k, v, h) for i, ts, k, v, h in expected]


def test_kafka_python_parses_our_batches_without_shims() -> None:
    """The codecs kafka-python can use out of the box here (none, gzip)."""
    for codec in (CompressionType.NONE, CompressionType.GZIP):
        b = RecordBatchBuilder(compression=codec)
        b.append(b"hello", key=b"k", timestamp=5)
        (m,) = list(DefaultRecordBatch(b.build()))
        assert (m.key, m.value, m.timestamp) == (b"k", b"hello", 5)


def test_snappy_raw_and_xerial_are_both_read() -> None:
    payload = b"".join(f"record {i};".encode() for i in range(10000))
    xerial = compress(CompressionType.SNAPPY, payload)
    assert xerial.startswith(XERIAL_MAGIC)
    raw = bytes(cramjam.snappy.compress_raw(payload))
    assert decompress(CompressionType.SNAPPY, xerial) == payload
    assert decompress(CompressionType.SNAPPY, raw) == payload


def test_lz4_frames_have_independent_blocks() -> None:
    """Kafka's Java LZ4 reader cannot follow linked blocks: FLG bit 5 (B.Indep) must be set."""
    payload = bytes(range(256)) * 2000  # several 64 KiB blocks
    frame = compress(CompressionType.LZ4, payload)
    assert frame[:4] == b"\x04\x22\x4d\x18"
    assert frame[4] & 0x20
    assert decompress(CompressionType.LZ4, frame) == payload


# ---- control batches -----------------------------------------------------------------------------


@pytest.mark.parametrize("ctype", list(ControlRecordType))
def test_control_batch(ctype: ControlRecordType) -> None:
    raw = build_control_batch(ctype, producer_id=9, producer_epoch=2, coordinator_epoch=17, timestamp=123)
    rb = RecordBatch(raw)
    rb.validate()
    assert rb.is_control and rb.is_transactional and rb.base_sequence == -1
    assert rb.producer_id == 9 and rb.producer_epoch == 2 and rb.records_count == 1
    cr = control_record(rb)
    assert (cr.type, cr.coordinator_epoch, cr.key_version, cr.value_version) == (ctype, 17, 0, 0)
    (rec,) = list(rb.records())
    assert rec.key is not None and bytes(rec.key) == struct.pack(">hh", 0, ctype)
    assert rec.value is not None and bytes(rec.value) == struct.pack(">hi", 0, 17)
    kb = DefaultRecordBatch(raw)
    assert kb.is_control_batch
    (km,) = list(kb)
    assert km.type == ctype


def test_control_record_of_a_data_batch_is_refused() -> None:
    with pytest.raises(InvalidRecordBatch) as info:
        control_record(RecordBatch(FIXTURE))
    assert info.value.error_code == ErrorCode.INVALID_RECORD


# ---- the broker's patches ------------------------------------------------------------------------


def test_assign_offsets_keeps_crc_valid() -> None:
    b = RecordBatchBuilder(compression=CompressionType.GZIP)
    for i in range(5):
        b.append(b"x" * i, timestamp=100 + i)
    raw = b.build()
    log = bytearray(b"\xee" * 10 + raw + b"\xee" * 3)
    crc_before = RecordBatch(raw).crc
    assign_offsets(log, 10, 1_000_000, 7)
    rb = RecordBatch(memoryview(log)[10 : 10 + len(raw)])
    rb.validate()
    assert rb.crc == crc_before and rb.is_crc_valid()
    assert rb.base_offset == 1_000_000 and rb.partition_leader_epoch == 7
    assert [r.offset for r in rb.records()] == list(range(1_000_000, 1_000_005))
    assert log[:10] == b"\xee" * 10 and log[-3:] == b"\xee" * 3
    assert bytes(log[10 + 21 : 10 + len(raw)]) == raw[21:]  # CRC-covered bytes untouched
    # a writable memoryview works too
    assign_offsets(memoryview(log), 10, 5, 1)
    assert RecordBatch(memoryview(log)[10 : 10 + len(raw)]).base_offset == 5


def test_set_log_append_time_recomputes_crc() -> None:
    b = RecordBatchBuilder()
    for i in range(3):
        b.append(b"v", timestamp=1000 + i)
    raw = bytearray(b.build())
    stale = bytearray(raw)
    struct.pack_into(">q", stale, 35, 99_999)  # what a naive in-place patch would do
    with pytest.raises(InvalidRecordBatch):
        RecordBatch(stale).validate()
    set_log_append_time(raw, 0, 99_999)
    rb = RecordBatch(raw)
    rb.validate()
    assert rb.timestamp_type == TimestampType.LOG_APPEND_TIME and rb.max_timestamp == 99_999
    assert [r.timestamp for r in rb.records()] == [99_999] * 3  # readers use maxTimestamp
    (m, *_) = list(DefaultRecordBatch(bytes(raw)))
    assert m.timestamp == 99_999 and m.timestamp_type == 1
    with pytest.raises(InvalidRecordBatch):
        set_log_append_time(bytearray(raw[:-1]), 0, 1)


# ---- validation errors ---------------------------------------------------------------------------


def built(n: int = 3, codec: CompressionType = CompressionType.NONE) -> bytearray:
    b = RecordBatchBuilder(compression=codec)
    for i in range(n):
        b.append(b"value %d" % i, key=b"k", timestamp=10 + i)
    return bytearray(b.build())


def fix_crc(buf: bytearray) -> bytearray:
    struct.pack_into(">I", buf, 17, crc32c(bytes(buf[21:])))
    return buf


def expect(buf: bytes | bytearray, code: ErrorCode, **kw: bool) -> None:
    with pytest.raises(InvalidRecordBatch) as info:
        RecordBatch(buf).validate(**kw)
    assert info.value.error_code == code
    assert isinstance(info.value, ProtocolError)


def test_validate_errors() -> None:
    good = built()
    RecordBatch(good).validate()
    expect(good[:60], ErrorCode.CORRUPT_MESSAGE)  # shorter than a header
    expect(good[:-1], ErrorCode.CORRUPT_MESSAGE)  # torn
    expect(good + b"\x00", ErrorCode.CORRUPT_MESSAGE)  # length mismatch
    flipped = bytearray(good)
    flipped[-1] ^= 1
    expect(flipped, ErrorCode.CORRUPT_MESSAGE)  # bad CRC
    v1 = bytearray(good)
    v1[16] = 1
    expect(v1, ErrorCode.UNSUPPORTED_FOR_MESSAGE_FORMAT)
    v9 = bytearray(good)
    v9[16] = 9
    expect(v9, ErrorCode.CORRUPT_MESSAGE)
    codec7 = bytearray(good)
    codec7[22] |= 7
    expect(fix_crc(codec7), ErrorCode.UNSUPPORTED_COMPRESSION_TYPE)
    short_len = bytearray(good)
    struct.pack_into(">i", short_len, 8, 10)
    expect(short_len, ErrorCode.CORRUPT_MESSAGE)
    # count says 4, there are 3 records
    more = bytearray(good)
    struct.pack_into(">i", more, 57, 4)
    struct.pack_into(">i", more, 23, 3)
    expect(fix_crc(more), ErrorCode.CORRUPT_MESSAGE)
    # count says 2, a record is left over
    fewer = bytearray(good)
    struct.pack_into(">i", fewer, 57, 2)
    struct.pack_into(">i", fewer, 23, 1)
    expect(fix_crc(fewer), ErrorCode.CORRUPT_MESSAGE)
    # lastOffsetDelta inconsistent with the count: a produce rule, not corruption
    lod = bytearray(good)
    struct.pack_into(">i", lod, 23, 5)
    expect(fix_crc(lod), ErrorCode.INVALID_RECORD)
    RecordBatch(lod).validate(produce=False)
    # negative count
    neg = bytearray(good)
    struct.pack_into(">i", neg, 57, -1)
    expect(fix_crc(neg), ErrorCode.CORRUPT_MESSAGE, produce=False)


def test_validate_empty_batch_is_a_produce_error_only() -> None:
    empty = RecordBatchBuilder().build()
    rb = RecordBatch(empty)
    assert rb.records_count == 0 and rb.last_offset_delta == -1
    expect(empty, ErrorCode.INVALID_RECORD)
    rb.validate(produce=False)
    assert list(rb.records()) == []


def test_validate_offset_deltas() -> None:
    # second record's offsetDelta byte is 2 instead of 1 (zig-zag 4): re-encode by hand
    good = built(2)
    rb = RecordBatch(good)
    recs = list(rb.records())
    assert recs[1].offset_delta == 1
    # find the second record: header + first record's length prefix + body
    first_len, first_body = decode_varint(good, 61)
    _, body = decode_varint(good, first_body + first_len)  # the second record's length prefix
    # body: attributes(1) tsDelta(1) offsetDelta(1)
    assert good[body + 2] == 2
    bad = bytearray(good)
    bad[body + 2] = 4
    expect(fix_crc(bad), ErrorCode.INVALID_RECORD)
    RecordBatch(bad).validate(produce=False)
    assert [r.offset for r in RecordBatch(bad).records()] == [0, 2]


def test_decompression_errors_and_cap() -> None:
    good = built(50, CompressionType.ZSTD)
    bad = bytearray(good)
    bad[70] ^= 0xFF
    expect(fix_crc(bad), ErrorCode.CORRUPT_MESSAGE)
    rb = RecordBatch(good)
    with pytest.raises(InvalidRecordBatch):
        list(rb.records(max_size=100))
    assert len(list(rb.records())) == 50


_BOMB_CHILD = """
import resource, sys
from shardbroker.protocol.compression import CompressionError, decompress
codec, path = int(sys.argv[1]), sys.argv[2]
bomb = open(path, "rb").read()
with open("/proc/self/statm") as f:
    mapped = int(f.read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (mapped + (160 << 20), resource.RLIM_INFINITY))
try:
    decompress(codec, bomb, max_size=8 << 20)
except CompressionError as exc:
    print(exc)
"""


def _bomb(codec: CompressionType, size: int) -> bytes:
    """``size`` zero bytes compressed, built in 16 MiB steps (never holding ``size`` bytes)."""
    chunk = bytes(16 << 20)
    c = (
        cramjam.lz4.Compressor(block_linked=False, content_checksum=False)
        if codec == CompressionType.LZ4
        else cramjam.zstd.Compressor()
    )
    for _ in range(size // len(chunk)):
        c.compress(chunk)
    return bytes(c.finish())


@pytest.mark.parametrize("codec", [CompressionType.LZ4, CompressionType.ZSTD])
def test_a_decompression_bomb_is_refused_within_the_cap(codec: CompressionType, tmp_path: Path) -> None:
    """512 MiB of zeros compress to KiBs: refused while decompressing, in a process that may map
    only 160 MiB more than it holds (the whole 512 MiB would not fit)."""
    path = tmp_path / "bomb"
    path.write_bytes(_bomb(codec, 512 << 20))
    child = subprocess.run(
        [sys.executable, "-c", _BOMB_CHILD, str(int(codec)), str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert child.returncode == 0, child.stderr[-2000:]
    assert "decompressed size exceeds 8388608 bytes" in child.stdout


@pytest.mark.parametrize("codec", [CompressionType.LZ4, CompressionType.ZSTD, CompressionType.GZIP])
def test_a_batch_past_the_first_guess_decompresses_whole(codec: CompressionType) -> None:
    tall = bytes(range(256)) * 4096  # 1 MiB that compresses far more than the 16x first guess
    assert decompress(codec, compress(codec, tall), max_size=1 << 20) == tall
    with pytest.raises(CompressionError, match="exceeds"):
        decompress(codec, compress(codec, tall), max_size=(1 << 20) - 1)


def test_split_and_iter_batches() -> None:
    parts = [bytes(built(n)) for n in (1, 2, 3)]
    blob = b"".join(parts)
    batches = split_batches(blob)
    assert [bytes(b.buffer) for b in batches] == parts
    for b in batches:
        b.validate()
    with pytest.raises(InvalidRecordBatch):
        split_batches(blob + parts[0][:30])
    assert len(split_batches(blob + parts[0][:30], allow_partial_tail=True)) == 3
    assert list(iter_batches(b"")) == []
    with pytest.raises(InvalidRecordBatch):
        list(iter_batches(b"\x00" * 20))


def test_builder_details() -> None:
    b = RecordBatchBuilder(
        timestamp_type=TimestampType.LOG_APPEND_TIME, base_offset=5, partition_leader_epoch=3
    )
    assert b.append(b"a", timestamp=1) == 0
    assert b.append(b"b" * 20000, key=b"k" * 9000, timestamp=2, headers=[(b"raw", memoryview(b"hv"))]) == 1
    b.extend([b"c", None], timestamp=3)
    assert len(b) == 4
    rb = RecordBatch(b.build())
    rb.validate()
    assert rb.base_offset == 5 and rb.partition_leader_epoch == 3
    assert rb.timestamp_type == TimestampType.LOG_APPEND_TIME
    recs = list(rb.records())
    assert [r.offset for r in recs] == [5, 6, 7, 8]
    assert recs[1].value is not None and recs[1].value.nbytes == 20000
    assert recs[1].key is not None and recs[1].key.nbytes == 9000
    assert [(h.key, bytes(h.value or b"")) for h in recs[1].headers] == [("raw", b"hv")]
    assert recs[3].value is None
    # timestamps default to now
    b = RecordBatchBuilder()
    b.append(b"x")
    assert RecordBatch(b.build()).max_timestamp > 1_600_000_000_000


# ---- fuzz: only the typed error ------------------------------------------------------------------


def exercise(buf: bytes | bytearray) -> None:
    try:
        rb = RecordBatch(buf)
        for rec in rb.records():
            _ = rec.offset
        rb.validate()
        rb.validate(produce=False)
        _ = (rb.last_sequence, rb.timestamp_type, rb.compression_known, rb.is_crc_valid(), repr(rb))
        if rb.is_control:
            control_record(rb)
    except InvalidRecordBatch as exc:
        assert exc.error_code in (
            ErrorCode.CORRUPT_MESSAGE,
            ErrorCode.INVALID_RECORD,
            ErrorCode.UNSUPPORTED_COMPRESSION_TYPE,
            ErrorCode.UNSUPPORTED_FOR_MESSAGE_FORMAT,
        )


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_raise_only_the_typed_error(data: bytes) -> None:
    exercise(data)


SEEDS = [bytes(built(4, codec)) for codec in CompressionType] + [
    build_control_batch(ControlRecordType.ABORT, producer_id=1, producer_epoch=1, coordinator_epoch=1)
]


def _headered() -> bytes:
    b = RecordBatchBuilder()
    for i in range(4):
        b.append(b"v" * i, key=None if i % 2 else b"kk", timestamp=i, headers=[("h", b"x"), ("n", None)])
    return b.build()


SEEDS.append(_headered())


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(SEEDS),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4),
    st.integers(-5, 5),
    st.booleans(),
)
def test_mutated_batches_with_fixed_crc_raise_only_the_typed_error(
    seed: bytes, edits: list[tuple[int, int]], resize: int, keep_length: bool
) -> None:
    """Mutations past the CRC check: the record decoder itself must fail cleanly."""
    buf = bytearray(seed)
    for pos, byte in edits:
        buf[21 + pos % (len(buf) - 21)] = byte
    if resize > 0:
        buf += bytes(resize)
    elif resize < 0:
        del buf[len(buf) + resize :]
    if keep_length and len(buf) >= 61:
        struct.pack_into(">i", buf, 8, len(buf) - 12)
    if len(buf) >= 61:
        fix_crc(buf)
    exercise(buf)
