"""Issue 15's authentication figures: produce over SASL_SSL vs PLAINTEXT, and SCRAM handshakes/s.

Starts a broker (2 workers) with PLAINTEXT, SASL_SSL and SASL_PLAINTEXT listeners (a test CA made
in a temporary directory, tests/integration/tls.py; a SCRAM-SHA-512 user at 4,096 iterations
created with AlterUserScramCredentials over PLAINTEXT); opens sockets.

Run::

    .venv/bin/python -m perf.bench_security [--runs 3]     # one JSON line, then medians
    SHARDBROKER_PERF_QUICK=1 .venv/bin/python -m perf.bench_security   # tiny counts

What is measured, each run both ways in turn:

``produce``
    confluent-kafka produces 100 B values (4 partitions, acks=1, linger.ms=5:
    ``perf.bench_clients.delivered_rate``, delivery proven by the end offsets) over PLAINTEXT,
    then with the same settings over SASL_SSL (SCRAM-SHA-512); the figure is the ratio of the
    msgs/s, SASL_SSL / PLAINTEXT (target >= 0.6).
``handshakes``
    Short connections to worker 0 alone, each: TCP connect, (TLS handshake), SaslHandshake v1,
    the two SCRAM-SHA-512 SaslAuthenticate v2 round trips (kafka-python's ``ScramClient``, the
    server's signature checked), close; ``THREADS`` client threads at once. Reported: handshakes
    per second of wall time, and per CPU second of the worker (its capacity: the client threads
    share the machine's two cores with it). The client computes PBKDF2 once and keeps the salted
    password, as RFC 5802 lets a client do, so the figure is the broker's work, not the client's.
    Over SASL_SSL (TLS 1.3 handshake included) and SASL_PLAINTEXT (SCRAM alone).
"""

from __future__ import annotations

import argparse
import json
import socket
import ssl
import statistics
import struct
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from perf.bench_clients import PARTITIONS, TOPIC, delivered_rate
from perf.broker_load import running_broker
from perf.sizes import pick
from shardbroker.ipc.procfs import cpu_seconds
from shardbroker.loadgen.runner import ensure_topic
from shardbroker.protocol import messages as m
from shardbroker.protocol.codec import Message
from shardbroker.protocol.headers import decode_response, encode_request
from tests.integration.tls import TestCA, client_context, client_settings, ssl_properties

with warnings.catch_warnings():  # kafka-python's package import uses importlib.resources.read_text
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka.net.sasl.scram import ScramClient

TARGET_RATIO = 0.6
USER, PASSWORD = "perf", "perf-secret"
MECHANISM = "SCRAM-SHA-512"
ITERATIONS = 4096
THREADS = 4
LISTENERS = ("PLAINTEXT", "SASL_SSL", "SASL_PLAINTEXT")

_salted: dict[tuple[bytes, int], bytes] = {}


class _CachingScramClient(ScramClient):  # type: ignore[misc]
    """kafka-python's SCRAM client, computing the salted password once per salt."""

    salted_password: bytes

    def create_salted_password(self, salt: bytes, iterations: int) -> None:
        key = (salt, iterations)
        if key not in _salted:
            super().create_salted_password(salt, iterations)
            _salted[key] = self.salted_password
        self.salted_password = _salted[key]


def _ask(sock: socket.socket, msg: Message, version: int) -> Any:
    header = m.RequestHeader(
        request_api_key=msg.API_KEY, request_api_version=version, correlation_id=1, client_id="bench"
    )
    sock.sendall(encode_request(header, msg))
    with sock.makefile("rb") as answers:  # read(n) waits for n bytes, or b"" once closed
        size = struct.unpack(">i", answers.read(4))[0]
        return decode_response(answers.read(size), msg.API_KEY, version)[1]


def _authenticate(sock: socket.socket) -> None:
    """SaslHandshake v1 then SCRAM over SaslAuthenticate v2; raises unless authenticated."""
    if (answer := _ask(sock, m.SaslHandshakeRequest(mechanism=MECHANISM), 1)).error_code:
        raise RuntimeError(f"SaslHandshake: {answer}")
    client = _CachingScramClient(USER, PASSWORD, MECHANISM)
    first = _ask(sock, m.SaslAuthenticateRequest(auth_bytes=client.first_message()), 2)
    if first.error_code:
        raise RuntimeError(f"SCRAM first: {first.error_message}")
    client.process_server_first_message(first.auth_bytes)
    final = _ask(sock, m.SaslAuthenticateRequest(auth_bytes=client.final_message()), 2)
    if final.error_code:
        raise RuntimeError(f"SCRAM final: {final.error_message}")
    client.process_server_final_message(final.auth_bytes)  # checks the server's signature


