"""SASL/PLAIN (RFC 4616) as Kafka's PlainSaslServer: one message, ``[authzid] NUL authcid NUL passwd``.

The users and their passwords come from the broker's configuration (``sasl.plain.users``, see
config/broker_properties.py): Kafka reads them from the JAAS option ``user_<name>="<password>"``,
which is Java-only. The password is compared with ``hmac.compare_digest``, and an unknown user
is compared against a stand-in, so both cost the same and fail with the same text. Messages are
Kafka's: an empty user name or password, or an authzid that is not the user name, are named to
the client; a message without exactly three NUL-separated parts gets the generic failure text.
PLAIN sends the password in clear: use it over SASL_SSL only, as Kafka's documentation says.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Final

from shardbroker.security.sasl import SaslAuthenticationFailed, SaslServer, different_authorization_id

__all__ = ["PLAIN", "PlainSaslServer"]

PLAIN: Final = "PLAIN"
_STAND_IN: Final = b"\x00" * 32  # compared against when the user is unknown (never matches text)


class PlainSaslServer(SaslServer):
    mechanism_name = PLAIN

    def __init__(self, users: Mapping[str, str]) -> None:
        super().__init__()
        self._users = users

    def evaluate_response(self, response: bytes) -> bytes:
        if self.complete:
            raise SaslAuthenticationFailed("PLAIN token after the exchange completed")
        try:
            text = response.decode("utf-8")
        except UnicodeDecodeError:
            raise SaslAuthenticationFailed("invalid SASL/PLAIN response: not UTF-8") from None
        tokens = text.split("\x00")
        if len(tokens) != 3:
            count = len(tokens)
            raise SaslAuthenticationFailed(f"Invalid SASL/PLAIN response: expected 3 tokens, got {count}")
        authzid, username, password = tokens
        self.user = username
        if not username:
            raise SaslAuthenticationFailed("no user name", "Authentication failed: username not specified")
        if not password:
            raise SaslAuthenticationFailed("no password", "Authentication failed: password not specified")
        expected = self._users.get(username)
        given = password.encode("utf-8")
        matches = hmac.compare_digest(given, _STAND_IN if expected is None else expected.encode("utf-8"))
        if expected is None or not matches:
            why = "unknown user" if expected is None else "wrong password"
            raise SaslAuthenticationFailed(
                f"{why} {username[:64]!r}", "Authentication failed: Invalid username or password"
            )
        if authzid and authzid != username:
            raise different_authorization_id()
        self.authorization_id = username
        self.complete = True
        return b""
