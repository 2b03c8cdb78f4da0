"""mirror_config from a TOML file and the ``shardbroker mirror`` flags: good and bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from shardbroker.cli.main import main
from shardbroker.config.config_def import ConfigError
from shardbroker.mirror.mirror_config import MirrorConfig

BASE = {
    "source.cluster.bootstrap.servers": "127.0.0.1:1",
    "target.cluster.bootstrap.servers": "127.0.0.1:2",
}


@pytest.mark.parametrize(
    ("props", "message"),
    [
        ({**BASE, "topic": "x"}, "Unknown configuration 'topic' (did you mean topics?)"),
        (
            {"source.cluster.bootstrap.servers": "h:1"},
            "Missing required configuration 'target.cluster.bootstrap.servers'",
        ),
        ({**BASE, "topics": "ok, (unclosed"}, "'(unclosed' for configuration topics: not a regex"),
        ({**BASE, "source.cluster.alias": "a", "target.cluster.alias": "a"}, "both 'a'"),
        (
            {**BASE, "source.cluster.ssl.truststore.locaton": "x"},
            "did you mean source.cluster.ssl.truststore.location",
        ),
        ({**BASE, "exactly.once.source.support": "yes"}, "exactly.once.source.support"),
    ],
)
def test_bad_input_is_refused_with_the_property_named(props: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        MirrorConfig.from_properties(props)
    assert message in str(err.value)


def test_flags_override_the_file(tmp_path: Path) -> None:
    path = tmp_path / "mirror.toml"
    path.write_text(
        '"source.cluster.bootstrap.servers" = "a:1"\n'
        '"target.cluster.bootstrap.servers" = "b:2"\n'
        'topics = "x.*"\n'
    )
    config = MirrorConfig.load(path, {"source.cluster.bootstrap.servers": "c:3", "topics": "orders"})
    assert config.source.bootstrap_servers == ("c:3",)
    assert config.target.bootstrap_servers == ("b:2",)
    assert config.topics.matches("orders") and not config.topics.matches("xy")


def test_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('"source.cluster.bootstrap.servers" = "a:1"\n')
    assert main(["mirror", "--config", str(bad)]) == 1
    assert "target.cluster.bootstrap.servers" in capsys.readouterr().err
    assert main(["mirror"]) == 2
    with pytest.raises(SystemExit) as usage:
        main(["mirror", "--source", "host:notaport"])
    assert usage.value.code == 2
