"""The worker's end of its control rings: metadata images in, admin requests out.

Uses the worker's asyncio loop and two shared-memory rings (inherited from the supervisor, which
created them before forking; see control/controller.py for the controller's end and restarts).

A `Service`, registered first so it starts before everything else: `start` waits for the first
image (the controller writes the current one into the ring before forking the worker, so this is
immediate) and applies every frame already waiting, so the worker never serves on an image older
than the one it was forked with. Afterwards ``reader.watch`` calls back on the loop whenever a
frame arrives -- no thread, no polling task.

Frames are handled strictly in ring order by one consumer task. For a ``MetadataPush`` the
subscribers run (awaited, in subscription order) with ``(old, new)``, and only then is the version
acked: so when the controller answers an admin request, every worker has already opened or
closed the partitions it changed. Several images waiting at once are applied as one step (the
newest; subscribers diff old against new anyway). A ``ControlReply`` resolves the future of its
request; since the controller sends it only after this worker acked the change, the image that
includes the change is applied here before the requester sees the answer.

Requests carry a per-process id; `request` waits for the reply up to ``timeout`` and raises
`ControllerUnavailable` otherwise (or if the rings are gone: drained, or the supervisor died).
Each frame written towards the controller is followed by an explicit doorbell ring: the
controller sits in a selector loop that does not run the ring's sleep protocol, and control
messages are rare enough for one write(2) each not to matter.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from shardbroker.ipc.control import (
    ControlMessage,
    ControlMessageError,
    ControlReply,
    ControlRequest,
    MetadataApplied,
    MetadataPush,
    decode_control,
    encode_control,
)
from shardbroker.ipc.ring import Ring
from shardbroker.ipc.ring_reader import RingReader
from shardbroker.ipc.ring_writer import RingWriter
from shardbroker.metadata.image import MetadataImage

if TYPE_CHECKING:
    from shardbroker.supervision.worker import Worker

log = logging.getLogger(__name__)

Subscriber = Callable[[MetadataImage, MetadataImage], Awaitable[None]]

#: How long `start` waits for the first image. The controller writes it before the fork, so only
#: a broken supervisor makes this expire; the boot then fails and the supervisor halts.
FIRST_IMAGE_TIMEOUT = 30.0
#: How long writing one frame towards the controller may wait for room in the ring.
WRITE_TIMEOUT = 10.0


class ControllerUnavailable(Exception):
    """The controller did not answer in time, or this worker's channel is closed."""


class ControllerRequestError(Exception):
    """The controller refused a request as a whole (unknown op, malformed arguments)."""

    def __init__(self, error_code: int, message: str) -> None:
        super().__init__(message)
        self.error_code = error_code


