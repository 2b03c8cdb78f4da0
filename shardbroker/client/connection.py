"""One blocking TCP connection to one Kafka broker, speaking our sans-IO codec. Opens sockets.

Deliberately simple (a CLI and test client, not a hot path): a plain blocking socket with a
timeout on every connect, send and receive, one request in flight at a time (or several,
written with ``send_pipelined`` and read in order with ``receive``: the mirror's Produce), no threads. With
:class:`~shardbroker.client.client_security.ClientSecurity` it speaks TLS (``ssl`` on the blocking
socket) and authenticates with SASL as Kafka's clients do: ApiVersions, SaslHandshake v1, then
SaslAuthenticate round trips (client/sasl_client.py) before any other request. It does not
re-authenticate (KIP-368): a session the broker limits with ``connections.max.reauth.ms`` ends
when it expires, and the next request reconnects. The
connection negotiates API versions once (ApiVersions), then :meth:`BrokerConnection.send` picks,
for each request, the highest version both this client (``CLIENT_VERSIONS``) and the broker
support. Requests the broker may hold on purpose (Fetch's ``max_wait_ms``, JoinGroup's rebalance)
pass a longer ``timeout`` for that one answer; an acks=0 Produce passes ``expect_response=False``
(Kafka sends no answer to it).

Errors: :class:`BrokerUnreachable` (connect refused, reset, closed, or a timeout: the message
names the address), :class:`KafkaApiError` (a Kafka error code, by its ``ErrorCode`` name) and
:class:`UnsupportedApi` (no common version).
"""

from __future__ import annotations

import itertools
import socket
import ssl
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from shardbroker import __version__
from shardbroker.protocol.codec import Message, decode
from shardbroker.protocol.errors import ErrorCode, ProtocolError
from shardbroker.protocol.headers import decode_response, encode_request_parts
from shardbroker.protocol.messages import (
    ApiVersionsRequest,
    ApiVersionsResponse,
    RequestHeader,
    SaslAuthenticateRequest,
    SaslAuthenticateResponse,
    SaslHandshakeRequest,
    SaslHandshakeResponse,
)

if TYPE_CHECKING:
    from shardbroker.client.client_security import ClientSecurity
    from shardbroker.client.receive_buffers import ReceiveBuffers

__all__ = [
    "CLIENT_VERSIONS",
    "DEFAULT_TIMEOUT",
    "AdminClientError",
    "BrokerConnection",
    "BrokerUnreachable",
    "KafkaApiError",
    "Pipelined",
    "UnsupportedApi",
    "format_address",
    "parse_address",
]

DEFAULT_TIMEOUT = 10.0
#: Largest response frame accepted (a Metadata answer for many thousands of partitions fits).
MAX_RESPONSE_SIZE = 256 * 1024 * 1024
_SIZE = struct.Struct(">i")

