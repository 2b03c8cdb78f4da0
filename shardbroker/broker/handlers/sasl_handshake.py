"""SaslHandshake (api key 17), v0-1: the client names its SASL mechanism.

On a SASL listener the answer lists the listener's enabled mechanisms (``sasl.enabled.mechanisms``
or its ``listener.name.<l>.`` override); a mechanism not among them is answered
UNSUPPORTED_SASL_MECHANISM and the connection closes. v1 announces SaslAuthenticate requests; v0
announces Kafka's legacy framing, raw size-prefixed tokens, which the connection then reads
(protocol/connection.py ``raw_sasl``). On an authenticated connection a handshake starts a
re-authentication (KIP-368) if the client used SaslAuthenticate v1+, else it is answered
ILLEGAL_SASL_STATE, as on a listener without SASL (Kafka's KafkaApis answer). The state machine
is security/sasl_authenticator.py; broker/sasl_exchange.py builds the mechanisms.
"""

from __future__ import annotations

from shardbroker.broker import sasl_exchange
from shardbroker.broker.dispatch import ApiHandler, RequestContext
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode

__all__ = ["HANDLER"]


async def handle(ctx: RequestContext, request: m.SaslHandshakeRequest) -> m.SaslHandshakeResponse:
    if ctx.session.sasl is None:
        return m.SaslHandshakeResponse(error_code=ErrorCode.ILLEGAL_SASL_STATE)
    result = sasl_exchange.handshake(ctx.worker, ctx.session, request.mechanism, ctx.api_version)
    return m.SaslHandshakeResponse(error_code=result.error, mechanisms=list(result.mechanisms))


HANDLER = ApiHandler(api_key=m.SaslHandshakeRequest.API_KEY, min_version=0, max_version=1, handle=handle)
