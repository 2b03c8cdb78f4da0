"""What every SASL server mechanism shares: the ``SaslServer`` contract, its typed failure, and the
GS2 header and ``saslname`` rules of RFC 5801/5802 that SCRAM and OAUTHBEARER both parse.

A mechanism is a sans-IO state machine (Kafka's ``javax.security.sasl.SaslServer``): the broker
hands it each token the client sent and sends back the bytes it returns, until it is
``complete`` (the ``authorization_id`` is then the principal's name) or it raises
``SaslAuthenticationFailed``. The failure carries two texts: ``reason`` for the broker's log
(never a secret), and ``client_message``, the text Kafka puts in the SaslAuthenticate response
when its mechanism throws a ``SaslAuthenticationException``; None means Kafka's generic text
("Authentication failed during authentication due to invalid credentials with SASL mechanism
..."), which Kafka sends for every plain ``SaslException`` so that the client learns nothing,
e.g. whether a user exists.
"""

from __future__ import annotations

import abc
import re
from typing import Final

__all__ = [
    "SASLNAME",
    "SaslAuthenticationFailed",
    "SaslServer",
    "different_authorization_id",
    "unescape_saslname",
]

#: RFC 5802's saslname: UTF-8 without NUL, ``,`` and ``=``, those two written ``=2C`` and ``=3D``.
SASLNAME: Final = r"(?:[^\x00=,]|=2C|=3D)+"

_UNESCAPE: Final = re.compile(r"=2C|=3D")


def unescape_saslname(name: str) -> str:
    """The user name a ``saslname`` encodes (``=2C`` -> ``,``, ``=3D`` -> ``=``, in one pass)."""
    return _UNESCAPE.sub(lambda m: "," if m.group() == "=2C" else "=", name)


class SaslAuthenticationFailed(Exception):
    """The exchange failed; the connection is answered SASL_AUTHENTICATION_FAILED and closed."""

    def __init__(self, reason: str, client_message: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.client_message = client_message


def different_authorization_id() -> SaslAuthenticationFailed:
    """Kafka's answer to an authzid that is not the authenticated user (PLAIN and SCRAM)."""
    text = "Authentication failed: Client requested an authorization id that is different from username"
    return SaslAuthenticationFailed("authorization id differs from the user name", text)


class SaslServer(abc.ABC):
    """One authentication exchange on the server side (one per SaslHandshake)."""

    mechanism_name: str

    def __init__(self) -> None:
        self.complete = False
        #: The authenticated user's name, once ``complete``.
        self.authorization_id = ""
        #: The user name the client gave, as soon as it is read (not verified: for the audit log
        #: of a failure); "" until then.
        self.user = ""
        #: Wall-clock ms at which the credential stops being valid (OAUTHBEARER's ``exp``), which
        #: caps the session's lifetime (KIP-368); None: the credential does not expire.
        self.credential_expiry_ms: int | None = None

    @abc.abstractmethod
    def evaluate_response(self, response: bytes) -> bytes:
        """The challenge for the client's ``response``; raises ``SaslAuthenticationFailed``."""
