"""The per-connection SASL state machine (Kafka's SaslServerAuthenticator without I/O): which
requests pass, handshake and authenticate answers, KIP-368 lifetimes and re-authentication."""

from __future__ import annotations

from shardbroker.protocol.errors import ErrorCode
from shardbroker.security.principal import KafkaPrincipal
from shardbroker.security.sasl import SaslServer
from shardbroker.security.sasl_authenticator import (
    API_VERSIONS,
    SASL_AUTHENTICATE,
    SASL_HANDSHAKE,
    Gate,
    SaslAuthenticator,
    SaslState,
)
from shardbroker.security.sasl_plain import PlainSaslServer

METADATA = 3
ENABLED = ("PLAIN", "SCRAM-SHA-256")
USERS = {"alice": "pw", "bob": "pw2"}


def new_server(mechanism: str) -> SaslServer:
    if mechanism != "PLAIN":
        raise ValueError(mechanism)
    return PlainSaslServer(USERS)


def authenticated(version: int = 2, max_reauth_ms: int = 0, now: float = 100.0) -> SaslAuthenticator:
    auth = SaslAuthenticator()
    assert auth.gate(API_VERSIONS, now) is Gate.SERVE
    assert auth.handshake("PLAIN", 1, ENABLED, new_server).error is ErrorCode.NONE
    result = auth.authenticate(b"\x00alice\x00pw", version, now, 1_000_000, max_reauth_ms)
    assert result.error is ErrorCode.NONE and result.principal == KafkaPrincipal.user("alice")
    return auth


def test_before_the_handshake_only_api_versions_once_and_the_handshake_pass() -> None:
    auth = SaslAuthenticator()
    assert auth.gate(METADATA, 0) is Gate.CLOSE
    assert auth.gate(SASL_AUTHENTICATE, 0) is Gate.CLOSE
    assert auth.gate(API_VERSIONS, 0) is Gate.SERVE
    assert auth.gate(API_VERSIONS, 0) is Gate.CLOSE  # Kafka: a second ApiVersions is a protocol error
    assert auth.gate(SASL_HANDSHAKE, 0) is Gate.SERVE
    assert SaslAuthenticator().gate(SASL_HANDSHAKE, 0) is Gate.SERVE  # ApiVersions is optional
    assert SaslAuthenticator().gate_bad_request(API_VERSIONS, 0) is Gate.SERVE
    assert SaslAuthenticator().gate_bad_request(METADATA, 0) is Gate.CLOSE


def test_after_the_handshake_other_requests_are_an_illegal_state() -> None:
    auth = SaslAuthenticator()
    auth.handshake("PLAIN", 1, ENABLED, new_server)
    assert auth.state is SaslState.AUTHENTICATE and not auth.legacy
    assert auth.gate(SASL_AUTHENTICATE, 0) is Gate.SERVE
    for key in (METADATA, SASL_HANDSHAKE, API_VERSIONS):
        assert auth.gate(key, 0) is Gate.ILLEGAL_STATE


def test_unsupported_mechanism_lists_the_enabled_ones_and_closes() -> None:
    auth = SaslAuthenticator()
    result = auth.handshake("GSSAPI", 1, ENABLED, new_server)
    assert (result.error, tuple(result.mechanisms), result.close) == (
        ErrorCode.UNSUPPORTED_SASL_MECHANISM,
        ENABLED,
        True,
    )
    assert auth.gate(SASL_AUTHENTICATE, 0) is Gate.CLOSE
    # Enabled but without a server: refused the same way.
    assert SaslAuthenticator().handshake("SCRAM-SHA-256", 1, ENABLED, new_server).close


def test_failure_answers_kafkas_text_and_closes() -> None:
    auth = SaslAuthenticator()
    auth.handshake("PLAIN", 1, ENABLED, new_server)
    result = auth.authenticate(b"\x00alice\x00nope", 1, 0, 0, 0)
    assert result.error is ErrorCode.SASL_AUTHENTICATION_FAILED and result.close
    assert result.error_message == "Authentication failed: Invalid username or password"
    assert result.failure_reason == "wrong password 'alice'"
    generic = SaslAuthenticator()
    generic.handshake("PLAIN", 1, ENABLED, new_server)
    assert generic.authenticate(b"junk", 1, 0, 0, 0).error_message == (
        "Authentication failed during authentication due to invalid credentials with SASL mechanism PLAIN"
    )
    assert generic.gate(METADATA, 0) is Gate.CLOSE


