"""ApiVersions (api key 18), v0-v4: what this broker serves, from the handler registry.

The list is the registry's (``dispatch.HandlerRegistry.versions``): exactly the APIs that have a
handler module, each at its handler's versions intersected with the codec's. An ApiVersions
request at a version above v4 never reaches this module: the connection answers it with
UNSUPPORTED_VERSION encoded as v0 plus the same list (``HandlerRegistry.bad_request_response``),
which is how Kafka lets newer clients downgrade.

v3+ requests name the client software; Kafka refuses names or versions that do not match
``[a-zA-Z0-9](?:[a-zA-Z0-9\\-.]*[a-zA-Z0-9])?`` with INVALID_REQUEST (KIP-511), and so do we.
v3+ answers carry the feature flags this broker really has (broker/features.py: group.version
when the KIP-848 consumer protocol is served), with the metadata image's version as the
finalized epoch.
"""

from __future__ import annotations

import re

from shardbroker.broker.dispatch import ApiHandler, RequestContext
from shardbroker.broker.features import with_features
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode

__all__ = ["HANDLER"]

_SOFTWARE_RE = re.compile(r"[a-zA-Z0-9](?:[a-zA-Z0-9\-.]*[a-zA-Z0-9])?")


async def handle(ctx: RequestContext, request: m.ApiVersionsRequest) -> m.ApiVersionsResponse:
    assert ctx.registry is not None, "ApiVersions needs the handler registry in its context"
    if ctx.api_version >= 3 and not (
        _SOFTWARE_RE.fullmatch(request.client_software_name)
        and _SOFTWARE_RE.fullmatch(request.client_software_version)
    ):
        return m.ApiVersionsResponse(error_code=ErrorCode.INVALID_REQUEST)
    if ctx.api_version >= 3:  # KIP-714's client_software_name/version selectors match these
        ctx.session.client_software_name = request.client_software_name
        ctx.session.client_software_version = request.client_software_version
    response = ctx.registry.api_versions_response()
    return with_features(response, ctx.api_version, ctx.registry.versions, ctx.worker.image.version)


HANDLER = ApiHandler(api_key=18, min_version=0, max_version=4, handle=handle)
