"""DescribeConfigs (api key 32), v0-v4: topic and broker configs with their values and sources.

Topics: every topic config ``LogConfig`` knows, with the effective value and its source (Kafka's
ConfigSource): TOPIC_CONFIG (1) for the topic's own overrides, STATIC_BROKER_CONFIG (4) when a
broker synonym (``log.retention.ms`` ...) is set in the broker's config, else DEFAULT_CONFIG (5).
Not read-only (AlterConfigs changes them), never sensitive. With ``include_synonyms`` (v1+) each
entry lists its synonyms, highest precedence first, as Kafka does; v3+ adds the config type.
An unknown topic is UNKNOWN_TOPIC_OR_PARTITION (3); an illegal name INVALID_TOPIC_EXCEPTION (17).

Brokers: every row of the broker properties' table (``config.broker_properties.BROKER_CONFIGS``),
then every listener-prefixed property set (``listener.name.<l>.ssl.*``): DYNAMIC_BROKER_CONFIG
(2) for a per-broker value set by AlterConfigs (the metadata image's ``broker_configs``), else
STATIC_BROKER_CONFIG if the operator set it, else DEFAULT_CONFIG with its default (never null
for a row that has one); read-only unless the row is per-broker (the TLS stores); a PASSWORD
row (keys, passwords) is null with ``is_sensitive``, as Kafka. The resource name is a node id of this
broker (every worker shares one config) or empty (Kafka's "cluster default"); anything else is
INVALID_REQUEST, as Kafka answers for a broker id that is not its own. Client metrics resources
(KIP-714): ``metrics``, ``interval.ms`` and ``match``, CLIENT_METRICS_CONFIG (7) when the resource
sets them, else DEFAULT_CONFIG with the default (also for a name that is no resource: no
error), an empty name INVALID_REQUEST, as Kafka 4's ConfigHelper. Other resource
types (broker loggers, groups) are INVALID_REQUEST with a message saying so.

Authorization first, as KafkaApis: DESCRIBE_CONFIGS on the CLUSTER for broker (and broker logger,
client metrics) resources, else CLUSTER_AUTHORIZATION_FAILED; on the topic for a topic, else
TOPIC_AUTHORIZATION_FAILED (before its existence is checked); on the group for a group. The
answer keeps the request's order (Kafka lists the refused resources last).
"""

from __future__ import annotations

from shardbroker.broker.dispatch import ApiHandler, RequestContext
from shardbroker.broker.handlers._common import (
    RESOURCE_BROKER,
    RESOURCE_CLIENT_METRICS,
    RESOURCE_TOPIC,
    SOURCE_CLIENT_METRICS_CONFIG,
    SOURCE_DEFAULT_CONFIG,
    ConfigEntry,
    broker_config_entries,
    config_refusal,
    topic_config_entries,
)
from shardbroker.config.config_def import ConfigType
from shardbroker.metadata.client_metrics import (
    CONFIG_NAMES,
    INTERVAL_MS,
    INTERVAL_MS_DEFAULT,
    MATCH,
    METRICS,
)
from shardbroker.metadata.topic_names import validate_topic_name
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode
from shardbroker.security.acl import AclOperation

__all__ = ["HANDLER"]

_Result = m.DescribeConfigsResponse.DescribeConfigsResult
_Entry = m.DescribeConfigsResponse.DescribeConfigsResourceResult
_Synonym = m.DescribeConfigsResponse.DescribeConfigsSynonym


def _entry(e: ConfigEntry, version: int, synonyms: bool) -> _Entry:
    entry = _Entry(name=e.name, value=e.value, read_only=e.read_only, is_sensitive=e.sensitive)
    if version == 0:
        entry.is_default = e.source == SOURCE_DEFAULT_CONFIG
    else:
        entry.config_source = e.source
        if synonyms:
            entry.synonyms = [_Synonym(name=n, value=v, source=s) for n, v, s in e.synonyms]
    if version >= 3:
        entry.config_type = e.config_type
    return entry


