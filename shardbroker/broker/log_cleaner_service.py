"""The log cleaner of one worker (Kafka's LogCleaner and its CleanerThreads): compacts the
partitions this worker leads whose ``cleanup.policy`` has ``compact``: user topics,
``__consumer_offsets`` and ``__transaction_state`` alike.

Each of ``log.cleaner.threads`` threads loops: look at every compacted partition (its dirty ratio
and max compaction delay: storage/log_cleaner_manager.py), clean the one that is most overdue,
else the dirtiest one at or above ``min.cleanable.dirty.ratio``; when none is due, sleep
``log.cleaner.backoff.ms``. The threads share the dedupe buffer (``log.cleaner.dedupe.buffer.size``
split between them, times ``log.cleaner.io.buffer.load.factor``, 24 bytes a key) and each has a
throttle of ``log.cleaner.io.max.bytes.per.second``. A partition whose log cannot be read (a bad
CRC, undecodable records) is marked uncleanable, logged and counted, and left alone until the
worker restarts; the others go on (Kafka's behaviour). A partition moving away or deleted aborts
its clean at the next 4 MiB chunk (PartitionLog.cleaning).

Where it runs, by measurement: each thread decides and swaps in the worker, and the clean itself
(reading, the key map, writing the cleaned segments) runs in a child process of the thread
(broker/cleaner_process.py: the figures that decided it).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from shardbroker.broker.cleaner_process import CleanerProcess
from shardbroker.config.broker_config import BrokerConfig
from shardbroker.config.broker_properties import (
    LOG_CLEANER_BACKOFF_MS,
    LOG_CLEANER_DEDUPE_BUFFER_SIZE,
    LOG_CLEANER_ENABLE,
    LOG_CLEANER_IO_BUFFER_LOAD_FACTOR,
    LOG_CLEANER_IO_MAX_BYTES_PER_SECOND,
    LOG_CLEANER_THREADS,
)
from shardbroker.storage.errors import StorageError
from shardbroker.storage.log_cleaner import CleanAbortedError, UncleanableLogError
from shardbroker.storage.log_cleaner_manager import (
    CleanableOffsets,
    CleanRunner,
    clean_partition,
    cleanable_offsets,
    read_cleaner_checkpoint,
)
from shardbroker.storage.offset_map import max_keys_for

if TYPE_CHECKING:
    from shardbroker.broker.partition import Partition

__all__ = ["CleanerCounters", "LogCleanerService"]

log = logging.getLogger(__name__)

#: A key map smaller than this cannot hold one segment's keys in practice: refuse to start.
MIN_MAP_KEYS: Final = 1024


@dataclass
class CleanerCounters:
    """What the metrics publisher reads (cumulative counters, gauges by partition)."""

    bytes_read: int = 0
    bytes_written: int = 0
    runs: int = 0
    errors: int = 0
    aborted: int = 0
    #: The largest max compaction delay of the last look at every partition, in ms.
    max_compaction_delay_ms: int = 0
    #: (topic, partition) -> dirty ratio, compacted partitions only, as of the last look.
    dirty_ratios: dict[tuple[str, int], float] = field(default_factory=dict)
    #: (topic, partition) of the partitions marked uncleanable.
    uncleanable: set[tuple[str, int]] = field(default_factory=set)
    #: When a thread last ended a look or swapped a cleaned group in (Unix ms; 0: never).
    last_progress_ms: int = 0


class LogCleanerService:
    """Threads cleaning the compacted partitions of one worker (a Service: start, then stop)."""

    def __init__(
        self,
        node_id: int,
        config: BrokerConfig,
        partitions: Callable[[], Iterable[Partition]],
        *,
        wall_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.node_id = node_id
        self.threads = config.get(LOG_CLEANER_THREADS)
        self.enabled = config.get(LOG_CLEANER_ENABLE) and self.threads > 0
        self.max_keys = max_keys_for(
            config.get(LOG_CLEANER_DEDUPE_BUFFER_SIZE),
            config.get(LOG_CLEANER_IO_BUFFER_LOAD_FACTOR),
            max(1, self.threads),
        )
        if self.enabled and self.max_keys < MIN_MAP_KEYS:
            raise ValueError(
                f"log.cleaner.dedupe.buffer.size holds {self.max_keys} keys per cleaner thread; "
                f"at least {MIN_MAP_KEYS} are needed (24 bytes a key)"
            )
        self.io_rate = config.get(LOG_CLEANER_IO_MAX_BYTES_PER_SECOND)
        self.backoff_s = config.get(LOG_CLEANER_BACKOFF_MS) / 1000
        self.counters = CleanerCounters()
        self._partitions = partitions
        self._wall_ms = wall_ms
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._in_progress: set[tuple[str, int]] = set()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        if not self.enabled:
            log.info("worker %d: log cleaner disabled", self.node_id)
            return
        for i in range(self.threads):
            t = threading.Thread(target=self._run, name=f"log-cleaner-{self.node_id}-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the threads; a clean in progress is aborted when its log closes (drain)."""
        self._stop.set()
        self._wake.set()
        for t in self._threads:
            t.join(timeout)
        self._threads = []

    def publish(self, sink: Callable[[CleanerCounters], None]) -> None:
        """Hand the counters to ``sink`` (the metrics tick) under the lock the threads update
        them under, so one look's figures go out together."""
        with self._lock:
            sink(self.counters)

    def wake(self) -> None:
        """Look again now, not after the backoff (a topic became compacted, tests)."""
        self._wake.set()

    # ------------------------------------------------------------------ the threads

    def _run(self) -> None:
        name = f"{threading.current_thread().name}-process"
        cleaner = CleanerProcess(name, self.max_keys, self.io_rate)
        try:
            while not self._stop.is_set():
                try:
                    cleaned = self.clean_filthiest(cleaner)
                except Exception:  # a bug: logged, and the thread goes on after the backoff
                    log.exception("worker %d: log cleaner failed", self.node_id)
                    cleaned = False
                if not cleaned:
                    self._wake.wait(self.backoff_s)
                    self._wake.clear()
        finally:
            cleaner.stop()

    def clean_filthiest(self, cleaner: CleanRunner) -> bool:
        """One look at every compacted partition, then one clean of the most due one; False when
        none was due."""
        now = self._wall_ms()
        best: tuple[int, float, Partition] | None = None
        ratios: dict[tuple[str, int], float] = {}
        max_delay = 0
        led: set[tuple[str, int]] = set()
        for p in self._partitions():
            plog = p.log
            key = (p.topic, p.index)
            led.add(key)
            if not plog.config.compact:
                continue
            offsets = self._peek(p, now)
            if offsets is None:
                continue
            ratios[key] = offsets.dirty_ratio
            max_delay = max(max_delay, offsets.max_compaction_delay_ms)
            with self._lock:
                skip = key in self.counters.uncleanable or key in self._in_progress
            if skip or not offsets.due(plog.config.min_cleanable_dirty_ratio):
                continue
            rank = (offsets.max_compaction_delay_ms, offsets.dirty_ratio)
            if best is None or rank > best[:2]:
                best = (*rank, p)
        with self._lock:
            # A partition moved away or deleted is not uncleanable here any more (Kafka forgets it too).
            self.counters.uncleanable &= led
            self.counters.dirty_ratios = ratios
            self.counters.max_compaction_delay_ms = max_delay
            self.counters.last_progress_ms = self._wall_ms()
        if best is None:
            return False
        return self._clean(cleaner, best[2], now)

    @staticmethod
    def _peek(p: Partition, now: int) -> CleanableOffsets | None:
        plog = p.log
        with plog.cleaning() as view:
            if view is None:
                return None
            return cleanable_offsets(view, read_cleaner_checkpoint(plog.directory, p.topic, p.index), now)

    def _progressed(self) -> None:
        with self._lock:
            self.counters.last_progress_ms = self._wall_ms()

    def _clean(self, cleaner: CleanRunner, p: Partition, now: int) -> bool:
        key = (p.topic, p.index)
        with self._lock:
            if key in self._in_progress:
                return False
            self._in_progress.add(key)
        started = time.monotonic()
        try:
            offsets, stats = clean_partition(p.log, cleaner, now, progress=self._progressed)
        except UncleanableLogError as exc:
            log.error("worker %d: %s-%d is uncleanable until restart: %s", self.node_id, *key, exc)
            with self._lock:
                self.counters.uncleanable.add(key)
                self.counters.errors += 1
            return False
        except CleanAbortedError:
            with self._lock:
                self.counters.aborted += 1
            return False
        except (OSError, StorageError) as exc:  # disk full: the originals stay; retried after backoff
            log.error("worker %d: cleaning %s-%d failed: %s", self.node_id, *key, exc)
            with self._lock:
                self.counters.errors += 1
            return False
        except Exception:  # a bug: logged with its stack, counted like any failed clean
            log.exception("worker %d: cleaning %s-%d failed", self.node_id, *key)
            with self._lock:
                self.counters.errors += 1
            return False
        finally:
            with self._lock:
                self._in_progress.discard(key)
        if stats is None:
            return False
        elapsed = max(time.monotonic() - started, 1e-6)
        with self._lock:
            self.counters.runs += 1
            self.counters.bytes_read += stats.bytes_read
            self.counters.bytes_written += stats.bytes_written
        log.info(
            "worker %d: cleaned %s-%d [%d, %d): %d segments in %d groups, %.1f MB read, %.1f MB "
            "written (%.1f%% size reduction), %d of %d records kept, %d keys in the map, %.3f s "
            "(%.1f MB/s)",
            self.node_id, *key, offsets.first_dirty, stats.end_offset, stats.segments_cleaned,
            stats.groups, stats.bytes_read / 1e6, stats.bytes_written / 1e6,
            100 * (1 - stats.bytes_written / stats.bytes_read) if stats.bytes_read else 0.0,
            stats.records_retained, stats.records_read, stats.map_keys, elapsed,
            stats.bytes_read / 1e6 / elapsed,
        )  # fmt: skip
        return True
