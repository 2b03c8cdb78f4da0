"""The fuzz targets: one per decoder a peer can reach, each a function running one case.

A case builds an input from valid seeds and :mod:`tests.fuzz.mutate`, feeds it to the decoder and
checks the property; a violation raises :class:`Finding` carrying the input, so it can be replayed
(``python -m tests.fuzz --replay HEX --target NAME``). Properties:

- every decoder returns a value or raises the codec's ``ProtocolError`` (``InvalidRecordBatch``
  for batches), nothing else;
- memory: the peak of what ``tracemalloc`` sees during the decode stays within
  ``MEMORY_FACTOR`` x the input size + ``MEMORY_SLACK`` (+ the decompression cap for batches,
  + ``socket.request.max.bytes`` for the frame reader, which sizes its buffer from the frame's
  size prefix). A length field believed before it is checked (``bytearray(n)``, ``[None] * n``)
  breaks this at once: a 5-byte count claims gigabytes. The factor covers what decoding
  legitimately costs: the densest valid inputs (arrays of one-byte structs, of int8) become
  Python objects ~50-100x their encoded size (measured: see ``MEMORY_FACTOR``);
- request decoders: what decodes re-encodes, and re-encoding is a fixpoint
  (``encode(decode(encode(x))) == encode(x)``), so the broker never holds a request it cannot
  describe back;
- the frame reader: fed in random chunks through the zero-copy path (``get_buffer`` /
  ``buffer_updated``, leases released at random moments) it produces exactly the events of a
  one-shot feed, and nothing follows a ``ConnectionClosed``;
- the batch scans: ``scan_batches``'s positions are contiguous whole batches, the hardware and
  numpy CRC checks agree, and ``iter_batches`` agrees with the scan;
- the SASL mechanisms' message parsers (PLAIN, SCRAM client-first and client-final,
  OAUTHBEARER's initial response and its token): each message gets a challenge (bytes) or the
  mechanism's typed failure (``SaslAuthenticationFailed``), nothing else, within the memory bound;
  a mutated SCRAM client-final never completes the exchange.

Decoders run once on valid seeds before measuring (``warm_up``), so compiling a (class, version)
decoder is not counted as the case's memory.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from shardbroker.protocol import batch_scan, codec, messages
from shardbroker.protocol.codec import Message
from shardbroker.protocol.compression import CompressionType
from shardbroker.protocol.connection import (
    BadRequest,
    ConnectionClosed,
    Event,
    RequestReceived,
    ServerConnection,
)
from shardbroker.protocol.control_records import ControlRecordType, build_control_batch, control_record
from shardbroker.protocol.crc import crc32c
from shardbroker.protocol.errors import ProtocolError
from shardbroker.protocol.headers import encode_request, request_header_version
from shardbroker.protocol.record_batch import RecordBatch, iter_batches
from shardbroker.protocol.record_batch_builder import RecordBatchBuilder
from shardbroker.protocol.record_batch_header import BATCH_HEADER_SIZE
from shardbroker.security.sasl import SaslAuthenticationFailed, SaslServer
from shardbroker.security.sasl_oauthbearer import OAuthBearerSaslServer, UnsecuredValidatorOptions
from shardbroker.security.sasl_plain import PlainSaslServer
from shardbroker.security.sasl_scram import ScramSaslServer
from shardbroker.security.scram_credential import ScramMechanism, derive_credential
from tests.fuzz.mutate import Choices, Slot, batch_layout, message_layout, mutate
from tests.unit.test_codec_roundtrip import build_sample, flexible

__all__ = ["MEMORY_FACTOR", "MEMORY_SLACK", "Finding", "Seed", "Target", "all_targets", "request_frames"]

#: Peak traced bytes allowed per input byte. The worst seen in 9.1 million cases (100,000 per
#: target, ``python -m tests.fuzz`` prints it per target): 72x for the request decoders (arrays of
#: one-byte structs become Python objects), 104x for the batch scans (numpy arrays per batch). A
#: length believed before it is checked reaches 10^4-10^7x on inputs of these sizes.
MEMORY_FACTOR = 256
#: Fixed allowance: exception objects and tracebacks, small lists, interned strings.
MEMORY_SLACK = 64 * 1024
#: Decompression cap the batch targets pass to ``records(max_size=...)``.
DECOMPRESS_CAP = 256 * 1024
#: The frame reader target's ``socket.request.max.bytes`` and initial buffer.
FRAME_MAX = 64 * 1024
FRAME_BUFFER = 4096


class Finding(AssertionError):
    """A property violated by ``data`` (hex in the message: replay it with ``--replay``)."""

    def __init__(self, target: str, data: bytes, problem: str) -> None:
        super().__init__(f"{target}: {problem}\ninput ({len(data)} bytes): {data.hex()}")
        self.target = target
        self.data = data
        self.problem = problem


@dataclass
class Target:
    """One decoder under fuzz. ``case(ch)`` runs one mutated case; ``replay(data)`` one input."""

    name: str
    case: Callable[[Choices], None]
    replay: Callable[[bytes], None]
    warm_up: Callable[[], None]
    #: Worst peak-memory / input-size ratio seen (inputs of at least 64 bytes; targets without
    #: a fixed allowance).
    worst_ratio: float = field(default=0.0)


def _measured(target: Target, data: bytes, allowance: int, run: Callable[[], object]) -> object:
    """Run ``run`` on ``data``: ProtocolError is an answer, anything else a finding; so is memory
    beyond ``MEMORY_FACTOR * len(data) + MEMORY_SLACK + allowance``, if a second run confirms it
    (a cache that numpy or the CRC tables fill on first use is not the input's doing: seen once in
    100,000 batch-scan cases, 1.9 MB on a 479-byte input that stays under 64 KiB when run again)."""
    result, peak = _traced(target, data, run)
    limit = MEMORY_FACTOR * len(data) + MEMORY_SLACK + allowance
    if peak > limit:
        _, peak = _traced(target, data, run)
        if peak > limit:
            raise Finding(target.name, data, f"peak memory {peak} bytes for a {len(data)}-byte input")
    if len(data) >= 64 and not allowance:
        target.worst_ratio = max(target.worst_ratio, peak / len(data))
    return result


def _traced(target: Target, data: bytes, run: Callable[[], object]) -> tuple[object, int]:
    """``run()``'s result (None after a ProtocolError) and the peak of what it allocated."""
    # Traced only while the decoder runs (start/stop costs ~3 us; tracing everything would slow
    # the mutations and hypothesis 10x).
    scoped = not tracemalloc.is_tracing()
    if scoped:
        tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    result: object = None
    try:
        result = run()
    except Finding:
        raise  # a property checked inside ``run``
    except ProtocolError:
        pass  # the codec's answer to bad input
    except Exception as exc:
        raise Finding(target.name, data, f"raised {type(exc).__name__}: {exc}") from exc
    finally:
        peak = tracemalloc.get_traced_memory()[1] - before
        if scoped:
            tracemalloc.stop()
    return result, peak