def handshake_rate(port: int, worker: int, count: int, context: ssl.SSLContext | None) -> dict[str, Any]:
    """``count`` authenticated short connections to ``port`` from THREADS threads."""
    errors: list[BaseException] = []
    per_thread = [count // THREADS + (i < count % THREADS) for i in range(THREADS)]

    def connect() -> socket.socket:
        raw = socket.create_connection(("127.0.0.1", port), timeout=30)
        return context.wrap_socket(raw, server_hostname="127.0.0.1") if context else raw

    def loop(n: int) -> None:
        try:
            for _ in range(n):
                with connect() as sock:
                    _authenticate(sock)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=loop, args=(n,)) for n in per_thread]
    cpu = cpu_seconds(worker)
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    worker_cpu = cpu_seconds(worker) - cpu
    if errors:
        raise RuntimeError(f"{len(errors)} handshake threads failed: {errors[0]!r}")
    return {
        "handshakes": count,
        "per_s": count / elapsed,
        "worker_cpu_s": worker_cpu,
        "per_worker_cpu_s": count / worker_cpu if worker_cpu else None,
    }


def _create_user(bootstrap: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, ITERATIONS)
    upsert = UserScramCredentialUpsertion(USER, info, PASSWORD.encode())
    for future in admin.alter_user_scram_credentials([upsert]).values():
        future.result(timeout=60)


def _median_of(results: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in results))


def run_once(messages: int, handshakes: int, rounds: int = 1) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="shardbroker-perf-security-") as pki:
        ca = TestCA(Path(pki))
        config = {
            "message.max.bytes": 4 * 1024 * 1024,
            "num.partitions": PARTITIONS,
            "sasl.enabled.mechanisms": MECHANISM,
            **ssl_properties(ca, ca.server()),
        }
        with running_broker(2, config=config, name="security", listeners=LISTENERS) as broker:
            _create_user(broker.bootstrap)
            ensure_topic(broker.bootstrap, TOPIC, PARTITIONS, timeout=60)
            sasl_ssl = client_settings("confluent", ca) | {
                "security.protocol": "sasl_ssl",
                "sasl.mechanism": MECHANISM,
                "sasl.username": USER,
                "sasl.password": PASSWORD,
            }
            worker0 = broker.worker_pid(0)
            rates: dict[str, list[float]] = {"plaintext": [], "sasl_ssl": []}
            shakes: dict[str, list[dict[str, Any]]] = {"sasl_ssl": [], "sasl_plaintext": []}
            runs: dict[str, Callable[[], Any]] = {
                "plaintext": lambda: delivered_rate(broker.bootstrap, messages),
                "sasl_ssl": lambda: delivered_rate(broker.listener_bootstrap("SASL_SSL"), messages, sasl_ssl),
            }
            for _ in range(rounds):
                for name, run in runs.items():
                    rates[name].append(run())
                tls_port = broker.listener_ports("SASL_SSL")[0]
                shakes["sasl_ssl"].append(handshake_rate(tls_port, worker0, handshakes, client_context(ca)))
                plain_port = broker.listener_ports("SASL_PLAINTEXT")[0]
                shakes["sasl_plaintext"].append(handshake_rate(plain_port, worker0, handshakes, None))
    ratios = [s / p for p, s in zip(rates["plaintext"], rates["sasl_ssl"], strict=True)]
    return {
        "messages": messages,
        "produce_msgs_per_s": rates,
        "produce_ratio": statistics.median(ratios),
        "produce_ratios": ratios,
        "met": statistics.median(ratios) >= TARGET_RATIO,
        "handshakes": shakes,
    }


def test_security_figures_quick() -> None:
    """Every message delivered over both listeners, every handshake authenticated (timings not
    judged)."""
    result = run_once(pick(1_000_000, 2_000), pick(4_000, 20))
    assert result["produce_ratio"] > 0
    assert all(r["handshakes"] == pick(4_000, 20) for rs in result["handshakes"].values() for r in rs)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m perf.bench_security", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="rounds, each over every listener")
    parser.add_argument("--messages", type=int, default=pick(1_000_000, 2_000))
    parser.add_argument("--handshakes", type=int, default=pick(4_000, 20))
    args = parser.parse_args()
    result = run_once(args.messages, args.handshakes, args.runs)
    print(json.dumps(result), flush=True)
    for name, rates in result["produce_msgs_per_s"].items():
        print(
            f"produce {name:15s} median {statistics.median(rates):,.0f} msgs/s "
            f"({min(rates):,.0f}-{max(rates):,.0f})"
        )
    ratios = result["produce_ratios"]
    print(
        f"produce sasl_ssl/plaintext {result['produce_ratio']:.2f} ({min(ratios):.2f}-{max(ratios):.2f}, "
        f"target >= {TARGET_RATIO})"
    )
    for name, shakes in result["handshakes"].items():
        per_s = [s["per_s"] for s in shakes]
        per_cpu = [s["per_worker_cpu_s"] or 0.0 for s in shakes]
        print(
            f"SCRAM-SHA-512 handshakes {name:15s} median {statistics.median(per_s):,.0f}/s "
            f"({min(per_s):,.0f}-{max(per_s):,.0f}), {_median_of(shakes, 'per_worker_cpu_s'):,.0f} per "
            f"worker CPU second ({min(per_cpu):,.0f}-{max(per_cpu):,.0f})"
        )


if __name__ == "__main__":
    main()