class ControllerChannel:
    """One worker's link to the controller. See the module docstring."""

    def __init__(self, node_id: int, in_ring: Ring, out_ring: Ring) -> None:
        self.node_id = node_id
        self._in_ring = in_ring
        self._out_ring = out_ring
        self._reader: RingReader | None = None
        self._writer: RingWriter | None = None
        self._image: MetadataImage | None = None
        self._subscribers: list[Subscriber] = []
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._inbox: collections.deque[ControlMessage] = collections.deque()
        self._wakeup: asyncio.Event | None = None
        self._idle = asyncio.Event()
        self._consumer: asyncio.Task[None] | None = None
        self._first_image: asyncio.Event | None = None
        self._write_lock: asyncio.Lock | None = None
        self._closed = False

    # --- what other services use --------------------------------------------------------------

    @property
    def image(self) -> MetadataImage:
        """The newest image applied (available once `start` returned)."""
        if self._image is None:
            raise ControllerUnavailable("no metadata image yet: the channel has not started")
        return self._image

    def subscribe(self, callback: Subscriber) -> None:
        """``await callback(old, new)`` on every new image, before the version is acked.

        The first image (applied in `start`) is not delivered: a service reads `image` in its own
        ``start`` (which runs after this channel's) and subscribes there or earlier; images that
        arrive while later services boot are delivered to whoever subscribed by then.
        """
        self._subscribers.append(callback)

    async def request(self, op: str, args: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
        """Ask the controller; returns its answer (which carries ``"version"``).

        Raises `ControllerUnavailable` on timeout or a closed channel, `ControllerRequestError`
        when the controller rejects the request as a whole.
        """
        if self._closed or self._writer is None:
            raise ControllerUnavailable("the controller channel is closed")
        loop = asyncio.get_running_loop()
        request_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._pending[request_id] = future
        try:
            # wait_for, not asyncio.timeout(): handlers start outside a task (broker/connection.py,
            # eager start), and asyncio.timeout() needs one.
            result = await asyncio.wait_for(
                self._exchange(ControlRequest(request_id, op, args), future), timeout
            )
        except TimeoutError:
            raise ControllerUnavailable(
                f"no answer from the controller to {op} within {timeout:.0f} s"
            ) from None
        finally:
            self._pending.pop(request_id, None)
        if set(result) <= {"error_code", "error_message", "version"} and result.get("error_code"):
            raise ControllerRequestError(int(result["error_code"]), str(result.get("error_message")))
        return result

    async def _exchange(
        self, request: ControlRequest, answer: asyncio.Future[dict[str, Any]]
    ) -> dict[str, Any]:
        await self._write(encode_control(request))
        return await answer

    # --- Service ------------------------------------------------------------------------------

    async def start(self, worker: Worker | None = None) -> None:
        """Attach to the rings, wait for the first image, apply everything already waiting."""
        loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._first_image = asyncio.Event()
        self._write_lock = asyncio.Lock()
        self._reader = self._in_ring.reader()
        self._writer = self._out_ring.writer()
        self._consumer = loop.create_task(self._consume(), name=f"worker-{self.node_id}-controller-channel")
        self._reader.watch(loop, self._on_frames)
        try:
            async with asyncio.timeout(FIRST_IMAGE_TIMEOUT):
                await self._first_image.wait()
                # Whatever else the ring held at boot is applied before the worker serves.
                await self._idle.wait()
        except TimeoutError:
            raise ControllerUnavailable(
                f"worker {self.node_id}: no metadata image from the controller "
                f"within {FIRST_IMAGE_TIMEOUT:.0f} s"
            ) from None

    async def drain(self) -> None:
        """Stop reading, fail waiting requests. Registered first, so drained last."""
        self._closed = True
        if self._reader is not None:
            self._reader.unwatch()
        if self._consumer is not None:
            self._consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._consumer
            self._consumer = None
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ControllerUnavailable("the worker is draining"))
        self._pending.clear()

    # --- internals ----------------------------------------------------------------------------

    def _on_frames(self) -> None:
        assert self._reader is not None and self._wakeup is not None
        for frame in self._reader.read_batch(64):
            try:
                self._inbox.append(decode_control(frame))
            except ControlMessageError as exc:
                log.error("worker %d: bad control frame from the controller: %s", self.node_id, exc)
        if self._inbox:
            self._idle.clear()
            self._wakeup.set()

    async def _write(self, frame: bytes) -> None:
        assert self._writer is not None and self._write_lock is not None
        async with self._write_lock:
            if not await self._writer.write_async(frame, WRITE_TIMEOUT):
                raise ControllerUnavailable(
                    f"worker {self.node_id}: the control ring to the controller stayed full"
                )
            self._out_ring.reader_bell.ring()

    async def _consume(self) -> None:
        assert self._wakeup is not None
        inbox = self._inbox
        while True:
            if not inbox:
                self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            message = inbox.popleft()
            try:
                if isinstance(message, MetadataPush):
                    # Coalesce images already waiting; stop at anything else to keep the order.
                    newest: MetadataPush = message
                    while inbox and isinstance(nxt := inbox[0], MetadataPush):
                        inbox.popleft()
                        newest = nxt
                    await self._apply(MetadataImage.from_dict(newest.image))
                elif isinstance(message, ControlReply):
                    future = self._pending.get(message.request_id)
                    if future is not None and not future.done():
                        future.set_result(message.result)
                else:
                    log.error("worker %d: unexpected %s from the controller", self.node_id, message)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("worker %d: handling a control message failed", self.node_id)

    async def _apply(self, new: MetadataImage) -> None:
        old = self._image
        if old is not None and new.version < old.version:
            log.warning(
                "worker %d: ignoring metadata version %d older than %d",
                self.node_id,
                new.version,
                old.version,
            )
        else:
            self._image = new
            # The first image is not a change: services read `image` in their own start.
            if old is not None:
                for callback in list(self._subscribers):
                    try:
                        await callback(old, new)
                    except Exception:
                        log.exception("worker %d: metadata subscriber %r failed", self.node_id, callback)
        assert self._first_image is not None
        self._first_image.set()
        await self._write(encode_control(MetadataApplied(self.image.version)))
