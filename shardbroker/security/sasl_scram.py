"""SASL/SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677) as Kafka's ScramSaslServer.

Two round trips. client-first ``n,[a=authzid],n=saslname,r=cnonce[,ext=value...]`` -> server-first
``r=cnonce+snonce,s=base64(salt),i=iterations``; client-final ``c=base64(gs2 header),r=nonce
[,ext],p=base64(ClientProof)`` -> server-final ``v=base64(ServerSignature)``. The server keeps
only StoredKey and ServerKey (security/scram_credential.py): it checks the proof by recovering
``ClientKey = ClientProof XOR HMAC(StoredKey, AuthMessage)`` and comparing ``H(ClientKey)`` with
StoredKey in constant time (``hmac.compare_digest``). The server nonce comes from ``secrets``; the
client-final must carry exactly the combined nonce of this exchange, so a client-final replayed
from another exchange, or one with a changed nonce, fails.

Kafka's rules, kept: only the GS2 flag ``n`` (no channel binding: ``p=...`` and ``y`` are refused,
as Kafka's message pattern does); extensions are accepted and ignored except ``tokenauth=true``
(a delegation token), which fails because delegation tokens are not supported; credentials with
fewer iterations than the mechanism's minimum (4096) fail; an authzid must be empty or the user
name. On failure Kafka never sends ``e=``: the SaslAuthenticate response carries the error, and
the text is the generic one except for the authzid case.

Deliberate difference: Kafka fails an unknown user at once, at client-first (so a client can tell
an unknown user from a wrong password). Here an unknown user gets a server-first with a stand-in
credential (salt ``HMAC(key, mechanism, user)``: the same salt for the same user on every worker
of one broker process; 4096 iterations) and fails at client-final exactly like a wrong password.
The key is random per broker start: serve.py imports this module before forking the workers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from enum import Enum
from typing import Final

from shardbroker.security.sasl import (
    SASLNAME,
    SaslAuthenticationFailed,
    SaslServer,
    different_authorization_id,
    unescape_saslname,
)
from shardbroker.security.scram_credential import ScramCredential, ScramMechanism

__all__ = ["ScramSaslServer", "server_nonce"]

#: Shared by the workers (made before they are forked): the stand-in salts of unknown users.
_STAND_IN_KEY: Final = secrets.token_bytes(32)

_PRINTABLE: Final = r"[\x21-\x2b\x2d-\x7e]+"  # RFC 5802 printable: %x21-2B / %x2D-7E (no ",")
_BASE64: Final = r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{3}=|[A-Za-z0-9+/]{2}==)?"
_EXTENSIONS: Final = r"(?:,[A-Za-z]+=[^\x00,]+)*"
_CLIENT_FIRST: Final = re.compile(
    rf"(?P<gs2>n,(?:a=(?P<authzid>{SASLNAME}))?,)"
    rf"(?P<bare>(?:m=[^\x00,]+,)?n=(?P<saslname>{SASLNAME}),r=(?P<nonce>{_PRINTABLE})(?P<ext>{_EXTENSIONS}))",
    re.DOTALL,
)
_CLIENT_FINAL: Final = re.compile(
    rf"(?P<without_proof>c=(?P<channel>{_BASE64}),r=(?P<nonce>{_PRINTABLE}){_EXTENSIONS}),p=(?P<proof>{_BASE64})",
    re.DOTALL,
)
_TOKEN_AUTH: Final = "tokenauth"


def server_nonce() -> str:
    """A fresh server nonce: 24 random bytes as URL-safe base64 (printable, no ``,``)."""
    return secrets.token_urlsafe(24)


class _State(Enum):
    CLIENT_FIRST = 1
    CLIENT_FINAL = 2
    COMPLETE = 3
    FAILED = 4


class ScramSaslServer(SaslServer):
    """One SCRAM exchange. ``credentials(user)`` looks the user's credential up for this
    mechanism (None: unknown), at client-first, so a revoked user fails re-authentication."""

    def __init__(
        self,
        mechanism: ScramMechanism,
        credentials: Callable[[str], ScramCredential | None],
        nonce: Callable[[], str] = server_nonce,
    ) -> None:
        super().__init__()
        self.mechanism = mechanism
        self.mechanism_name = mechanism.mechanism_name
        self._credentials = credentials
        self._nonce = nonce
        self._state = _State.CLIENT_FIRST
        self._credential: ScramCredential | None = None
        self._known = False
        self._gs2_header = ""
        self._client_first_bare = ""
        self._server_first = ""
        self._combined_nonce = ""

    def evaluate_response(self, response: bytes) -> bytes:
        try:
            if self._state is _State.CLIENT_FIRST:
                return self._client_first(response)
            if self._state is _State.CLIENT_FINAL:
                return self._client_final(response)
            raise SaslAuthenticationFailed(f"unexpected SCRAM message in state {self._state.name}")
        except SaslAuthenticationFailed:
            self._state = _State.FAILED
            self._credential = None
            raise

    def _client_first(self, response: bytes) -> bytes:
        text = _text(response, "client first")
        if text.startswith(("p=", "y,")):
            raise SaslAuthenticationFailed("SCRAM channel binding is not supported (GS2 flag must be n)")
        match = _CLIENT_FIRST.fullmatch(text)
        if match is None:
            raise SaslAuthenticationFailed("Invalid SCRAM client first message format")
        extensions = dict(pair.split("=", 1) for pair in match.group("ext").split(",") if pair)
        if extensions.get(_TOKEN_AUTH, "").lower() == "true":
            raise SaslAuthenticationFailed("SCRAM delegation token authentication is not supported")
        username = unescape_saslname(match.group("saslname"))
        self.user = username
        credential = self._credentials(username)
        self._known = credential is not None and credential.mechanism is self.mechanism
        if credential is None or not self._known:
            credential = _stand_in(self.mechanism, username)
        authzid = match.group("authzid")
        if authzid is not None and unescape_saslname(authzid) != username:
            raise different_authorization_id()
        if credential.iterations < self.mechanism.min_iterations:
            raise SaslAuthenticationFailed(
                f"Iterations {credential.iterations} is less than the minimum "
                f"{self.mechanism.min_iterations} for {self.mechanism_name}"
            )
        self.authorization_id = username
        self._credential = credential
        self._gs2_header = match.group("gs2")
        self._client_first_bare = match.group("bare")
        self._combined_nonce = match.group("nonce") + self._nonce()
        salt = base64.b64encode(credential.salt).decode("ascii")
        self._server_first = f"r={self._combined_nonce},s={salt},i={credential.iterations}"
        self._state = _State.CLIENT_FINAL
        return self._server_first.encode("ascii")

    def _client_final(self, response: bytes) -> bytes:
        credential = self._credential
        assert credential is not None
        match = _CLIENT_FINAL.fullmatch(_text(response, "client final"))
        if match is None:
            raise SaslAuthenticationFailed("Invalid SCRAM client final message format")
        if not hmac.compare_digest(match.group("nonce").encode(), self._combined_nonce.encode()):
            raise SaslAuthenticationFailed("Invalid client nonce in the final client message.")
        channel = base64.b64decode(match.group("channel"))  # valid: the pattern says so
        if channel != self._gs2_header.encode("utf-8"):
            raise SaslAuthenticationFailed("SCRAM channel binding data does not match the GS2 header")
        proof = base64.b64decode(match.group("proof"))
        digest = self.mechanism.hash_name
        auth_message = ",".join(
            (self._client_first_bare, self._server_first, match.group("without_proof"))
        ).encode("utf-8")
        client_signature = hmac.digest(credential.stored_key, auth_message, digest)
        if len(proof) != len(client_signature):
            raise SaslAuthenticationFailed("SCRAM client proof has the wrong length")
        client_key = bytes(a ^ b for a, b in zip(proof, client_signature, strict=True))
        proven = hmac.compare_digest(hashlib.new(digest, client_key).digest(), credential.stored_key)
        if not (proven and self._known):
            why = "wrong password" if self._known else "unknown user"
            user = self.authorization_id[:64]
            raise SaslAuthenticationFailed(f"Invalid client credentials ({why} {user!r})")
        server_signature = hmac.digest(credential.server_key, auth_message, digest)
        self._credential = None
        self._state = _State.COMPLETE
        self.complete = True
        return b"v=" + base64.b64encode(server_signature)


def _text(response: bytes, what: str) -> str:
    try:
        return response.decode("utf-8")
    except UnicodeDecodeError:
        raise SaslAuthenticationFailed(f"SCRAM {what} message is not UTF-8") from None


def _stand_in(mechanism: ScramMechanism, username: str) -> ScramCredential:
    """The credential an unknown user is answered with: a salt stable per user, keys that no
    proof matches (random)."""
    salt = hmac.digest(_STAND_IN_KEY, f"{mechanism.mechanism_name}\x00{username}".encode(), "sha256")
    size = hashlib.new(mechanism.hash_name).digest_size
    return ScramCredential(
        mechanism, salt, secrets.token_bytes(size), secrets.token_bytes(size), mechanism.min_iterations
    )
