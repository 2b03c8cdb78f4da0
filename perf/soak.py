"""``python -m perf.soak --minutes N``: a broker under mixed load with faults on a schedule, then a
record-by-record check of everything that was acknowledged.

Starts ``shardbroker serve`` (tests/integration/broker_process.py: temp data dir, free ports) and
runs, until the time is up:

- produce + consume + group: an idempotent acks=all producer writing rounds of 10,000 keyed
  messages to an 8-partition topic at ``--rate`` messages a second (every acknowledgement is kept
  in memory for the check: ~250 bytes each), read by a two-member consumer group
  (tests/faults/load.py);
- admin: a topic created, described and deleted each second, groups listed, configs described;
- faults, one every ``--fault-every`` seconds, drawn from a seeded schedule: kill -9 of a worker,
  SIGSTOP of the group coordinator's worker past the session timeout (then SIGCONT), kill -9 of
  the supervisor (then a restart on the same data dir).

Then the producer stops and flushes, the group catches up, the broker drains, every partition log
is reopened offline through storage recovery (tests/faults/logs.py), and every acknowledged record
must be there exactly once, at the offset it was acknowledged with, in production order per
partition; every record the group read must be the log's record at that offset. Prints progress
every 10 s and a summary; exits 0 when all holds, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType  # type: ignore[attr-defined]

from tests.faults.load import GroupLoad
from tests.faults.logs import check_acked_exactly_once, read_data_dir
from tests.integration.broker_process import BrokerProcess, _alive, wait_for
from tests.integration.kafka_clients import create_topic, end_offsets

TOPIC = "soak"
PARTITIONS = 8
SESSION_TIMEOUT_MS = 3000
BROKER_CONFIG: dict[str, str | int | bool] = {
    "num.partitions": 2,
    "log.segment.bytes": 4 * 1024 * 1024,
    "group.initial.rebalance.delay.ms": 0,
    "group.min.session.timeout.ms": 1000,
    "offsets.topic.num.partitions": 8,
}
FAULTS = ("kill-worker", "stop-coordinator", "kill-supervisor")


class AdminLoad(threading.Thread):
    """Create, describe, delete a topic each second; list groups. Failures during faults are
    expected (timeouts, refused connections): counted, not fatal."""

    def __init__(self, bootstrap: str) -> None:
        super().__init__(name="soak-admin", daemon=True)
        self.bootstrap = bootstrap
        self.done = threading.Event()
        self.operations = 0
        self.failures = 0

    def run(self) -> None:
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        n = 0
        while not self.done.wait(1.0):
            self.round(admin, f"soak-admin-{n}", f"soak-admin-{n - 2}")
            n += 1

    def round(self, admin: AdminClient, new: str, old: str) -> None:
        steps = (
            lambda: admin.create_topics([NewTopic(new, num_partitions=2, replication_factor=1)])[new].result(
                10
            ),
            lambda: admin.describe_configs([ConfigResource(ResourceType.TOPIC, new)])[
                ConfigResource(ResourceType.TOPIC, new)
            ].result(10),
            lambda: admin.list_consumer_groups().result(10),
            lambda: admin.delete_topics([old])[old].result(10),
        )
        for step in steps:
            try:
                step()
                self.operations += 1
            except Exception:  # an admin call failing during a fault is expected: counted
                self.failures += 1


def coordinator_of(bootstrap: str, group: str) -> int:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    (future,) = admin.describe_consumer_groups([group]).values()
    return int(future.result(30).coordinator.id)


def inject(fault: str, broker: BrokerProcess, load: GroupLoad, rnd: random.Random) -> str:
    if fault == "kill-worker":
        node = rnd.randrange(broker.workers)
        pid = broker.worker_pid(node)
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: broker.worker_pid(node) != pid or None, 60, f"worker {node} restarted")
        return f"killed worker {node} (pid {pid}); restarted"
    if fault == "stop-coordinator":
        node = coordinator_of(broker.bootstrap, load.group)
        pid = broker.worker_pid(node)
        os.kill(pid, signal.SIGSTOP)
        time.sleep(SESSION_TIMEOUT_MS / 1000 + 2)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
        return f"stopped coordinator worker {node} for {SESSION_TIMEOUT_MS / 1000 + 2:.0f} s"
    workers = broker.worker_pids()
    os.kill(broker.pid, signal.SIGKILL)
    assert broker.proc is not None
    broker.proc.wait(30)
    # The orphaned workers drain and exit on their own; until then they hold the data dir's lock
    # (a start at once is refused: "in use by another shardbroker").
    started = time.monotonic()
    wait_for(lambda: not any(_alive(p) for p in workers), 60, "the orphaned workers to exit")
    orphaned = time.monotonic() - started
    broker.start()
    return f"killed the supervisor; its workers exited {orphaned:.1f} s later; restarted on the same data dir"


def soak(minutes: float, workers: int, fault_every: float, rate: float, seed: int, root: Path) -> int:
    rnd = random.Random(seed)
    (root / "logs").mkdir(parents=True, exist_ok=True)
    broker = BrokerProcess(root / "data", root / "logs", workers=workers, config=BROKER_CONFIG, name="soak")
    broker.start()
    admin = AdminLoad(broker.bootstrap)
    load: GroupLoad | None = None
    try:
        create_topic(broker.bootstrap, TOPIC, PARTITIONS)
        load = GroupLoad(
            broker.bootstrap,
            TOPIC,
            10_000,
            rounds=None,
            rate=rate,
            tag="soak",
            producer={"message.timeout.ms": 300_000},
            consumer={"session.timeout.ms": SESSION_TIMEOUT_MS, "heartbeat.interval.ms": 300},
        ).start()
        admin.start()
        started = time.monotonic()
        end = started + minutes * 60
        next_fault = started + fault_every
        next_report = started + 10
        faults = 0
        while time.monotonic() < end:
            time.sleep(0.2)
            load.check()
            now = time.monotonic()
            if now >= next_fault:
                what = inject(rnd.choice(FAULTS), broker, load, rnd)
                faults += 1
                print(f"[{now - started:6.0f} s] fault {faults}: {what}", flush=True)
                next_fault = time.monotonic() + fault_every
            if now >= next_report:
                consumed = sum(len(c) for c in load.consumed)
                print(
                    f"[{now - started:6.0f} s] acknowledged {len(load.acked):,}, consumed {consumed:,}, "
                    f"admin ops {admin.operations:,} ({admin.failures} failed), faults {faults}",
                    flush=True,
                )
                next_report = now + 10
        print("stopping the load; checking ...", flush=True)
        admin.done.set()
        load.stop_producing()
        acked = load.finish_producing()
        ends = end_offsets("confluent", broker.bootstrap, TOPIC, PARTITIONS)
        load.wait_consumed(ends, timeout=300)
        load.stop()
        code = broker.stop()
        if code != 0:
            print(f"FAILED: SIGTERM drain exited {code}", flush=True)
            return 1
        logs = read_data_dir(broker.data_dir)[TOPIC]
        check_acked_exactly_once(logs, acked, "soak")
        position = {(r.partition, r.offset): r for recs in logs.values() for r in recs}
        wrong = [r for recs in load.consumed for r in recs if position.get((r.partition, r.offset)) != r]
        assert not wrong, f"the group read records that are not in the log: {wrong[:3]}"
        print(
            f"OK: {len(acked):,} acknowledged records each present once and in order over {PARTITIONS} "
            f"partitions, {sum(len(c) for c in load.consumed):,} consumed, {faults} faults, "
            f"{admin.operations:,} admin operations ({admin.failures} failed during faults), seed {seed}",
            flush=True,
        )
        return 0
    except AssertionError as exc:
        print(f"FAILED (seed {seed}): {exc}\n{broker.output(tail=60)}", flush=True)
        return 1
    finally:
        admin.done.set()
        if load is not None:
            load.stop_producing()
            with contextlib.suppress(AssertionError):
                load.stop()
        broker.kill()
        broker.remove_shm_leftovers()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perf.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, required=True, help="how long the load and faults run")
    parser.add_argument("--workers", type=int, default=2, help="broker workers [2]")
    parser.add_argument("--fault-every", type=float, default=20.0, help="seconds between faults [20]")
    parser.add_argument(
        "--rate",
        type=float,
        default=2000.0,
        help="messages produced per second [2000]: every one is kept in memory",
    )
    parser.add_argument("--seed", type=int, help="the fault schedule's seed [random, printed]")
    parser.add_argument("--keep", action="store_true", help="keep the data dir and logs")
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.fault_every <= 0 or args.rate <= 0 or args.workers < 1:
        parser.error("--minutes, --fault-every and --rate must be positive, --workers at least 1")
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    root = Path(tempfile.mkdtemp(prefix="shardbroker-soak-"))
    print(
        f"soak: {args.minutes} min, {args.workers} workers, a fault every {args.fault_every} s, seed {seed}"
    )
    try:
        return soak(args.minutes, args.workers, args.fault_every, args.rate, seed, root)
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
