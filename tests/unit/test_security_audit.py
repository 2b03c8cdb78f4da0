"""The rate-limited audit log (broker/security_audit.py)."""

from __future__ import annotations

import logging

import pytest

from shardbroker.broker import security_audit
from shardbroker.broker.security_audit import WINDOW_S, RateLimitedLog, SecurityAudit
from shardbroker.security.acl import AclOperation, ResourceType


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_one_line_per_key_per_window_with_the_count(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    audit = SecurityAudit(RateLimitedLog(logging.getLogger("shardbroker.authorizer"), clock))
    caplog.set_level(logging.INFO, "shardbroker.authorizer")
    for _ in range(5):
        audit.denied("User:eve", "127.0.0.1", AclOperation.READ, ResourceType.TOPIC, "t", "Fetch")
    audit.denied("User:eve", "127.0.0.1", AclOperation.WRITE, ResourceType.TOPIC, "t", "Produce")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "Principal = User:eve is Denied operation = READ from host = 127.0.0.1 on resource = TOPIC:t "
        "for request = Fetch",
        "Principal = User:eve is Denied operation = WRITE from host = 127.0.0.1 on resource = TOPIC:t "
        "for request = Produce",
    ]
    clock.now += WINDOW_S
    audit.denied("User:eve", "127.0.0.1", AclOperation.READ, ResourceType.TOPIC, "t", "Fetch")
    assert caplog.records[-1].getMessage().endswith("(4 more in the previous 60 s not logged)")


def test_key_table_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(security_audit, "MAX_KEYS", 10)
    clock = Clock()
    limited = RateLimitedLog(logging.getLogger("test.audit"), clock)
    for i in range(25):  # a flood of distinct keys within one window
        assert limited.emit((str(i),), "x")
        assert len(limited.windows) <= 10
    for i in range(10 - len(limited.windows)):
        limited.emit(("fill", str(i)), "x")
    assert len(limited.windows) == 10
    clock.now += WINDOW_S
    assert limited.emit(("new",), "x")
    assert list(limited.windows) == [("new",)]  # the expired keys were forgotten
