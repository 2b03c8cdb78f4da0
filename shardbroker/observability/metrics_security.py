"""Who may scrape /metrics: optional TLS (``metrics.ssl.*``) and HTTP basic auth
(``metrics.basic.auth.users``), both off by default (``metrics.listen`` stays 127.0.0.1:9404).

TLS is on when ``metrics.ssl.keystore.location`` (or the inline ``metrics.ssl.keystore.key``) is
set: /metrics then speaks HTTPS only, with a context built by config/ssl_context.py exactly as
the Kafka listeners' (PEM stores, ``metrics.ssl.client.auth`` for client certificates: any the
trust store accepts may scrape, there is no principal). The stores are read once at start:
rotating the certificate of /metrics takes a restart (the listeners' reload on AlterConfigs).

Basic auth (RFC 7617): the table maps user names to password hashes (security/password_hash.py:
the config file never holds a password). A missing, malformed or wrong ``Authorization`` header
gets 401 with ``WWW-Authenticate: Basic realm="shardbroker"``; the hash comparison is constant
time, and an unknown user costs the same derivation as a known one, so timing does not tell which
users exist. Basic auth over plain HTTP is refused at start unless ``metrics.listen`` is a
loopback address: the password would cross the network in clear (on loopback only the host's
root can see it).

The cost, on the supervisor's loop (which does nothing else meanwhile): one check at the default
600,000 PBKDF2 iterations takes 113 ms on the 2-core test VM. So a verified password is
remembered (one HMAC-SHA256 per user under a per-process random key; checking it again takes a
few microseconds), and derivations for anything else may take at most a fifth of the loop: after
one that took d seconds, the next waits 4*d, and requests meanwhile get 429 with
``Retry-After: 1``. A remembered password is never held back, so a guesser cannot lock out a
Prometheus that has scraped once since the start. Failures are logged at most once a minute, with
a count, the last user name and address; never a password.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import ipaddress
import logging
import secrets
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from shardbroker.config.broker_config import BrokerConfig
from shardbroker.config.broker_properties import METRICS_BASIC_AUTH_USERS, METRICS_SSL_CLIENT_AUTH
from shardbroker.config.ssl_context import METRICS_SSL, server_context
from shardbroker.security.password_hash import DEFAULT_ITERATIONS, PasswordHash

__all__ = ["BasicAuth", "MetricsSecurity", "MetricsSecurityError", "RateLimitedLog", "Verdict"]

log = logging.getLogger(__name__)

REALM: Final = "shardbroker"
#: Share of the loop's time that failing derivations may take: 1 / (1 + _BACKOFF).
_BACKOFF: Final = 4.0
_LOG_INTERVAL_S: Final = 60.0


class MetricsSecurityError(ValueError):
    """/metrics settings the broker refuses to start with (the message names the property)."""


class Verdict(enum.Enum):
    ALLOWED = "allowed"
    DENIED = "denied"  # 401
    THROTTLED = "throttled"  # 429


class RateLimitedLog:
    """At most one warning per ``interval_s`` about failures of one kind, with their count."""

    def __init__(
        self, what: str, interval_s: float = _LOG_INTERVAL_S, clock: Callable[[], float] = time.monotonic
    ):
        self.what = what
        self.interval_s = interval_s
        self._clock = clock
        self._count = 0
        self._last_logged = float("-inf")

    def failed(self, detail: str) -> None:
        self._count += 1
        now = self._clock()
        if now - self._last_logged >= self.interval_s:
            log.warning("/metrics: %d %s since the last report (last: %s)", self._count, self.what, detail)
            self._count, self._last_logged = 0, now


def _credentials(authorization: bytes | None) -> tuple[str, bytes] | None:
    """(user, password) of a ``Basic`` Authorization header value, None if it is not one."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        user, sep, password = base64.b64decode(token.strip(), validate=True).partition(b":")
        name = user.decode()
    except (binascii.Error, ValueError):  # UnicodeDecodeError is a ValueError
        return None
    return (name, password) if sep and name else None


