"""Helpers shared by the control-plane handlers: controller calls, config descriptions, ACL checks.

Not a handler module (the leading ``_`` keeps ``dispatch.discover`` from registering it).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from shardbroker.broker.auth_helper import DENIED, authorize, filter_authorized
from shardbroker.broker.client_quota_manager import ControllerMutations
from shardbroker.broker.controller_channel import ControllerRequestError, ControllerUnavailable
from shardbroker.broker.dispatch import RequestContext
from shardbroker.config.broker_config import BrokerConfig
from shardbroker.config.broker_properties import BROKER_CONFIGS, TOPIC_CONFIG_SYNONYMS
from shardbroker.config.config_def import UpdateMode
from shardbroker.config.listeners import split_listener_prefix
from shardbroker.config.log_config import TOPIC_CONFIGS
from shardbroker.metadata.image import TopicImage
from shardbroker.protocol.errors import ErrorCode
from shardbroker.security.acl import CLUSTER_NAME, AclOperation, ResourceType

log = logging.getLogger(__name__)

#: Controller calls wait this long when the request gives no (or a non-positive) timeout_ms.
DEFAULT_CONTROLLER_TIMEOUT = 30.0

# Kafka's ConfigResource.Type (resource_type in DescribeConfigs/AlterConfigs).
RESOURCE_TOPIC: Final = 2
RESOURCE_BROKER: Final = 4
RESOURCE_CLIENT_METRICS: Final = 16
#: The ACL resource that guards each config resource type (KafkaApis / ControllerApis): brokers,
#: broker loggers (8) and client metrics (16) the CLUSTER, topics and groups (32) themselves.
_CONFIG_ACL_RESOURCE: Final = {
    RESOURCE_TOPIC: ResourceType.TOPIC,
    RESOURCE_BROKER: ResourceType.CLUSTER,
    8: ResourceType.CLUSTER,
    16: ResourceType.CLUSTER,
    32: ResourceType.GROUP,
}

# DescribeConfigsResponse ConfigSource (Kafka's DescribeConfigsResponse.ConfigSource).
SOURCE_TOPIC_CONFIG: Final = 1
SOURCE_DYNAMIC_BROKER_CONFIG: Final = 2
SOURCE_STATIC_BROKER_CONFIG: Final = 4
SOURCE_DEFAULT_CONFIG: Final = 5
SOURCE_CLIENT_METRICS_CONFIG: Final = 7


def config_refusal(
    ctx: RequestContext, operation: AclOperation, resource_type: int, name: str
) -> tuple[ErrorCode, str] | None:
    """Kafka's check of one config resource: ``operation`` (DESCRIBE_CONFIGS or ALTER_CONFIGS) on
    the ACL resource that guards it; Kafka's error and message when refused, else None (also for
    a type no ACL resource guards: the handler refuses it as INVALID_REQUEST)."""
    acl_type = _CONFIG_ACL_RESOURCE.get(resource_type)
    if acl_type is None:
        return None
    if authorize(ctx, operation, acl_type, CLUSTER_NAME if acl_type == ResourceType.CLUSTER else name):
        return None
    return DENIED[acl_type]


def topics_allowed(ctx: RequestContext, operation: AclOperation, names: list[str]) -> set[str]:
    """The topic names of a CreateTopics/CreatePartitions request the principal may act on: those
    with ``operation`` on the TOPIC, plus every name listed twice (the controller refuses those as
    duplicates, INVALID_REQUEST, whatever the ACLs, as Kafka's ControllerApis)."""
    twice = {n for n, count in Counter(names).items() if count > 1}
    return twice | filter_authorized(ctx, operation, ResourceType.TOPIC, set(names) - twice)


#: KIP-599's answer for a topic refused while the client's controller_mutation_rate is exceeded.
THROTTLED: Final = (ErrorCode.THROTTLING_QUOTA_EXCEEDED, "The throttling quota has been exceeded.")


def controller_mutations(
    ctx: RequestContext, strict: bool, validate_only: bool
) -> ControllerMutations | None:
    """The request's controller mutation quota (KIP-599), None when no quota is set or for a
    ``validate_only`` request (nothing is mutated)."""
    quotas = ctx.worker.quotas
    if not quotas.enabled or validate_only:
        return None
    return quotas.mutations(ctx.session.principal.name, ctx.client_id, strict)


def controller_timeout(timeout_ms: int) -> float:
    return timeout_ms / 1000 if timeout_ms > 0 else DEFAULT_CONTROLLER_TIMEOUT


async def controller_items(
    ctx: RequestContext, op: str, args: dict[str, Any], key: str, count: int, timeout: float
) -> list[dict[str, Any]]:
    """The controller's per-item answers to ``op`` (``count`` of them, under ``key``).

    A controller that does not answer makes every item REQUEST_TIMED_OUT (the operation may still
    happen, which is what Kafka's REQUEST_TIMED_OUT means for admin requests); a request refused
    as a whole gives every item that error.
    """
    if count == 0:
        return []
    error: dict[str, Any]
    try:
        result = await ctx.worker.channel.request(op, args, timeout=timeout)
    except ControllerUnavailable as exc:
        error = {"error_code": int(ErrorCode.REQUEST_TIMED_OUT), "error_message": str(exc)}
        return [dict(error) for _ in range(count)]
    except ControllerRequestError as exc:
        error = {"error_code": exc.error_code, "error_message": str(exc)}
        return [dict(error) for _ in range(count)]
    items = result.get(key)
    if isinstance(items, list) and len(items) == count and all(isinstance(i, dict) for i in items):
        return items
    log.error("controller answered %s with %r: expected %d items under %r", op, result, count, key)
    error = {
        "error_code": int(result.get("error_code") or ErrorCode.UNKNOWN_SERVER_ERROR),
        "error_message": str(result.get("error_message") or f"unexpected controller answer to {op}"),
    }
    return [dict(error) for _ in range(count)]


@dataclass(frozen=True, slots=True)
class ConfigEntry:
    name: str
    value: str | None
    source: int
    read_only: bool
    config_type: int
    #: (name, value, source), highest precedence first, the entry's own source included.
    synonyms: tuple[tuple[str, str | None, int], ...]
    #: A PASSWORD row: described with a null value and is_sensitive.
    sensitive: bool = False


def topic_config_entries(config: BrokerConfig, topic: TopicImage) -> list[ConfigEntry]:
    """Every topic config with its effective value and where it comes from (interfaces A):
    TOPIC_CONFIG if the topic overrides it, STATIC_BROKER_CONFIG if a broker synonym is set,
    else DEFAULT_CONFIG."""
    effective = config.log_defaults.overrides(_valid_overrides(config, topic)).to_properties()
    props = config.properties
    entries = []
    for name, value in effective.items():
        synonyms: list[tuple[str, str | None, int]] = []
        if name in topic.configs:
            synonyms.append((name, topic.configs[name], SOURCE_TOPIC_CONFIG))
        for broker_name, _ in TOPIC_CONFIG_SYNONYMS[name]:
            if broker_name in props:
                synonyms.append((broker_name, props[broker_name], SOURCE_STATIC_BROKER_CONFIG))
        default_name = TOPIC_CONFIG_SYNONYMS[name][0][0]
        synonyms.append((default_name, TOPIC_CONFIGS[name].default, SOURCE_DEFAULT_CONFIG))
        entries.append(
            ConfigEntry(
                name=name,
                value=value,
                source=synonyms[0][2],
                read_only=False,
                config_type=TOPIC_CONFIGS[name].type,
                synonyms=tuple(synonyms),
            )
        )
    return entries


def _valid_overrides(config: BrokerConfig, topic: TopicImage) -> dict[str, str]:
    """The topic's overrides that LogConfig accepts (the controller validated them; a config
    name this version does not know, e.g. from a newer metadata log, is left out, not fatal)."""
    try:
        config.log_defaults.overrides(topic.configs)
        return dict(topic.configs)
    except ValueError:
        good = {}
        for name, value in topic.configs.items():
            try:
                config.log_defaults.overrides({name: value})
            except ValueError:
                log.warning("topic %s: ignoring config %s=%r", topic.name, name, value)
                continue
            good[name] = value
        return good


def broker_config_entries(
    config: BrokerConfig, node_id: int, dynamic: Mapping[str, str] | None = None
) -> list[ConfigEntry]:
    """Every row of ``BROKER_CONFIGS``, then every listener-prefixed property set: DYNAMIC_BROKER_CONFIG
    for a per-broker value set by AlterConfigs (``dynamic``), else STATIC_BROKER_CONFIG with the
    operator's text if set, else DEFAULT_CONFIG with the effective value (the row's default, or
    what the attribute it feeds holds: data directory, listeners, workers, topic defaults);
    read-only by update mode; a PASSWORD row's value is null (``sensitive``), as Kafka's."""
    props = config.properties
    dynamic = dynamic or {}
    advertised = ",".join(
        f"{a.listener}://{_hostport(a.host, a.port_of(node_id))}" for a in config.advertised()
    )
    effective: dict[str, str] = {
        "log.dirs": str(config.data_dir),
        "log.dir": str(config.data_dir),
        "listeners": ",".join(f"{e.listener}://{_hostport(e.host, e.port)}" for e in config.listeners),
        "advertised.listeners": advertised,
        "workers": str(config.workers),
        "metrics.listen": f"{config.metrics_host}:{config.metrics_port}",
    }
    log_props = config.log_defaults.to_properties()
    for topic_name, synonyms in TOPIC_CONFIG_SYNONYMS.items():
        effective[synonyms[0][0]] = log_props[topic_name]
    prefixed = sorted(n for n in {*props, *dynamic} if n not in BROKER_CONFIGS)
    entries = []
    for name in [*sorted(BROKER_CONFIGS), *prefixed]:
        split = split_listener_prefix(name)
        key = BROKER_CONFIGS[split[1] if split is not None and name not in BROKER_CONFIGS else name]
        found: list[tuple[str, str | None, int]] = []
        if name in dynamic:
            found.append((name, dynamic[name], SOURCE_DYNAMIC_BROKER_CONFIG))
        if name in props:
            found.append((name, props[name], SOURCE_STATIC_BROKER_CONFIG))
        default = effective.get(name, key.default)
        if name in BROKER_CONFIGS and (default is not None or not found):
            found.append((name, default, SOURCE_DEFAULT_CONFIG))
        if key.sensitive:
            found = [(n, None, s) for n, _, s in found]
        entries.append(
            ConfigEntry(
                name=name,
                value=found[0][1],
                source=found[0][2],
                read_only=key.mode is UpdateMode.READ_ONLY,
                config_type=key.type,
                synonyms=tuple(found),
                sensitive=key.sensitive,
            )
        )
    return entries


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