# -- request decoders ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Seed:
    """A valid input (at ``version``, for messages) and its layout."""

    version: int
    data: bytes
    slots: tuple[Slot, ...]


def _message_seeds(cls: type[Message], per_version: int = 3) -> list[Seed]:
    seeds = []
    lo, hi = cls.VALID_VERSIONS
    for version in range(lo, hi + 1):
        rnd = random.Random(f"{cls.__name__}/{version}")
        samples = [build_sample(cls, version, flexible(cls, version), rnd, nulls=True)]
        samples += [build_sample(cls, version, flexible(cls, version), rnd) for _ in range(per_version)]
        for msg in [cls(), *cast(list[Message], samples)]:
            data = codec.encode(msg, version)
            seeds.append(Seed(version, data, tuple(message_layout(msg, version, data))))
    return seeds


def _request_target(cls: type[Message]) -> Target:
    seeds = _message_seeds(cls)
    lo, hi = cls.VALID_VERSIONS

    def check(data: bytes, version: int) -> None:
        decoded = _measured(target, data, 0, lambda: codec.decode(cls, data, version, allow_trailing=True))
        if isinstance(decoded, Message):
            try:
                again = codec.encode(decoded, version)
                if codec.encode(codec.decode(cls, again, version), version) != again:
                    raise Finding(target.name, data, f"v{version}: re-encoding is not a fixpoint")
            except ProtocolError as exc:
                raise Finding(
                    target.name, data, f"v{version}: decoded but does not re-encode: {exc}"
                ) from exc

    def case(ch: Choices) -> None:
        seed = ch.choice(seeds)
        data = mutate(seed.data, seed.slots, ch)
        # wrong api_version: a neighbour (flexible <-> not), any version, or one outside the specs
        version = ch.choice(
            (seed.version,) * 6 + (seed.version + 1, seed.version - 1, ch.randint(lo - 1, hi + 1))
        )
        check(data, version)

    def replay(data: bytes) -> None:
        for version in range(lo, hi + 1):
            check(data, version)

    def warm_up() -> None:
        for seed in seeds:
            codec.decode(cls, seed.data, seed.version)

    target = Target(f"request:{cls.API_NAME}", case, replay, warm_up)
    return target


