"""The handler registry: discovery, honest version ranges, failure containment, bad requests."""

from __future__ import annotations

import asyncio
import logging
import sys
import textwrap
from pathlib import Path
from typing import Any, cast

import pytest

from shardbroker.broker.dispatch import (
    ApiHandler,
    HandlerRegistry,
    RequestContext,
    default_error_response,
    discover,
)
from shardbroker.ipc.counters import N_ERR, WorkerCounters, error_index
from shardbroker.protocol import messages as m
from shardbroker.protocol.codec import Message, encode
from shardbroker.protocol.connection import BadRequest, RequestReceived, ServerConnection
from shardbroker.protocol.errors import ErrorCode


def ctx(api_key: int, version: int, registry: HandlerRegistry | None = None) -> RequestContext:
    worker = cast(Any, type("W", (), {"node_id": 0, "counters": WorkerCounters.private()})())
    return RequestContext(
        api_key=api_key,
        api_version=version,
        correlation_id=9,
        client_id="c",
        worker=worker,
        registry=registry,
    )


async def ok(ctx: RequestContext, request: Any) -> Message | None:
    return m.DescribeClusterResponse(cluster_id="x")


async def boom(ctx: RequestContext, request: Any) -> Message | None:
    raise RuntimeError("handler bug")


def test_discovery_finds_every_handler_module_and_only_those() -> None:
    registry = discover()
    handlers_dir = Path(__file__).resolve().parents[2] / "shardbroker" / "broker" / "handlers"
    modules = {p.stem for p in handlers_dir.glob("*.py") if not p.stem.startswith("_")}
    assert len(registry.handlers) == len(modules)
    # this step's APIs (issue 4), all present
    assert {0, 1, 2, 3, 18, 19, 20, 21, 22, 23, 32, 33, 37, 44, 60} <= set(registry.versions)


def test_advertised_versions_are_within_the_specs() -> None:
    registry = discover()
    for key, (lo, hi) in registry.versions.items():
        request, response = m.REQUESTS[key], m.RESPONSES[key]
        assert request.VALID_VERSIONS[0] <= lo <= hi <= request.VALID_VERSIONS[1]
        assert response.VALID_VERSIONS[0] <= lo <= hi <= response.VALID_VERSIONS[1]
        handler = registry.handlers[key]
        assert handler.min_version <= lo and hi <= handler.max_version


def test_versions_are_intersected_with_the_codec(caplog: pytest.LogCaptureFixture) -> None:
    registry = HandlerRegistry(
        [
            ApiHandler(api_key=60, min_version=0, max_version=99, handle=ok),
            ApiHandler(api_key=18, min_version=50, max_version=99, handle=ok),
        ]
    )
    assert registry.versions == {60: (0, m.DescribeClusterRequest.VALID_VERSIONS[1])}
    assert "not advertised" in caplog.text


def test_two_handlers_for_one_api_or_an_unknown_api_are_refused() -> None:
    with pytest.raises(ValueError, match="two handlers"):
        HandlerRegistry([ApiHandler(60, 0, 1, ok), ApiHandler(60, 0, 1, ok)])
    with pytest.raises(ValueError, match="does not know"):
        HandlerRegistry([ApiHandler(9999, 0, 1, ok)])


