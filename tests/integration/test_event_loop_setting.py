"""``event.loop``: each setting reaches the workers (their boot log names the loop they run),
and Kafka clients are served the same on either loop (TCP and TLS paths are covered by the rest
of the suite on the default, uvloop)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.integration.broker_process import BrokerProcess, wait_for
from tests.integration.kafka_clients import (
    check_partition_logs,
    consume,
    create_topic,
    make_messages,
    produce_confluent,
)

pytestmark = pytest.mark.integration

LOOPS = {
    "uvloop": "event loop uvloop.Loop",
    "asyncio": "event loop asyncio.unix_events._UnixSelectorEventLoop",
}


@pytest.mark.parametrize("name", sorted(LOOPS))
def test_each_event_loop_setting_reaches_the_workers_and_serves_clients(
    broker_factory: Callable[..., BrokerProcess], name: str
) -> None:
    broker = broker_factory(workers=2, config={"event.loop": name})
    for node in range(2):
        line = f"worker {node}: {LOOPS[name]}"
        wait_for(lambda line=line: line in broker.output(tail=10_000) or None, 10, line)  # type: ignore[misc]
    assert all(other not in broker.output(tail=10_000) for n, other in LOOPS.items() if n != name)
    create_topic(broker.bootstrap, "loop", 4)
    messages = make_messages(400, keys=4, tag=name)
    produce_confluent(broker.bootstrap, "loop", messages, partition_of={i: i % 4 for i in range(400)})
    ends = {p: 100 for p in range(4)}
    check_partition_logs(consume("confluent", broker.bootstrap, "loop", ends), messages, ends, name)
