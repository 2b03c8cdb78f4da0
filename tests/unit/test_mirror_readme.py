"""The README's mirror.toml example is a config ``shardbroker mirror`` accepts, as printed.

A renamed or removed property (or a regex that no longer compiles) fails here, not for a user
who copies the example.
"""

from __future__ import annotations

import re
from pathlib import Path

from shardbroker.mirror.mirror_config import MirrorConfig

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_mirror_toml_loads(tmp_path: Path) -> None:
    match = re.search(r"```toml\n(# mirror\.toml\n.*?)```", README.read_text(), re.S)
    assert match, "the README's mirror.toml example"
    path = tmp_path / "mirror.toml"
    path.write_text(match[1])
    config = MirrorConfig.load(path, {})
    assert (config.source.alias, config.target.alias) == ("edge", "central")
    assert config.remote_topic("orders") == "edge.orders"
    assert config.mirrors_topic("payments.eu") and not config.mirrors_topic("audit")
    assert config.target.security.security_protocol == "SASL_SSL"
    assert config.groups.matches("billing-eu") and not config.exactly_once
