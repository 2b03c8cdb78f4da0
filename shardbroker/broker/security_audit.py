"""The audit trail of one worker: authentication outcomes and authorization denials, counted in
the worker's shared counters (ipc/counters.py, exported as ``shardbroker_authentication_total``
and ``shardbroker_authorization_denied_total``) and logged at most once a minute per key with a
count of the lines not written.

Kafka logs every denial on ``kafka.authorizer.logger`` and every failed authentication on its
Selector's logger; a client retrying in a loop then writes thousands of identical lines a second.
Here the first event of a key is logged at once (INFO), the repeats within ``WINDOW_S`` are
counted, and the next line for that key says how many were suppressed. Keys: (principal, host,
operation, resource) for denials on logger ``shardbroker.authorizer``; (listener, client host,
mechanism, user name the client gave) for failed authentications on ``shardbroker.authentication``.
Keys not seen for a window are forgotten when a table grows past ``MAX_KEYS``, so memory is
bounded whatever the clients send. Lines name who, from where and why, never a password or token;
metric labels are bounded sets (listeners of the config, ``MECHANISMS``, Kafka's operation and
resource codes), never a user name. Successful authentications are counted, not logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from shardbroker.ipc.counters import MECHANISMS, UNKNOWN_MECHANISM, WorkerCounters
from shardbroker.security.acl import AclOperation, ResourceType

__all__ = ["SSL_MECHANISM", "WINDOW_S", "RateLimitedLog", "SecurityAudit"]

log = logging.getLogger("shardbroker.authorizer")
auth_log = logging.getLogger("shardbroker.authentication")

#: The ``mechanism`` of a TLS handshake's outcome (and of a client certificate's principal).
SSL_MECHANISM: Final = "SSL"
_MECHANISM_INDEX: Final = {name: i for i, name in enumerate(MECHANISMS)}
#: Characters of a client-given user name kept in a log line and a rate-limit key.
_USER_CHARS: Final = 64

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


class SecurityAudit:
    """What a worker records about security decisions (see the module docstring).

    ``listeners``: the config's listener names, in the order of the counters' cells; a listener
    not among them (a connection built by hand in a unit test) is logged, not counted."""

    __slots__ = ("_listeners", "counters", "denials", "failures")

    def __init__(
        self,
        counters: WorkerCounters,
        listeners: Sequence[str],
        denials: RateLimitedLog | None = None,
        failures: RateLimitedLog | None = None,
    ) -> None:
        if len(listeners) > counters.listeners:
            raise ValueError(f"{len(listeners)} listeners, counters have cells for {counters.listeners}")
        self.counters = counters
        self.denials = denials if denials is not None else RateLimitedLog(log)
        self.failures = failures if failures is not None else RateLimitedLog(auth_log)
        self._listeners = {name: i for i, name in enumerate(listeners)}

    def authentication(
        self,
        listener: str,
        host: str,
        mechanism: str | None,
        success: bool,
        *,
        user: str = "",
        reason: str = "",
        reauthentication: bool = False,
    ) -> None:
        """One authentication's outcome. ``mechanism``: the SASL mechanism (or `SSL_MECHANISM`);
        None or a name not in ``MECHANISMS`` counts as ``UNKNOWN``. ``user``: the name the client
        gave, if any (unverified); ``reason``: why it failed (never a secret)."""
        m = _MECHANISM_INDEX.get(mechanism or "", UNKNOWN_MECHANISM)
        index = self._listeners.get(listener)
        if index is not None:
            self.counters.authentication(index, m, success)
        if success:
            return
        label = MECHANISMS[m]
        user = user[:_USER_CHARS]
        who = f", user {user!r}" if user else ""
        self.failures.emit(
            (listener, host, label, user),
            f"Failed {'re-' if reauthentication else ''}authentication with {host} on listener "
            f"{listener} ({label}{who}): {reason}",
        )

    def denied(
        self,
        principal: str,
        host: str,
        operation: AclOperation,
        resource_type: ResourceType,
        name: str,
        api: str,
    ) -> None:
        """One authorization denial: counted always, logged once a minute per key."""
        self.counters.denied(operation.value, resource_type.value)
        key = (principal, host, operation.name, resource_type.name, name)
        self.denials.emit(
            key,
            f"Principal = {principal} is Denied operation = {operation.name} from host = {host} on "
            f"resource = {resource_type.name}:{name} for request = {api}",
        )
