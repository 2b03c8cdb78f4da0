"""Kafka's ConfigDef: a table of properties, one typed row each, and the validators of their values.

A row (``ConfigKey``) says everything about one property: its Kafka name, its type (Kafka's
ConfigDef.Type, valued as DescribeConfigs v3+ reports it), its default as property text, the
validator that turns text into the typed value and refuses anything else (its ``valid`` text is
the range or choices shown in errors, ``serve --help`` and docs/configuration.md), its update
mode, its documentation and the component that reads it. ``ConfigDef.define`` adds a row and
returns it: the defining module keeps the row as a constant, and a reader asks for its typed
value with it (``BrokerConfig.get(NUM_PARTITIONS)``, ``LogConfig.retention_ms``).

Invariants: names are unique in a table; a row's default parses with its own validator (checked
when the row is defined, so a bad default fails at import). Bad values raise ``ConfigError``
(Kafka's INVALID_CONFIG, 40) naming the property, the value and what is valid.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

__all__ = [
    "BOOLEAN",
    "INT_MAX",
    "LONG_MAX",
    "ConfigDef",
    "ConfigError",
    "ConfigKey",
    "ConfigType",
    "UpdateMode",
    "Validator",
    "between",
    "list_of",
    "one_of",
]

LONG_MAX: Final = (1 << 63) - 1
INT_MAX: Final = (1 << 31) - 1

T = TypeVar("T")


class ConfigError(ValueError):
    """An invalid config name or value (Kafka's InvalidConfigurationException)."""

    error_code: Final = 40  # INVALID_CONFIG


class ConfigType(enum.IntEnum):
    """Kafka's ConfigDef.Type, valued as DescribeConfigsResponse.ConfigType (v3+)."""

    BOOLEAN = 1
    STRING = 2
    INT = 3
    LONG = 5
    DOUBLE = 6
    LIST = 7
    #: A secret (a key, a password): never shown (DescribeConfigs answers null, is_sensitive).
    PASSWORD = 9


class UpdateMode(enum.Enum):
    """How a new value takes effect (the "update mode" column of Kafka's documentation).

    Most broker properties are read once at start (a restart applies a change; AlterConfigs
    refuses them, and DescribeConfigs reports them read-only); topic configs change per topic at
    once through AlterConfigs. Per-broker rows (Kafka's "per-broker" mode: the TLS key and trust
    stores) are also changed by AlterConfigs of a BROKER resource, kept in the metadata log and
    applied by every worker without a restart. Kafka's cluster-wide mode has no row here.
    """

    READ_ONLY = "read-only"
    PER_BROKER = "per-broker"
    TOPIC = "topic"


@dataclass(frozen=True, slots=True)
class Validator(Generic[T]):
    """Converts a property's text to its typed value; ``convert(name, raw)`` raises ConfigError."""

    convert: Callable[[str, str], T]
    #: What is valid, as errors and documentation show it: ``[1, 2147483647]``, ``CreateTime, ...``.
    valid: str


def _refuse(name: str, raw: str, why: str) -> ConfigError:
    return ConfigError(f"Invalid value {raw!r} for configuration {name}: {why}")


def between(lo: int, hi: int) -> Validator[int]:
    """An integer in ``[lo, hi]`` (Kafka's Range.between)."""

    def convert(name: str, raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise _refuse(name, raw, f"not a number (must be in [{lo}, {hi}])") from None
        if not lo <= value <= hi:
            raise ConfigError(f"Invalid value {value} for configuration {name}: must be in [{lo}, {hi}]")
        return value

    return Validator(convert, f"[{lo}, {hi}]")


def between_float(lo: float, hi: float) -> Validator[float]:
    """A number in ``[lo, hi]`` (Kafka's Range.between over a DOUBLE)."""

    def convert(name: str, raw: str) -> float:
        try:
            value = float(raw.strip())
        except ValueError:
            raise _refuse(name, raw, f"not a number (must be in [{lo}, {hi}])") from None
        if not lo <= value <= hi:  # NaN fails too
            raise ConfigError(f"Invalid value {value} for configuration {name}: must be in [{lo}, {hi}]")
        return value

    return Validator(convert, f"[{lo}, {hi}]")


def _boolean(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value not in ("true", "false"):
        raise _refuse(name, raw, "expected true or false")
    return value == "true"


BOOLEAN: Final = Validator(_boolean, "true, false")


def one_of(*choices: str, ignore_case: bool = False) -> Validator[str]:
    """One of ``choices``, exactly (Kafka's ValidString.in), or in any case, read as the choice
    (``ignore_case``: Kafka's CaseInsensitiveValidString.in)."""
    valid = ", ".join(choices)

    def convert(name: str, raw: str) -> str:
        value = raw.strip()
        if ignore_case:
            value = next((c for c in choices if c.lower() == value.lower()), value)
        if value not in choices:
            raise _refuse(name, raw, f"must be one of {valid}")
        return value

    return Validator(convert, valid)


def ordered_list_of(choices: Mapping[str, str]) -> Validator[tuple[str, ...]]:
    """A non-empty comma-separated list, in order, without repeats, of the keys of ``choices``
    (each read as its value: a long name may stand for a short one, as Kafka's class names for
    ``group.consumer.assignors``)."""
    valid = ", ".join(sorted(set(choices.values())))

    def convert(name: str, raw: str) -> tuple[str, ...]:
        parts = [p.strip() for p in raw.split(",") if p.strip()]
        if not parts or any(p not in choices for p in parts):
            raise _refuse(name, raw, f"a list of {valid}")
        values = tuple(dict.fromkeys(choices[p] for p in parts))
        if len(values) != len(parts):
            raise _refuse(name, raw, "a name is listed twice")
        return values

    return Validator(convert, f"a list of {valid}")


def list_of(*choices: str) -> Validator[frozenset[str]]:
    """A non-empty comma-separated list of ``choices`` (Kafka's ValidList.in)."""
    valid = " and/or ".join(choices)

    def convert(name: str, raw: str) -> frozenset[str]:
        parts = frozenset(p.strip() for p in raw.split(",") if p.strip())
        if not parts or not parts <= set(choices):
            raise _refuse(name, raw, f"a list of {valid}")
        return parts

    return Validator(convert, f"a list of {valid}")


@dataclass(frozen=True, slots=True)
class ConfigKey(Generic[T]):
    """One property: Kafka's ConfigDef.ConfigKey, plus the update mode and who reads it."""

    name: str
    type: ConfigType
    #: Kafka's default as property text; None when there is none (the reader derives one).
    default: str | None
    validator: Validator[T]
    mode: UpdateMode
    doc: str
    #: The component that reads the typed value (documentation, and a hint for whoever changes it).
    reader: str
    #: Kafka's listener override: ``listener.name.<listener>.<name>`` wins over ``<name>`` for
    #: that listener (the ssl.* rows).
    per_listener: bool = False

    def __post_init__(self) -> None:
        if self.default is not None:
            self.parse(self.default)

    @property
    def sensitive(self) -> bool:
        """A PASSWORD row: its value is never printed, logged or described."""
        return self.type is ConfigType.PASSWORD

    def parse(self, raw: str) -> T:
        """The typed value of ``raw``, or ConfigError naming this property and what is valid."""
        return self.validator.convert(self.name, raw)

    def typed_default(self) -> T:
        """The default's typed value (rows with a default only)."""
        if self.default is None:
            raise LookupError(f"{self.name} has no default")
        return self.parse(self.default)


class ConfigDef(Mapping[str, ConfigKey[Any]]):
    """An ordered table of rows by name, of one update mode unless a row says otherwise."""

    def __init__(self, mode: UpdateMode) -> None:
        self.mode = mode
        self._keys: dict[str, ConfigKey[Any]] = {}

    def define(
        self,
        name: str,
        type: ConfigType,
        default: str | None,
        validator: Validator[T],
        doc: str,
        reader: str,
        *,
        mode: UpdateMode | None = None,
        per_listener: bool = False,
    ) -> ConfigKey[T]:
        """Add a row and return it (the constant a reader asks for the typed value with)."""
        if name in self._keys:
            raise ValueError(f"configuration {name} is defined twice")
        key = ConfigKey(name, type, default, validator, mode or self.mode, doc, reader, per_listener)
        self._keys[name] = key
        return key

    def __getitem__(self, name: str) -> ConfigKey[Any]:
        return self._keys[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)
