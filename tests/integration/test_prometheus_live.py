"""The dashboards and alert rules against a real Prometheus scraping a real broker.

Starts processes (a broker, Prometheus), opens sockets, writes a temp dir. Prometheus is
Debian's ``prometheus`` (``/usr/bin/prometheus``; CI installs it): a missing binary fails the
test, nothing is skipped.

One broker (2 workers), one Prometheus scraping its /metrics every second and evaluating
grafana/prometheus/alerts.yml every second, on a free loopback port with its TSDB in a temp dir
(removed afterwards, as is the process, also on failure). Workload: a 4-partition topic with
``flush.messages=1`` (so the flush histogram fills) gets ``COUNT`` messages from confluent-kafka;
a consumer group reads part of them and commits (so lag is above 0 on some partitions); a
2-partition compacted topic with 4 KiB segments gets keyed records, which the log cleaner compacts.
Then:

- every ``expr`` of every panel in grafana/dashboards/*.json, with the template variables
  substituted, returns data through Prometheus' query API (a renamed metric or label in the
  broker breaks a dashboard here, not in production);
- per-partition message counts in Prometheus equal what the producer had acknowledged;
- dirty ratio series exist for compacted partitions only (the compacted topic's, not
  live-orders'), and the cleaner counted cleans that wrote less than they read;
- the rule file loads and every rule evaluates without error against the live series, and none
  fires on a healthy broker;
- ``promtool check metrics`` accepts the exposition;
- deleting the topic removes its series from /metrics (cardinality stays bounded).

The Mirror dashboard reads ``shardbroker mirror --metrics``, not a broker: its own test runs a
mirror between two brokers under Prometheus and asks the same of its queries and alerts.
"""

from __future__ import annotations

import collections
import json
import re
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import confluent_kafka
import pytest
from confluent_kafka.admin import AdminClient

from shardbroker.client.connection import BrokerConnection
from shardbroker.protocol import messages as m
from tests.integration.broker_process import BrokerProcess, wait_for
from tests.integration.conftest import BrokerFactory
from tests.integration.kafka_clients import create_topic, make_messages, produce_confluent
from tests.integration.mirror_process import FeedThread, assert_mirrored, mirror_config, running_mirror
from tests.ports import free_port_block

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
GRAFANA = REPO / "grafana"
TOPIC, GROUP = "live-orders", "live-group"
COMPACTED = "live-compacted"
#: Small segments leave the active one quickly; a clean whenever anything is dirty.
COMPACTED_CONFIG = {"cleanup.policy": "compact", "segment.bytes": "4096", "min.cleanable.dirty.ratio": "0.01"}
PARTITIONS = 4
COUNT = 2000
CONSUMED = 1200
#: What Grafana would put in the queries (``$__rate_interval`` is at least 4 scrape intervals).
VARIABLES = {"$__rate_interval": "15s", "$topic": f"{TOPIC}|{COMPACTED}", "$group": GROUP, "$worker": ".+"}
#: Fast group joins; the log cleaner looks every 100 ms (not 15 s) for the compacted topic.
BROKER_CONFIG = {
    "group.initial.rebalance.delay.ms": 100,
    "group.min.session.timeout.ms": 1000,
    "log.cleaner.backoff.ms": 100,
}


