"""The Produce handler over a real ReplicaManager: versions, acks, per-partition errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shardbroker.broker.handlers import produce as produce_mod
from shardbroker.broker.handlers.produce import HANDLER, handle_produce, produce_error_response
from shardbroker.protocol import messages as m
from shardbroker.protocol.codec import decode, encode
from shardbroker.protocol.errors import ErrorCode
from shardbroker.protocol.record_batch_builder import RecordBatchBuilder
from tests.unit.replica_fakes import Harness, batch, image, run, topic

IMG = image(
    topic("t", 2, leaders=[0, 1], epoch=4), topic("lat", configs={"message.timestamp.type": "LogAppendTime"})
)


def request(parts: list[tuple[str, int, Any]], acks: int = 1, timeout_ms: int = 5000) -> m.ProduceRequest:
    topics: dict[str, list[m.ProduceRequest.PartitionProduceData]] = {}
    for name, index, records in parts:
        topics.setdefault(name, []).append(
            m.ProduceRequest.PartitionProduceData(index=index, records=records)
        )
    return m.ProduceRequest(
        acks=acks,
        timeout_ms=timeout_ms,
        topic_data=[m.ProduceRequest.TopicProduceData(name=n, partition_data=p) for n, p in topics.items()],
    )


def answers(response: m.ProduceResponse) -> dict[tuple[str, int], Any]:
    return {(t.name, p.index): p for t in response.responses for p in t.partition_responses}


def test_handler_is_registered_for_v0_to_v11() -> None:
    assert (HANDLER.api_key, HANDLER.min_version, HANDLER.max_version) == (0, 0, 11)
    assert produce_mod.HANDLER.error_response is produce_error_response


@pytest.mark.parametrize("version", range(3, 12))
def test_many_partitions_per_request_at_every_version(tmp_path: Path, version: int) -> None:
    async def main() -> None:
        async with Harness(tmp_path, IMG) as h:
            req = request([("t", 0, batch(2)), ("t", 1, batch()), ("nope", 0, batch()), ("lat", 0, batch())])
            resp = await handle_produce(h.ctx(0, version), req)
            assert resp is not None
            got = answers(resp)
            assert (got["t", 0].error_code, got["t", 0].base_offset) == (0, 0)
            assert got["t", 1].error_code == ErrorCode.NOT_LEADER_OR_FOLLOWER
            assert got["nope", 0].error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
            assert got["lat", 0].error_code == 0 and got["lat", 0].log_append_time_ms > 0
            assert got["t", 0].log_append_time_ms == -1 and got["t", 0].log_start_offset == 0
            if version >= 8:
                assert got["nope", 0].error_message
            if version >= 10:
                assert (got["t", 1].current_leader.leader_id, got["t", 1].current_leader.leader_epoch) == (
                    1,
                    4,
                )
                assert [(e.node_id, e.port) for e in resp.node_endpoints] == [(1, 9093)]
            # the response encodes at this version and reads back the same
            back = decode(m.ProduceResponse, encode(resp, version), version)
            assert answers(back)["t", 0].base_offset == 0
            # a second request continues the offsets
            resp2 = await handle_produce(h.ctx(0, version), request([("t", 0, batch(3))]))
            assert resp2 is not None and answers(resp2)["t", 0].base_offset == 2

    run(main())


@pytest.mark.parametrize("version", [0, 1, 2])
def test_v0_to_v2_are_unsupported_for_message_format(tmp_path: Path, version: int) -> None:
    async def main() -> None:
        async with Harness(tmp_path, IMG) as h:
            resp = await handle_produce(h.ctx(0, version), request([("t", 0, batch())]))
            assert resp is not None
            assert answers(resp)["t", 0].error_code == ErrorCode.UNSUPPORTED_FOR_MESSAGE_FORMAT
            encode(resp, version)
            p = h.replicas.get("t", 0)
            assert p is not None and p.high_watermark == 0

    run(main())


def test_acks_0_gets_no_response_but_appends(tmp_path: Path) -> None:
    async def main() -> None:
        async with Harness(tmp_path, IMG) as h:
            assert await handle_produce(h.ctx(0, 9), request([("t", 0, batch(4))], acks=0)) is None
            p = h.replicas.get("t", 0)
            assert p is not None and p.high_watermark == 4

    run(main())


def test_per_partition_errors(tmp_path: Path) -> None:
    async def main() -> None:
        async with Harness(tmp_path, image(topic("t", 6, configs={"max.message.bytes": "500"}))) as h:
            bad_crc = batch()
            bad_crc[-1] ^= 1
            old = batch()
            old[16] = 0
            req = request(
                [
                    ("t", 0, bad_crc),
                    ("t", 1, batch(20, value=b"x" * 50)),
                    ("t", 2, batch() + batch()),
                    ("t", 3, old),
                    ("t", 4, batch()),
                    ("t", 5, None),
                ]
            )
            resp = await handle_produce(h.ctx(0, 11), req)
            assert resp is not None
            got = {k[1]: (v.error_code, v.base_offset) for k, v in answers(resp).items()}
            assert got == {
                0: (ErrorCode.CORRUPT_MESSAGE, -1),
                1: (ErrorCode.MESSAGE_TOO_LARGE, -1),
                2: (ErrorCode.INVALID_RECORD, -1),
                3: (ErrorCode.UNSUPPORTED_FOR_MESSAGE_FORMAT, -1),
                4: (0, 0),
                5: (ErrorCode.INVALID_RECORD, -1),
            }
            encode(resp, 11)

    run(main())


def test_storage_error_is_kafka_storage_error(tmp_path: Path) -> None:
    async def main() -> None:
        async with Harness(tmp_path, IMG) as h:
            p = h.replicas.get("t", 0)
            assert p is not None
            p.log._offline = "disk on fire"  # what a failed write or fdatasync leaves
            resp = await handle_produce(h.ctx(0, 9), request([("t", 0, batch())]))
            assert resp is not None
            assert answers(resp)["t", 0].error_code == ErrorCode.KAFKA_STORAGE_ERROR
            p.log._offline = None

    run(main())


def test_acks_all_waits_for_the_flush_the_policy_asks_for(tmp_path: Path) -> None:
    img = image(topic("t", configs={"flush.messages": "1"}), topic("u"))

    async def main() -> None:
        async with Harness(tmp_path, img) as h:
            p, u = h.replicas.get("t", 0), h.replicas.get("u", 0)
            assert p is not None and u is not None
            resp = await handle_produce(
                h.ctx(0, 9), request([("t", 0, batch(3)), ("u", 0, batch(3))], acks=-1)
            )
            assert resp is not None and all(a.error_code == 0 for a in answers(resp).values())
            assert p.log.recovery_point == 3  # flushed before the answer
            assert u.log.recovery_point == 0  # no flush policy: answered from the page cache
            # acks=1 starts the flush but does not wait for it
            resp = await handle_produce(h.ctx(0, 9), request([("t", 0, batch(3))], acks=1))
            assert resp is not None and answers(resp)["t", 0].error_code == 0

    run(main())


def test_error_response_covers_every_partition() -> None:
    req = request([("t", 0, b""), ("t", 1, b""), ("u", 0, b"")])
    resp = produce_error_response(req, 9, ErrorCode.UNKNOWN_SERVER_ERROR, "boom")
    assert {k: v.error_code for k, v in answers(resp).items()} == dict.fromkeys(
        [("t", 0), ("t", 1), ("u", 0)], ErrorCode.UNKNOWN_SERVER_ERROR
    )
    encode(resp, 9)
    encode(produce_error_response(req, 3, ErrorCode.UNKNOWN_SERVER_ERROR, "boom"), 3)


def keyed(keys: list[bytes | None]) -> bytearray:
    builder = RecordBatchBuilder()
    for k in keys:
        builder.append(b"value", key=k)
    return bytearray(builder.build())


COMPACTED = image(
    topic("c", configs={"cleanup.policy": "compact"}),
    topic("cd", configs={"cleanup.policy": "compact,delete"}),
    topic("d", configs={"cleanup.policy": "delete"}),
)


@pytest.mark.parametrize("version", range(3, 12))
def test_keyless_records_on_a_compacted_topic_refuse_the_batch(tmp_path: Path, version: int) -> None:
    async def main() -> None:
        async with Harness(tmp_path, COMPACTED) as h:
            ctx = h.ctx(0, version)
            ok = await handle_produce(ctx, request([("c", 0, keyed([b"a", b"b"]))]))
            assert ok is not None and answers(ok)["c", 0].error_code == 0
            keyless = [b"a", None, b"c", None, b"e"]
            resp = await handle_produce(ctx, request([(t, 0, keyed(keyless)) for t in ("c", "cd", "d")]))
            assert resp is not None
            got = answers(decode(m.ProduceResponse, encode(resp, version), version))
            assert (got["d", 0].error_code, got["d", 0].base_offset) == (0, 0)  # delete: no rule
            for name in ("c", "cd"):
                a = got[name, 0]
                assert (a.error_code, a.base_offset) == (ErrorCode.INVALID_RECORD, -1)
                why = f"Compacted topic cannot accept message without key in topic partition {name}-0"
                if version >= 8:  # KIP-467
                    assert [(e.batch_index, e.batch_index_error_message) for e in a.record_errors] == [
                        (1, why),
                        (3, why),
                    ]
                    assert a.error_message.startswith("One or more records have been rejected due to 2")
                else:
                    assert a.record_errors == [] and a.error_message is None
            # nothing of the refused batches was written
            for name, end in (("c", 2), ("cd", 0), ("d", 5)):
                p = h.replicas.get(name, 0)
                assert p is not None and p.log.log_end_offset == end

    run(main())


def test_a_local_producers_lot_refuses_only_its_keyless_batch(tmp_path: Path) -> None:
    async def main() -> None:
        async with Harness(tmp_path, COMPACTED) as h:
            keys: list[list[bytes | None]] = [[b"a"], [b"b", None], [b"c", b"d"]]
            lot = [memoryview(keyed(k)) for k in keys]
            results = h.replicas.append_batches("c", 0, lot)
            assert [(r.error_code, r.base_offset) for r in results] == [
                (0, 0),
                (ErrorCode.INVALID_RECORD, -1),
                (0, 1),
            ]
            assert [i for i, _ in results[1].record_errors] == [1]
            p = h.replicas.get("c", 0)
            assert p is not None and p.log.log_end_offset == 3
            good = h.replicas.append_batches("c", 0, [memoryview(keyed([b"e"])), memoryview(keyed([b"f"]))])
            assert [(r.error_code, r.base_offset) for r in good] == [(0, 3), (0, 4)]

    run(main())
