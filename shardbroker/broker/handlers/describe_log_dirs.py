"""DescribeLogDirs (api key 35), v0-v4: the partitions this worker leads, in the one log dir.

Kafka's ``log.dirs`` may name several directories; a shardbroker broker has one data dir
(``log.dirs``), holding every partition as ``<topic>-<partition>/`` (storage/). Each worker is a
Kafka broker and reports that dir as its only log dir with the partitions *it* leads, as a Kafka
broker lists its own replicas: tools ask every broker and add up (``kafka-log-dirs.sh``), so no
partition is counted twice. The path is absolute, as Kafka's; AlterReplicaLogDirs compares
against the same string.

Per partition: the size of its segment files (Kafka's ``UnifiedLog.size``: the ``.log`` files,
not the indexes), offset lag 0 (the lag of the log end offset behind the high watermark, which
is the log end offset with one replica), never a future log (AlterReplicaLogDirs moves nothing
here). A partition whose log went offline is left out, as Kafka leaves out the logs of a failed
dir. v4's total and usable bytes are those of the data dir's file system (``statvfs``: blocks
and blocks available to unprivileged users, times the fragment size, which is what Java's
FileStore total and usable space report); when statvfs fails the dir is answered
KAFKA_STORAGE_ERROR (56), as Kafka answers a dir it cannot read.

As KafkaApis: DESCRIBE on the CLUSTER, else no results and (v3+) CLUSTER_AUTHORIZATION_FAILED
(31); null topics ask for every partition; asked-for partitions not led here are left out.
The answer is at most one entry per partition led here, whatever the request names.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable

from shardbroker.broker.auth_helper import authorize_cluster
from shardbroker.broker.dispatch import ApiHandler, RequestContext
from shardbroker.broker.partition import Partition
from shardbroker.config.broker_config import BrokerConfig
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode
from shardbroker.security.acl import AclOperation

__all__ = ["HANDLER", "log_dir", "log_dir_result"]

_R = m.DescribeLogDirsResponse


def log_dir(config: BrokerConfig) -> str:
    """The broker's one log dir as DescribeLogDirs names it and AlterReplicaLogDirs expects it."""
    return os.path.abspath(config.data_dir)


def log_dir_result(path: str, partitions: Iterable[Partition]) -> _R.DescribeLogDirsResult:
    """``path``'s entry: the partitions by topic with their sizes, and its file system's space."""
    by_topic: dict[str, list[_R.DescribeLogDirsPartition]] = defaultdict(list)
    for p in sorted(partitions, key=lambda p: (p.topic, p.index)):
        if p.log.offline:
            continue
        by_topic[p.topic].append(
            _R.DescribeLogDirsPartition(
                partition_index=p.index, partition_size=p.log.size_in_bytes, offset_lag=0, is_future_key=False
            )
        )
    topics = [_R.DescribeLogDirsTopic(name=name, partitions=parts) for name, parts in by_topic.items()]
    try:
        st = os.statvfs(path)
    except OSError:
        return _R.DescribeLogDirsResult(error_code=ErrorCode.KAFKA_STORAGE_ERROR, log_dir=path)
    return _R.DescribeLogDirsResult(
        error_code=0,
        log_dir=path,
        topics=topics,
        total_bytes=st.f_blocks * st.f_frsize,
        usable_bytes=st.f_bavail * st.f_frsize,
    )


async def handle(ctx: RequestContext, request: m.DescribeLogDirsRequest) -> m.DescribeLogDirsResponse:
    if not authorize_cluster(ctx, AclOperation.DESCRIBE):
        return _R(error_code=ErrorCode.CLUSTER_AUTHORIZATION_FAILED, results=[])
    led = ctx.worker.replicas.iter_partitions()
    if request.topics is None:
        wanted = list(led)
    else:
        asked: dict[str, set[int]] = defaultdict(set)
        for t in request.topics:
            asked[t.topic].update(t.partitions)
        wanted = [p for p in led if p.index in asked.get(p.topic, ())]
    return _R(error_code=0, results=[log_dir_result(log_dir(ctx.worker.config), wanted)])


HANDLER = ApiHandler(api_key=35, min_version=0, max_version=4, handle=handle)