class Prometheus:
    """``prometheus`` scraping one target each second, on a free port, data in a temp dir.
    ``jobs``: more scrape jobs, each a JSON object (YAML flow style), e.g. with ``scheme``,
    ``tls_config`` and ``basic_auth``."""

    def __init__(self, target: str, jobs: tuple[dict[str, Any], ...] = ()) -> None:
        exe = shutil.which("prometheus")
        assert exe is not None, "prometheus not found: apt-get install prometheus"
        self.dir = Path(tempfile.mkdtemp(prefix="shardbroker-prom-"))
        self.port = free_port_block(1)
        self.url = f"http://127.0.0.1:{self.port}"
        config = self.dir / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            f"rule_files: [{json.dumps(str(GRAFANA / 'prometheus' / 'alerts.yml'))}]\n"
            "scrape_configs:\n"
            f"  - job_name: shardbroker\n    static_configs: [{{targets: [{json.dumps(target)}]}}]\n"
            + "".join(f"  - {json.dumps(job)}\n" for job in jobs)
        )
        self.log = (self.dir / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [
                exe,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        def ready() -> bool | None:
            assert self.proc.poll() is None, f"prometheus exited: {self.output()}"
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
                    return resp.status == 200 or None
            except OSError:
                return None

        wait_for(ready, timeout, "prometheus ready", interval=0.1)

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=30) as resp:
            body = json.load(resp)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", (expr, data["resultType"])
        result: list[dict[str, Any]] = data["result"]
        return result

    def output(self) -> str:
        self.log.flush()
        return (self.dir / "prometheus.log").read_text(errors="replace")[-4000:]

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(30)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(10)
        finally:
            self.log.close()
            shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def broker(broker_factory: BrokerFactory) -> BrokerProcess:
    return broker_factory(config=BROKER_CONFIG)


@pytest.fixture
def prometheus(broker: BrokerProcess) -> Iterator[Prometheus]:
    prom = Prometheus(f"{broker.host}:{broker.metrics_port}")
    try:
        prom.wait_ready()
        yield prom
    finally:
        prom.close()


#: What the broker's /metrics feeds; the Mirror dashboard reads `shardbroker mirror --metrics`.
BROKER_DASHBOARDS = sorted(p for p in (GRAFANA / "dashboards").glob("*.json") if p.stem != "mirror")


def dashboard_queries(
    boards: list[Path] = BROKER_DASHBOARDS, variables: dict[str, str] = VARIABLES
) -> list[tuple[str, str, str]]:
    """(dashboard, panel title, expr with the variables substituted) of every panel target."""
    out = []
    for path in boards:
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                expr = target["expr"]
                for name, value in variables.items():
                    expr = expr.replace(name, value)
                assert "$" not in expr, f"{path.name}: {panel['title']}: unsubstituted variable in {expr}"
                out.append((path.stem, panel["title"], expr))
    return out


def variable_queries(boards: list[Path] = BROKER_DASHBOARDS) -> set[tuple[str, str]]:
    """(metric, label) of every ``label_values(metric, label)`` template variable."""
    out = set()
    for path in boards:
        for var in json.loads(path.read_text())["templating"]["list"]:
            if var["type"] == "query":
                match = re.fullmatch(r"label_values\((\w+), (\w+)\)", var["query"]["query"])
                assert match, f"{path.name}: {var['name']}: {var['query']}"
                out.add((match[1], match[2]))
    return out


def subscribe_every_client(bootstrap: str) -> None:
    """A client metrics resource asking every client for every metric each second."""
    host, port = bootstrap.split(",")[0].rsplit(":", 1)
    Req = m.IncrementalAlterConfigsRequest
    ops = [
        Req.AlterableConfig(name="metrics", value="*"),
        Req.AlterableConfig(name="interval.ms", value="1000"),
    ]
    request = Req(resources=[Req.AlterConfigsResource(resource_type=16, resource_name="every", configs=ops)])
    with BrokerConnection(host, int(port), timeout=30.0).connect() as conn:
        assert conn.send(request).responses[0].error_code == 0


def run_workload(bootstrap: str) -> tuple[collections.Counter[int], dict[int, int]]:
    """Produce ``COUNT`` messages, consume and commit ``CONSUMED`` in a group: the acked count
    and the committed offset per partition (partitions the group read nothing from: none)."""
    create_topic(bootstrap, TOPIC, PARTITIONS, {"flush.messages": "1"})
    subscribe_every_client(bootstrap)  # the Clients dashboard: KIP-714 pushes from both clients
    acked = produce_confluent(
        bootstrap,
        TOPIC,
        make_messages(COUNT, 97, "live", value_size=64),
        extra={"enable.metrics.push": True, "client.id": "live-producer"},
    )
    # ~16 KiB of 20 keys rewritten over and over on each partition: a few dirty segments each.
    create_topic(bootstrap, COMPACTED, 2, COMPACTED_CONFIG)
    produce_confluent(
        bootstrap,
        COMPACTED,
        make_messages(400, 20, "kv", value_size=64),
        extra={"linger.ms": 0, "batch.num.messages": 20},
        partition_of={i: i % 2 for i in range(400)},
    )
    per_partition = collections.Counter(r.partition for r in acked)
    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": GROUP,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 200,
            "enable.metrics.push": True,
            "client.id": "live-consumer",
        }
    )
    try:
        consumer.subscribe([TOPIC])
        got = 0
        deadline = time.monotonic() + 60
        while got < CONSUMED:
            assert time.monotonic() < deadline, f"consumed {got} of {CONSUMED}"
            for msg in consumer.consume(min(500, CONSUMED - got), timeout=0.5):
                assert msg.error() is None, msg.error()
                got += 1
        consumer.commit(asynchronous=False)
        tps = [confluent_kafka.TopicPartition(TOPIC, p) for p in range(PARTITIONS)]
        committed = {tp.partition: tp.offset for tp in consumer.committed(tps, timeout=10) if tp.offset >= 0}
    finally:
        consumer.close()
    return per_partition, committed


