"""The audit trail (broker/security_audit.py): rate-limited log lines, and the counts it writes
into the worker's counters (ipc/counters.py), read back through the /metrics collector."""

from __future__ import annotations

import logging

import pytest

from shardbroker.broker import security_audit
from shardbroker.broker.security_audit import SSL_MECHANISM, WINDOW_S, RateLimitedLog, SecurityAudit
from shardbroker.ipc import counters as ctr
from shardbroker.ipc.counters import WorkerCounters
from shardbroker.security.acl import AclOperation, ResourceType

LISTENERS = ("PLAINTEXT", "SASL_SSL", "MTLS")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_one_line_per_key_per_window_with_the_count(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    audit = SecurityAudit(
        WorkerCounters.private(),
        LISTENERS,
        RateLimitedLog(logging.getLogger("shardbroker.authorizer"), clock),
    )
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


def _audit(clock: Clock, counters: WorkerCounters | None = None) -> SecurityAudit:
    return SecurityAudit(
        counters or WorkerCounters.private(listeners=len(LISTENERS)),
        LISTENERS,
        failures=RateLimitedLog(logging.getLogger("shardbroker.authentication"), clock),
    )


def test_every_denial_counts_logged_or_not(caplog: pytest.LogCaptureFixture) -> None:
    counters = WorkerCounters.private(listeners=1)
    audit = SecurityAudit(counters, ["PLAINTEXT"])
    caplog.set_level(logging.INFO, "shardbroker.authorizer")
    for _ in range(3):
        audit.denied("User:eve", "10.0.0.1", AclOperation.WRITE, ResourceType.TOPIC, "t", "Produce")
    audit.denied(
        "User:eve", "10.0.0.1", AclOperation.CLUSTER_ACTION, ResourceType.CLUSTER, "kafka-cluster", "x"
    )
    assert len(caplog.records) == 2
    cells = counters._denied
    assert cells[AclOperation.WRITE * ctr.N_RESOURCE_TYPES + ResourceType.TOPIC] == 3
    assert cells[AclOperation.CLUSTER_ACTION * ctr.N_RESOURCE_TYPES + ResourceType.CLUSTER] == 1
    assert sum(cells) == 4


def _auth_cell(counters: WorkerCounters, listener: int, mechanism: str, success: bool) -> int:
    m = ctr.MECHANISMS.index(mechanism)
    return int(counters._auth[(listener * ctr.N_MECHANISMS + m) * 2 + (0 if success else 1)])


def test_authentications_are_counted_by_listener_mechanism_and_result(
    caplog: pytest.LogCaptureFixture,
) -> None:
    counters = WorkerCounters.private(listeners=len(LISTENERS))
    audit = _audit(Clock(), counters)
    caplog.set_level(logging.DEBUG, "shardbroker.authentication")
    audit.authentication("SASL_SSL", "10.0.0.1", "SCRAM-SHA-512", True)
    audit.authentication("SASL_SSL", "10.0.0.1", "SCRAM-SHA-512", True)
    audit.authentication("SASL_SSL", "10.0.0.1", "PLAIN", False, user="bob", reason="wrong password")
    audit.authentication(
        "MTLS", "10.0.0.2", SSL_MECHANISM, False, reason="TLS handshake: CERTIFICATE_VERIFY_FAILED"
    )
    audit.authentication("MTLS", "10.0.0.2", SSL_MECHANISM, True)
    audit.authentication("SASL_SSL", "10.0.0.3", "GSSAPI", False, reason="unsupported")  # not ours: UNKNOWN
    audit.authentication("SASL_SSL", "10.0.0.3", None, False, reason="Produce before SaslHandshake")
    assert _auth_cell(counters, 1, "SCRAM-SHA-512", True) == 2
    assert _auth_cell(counters, 1, "PLAIN", False) == 1
    assert _auth_cell(counters, 2, "SSL", False) == 1 and _auth_cell(counters, 2, "SSL", True) == 1
    assert _auth_cell(counters, 1, "UNKNOWN", False) == 2
    assert sum(counters._auth) == 7
    # Successes are not logged; each failure is, with who and why.
    assert [r.getMessage() for r in caplog.records] == [
        "Failed authentication with 10.0.0.1 on listener SASL_SSL (PLAIN, user 'bob'): wrong password",
        "Failed authentication with 10.0.0.2 on listener MTLS (SSL): TLS handshake: "
        "CERTIFICATE_VERIFY_FAILED",
        "Failed authentication with 10.0.0.3 on listener SASL_SSL (UNKNOWN): unsupported",
    ]  # the third failure of 10.0.0.3 shares the key of the second: counted, not logged


def test_failures_are_logged_once_a_minute_per_listener_host_mechanism_user(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    counters = WorkerCounters.private(listeners=len(LISTENERS))
    audit = _audit(clock, counters)
    caplog.set_level(logging.INFO, "shardbroker.authentication")
    for _ in range(50):  # a password-guessing loop
        audit.authentication("SASL_SSL", "10.0.0.9", "SCRAM-SHA-256", False, user="admin", reason="wrong")
    audit.authentication("SASL_SSL", "10.0.0.9", "SCRAM-SHA-256", False, user="root", reason="unknown user")
    audit.authentication(
        "SASL_SSL", "10.0.0.9", "SCRAM-SHA-256", False, user="admin", reason="wrong", reauthentication=True
    )
    assert len(caplog.records) == 2 and "'root'" in caplog.records[1].getMessage()
    assert _auth_cell(counters, 1, "SCRAM-SHA-256", False) == 52
    clock.now += WINDOW_S
    audit.authentication(
        "SASL_SSL", "10.0.0.9", "SCRAM-SHA-256", False, user="admin", reason="wrong", reauthentication=True
    )
    assert caplog.records[-1].getMessage() == (
        "Failed re-authentication with 10.0.0.9 on listener SASL_SSL (SCRAM-SHA-256, user 'admin'): wrong "
        "(50 more in the previous 60 s not logged)"
    )


def test_user_names_are_cut_and_quoted() -> None:
    clock = Clock()
    audit = _audit(clock)
    name = "x" * 500
    audit.authentication("PLAINTEXT", "h", "PLAIN", False, user=name, reason="r")
    ((key, _),) = audit.failures.windows.items()
    assert key == ("PLAINTEXT", "h", "PLAIN", "x" * 64)


def test_a_listener_outside_the_config_is_logged_not_counted(caplog: pytest.LogCaptureFixture) -> None:
    counters = WorkerCounters.private(listeners=len(LISTENERS))
    audit = _audit(Clock(), counters)
    caplog.set_level(logging.INFO, "shardbroker.authentication")
    audit.authentication("OTHER", "h", "PLAIN", False, reason="r")
    assert sum(counters._auth) == 0 and len(caplog.records) == 1


def test_more_listeners_than_cells_is_refused() -> None:
    with pytest.raises(ValueError, match="3 listeners, counters have cells for 2"):
        SecurityAudit(WorkerCounters.private(listeners=2), LISTENERS)
