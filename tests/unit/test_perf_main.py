"""``python -m perf``: sub-command dispatch."""

from __future__ import annotations

import importlib

import pytest

from perf.__main__ import COMMANDS, main


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_resolves_to_a_function(name: str) -> None:
    module, function = COMMANDS[name][0].split(":")
    assert callable(getattr(importlib.import_module(module), function))


def test_unknown_or_missing_command_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["nonsense"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'nonsense'" in err and "check" in err
    assert main([]) == 2
    assert main(["--help"]) == 0
    assert "run" in capsys.readouterr().out


def test_dispatch_passes_the_remaining_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "/nonexistent/report.json"]) == 2
    assert "cannot read /nonexistent/report.json" in capsys.readouterr().err
