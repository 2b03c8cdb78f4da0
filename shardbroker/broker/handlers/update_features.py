"""UpdateFeatures (api key 57), v0-v2: the finalized feature levels cannot change here; said so.

Kafka's controller checks each update (broker/features.py ``refusal``: upgrade type, level,
support, direction) and answers the first failure top-level as INVALID_UPDATE_VERSION (95) with
its message, else applies them all. The levels here follow the broker's config
(``group.version`` its ``group.coordinator.rebalance.protocols``), read once at start by every
worker, so an update to the level in force is accepted as the no-op it is and any other is
refused with Kafka's code and a message naming the property that sets it. ``validate_only``
(v1+) is honoured trivially: nothing is ever written, and the answer is the one an update would
get. As Kafka's ControllerApis: ALTER on the CLUSTER, else CLUSTER_AUTHORIZATION_FAILED (31);
a feature named twice is INVALID_REQUEST (Kafka's request is keyed by feature name). v0-v1
list each feature with NONE when the update succeeds (v2 dropped the per-feature results, and
Kafka sends them only on success).
"""

from __future__ import annotations

from shardbroker.broker.auth_helper import authorize_cluster
from shardbroker.broker.dispatch import ApiHandler, RequestContext
from shardbroker.broker.features import SAFE_DOWNGRADE, UPGRADE, FeatureUpdate, finalized_features, refusal
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode
from shardbroker.security.acl import AclOperation

__all__ = ["HANDLER"]

_R = m.UpdateFeaturesResponse


def _update(key: m.UpdateFeaturesRequest.FeatureUpdateKey, version: int) -> FeatureUpdate:
    # v0 has AllowDowngrade instead of the upgrade type, which Kafka reads as a safe downgrade
    kind = key.upgrade_type if version >= 1 else SAFE_DOWNGRADE if key.allow_downgrade else UPGRADE
    return FeatureUpdate(key.feature, key.max_version_level, kind)


async def handle(ctx: RequestContext, request: m.UpdateFeaturesRequest) -> m.UpdateFeaturesResponse:
    if not authorize_cluster(ctx, AclOperation.ALTER):
        return _R(error_code=ErrorCode.CLUSTER_AUTHORIZATION_FAILED, error_message=None)
    names = [u.feature for u in request.feature_updates]
    if len(set(names)) != len(names):
        return _R(error_code=ErrorCode.INVALID_REQUEST, error_message="A feature is named more than once.")
    assert ctx.registry is not None, "UpdateFeatures reads the served APIs from the handler registry"
    finalized = finalized_features(ctx.registry.versions)
    for key in request.feature_updates:
        why = refusal(_update(key, ctx.api_version), finalized)
        if why is not None:
            return _R(error_code=ErrorCode.INVALID_UPDATE_VERSION, error_message=why)
    results = [_R.UpdatableFeatureResult(feature=n, error_code=0, error_message=None) for n in names]
    return _R(error_code=0, error_message=None, results=results if ctx.api_version <= 1 else [])


HANDLER = ApiHandler(api_key=57, min_version=0, max_version=2, handle=handle)