# -- the frame reader ----------------------------------------------------------------------------


def request_frames() -> list[Seed]:
    """Whole size-prefixed request frames of every API (two versions each), with their slots."""
    seeds = []
    for cls in messages.REQUESTS.values():
        lo, hi = cls.VALID_VERSIONS
        for version in sorted({lo, hi}):
            rnd = random.Random(f"frame/{cls.__name__}/{version}")
            msg = cast(Message, build_sample(cls, version, flexible(cls, version), rnd))
            header = messages.RequestHeader(
                request_api_key=cls.API_KEY,
                request_api_version=version,
                correlation_id=rnd.randint(0, 2**31 - 1),
                client_id="fuzz",
            )
            frame = encode_request(header, msg)
            head_version = request_header_version(cls.API_KEY, version)
            head = codec.encode(header, head_version)
            slots = [
                Slot(0, 4, "i32", "frame-size", len(frame) - 4, 4),
                Slot(4, 2, "i16", "api-key", cls.API_KEY, 6),
                Slot(6, 2, "i16", "api-version", version, 8),
            ]
            slots += [
                s._replace(pos=s.pos + 4, end=s.end + 4) for s in message_layout(header, head_version, head)
            ]
            body = 4 + len(head)
            slots += [
                s._replace(pos=s.pos + body, end=s.end + body)
                for s in message_layout(msg, version, frame[body:])
            ]
            seeds.append(Seed(version, frame, tuple(slots)))
    return seeds


class _SameRequest:
    """A decoded request compared like ``==``, except that NaN (a float64 field) equals NaN."""

    def __init__(self, request: Message) -> None:
        self.request = request

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _SameRequest):
            return NotImplemented
        mine, theirs = self.request, other.request
        return bool(mine == theirs) or ("nan" in repr(mine) and repr(mine) == repr(theirs))


def _summary(event: Event) -> tuple[Any, ...]:
    if isinstance(event, RequestReceived):
        request = _SameRequest(event.request)
        return ("request", event.correlation_id, event.api_key, event.api_version, event.size, request)
    if isinstance(event, BadRequest):
        return ("bad", event.correlation_id, event.api_key, event.api_version, event.error_code)
    return ("closed", event.error_code)