def test_discover_skips_helpers_and_modules_without_handler(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    pkg = tmp_path / "fake_handlers_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "_helper.py").write_text("raise RuntimeError('helpers are not imported')\n")
    (pkg / "nothing.py").write_text("X = 1\n")
    (pkg / "cluster.py").write_text(
        textwrap.dedent(
            """
            from shardbroker.broker.dispatch import ApiHandler

            async def handle(ctx, request):
                return None

            HANDLER = ApiHandler(api_key=60, min_version=0, max_version=1, handle=handle)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        registry = discover("fake_handlers_pkg")
    finally:
        for name in [n for n in sys.modules if n.startswith("fake_handlers_pkg")]:
            del sys.modules[name]
    assert registry.versions == {60: (0, 1)}
    assert "nothing defines no HANDLER" in caplog.text


def test_api_versions_response_lists_every_range() -> None:
    registry = HandlerRegistry([ApiHandler(60, 0, 1, ok), ApiHandler(3, 1, 12, ok)])
    response = registry.api_versions_response()
    assert [(k.api_key, k.min_version, k.max_version) for k in response.api_keys] == [(3, 1, 12), (60, 0, 1)]


def test_handler_exception_becomes_unknown_server_error(caplog: pytest.LogCaptureFixture) -> None:
    registry = HandlerRegistry([ApiHandler(60, 0, 1, boom)])
    with caplog.at_level(logging.ERROR):
        response = asyncio.run(registry.dispatch(ctx(60, 1), m.DescribeClusterRequest()))
    assert isinstance(response, m.DescribeClusterResponse)
    assert response.error_code == ErrorCode.UNKNOWN_SERVER_ERROR
    assert response.error_message == "handler bug"
    assert "Traceback" in caplog.text and "DescribeCluster v1" in caplog.text


def test_handler_exception_uses_the_handlers_error_response() -> None:
    def error_response(request: Any, version: int, code: ErrorCode, message: str) -> Message:
        return m.MetadataResponse(
            topics=[
                m.MetadataResponse.MetadataResponseTopic(name=t.name, error_code=code) for t in request.topics
            ]
        )

    registry = HandlerRegistry([ApiHandler(3, 0, 12, boom, error_response=error_response)])
    request = m.MetadataRequest(topics=[m.MetadataRequest.MetadataRequestTopic(name="a")])
    context = ctx(3, 12)
    response = asyncio.run(registry.dispatch(context, request))
    assert isinstance(response, m.MetadataResponse)
    assert [(t.name, t.error_code) for t in response.topics] == [("a", ErrorCode.UNKNOWN_SERVER_ERROR)]
    # No top-level code for the connection to count: the crash is counted here, once.
    assert _unknown_server_errors(context, 3) == 1


def test_handler_exception_with_a_top_level_error_is_left_to_the_connection_to_count() -> None:
    registry = HandlerRegistry([ApiHandler(60, 0, 1, boom)])
    context = ctx(60, 1)
    asyncio.run(registry.dispatch(context, m.DescribeClusterRequest()))
    assert _unknown_server_errors(context, 60) == 0


def _unknown_server_errors(context: RequestContext, api_key: int) -> int:
    counters: WorkerCounters = context.worker.counters
    return int(counters._errors[api_key * N_ERR + error_index(ErrorCode.UNKNOWN_SERVER_ERROR)])


def test_handler_exception_without_any_error_field_propagates() -> None:
    """Metadata responses have no top-level error: with no error_response the connection closes."""
    registry = HandlerRegistry([ApiHandler(3, 0, 12, boom)])
    with pytest.raises(RuntimeError):
        asyncio.run(registry.dispatch(ctx(3, 12), m.MetadataRequest()))


def test_a_failing_error_response_gives_none(caplog: pytest.LogCaptureFixture) -> None:
    def broken(request: Any, version: int, code: ErrorCode, message: str) -> Message:
        raise KeyError("x")

    registry = HandlerRegistry([ApiHandler(3, 0, 12, boom, error_response=broken)])
    assert registry.error_response(3, 12, m.MetadataRequest(), ErrorCode.UNKNOWN_SERVER_ERROR, "") is None


def test_default_error_response() -> None:
    r = default_error_response(60, 0, ErrorCode.UNKNOWN_SERVER_ERROR, "why")
    assert isinstance(r, m.DescribeClusterResponse) and (r.error_code, r.error_message) == (-1, "why")
    r = default_error_response(18, 0, ErrorCode.UNSUPPORTED_VERSION)
    assert isinstance(r, m.ApiVersionsResponse) and r.error_code == 35
    encode(r, 0)
    assert default_error_response(3, 12, ErrorCode.UNKNOWN_SERVER_ERROR) is None  # Metadata: no error field
    assert default_error_response(9999, 0, ErrorCode.UNKNOWN_SERVER_ERROR) is None
    assert default_error_response(60, 99, ErrorCode.UNKNOWN_SERVER_ERROR) is None


def _bad(api_key: int, version: int, code: ErrorCode) -> BadRequest:
    return BadRequest(
        correlation_id=1, api_key=api_key, api_version=version, error_code=code, message="", seq=0
    )


def test_unsupported_api_versions_is_answered_at_v0_with_the_ranges() -> None:
    registry = discover()
    response, version = registry.bad_request_response(_bad(18, 77, ErrorCode.UNSUPPORTED_VERSION))
    assert version == 0 and isinstance(response, m.ApiVersionsResponse)
    assert response.error_code == ErrorCode.UNSUPPORTED_VERSION
    assert {k.api_key: (k.min_version, k.max_version) for k in response.api_keys} == registry.versions
    encode(response, 0)


def test_other_bad_requests() -> None:
    registry = discover()
    # an API with a top-level error at a version the specs know: answered
    response, version = registry.bad_request_response(_bad(60, 1, ErrorCode.UNSUPPORTED_VERSION))
    assert isinstance(response, m.DescribeClusterResponse) and version == 1
    assert response.error_code == ErrorCode.UNSUPPORTED_VERSION
    # an unknown api key, or an API whose response carries no error: close
    assert registry.bad_request_response(_bad(999, 0, ErrorCode.INVALID_REQUEST))[0] is None
    assert registry.bad_request_response(_bad(11, 99, ErrorCode.UNSUPPORTED_VERSION))[0] is None


def test_unserved_api_through_the_connection() -> None:
    """DescribeDelegationToken (no handler) at a spec version: BadRequest, answered with its
    top-level error."""
    registry = discover()
    conn = ServerConnection(supported=registry.versions)
    from shardbroker.protocol.headers import decode_response, encode_request

    header = m.RequestHeader(request_api_key=41, request_api_version=1, correlation_id=3, client_id="c")
    (event,) = conn.receive_data(encode_request(header, m.DescribeDelegationTokenRequest()))
    assert isinstance(event, BadRequest) and not isinstance(event, RequestReceived)
    response, version = registry.bad_request_response(event)
    assert response is not None
    conn.respond(event, response, version=version)
    (data,) = conn.data_to_send()
    h, r = decode_response(data[4:], 41, 1)
    assert h.correlation_id == 3 and r.error_code == ErrorCode.UNSUPPORTED_VERSION  # type: ignore[attr-defined]
