"""The controller: owns the broker's metadata and tells every worker about it, from the supervisor.

Uses files (the metadata log, through metadata_log.py) and shared-memory rings (two per worker);
runs on the supervisor's ``selectors`` loop, no thread, no asyncio. Division of labour, h11-style:
controller_state.py decides (ops -> records -> new state, pure), metadata_log.py persists, this
module moves messages. One change:

1. a worker's ``ControlRequest`` arrives on its ``ctl-w<i>-out`` ring;
2. `controller_state.handle` validates it and returns records, the new state and the answer;
3. `MetadataLog.append` appends and fsyncs the records; on an I/O error nothing is adopted and
   the request gets KAFKA_STORAGE_ERROR;
4. the new `MetadataImage` (every worker as ``BrokerEndpoint(i, advertised host, port + i)``,
   controller id 0) goes to every worker on its ``ctl-w<i>-in`` ring;
5. the answer goes out once every *attached* live worker (one that acked at least once since its
   slot was (re)spawned) has acked (``MetadataApplied``) a version >= the change's. Workers run
   their subscribers before acking, so each has opened or closed the partitions the change
   touched. A booting worker is not waited for: it gets the newest image before it serves.

Restarts: before each fork of a slot (`before_spawn`) both its rings are `reset`, so nothing the
dead worker left half-read or half-written can surface, and the current image is written into
the fresh ``in`` ring: the new worker boots on current metadata without asking. The rings are
created once, before the first fork, and inherited.

Waking up: the controller watches a ``dup`` of each ``out`` ring's reader-doorbell fd on the
supervisor's selector (forked children close registered fds; the dup keeps the ring's own fd open
there); workers ring that doorbell after each control frame, and `poll` runs after every
supervisor step as a net. A full ``in`` ring (a wedged worker) never blocks the supervisor: frames
wait in a per-slot outbox, where a newer image replaces an older one. An image too big for the
ring is refused as POLICY_VIOLATION before anything is written, so no worker is left behind.

Partition moves: a log never has two writers, so a move is two changes. ``move_partitions``
takes the partition from its owner (leader -1), and the old owner hands the log over before it
acks (broker/log_manager.py); once it acked or is dead, `_advance_moves` applies
``assign_partitions`` (the new owner, leader epoch + 1) and the asker is answered when every
worker applied that. Meanwhile Produce requests wait for the placement and are then appended or
forwarded (broker/forwarding.py); Fetch answers NOT_LEADER_OR_FOLLOWER. A controller stopped in
between leaves leader -1 in the log, and ``reassign_orphans`` places the partition at the next
start. A move takes ~43 ms at the median (docs/notes/controller.md).

Local clients: the controller creates the ``local-dir`` and ``local-hw`` segments
(ipc/local_directory.py) and republishes the directory on every metadata change, before the
image goes to the workers. Admin requests cost a few ms, most of it the fdatasync
(docs/notes/controller.md); they are rare, so the controller costs the data path nothing.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import os
import selectors
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from shardbroker.config.broker_config import BrokerConfig
from shardbroker.config.broker_properties import (
    AUTO_LEADER_REBALANCE_ENABLE,
    LEADER_IMBALANCE_PER_BROKER_PERCENTAGE,
    LOCAL_CLIENTS_ALLOWED_GROUP,
    NUM_PARTITIONS,
)
from shardbroker.control.controller_state import (
    ControllerState,
    OpContext,
    handle,
    owners_of,
    place_directly,
    reassign_orphans,
)
from shardbroker.control.metadata_log import MetadataLog
from shardbroker.control.rebalance import plan_moves
from shardbroker.ipc.control import (
    ControlMessageError,
    ControlReply,
    ControlRequest,
    MetadataApplied,
    MetadataPush,
    decode_control,
    encode_control,
)
from shardbroker.ipc.local_access import DIRECTORY_GROUP_MODE, allowed_group, share_with_group, shm_path
from shardbroker.ipc.local_directory import HighWatermarkRows, HighWatermarkTable, LocalDirectory
from shardbroker.ipc.ring import Ring
from shardbroker.ipc.ring_names import Direction, control_ring
from shardbroker.ipc.ring_writer import RingWriter
from shardbroker.metadata.image import BrokerEndpoint, MetadataImage
from shardbroker.protocol.errors import ErrorCode

log = logging.getLogger(__name__)

#: controller -> worker carries whole images: ~15 bytes per partition, so 4 MiB holds an image of
#: ~200,000 partitions. worker -> controller carries small requests and acks.
IN_RING_CAPACITY: Final = 4 << 20
OUT_RING_CAPACITY: Final = 1 << 20

Register = Callable[[int, int, Callable[[int], None]], None]


@dataclass
class _Pending:
    slot: int
    request_id: int
    version: int
    result: dict[str, Any]


@dataclass
class _Move:
    """A move between its two steps: waiting for the old owners to let go (see `_advance_moves`)."""

    slot: int | None  # the asking worker; None for the controller's own rebalancing
    request_id: int
    version: int  # of the release record
    release: list[dict[str, Any]]
    result: dict[str, Any]


class _Slot:
    """The controller's end of one worker's pair of rings."""

    def __init__(self, slot: int, in_ring: Ring, out_ring: Ring) -> None:
        self.slot = slot
        self.in_ring = in_ring
        self.out_ring = out_ring
        self.writer: RingWriter = in_ring.writer()
        self.reader = out_ring.reader()
        self.outbox: collections.deque[tuple[bool, bytes]] = collections.deque()  # (is_image, frame)
        self.acked: int | None = None  # newest version acked since the slot was spawned
        self.watch_fd = -1


class Controller:
    """The metadata owner. `open`, `attach` to the supervisor's loop, then it serves requests."""

    def __init__(
        self,
        config: BrokerConfig,
        instance: str,
        *,
        workers: int | None = None,
        metadata_log: MetadataLog | None = None,
        in_capacity: int = IN_RING_CAPACITY,
        out_capacity: int = OUT_RING_CAPACITY,
    ) -> None:
        self.config = config
        self.instance = instance
        self.workers = workers if workers is not None else config.workers
        self.log = metadata_log or MetadataLog(config.data_dir)
        self.in_capacity = in_capacity
        self.out_capacity = out_capacity
        self.state = ControllerState()
        self.brokers = tuple(
            BrokerEndpoint(node_id=i, host=a.host, port=a.port_of(i), listener=a.listener)
            for i in range(self.workers)
            for a in config.advertised()
        )
        self.ctx = OpContext(
            workers=self.workers,
            num_partitions=config.get(NUM_PARTITIONS),
            log_defaults=config.log_defaults,
        )
        #: Whether a slot has a live worker; the supervisor wiring sets this.
        self.is_live: Callable[[int], bool] = lambda slot: True
        self.slots: list[_Slot] = []
        self.pending: list[_Pending] = []
        self.moves: list[_Move] = []
        self._image_frame = b""
        self._registered = False
        #: For local clients (ipc/local_directory.py): published on every metadata change.
        self.directory: LocalDirectory | None = None
        self.high_watermarks: HighWatermarkTable | None = None
        self._hw_rows: HighWatermarkRows | None = None

    # --- lifecycle --------------------------------------------------------------------------------

    def open(self) -> None:
        """Replay the metadata log, move partitions of missing workers, create the rings."""
        self.state = self.log.open()
        moved = reassign_orphans(self.state, self.workers)
        if moved.records:
            self.log.append(moved.records, moved.state)
            self.state = moved.state
            log.warning(
                "moved the partitions of workers >= %d (the broker has %d workers now): %d topics",
                self.workers,
                self.workers,
                len(moved.records),
            )
        if self.config.get(AUTO_LEADER_REBALANCE_ENABLE):
            self._spread()
        self._image_frame = self._encode_image()
        try:
            for i in range(self.workers):
                in_ring = Ring.create(self.instance, control_ring(i, Direction.TO_WORKER), self.in_capacity)
                try:
                    out_ring = Ring.create(
                        self.instance, control_ring(i, Direction.FROM_WORKER), self.out_capacity
                    )
                except BaseException:
                    in_ring.close()
                    raise
                self.slots.append(_Slot(i, in_ring, out_ring))
            self.directory = LocalDirectory.create(self.instance)
            self.high_watermarks = HighWatermarkTable.create(self.instance)
            group = allowed_group(self.config.get(LOCAL_CLIENTS_ALLOWED_GROUP))
            if group is not None:  # its members' LocalProducers/Consumers read both (local_access.py)
                shared = (self.directory.segment.name, self.high_watermarks.segment.name)
                share_with_group(map(shm_path, shared), group.gr_gid, DIRECTORY_GROUP_MODE)
            self._hw_rows = HighWatermarkRows(self.high_watermarks.rows)
            self._publish_directory()
        except BaseException:
            self.close()
            raise
        log.info(
            "controller: cluster %s, metadata version %d, %d topics",
            self.cluster_id,
            self.state.version,
            len(self.state.topics),
        )

    def _spread(self) -> None:
        """Before any worker runs: partitions spread by count onto workers that have too few
        (workers were added), in one change with new leader epochs (auto_rebalance.py)."""
        owners = owners_of(self.state, self.workers)
        plan = plan_moves(
            {},
            owners,
            self.workers,
            imbalance_percentage=self.config.get(LEADER_IMBALANCE_PER_BROKER_PERCENTAGE),
            max_moves=len(owners),
        )
        if plan:
            outcome = place_directly(self.state, [(m.topic, m.partition, m.to_worker) for m in plan])
            self.log.append(outcome.records, outcome.state)
            self.state = outcome.state
            log.warning(
                "spread %d partitions over the %d workers (some had too few)", len(plan), self.workers
            )

    @property
    def cluster_id(self) -> str:
        return self.log.cluster_id

    @property
    def image(self) -> MetadataImage:
        return self.state.image(self.cluster_id, self.brokers)

    def attach(self, register: Register) -> None:
        """Watch every ``out`` ring on a selector loop (``Supervisor.register``)."""
        for s in self.slots:
            s.watch_fd = os.dup(s.out_ring.reader_bell.fileno())
            os.set_inheritable(s.watch_fd, False)
            register(s.watch_fd, selectors.EVENT_READ, functools.partial(self._on_readable, s))
        self._registered = True

    def close(self) -> None:
        """Unlink the rings (the creating process owns them) and close the metadata log."""
        for s in self.slots:
            if s.watch_fd >= 0:
                # Not unregistered: the supervisor's selector is closed (or closes) with it.
                with contextlib.suppress(OSError):
                    os.close(s.watch_fd)
                s.watch_fd = -1
            for ring in (s.in_ring, s.out_ring):
                with contextlib.suppress(BufferError):
                    ring.close()
        self.slots = []
        self._close_local_segments()
        self.log.close()

    def _close_local_segments(self) -> None:
        for table in (self.directory, self.high_watermarks):
            if table is not None:
                with contextlib.suppress(BufferError):
                    table.close()
        self.directory = self.high_watermarks = None

    def for_child(self, slot: int) -> tuple[Ring, Ring]:
        """In a forked worker: this slot's (in, out) rings; everything else of the controller's
        is closed (other slots' rings, the metadata log fd, the watch fds if not already)."""
        mine = self.slots[slot]
        for s in self.slots:
            if s.watch_fd >= 0 and not self._registered:
                # Forked before `attach` registered them, so the supervisor did not close them.
                with contextlib.suppress(OSError):
                    os.close(s.watch_fd)
            s.watch_fd = -1
            if s is not mine:
                for ring in (s.in_ring, s.out_ring):
                    with contextlib.suppress(BufferError):
                        ring.close()  # unmaps; never unlinks outside the creating pid
        self._close_local_segments()  # the worker attaches them by name (broker/local_clients.py)
        self.log.close()
        self.slots = []
        self.pending = []
        return mine.in_ring, mine.out_ring

    def before_spawn(self, slot: int) -> None:
        """A worker is about to be forked into ``slot``: fresh rings, the current image first."""
        s = self.slots[slot]
        self.pending = [p for p in self.pending if p.slot != slot]
        for ring in (s.in_ring, s.out_ring):
            ring.reset()
        s.writer = s.in_ring.writer()
        s.reader = s.out_ring.reader()
        s.outbox.clear()
        s.acked = None
        if not s.writer.try_write(self._image_frame):
            raise RuntimeError(f"metadata image of {len(self._image_frame)} bytes does not fit {s.in_ring}")

    # --- the loop ----------------------------------------------------------------------------------

    def poll(self) -> None:
        """Read every ``out`` ring, retry outboxes, answer what is answerable. Cheap when idle."""
        for s in self.slots:
            self._read(s)
        self._advance_moves()
        self._flush_outboxes()
        self._answer_pending()

    def _on_readable(self, s: _Slot, mask: int) -> None:
        s.out_ring.reader_bell.drain()
        self._read(s)
        self._advance_moves()
        self._flush_outboxes()
        self._answer_pending()

    def _read(self, s: _Slot) -> None:
        while True:
            frames = s.reader.read_batch(64)
            if not frames:
                return
            for frame in frames:
                try:
                    message = decode_control(frame)
                except ControlMessageError as exc:
                    log.error("worker %d: bad control frame dropped: %s", s.slot, exc)
                    continue
                if isinstance(message, MetadataApplied):
                    if s.acked is None or message.version > s.acked:
                        s.acked = message.version
                elif isinstance(message, ControlRequest):
                    self._request(s, message)
                else:
                    log.error("worker %d sent a %s, which only the controller sends", s.slot, message)

    def _request(self, s: _Slot, request: ControlRequest) -> None:
        if request.op == "list_moves":
            self._send(
                s, encode_control(ControlReply(request.request_id, {"moves": self.moves_in_progress()}))
            )
            return
        self.start(request.op, request.args, s.slot, request.request_id)

    def start(self, op: str, args: dict[str, Any], slot: int | None = None, request_id: int = 0) -> None:
        """Run an op for worker ``slot`` (None: for the controller itself); it is answered once
        every worker has applied it (`_answer_pending`), a move once both of its steps are."""
        result = self.apply(op, args)
        release = result.pop("release", None)
        if release:
            self.moves.append(_Move(slot, request_id, int(result["version"]), release, result))
        elif slot is not None:
            self.pending.append(_Pending(slot, request_id, int(result["version"]), result))

    def moves_in_progress(self) -> list[dict[str, Any]]:
        return [
            {k: item[k] for k in ("topic", "partition", "from", "to")}
            for mv in self.moves
            for item in mv.release
        ]

    def _advance_moves(self) -> None:
        """Step two of each move whose old owners have let go: they acked the release image (so
        they closed the log: log_manager.py), or they are dead (and a restarted one boots on
        an image where nobody leads the partition). Only then does the new owner get it: never two
        writers of one log."""
        waiting = []
        for mv in self.moves:
            owners = {item["from"] for item in mv.release}
            if any(self._holds(o, mv.version) for o in owners):
                waiting.append(mv)
                continue
            assigned = self.apply("assign_partitions", {"partitions": mv.release})
            failed = {
                (a["topic"], a["partition"]): a for a in assigned["partitions"] if a.get("error_code")
            }  # fmt: skip
            for res in mv.result["partitions"]:
                if (res["topic"], res["partition"]) in failed:
                    res.update(failed[(res["topic"], res["partition"])])
            mv.result["version"] = assigned["version"]
            for item in mv.release:
                log.info(
                    "moved %s-%d from worker %d to worker %d",
                    item["topic"],
                    item["partition"],
                    item["from"],
                    item["to"],
                )
            if mv.slot is not None:
                self.pending.append(_Pending(mv.slot, mv.request_id, int(assigned["version"]), mv.result))
        self.moves = waiting

    def _holds(self, slot: int, version: int) -> bool:
        """Whether worker ``slot`` may still hold the logs a change of ``version`` took from it."""
        if not 0 <= slot < len(self.slots) or not self.is_live(slot):
            return False
        acked = self.slots[slot].acked
        return acked is None or acked < version

    def apply(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        """Run an op, persist its records, push the new image; returns the answer (with version)."""
        outcome = handle(self.state, op, args, self.ctx)
        if outcome.records:
            frame = encode_control(MetadataPush(outcome.state.image(self.cluster_id, self.brokers).to_dict()))
            limit = min((s.in_ring.max_payload for s in self.slots), default=len(frame))
            if len(frame) > limit:
                # A worker could never receive it: refuse the change rather than strand workers.
                return {
                    "error_code": int(ErrorCode.POLICY_VIOLATION),
                    "error_message": f"the metadata image would be {len(frame)} bytes, over the "
                    f"control ring's {limit}: too many partitions for this broker",
                    "version": self.state.version,
                }
            try:
                self.log.append(outcome.records, outcome.state)
            except OSError as exc:
                log.error("metadata log append failed: %s", exc)
                return {
                    "error_code": int(ErrorCode.KAFKA_STORAGE_ERROR),
                    "error_message": f"metadata log write failed: {exc.strerror or exc}",
                    "version": self.state.version,
                }
            self.state = outcome.state
            self._publish_directory()
            self._image_frame = frame
            for s in self.slots:
                self._send(s, self._image_frame, is_image=True)
        return outcome.result

    def _publish_directory(self) -> None:
        """Topics, owners and high-watermark rows for local clients (before the image goes out,
        so a worker applying the image already finds its partitions' rows)."""
        if self.directory is None or self._hw_rows is None:
            return
        # Local clients commit offsets over TCP with our own plaintext client.
        plain = [a.listener for a in self.config.advertised() if a.security_protocol == "PLAINTEXT"]
        b = next((b for b in self.brokers if b.listener in plain[:1]), self.brokers[0])
        bootstrap = f"[{b.host}]:{b.port}" if ":" in b.host else f"{b.host}:{b.port}"
        topics = {
            name: (t.topic_id.hex, tuple(p.leader for p in t.partitions))
            for name, t in self.state.topics.items()
        }
        try:
            self.directory.publish(self._hw_rows.body(self.state.version, self.workers, bootstrap, topics))
        except ValueError as exc:  # too many partitions: local clients keep the last directory
            log.error("local-client directory not updated: %s", exc)

    def _encode_image(self) -> bytes:
        return encode_control(MetadataPush(self.image.to_dict()))

    def _send(self, s: _Slot, frame: bytes, *, is_image: bool = False) -> None:
        if is_image and s.outbox:
            # Only the newest image matters; replies queued behind older images stay in order.
            kept = [(img, f) for img, f in s.outbox if not img]
            s.outbox.clear()
            s.outbox.extend(kept)
        if not s.outbox and s.writer.try_write(frame):
            return
        s.outbox.append((is_image, frame))

    def _flush_outboxes(self) -> None:
        for s in self.slots:
            while s.outbox and s.writer.try_write(s.outbox[0][1]):
                s.outbox.popleft()

    def _answer_pending(self) -> None:
        if not self.pending:
            return
        attached = [s for s in self.slots if s.acked is not None and self.is_live(s.slot)]
        still = []
        for p in self.pending:
            if not self.is_live(p.slot):
                continue  # the asker died: its client connection went with it
            if all(s.acked is not None and s.acked >= p.version for s in attached):
                self._send(self.slots[p.slot], encode_control(ControlReply(p.request_id, p.result)))
            else:
                still.append(p)
        self.pending = still
