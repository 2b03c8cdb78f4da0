"""Arms a storage fault point (storage/fault_points.py) in a worker under test.

``SHARDBROKER_FAULT_POINT=<point name>:<marker file>`` in the broker's environment: the first
worker to reach that point creates the marker file (so the worker the supervisor respawns passes
on) and SIGKILLs itself, as ``kill -9`` would at that instant. Unset, nothing is installed.
"""

from __future__ import annotations

import os
import signal
from typing import Final

from shardbroker.storage import fault_points

__all__ = ["ENV", "arm_from_environment"]

ENV: Final = "SHARDBROKER_FAULT_POINT"


def arm_from_environment() -> None:
    armed = os.environ.get(ENV)
    if not armed:
        return
    point, _, marker = armed.rpartition(":")  # point names hold ":" themselves
    if not point or not marker:
        raise ValueError(f"{ENV}={armed!r}: expected <point>:<marker file>")

    def kill_once(name: str) -> None:
        if name != point:
            return
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            return  # fired already, in a worker before this one
        os.kill(os.getpid(), signal.SIGKILL)

    fault_points.install(kill_once)