def _frame_reader_target() -> Target:
    seeds = request_frames()
    supported = {key: cls.VALID_VERSIONS for key, cls in messages.REQUESTS.items() if key % 3}

    def feed_chunked(
        data: bytes,
        served: dict[int, tuple[int, int]] | None,
        cuts: Sequence[int],
        expected: list[Any],
        ch: Choices,
    ) -> None:
        conn = ServerConnection(FRAME_MAX, served, buffer_size=FRAME_BUFFER)
        seen: list[Event] = []
        held: list[Event] = []
        pos = 0
        for cut in [*cuts, len(data)]:
            while pos < cut:
                dst = conn.get_buffer(-1)
                if not len(dst):
                    raise Finding(target.name, data, "get_buffer returned an empty buffer")
                n = min(len(dst), cut - pos)
                dst[:n] = data[pos : pos + n]
                del dst
                pos += n
                for event in conn.buffer_updated(n):
                    if seen and isinstance(seen[-1], ConnectionClosed):
                        raise Finding(target.name, data, f"event after ConnectionClosed: {event}")
                    index = len(seen)
                    seen.append(event)
                    if index >= len(expected) or _summary(event) != expected[index]:
                        raise Finding(
                            target.name, data, f"chunked feed (cuts {list(cuts)}) differs at event {index}"
                        )
                    held.append(event)
                if held and ch.randint(0, 2) == 0:  # the handler finishes: its buffer may be reused
                    conn.release(held.pop(ch.randint(0, len(held) - 1)))
        if len(seen) != len(expected):
            raise Finding(
                target.name, data, f"chunked feed gave {len(seen)} events, one-shot {len(expected)}"
            )

    def check(
        data: bytes, served: dict[int, tuple[int, int]] | None, cuts: Sequence[int], ch: Choices
    ) -> None:
        def run() -> None:
            events = ServerConnection(FRAME_MAX, served, buffer_size=FRAME_BUFFER).receive_data(data)
            feed_chunked(data, served, cuts, [_summary(e) for e in events], ch)

        _measured(target, data, 2 * (FRAME_MAX + 4 + FRAME_BUFFER), run)

    def case(ch: Choices) -> None:
        frames = []
        for _ in range(ch.randint(1, 4)):
            seed = ch.choice(seeds)
            frames.append(mutate(seed.data, seed.slots, ch) if ch.randint(0, 3) else seed.data)
        data = b"".join(frames)
        cuts = sorted({ch.randint(0, len(data)) for _ in range(ch.randint(0, 6))})
        check(data, ch.choice((None, supported)), cuts, ch)

    def replay(data: bytes) -> None:
        rnd = random.Random(0)
        for served in (None, supported):
            check(data, served, list(range(1, len(data))), rnd)

    def warm_up() -> None:
        for seed in seeds:
            ServerConnection(FRAME_MAX).receive_data(seed.data)

    target = Target("frame-reader", case, replay, warm_up)
    return target


# -- record batches ------------------------------------------------------------------------------


def _batch_seeds() -> list[tuple[bytes, tuple[Slot, ...]]]:
    rnd = random.Random("batches")
    batches = []
    for codec_id in CompressionType:
        for count in (1, 2, 7):
            builder = RecordBatchBuilder(
                compression=codec_id,
                producer_id=rnd.randint(0, 1000),
                producer_epoch=0,
                base_sequence=rnd.randint(0, 100),
            )
            for i in range(count):
                headers = [("h", b"x"), ("n", None)] if i % 3 == 1 else []
                key = None if i % 2 else rnd.randbytes(rnd.randint(0, 9))
                builder.append(
                    rnd.randbytes(rnd.randint(0, 40)) if i % 4 != 3 else None, key=key, headers=headers
                )
            batches.append(builder.build())
    batches.append(
        build_control_batch(ControlRecordType.COMMIT, producer_id=7, producer_epoch=1, coordinator_epoch=3)
    )
    return [(b, tuple(batch_layout(b))) for b in batches]


def _fix_up(buf: bytearray, at: int, ch: Choices) -> None:
    """Often make the damage pass the cheap checks, so the record decoder behind them is reached:
    batchLength set to what is there, CRC recomputed."""
    if len(buf) - at < 61:
        return
    if ch.randint(0, 1):
        buf[at + 8 : at + 12] = (len(buf) - at - 12).to_bytes(4, "big", signed=True)
    if ch.randint(0, 3):
        end = at + 12 + int.from_bytes(buf[at + 8 : at + 12], "big", signed=True)
        if at + 61 <= end <= len(buf):
            buf[at + 17 : at + 21] = crc32c(bytes(buf[at + 21 : end])).to_bytes(4, "big")


