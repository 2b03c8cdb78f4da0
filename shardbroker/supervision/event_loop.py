"""The workers' event loop: uvloop (libuv) by default, the standard library's asyncio as the
fallback and by choice (broker property ``event.loop``).

Why uvloop: the request path is dominated by the loop's own work per small request (the selector,
the transport's ``send``/``recv`` wrappers, handles). Measured on this 2-core VM (2026-12-05):
an echo server answering one 36 B response per 132 B request, 10 connections one request at a
time, server pinned to one core, costs 20-22 us of server CPU a request on asyncio's loop
(33,000-35,000 requests/s) and 7.8-8.2 us on uvloop (60,000-61,000 requests/s). The broker,
whose own Python path is ~25 us a request, gains less: one-record Produce requests over 100
connections 37.5 -> 33.9 us of CPU a request, 18,000 -> 19,800 requests/s per worker
(``python -m perf requests --event-loop asyncio|uvloop``, alternated, 3 runs each).

The fallback: ``event.loop = "uvloop"`` on a machine where uvloop cannot be imported (a platform
without its wheels) runs the standard loop and says so in the log once per worker; nothing else
differs, since the broker uses only the loop's public API (asyncio protocols and transports).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from shardbroker.config.broker_properties import EVENT_LOOPS

__all__ = ["LoopFactory", "loop_factory"]

log = logging.getLogger(__name__)

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def loop_factory(name: str) -> LoopFactory:
    """A factory of new loops of kind ``name`` (one of EVENT_LOOPS)."""
    if name == "asyncio":
        return asyncio.new_event_loop
    if name != "uvloop":
        raise ValueError(f"event.loop {name!r}: want one of {', '.join(EVENT_LOOPS)}")
    try:
        import uvloop
    except ImportError as exc:
        log.warning("event.loop uvloop: cannot import uvloop (%s); running the asyncio loop", exc)
        return asyncio.new_event_loop
    factory: LoopFactory = uvloop.new_event_loop
    return factory
