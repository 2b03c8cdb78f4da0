"""Issue 15's TLS figure: consuming over TLS vs plaintext, same broker, same client, same run.

Starts a broker (2 workers) with a PLAINTEXT and an SSL listener (a test CA made in a temporary
directory, tests/integration/tls.py) and consumer processes; opens sockets.

Run::

    .venv/bin/python -m perf.bench_tls [--runs 3]     # one JSON line per run, then medians
    SHARDBROKER_PERF_QUICK=1 .venv/bin/python -m perf.bench_tls   # 20,000 messages

What is measured: confluent-kafka produces 1,000,000 x 100 B (4 partitions) once over
PLAINTEXT, then one consumer process reads them all back over PLAINTEXT and over SSL in turn
(``perf.bench_clients.consume_rate``: ``assign`` from the beginning, batch ``consume``, steady
state after the first batch), each run both ways; the figure is the ratio of the msgs/s,
TLS / plaintext (target >= 0.5). Plaintext fetches leave the broker by sendfile; TLS ones by
``pread`` and the TLS transport (broker/connection.py), and the client decrypts. The CPU
seconds of the consumer and the broker's workers are reported next to each rate.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

from perf.bench_clients import PARTITIONS, TOPIC, consume_rate, delivered_rate
from perf.broker_load import running_broker
from perf.sizes import pick
from shardbroker.loadgen.runner import ensure_topic
from tests.integration.tls import TestCA, client_settings, ssl_properties

TARGET_RATIO = 0.5


def run_once(messages: int, rounds: int = 1) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="shardbroker-perf-tls-") as pki:
        ca = TestCA(Path(pki))
        config = {"message.max.bytes": 4 * 1024 * 1024, "num.partitions": PARTITIONS}
        config |= ssl_properties(ca, ca.server())
        with running_broker(2, config=config, name="tls", listeners=("PLAINTEXT", "SSL")) as broker:
            ensure_topic(broker.bootstrap, TOPIC, PARTITIONS, timeout=60)
            delivered_rate(broker.bootstrap, messages)
            workers = broker.worker_pids()
            tls = client_settings("confluent", ca)
            plain, over_tls = [], []
            for _ in range(rounds):
                plain.append(consume_rate(broker.bootstrap, workers, messages, 1))
                over_tls.append(consume_rate(broker.listener_bootstrap("SSL"), workers, messages, 1, tls))
    ratios = [t["msgs_per_s"] / p["msgs_per_s"] for p, t in zip(plain, over_tls, strict=True)]
    return {
        "messages": messages,
        "plaintext": plain,
        "tls": over_tls,
        "tls_ratio": statistics.median(ratios),
        "met": statistics.median(ratios) >= TARGET_RATIO,
    }


def test_tls_consume_figure_quick() -> None:
    """Every message read back over both listeners (timings not judged)."""
    result = run_once(pick(1_000_000, 20_000))
    assert result["tls_ratio"] > 0


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m perf.bench_tls", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="consume rounds, each over both listeners")
    parser.add_argument("--messages", type=int, default=pick(1_000_000, 20_000))
    args = parser.parse_args()
    result = run_once(args.messages, args.runs)
    print(json.dumps(result), flush=True)
    for name in ("plaintext", "tls"):
        rates = [r["msgs_per_s"] for r in result[name]]
        print(
            f"{name:10s} median {statistics.median(rates):,.0f} msgs/s ({min(rates):,.0f}-{max(rates):,.0f})"
        )
    print(f"tls/plaintext {result['tls_ratio']:.2f} (target >= {TARGET_RATIO})")


if __name__ == "__main__":
    main()
