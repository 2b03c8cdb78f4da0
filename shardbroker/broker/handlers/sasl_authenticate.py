"""SaslAuthenticate (api key 36), v0-2: one SASL token each way, after SaslHandshake v1.

The token goes to the mechanism chosen by the handshake (security/sasl_*.py) through the
connection's SaslAuthenticator; its challenge comes back in ``auth_bytes``. A failure is answered
SASL_AUTHENTICATION_FAILED (58) with Kafka's message (the mechanism's own for the few cases Kafka
names, else "Authentication failed during authentication due to invalid credentials with SASL
mechanism M"), after ``connection.failed.authentication.delay.ms``, and the connection closes.
v1+ carries ``session_lifetime_ms`` once the exchange completes (KIP-368; 0: no limit). Outside an
exchange (no SASL on the listener, or already authenticated) it is ILLEGAL_SASL_STATE, as Kafka.
"""

from __future__ import annotations

from shardbroker.broker import sasl_exchange
from shardbroker.broker.dispatch import ApiHandler, RequestContext
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode

__all__ = ["HANDLER"]


async def handle(ctx: RequestContext, request: m.SaslAuthenticateRequest) -> m.SaslAuthenticateResponse:
    if ctx.session.sasl is None:
        return m.SaslAuthenticateResponse(
            error_code=ErrorCode.ILLEGAL_SASL_STATE,
            error_message="SaslAuthenticate request received after successful authentication",
        )
    result = await sasl_exchange.authenticate(ctx.worker, ctx.session, request.auth_bytes, ctx.api_version)
    return m.SaslAuthenticateResponse(
        error_code=result.error,
        error_message=result.error_message,
        auth_bytes=result.auth_bytes,
        session_lifetime_ms=result.session_lifetime_ms,
    )


HANDLER = ApiHandler(api_key=m.SaslAuthenticateRequest.API_KEY, min_version=0, max_version=2, handle=handle)
