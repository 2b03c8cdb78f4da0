"""kill -9 of a worker, and of the supervisor, at a random point under produce + consume + group
load: every record the idempotent acks=all producer got an acknowledgement for is in the log
exactly once afterwards (read back offline through storage recovery, tests/faults/logs.py), and
the group goes on to read everything.

The random point is drawn from a seed printed by the test (``FAULT_SEED=... pytest`` replays it).
tests/integration/test_broker_lifecycle.py covers a worker killed at fixed points under produce
alone; these add the consumers, the group and the supervisor.
"""

from __future__ import annotations

import functools
import os
import random
import signal
from collections.abc import Callable

import pytest

from tests.faults.load import GroupLoad
from tests.faults.logs import check_acked_exactly_once, read_data_dir
from tests.integration.broker_process import SHM_DIR, BrokerProcess, _alive, wait_for
from tests.integration.kafka_clients import create_topic, end_offsets
from tests.integration.test_broker_lifecycle import restarted

pytestmark = pytest.mark.integration

Factory = Callable[..., BrokerProcess]

TOPIC = "faults"
PARTITIONS = 8
#: Fast group formation and restarts for tests (Kafka's 3 s initial delay and 50 offsets
#: partitions only slow them down).
GROUP_CONFIG = {"group.initial.rebalance.delay.ms": 0, "offsets.topic.num.partitions": 4}


def fault_seed() -> random.Random:
    seed = int(os.environ.get("FAULT_SEED") or random.randrange(2**32))
    print(f"FAULT_SEED={seed}")  # shown by pytest when the test fails
    return random.Random(seed)


def finish_and_verify(broker: BrokerProcess, load: GroupLoad) -> None:
    """Producer done, group caught up, broker drained; then every acknowledged record once."""
    acked = load.finish_producing()
    ends = end_offsets("confluent", broker.bootstrap, TOPIC, PARTITIONS)
    assert sum(ends.values()) >= len(acked)
    load.wait_consumed(ends)
    load.stop()
    assert broker.stop() == 0, "SIGTERM must drain and exit 0"
    logs = read_data_dir(broker.data_dir)[TOPIC]
    check_acked_exactly_once(logs, acked, "after the kill")
    assert {p: len(recs) for p, recs in logs.items()} == ends, "the log ends are not what clients saw"
    consumed = {(r.partition, r.offset): r for recs in load.consumed for r in recs}
    by_position = {(r.partition, r.offset): r for recs in logs.values() for r in recs}
    wrong = [r for key, r in consumed.items() if by_position.get(key) != r]
    assert not wrong, f"the group read records that are not in the log: {wrong[:3]}"


def run_worker_kills(broker_factory: Factory, count: int, kills: int) -> None:
    rnd = fault_seed()
    broker = broker_factory(workers=2, config=GROUP_CONFIG)
    create_topic(broker.bootstrap, TOPIC, PARTITIONS)
    load = GroupLoad(broker.bootstrap, TOPIC, count).start()
    try:
        killed: list[int] = []
        points = sorted(rnd.sample(range(count // 20, count * 3 // 4), kills))
        for point in points:
            load.wait_acked(point)
            node = rnd.randrange(broker.workers)  # worker 0 is also the bootstrap server
            victim = broker.worker_pid(node)
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)
            print(f"killed worker {node} (pid {victim}) after {len(load.acked)} acks")
            wait_for(functools.partial(restarted, broker, node, killed), 60, f"worker {node} restarted")
        finish_and_verify(broker, load)
    finally:
        load.stop()


def test_worker_kill9_under_group_load(broker_factory: Factory) -> None:
    run_worker_kills(broker_factory, count=8_000, kills=1)


@pytest.mark.slow
def test_worker_kill9_soak_under_group_load(broker_factory: Factory) -> None:
    run_worker_kills(broker_factory, count=150_000, kills=6)


def shm_inodes(broker: BrokerProcess) -> dict[str, int]:
    return {name: (SHM_DIR / name).stat().st_ino for name in broker.shm_leftovers()}


def test_supervisor_kill9_under_group_load_then_restart(broker_factory: Factory) -> None:
    """The whole broker dies at once (its workers follow their parent); the next start on the same
    data dir reclaims the dead run's shared memory, recovers the logs, and the producer that kept
    retrying finishes with every acknowledged record there once."""
    rnd = fault_seed()
    broker = broker_factory(workers=2, config=GROUP_CONFIG)
    create_topic(broker.bootstrap, TOPIC, PARTITIONS)
    load = GroupLoad(broker.bootstrap, TOPIC, 8_000, producer={"message.timeout.ms": 120_000}).start()
    try:
        load.wait_acked(rnd.randrange(400, 6_000))
        workers = broker.worker_pids()
        os.kill(broker.pid, signal.SIGKILL)
        assert broker.proc is not None
        broker.proc.wait(10)
        wait_for(lambda: not any(_alive(p) for p in workers), 15, "the orphaned workers to exit")
        stale = shm_inodes(broker)
        assert stale, "a SIGKILLed broker leaves its shared memory behind (reclaimed by the next start)"

        broker.start()
        assert "reclaimed" in broker.output(tail=400), "the restart did not report reclaiming shared memory"
        now = shm_inodes(broker)
        kept = [name for name, inode in stale.items() if now.get(name) == inode]
        assert not kept, f"shared memory of the dead run still in use: {kept}"
        finish_and_verify(broker, load)
    finally:
        load.stop()
