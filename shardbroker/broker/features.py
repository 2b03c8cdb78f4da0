"""The feature flags (KIP-584) this broker reports in ApiVersions v3+ and answers UpdateFeatures for.

A Kafka 3.x/4.x KRaft broker reports ``metadata.version``, ``kraft.version``, ``group.version``,
``transaction.version`` and others. Only what holds here is reported:

- ``group.version`` 0-1: level 1 is KIP-848's consumer rebalance protocol, which this broker
  serves. Finalized at 1 exactly when ConsumerGroupHeartbeat is served (the handler registry
  says so: ``group.coordinator.rebalance.protocols`` contains ``consumer``), else at 0, which
  Kafka leaves out of the finalized list.
- no ``metadata.version`` / ``kraft.version``: they version the KRaft metadata log's records and
  the quorum's protocol. The controller here keeps a metadata log of its own (metadata/) and
  there is no quorum, so any level would claim a format this broker does not write; only
  brokers, controllers and ``kafka-features.sh`` read them, never a producer or consumer.
- no ``transaction.version``: level 1 means writing TransactionLogValue v1 records, level 2
  transactions v2 through Produce v12; this broker writes v0 records and serves Produce up to
  v11 (README), so clients that wait for the feature keep to transactions v1, which works.
- no ``eligible.leader.replicas.version`` (one replica: no ELR), no ``share.version``.

Levels cannot change while the broker runs: ``group.version`` follows the config (every worker
reads the same), so UpdateFeatures (handlers/update_features.py) accepts only the level in
force and refuses any other with Kafka's INVALID_UPDATE_VERSION. The finalized epoch is the
metadata image's version (the offset of its last record; 0 for an empty metadata log, whose
image is version -1, because -1 would mark the finalized list invalid), as Kafka's is the
metadata offset: every worker answers the same.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Final

from shardbroker.protocol import messages as m

__all__ = [
    "GROUP_VERSION",
    "SAFE_DOWNGRADE",
    "SUPPORTED_FEATURES",
    "UNSAFE_DOWNGRADE",
    "UPGRADE",
    "FeatureUpdate",
    "finalized_features",
    "refusal",
    "with_features",
]

GROUP_VERSION: Final = "group.version"
#: KIP-848's ConsumerGroupHeartbeat: served means group.version 1.
_CONSUMER_GROUP_HEARTBEAT: Final = m.ConsumerGroupHeartbeatRequest.API_KEY

#: feature -> (min, max) level this broker's software supports.
SUPPORTED_FEATURES: Final[dict[str, tuple[int, int]]] = {GROUP_VERSION: (0, 1)}
#: feature -> what sets its level here (the answer to an UpdateFeatures that would change it).
_SET_BY: Final = {
    GROUP_VERSION: "group.coordinator.rebalance.protocols (level 1 with 'consumer' in it)",
}

# UpdateFeatures' UpgradeType (KIP-778): v0's AllowDowngrade=true is a safe downgrade.
UPGRADE: Final = 1
SAFE_DOWNGRADE: Final = 2
UNSAFE_DOWNGRADE: Final = 3


@dataclass(frozen=True, slots=True)
class FeatureUpdate:
    feature: str
    level: int
    upgrade_type: int


def finalized_features(served_api_keys: Collection[int]) -> dict[str, int]:
    """feature -> finalized level, levels above 0 only (as Kafka lists them)."""
    return {GROUP_VERSION: 1} if _CONSUMER_GROUP_HEARTBEAT in served_api_keys else {}


def with_features(
    response: m.ApiVersionsResponse, version: int, served_api_keys: Collection[int], epoch: int
) -> m.ApiVersionsResponse:
    """``response`` with the supported and finalized features of ApiVersions v3+; in v3 the
    features whose minimum is 0 are left out (the spec's note: KAFKA-17011, fixed by v4)."""
    if version < 3:
        return response
    response.supported_features = [
        m.ApiVersionsResponse.SupportedFeatureKey(name=name, min_version=lo, max_version=hi)
        for name, (lo, hi) in SUPPORTED_FEATURES.items()
        if version >= 4 or lo > 0
    ]
    response.finalized_features = [
        m.ApiVersionsResponse.FinalizedFeatureKey(name=name, max_version_level=level, min_version_level=level)
        for name, level in finalized_features(served_api_keys).items()
    ]
    response.finalized_features_epoch = max(epoch, 0)
    return response


def refusal(update: FeatureUpdate, finalized: dict[str, int]) -> str | None:
    """Why ``update`` cannot be made (the message of INVALID_UPDATE_VERSION), or None: it asks for
    the level in force, a no-op. Kafka's checks in Kafka's order: the upgrade type, a negative
    level, a feature or level the software does not support, the direction against the upgrade
    type; then this broker's own: a level other than the one in force."""
    name, level, kind = update.feature, update.level, update.upgrade_type
    current = finalized.get(name, 0)
    why: str | None = None
    supported = SUPPORTED_FEATURES.get(name)
    if kind not in (UPGRADE, SAFE_DOWNGRADE, UNSAFE_DOWNGRADE):
        why = f"Upgrade type {kind} is not one of 1 (upgrade), 2 (safe downgrade), 3 (unsafe downgrade)."
    elif level < 0:
        why = "A feature version cannot be less than 0."
    elif supported is None:
        why = "This broker does not support this feature."
    elif not supported[0] <= level <= supported[1]:
        why = f"This broker supports versions {supported[0]}-{supported[1]} of it."
    elif level < current and kind == UPGRADE:
        why = "Can't downgrade the version of this feature without setting the upgrade type to a downgrade."
    elif level > current and kind != UPGRADE:
        why = "Can't downgrade to a newer version."
    elif level != current:
        why = f"It is at {current} and follows {_SET_BY[name]}: change that and restart the broker."
    return None if why is None else f"Invalid update version {level} for feature {name}. {why}"