def test_session_lifetime_is_kafkas_minimum_of_reauth_ms_and_credential_expiry() -> None:
    auth = SaslAuthenticator()
    assert auth._session_lifetime_ms(None, 10.0, 1000, 0) == 0 and auth.session_expiry is None
    assert auth._session_lifetime_ms(None, 10.0, 1000, 5000) == 5000 and auth.session_expiry == 15.0
    assert auth._session_lifetime_ms(4000, 10.0, 1000, 0) == 3000 and auth.session_expiry == 13.0
    assert auth._session_lifetime_ms(4000, 10.0, 1000, 2000) == 2000
    assert auth._session_lifetime_ms(500, 10.0, 1000, 2000) == 0 and auth.session_expiry == 10.0


def test_expired_session_closes_on_anything_but_a_reauthentication() -> None:
    auth = authenticated(version=1, max_reauth_ms=1000, now=100.0)
    assert auth.session_expiry == 101.0
    assert auth.gate(METADATA, 100.5) is Gate.SERVE
    assert auth.gate(METADATA, 101.0) is Gate.EXPIRED
    assert auth.gate(SASL_AUTHENTICATE, 101.0) is Gate.EXPIRED
    assert auth.gate(SASL_HANDSHAKE, 101.0) is Gate.SERVE
    old = authenticated(version=0, max_reauth_ms=1000, now=100.0)  # cannot re-authenticate
    assert old.gate(SASL_HANDSHAKE, 101.0) is Gate.EXPIRED


def test_reauthentication_keeps_the_principal_and_renews_the_expiry() -> None:
    auth = authenticated(version=1, max_reauth_ms=1000, now=100.0)
    assert auth.handshake("PLAIN", 1, ENABLED, new_server).error is ErrorCode.NONE
    assert auth.reauthenticating and auth.gate(METADATA, 100.0) is Gate.ILLEGAL_STATE
    result = auth.authenticate(b"\x00alice\x00pw", 2, 200.0, 0, 1000)
    assert result.error is ErrorCode.NONE and result.session_lifetime_ms == 1000
    assert auth.session_expiry == 201.0 and auth.state is SaslState.COMPLETE and not auth.reauthenticating


def test_reauthentication_as_someone_else_fails() -> None:
    auth = authenticated()
    auth.handshake("PLAIN", 1, ENABLED, new_server)
    result = auth.authenticate(b"\x00bob\x00pw2", 2, 0, 0, 0)
    assert result.error is ErrorCode.SASL_AUTHENTICATION_FAILED and result.close
    assert (
        result.error_message == "Cannot change principals during re-authentication from User.alice: User.bob"
    )


def test_reauthentication_with_another_mechanism_fails_at_its_token() -> None:
    auth = authenticated()
    assert auth.handshake("SCRAM-SHA-256", 1, ENABLED, new_server).error is ErrorCode.NONE
    result = auth.authenticate(b"n,,n=alice,r=x", 2, 0, 0, 0)
    assert result.error is ErrorCode.SASL_AUTHENTICATION_FAILED and result.close
    assert result.error_message == (
        "SASL mechanism 'SCRAM-SHA-256' requested by client is not supported for re-authentication of "
        "mechanism 'PLAIN'"
    )


def test_sasl_requests_on_a_complete_session_without_reauthentication_support() -> None:
    auth = authenticated(version=0)
    result = auth.handshake("PLAIN", 1, ENABLED, new_server)
    assert (result.error, result.close) == (ErrorCode.ILLEGAL_SASL_STATE, False)
    again = auth.authenticate(b"\x00alice\x00pw", 1, 0, 0, 0)
    assert again.error is ErrorCode.ILLEGAL_SASL_STATE and not again.close
    assert again.error_message == "SaslAuthenticate request received after successful authentication"
    assert auth.state is SaslState.COMPLETE


def test_handshake_v0_means_raw_tokens_until_complete() -> None:
    auth = SaslAuthenticator()
    auth.handshake("PLAIN", 0, ENABLED, new_server)
    assert auth.legacy
    result = auth.authenticate(b"\x00alice\x00pw", None, 0, 0, 0)
    assert result.principal is not None and not auth.legacy and not auth.client_supports_reauth
