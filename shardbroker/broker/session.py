"""What the broker knows about the peer of one connection: the listener it came in on, its
security protocol, and its principal once authenticated (Kafka's ``RequestContext`` security
fields and the SASL authenticator's state).

One object per connection, created by the listener when the connection is accepted and handed to
every handler in ``RequestContext.session``. The SASL handlers advance it (``authenticated``,
``principal``, ``session_expiry``); the connection refuses every request but ApiVersions and the
SASL APIs until a SASL listener's session is authenticated, and again once the session expired
(KIP-368).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from shardbroker.security.principal import ANONYMOUS, KafkaPrincipal
from shardbroker.security.sasl_authenticator import SaslAuthenticator

__all__ = ["ConnectionSession", "SecurityProtocol"]


class SecurityProtocol(enum.Enum):
    """Kafka's SecurityProtocol of a listener."""

    PLAINTEXT = "PLAINTEXT"
    SSL = "SSL"
    SASL_PLAINTEXT = "SASL_PLAINTEXT"
    SASL_SSL = "SASL_SSL"

    @property
    def uses_tls(self) -> bool:
        return self in (SecurityProtocol.SSL, SecurityProtocol.SASL_SSL)

    @property
    def uses_sasl(self) -> bool:
        return self in (SecurityProtocol.SASL_PLAINTEXT, SecurityProtocol.SASL_SSL)


@dataclass(slots=True)
class ConnectionSession:
    #: The listener's name (``PLAINTEXT``, ``SASL_SSL``, or an operator's name such as ``CLIENTS``).
    listener: str = "PLAINTEXT"
    security_protocol: SecurityProtocol = SecurityProtocol.PLAINTEXT
    #: The peer's address, for host-based ACLs and logs.
    client_host: str = ""
    principal: KafkaPrincipal = field(default=ANONYMOUS)
    #: False on a SASL listener until SaslAuthenticate succeeded; always True elsewhere.
    authenticated: bool = True
    #: The SASL mechanism negotiated by SaslHandshake (None before it, or without SASL).
    sasl_mechanism: str | None = None
    #: Monotonic time at which the SASL session expires (KIP-368); None: never.
    session_expiry: float | None = None
    #: The SASL exchange's state on a SASL listener (which requests pass, re-authentication).
    sasl: SaslAuthenticator | None = None
    #: What ApiVersions v3+ named the client software (KIP-511), for client metrics matching.
    client_software_name: str | None = None
    client_software_version: str | None = None

    @classmethod
    def accepted(cls, listener: str, protocol: SecurityProtocol, client_host: str) -> ConnectionSession:
        """A fresh connection: anonymous, and not yet authenticated on a SASL listener."""
        sasl = SaslAuthenticator() if protocol.uses_sasl else None
        return cls(listener, protocol, client_host, ANONYMOUS, authenticated=sasl is None, sasl=sasl)