def by_partition(result: list[dict[str, Any]]) -> dict[int, float]:
    return {int(r["metric"]["partition"]): float(r["value"][1]) for r in result}


def test_dashboards_and_alerts_on_live_data(broker: BrokerProcess, prometheus: Prometheus) -> None:
    per_partition, committed = run_workload(broker.bootstrap)
    assert sum(per_partition.values()) == COUNT and sum(committed.values()) == CONSUMED

    # Prometheus has the final counts, and enough scrapes since for every rate window.
    def counted() -> bool | None:
        got = by_partition(prometheus.query(f'shardbroker_partition_messages_in_total{{topic="{TOPIC}"}}'))
        offsets = prometheus.query(f'sum(shardbroker_consumergroup_committed_offset{{group="{GROUP}"}})')
        done = bool(offsets) and float(offsets[0]["value"][1]) == CONSUMED
        return (got == {p: float(n) for p, n in per_partition.items()} and done) or None

    wait_for(counted, 30.0, f"Prometheus sees {COUNT} messages in and the group's lag", interval=0.5)

    def cleaned() -> bool | None:
        runs = prometheus.query('sum(shardbroker_log_cleaner_runs_total{result="success"}) > 0')
        ratios = prometheus.query(f'shardbroker_partition_dirty_ratio{{topic="{COMPACTED}"}}')
        return (bool(runs) and len(ratios) == 2) or None

    wait_for(cleaned, 30.0, f"Prometheus sees cleans of {COMPACTED} and its dirty ratios", interval=0.5)
    time.sleep(3)

    missing = [
        f"{board}: {title}: {expr}"
        for board, title, expr in dashboard_queries()
        if not prometheus.query(expr)
    ]
    assert not missing, "dashboard queries without data:\n" + "\n".join(missing)
    # The template variables' label_values(metric, label) queries, as Grafana runs them.
    variables = variable_queries()
    assert {label for _, label in variables} == {"topic", "group", "worker"}
    for metric, label in variables:
        found = prometheus.api(f"label/{label}/values", **{"match[]": metric})
        want = {"topic": TOPIC, "group": GROUP, "worker": "1"}[label]
        assert want in found, f"label_values({metric}, {label}) = {found}"

    # The numbers behind the panels.
    ends = by_partition(prometheus.query(f'shardbroker_partition_log_end_offset{{topic="{TOPIC}"}}'))
    assert ends == {p: float(n) for p, n in per_partition.items()}
    # Lag = end - committed, for the partitions the group has committed on (Kafka's rule).
    lag = by_partition(prometheus.query(f'shardbroker_consumergroup_lag{{group="{GROUP}",topic="{TOPIC}"}}'))
    assert lag == {p: float(per_partition[p] - offset) for p, offset in committed.items()}
    offsets = prometheus.query(f'shardbroker_consumergroup_committed_offset{{group="{GROUP}"}}')
    assert by_partition(offsets) == {p: float(offset) for p, offset in committed.items()}
    flushes = prometheus.query("sum(shardbroker_log_flush_duration_seconds_count)")
    assert float(flushes[0]["value"][1]) > 0  # flush.messages=1: a flush per produce
    offline = prometheus.query(f'shardbroker_partition_offline{{topic="{TOPIC}"}}')
    assert by_partition(offline) == {p: 0.0 for p in range(PARTITIONS)}
    # Dirty ratios: compacted partitions only (the compacted topic's and __consumer_offsets', which
    # the same cleaner compacts; never live-orders); the cleaner read what it cleaned and wrote
    # less back (20 live keys of ~200 records per partition).
    ratios = prometheus.query("shardbroker_partition_dirty_ratio")
    keys = {(r["metric"]["topic"], r["metric"]["partition"]) for r in ratios}
    assert {key for key in keys if key[0] != "__consumer_offsets"} == {(COMPACTED, "0"), (COMPACTED, "1")}
    assert all(0 <= float(r["value"][1]) <= 1 for r in ratios)
    read = float(prometheus.query("sum(shardbroker_log_cleaner_bytes_read_total)")[0]["value"][1])
    written = float(prometheus.query("sum(shardbroker_log_cleaner_bytes_written_total)")[0]["value"][1])
    assert 0 < written < read
    uncleanable = prometheus.query("sum(shardbroker_log_cleaner_uncleanable_partitions)")
    assert float(uncleanable[0]["value"][1]) == 0
    # Both workers' cleaners looked within the last minute (log.cleaner.backoff.ms is 100 ms).
    progress = prometheus.query("time() - shardbroker_log_cleaner_last_progress_timestamp_seconds")
    assert {r["metric"]["worker"] for r in progress} == {"0", "1"}
    assert all(-5 < float(r["value"][1]) < 60 for r in progress)
    cpu = prometheus.query("process_cpu_seconds_total")
    assert {r["metric"]["worker"] for r in cpu} == {"0", "1"}

    # The alert rules: loaded, evaluated against these series without error, silent.
    groups = prometheus.api("rules")["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert len(rules) >= 8
    assert all(rule["health"] == "ok" for rule in rules), [(r["name"], r.get("lastError")) for r in rules]
    assert prometheus.query('ALERTS{alertname=~"Shardbroker.*"}') == []

    # promtool's lint of the exposition.
    text = scrape_text(broker)
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool not found: apt-get install prometheus"
    lint = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr

    # Deleting the topic removes its series (and the group's lag on it).
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.delete_topics([TOPIC], operation_timeout=30)[TOPIC].result(60)
    wait_for(
        lambda: f'topic="{TOPIC}"' not in scrape_text(broker) or None,
        15.0,
        f"no series of {TOPIC} left on /metrics",
        interval=0.2,
    )


def scrape_text(broker: BrokerProcess) -> str:
    with urllib.request.urlopen(f"http://{broker.host}:{broker.metrics_port}/metrics", timeout=10) as resp:
        text: str = resp.read().decode()
    return text


def test_mirror_dashboard_and_alerts_on_live_data(broker_factory: BrokerFactory, tmp_path: Path) -> None:
    """A mirror between two brokers, scraped by Prometheus in the job the alerts expect: every
    query of the Mirror dashboard returns data, the numbers behind it are the mirror's, the
    mirror's alerts evaluate without error and stay silent, and promtool accepts /metrics."""
    source, target = broker_factory(workers=2), broker_factory(workers=1)
    create_topic(source.bootstrap, "mf-live", 2)
    feed = FeedThread(source.bootstrap, ("mf-live",), limit=4000)
    feed.start()
    with running_mirror(mirror_config(source, target), tmp_path) as mirror:
        job = {
            "job_name": "shardbroker-mirror",
            "static_configs": [{"targets": [f"127.0.0.1:{mirror.metrics_port}"]}],
        }
        prom = Prometheus(f"{source.host}:{source.metrics_port}", jobs=(job,))
        try:
            prom.wait_ready()
            assert feed.finish() == 4000
            assert assert_mirrored(source, target, "mf-live", mirror) == 4000

            def scraped() -> bool | None:
                total = prom.query('sum(shardbroker_mirror_records_total{topic="mf-live"})')
                lag = prom.query('sum(shardbroker_mirror_lag{topic="mf-live"})')
                done = bool(total and lag) and float(total[0]["value"][1]) == 4000
                return (done and float(lag[0]["value"][1]) == 0) or None

            wait_for(scraped, 30.0, "Prometheus sees 4000 records mirrored and no lag", interval=0.5)
            time.sleep(3)  # rate windows ($__rate_interval 15 s) hold a few scrapes of the run
            board = [GRAFANA / "dashboards" / "mirror.json"]
            missing = [
                f"{title}: {expr}"
                for _, title, expr in dashboard_queries(board, {**VARIABLES, "$topic": "mf-live"})
                if not prom.query(expr)
            ]
            assert not missing, "Mirror dashboard queries without data:\n" + "\n".join(missing)
            assert variable_queries(board) == {("shardbroker_mirror_lag", "topic")}
            assert "mf-live" in prom.api("label/topic/values", **{"match[]": "shardbroker_mirror_lag"})
            lags = prom.query('shardbroker_mirror_lag{topic="mf-live"}')
            assert sorted(r["metric"]["partition"] for r in lags) == ["0", "1"]
            assert float(prom.query("sum(shardbroker_mirror_up)")[0]["value"][1]) == 1
            assert float(prom.query("sum(shardbroker_mirror_partitions_paused)")[0]["value"][1]) == 0
            buckets = "sum by (le) (shardbroker_mirror_replication_latency_seconds_bucket)"
            p99 = f"histogram_quantile(0.99, {buckets})"
            assert 0 < float(prom.query(p99)[0]["value"][1]) < 60
            rules = [
                r
                for g in prom.api("rules")["groups"]
                if g["name"] == "shardbroker-mirror"
                for r in g["rules"]
            ]
            assert {r["name"] for r in rules} == {"ShardbrokerMirrorLagGrowing", "ShardbrokerMirrorDown"}
            assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]
            assert prom.query('ALERTS{alertname=~"ShardbrokerMirror.*"}') == []
        finally:
            prom.close()
        with urllib.request.urlopen(f"http://127.0.0.1:{mirror.metrics_port}/metrics", timeout=10) as resp:
            text = resp.read().decode()
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool not found: apt-get install prometheus"
    lint = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
