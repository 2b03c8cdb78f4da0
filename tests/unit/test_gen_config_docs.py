"""tools/gen_config_docs.py: the committed docs/configuration.md is what the property tables generate."""

from __future__ import annotations

import difflib
import subprocess
import sys
from pathlib import Path

import pytest

from shardbroker.config.broker_properties import BROKER_CONFIGS
from shardbroker.config.log_config import TOPIC_CONFIGS

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("docs") / "configuration.md"
    subprocess.run(
        [sys.executable, str(REPO / "tools" / "gen_config_docs.py"), "--out", str(out)], check=True
    )
    return out.read_text(encoding="utf-8")


def test_committed_docs_are_what_the_tables_generate(generated: str) -> None:
    committed = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    if generated != committed:
        diff = difflib.unified_diff(
            committed.splitlines(True), generated.splitlines(True), "committed", "generated"
        )
        pytest.fail(
            "docs/configuration.md differs; run python tools/gen_config_docs.py:\n" + "".join(list(diff)[:40])
        )


def test_every_row_is_documented_with_its_default(generated: str) -> None:
    for key in [*BROKER_CONFIGS.values(), *TOPIC_CONFIGS.values()]:
        line = next(line for line in generated.splitlines() if line.startswith(f"| `{key.name}` |"))
        assert key.default is None or f"`{key.default}`" in line, key.name
        assert key.validator.valid in line and key.reader in line and key.mode.value in line, key.name