#: api key -> (lowest, highest) version this client can encode and decode. The request builders in
#: admin_cluster.py and admin_groups.py handle the layout changes inside these ranges (FindCoordinator v4,
#: OffsetFetch v8).
CLIENT_VERSIONS: dict[int, tuple[int, int]] = {
    0: (3, 11),  # Produce (v3+: record batches v2 only, as Kafka 4 requires)
    1: (4, 16),  # Fetch (v4+: isolation level, last stable offset; v13+: topic ids)
    2: (1, 10),  # ListOffsets (v1+: one offset per partition, timestamps)
    3: (1, 12),  # Metadata (v1+: null topics = all topics)
    8: (2, 9),  # OffsetCommit (v2+: no commit timestamp per partition)
    9: (2, 9),  # OffsetFetch (v2+: null topics = all committed offsets)
    10: (0, 6),  # FindCoordinator
    11: (1, 9),  # JoinGroup (v1+: rebalance timeout; v4+: MEMBER_ID_REQUIRED round)
    12: (0, 4),  # Heartbeat
    13: (0, 5),  # LeaveGroup (v3+: members array)
    14: (0, 5),  # SyncGroup
    15: (0, 5),  # DescribeGroups
    16: (0, 5),  # ListGroups
    17: (1, 1),  # SaslHandshake (v1: the tokens travel in SaslAuthenticate frames)
    18: (0, 4),  # ApiVersions
    19: (1, 7),  # CreateTopics (v1+: validate_only, error messages)
    20: (1, 6),  # DeleteTopics (v6: topics as name/id structs)
    22: (0, 4),  # InitProducerId (idempotent producers)
    24: (0, 3),  # AddPartitionsToTxn (v4+: brokers' batched form)
    25: (0, 4),  # AddOffsetsToTxn
    26: (0, 4),  # EndTxn (v5: KIP-890's epoch bump on every end, not used)
    27: (0, 1),  # WriteTxnMarkers (transactions abort)
    28: (0, 4),  # TxnOffsetCommit
    29: (1, 3),  # DescribeAcls (v1+: resource pattern types)
    30: (1, 3),  # CreateAcls
    31: (1, 3),  # DeleteAcls
    32: (1, 4),  # DescribeConfigs (v1+: config source per entry)
    34: (0, 2),  # AlterReplicaLogDirs
    35: (0, 4),  # DescribeLogDirs (v4: total and usable bytes)
    36: (0, 2),  # SaslAuthenticate
    37: (0, 3),  # CreatePartitions
    42: (0, 2),  # DeleteGroups
    43: (1, 2),  # ElectLeaders (v1+: election type)
    44: (0, 1),  # IncrementalAlterConfigs
    45: (0, 0),  # AlterPartitionReassignments (partition moves)
    46: (0, 0),  # ListPartitionReassignments
    48: (0, 1),  # DescribeClientQuotas
    49: (0, 1),  # AlterClientQuotas
    50: (0, 0),  # DescribeUserScramCredentials
    51: (0, 0),  # AlterUserScramCredentials
    57: (1, 2),  # UpdateFeatures (v1+: upgrade type, validate only)
    61: (0, 0),  # DescribeProducers
    65: (0, 0),  # DescribeTransactions
    66: (0, 1),  # ListTransactions (v1: duration filter)
    69: (0, 0),  # ConsumerGroupDescribe (consumer-protocol groups, KIP-848)
    75: (0, 0),  # DescribeTopicPartitions (KIP-966)
}

M = TypeVar("M", bound=Message)


class AdminClientError(Exception):
    """Base of the admin client's errors."""


class BrokerUnreachable(AdminClientError):
    """A broker could not be reached, or stopped answering (the message names its address)."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(f"broker {address} unreachable: {reason}")
        self.address = address
        self.reason = reason


class KafkaApiError(AdminClientError):
    """A Kafka error code in a response. ``error_code`` is an ``ErrorCode`` (or the raw int when the
    code is not in the table); ``str()`` starts with the code's name."""

    def __init__(self, error_code: int, message: str = "") -> None:
        try:
            code: ErrorCode | int = ErrorCode(error_code)
            name = ErrorCode(error_code).name
        except ValueError:
            code, name = error_code, f"ERROR_{error_code}"
        super().__init__(f"{name}: {message}" if message else name)
        self.error_code = code
        self.name = name
        self.message = message

    @property
    def retriable(self) -> bool:
        """Kafka's RetriableException: the same request may succeed if sent again."""
        return isinstance(self.error_code, ErrorCode) and self.error_code.retriable