class BasicAuth:
    """Checks ``Authorization`` headers against the table of password hashes (on the loop)."""

    def __init__(
        self, users: Mapping[str, PasswordHash], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._users = dict(users)
        self._clock = clock
        iterations = max((h.iterations for h in self._users.values()), default=DEFAULT_ITERATIONS)
        # An unknown user's password is derived against this: it never matches, in the same time.
        self._stand_in = PasswordHash(iterations, secrets.token_urlsafe(16), bytes(32))
        self._memo_key = secrets.token_bytes(32)
        self._verified: dict[str, bytes] = {}
        self._next_derivation = float("-inf")
        self.failures = RateLimitedLog("failed basic-auth attempts", clock=clock)

    @classmethod
    def from_table(cls, table: Mapping[str, str]) -> BasicAuth:
        """From ``metrics.basic.auth.users``; MetricsSecurityError names the user of a bad hash."""
        users = {}
        for user, text in table.items():
            if ":" in user:
                raise MetricsSecurityError(
                    f"{METRICS_BASIC_AUTH_USERS.name}: user {user!r}: a basic-auth user name has no ':'"
                )
            try:
                users[user] = PasswordHash.parse(text)
            except ValueError as exc:
                raise MetricsSecurityError(
                    f"{METRICS_BASIC_AUTH_USERS.name}: user {user!r}: {exc} (make one with "
                    f"`shardbroker metrics-password {user}`)"
                ) from None
        return cls(users)

    def _memo(self, password: bytes) -> bytes:
        return hmac.new(self._memo_key, password, hashlib.sha256).digest()

    def check(self, authorization: bytes | None, peer: str = "") -> Verdict:
        """The verdict on one request's ``Authorization`` header value (None: no header)."""
        credentials = _credentials(authorization)
        if credentials is None:
            return Verdict.DENIED  # no credentials: not an attempt worth a log line
        user, password = credentials
        memo = self._memo(password)
        known = self._verified.get(user)
        if known is not None and hmac.compare_digest(known, memo):
            return Verdict.ALLOWED
        start = self._clock()
        if start < self._next_derivation:
            return Verdict.THROTTLED
        hashed = self._users.get(user)
        ok = (hashed or self._stand_in).verify(password) and hashed is not None
        if ok:
            self._verified[user] = memo
            return Verdict.ALLOWED
        end = self._clock()
        self._next_derivation = end + _BACKOFF * (end - start)
        self.failures.failed(f"user {user[:64]!r} from {peer or 'unknown'}")
        return Verdict.DENIED


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class MetricsSecurity:
    """The TLS context and the basic auth of /metrics (None: off)."""

    tls: ssl.SSLContext | None = None
    auth: BasicAuth | None = None

    @classmethod
    def load(cls, config: BrokerConfig) -> MetricsSecurity:
        """Build both from the config; MetricsSecurityError (or TlsConfigError, a ValueError too)
        says what is wrong."""
        tls = None
        if any(config.find(k) is not None for k in (METRICS_SSL.keystore_location, METRICS_SSL.keystore_key)):
            tls = server_context(config, METRICS_SSL, "/metrics", config.get(METRICS_SSL_CLIENT_AUTH))
        table = config.find(METRICS_BASIC_AUTH_USERS)
        if not table:
            return cls(tls)
        if tls is None and not _is_loopback(config.metrics_host):
            raise MetricsSecurityError(
                f"{METRICS_BASIC_AUTH_USERS.name} on plain HTTP would send the passwords in clear to "
                f"{config.metrics_host or 'every interface'}: set {METRICS_SSL.keystore_location.name} "
                "(HTTPS), or serve /metrics on a loopback address (metrics.listen)"
            )
        return cls(tls, BasicAuth.from_table(table))
