"""Fault-injection points: named places in storage code where a test can have the process die by
SIGKILL, to prove that a kill at that exact step leaves data that recovery makes whole (the log
cleaner's swap: log.py, log_cleaner.py).

Storage only names the points; what happens there is installed by the process that runs it
(supervision/fault_injection.py arms one point from the environment of a worker under test), so
this layer holds no process machinery. Nothing installed (always, outside tests): `reached` is
one comparison with None.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["install", "reached"]

_hook: Callable[[str], None] | None = None


def install(hook: Callable[[str], None] | None) -> None:
    """Call ``hook(name)`` at every point from now on (None: nothing again)."""
    global _hook
    _hook = hook


def reached(name: str) -> None:
    """A fault point: the installed hook decides whether the process dies here."""
    if _hook is not None:
        _hook(name)
