"""The layering of DESIGN.md, checked on the source: lower layers never import upper ones or I/O."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "shardbroker"

# Network, process and signal machinery belongs to the broker, worker and supervisor layers.
IO_MODULES = {"socket", "asyncio", "signal", "selectors", "subprocess", "multiprocessing", "ssl"}
UPPER_LAYERS = {
    "shardbroker.broker",
    "shardbroker.ipc",
    "shardbroker.client",
    "shardbroker.cli",
    "shardbroker.supervisor",
    "shardbroker.worker",
}
FORBIDDEN = {
    "protocol": IO_MODULES | UPPER_LAYERS | {"shardbroker.storage", "shardbroker.config"},
    "storage": IO_MODULES | UPPER_LAYERS,
}


def imported_modules(source: str) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def violations(source: str, forbidden: set[str]) -> set[str]:
    return {
        name
        for name in imported_modules(source)
        if any(name == bad or name.startswith(bad + ".") for bad in forbidden)
    }


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_nothing_above_it(layer: str) -> None:
    files = sorted((PACKAGE / layer).rglob("*.py"))
    assert files, f"no modules found under shardbroker/{layer}"
    bad = {
        f"{path.relative_to(PACKAGE)}: {name}"
        for path in files
        for name in violations(path.read_text(), FORBIDDEN[layer])
    }
    assert not bad, f"layering broken: {sorted(bad)}"


def test_checker_sees_every_import_form() -> None:
    source = "import socket\nfrom asyncio import sleep\nfrom shardbroker.broker import handlers\nimport os\n"
    assert violations(source, FORBIDDEN["storage"]) == {
        "socket",
        "asyncio",
        "asyncio.sleep",
        "shardbroker.broker",
        "shardbroker.broker.handlers",
    }