def _describe(
    ctx: RequestContext, resource: m.DescribeConfigsRequest.DescribeConfigsResource, synonyms: bool
) -> _Result:
    version = ctx.api_version
    state = ctx.worker
    result = _Result(resource_type=resource.resource_type, resource_name=resource.resource_name)
    name = resource.resource_name
    refusal = config_refusal(ctx, AclOperation.DESCRIBE_CONFIGS, resource.resource_type, name)
    if refusal is not None:
        result.error_code, result.error_message = refusal
        return result
    if resource.resource_type == RESOURCE_TOPIC:
        topic = state.image.topics.get(name)
        if topic is None:
            why = validate_topic_name(name)
            if why is not None:
                result.error_code, result.error_message = ErrorCode.INVALID_TOPIC_EXCEPTION, why
            else:
                result.error_code = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                result.error_message = f"Topic {name!r} does not exist"
            return result
        entries = topic_config_entries(state.config, topic)
    elif resource.resource_type == RESOURCE_BROKER:
        nodes = {str(b.node_id) for b in state.image.brokers} | {str(state.node_id), ""}
        if name not in nodes:
            result.error_code = ErrorCode.INVALID_REQUEST
            result.error_message = (
                f"Unexpected broker id {name!r}: this broker's nodes are {sorted(nodes - {''})}"
            )
            return result
        entries = broker_config_entries(
            state.config, int(name) if name else state.node_id, state.image.broker_configs
        )
    elif resource.resource_type == RESOURCE_CLIENT_METRICS:
        if not name:
            result.error_code = ErrorCode.INVALID_REQUEST
            result.error_message = "Client metrics subscription name must not be empty"
            return result
        entries = _client_metrics_entries(state.image.client_metrics.get(name, {}))
    else:
        result.error_code = ErrorCode.INVALID_REQUEST
        result.error_message = (
            f"Resource type {resource.resource_type} is not supported: shardbroker describes "
            f"topic ({RESOURCE_TOPIC}), broker ({RESOURCE_BROKER}) and client metrics "
            f"({RESOURCE_CLIENT_METRICS}) configs"
        )
        return result
    keys = resource.configuration_keys
    if keys is not None:
        wanted = set(keys)
        entries = [e for e in entries if e.name in wanted]
    result.configs = [_entry(e, version, synonyms) for e in entries]
    return result


def _client_metrics_entries(configs: dict[str, str]) -> list[ConfigEntry]:
    """The three configs of a client metrics resource, set or default (Kafka 4's ConfigHelper)."""
    defaults = {METRICS: "", INTERVAL_MS: str(INTERVAL_MS_DEFAULT), MATCH: ""}
    out = []
    for name in CONFIG_NAMES:
        source = SOURCE_CLIENT_METRICS_CONFIG if name in configs else SOURCE_DEFAULT_CONFIG
        value = configs.get(name, defaults[name])
        out.append(
            ConfigEntry(
                name=name,
                value=value,
                source=source,
                read_only=False,
                config_type=ConfigType.INT if name == INTERVAL_MS else ConfigType.LIST,
                synonyms=((name, value, source),),
            )
        )
    return out


async def handle(ctx: RequestContext, request: m.DescribeConfigsRequest) -> m.DescribeConfigsResponse:
    version = ctx.api_version
    synonyms = version >= 1 and request.include_synonyms
    return m.DescribeConfigsResponse(results=[_describe(ctx, r, synonyms) for r in request.resources])


def error_response(
    request: m.DescribeConfigsRequest, version: int, code: ErrorCode, message: str
) -> m.DescribeConfigsResponse:
    return m.DescribeConfigsResponse(
        results=[
            _Result(
                error_code=code,
                error_message=message,
                resource_type=r.resource_type,
                resource_name=r.resource_name,
            )
            for r in request.resources
        ]
    )


HANDLER = ApiHandler(api_key=32, min_version=0, max_version=4, handle=handle, error_response=error_response)
