"""Client metrics resources (KIP-714) in the metadata log: their record and the alter op, pure.

Record (the resource's whole config set; an empty set removes the resource, as Kafka drops a
subscription whose configs were all deleted)::

    {"type": "client_metrics", "name", "configs": {"metrics": .., "interval.ms": .., "match": ..}}

`alter_client_metrics` is IncrementalAlterConfigs (and AlterConfigs, ``replace``) of CLIENT_METRICS
resources: each resource's ops are applied to its current configs and the result is checked by
metadata/client_metrics.py (Kafka's errors); a valid resource whose configs changed gets one
record, a refused one none. The asking worker has already compiled the ``match`` regexes it
sends (control cannot import the broker's RE2 matcher).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from shardbroker.config.config_def import ConfigError
from shardbroker.config.config_ops import apply_config_ops
from shardbroker.metadata.client_metrics import LIST_CONFIGS, ClientMetricsConfigError, parse_subscription
from shardbroker.protocol.errors import ErrorCode

__all__ = ["RECORD", "Resources", "alter_client_metrics", "apply_client_metrics_record"]

RECORD: Final = "client_metrics"

#: resource name -> its configs (only the ones set).
Resources = Mapping[str, Mapping[str, str]]


def apply_client_metrics_record(
    resources: Resources, record: Mapping[str, Any]
) -> dict[str, Mapping[str, str]]:
    """The resources after one record (a new mapping; ``resources`` is unchanged)."""
    out = dict(resources)
    configs = {str(k): str(v) for k, v in record["configs"].items()}
    if configs:
        out[str(record["name"])] = configs
    else:
        out.pop(str(record["name"]), None)
    return out


def alter_client_metrics(
    resources: Resources, items: list[Mapping[str, Any]], validate_only: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(records, one result per item): ``items`` are ``{"name", "ops", "replace"}``."""
    records: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for item in items:
        name = str(item["name"])
        current = {} if item.get("replace") else dict(resources.get(name, {}))
        try:
            new = apply_config_ops(current, item["ops"], is_list=LIST_CONFIGS.__contains__, effective={})
            parse_subscription(name, new)
        except ClientMetricsConfigError as exc:
            results.append({"error_code": int(exc.error_code), "error_message": str(exc)})
            continue
        except ConfigError as exc:
            results.append({"error_code": int(ErrorCode.INVALID_CONFIG), "error_message": str(exc)})
            continue
        if not validate_only and new != dict(resources.get(name, {})):
            records.append({"type": RECORD, "name": name, "configs": new})
        results.append({"error_code": 0, "error_message": None})
    return records, results