def _record_batch_target() -> Target:
    seeds = _batch_seeds()

    def decode_all(data: bytes, produce: bool) -> None:
        batch = RecordBatch(data)
        repr(batch)
        batch.header()
        _ = batch.last_sequence, batch.is_crc_valid(), batch.timestamp_type, batch.is_control
        batch.validate(records=False, produce=produce)
        for _rec in batch.records(max_size=DECOMPRESS_CAP):
            pass
        if batch.is_control:
            control_record(batch)
        batch.validate(records=True, produce=produce)

    def check(data: bytes, produce: bool) -> None:
        _measured(target, data, 2 * DECOMPRESS_CAP, lambda: decode_all(data, produce))

    def case(ch: Choices) -> None:
        data, slots = ch.choice(seeds)
        buf = bytearray(mutate(data, slots, ch))
        _fix_up(buf, 0, ch)
        check(bytes(buf), bool(ch.randint(0, 1)))

    def replay(data: bytes) -> None:
        check(data, True)
        check(data, False)

    def warm_up() -> None:
        for data, _ in seeds:
            decode_all(data, False)

    target = Target("record-batch", case, replay, warm_up)
    return target


def _batch_scan_target() -> Target:
    seeds = _batch_seeds()

    def scan(data: bytes, numpy_too: bool = True) -> None:
        headers = batch_scan.scan_batches(data, base_position=1000)
        positions = (headers.positions - 1000).tolist()
        sizes = headers.sizes.tolist()
        expected = 0
        for pos, size in zip(positions, sizes, strict=True):
            if pos != expected or size < BATCH_HEADER_SIZE:
                raise Finding(
                    target.name, data, f"scan found a batch of {size} bytes at {pos}, expected at {expected}"
                )
            expected = pos + size
        if headers.end - 1000 != expected or expected > len(data):
            raise Finding(target.name, data, f"scan ends at {headers.end - 1000}, batches at {expected}")
        hardware = batch_scan.verify_crcs(data, headers).tolist()
        if numpy_too and hardware != batch_scan.verify_crcs_numpy(data, headers).tolist():
            raise Finding(target.name, data, "hardware and numpy CRC-32C disagree")
        views = list(iter_batches(data, allow_partial_tail=True))
        if [v.size for v in views] != sizes or [v.is_crc_valid() for v in views] != hardware:
            raise Finding(target.name, data, "iter_batches disagrees with scan_batches")
        batch_scan.first_invalid(batch_scan.verify_crcs(data, headers))
        try:
            list(iter_batches(data))
        except ProtocolError as exc:
            if expected == len(data):
                raise Finding(target.name, data, f"iter_batches refused whole batches: {exc}") from exc
        else:
            if expected != len(data):
                raise Finding(target.name, data, "iter_batches accepted a partial tail")

    def case(ch: Choices) -> None:
        chosen = [ch.choice(seeds) for _ in range(ch.randint(1, 5))]
        buf = bytearray()
        planned = []
        for data, slots in chosen:
            if ch.randint(0, 1):
                planned.append((len(buf), data, slots))
            buf += data
        for at, data, slots in reversed(planned):  # back to front: earlier positions stay right
            buf[at : at + len(data)] = mutate(data, slots, ch)
            _fix_up(buf, at, ch)
        if ch.randint(0, 3) == 0:
            del buf[ch.randint(0, len(buf)) :]  # a torn tail, as a crash leaves it
        data = bytes(buf)
        # The numpy CRC costs ~5 ms per call whatever the size: compared on one case in eight.
        numpy_too = ch.randint(0, 7) == 0
        _measured(target, data, 0, lambda: scan(data, numpy_too))

    def replay(data: bytes) -> None:
        _measured(target, data, 0, lambda: scan(data))

    def warm_up() -> None:
        scan(b"".join(data for data, _ in seeds))

    target = Target("batch-scan", case, replay, warm_up)
    return target


# -- SASL mechanisms ------------------------------------------------------------------------------

_SCRAM_USER = derive_credential(ScramMechanism.SCRAM_SHA_256, b"pencil", 4096, b"fuzz-salt")
_SCRAM_NONCE = "server-nonce"
_SCRAM_FIRST = b"n,,n=user,r=client-nonce"


