"""Group commit: many threads asking "make offset X durable" share one fdatasync.

No files here; the log passes in what a flush does. The protocol, for any number of threads::

    waiter(X): if durable >= X: return at once
               if a flush is running and its target >= X: wait for it
               if a flush is running that does not cover X: wait for it to end, then go again
               if none is running: become the leader: snapshot the target (the log end offset
               now, which covers X and every append made so far), run the flush without the
               lock, publish durable = target, wake everyone

So while one fdatasync runs, everyone who arrives queues behind it and the next fdatasync covers
all of them at once: N concurrent waiters cost at most 2 syncs in the worst case, not N.
fdatasync releases the GIL, so the broker runs ``flush`` in an executor thread while its event
loop goes on appending.

Timing: ``on_sync(seconds)``, when given, hears how long each flush action took (failed ones
too), from the thread that ran it. It is how the broker gets its flush latency histogram
(``shardbroker_log_flush_duration_seconds``) without storage knowing about metrics: a plain
callable, no import of the ipc layer. Two ``perf_counter`` calls per fdatasync (well under a
microsecond, against the milliseconds of the sync) are all it adds; nothing on the append path.

A failed sync is final (``KafkaStorageError`` for this and every later call): after an fsync
error Linux may have dropped the dirty pages and marked them clean, so a retry can report
success for data that is gone (PostgreSQL's "fsyncgate", 2018). The log must be reopened, which
runs recovery.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from shardbroker.storage.errors import KafkaStorageError

__all__ = ["GroupCommit", "SyncObserver"]

#: prepare() -> (target offset, action). ``prepare`` runs under the group-commit lock and must be
#: quick (take a snapshot); ``action`` does the syncing without the lock.
Prepare = Callable[[], tuple[int, Callable[[], None]]]
#: Hears the duration of each flush action, in seconds (called in the flushing thread).
SyncObserver = Callable[[float], None]


class GroupCommit:
    def __init__(
        self, prepare: Prepare, durable_offset: int = 0, on_sync: SyncObserver | None = None
    ) -> None:
        self._prepare = prepare
        self._on_sync = on_sync
        self._cond = threading.Condition()
        self._durable = durable_offset
        self._in_flight: int | None = None  # target of the running flush
        self._error: BaseException | None = None
        #: Number of flush actions run (tests and metrics: syncs per waiter).
        self.syncs = 0

    @property
    def durable_offset(self) -> int:
        return self._durable

    def advance(self, offset: int) -> None:
        """Record durability reached by other means (e.g. clean open)."""
        with self._cond:
            self._durable = max(self._durable, offset)

    def flush(self, offset: int, timeout: float | None = None) -> int:
        """Block until everything below ``offset`` is durable; returns the durable offset.

        Raises KafkaStorageError if a sync failed (now or earlier), TimeoutError on timeout.
        """
        with self._cond:
            while True:
                if self._error is not None:
                    raise KafkaStorageError(f"an earlier flush failed: {self._error}") from self._error
                if self._durable >= offset:
                    return self._durable
                if self._in_flight is None:
                    break
                if not self._cond.wait(timeout):
                    raise TimeoutError(f"flush to offset {offset} did not finish in {timeout} s")
            target, action = self._prepare()
            self._in_flight = target
        error: BaseException | None = None
        started = time.perf_counter()
        try:
            action()
        except BaseException as exc:
            error = exc
        if self._on_sync is not None:
            self._on_sync(time.perf_counter() - started)
        with self._cond:
            self.syncs += 1
            self._in_flight = None
            if error is None:
                self._durable = max(self._durable, target)
            else:
                self._error = error
            self._cond.notify_all()
            if error is not None:
                if isinstance(error, KafkaStorageError):
                    raise error
                raise KafkaStorageError(f"flush failed: {error}") from error
            return self._durable

    @property
    def failed(self) -> bool:
        return self._error is not None
