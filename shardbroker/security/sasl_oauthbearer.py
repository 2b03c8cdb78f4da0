"""SASL/OAUTHBEARER (RFC 7628) with unsecured JWS tokens, as Kafka's OAuthBearerSaslServer with its
default validator, OAuthBearerUnsecuredValidatorCallbackHandler. For tests and development only:
an unsecured token (``alg: none``, no signature) proves nothing about who made it.

The client's one message is ``n,[a=authzid],\\x01auth=Bearer <token>\\x01[key=value\\x01...]\\x01``
(Kafka's SASL extensions are accepted and ignored, as the unsecured validator accepts them all).
The token is ``base64url(header).base64url(claims).`` with an empty signature; its header's
``alg`` must be ``none``. Claims, as Kafka checks them: the principal claim (``sub``, or the
configured name) a non-blank string; ``exp`` (seconds) required, a number, and not reached
(``now - skew >= exp`` is expired); ``iat``, if present, a number not after ``now + skew`` and
before ``exp``; the scope claim (``scope``, or the configured name), a string (one scope value)
or a list of strings, must hold every required scope value.

A bad token is not a failure at once: the server answers Kafka's JSON error,
``{"status":"invalid_token"}`` (``insufficient_scope`` with the required ``scope`` when only the
scope is missing), the client acknowledges with ``\\x01``, and that ends the exchange with the
JSON as the error message (RFC 7628 section 3.2.3). The token's ``exp`` becomes the credential's
expiry, which caps the session (KIP-368). Kafka's JAAS options
``unsecuredValidatorPrincipalClaimName``, ``unsecuredValidatorScopeClaimName``,
``unsecuredValidatorRequiredScope`` and ``unsecuredValidatorAllowableClockSkewMs`` are the fields
of ``UnsecuredValidatorOptions`` (broker properties ``sasl.oauthbearer.unsecured.validator.*``).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from shardbroker.security.sasl import SASLNAME, SaslAuthenticationFailed, SaslServer

__all__ = [
    "OAUTHBEARER",
    "IllegalToken",
    "OAuthBearerSaslServer",
    "UnsecuredJws",
    "UnsecuredValidatorOptions",
    "validate_unsecured_jws",
]

OAUTHBEARER: Final = "OAUTHBEARER"
_SEP: Final = "\x01"
_CLIENT_INITIAL: Final = re.compile(
    rf"n,(?:a=(?P<authzid>{SASLNAME}))?,{_SEP}(?P<kvpairs>(?:[A-Za-z]+=[\x21-\x7e \t\r\n]+{_SEP})*){_SEP}",
    re.DOTALL,
)
_AUTH: Final = re.compile(r"(?P<scheme>\w+) +(?P<token>[-_.a-zA-Z0-9]+)", re.ASCII)


@dataclass(frozen=True, slots=True)
class UnsecuredValidatorOptions:
    """Kafka's ``unsecuredValidator*`` options (OAuthBearerUnsecuredValidatorCallbackHandler)."""

    principal_claim_name: str = "sub"
    scope_claim_name: str = "scope"
    required_scope: tuple[str, ...] = ()
    allowable_clock_skew_ms: int = 0


@dataclass(frozen=True, slots=True)
class UnsecuredJws:
    principal_name: str
    #: ``exp`` in ms since the epoch.
    lifetime_ms: int
    #: ``iat`` in ms since the epoch, if the token has one.
    start_time_ms: int | None
    scope: frozenset[str]