def _scram_server() -> ScramSaslServer:
    return ScramSaslServer(
        ScramMechanism.SCRAM_SHA_256, {"user": _SCRAM_USER}.get, nonce=lambda: _SCRAM_NONCE
    )


def _scram_final() -> bytes:
    """A valid client-final for ``_SCRAM_FIRST`` (password "pencil")."""
    server = _scram_server()
    server_first = server.evaluate_response(_SCRAM_FIRST)
    without_proof = b"c=biws,r=client-nonce" + _SCRAM_NONCE.encode()
    auth = b"n=user,r=client-nonce," + server_first + b"," + without_proof
    salted = hashlib.pbkdf2_hmac("sha256", b"pencil", b"fuzz-salt", 4096)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    signature = hmac.digest(hashlib.sha256(client_key).digest(), auth, "sha256")
    proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    final = without_proof + b",p=" + base64.b64encode(proof)
    server.evaluate_response(final)
    assert server.complete
    return final


def _jws(claims: bytes) -> bytes:
    def part(raw: bytes) -> bytes:
        return base64.urlsafe_b64encode(raw).rstrip(b"=")

    return part(b'{"alg":"none"}') + b"." + part(claims) + b"."


def _sasl_target(
    name: str, seeds: list[bytes], new_server: Callable[[], SaslServer], final: bool = False
) -> Target:
    """Messages to a fresh ``new_server()``; ``final``: to one that has taken a valid SCRAM first."""

    def step(data: bytes) -> None:
        server = new_server()
        if final:
            server.evaluate_response(_SCRAM_FIRST)
        try:
            server.evaluate_response(data)
        except SaslAuthenticationFailed:
            return
        if final and data not in seeds and server.complete:
            raise Finding(target.name, data, "a mutated client-final completed the exchange")

    def case(ch: Choices) -> None:
        seed = ch.choice(seeds)
        data = mutate(seed, (), ch) if ch.randint(0, 5) else seed
        _measured(target, data, 0, lambda: step(data))

    def replay(data: bytes) -> None:
        _measured(target, data, 0, lambda: step(data))

    def warm_up() -> None:
        for seed in seeds:
            step(seed)

    target = Target(name, case, replay, warm_up)
    return target


def _sasl_targets() -> Iterator[Target]:
    yield _sasl_target(
        "sasl:plain",
        [b"\x00alice\x00secret", b"alice\x00alice\x00secret", b"\x00bob\x00x"],
        lambda: PlainSaslServer({"alice": "secret"}),
    )
    yield _sasl_target(
        "sasl:scram-client-first",
        [_SCRAM_FIRST, b"n,a=user,n=us=2Cer,r=abc,tokenauth=false", b"n,,m=x,n=user,r=abc,ext=v"],
        _scram_server,
    )
    yield _sasl_target("sasl:scram-client-final", [_scram_final()], _scram_server, final=True)
    now_ms = 1_700_000_000_000
    token = _jws(b'{"sub":"alice","exp":1700000060,"iat":1699999999.5,"scope":["a","b"]}')
    yield _sasl_target(
        "sasl:oauthbearer",
        [
            b"n,,\x01auth=Bearer " + token + b"\x01\x01",
            b"n,a=alice,\x01auth=Bearer " + token + b"\x01key=value\x01\x01",
            b"n,,\x01auth=Bearer " + _jws(b'{"sub":"a","exp":[1,{"x":[[[]]]}],"scope":"s"}') + b"\x01\x01",
            b"\x01",
        ],
        lambda: OAuthBearerSaslServer(UnsecuredValidatorOptions(required_scope=("a",)), lambda: now_ms),
    )


def all_targets() -> Iterator[Target]:
    """Every request API (all versions), then the frame reader, record batches and scans, and
    the SASL mechanisms' parsers."""
    for cls in messages.REQUESTS.values():
        yield _request_target(cls)
    yield _frame_reader_target()
    yield _record_batch_target()
    yield _batch_scan_target()
    yield from _sasl_targets()
