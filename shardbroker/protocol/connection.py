"""The server side of one Kafka connection, with no I/O: bytes in, events out; responses in, bytes out.

Shaped like h11/h2: the caller owns the socket. It either hands over received bytes
(:meth:`ServerConnection.receive_data`, convenient for tests) or, zero-copy, lets the peer's bytes
be received straight into this object's buffer (:meth:`get_buffer` then :meth:`buffer_updated`,
which is exactly ``asyncio.BufferedProtocol``'s contract). Either way it returns a list of events:

- :class:`RequestReceived`: a whole request, header and body decoded with the generated codec.
- :class:`BadRequest`: a request whose header could be read far enough to know whom to answer
  (``RequestHeaderError``: unknown api key, a version outside the specs or outside what the
  broker serves, a header that breaks off) -- the caller decides the answer (Kafka answers
  ApiVersions with an UNSUPPORTED_VERSION v0 response listing the supported ranges).
- :class:`ConnectionClosed`: the peer broke the framing (negative or oversized size prefix, a
  body that does not decode; bytes after a complete body are ignored, as Kafka does): the
  connection cannot be trusted any more and must be closed. No event follows it.
- :class:`SingleProduceReceived`: while ``single_produce`` is set, a Produce request for exactly
  one partition (protocol/single_produce.py), read without the generic codec; its answer is
  filed as bytes with :meth:`respond_encoded` (or, on its rare paths, as a message). Any other
  Produce frame is a :class:`RequestReceived` as before.
- :class:`SaslTokenReceived`: while ``raw_sasl`` is set (after a SaslHandshake v0, Kafka's legacy
  SASL framing), each frame is a bare SASL token, not a request; it is answered with
  :meth:`respond_token`, a size-prefixed token. The caller sets and clears ``raw_sasl``; clients
  wait for each answer before sending on, so no request is read as a token or the reverse.

Frames: a 4-byte big-endian size, then the frame. A size above ``max_request_size`` (Kafka's
``socket.request.max.bytes``, default 104857600) is refused as soon as the prefix is read, before
any of the frame is buffered, as Kafka's ``NetworkReceive`` does (``InvalidReceiveException``).

Responses go out in request order whatever order their handlers finish in (Kafka's contract:
clients match responses to requests by position as much as by correlation id). Each event carries
a sequence number; :meth:`respond` files a response against it, and :meth:`data_to_send` returns
the encoded parts of every response whose predecessors are all answered. A request may get no
response at all (Produce with acks=0): ``respond(event, None)``.

Zero copy and buffer lifetime
-----------------------------
``records`` fields of decoded requests (Produce) are memoryview slices of the receive buffer, not
copies. Such a request *pins* the buffer: until :meth:`release` is called for it (the broker does
so when the handler has finished), the bytes under it are never overwritten. While a buffer is
pinned, making room for more input switches to a fresh buffer (or the spare one) instead of
compacting in place; the pinned buffer lives on while views of it exist and becomes the spare once
released. Requests without records fields (every other request: ``bytes`` fields are copied by the
codec) pin nothing, and the buffer is reused in place.

Sizes: the buffer starts at ``DEFAULT_BUFFER_SIZE`` (256 KiB) and grows, for one frame that does
not fit, to exactly that frame (never beyond ``max_request_size + 4``); once that frame is parsed
and the buffer is needed again, it goes back to the default size, so a connection does not keep
a 100 MiB buffer after one large request. A frame grows its buffer with what arrives (at most 4x
the bytes received, ``_grown_size``), not with what its prefix announces, so a slow sender cannot
make the broker hold ``socket.request.max.bytes`` per connection by announcing it. See
docs/notes/connection.md for the measurements.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shardbroker.protocol.codec import Message, decode
from shardbroker.protocol.errors import ErrorCode, ProtocolError, RequestHeaderError
from shardbroker.protocol.headers import decode_request_header, encode_response_parts
from shardbroker.protocol.messages import REQUESTS, RequestHeader
from shardbroker.protocol.schema import Struct
from shardbroker.protocol.single_produce import SingleProduce, parse_single_produce

__all__ = [
    "DEFAULT_BUFFER_SIZE",
    "DEFAULT_MAX_REQUEST_SIZE",
    "BadRequest",
    "ConnectionClosed",
    "Event",
    "RequestReceived",
    "SaslTokenReceived",
    "ServerConnection",
    "SingleProduceReceived",
]

#: Kafka's ``socket.request.max.bytes`` default (KafkaConfig: 100 MiB).
DEFAULT_MAX_REQUEST_SIZE = 104857600
#: Initial receive buffer: 2.5x Kafka's ``socket.receive.buffer.bytes`` (100 KiB) and 16x
#: librdkafka's default batch.size (16 KiB), so a pipelined window of typical produce requests
#: fits without moving. Measured against 64 KiB and 1 MiB: docs/notes/connection.md.
DEFAULT_BUFFER_SIZE = 256 * 1024
#: Ask the kernel for at least this much per recv when the frame size is not known yet.
MIN_RECV = 16 * 1024

_SIZE = struct.Struct(">i")


# -- events ------------------------------------------------------------------------------------


class _Lease:
    """One pin of one receive buffer (see the module docstring)."""

    __slots__ = ("_buffer", "released")

    def __init__(self, buffer: _Buffer) -> None:
        self._buffer = buffer
        self.released = False
        buffer.pins += 1

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._buffer.pins -= 1
            if self._buffer.pins == 0 and self._buffer.on_unpinned is not None:
                self._buffer.on_unpinned(self._buffer)


@dataclass(eq=False, slots=True)
class RequestReceived:
    """A decoded request. ``request``'s records fields are views of the receive buffer (zero-copy),
    valid until ``ServerConnection.release(event)``."""

    header: RequestHeader
    request: Message
    api_key: int
    api_version: int
    correlation_id: int
    #: Bytes of the frame (after the size prefix), for metrics.
    size: int
    seq: int = field(repr=False)
    lease: _Lease | None = field(default=None, repr=False)


@dataclass(eq=False, slots=True)
class BadRequest:
    """A request that can be answered but not served: ``error_code`` is what to answer with
    (UNSUPPORTED_VERSION or INVALID_REQUEST)."""

    correlation_id: int
    api_key: int
    api_version: int
    error_code: ErrorCode
    message: str
    seq: int = field(repr=False)


@dataclass(eq=False, slots=True)
class ConnectionClosed:
    """The peer broke the protocol: close the connection (no further events follow)."""

    reason: str
    error_code: ErrorCode = ErrorCode.CORRUPT_MESSAGE


@dataclass(eq=False, slots=True)
class SingleProduceReceived:
    """A single-partition Produce request (``ServerConnection.single_produce``); its records are a
    view of the receive buffer, valid until ``ServerConnection.release(event)``."""

    request: SingleProduce
    #: Bytes of the frame (after the size prefix), as RequestReceived.size.
    size: int
    seq: int = field(repr=False)
    lease: _Lease = field(repr=False)
    api_key: int = 0  # Produce's, as RequestReceived.api_key

    @property
    def api_version(self) -> int:
        return self.request.api_version

    @property
    def correlation_id(self) -> int:
        return self.request.correlation_id


@dataclass(eq=False, slots=True)
class SaslTokenReceived:
    """A raw SASL token frame (legacy framing, ``ServerConnection.raw_sasl``)."""

    token: bytes
    seq: int = field(repr=False)


Event = RequestReceived | SingleProduceReceived | BadRequest | ConnectionClosed | SaslTokenReceived


# -- the receive buffer ------------------------------------------------------------------------


def _grown_size(pending: int, total: int) -> int:
    """The buffer for a frame of ``total`` bytes of which ``pending`` have arrived: at most 4x what
    has arrived, so a peer that announces a large frame and sends it slowly makes us hold about
    what it sent, not what it announced (forty connections announcing 8 MiB each held 320 MiB of
    zeros when the buffer was sized from the prefix). A frame gets its exact size once that is
    within 2x of the step, so a 1 MiB request that filled the 256 KiB default buffer moves once,
    straight to its own size (one extra 256 KiB copy, ~20 us, next to the ~60 us of allocating
    and filling 1 MiB). An anonymous mapping sized from the prefix would have cost nothing up
    front but 1.4 ms of page faults per 1 MiB request on this VM (against 60 us for a bytearray).
    """
    step = 4 * pending
    return total if 2 * step >= total else step


class _Buffer:
    __slots__ = ("data", "on_unpinned", "pins", "view")

    def __init__(self, size: int) -> None:
        self.data = bytearray(size)
        self.view = memoryview(self.data)
        self.pins = 0
        self.on_unpinned: Callable[[_Buffer], None] | None = None

    def __len__(self) -> int:
        return len(self.data)


_HAS_RECORDS: dict[type[Struct], bool] = {}


def _has_records(cls: type[Struct]) -> bool:
    """Whether decoded instances of ``cls`` may hold views of their input (records fields)."""
    known = _HAS_RECORDS.get(cls)
    if known is None:
        known = any(
            f.kind == "records" or (f.struct is not None and _has_records(f.struct)) for f in cls.FIELDS
        )
        _HAS_RECORDS[cls] = known
    return known


# -- responses in request order ----------------------------------------------------------------

_PENDING: Any = object()  # a slot whose response is not filed yet
_CLOSE: Any = object()  # "close the connection once everything before this is sent"


class ServerConnection:
    """One client connection's protocol state. Not thread-safe; no I/O.

    ``supported``: api key -> (min, max) versions the broker serves; a request outside it becomes
    a :class:`BadRequest` (UNSUPPORTED_VERSION) without its body being decoded. None: everything
    the codec knows.
    """

    def __init__(
        self,
        max_request_size: int = DEFAULT_MAX_REQUEST_SIZE,
        supported: dict[int, tuple[int, int]] | None = None,
        buffer_size: int = DEFAULT_BUFFER_SIZE,
    ) -> None:
        if max_request_size < 1:
            raise ValueError("max_request_size must be positive")
        self.max_request_size = max_request_size
        self.supported = supported
        # Never bigger than the largest frame can need.
        self._default_size = max(64, min(buffer_size, max_request_size + 4))
        self._buf = self._new_buffer(self._default_size)
        self._spare: _Buffer | None = None
        self._start = 0  # first unparsed byte
        self._end = 0  # end of received bytes
        self.closed = False
        self._next_seq = 0
        self._first_unsent = 0
        self._responses: deque[Any] = deque()  # slots seq _first_unsent.., parts / None / _CLOSE
        #: Set once a ``close_after`` response has been handed out by data_to_send().
        self.must_close = False
        #: Frames are raw SASL tokens (Kafka's legacy framing after SaslHandshake v0).
        self.raw_sasl = False
        #: Single-partition Produce requests become SingleProduceReceived events.
        self.single_produce = False

    # -- receiving ---------------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Feed received bytes (copied into the buffer); return the events they complete."""
        src = memoryview(data).cast("B")
        events: list[Event] = []
        pos = 0
        while pos < len(src) and not self.closed:
            dst = self.get_buffer()
            n = min(len(dst), len(src) - pos)
            dst[:n] = src[pos : pos + n]
            del dst
            events += self.buffer_updated(n)
            pos += n
        return events

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        """Where the next received bytes go (``BufferedProtocol.get_buffer``). Never empty."""
        if self.closed:
            return memoryview(bytearray(MIN_RECV))  # a sink: data after a close is ignored
        buf = self._buf
        pending = self._end - self._start
        total = self._frame_total()
        room = len(buf) - self._end
        if total is not None:
            # A frame that does not fit is received into the room left until that runs out, then
            # moved to a buffer at most 4x what has arrived (see _grown_size).
            fits = self._start + total <= len(buf) or room >= MIN_RECV
        else:
            fits = room >= min(MIN_RECV, len(buf) - pending)
        if not fits:
            self._relocate(pending, total)
        return self._buf.view[self._end :]

    def buffer_updated(self, nbytes: int) -> list[Event]:
        """``nbytes`` were written at the start of the last :meth:`get_buffer`; parse what is whole."""
        if self.closed:
            return []
        self._end += nbytes
        events: list[Event] = []
        buf = self._buf
        mv = buf.view
        while True:
            pending = self._end - self._start
            if pending < 4:
                break
            (size,) = _SIZE.unpack_from(mv, self._start)
            if size < 0 or size > self.max_request_size:
                events.append(self._close(self._size_reason(size)))
                return events
            if pending < 4 + size:
                break
            first = self._start + 4
            self._start = first + size
            event = self._parse(buf, mv[first : first + size])
            events.append(event)
            if isinstance(event, ConnectionClosed):
                return events
        if self._start == self._end and buf.pins == 0:
            self._start = self._end = 0  # reuse the buffer from its beginning
        return events

    def release(self, event: Event) -> None:
        """The handler of ``event`` is done with its records views: the buffer may be reused."""
        if isinstance(event, RequestReceived | SingleProduceReceived) and event.lease is not None:
            event.lease.release()

    # -- responding --------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Requests received whose response has not been handed out by data_to_send()."""
        return self._next_seq - self._first_unsent

    def respond(
        self,
        event: RequestReceived | SingleProduceReceived | BadRequest,
        response: Message | None,
        *,
        version: int | None = None,
        close_after: bool = False,
    ) -> None:
        """File the response to ``event`` (None: the request gets no response).

        ``version``: encode at this version instead of the request's (an ApiVersions error is
        answered at v0). ``close_after``: once this response (if any) is sent, close. Raises
        ProtocolError if ``response`` cannot be encoded at that version; nothing is filed then.
        """
        if response is None:
            parts: Any = _CLOSE if close_after else None
        else:
            v = event.api_version if version is None else version
            parts = encode_response_parts(event.correlation_id, event.api_key, v, response)
            if close_after:
                parts = [*parts, _CLOSE]
        self._file(event.seq, parts)

    def respond_encoded(self, event: SingleProduceReceived, frame: bytes) -> None:
        """File an answer already encoded whole (size prefix and header included)."""
        self._file(event.seq, [frame])

    def respond_token(
        self, event: SaslTokenReceived, token: bytes | None, *, close_after: bool = False
    ) -> None:
        """Answer a raw SASL token with a size-prefixed ``token`` (None: nothing, then close)."""
        if token is None:
            self._file(event.seq, _CLOSE)
        else:
            parts: list[Any] = [_SIZE.pack(len(token)) + token]
            self._file(event.seq, [*parts, _CLOSE] if close_after else parts)

    def _file(self, seq: int, parts: Any) -> None:
        index = seq - self._first_unsent
        if not 0 <= index < len(self._responses) or self._responses[index] is not _PENDING:
            raise ValueError(f"request {seq} already answered")
        self._responses[index] = parts

    def data_to_send(self) -> list[Any]:
        """Encoded responses now due, in request order: bytes and, for file ranges, the
        records objects the handler put in the response (see ``codec.encode_parts``)."""
        out: list[Any] = []
        if self.must_close:
            return out
        responses = self._responses
        while responses and responses[0] is not _PENDING:
            parts = responses.popleft()
            self._first_unsent += 1
            if parts is None:
                continue
            if parts is _CLOSE:
                self.must_close = True
                break
            if parts[-1] is _CLOSE:
                out += parts[:-1]
                self.must_close = True
                break
            out += parts
        return out

    # -- internals ---------------------------------------------------------------------------

    def _parse(self, buf: _Buffer, frame: memoryview) -> Event:
        seq = self._next_seq
        if self.raw_sasl:
            self._expect(seq)
            return SaslTokenReceived(bytes(frame), seq)
        if self.single_produce and len(frame) > 2 and frame[0] == 0 and frame[1] == 0:  # Produce
            single = parse_single_produce(frame)
            if single is not None and self._served(0, single.api_version):
                self._expect(seq)
                return SingleProduceReceived(single, len(frame), seq, _Lease(buf))
        try:
            header, offset = decode_request_header(frame)
        except RequestHeaderError as exc:
            self._expect(seq)
            return BadRequest(exc.correlation_id, exc.api_key, exc.api_version, exc.error_code, str(exc), seq)
        except ProtocolError as exc:
            return self._close(f"malformed request header: {exc}")
        api_key = header.request_api_key
        api_version = header.request_api_version
        correlation_id = header.correlation_id
        cls = REQUESTS[api_key]
        if not self._served(api_key, api_version):
            assert self.supported is not None
            served = self.supported.get(api_key)
            self._expect(seq)
            what = "not served" if served is None else f"served: {served[0]}-{served[1]}"
            return BadRequest(
                correlation_id,
                api_key,
                api_version,
                ErrorCode.UNSUPPORTED_VERSION,
                f"{cls.API_NAME} v{api_version} is not supported ({what})",
                seq,
            )
        try:
            # Trailing bytes are ignored, as Kafka's request parsing does: librdkafka 2.16 sends
            # Metadata v12 "all topics" requests with 3 stray bytes after the body (seen on the
            # wire: ``00 | 00 00 00 | 01 00 00``, its 4-byte array count shrunk to a varint).
            request = decode(cls, frame[offset:], api_version, allow_trailing=True)
        except ProtocolError as exc:
            return self._close(f"malformed {cls.API_NAME} v{api_version} request: {exc}")
        self._expect(seq)
        lease = _Lease(buf) if _has_records(cls) else None
        return RequestReceived(header, request, api_key, api_version, correlation_id, len(frame), seq, lease)

    def _served(self, api_key: int, api_version: int) -> bool:
        if self.supported is None:
            return True
        served = self.supported.get(api_key)
        return served is not None and served[0] <= api_version <= served[1]

    def _expect(self, seq: int) -> None:
        self._next_seq = seq + 1
        self._responses.append(_PENDING)

    def _close(self, reason: str) -> ConnectionClosed:
        self.closed = True
        return ConnectionClosed(reason)

    def _size_reason(self, size: int) -> str:
        if size < 0:
            return f"negative frame size {size}"
        return f"frame of {size} bytes is larger than socket.request.max.bytes ({self.max_request_size})"

    def _frame_total(self) -> int | None:
        """Size prefix + frame of the frame being received, if its prefix is in (and sane)."""
        if self._end - self._start < 4:
            return None
        size: int = _SIZE.unpack_from(self._buf.view, self._start)[0]
        if size < 0 or size > self.max_request_size:
            return None  # buffer_updated closes on it; nothing more will be read
        return 4 + size

    def _relocate(self, pending: int, total: int | None) -> None:
        """Move the partial frame to the front of a buffer big enough for it (see module doc)."""
        # Without a known size fewer than 4 bytes are pending: the default buffer always fits.
        need = self._default_size if total is None else max(self._default_size, _grown_size(pending, total))
        old = self._buf
        if (
            old.pins == 0
            and len(old) >= need
            and (len(old) == self._default_size or need > self._default_size)
        ):
            target = old  # compact in place (memmove; the partial frame is small)
        else:
            spare = self._spare
            if spare is not None and spare.pins == 0 and len(spare) >= need and need <= self._default_size:
                target = spare
                self._spare = None
            else:
                target = self._new_buffer(max(need, self._default_size))
            if old.pins:
                old.on_unpinned = self._keep_spare
            elif len(old) == self._default_size:
                self._spare = old
        target.view[:pending] = old.view[self._start : self._end]
        self._buf = target
        self._start = 0
        self._end = pending

    def _keep_spare(self, buffer: _Buffer) -> None:
        buffer.on_unpinned = None
        if buffer is not self._buf and self._spare is None and len(buffer) == self._default_size:
            self._spare = buffer

    def _new_buffer(self, size: int) -> _Buffer:
        return _Buffer(size)