class IllegalToken(Exception):
    """A token the validator refuses; ``failure_scope`` is set when only the scope is lacking."""

    def __init__(self, reason: str, failure_scope: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.failure_scope = failure_scope


def validate_unsecured_jws(token: str, options: UnsecuredValidatorOptions, now_ms: int) -> UnsecuredJws:
    """The token's principal, lifetime and scope if it passes Kafka's unsecured checks."""
    if ".." in token:
        raise IllegalToken("Malformed compact serialization contains '..'")
    splits = token.split(".")
    if len(splits) != 3:
        raise IllegalToken(
            "Unsecured JWS compact serializations must have 3 dot-separated Base64URL-encoded values"
        )
    header, claims = _json_object(splits[0]), _json_object(splits[1])
    if header.get("alg") != "none":
        raise IllegalToken("Unsecured JWS must have 'none' for an algorithm")
    if splits[2]:
        raise IllegalToken("Unsecured JWS must not contain a digital signature")
    scope = _scope(claims, options.scope_claim_name)
    exp = _number(claims, "exp")
    if exp is None:
        raise IllegalToken("No expiration time in JWT")
    principal = claims.get(options.principal_claim_name)
    if not isinstance(principal, str) or not principal.strip():
        raise IllegalToken(f"No principal name in JWT claim: {options.principal_claim_name}")
    iat = _number(claims, "iat")
    skew = options.allowable_clock_skew_ms
    if iat is not None and 1000 * iat > now_ms + skew:
        raise IllegalToken(f"The Issued At value ({iat} s) was after the indicated time plus clock skew")
    if now_ms - skew >= 1000 * exp:
        raise IllegalToken(f"The indicated time minus clock skew was on or after the Expiration ({exp} s)")
    if iat is not None and iat >= exp:
        raise IllegalToken("The Expiration Time is not after the Issued At time")
    missing = [s for s in options.required_scope if s not in scope]
    if missing:
        raise IllegalToken(
            f"The provided scope was missing a required scope ({', '.join(missing)})",
            " ".join(options.required_scope),
        )
    return UnsecuredJws(principal, round(exp * 1000), None if iat is None else round(iat * 1000), scope)


def _json_object(part: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError):
        raise IllegalToken("malformed Base64 URL encoded value") from None
    try:
        value = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, RecursionError):  # JSONDecodeError, bad UTF-8, over-long integers, nesting
        raise IllegalToken("malformed JSON") from None
    if not isinstance(value, dict):
        raise IllegalToken("malformed JSON")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _number(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise IllegalToken(f"The '{name}' claim was not of type Number")
    try:
        number = float(value)
    except OverflowError:
        raise IllegalToken(f"The '{name}' claim is out of range") from None
    if not math.isfinite(number) or abs(number) > 1e15:  # ~31 million years in seconds
        raise IllegalToken(f"The '{name}' claim is out of range")
    return number


def _scope(claims: dict[str, Any], name: str) -> frozenset[str]:
    value = claims.get(name)
    if value is None:
        return frozenset()
    if isinstance(value, str):
        return frozenset({value.strip()}) if value.strip() else frozenset()
    if isinstance(value, list):
        return frozenset(v.strip() for v in value if isinstance(v, str) and v.strip())
    raise IllegalToken(f"The '{name}' claim was not of type List")


class OAuthBearerSaslServer(SaslServer):
    mechanism_name = OAUTHBEARER

    def __init__(self, options: UnsecuredValidatorOptions, now_ms: Callable[[], int]) -> None:
        super().__init__()
        self._options = options
        self._now_ms = now_ms
        #: The JSON error sent for a refused token, and why (for the log), until the client's ``\x01``.
        self._error: str | None = None
        self._error_reason = ""

    def evaluate_response(self, response: bytes) -> bytes:
        if self.complete:
            raise SaslAuthenticationFailed("OAUTHBEARER message after the exchange completed")
        if response == _SEP.encode() and self._error is not None:
            raise SaslAuthenticationFailed(f"invalid token: {self._error_reason}", self._error)
        self._error = None
        try:
            text = response.decode("utf-8")
        except UnicodeDecodeError:
            raise SaslAuthenticationFailed("Invalid OAUTHBEARER client first message (not UTF-8)") from None
        match = _CLIENT_INITIAL.fullmatch(text)
        if match is None:
            raise SaslAuthenticationFailed("Invalid OAUTHBEARER client first message")
        pairs = dict(kv.split("=", 1) for kv in match.group("kvpairs").split(_SEP) if kv)
        auth = _AUTH.fullmatch(pairs.get("auth", ""))
        if auth is None:
            raise SaslAuthenticationFailed("Invalid OAUTHBEARER client first message: invalid or no 'auth'")
        if auth.group("scheme").lower() != "bearer":
            raise SaslAuthenticationFailed("Invalid scheme in OAUTHBEARER client first message")
        try:
            token = validate_unsecured_jws(auth.group("token"), self._options, self._now_ms())
        except IllegalToken as exc:
            self._error, self._error_reason = _json_error(exc), exc.reason
            return self._error.encode("utf-8")
        self.user = token.principal_name
        authzid = match.group("authzid")
        if authzid and authzid != token.principal_name:
            raise SaslAuthenticationFailed(
                "authorization id differs from the token's principal",
                "Authentication failed: Client requested an authorization id "
                f"({authzid}) that is different from the token's principal name ({token.principal_name})",
            )
        self.authorization_id = token.principal_name
        self.credential_expiry_ms = token.lifetime_ms
        self.complete = True
        return b""


def _json_error(exc: IllegalToken) -> str:
    """Kafka's error response (OAuthBearerSaslServer.jsonErrorResponse)."""
    if exc.failure_scope is None:
        return '{"status":"invalid_token"}'
    return f'{{"status":"insufficient_scope", "scope":{json.dumps(exc.failure_scope)}}}'
