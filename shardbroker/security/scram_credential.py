"""SCRAM credentials (RFC 5802, RFC 7677; Kafka's ScramCredential and ScramFormatter).

What the broker keeps of a SCRAM user is never the password: per mechanism, the salt, the
iteration count, ``StoredKey = H(ClientKey)`` and ``ServerKey = HMAC(SaltedPassword, "Server
Key")``, where ``SaltedPassword = Hi(password, salt, i)`` (PBKDF2-HMAC) and ``ClientKey =
HMAC(SaltedPassword, "Client Key")``. A client proves it knows ClientKey without sending it; the
server proves it knows ServerKey. Iterations: Kafka's bounds, 4096 (the mechanisms' minimum) to
16384 (AlterUserScramCredentials refuses more, KIP-554).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "MAX_ITERATIONS",
    "ScramCredential",
    "ScramMechanism",
    "derive_credential",
    "from_salted",
    "salted_password",
]

MAX_ITERATIONS: Final = 16384


class ScramMechanism(enum.IntEnum):
    """Kafka's ScramMechanism, with its wire value (DescribeUserScramCredentials, KIP-554)."""

    SCRAM_SHA_256 = 1
    SCRAM_SHA_512 = 2

    @property
    def mechanism_name(self) -> str:
        """The SASL mechanism name: ``SCRAM-SHA-256`` / ``SCRAM-SHA-512``."""
        return self.name.replace("_", "-")

    @property
    def hash_name(self) -> str:
        return "sha256" if self is ScramMechanism.SCRAM_SHA_256 else "sha512"

    @property
    def min_iterations(self) -> int:
        return 4096

    @classmethod
    def from_mechanism_name(cls, name: str) -> ScramMechanism:
        try:
            return cls[name.replace("-", "_")]
        except KeyError:
            raise ValueError(f"unknown SCRAM mechanism {name!r}") from None


@dataclass(frozen=True, slots=True)
class ScramCredential:
    mechanism: ScramMechanism
    #: Kept out of reprs (logs, tracebacks), as Kafka prints ``[hidden]``.
    salt: bytes = field(repr=False)
    stored_key: bytes = field(repr=False)
    server_key: bytes = field(repr=False)
    iterations: int


def salted_password(mechanism: ScramMechanism, password: bytes, salt: bytes, iterations: int) -> bytes:
    """``Hi(password, salt, i)``: PBKDF2 with the mechanism's HMAC (RFC 5802 section 2.2)."""
    return hashlib.pbkdf2_hmac(mechanism.hash_name, password, salt, iterations)


def derive_credential(
    mechanism: ScramMechanism, password: bytes, iterations: int, salt: bytes | None = None
) -> ScramCredential:
    """The credential stored for ``password``; a fresh random salt unless one is given (KIP-554
    lets the client choose the salt and send only the salted password: see `from_salted`)."""
    salt = secrets.token_bytes(32) if salt is None else salt
    return from_salted(mechanism, salted_password(mechanism, password, salt, iterations), salt, iterations)


def from_salted(mechanism: ScramMechanism, salted: bytes, salt: bytes, iterations: int) -> ScramCredential:
    """The credential of an already salted password (AlterUserScramCredentials' upsertion)."""
    client_key = hmac.digest(salted, b"Client Key", mechanism.hash_name)
    stored_key = hashlib.new(mechanism.hash_name, client_key).digest()
    server_key = hmac.digest(salted, b"Server Key", mechanism.hash_name)
    return ScramCredential(mechanism, salt, stored_key, server_key, iterations)
