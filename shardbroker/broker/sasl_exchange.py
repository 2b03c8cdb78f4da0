"""The broker's side of SASL: the mechanism servers of a listener, built from the broker config
and the worker's metadata image, and the steps that run a connection's ``SaslAuthenticator``
(security/sasl_authenticator.py) and carry its outcome into the ``ConnectionSession``.

Shared by the SaslHandshake and SaslAuthenticate handlers and by the connection, which feeds raw
tokens (SaslHandshake v0's legacy framing) through ``authenticate`` too. SCRAM credentials are
read from the current image at client-first, so a user deleted by AlterUserScramCredentials fails
its next (re-)authentication. A failed authentication is answered after
``connection.failed.authentication.delay.ms`` (Kafka's brake on password guessing). Every outcome
goes to the worker's audit trail (broker/security_audit.py): a completed exchange counts as a
success, one that ends the connection (a refused handshake, a failed or out-of-place token) as a
failure, logged rate-limited with its reason, never with a password or token. Re-authentications
(KIP-368) count as authentications: Kafka counts them apart (``successful-reauthentication``),
here the log line says "re-authentication" and the count is the same family.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from shardbroker.broker.session import ConnectionSession
from shardbroker.config.broker_properties import CONNECTION_FAILED_AUTHENTICATION_DELAY_MS
from shardbroker.config.sasl import SaslListenerConfig, sasl_listener_config
from shardbroker.protocol.errors import ErrorCode
from shardbroker.security.sasl import SaslServer
from shardbroker.security.sasl_authenticator import AuthenticateResult, HandshakeResult, SaslAuthenticator
from shardbroker.security.sasl_oauthbearer import (
    OAUTHBEARER,
    OAuthBearerSaslServer,
    UnsecuredValidatorOptions,
)
from shardbroker.security.sasl_plain import PLAIN, PlainSaslServer
from shardbroker.security.sasl_scram import ScramSaslServer
from shardbroker.security.scram_credential import ScramMechanism

if TYPE_CHECKING:
    from shardbroker.broker.worker_state import WorkerState

__all__ = ["authenticate", "handshake"]

log = logging.getLogger(__name__)


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def _mechanisms(worker: WorkerState, settings: SaslListenerConfig) -> Callable[[str], SaslServer]:
    def new_server(mechanism: str) -> SaslServer:
        if mechanism == PLAIN:
            return PlainSaslServer(settings.plain_users)
        if mechanism == OAUTHBEARER:
            options = UnsecuredValidatorOptions(
                settings.oauthbearer_principal_claim_name,
                settings.oauthbearer_scope_claim_name,
                settings.oauthbearer_required_scope,
                settings.oauthbearer_allowable_clock_skew_ms,
            )
            return OAuthBearerSaslServer(options, _wall_ms)
        scram = ScramMechanism.from_mechanism_name(mechanism)  # ValueError: not a mechanism we serve
        return ScramSaslServer(scram, lambda user: worker.image.scram_credential(user, scram))

    return new_server


def handshake(
    worker: WorkerState, session: ConnectionSession, mechanism: str, version: int
) -> HandshakeResult:
    """SaslHandshake on a SASL listener (``session.sasl`` set)."""
    sasl = session.sasl
    assert sasl is not None
    settings = sasl_listener_config(worker.config, session.listener)
    result = sasl.handshake(mechanism, version, settings.enabled_mechanisms, _mechanisms(worker, settings))
    if result.error is ErrorCode.NONE:
        session.sasl_mechanism = mechanism
    elif result.close:
        worker.audit.authentication(
            session.listener,
            session.client_host,
            mechanism,
            False,
            reason=f"SaslHandshake v{version} refused ({result.error.name}): mechanism {mechanism[:64]!r}",
            reauthentication=sasl.reauthenticating,
        )
    else:  # a handshake on an authenticated connection that cannot re-authenticate: answered
        log.info(
            "worker %d: SaslHandshake v%d from %s on %s refused (%s): mechanism %r",
            worker.node_id,
            version,
            session.client_host,
            session.listener,
            result.error.name,
            mechanism[:64],
        )
    return result


async def authenticate(
    worker: WorkerState, session: ConnectionSession, token: bytes, version: int | None
) -> AuthenticateResult:
    """One client token (``version`` None: a raw token of the legacy framing)."""
    sasl: SaslAuthenticator | None = session.sasl
    assert sasl is not None
    settings = sasl_listener_config(worker.config, session.listener)
    result = sasl.authenticate(token, version, time.monotonic(), _wall_ms(), settings.max_reauth_ms)
    audit = worker.audit
    if result.principal is not None:
        audit.authentication(session.listener, session.client_host, sasl.mechanism, True)
        session.principal = result.principal
        session.authenticated = True
        session.session_expiry = sasl.session_expiry
        log.debug(
            "worker %d: %s authenticated as %s with %s (session lifetime %d ms)",
            worker.node_id,
            session.client_host,
            result.principal,
            sasl.mechanism,
            result.session_lifetime_ms,
        )
    elif result.close:
        audit.authentication(
            session.listener,
            session.client_host,
            sasl.mechanism,
            False,
            user=result.user,
            reason=result.failure_reason or result.error_message or result.error.name,
            reauthentication=sasl.reauthenticating,
        )
    if result.error is ErrorCode.SASL_AUTHENTICATION_FAILED:
        delay_ms = worker.config.get(CONNECTION_FAILED_AUTHENTICATION_DELAY_MS)
        if delay_ms > 0:
            await asyncio.sleep(delay_ms / 1000)
    return result
