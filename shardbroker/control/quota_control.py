"""Client quotas in the metadata log: their records and AlterClientQuotas (Kafka's
ClientQuotaControlManager), pure. Entities and keys: metadata/client_quotas.py. Records::

    {"type": "client_quota", "entity": [[type, name|null], ..], "key", "value"}   set one key
    {"type": "remove_client_quota", "entity": [..], "key"}                        remove one key

Alteration follows Kafka's KRaft controller (messages included): an empty entity, a type named
twice, an unknown type, an empty name, an unknown key, a key named twice, an entity named twice,
and a fractional ``producer_byte_rate`` / ``consumer_byte_rate`` (or one past int64, such as
1e300) are INVALID_REQUEST. Where we are stricter than Kafka, which stores them: a value that is
not > 0 or not finite (0, negative, NaN, infinity) is INVALID_REQUEST too -- 0 would stop a
client for good and NaN disables every comparison. ``ip`` entities (``connection_creation_rate``)
are refused: shardbroker does not enforce them. Each entity is all or nothing (Kafka lets an
entity's valid keys through beside a refused one); entities are independent of one another;
``validate_only`` answers without records.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Final

from shardbroker.metadata.client_quotas import (
    CLIENT_ID,
    IP,
    QUOTA_KEYS,
    USER,
    ClientQuotas,
    QuotaEntity,
    entity_text,
)
from shardbroker.protocol.errors import ErrorCode

__all__ = ["REMOVE_RECORD", "SET_RECORD", "alter_client_quotas", "apply_quota_record", "quota_records"]

SET_RECORD: Final = "client_quota"
REMOVE_RECORD: Final = "remove_client_quota"
_LONG_LIMIT: Final = float(1 << 63)


def _entity(raw: Sequence[Sequence[Any]]) -> QuotaEntity:
    return tuple(sorted((str(t), None if n is None else str(n)) for t, n in raw))


def apply_quota_record(
    quotas: ClientQuotas, record: Mapping[str, Any]
) -> dict[QuotaEntity, Mapping[str, float]]:
    """The quotas after one of this module's records (a new mapping; ``quotas`` is unchanged)."""
    entity = _entity(record["entity"])
    key = str(record["key"])
    out = dict(quotas)
    mine = dict(out.get(entity, {}))
    if record["type"] == SET_RECORD:
        mine[key] = float(record["value"])
    elif record["type"] == REMOVE_RECORD:
        if mine.pop(key, None) is None:
            raise ValueError(f"removal of a client quota that does not exist: {entity} {key}")
    else:
        raise ValueError(f"not a client quota record: {record['type']!r}")
    if mine:
        out[entity] = mine
    else:
        out.pop(entity, None)
    return out


def quota_records(quotas: ClientQuotas) -> list[dict[str, Any]]:
    """One set record per (entity, key): the snapshot's form."""
    return [
        {"type": SET_RECORD, "entity": [list(e) for e in entity], "key": key, "value": value}
        for entity, values in quotas.items()
        for key, value in values.items()
    ]


def _refused(message: str) -> tuple[int, str]:
    return int(ErrorCode.INVALID_REQUEST), message


def _entity_error(raw: Sequence[Mapping[str, Any]]) -> tuple[int, str] | None:
    """Kafka's validateEntity and the allowed combinations (user, client-id, both)."""
    if not raw:
        return _refused("Invalid empty client quota entity")
    seen: set[str] = set()
    for item in raw:
        kind, name = item["entity_type"], item["entity_name"]
        if kind in seen:
            return _refused(f"Invalid empty client quota entity, duplicate entity entry {kind}")
        seen.add(kind)
        if kind == IP:
            return _refused("IP quotas (connection_creation_rate) are not supported by shardbroker")
        if kind not in (USER, CLIENT_ID):
            return _refused(f"Unhandled client quota entity type: {kind}")
        if name is not None and not name:
            return _refused(f"Empty {kind} not supported")
    return None


def _value_error(key: str, value: float) -> tuple[int, str] | None:
    is_long = QUOTA_KEYS.get(key)
    if is_long is None:
        return _refused(f"Invalid configuration key {key}")
    if not math.isfinite(value) or value <= 0:
        return _refused(f"Quota {key} must be a finite number greater than 0, not {value!r}")
    if is_long and (value >= _LONG_LIMIT or abs(round(value) - value) > 1e-6):
        return _refused(f"Configuration {key} must be a Long value")
    return None


def alter_client_quotas(
    quotas: ClientQuotas, entries: Sequence[Mapping[str, Any]], validate_only: bool = False
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """AlterClientQuotas against ``quotas``: (records, one result per entry, in order).

    An entry is ``{"entity": [{"entity_type", "entity_name"}], "ops": [{"key", "value",
    "remove"}]}``; a result ``{"error_code", "error_message"}``. Malformed entries raise.
    """
    keys: list[QuotaEntity | None] = []
    for entry in entries:
        raw = entry["entity"]
        keys.append(
            None if _entity_error(raw) else _entity([(e["entity_type"], e["entity_name"]) for e in raw])
        )
    records: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for entry, entity in zip(entries, keys, strict=True):
        refused = _entity_error(entry["entity"])
        if refused is None and entity is not None and keys.count(entity) > 1:
            refused = _refused(f"Ignoring duplicate entity {entity_text(entity)}")
        ops: dict[str, float | None] = {}
        for op in entry["ops"]:
            if refused is not None:
                break
            key = str(op["key"])
            if key in ops:
                refused = _refused(f"Duplicate quota key {key} not updating quota for this entity")
                break
            value = None if op["remove"] else float(op["value"])
            if key not in QUOTA_KEYS:
                refused = _refused(f"Invalid configuration key {key}")
            elif value is not None:
                refused = _value_error(key, value)
            ops[key] = value
        if refused is not None or entity is None:
            code, message = refused or _refused("Invalid empty client quota entity")
            results.append({"error_code": code, "error_message": message})
            continue
        current = quotas.get(entity, {})
        raw_entity = [list(e) for e in entity]
        for key, value in ops.items():
            if value is None and key in current:
                records.append({"type": REMOVE_RECORD, "entity": raw_entity, "key": key})
            elif value is not None and current.get(key) != value:
                records.append({"type": SET_RECORD, "entity": raw_entity, "key": key, "value": value})
        results.append({"error_code": 0, "error_message": None})
    return ([] if validate_only else records), results
