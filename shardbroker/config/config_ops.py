"""AlterConfigs' operations on a set of config overrides, and which broker configs may change.

``apply_config_ops`` is Kafka's AlterConfigOp semantics over a name -> text mapping: SET, DELETE
(back to the default), APPEND and SUBTRACT (LIST configs only: items added once, removed where
present, starting from the effective value). The topic configs (the controller's
``alter_configs``) and the per-broker dynamic configs (``alter_broker_configs``) share it, so
both answer the same operation the same way.

``check_dynamic_broker_configs`` is Kafka's DynamicBrokerConfig check for a BROKER resource:
only per-broker rows (the TLS stores) and their listener-prefixed forms change without a
restart; anything else is "Cannot update these configs dynamically", and every value must parse
with its row's validator. Both raise ``ConfigError`` (INVALID_CONFIG).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from shardbroker.config.broker_properties import BROKER_CONFIGS
from shardbroker.config.config_def import ConfigError, ConfigKey, ConfigType, UpdateMode
from shardbroker.config.listeners import split_listener_prefix

__all__ = ["apply_config_ops", "check_dynamic_broker_configs", "dynamic_broker_key", "is_dynamic_list"]


def apply_config_ops(
    current: Mapping[str, str],
    ops: Iterable[Mapping[str, Any]],
    *,
    is_list: Callable[[str], bool],
    effective: Mapping[str, str],
) -> dict[str, str]:
    """The overrides after ``ops`` ({"name", "op": set|delete|append|subtract, "value"});
    ``effective``: the values APPEND and SUBTRACT start from when ``current`` has none."""
    new = dict(current)
    for op in ops:
        name, kind, value = str(op["name"]), str(op.get("op", "set")), op.get("value")
        if kind == "set":
            if value is None:
                raise ConfigError(f"Null value for configuration {name}")
            new[name] = str(value)
        elif kind == "delete":
            new.pop(name, None)
        elif kind in ("append", "subtract"):
            if not is_list(name):
                raise ConfigError(f"Config value {kind} is not allowed for config key {name}")
            items_now = [v for v in new.get(name, effective.get(name, "")).split(",") if v]
            items = [v.strip() for v in str(value or "").split(",") if v.strip()]
            if kind == "append":
                items_now += [v for v in items if v not in items_now]
            else:
                items_now = [v for v in items_now if v not in items]
            new[name] = ",".join(items_now)
        else:
            raise ConfigError(f"Unknown config operation {kind!r} for {name}")
    return new


def dynamic_broker_key(name: str) -> ConfigKey[Any] | None:
    """The per-broker row ``name`` (or its listener-prefixed form) sets; None if it cannot change."""
    split = split_listener_prefix(name)
    key = BROKER_CONFIGS.get(name if split is None or name in BROKER_CONFIGS else split[1])
    if key is None or key.mode is not UpdateMode.PER_BROKER or (split is not None and not key.per_listener):
        return None
    return key


def check_dynamic_broker_configs(configs: Mapping[str, str]) -> None:
    """Every name a per-broker row, every value valid for it (ConfigError naming them)."""
    fixed = sorted(name for name in configs if dynamic_broker_key(name) is None)
    if fixed:
        raise ConfigError(
            f"Cannot update these configs dynamically: {', '.join(fixed)} (read at start: change the "
            "config file and restart)"
        )
    for name, value in configs.items():
        key = dynamic_broker_key(name)
        assert key is not None
        key.validator.convert(name, value)


def is_dynamic_list(name: str) -> bool:
    """A per-broker LIST row (or its prefixed form): APPEND and SUBTRACT apply to it."""
    key = dynamic_broker_key(name)
    return key is not None and key.type is ConfigType.LIST
