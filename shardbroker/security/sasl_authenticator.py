"""The server side of one connection's SASL authentication, without I/O: Kafka's
SaslServerAuthenticator (and the SocketServer's KIP-368 checks) as a state machine.

States, as Kafka's: before anything, ApiVersions (once) or SaslHandshake; after ApiVersions,
SaslHandshake only; after a handshake, SaslAuthenticate tokens until the mechanism completes or
fails; then COMPLETE, where every API is served. ``gate`` says what the connection does with each
request (Kafka's answers): before the handshake any other API closes the connection ("Unexpected
Kafka request ... during SASL handshake"); after it, any other API is answered with its error
response carrying ILLEGAL_SASL_STATE and the connection closes; an unsupported mechanism is
answered UNSUPPORTED_SASL_MECHANISM with the enabled list, then closed; a failed exchange is
answered SASL_AUTHENTICATION_FAILED with Kafka's message, then closed.

SaslHandshake v0 means the following tokens come as raw size-prefixed frames without Kafka
headers (Kafka's legacy framing, ``legacy``); v1 wraps them in SaslAuthenticate requests.

KIP-368: once complete, the session lives ``min(connections.max.reauth.ms, the credential's
remaining lifetime)`` (an OAUTHBEARER token's ``exp``; ``connections.max.reauth.ms`` 0: no limit
from the broker), sent to the client as ``session_lifetime_ms``. After it, the next request that
is not a re-authentication closes the connection. A client that used SaslAuthenticate v1+
re-authenticates with SaslHandshake + SaslAuthenticate on the same connection: the mechanism and
the principal must stay the same (Kafka's messages otherwise), and the lifetime starts again; a
SCRAM user removed meanwhile fails. Deviation: Kafka closes a re-authentication that changes the
mechanism without a response; here the SaslAuthenticate is answered with Kafka's message first.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode
from shardbroker.security.principal import KafkaPrincipal
from shardbroker.security.sasl import SaslAuthenticationFailed, SaslServer

__all__ = [
    "AuthenticateResult",
    "Gate",
    "HandshakeResult",
    "SaslAuthenticator",
    "SaslState",
]

API_VERSIONS: Final = m.ApiVersionsRequest.API_KEY
SASL_HANDSHAKE: Final = m.SaslHandshakeRequest.API_KEY
SASL_AUTHENTICATE: Final = m.SaslAuthenticateRequest.API_KEY
_LONG_MAX: Final = (1 << 63) - 1


class SaslState(enum.Enum):
    HANDSHAKE_OR_VERSIONS = "handshake or ApiVersions"
    HANDSHAKE = "handshake"
    AUTHENTICATE = "authenticate"
    REAUTH_BAD_MECHANISM = "re-authentication with another mechanism"
    COMPLETE = "complete"
    FAILED = "failed"


class Gate(enum.Enum):
    """What the connection does with a request."""

    SERVE = "serve"
    #: Close without answering (a request before the SASL handshake; a failed exchange).
    CLOSE = "close"
    #: Answer the API's error response with ILLEGAL_SASL_STATE, then close.
    ILLEGAL_STATE = "illegal state"
    #: The session expired (KIP-368): close.
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class HandshakeResult:
    error: ErrorCode
    #: The listener's enabled mechanisms (Kafka lists them in every handshake answer it builds).
    mechanisms: Sequence[str]
    close: bool


@dataclass(frozen=True, slots=True)
class AuthenticateResult:
    error: ErrorCode = ErrorCode.NONE
    error_message: str | None = None
    auth_bytes: bytes = b""
    #: Sent when the exchange completed (0: no limit).
    session_lifetime_ms: int = 0
    close: bool = False
    #: The authenticated principal, when this token completed the exchange.
    principal: KafkaPrincipal | None = None
    #: Why it failed, for the broker's log (never a secret).
    failure_reason: str | None = None
    #: The user name the client gave, when it failed ("" if it gave none; unverified).
    user: str = ""


class SaslAuthenticator:
    """One connection's SASL state (see the module docstring). ``now`` is monotonic seconds,
    ``now_ms`` wall-clock milliseconds (credential expiry times are wall-clock)."""

    def __init__(self) -> None:
        self.state = SaslState.HANDSHAKE_OR_VERSIONS
        self.mechanism: str | None = None
        self.principal: KafkaPrincipal | None = None
        #: Monotonic time the session expires at, once complete (None: never).
        self.session_expiry: float | None = None
        #: Tokens arrive as raw frames (SaslHandshake v0) until the exchange ends.
        self.legacy = False
        #: The client sent SaslAuthenticate v1+ (Kafka allows re-authentication only then).
        self.client_supports_reauth = False
        self.reauthenticating = False
        self._server: SaslServer | None = None
        self._bad_mechanism_message = ""

    # -- which requests are served -------------------------------------------------------------

    def gate(self, api_key: int, now: float) -> Gate:
        """What to do with a decoded request (ApiVersions before the handshake moves on)."""
        state = self.state
        if state is SaslState.COMPLETE:
            expired = self.session_expiry is not None and now >= self.session_expiry
            if not expired or (api_key == SASL_HANDSHAKE and self.client_supports_reauth):
                return Gate.SERVE
            return Gate.EXPIRED
        if state is SaslState.HANDSHAKE_OR_VERSIONS and api_key == API_VERSIONS:
            self.state = SaslState.HANDSHAKE
            return Gate.SERVE
        if state in (SaslState.HANDSHAKE_OR_VERSIONS, SaslState.HANDSHAKE):
            return Gate.SERVE if api_key == SASL_HANDSHAKE else Gate.CLOSE
        if state in (SaslState.AUTHENTICATE, SaslState.REAUTH_BAD_MECHANISM):
            return Gate.SERVE if api_key == SASL_AUTHENTICATE else Gate.ILLEGAL_STATE
        return Gate.CLOSE

    def gate_bad_request(self, api_key: int, now: float) -> Gate:
        """A request that cannot be served as sent (e.g. an unsupported version): answered only
        once authenticated, or for ApiVersions before the handshake (Kafka's UNSUPPORTED_VERSION)."""
        if self.state is SaslState.COMPLETE:
            return self.gate(api_key, now)
        if self.state is SaslState.HANDSHAKE_OR_VERSIONS and api_key == API_VERSIONS:
            return Gate.SERVE
        return Gate.CLOSE

    # -- SaslHandshake ---------------------------------------------------------------------------

    def handshake(
        self, mechanism: str, version: int, enabled: Sequence[str], new_server: Callable[[str], SaslServer]
    ) -> HandshakeResult:
        """Start an exchange with ``mechanism`` (or a re-authentication, once complete)."""
        if self.state is SaslState.COMPLETE:
            if not self.client_supports_reauth or version == 0:
                # Kafka's KafkaApis answer: not a re-authentication, so a SASL request out of place.
                return HandshakeResult(ErrorCode.ILLEGAL_SASL_STATE, (), close=False)
            self.reauthenticating = True
        elif self.state not in (SaslState.HANDSHAKE_OR_VERSIONS, SaslState.HANDSHAKE):
            self.state = SaslState.FAILED
            return HandshakeResult(ErrorCode.ILLEGAL_SASL_STATE, (), close=True)
        if mechanism not in enabled:
            self.state = SaslState.FAILED
            return HandshakeResult(ErrorCode.UNSUPPORTED_SASL_MECHANISM, enabled, close=True)
        if self.reauthenticating and mechanism != self.mechanism:
            self._bad_mechanism_message = (
                f"SASL mechanism '{mechanism}' requested by client is not supported for "
                f"re-authentication of mechanism '{self.mechanism}'"
            )
            self.state = SaslState.REAUTH_BAD_MECHANISM
            return HandshakeResult(ErrorCode.NONE, enabled, close=False)
        try:
            self._server = new_server(mechanism)
        except ValueError:
            self.state = SaslState.FAILED
            return HandshakeResult(ErrorCode.UNSUPPORTED_SASL_MECHANISM, enabled, close=True)
        self.mechanism = mechanism
        self.legacy = version == 0
        self.state = SaslState.AUTHENTICATE
        return HandshakeResult(ErrorCode.NONE, enabled, close=False)

    # -- SaslAuthenticate (or a raw token) -----------------------------------------------------

    def authenticate(
        self, token: bytes, version: int | None, now: float, now_ms: int, max_reauth_ms: int
    ) -> AuthenticateResult:
        """Evaluate one client token; ``version`` None: a raw token (legacy framing)."""
        if self.state is SaslState.COMPLETE and not self.reauthenticating:
            text = "SaslAuthenticate request received after successful authentication"
            return AuthenticateResult(ErrorCode.ILLEGAL_SASL_STATE, text)
        if self.state is SaslState.REAUTH_BAD_MECHANISM:
            return self._fail(self._bad_mechanism_message, self._bad_mechanism_message)
        server = self._server
        if self.state is not SaslState.AUTHENTICATE or server is None:
            self.state = SaslState.FAILED
            text = f"Unexpected SaslAuthenticate in state {self.state.value}"
            return AuthenticateResult(ErrorCode.ILLEGAL_SASL_STATE, text, close=True)
        if version is not None and version > 0:
            self.client_supports_reauth = True
        try:
            challenge = server.evaluate_response(token)
        except SaslAuthenticationFailed as exc:
            return self._fail(exc.reason, exc.client_message)
        if not server.complete:
            return AuthenticateResult(auth_bytes=challenge)
        principal = KafkaPrincipal.user(server.authorization_id)
        previous = self.principal
        if self.reauthenticating and previous is not None and principal != previous:
            text = (
                "Cannot change principals during re-authentication from "
                f"{previous.principal_type}.{previous.name}: {principal.principal_type}.{principal.name}"
            )
            return self._fail(text, text)
        lifetime_ms = self._session_lifetime_ms(server.credential_expiry_ms, now, now_ms, max_reauth_ms)
        self.principal = principal
        self.state = SaslState.COMPLETE
        self.legacy = False
        self.reauthenticating = False
        self._server = None
        return AuthenticateResult(auth_bytes=challenge, session_lifetime_ms=lifetime_ms, principal=principal)

    def _session_lifetime_ms(
        self, credential_expiry_ms: int | None, now: float, now_ms: int, max_reauth_ms: int
    ) -> int:
        """Kafka's ReauthInfo.calcCompletionTimesAndReturnSessionLifetimeMs."""
        self.session_expiry = None
        if credential_expiry_ms is None and max_reauth_ms <= 0:
            return 0
        if credential_expiry_ms is None:
            lifetime = max_reauth_ms
        elif max_reauth_ms <= 0:
            lifetime = credential_expiry_ms - now_ms
        else:
            lifetime = min(credential_expiry_ms - now_ms, max_reauth_ms)
        lifetime = min(max(0, lifetime), _LONG_MAX)
        self.session_expiry = now + lifetime / 1000
        return lifetime

    def _fail(self, reason: str, client_message: str | None) -> AuthenticateResult:
        self.state = SaslState.FAILED
        server, self._server = self._server, None
        if server is not None:
            user = server.user
        else:  # a re-authentication that changed the mechanism: who it was
            user = self.principal.name if self.principal is not None else ""
        what = "re-authentication" if self.reauthenticating else "authentication"
        message = client_message or (
            f"Authentication failed during {what} due to invalid credentials"
            f" with SASL mechanism {self.mechanism}"
        )
        return AuthenticateResult(
            ErrorCode.SASL_AUTHENTICATION_FAILED, message, close=True, failure_reason=reason, user=user
        )