class UnsupportedApi(KafkaApiError):
    """The broker does not serve an API at any version this client speaks."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.UNSUPPORTED_VERSION, message)


def parse_address(text: str, default_port: int = 9092) -> tuple[str, int]:
    """``host:port`` (or ``host``, or ``[v6]:port``) -> (host, port); ValueError when malformed."""
    text = text.strip()
    if not text:
        raise ValueError("empty address")
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"bad address {text!r}: expected [HOST]:PORT")
        port_text = rest[1:] if rest else str(default_port)
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif ":" not in text:
        host, port_text = text, str(default_port)
    else:
        raise ValueError(f"bad address {text!r}: expected HOST:PORT")
    if not host:
        raise ValueError(f"bad address {text!r}: no host")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"bad address {text!r}: port {port_text!r} is not a number") from None
    if not 0 < port < 65536:
        raise ValueError(f"bad address {text!r}: port {port} out of range")
    return host, port


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True, slots=True)
class Pipelined:
    """A request written by :meth:`BrokerConnection.send_pipelined`, its answer not yet read."""

    sock: socket.socket
    correlation_id: int
    what: str
    api_key: int
    version: int


class BrokerConnection:
    """A blocking connection to one broker. ``connect()`` opens it and negotiates versions."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        client_id: str = "shardbroker-admin",
        security: ClientSecurity | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.address = format_address(host, port)
        self.timeout = timeout
        self.client_id = client_id
        self.security = security
        self.sock: socket.socket | None = None
        #: The broker's ApiVersions answer: api key -> (min, max).
        self.broker_versions: dict[int, tuple[int, int]] = {}
        self._correlation = itertools.count(1)

    # -- lifecycle ------------------------------------------------------------------------------

    def connect(self) -> BrokerConnection:
        if self.sock is not None:
            return self
        try:
            self.sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except TimeoutError:
            raise BrokerUnreachable(self.address, f"connect timed out after {self.timeout:g} s") from None
        except OSError as exc:
            raise BrokerUnreachable(self.address, exc.strerror or str(exc)) from None
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            if self.security is not None and self.security.tls:
                self._start_tls(self.security)
            self._negotiate()
            if self.security is not None and self.security.sasl:
                self._authenticate(self.security)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def __enter__(self) -> BrokerConnection:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- security -------------------------------------------------------------------------------

    def _start_tls(self, security: ClientSecurity) -> None:
        assert self.sock is not None
        try:
            context = security.ssl_context()
        except ValueError as exc:
            raise AdminClientError(str(exc)) from None
        try:
            self.sock = context.wrap_socket(self.sock, server_hostname=self.host)
        except TimeoutError:
            raise BrokerUnreachable(
                self.address, f"TLS handshake timed out after {self.timeout:g} s"
            ) from None
        except ssl.SSLError as exc:
            raise BrokerUnreachable(self.address, f"TLS handshake failed: {exc.reason or exc}") from None
        except OSError as exc:
            raise BrokerUnreachable(self.address, f"TLS handshake: {exc.strerror or exc}") from None

    def _authenticate(self, security: ClientSecurity) -> None:
        """SaslHandshake v1 and the SaslAuthenticate round trips; a refusal is the broker's error
        (UNSUPPORTED_SASL_MECHANISM with the enabled list, SASL_AUTHENTICATION_FAILED...)."""
        from shardbroker.client.sasl_client import SaslClientError, sasl_client

        assert security.sasl_mechanism and security.username is not None and security.password is not None
        mechanism = security.sasl_mechanism
        handshake: SaslHandshakeResponse = self.send(
            SaslHandshakeRequest(mechanism=mechanism), self.version_for(SaslHandshakeRequest.API_KEY)
        )
        if handshake.error_code != ErrorCode.NONE:
            enabled = ", ".join(handshake.mechanisms) or "none"
            raise KafkaApiError(
                handshake.error_code, f"SASL mechanism {mechanism} at {self.address} (enabled: {enabled})"
            )
        client = sasl_client(mechanism, security.username, security.password)
        version = self.version_for(SaslAuthenticateRequest.API_KEY, "SaslAuthenticate")
        try:
            token = client.evaluate(b"")
            while not client.complete:
                answer: SaslAuthenticateResponse = self.send(
                    SaslAuthenticateRequest(auth_bytes=token), version
                )
                if answer.error_code != ErrorCode.NONE:
                    what = f"{mechanism} as '{security.username}' at {self.address}"
                    detail = f": {answer.error_message}" if answer.error_message else ""
                    raise KafkaApiError(answer.error_code, what + detail)
                token = client.evaluate(answer.auth_bytes)
        except SaslClientError as exc:
            raise KafkaApiError(ErrorCode.SASL_AUTHENTICATION_FAILED, f"{self.address}: {exc}") from None

    # -- versions -------------------------------------------------------------------------------

    def _negotiate(self) -> None:
        """ApiVersions at our highest version; a broker that does not serve it answers v0 with
        UNSUPPORTED_VERSION and its range, and we ask again at the highest version we share."""
        version = CLIENT_VERSIONS[ApiVersionsRequest.API_KEY][1]
        for _ in range(2):
            request = ApiVersionsRequest(
                client_software_name="shardbroker-admin", client_software_version=__version__
            )
            frame = self._roundtrip(request, version)
            response = self._decode_api_versions(frame, version)
            ranges = {k.api_key: (k.min_version, k.max_version) for k in response.api_keys}
            if response.error_code == ErrorCode.UNSUPPORTED_VERSION and ApiVersionsRequest.API_KEY in ranges:
                lo, hi = ranges[ApiVersionsRequest.API_KEY]
                version = min(hi, version)
                if version < lo:
                    break
                continue
            if response.error_code != ErrorCode.NONE:
                raise KafkaApiError(response.error_code, f"ApiVersions from {self.address}")
            self.broker_versions = ranges
            return
        raise UnsupportedApi(f"broker {self.address} serves no ApiVersions version this client speaks")

    def _decode_api_versions(self, frame: memoryview, version: int) -> ApiVersionsResponse:
        try:
            _, msg = decode_response(frame, ApiVersionsRequest.API_KEY, version)
        except ProtocolError:
            # An UNSUPPORTED_VERSION answer is encoded as v0 whatever version was asked for.
            try:
                msg = decode(ApiVersionsResponse, frame[4:], 0)
            except ProtocolError as exc:
                raise BrokerUnreachable(self.address, f"undecodable ApiVersions response: {exc}") from None
        assert isinstance(msg, ApiVersionsResponse)
        return msg

    def version_for(self, api_key: int, name: str = "") -> int:
        """The highest version of ``api_key`` both sides support; UnsupportedApi if none."""
        mine = CLIENT_VERSIONS.get(api_key)
        theirs = self.broker_versions.get(api_key)
        label = name or f"api key {api_key}"
        if mine is None:
            raise UnsupportedApi(f"this client does not speak {label}")
        if theirs is None:
            raise UnsupportedApi(f"broker {self.address} does not serve {label}")
        lo, hi = max(mine[0], theirs[0]), min(mine[1], theirs[1])
        if lo > hi:
            raise UnsupportedApi(
                f"broker {self.address} serves {label} v{theirs[0]}-{theirs[1]}, "
                f"this client v{mine[0]}-{mine[1]}"
            )
        return hi

    # -- requests -------------------------------------------------------------------------------

    def send(
        self,
        request: Message,
        version: int | None = None,
        *,
        timeout: float | None = None,
        expect_response: bool = True,
        buffers: ReceiveBuffers | None = None,
    ) -> Any:
        """Send ``request`` (at ``version``, else the negotiated one) and return the decoded response.

        ``timeout`` (seconds) replaces the connection's for this answer only (a Fetch that may wait
        ``max_wait_ms``, a JoinGroup held for a rebalance). With ``expect_response=False`` (an acks=0
        Produce) nothing is read and None is returned. ``buffers``: the answer is read into one of
        them (the mirror's Fetch) instead of a new buffer."""
        self.connect()
        if version is None:
            version = self.version_for(request.API_KEY, type(request).API_NAME)
        if not expect_response:
            self._write(request, version)
            return None
        frame = self._roundtrip(request, version, timeout, buffers)
        try:
            _, response = decode_response(frame, request.API_KEY, version)
        except ProtocolError as exc:
            self.close()
            raise BrokerUnreachable(
                self.address, f"undecodable {type(request).API_NAME} v{version} response: {exc}"
            ) from None
        return response

    def _write(self, request: Message, version: int) -> tuple[socket.socket, int, str]:
        """Send one request frame; returns the socket, its correlation id and a label for errors."""
        sock = self.sock
        if sock is None:
            raise BrokerUnreachable(self.address, "not connected")
        correlation_id = next(self._correlation)
        header = RequestHeader(
            request_api_key=request.API_KEY,
            request_api_version=version,
            correlation_id=correlation_id,
            client_id=self.client_id,
        )
        what = f"{type(request).API_NAME} v{version}"
        try:
            _send_parts(sock, encode_request_parts(header, request))
        except OSError as exc:
            self.close()
            raise BrokerUnreachable(self.address, f"{what}: {exc.strerror or exc}") from None
        except BaseException:  # interrupted part way through the frame
            self.close()
            raise
        return sock, correlation_id, what

    def send_pipelined(self, request: Message, version: int | None = None) -> Pipelined:
        """Write ``request`` without waiting for its answer (Kafka answers a connection's
        requests in order): :meth:`receive` it later, in the order sent."""
        self.connect()
        if version is None:
            version = self.version_for(request.API_KEY, type(request).API_NAME)
        sock, correlation_id, what = self._write(request, version)
        return Pipelined(sock, correlation_id, what, request.API_KEY, version)

    def receive(self, pending: Pipelined, timeout: float | None = None) -> Any:
        """The decoded answer to a :meth:`send_pipelined` request."""
        if pending.sock is not self.sock:
            raise BrokerUnreachable(self.address, f"connection lost before the answer to {pending.what}")
        frame = self._read_frame(pending.sock, pending.correlation_id, pending.what, timeout)
        try:
            return decode_response(frame, pending.api_key, pending.version)[1]
        except ProtocolError as exc:
            self.close()
            raise BrokerUnreachable(self.address, f"undecodable {pending.what} response: {exc}") from None

    def _roundtrip(
        self,
        request: Message,
        version: int,
        timeout: float | None = None,
        buffers: ReceiveBuffers | None = None,
    ) -> memoryview:
        return self._read_frame(*self._write(request, version), timeout, buffers)

    def _read_frame(
        self,
        sock: socket.socket,
        correlation_id: int,
        what: str,
        timeout: float | None,
        buffers: ReceiveBuffers | None = None,
    ) -> memoryview:
        wait = self.timeout if timeout is None else timeout
        try:
            sock.settimeout(wait)
            size = _SIZE.unpack(self._recv_into(sock, memoryview(bytearray(4)), what))[0]
            if not 4 <= size <= MAX_RESPONSE_SIZE:
                raise BrokerUnreachable(
                    self.address, f"bad response size {size} to {what} (not a Kafka broker?)"
                )
            view = memoryview(bytearray(size)) if buffers is None else buffers.take(size)
            frame = self._recv_into(sock, view, what)
            sock.settimeout(self.timeout)
        except TimeoutError:
            self.close()
            raise BrokerUnreachable(self.address, f"no response to {what} within {wait:g} s") from None
        except BrokerUnreachable:
            self.close()
            raise
        except OSError as exc:
            self.close()
            raise BrokerUnreachable(self.address, f"{what}: {exc.strerror or exc}") from None
        except BaseException:
            # Interrupted (Ctrl-C) with the answer unread: it would be taken for the next
            # request's, so the connection cannot be used again.
            self.close()
            raise
        got = _SIZE.unpack_from(frame, 0)[0]
        if got != correlation_id:
            self.close()
            raise BrokerUnreachable(
                self.address,
                f"response correlation id {got} does not match request {correlation_id} ({what})",
            )
        return frame

    def _recv_into(self, sock: socket.socket, view: memoryview, what: str) -> memoryview:
        """Fill ``view`` from ``sock``; returns it."""
        n = view.nbytes
        got = 0
        while got < n:
            k = sock.recv_into(view[got:])
            if k == 0:
                raise BrokerUnreachable(self.address, f"connection closed by the broker during {what}")
            got += k
        return view  # no copy: a Fetch answer is megabytes, and decoding only reads it

    def __repr__(self) -> str:
        return f"BrokerConnection({self.address})"


#: at most this many buffers per sendmsg (Linux's IOV_MAX is 1024)
_IOV_MAX = 1024


def _send_parts(sock: socket.socket, parts: list[Any]) -> None:
    """Write ``parts`` in order without joining them: a Produce's batches go from their fetched
    buffers to the socket (sendmsg, gathered by the kernel). TLS sockets have no sendmsg: there,
    one sendall per part."""
    if len(parts) == 1 or isinstance(sock, ssl.SSLSocket):
        for part in parts:
            sock.sendall(part)
        return
    views = [memoryview(p) for p in parts]
    while views:
        sent = sock.sendmsg(views[:_IOV_MAX])
        done = 0
        while done < len(views) and sent >= views[done].nbytes:
            sent -= views[done].nbytes
            done += 1
        del views[:done]
        if sent:
            views[0] = views[0][sent:]
