"""Request dispatch: one ``ApiHandler`` per API, found by scanning ``shardbroker.broker.handlers``.

Each module of the handlers package defines ``HANDLER = ApiHandler(api_key, min_version,
max_version, handle)``; :func:`discover` imports every module of the package (``pkgutil``; modules
whose names start with ``_`` are helpers) and builds a :class:`HandlerRegistry`, a table keyed by
api key: adding an API is adding a module, with no list to edit, and ApiVersions can never
advertise an API that has no handler nor miss one that has.

Advertised versions are the handler's range intersected with the versions the generated codec
knows for both the request and the response (Kafka's specs), so ApiVersions is honest by
construction.

Failure containment: a handler that raises answers *that request* with UNKNOWN_SERVER_ERROR
(logged with its traceback) -- through the handler's own ``error_response`` when it has one
(APIs whose responses carry errors per topic), else through the response's top-level
``error_code`` field when the response has one; a response that can carry no error at all is
answered by closing the connection, which clients treat as a retriable network error. A worker
never dies of a request.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

from shardbroker.broker.session import ConnectionSession
from shardbroker.protocol import messages as m
from shardbroker.protocol.codec import Message
from shardbroker.protocol.errors import ErrorCode

if TYPE_CHECKING:
    from shardbroker.broker.worker_state import WorkerState
    from shardbroker.protocol.connection import BadRequest

__all__ = [
    "ApiHandler",
    "HandlerRegistry",
    "RequestContext",
    "default_error_response",
    "discover",
]

log = logging.getLogger(__name__)

HANDLERS_PACKAGE = "shardbroker.broker.handlers"
API_VERSIONS_KEY = m.ApiVersionsRequest.API_KEY


@dataclass(slots=True)
class RequestContext:
    """Who asked what: passed to every handler with the decoded request."""

    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None
    worker: WorkerState
    registry: HandlerRegistry | None = None
    #: "host:port" of the client, for logs.
    peer: str = ""
    #: The connection's listener, security protocol and principal (broker/session.py).
    session: ConnectionSession = field(default_factory=ConnectionSession)


Handle = Callable[[RequestContext, Any], Awaitable[Message | None]]
#: (request, version, error code, message) -> a response carrying that error everywhere it can.
ErrorResponse = Callable[[Any, int, ErrorCode, str], Message]


@dataclass(frozen=True, slots=True)
class ApiHandler:
    """One API: the versions its ``handle`` implements, and how to answer it with an error.

    ``handle(ctx, request)`` returns the response (None: no response, e.g. Produce acks=0).
    ``error_response`` is needed when the response has no top-level ``error_code`` (see the module
    docstring); without one, a failing request closes its connection.
    """

    api_key: int
    min_version: int
    max_version: int
    handle: Handle
    error_response: ErrorResponse | None = None


def default_error_response(api_key: int, version: int, code: ErrorCode, message: str = "") -> Message | None:
    """A response of ``api_key`` at ``version`` with its top-level error set, if it has one."""
    cls = m.RESPONSES.get(api_key)
    if cls is None or not cls.VALID_VERSIONS[0] <= version <= cls.VALID_VERSIONS[1]:
        return None
    present = {f.attr for f in cls.FIELDS if _in_version(f.versions, version)}
    if "error_code" not in present:
        return None
    response = cls()
    response.error_code = code  # type: ignore[attr-defined]  # checked above
    if message and "error_message" in present:
        response.error_message = message  # type: ignore[attr-defined]
    return response


def _in_version(versions: str, version: int) -> bool:
    if versions == "none":
        return False
    if versions.endswith("+"):
        return version >= int(versions[:-1])
    lo, _, hi = versions.partition("-")
    return int(lo) <= version <= int(hi or lo)


class HandlerRegistry:
    """The handlers of one worker, by api key, and the versions advertised for each."""

    def __init__(self, handlers: Iterable[ApiHandler]) -> None:
        self.handlers: dict[int, ApiHandler] = {}
        #: api key -> (min, max): what ApiVersions advertises and what a connection accepts.
        self.versions: dict[int, tuple[int, int]] = {}
        for handler in handlers:
            key = handler.api_key
            if key in self.handlers:
                raise ValueError(f"two handlers for api key {key}")
            request, response = m.REQUESTS.get(key), m.RESPONSES.get(key)
            if request is None or response is None:
                raise ValueError(f"handler for api key {key}, which the codec does not know")
            lo = max(handler.min_version, request.VALID_VERSIONS[0], response.VALID_VERSIONS[0])
            hi = min(handler.max_version, request.VALID_VERSIONS[1], response.VALID_VERSIONS[1])
            if lo > hi:
                log.warning(
                    "%s handler versions %d-%d are outside the specs' %s: not advertised",
                    request.API_NAME,
                    handler.min_version,
                    handler.max_version,
                    request.VALID_VERSIONS,
                )
                continue
            self.handlers[key] = handler
            self.versions[key] = (lo, hi)
        self.versions = dict(sorted(self.versions.items()))

    def api_versions_response(self, error_code: ErrorCode = ErrorCode.NONE) -> m.ApiVersionsResponse:
        """ApiVersions' answer: every served api key with its range (also with an error, as
        Kafka's answer to an unsupported ApiVersions version)."""
        return m.ApiVersionsResponse(
            error_code=error_code,
            api_keys=[
                m.ApiVersionsResponse.ApiVersion(api_key=key, min_version=lo, max_version=hi)
                for key, (lo, hi) in self.versions.items()
            ],
        )

    async def dispatch(self, ctx: RequestContext, request: Message) -> Message | None:
        """Run the handler; a raising handler becomes an UNKNOWN_SERVER_ERROR response."""
        handler = self.handlers[ctx.api_key]
        try:
            return await handler.handle(ctx, request)
        except Exception as exc:
            response = self.failure_response(ctx, request, exc)
            if response is None:
                raise
            return response

    def failure_response(self, ctx: RequestContext, request: Message, exc: Exception) -> Message | None:
        """Log a handler's exception; the UNKNOWN_SERVER_ERROR answer (None: the response cannot
        carry an error, the connection closes)."""
        log.error(
            "worker %d: %s v%d (correlation %d, client %r) failed",
            ctx.worker.node_id,
            type(request).API_NAME,
            ctx.api_version,
            ctx.correlation_id,
            ctx.client_id,
            exc_info=exc,
        )
        response = self.error_response(
            ctx.api_key, ctx.api_version, request, ErrorCode.UNKNOWN_SERVER_ERROR, str(exc)
        )
        if response is not None and not getattr(response, "error_code", 0):
            # Answered per topic/partition: no top-level code for the connection to count, so
            # the crash is counted here, once, like a refusal of the whole request.
            ctx.worker.counters.error(ctx.api_key, ErrorCode.UNKNOWN_SERVER_ERROR)
        return response

    def error_response(
        self, api_key: int, version: int, request: Message | None, code: ErrorCode, message: str
    ) -> Message | None:
        """A response carrying ``code``, or None if this API's response cannot carry one."""
        handler = self.handlers.get(api_key)
        if handler is not None and handler.error_response is not None and request is not None:
            try:
                return handler.error_response(request, version, code, message)
            except Exception:
                log.exception("error_response of api key %d failed", api_key)
                return None
        return default_error_response(api_key, version, code, message)

    def bad_request_response(self, event: BadRequest) -> tuple[Message | None, int]:
        """How to answer a request that could not be decoded: (response or None to close, version).

        ApiVersions at a version we do not serve gets Kafka's answer: UNSUPPORTED_VERSION encoded
        as ApiVersions v0 (every client can read it: the response header is always v0 for
        ApiVersions) with the supported ranges, from which the client picks a version. Other APIs
        get their top-level error at the request's version when both exist, else a close.
        """
        if event.api_key == API_VERSIONS_KEY:
            return self.api_versions_response(ErrorCode.UNSUPPORTED_VERSION), 0
        return default_error_response(event.api_key, event.api_version, event.error_code, event.message), (
            event.api_version
        )


def discover(package: str = HANDLERS_PACKAGE, exclude: Collection[int] = ()) -> HandlerRegistry:
    """Import every handler module of ``package`` and register its ``HANDLER``, but for the api
    keys in ``exclude`` (APIs the broker's config turns off: neither served nor advertised)."""
    pkg = importlib.import_module(package)
    handlers: list[ApiHandler] = []
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module: ModuleType = importlib.import_module(f"{package}.{info.name}")
        handler = getattr(module, "HANDLER", None)
        if not isinstance(handler, ApiHandler):
            log.warning("%s.%s defines no HANDLER = ApiHandler(...): skipped", package, info.name)
            continue
        if handler.api_key not in exclude:
            handlers.append(handler)
    return HandlerRegistry(handlers)
