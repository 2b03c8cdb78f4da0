"""The ``ring`` series: `ClientRings` finds the rings of an instance that the collector does not
own (local clients', forwarding workers') and sums them per low-cardinality label; `ring_families`
builds ``shardbroker_ring_{used,capacity}_bytes`` (gauges) and ``shardbroker_ring_{frames,bytes}_total``
(counters: frames published and the bytes they took, frame headers and padding included) from
those and the controller's rings.

Labels (`ring_label`, over ring_names.py's parser): worker S's forwarding rings to worker D are
``fwd-w<S>-to-w<D>`` (requests) and ``fwd-w<S>-to-w<D>-acks``; LocalProducers' ring pairs are
summed as ``local-w<W>-requests`` / ``local-w<W>-acks``, LocalConsumers' wake rings as
``local-wake``; the controller's rings keep their names, ``ctl-w<i>-in`` / ``-out`` (serve.py reads
them through the controller's own mappings). So at most 2 + 2 + 2 (W - 1) values per worker plus
one, whatever the number of clients: the per-client detail DESIGN.md wants opt-in is not exported.

Invariants: ``/dev/shm`` is listed at each scrape and each ring's header read read-only
(``ring_layout.read_stats``): nothing is created, attached or unlinked, and a ring gone between
listing and reading is skipped. The exported counters are monotonic while the supervisor runs:
per label, the totals a ring had at its last scrape are kept once it is gone (a sum over live
rings would drop when a client leaves, which ``rate()`` reads as a reset and turns into a spike),
so they undercount by what a ring carried after its last scrape. A label whose rings are all gone
keeps its counters but loses its gauges (a 0 capacity would make the fill ratio NaN).

Why no mapping is kept between scrapes: a cached header mapping would keep a closed client's whole
ring allocated; reading afresh costs 1.8-2.7 ms per scrape with 50 rings (docs/notes/metrics.md).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from shardbroker.ipc.ring_layout import RingStats, read_stats
from shardbroker.ipc.ring_names import Direction, RingRole, parse_ring_name
from shardbroker.ipc.shm import PREFIX, SHM_DIR, validate_instance

__all__ = ["ClientRings", "RingStat", "ring_families", "ring_label"]

#: (``ring`` label, the ring's stats or the sum of the stats of the rings with that label)
RingStat = tuple[str, RingStats]


def ring_families(rings: Iterable[RingStat]) -> Iterator[Metric]:
    """The four ``shardbroker_ring_*`` families of ``rings``."""
    r = ["ring"]
    summed = "; local-* rings: summed over the live clients"
    used = GaugeMetricFamily("shardbroker_ring_used_bytes", f"Bytes queued in the ring{summed}", labels=r)
    cap = GaugeMetricFamily("shardbroker_ring_capacity_bytes", f"Ring data area size{summed}", labels=r)
    kept = "; local-* and fwd-* rings: summed, keeping the totals of rings gone, so monotonic"
    frames = CounterMetricFamily("shardbroker_ring_frames", f"Frames published into the ring{kept}", labels=r)
    sent = CounterMetricFamily(
        "shardbroker_ring_bytes",
        f"Bytes published into the ring, frame headers and padding included{kept}",
        labels=r,
    )
    for name, stats in rings:
        if stats.capacity:  # 0: every ring of an aggregated label is gone
            used.add_metric([name], float(stats.used_bytes))
            cap.add_metric([name], float(stats.capacity))
        frames.add_metric([name], float(stats.frames_published))
        sent.add_metric([name], float(stats.bytes_published))
    yield from (used, cap, frames, sent)


def ring_label(name: str) -> str | None:
    """The ``ring`` label of the client or forwarding ring whose object name (the part after
    ``/shardbroker-<instance>-``) is ``name``; None for any other object (the controller's rings
    are labelled by their names, from the controller's own mappings)."""
    ring = parse_ring_name(name)
    if ring is None:
        return None
    to_worker = ring.direction is Direction.TO_WORKER
    if ring.role is RingRole.LOCAL_PRODUCER:
        return f"local-w{ring.worker}-{'requests' if to_worker else 'acks'}"
    if ring.role is RingRole.FORWARD:
        pair = f"fwd-w{ring.source}-to-w{ring.worker}"
        return pair if to_worker else f"{pair}-acks"
    return "local-wake" if ring.role is RingRole.LOCAL_WAKE else None


class ClientRings:
    """Every ``lc*`` ring of one instance, found in ``/dev/shm`` at each call, as `RingStat`s
    summed per `ring_label`, with the totals of rings gone kept (module docstring).

    Not thread-safe: one scraper at a time (the supervisor's loop).

    Cost per call: a listing of ``/dev/shm`` and, per ring, an open, a one-page read-only mmap, a
    few loads, munmap and close (``read_stats``: 23 us per ring on an idle core).
    """

    def __init__(self, instance: str, shm_dir: Path = SHM_DIR) -> None:
        self.prefix = f"{PREFIX}-{validate_instance(instance)}-"
        self.shm_dir = shm_dir
        #: file name -> (label, bytes, frames) at the last call, for the rings seen then
        self._last: dict[str, tuple[str, int, int]] = {}
        #: label -> (bytes, frames) summed over the rings that went away
        self._gone: dict[str, tuple[int, int]] = {}

    def __call__(self) -> list[RingStat]:
        seen: dict[str, tuple[str, int, int]] = {}
        live: dict[str, RingStats] = {}
        with os.scandir(self.shm_dir) as entries:
            for entry in entries:
                name = entry.name
                if not name.startswith(self.prefix) or "." in name:  # "." : a doorbell FIFO
                    continue
                label = ring_label(name[len(self.prefix) :])
                if label is None:
                    continue
                stats = read_stats(entry.path)
                if stats is None:  # unlinked since listed, or not yet initialised
                    continue
                seen[name] = (label, stats.bytes_published, stats.frames_published)
                acc = live.get(label)
                live[label] = stats if acc is None else RingStats(*map(sum, zip(acc, stats, strict=True)))
        for name, (label, sent, frames) in self._last.items():
            now = seen.get(name)
            if now is None or now[1] < sent:  # gone (or a new ring under a reused name)
                gone_sent, gone_frames = self._gone.get(label, (0, 0))
                self._gone[label] = (gone_sent + sent, gone_frames + frames)
        self._last = seen
        out: list[RingStat] = []
        for label in sorted(live.keys() | self._gone.keys()):
            used, capacity, sent, frames = live.get(label, RingStats(0, 0, 0, 0))
            gone_sent, gone_frames = self._gone.get(label, (0, 0))
            out.append((label, RingStats(used, capacity, sent + gone_sent, frames + gone_frames)))
        return out
