"""The property tables row by row: every default parses and loads, every int row refuses what is
outside its range naming the property and the range, and ConfigDef keeps names unique."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest

from shardbroker.config.broker_config import BrokerConfig
from shardbroker.config.broker_properties import BROKER_CONFIGS
from shardbroker.config.config_def import ConfigDef, ConfigError, ConfigKey, ConfigType, UpdateMode, between
from shardbroker.config.log_config import TOPIC_CONFIGS, LogConfig

Load = Callable[[Mapping[str, str]], object]


def _load_broker(props: Mapping[str, str]) -> object:
    return BrokerConfig.load(None, props)


#: Each row with what loads its table: the broker's start, or a topic's overrides.
ROWS: list[tuple[ConfigKey[Any], Load]] = [
    *((key, _load_broker) for key in BROKER_CONFIGS.values()),
    *((key, LogConfig.from_properties) for key in TOPIC_CONFIGS.values()),
]
INT_ROWS = [(key, load) for key, load in ROWS if key.type in (ConfigType.INT, ConfigType.LONG)]


@pytest.mark.parametrize(("key", "load"), ROWS, ids=[key.name for key, _ in ROWS])
def test_every_row_parses_its_default_and_loads_with_it(key: ConfigKey[Any], load: Load) -> None:
    assert key.doc and key.reader and key.validator.valid
    if key.default is not None:
        key.parse(key.default)
        load({key.name: key.default})


@pytest.mark.parametrize(("key", "load"), INT_ROWS, ids=[key.name for key, _ in INT_ROWS])
def test_every_int_row_refuses_out_of_range_and_non_numbers(key: ConfigKey[Any], load: Load) -> None:
    lo, hi = (int(x) for x in key.validator.valid.strip("[]").split(", "))
    for raw in (str(lo - 1), str(hi + 1), "abc"):
        with pytest.raises(ConfigError) as info:
            load({key.name: raw})
        assert key.name in str(info.value) and f"[{lo}, {hi}]" in str(info.value), raw
        assert info.value.error_code == 40


def test_a_name_is_defined_once_and_a_bad_default_fails_at_definition() -> None:
    table = ConfigDef(UpdateMode.READ_ONLY)
    table.define("a.b", ConfigType.INT, "1", between(0, 9), "doc", "reader")
    with pytest.raises(ValueError, match="defined twice"):
        table.define("a.b", ConfigType.INT, "1", between(0, 9), "doc", "reader")
    with pytest.raises(ConfigError, match=r"c\.d.*\[0, 9\]"):
        table.define("c.d", ConfigType.INT, "10", between(0, 9), "doc", "reader")
    assert list(table) == ["a.b"]
