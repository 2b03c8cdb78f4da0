"""The audit trail of one worker: authorization denials, logged at most once a minute per
(principal, operation, resource) with a count of the ones not logged.

Kafka logs every denial on ``kafka.authorizer.logger``; a client retrying a forbidden request
in a loop then writes thousands of identical lines a second. Here the first denial of a key is
logged at once (INFO, logger ``shardbroker.authorizer``), the repeats within ``WINDOW_S`` are
counted, and the next line for that key says how many were suppressed. Keys not seen for a window
are forgotten when the table grows past ``MAX_KEYS``, so memory is bounded whatever the clients do.
Lines name the principal, host, operation, resource and API, never a credential.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from shardbroker.security.acl import AclOperation, ResourceType

__all__ = ["WINDOW_S", "RateLimitedLog", "SecurityAudit"]

log = logging.getLogger("shardbroker.authorizer")

WINDOW_S: Final = 60.0
MAX_KEYS: Final = 10_000


@dataclass(slots=True)
class _Window:
    start: float
    suppressed: int = 0


@dataclass(slots=True)
class RateLimitedLog:
    """One line per key per window; the repeats counted into the next line of the key."""

    logger: logging.Logger
    clock: Callable[[], float] = time.monotonic
    windows: dict[tuple[str, ...], _Window] = field(default_factory=dict)

    def emit(self, key: tuple[str, ...], message: str) -> bool:
        """Log ``message`` unless ``key`` was logged within the window (then count it); True if
        a line was written."""
        now = self.clock()
        window = self.windows.get(key)
        if window is not None and now - window.start < WINDOW_S:
            window.suppressed += 1
            return False
        if window is not None and window.suppressed:
            message += f" ({window.suppressed} more in the previous {WINDOW_S:.0f} s not logged)"
        if window is None and len(self.windows) >= MAX_KEYS:
            self._forget_expired(now)
        self.windows[key] = _Window(now)
        self.logger.info("%s", message)
        return True

    def _forget_expired(self, now: float) -> None:
        expired = [k for k, w in self.windows.items() if now - w.start >= WINDOW_S]
        for k in expired:
            del self.windows[k]
        if len(self.windows) >= MAX_KEYS:  # a flood of distinct keys within one window
            self.windows.clear()


@dataclass(slots=True)
class SecurityAudit:
    """What a worker records about security decisions (see the module docstring)."""

    denials: RateLimitedLog = field(default_factory=lambda: RateLimitedLog(log))

    def denied(
        self,
        principal: str,
        host: str,
        operation: AclOperation,
        resource_type: ResourceType,
        name: str,
        api: str,
    ) -> None:
        key = (principal, host, operation.name, resource_type.name, name)
        self.denials.emit(
            key,
            f"Principal = {principal} is Denied operation = {operation.name} from host = {host} on "
            f"resource = {resource_type.name}:{name} for request = {api}",
        )
