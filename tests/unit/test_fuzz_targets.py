"""The structure-aware fuzz targets of tests/fuzz, driven by hypothesis (a finding shrinks), and the
checks that the harness itself can fail.

CI runs each target for ``SHARDBROKER_FUZZ_CASES`` cases (default 25; every request API at all its
versions, the frame reader, the record batch view, the batch scans). The long runs are
``python -m tests.fuzz --cases 100000`` (README); ``SHARDBROKER_FUZZ_CASES=100000 pytest
tests/unit/test_fuzz_targets.py`` does the same through hypothesis, slower.
tests/unit/test_codec_fuzz.py keeps the structure-blind cases (arbitrary bytes, plain mutations).
"""

from __future__ import annotations

import functools
import os
import random
import struct
from collections.abc import Sequence
from typing import TypeVar, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shardbroker.protocol import codec, messages
from shardbroker.protocol.errors import ProtocolError
from shardbroker.protocol.primitives import decode_uvarint, decode_varint, decode_varlong
from shardbroker.protocol.record_batch_builder import RecordBatchBuilder
from tests.fuzz import mutate as mut
from tests.fuzz.targets import MEMORY_FACTOR, MEMORY_SLACK, Finding, Target, _measured, all_targets

T = TypeVar("T")

CASES = int(os.environ.get("SHARDBROKER_FUZZ_CASES", "25"))


class DrawnChoices:
    """hypothesis draws behind the mutate.Choices calls."""

    def __init__(self, data: st.DataObject) -> None:
        self.data = data

    def randint(self, a: int, b: int) -> int:
        return self.data.draw(st.integers(a, b))

    def choice(self, seq: Sequence[T]) -> T:
        return self.data.draw(st.sampled_from(seq))

    def randbytes(self, n: int) -> bytes:
        return self.data.draw(st.binary(min_size=n, max_size=n))


@functools.cache
def targets() -> dict[str, Target]:
    found = {t.name: t for t in all_targets()}
    for target in found.values():
        target.warm_up()
    return found


TARGET_NAMES = [f"request:{cls.API_NAME}" for cls in messages.REQUESTS.values()] + [
    "frame-reader",
    "record-batch",
    "batch-scan",
    "sasl:plain",
    "sasl:scram-client-first",
    "sasl:scram-client-final",
    "sasl:oauthbearer",
]


def test_every_request_api_and_the_byte_readers_are_targets() -> None:
    assert sorted(targets()) == sorted(TARGET_NAMES)
    assert len(messages.REQUESTS) >= 80


@pytest.mark.parametrize("name", TARGET_NAMES)
def test_target(name: str) -> None:
    target = targets()[name]

    @settings(
        max_examples=CASES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.data())
    def run(data: st.DataObject) -> None:
        target.case(DrawnChoices(data))

    run()


# -- the layouts describe the bytes ----------------------------------------------------------------


def _stored(data: bytes, slot: mut.Slot) -> int:
    if slot.kind in ("i8", "i16", "i32"):
        return int(mut._PACK[slot.kind].unpack_from(data, slot.pos)[0])
    decoder = {"uv": decode_uvarint, "zz": decode_varint, "zzl": decode_varlong}[slot.kind]
    value, end = decoder(data, slot.pos)
    assert end == slot.pos + slot.width
    return value


@pytest.mark.parametrize("cls", list(messages.REQUESTS.values()), ids=lambda c: c.API_NAME)
def test_message_layout_points_at_the_lengths_it_names(cls: type[codec.Message]) -> None:
    from tests.unit.test_codec_roundtrip import build_sample, flexible

    lo, hi = cls.VALID_VERSIONS
    for version in range(lo, hi + 1):
        msg = cast(codec.Message, build_sample(cls, version, flexible(cls, version), random.Random(version)))
        data = codec.encode(msg, version)
        slots = mut.message_layout(msg, version, data)
        for slot in slots:
            assert _stored(data, slot) == slot.value, (cls.API_NAME, version, slot)
        if flexible(cls, version):
            assert any(s.role == "tags" for s in slots)


def test_batch_layout_points_at_every_record_varint() -> None:
    builder = RecordBatchBuilder()
    builder.append(b"value", key=b"k", headers=[("h", b"x"), ("n", None)])
    builder.append(None, key=None)
    data = builder.build()
    slots = mut.batch_layout(data)
    for slot in slots:
        assert _stored(data, slot) == slot.value, slot
    roles = [s.role for s in slots]
    assert roles.count("record-length") == 2 and roles.count("header-key-length") == 2
    assert [s.value for s in slots if s.role == "value-length"] == [5, -1]


def test_mutations_reach_every_slot_operation() -> None:
    msg = messages.MetadataRequest(topics=[messages.MetadataRequest.MetadataRequestTopic(name="t")])
    data = codec.encode(msg, 12)
    slots = mut.message_layout(msg, 12, data)
    rnd = random.Random(7)
    outputs = {mut.mutate(data, slots, rnd) for _ in range(500)}
    assert data not in outputs or len(outputs) > 400
    # a huge compact count, a null (compact 0) topic array, truncated varints all show up
    assert any(o.startswith(b"\xff\xff\xff\xff\x0f") for o in outputs)
    assert any(o.endswith(b"\x80") for o in outputs)


# -- the harness finds what it is meant to find ----------------------------------------------------


def test_an_exception_other_than_protocol_error_is_a_finding() -> None:
    target = targets()["request:Metadata"]
    with pytest.raises(Finding, match="raised KeyError"):
        _measured(target, b"\x00", 0, lambda: dict[str, int]()["missing"])
    assert _measured(target, b"\x00", 0, lambda: (_ for _ in ()).throw(ProtocolError("bad"))) is None


def test_a_length_believed_before_it_is_checked_is_a_finding() -> None:
    target = targets()["request:Metadata"]
    data = struct.pack(">i", 2**24)  # a count: 16 Mi elements in a 4-byte input

    def naive_decoder() -> object:
        (n,) = struct.unpack(">i", data)
        return bytearray(n)

    with pytest.raises(Finding, match="peak memory"):
        _measured(target, data, 0, naive_decoder)
    assert MEMORY_FACTOR * len(data) + MEMORY_SLACK < 2**24


def test_the_fuzzer_finds_a_decoder_error_that_escapes(monkeypatch: pytest.MonkeyPatch) -> None:
    """With truncation errors no longer turned into ProtocolError, the Produce target must trip
    within a few hundred cases: the harness can fail."""
    monkeypatch.setattr(codec, "_DECODE_ERRORS", (ValueError, OverflowError))
    target = targets()["request:Produce"]
    rnd = random.Random(1)
    with pytest.raises(Finding, match=r"raised (error|IndexError)"):
        for _ in range(500):
            target.case(rnd)
