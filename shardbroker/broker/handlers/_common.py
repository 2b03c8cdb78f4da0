"""Helpers shared by the control-plane handlers: controller calls, config descriptions, ACL bits.

Not a handler module (the leading ``_`` keeps ``dispatch.discover`` from registering it).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from shardbroker.broker.controller_channel import ControllerRequestError, ControllerUnavailable
from shardbroker.broker.dispatch import RequestContext
from shardbroker.config import BROKER_PROPERTIES, BROKER_SYNONYMS, BrokerConfig, LogConfig
from shardbroker.metadata.image import TopicImage
from shardbroker.protocol.errors import ErrorCode

log = logging.getLogger(__name__)

#: Controller calls wait this long when the request gives no (or a non-positive) timeout_ms.
DEFAULT_CONTROLLER_TIMEOUT = 30.0

# Kafka's ConfigResource.Type (resource_type in DescribeConfigs/AlterConfigs).
RESOURCE_TOPIC: Final = 2
RESOURCE_BROKER: Final = 4

# DescribeConfigsResponse ConfigSource (Kafka's DescribeConfigsResponse.ConfigSource).
SOURCE_TOPIC_CONFIG: Final = 1
SOURCE_STATIC_BROKER_CONFIG: Final = 4
SOURCE_DEFAULT_CONFIG: Final = 5

# Kafka's ConfigDef.Type as DescribeConfigs v3+ reports it.
TYPE_BOOLEAN, TYPE_STRING, TYPE_INT, TYPE_LONG, TYPE_LIST = 1, 2, 3, 5, 7

#: Type of each topic config (TopicConfig / LogConfig.java).
TOPIC_CONFIG_TYPES: Final[Mapping[str, int]] = {
    "segment.bytes": TYPE_INT,
    "segment.ms": TYPE_LONG,
    "segment.index.bytes": TYPE_INT,
    "index.interval.bytes": TYPE_INT,
    "retention.ms": TYPE_LONG,
    "retention.bytes": TYPE_LONG,
    "flush.messages": TYPE_LONG,
    "flush.ms": TYPE_LONG,
    "max.message.bytes": TYPE_INT,
    "message.timestamp.type": TYPE_STRING,
    "cleanup.policy": TYPE_LIST,
    "file.delete.delay.ms": TYPE_LONG,
}

#: Every broker synonym of a topic config, highest precedence first (KafkaConfig: *.ms before
#: *.minutes before *.hours).
TOPIC_CONFIG_SYNONYMS: Final[Mapping[str, tuple[str, ...]]] = {
    **{topic: (broker,) for topic, broker in BROKER_SYNONYMS.items()},
    "segment.ms": ("log.roll.ms", "log.roll.hours"),
    "retention.ms": ("log.retention.ms", "log.retention.minutes", "log.retention.hours"),
}

_DEFAULT_LOG_PROPERTIES: Final = LogConfig().to_properties()

# Kafka's AclOperation codes; with no authorizer every operation is allowed, so the
# "authorized operations" bit sets (KIP-430) list every operation that applies to the resource.
_READ, _WRITE, _CREATE, _DELETE, _ALTER, _DESCRIBE = 3, 4, 5, 6, 7, 8
_CLUSTER_ACTION, _DESCRIBE_CONFIGS, _ALTER_CONFIGS, _IDEMPOTENT_WRITE = 9, 10, 11, 12
TOPIC_OPERATIONS: Final = sum(
    1 << op for op in (_READ, _WRITE, _CREATE, _DELETE, _ALTER, _DESCRIBE, _DESCRIBE_CONFIGS, _ALTER_CONFIGS)
)
CLUSTER_OPERATIONS: Final = sum(
    1 << op
    for op in (
        _CREATE,
        _ALTER,
        _DESCRIBE,
        _CLUSTER_ACTION,
        _DESCRIBE_CONFIGS,
        _ALTER_CONFIGS,
        _IDEMPOTENT_WRITE,
    )
)
#: What Kafka answers when the client did not ask for authorized operations.
OPERATIONS_NOT_REQUESTED: Final = -(2**31)


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
        for broker_name in TOPIC_CONFIG_SYNONYMS.get(name, ()):
            if broker_name in props:
                synonyms.append((broker_name, props[broker_name], SOURCE_STATIC_BROKER_CONFIG))
        default_name = TOPIC_CONFIG_SYNONYMS.get(name, (name,))[0]
        synonyms.append((default_name, _DEFAULT_LOG_PROPERTIES.get(name), SOURCE_DEFAULT_CONFIG))
        entries.append(
            ConfigEntry(
                name=name,
                value=value,
                source=synonyms[0][2],
                read_only=False,
                config_type=TOPIC_CONFIG_TYPES.get(name, TYPE_STRING),
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


def broker_config_entries(config: BrokerConfig, node_id: int) -> list[ConfigEntry]:
    """The broker's properties (every name ``BROKER_PROPERTIES`` knows), read-only: shardbroker
    reads them once at start (no dynamic broker configs), so AlterConfigs refuses them."""
    props = config.properties
    log_props = config.log_defaults.to_properties()
    port = config.listen_port + node_id
    derived: dict[str, str | None] = {
        "log.dirs": str(config.data_dir),
        "log.dir": str(config.data_dir),
        "listeners": f"PLAINTEXT://{config.listen_host}:{config.listen_port}",
        "advertised.listeners": f"PLAINTEXT://{config.advertised()}:{port}",
        "workers": str(config.workers),
        "metrics.listen": f"{config.metrics_host}:{config.metrics_port}",
        "num.partitions": str(config.num_partitions),
        "auto.create.topics.enable": "true" if config.auto_create_topics_enable else "false",
        "message.max.bytes": str(config.message_max_bytes),
        "socket.request.max.bytes": str(config.socket_request_max_bytes),
        "connections.max.idle.ms": str(config.connections_max_idle_ms),
        "fetch.max.bytes": str(config.fetch_max_bytes),
    }
    for topic_name, names in TOPIC_CONFIG_SYNONYMS.items():
        derived.setdefault(names[0], log_props.get(topic_name))
    entries = []
    for name in sorted(set(BROKER_PROPERTIES) | set(props)):
        if name in props:
            value: str | None = props[name]
            source = SOURCE_STATIC_BROKER_CONFIG
        else:
            value = derived.get(name)
            source = SOURCE_DEFAULT_CONFIG
        entries.append(
            ConfigEntry(
                name=name,
                value=value,
                source=source,
                read_only=True,
                config_type=_broker_type(value),
                synonyms=((name, value, source),),
            )
        )
    return entries


def _broker_type(value: str | None) -> int:
    if value in ("true", "false"):
        return TYPE_BOOLEAN
    if value is not None and value.lstrip("-").isdigit():
        return TYPE_LONG if abs(int(value)) > 2**31 - 1 else TYPE_INT
    return TYPE_STRING
