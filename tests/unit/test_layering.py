"""The layering of shardbroker/, checked on the source (``ast``): a declared order of packages, no
import against it, no import circle, and no network or process machinery in the pure layers.

Every import counts, also those under ``if TYPE_CHECKING:`` and inside functions: a type or a
lazy import is still a dependency a reader has to follow.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "shardbroker"

#: The packages (and the top-level modules) of shardbroker/, lowest first. A module may import
#: its own package and any package of a lower layer; never a package of its own layer (siblings
#: stay independent) nor one above. ``shardbroker`` is the package root (its version).
LAYERS: tuple[tuple[str, ...], ...] = (
    ("shardbroker",),
    ("protocol",),  # sans-IO Kafka codec
    ("config",),  # the property tables
    ("security",),  # principals, SASL mechanisms, SCRAM credentials, ACLs (pure)
    ("storage",),  # one partition's log on disk
    ("metadata",),  # the metadata image every process shares
    ("ipc",),  # shared memory, rings, doorbells, counters, /proc
    ("supervision",),  # supervisor loop, policy, worker process main, heartbeats
    ("observability",),  # Prometheus collector and /metrics
    ("broker", "control", "client", "loadgen"),  # a worker; the controller; client libraries
    ("mirror",),  # shardbroker mirror: replication between clusters, over the client library
    ("serve",),  # the composition root
    ("cli",),
    ("__main__",),
)
LEVEL = {name: level for level, names in enumerate(LAYERS) for name in names}

# Network, process and signal machinery stays out of the pure layers.
IO_MODULES = {"socket", "asyncio", "signal", "selectors", "subprocess", "multiprocessing", "ssl"}
NO_IO = ("protocol", "storage", "metadata", "security")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def imports_of(module: str, source: str, is_package: bool) -> Iterator[str]:
    """Every module name ``source`` imports (absolute; relative imports resolved)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from pkg import mod`` imports mod; ``from mod import name`` imports mod.
            for alias in node.names:
                yield f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base


def dependencies() -> dict[str, set[str]]:
    """Module -> the shardbroker modules it imports."""
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        names = set(imports_of(module, path.read_text(), path.name == "__init__.py"))
        graph[module] = {n for n in names if n in MODULES and n != module}
    return graph


def against_order(graph: dict[str, set[str]]) -> set[str]:
    bad = set()
    for module, deps in graph.items():
        for dep in deps:
            src, dst = layer_of(module), layer_of(dep)
            if src != dst and LEVEL[dst] >= LEVEL[src]:
                bad.add(f"{module} -> {dep}")
    return bad


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_every_package_has_a_layer() -> None:
    assert {layer_of(m) for m in MODULES} == set(LEVEL), "place new packages in LAYERS"


def test_no_import_against_the_layer_order() -> None:
    bad = against_order(dependencies())
    assert not bad, f"imports against LAYERS: {sorted(bad)}"


def test_no_import_circle() -> None:
    found = circles(dependencies())
    assert not found, f"import circles: {found}"


@pytest.mark.parametrize("layer", NO_IO)
def test_pure_layers_do_no_network_or_process_io(layer: str) -> None:
    bad = {
        f"{module}: {name}"
        for module, path in MODULES.items()
        if layer_of(module) == layer
        for name in imports_of(module, path.read_text(), path.name == "__init__.py")
        if name.split(".")[0] in IO_MODULES
    }
    assert not bad, f"I/O in a pure layer: {sorted(bad)}"


# ---------------------------------------------------------------- the checker itself


def test_checker_sees_every_import_form() -> None:
    source = (
        "import socket\nfrom asyncio import sleep\nfrom shardbroker.broker import handlers\n"
        "from . import codec\nfrom ..ipc import ring\nif TYPE_CHECKING:\n    from x import y\n"
        "def f():\n    import z\n"
    )
    found = set(imports_of("shardbroker.protocol.record_batch", source, is_package=False))
    assert {
        "socket",
        "asyncio",
        "shardbroker.broker.handlers",
        "shardbroker.protocol.codec",
        "shardbroker.ipc.ring",
        "x",
        "z",
    } == found
    assert "shardbroker.ipc.ring" in set(
        imports_of("shardbroker.ipc", "from .ring import R", is_package=True)
    )


def test_checker_finds_upward_and_sibling_imports() -> None:
    graph = {
        "shardbroker.storage.log": {"shardbroker.broker.server"},  # upward
        "shardbroker.broker.server": {"shardbroker.control.controller", "shardbroker.storage.log"},
        "shardbroker.control.controller": set(),
    }
    assert against_order(graph) == {
        "shardbroker.storage.log -> shardbroker.broker.server",
        "shardbroker.broker.server -> shardbroker.control.controller",  # siblings
    }


def test_checker_finds_circles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert circles(graph) == [["a", "b", "c"]]
