"""The client side of SASL/PLAIN (RFC 4616) and SASL/SCRAM-SHA-256/512 (RFC 5802, RFC 7677), as
Kafka's PlainSaslClient and ScramSaslClient: sans-IO, one ``evaluate(challenge)`` per round trip.
client/connection.py carries the tokens in SaslHandshake v1 / SaslAuthenticate frames.

SCRAM: the client nonce comes from ``secrets``; the server-first must extend it and ask for at
least the mechanism's minimum iterations (4096, Kafka's check); the server's signature in the
server-final is compared with ``hmac.compare_digest``, so a server that does not know the
password cannot pass for the broker. No channel binding (GS2 flag ``n``), as Kafka.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from typing import Final, Protocol

from shardbroker.security.scram_credential import ScramMechanism, salted_password

__all__ = ["PlainClient", "SaslClient", "SaslClientError", "ScramClient", "sasl_client"]

_GS2_HEADER: Final = "n,,"
_SERVER_FIRST: Final = re.compile(
    r"r=(?P<nonce>[^,]+),s=(?P<salt>[^,]+),i=(?P<iterations>[0-9]+)(?:,.*)?", re.DOTALL
)


class SaslClientError(Exception):
    """The server's SASL answers do not make a valid exchange (the message names what is wrong)."""


class SaslClient(Protocol):
    """``evaluate(b"")`` gives the first token; each server answer is evaluated in turn until
    ``complete`` (the last evaluation only checks the server's final answer)."""

    mechanism: str

    @property
    def complete(self) -> bool: ...

    def evaluate(self, challenge: bytes) -> bytes:
        """The next token for the server, given its last one (``b""`` to start)."""
        ...


class PlainClient:
    """One token out; complete once the server accepted it (its empty answer evaluated)."""

    mechanism = "PLAIN"

    def __init__(self, username: str, password: str) -> None:
        self._token = b"\x00" + username.encode() + b"\x00" + password.encode()
        self._step = 0

    @property
    def complete(self) -> bool:
        return self._step == 2

    def evaluate(self, challenge: bytes) -> bytes:
        if self._step == 2:
            raise SaslClientError("PLAIN: unexpected server token after the exchange")
        self._step += 1
        return self._token if self._step == 1 else b""


def _saslname(name: str) -> str:
    return name.replace("=", "=3D").replace(",", "=2C")


class ScramClient:
    def __init__(
        self, mechanism: ScramMechanism, username: str, password: str, nonce: str | None = None
    ) -> None:
        self.mechanism = mechanism.mechanism_name
        self._scram = mechanism
        self._password = password.encode()
        self._nonce = nonce if nonce is not None else secrets.token_urlsafe(24)
        self._first_bare = f"n={_saslname(username)},r={self._nonce}"
        self._step = 0
        self._server_signature = b""

    @property
    def complete(self) -> bool:
        return self._step == 3

    def evaluate(self, challenge: bytes) -> bytes:
        if self._step == 0:
            self._step = 1
            return (_GS2_HEADER + self._first_bare).encode()
        if self._step == 1:
            self._step = 2
            return self._client_final(challenge.decode("utf-8", "replace"))
        if self._step == 2:
            self._check_server_final(challenge.decode("utf-8", "replace"))
            self._step = 3
            return b""
        raise SaslClientError(f"{self.mechanism}: unexpected server token after the exchange")

    def _client_final(self, server_first: str) -> bytes:
        match = _SERVER_FIRST.fullmatch(server_first)
        if match is None:
            raise SaslClientError(f"{self.mechanism}: malformed server-first message")
        nonce, iterations = match.group("nonce"), int(match.group("iterations"))
        if not nonce.startswith(self._nonce) or nonce == self._nonce:
            raise SaslClientError(f"{self.mechanism}: the server nonce does not extend the client's")
        if iterations < self._scram.min_iterations:
            raise SaslClientError(
                f"{self.mechanism}: requested iterations {iterations} is less than the minimum "
                f"{self._scram.min_iterations}"
            )
        try:
            salt = base64.b64decode(match.group("salt"), validate=True)
        except ValueError:
            raise SaslClientError(f"{self.mechanism}: the salt is not base64") from None
        salted = salted_password(self._scram, self._password, salt, iterations)
        digest = self._scram.hash_name
        client_key = hmac.digest(salted, b"Client Key", digest)
        stored_key = hashlib.new(digest, client_key).digest()
        without_proof = f"c={base64.b64encode(_GS2_HEADER.encode()).decode()},r={nonce}"
        auth_message = f"{self._first_bare},{server_first},{without_proof}".encode()
        signature = hmac.digest(stored_key, auth_message, digest)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        server_key = hmac.digest(salted, b"Server Key", digest)
        self._server_signature = hmac.digest(server_key, auth_message, digest)
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def _check_server_final(self, server_final: str) -> None:
        if server_final.startswith("e="):
            raise SaslClientError(f"{self.mechanism}: the server refused: {server_final[2:]}")
        if not server_final.startswith("v="):
            raise SaslClientError(f"{self.mechanism}: malformed server-final message")
        try:
            signature = base64.b64decode(server_final[2:].split(",")[0], validate=True)
        except ValueError:
            raise SaslClientError(f"{self.mechanism}: the server signature is not base64") from None
        if not hmac.compare_digest(signature, self._server_signature):
            raise SaslClientError(f"{self.mechanism}: invalid server signature")


def sasl_client(mechanism: str, username: str, password: str) -> SaslClient:
    """The client for ``mechanism`` (``PLAIN``, ``SCRAM-SHA-256``, ``SCRAM-SHA-512``)."""
    if mechanism == PlainClient.mechanism:
        return PlainClient(username, password)
    return ScramClient(ScramMechanism.from_mechanism_name(mechanism), username, password)
