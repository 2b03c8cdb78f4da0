"""AlterReplicaLogDirs (api key 34), v0-v2: there is no other log dir to move a replica to.

Kafka moves a replica between the directories of its ``log.dirs``; a shardbroker broker has one
data dir (describe_log_dirs.py), so no move can be made, and each partition is answered as
Kafka's ReplicaManager answers it:

- a path that is not the data dir (compared as strings with the absolute path DescribeLogDirs
  reports, as Kafka compares its configured dirs' absolute paths) is LOG_DIR_NOT_FOUND (57),
  checked before the partition. That is the code Kafka returns for a dir it does not have, and
  the one tools expect: the Java admin client raises LogDirNotFoundException and
  ``kafka-reassign-partitions.sh`` reports it per replica. The other candidates say something
  false: UNSUPPORTED_VERSION (the API is served), INVALID_REQUEST (the request is well formed),
  KAFKA_STORAGE_ERROR (no dir failed);
- the data dir itself: NONE for a partition this worker leads (the replica is already there,
  which Kafka also answers NONE, moving nothing), NOT_LEADER_OR_FOLLOWER for one another worker
  leads and UNKNOWN_TOPIC_OR_PARTITION for one that does not exist (Kafka's answers for a
  replica the broker does not host).

ALTER on the CLUSTER, else CLUSTER_AUTHORIZATION_FAILED (31) for every partition, as KafkaApis.
A partition named under several paths gets the answer of the last, as Kafka's map of partition
to destination keeps the last.
"""

from __future__ import annotations

from shardbroker.broker.auth_helper import authorize_cluster
from shardbroker.broker.dispatch import ApiHandler, RequestContext
from shardbroker.broker.handlers.describe_log_dirs import log_dir
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode
from shardbroker.security.acl import AclOperation

__all__ = ["HANDLER"]

_R = m.AlterReplicaLogDirsResponse


async def handle(ctx: RequestContext, request: m.AlterReplicaLogDirsRequest) -> m.AlterReplicaLogDirsResponse:
    allowed = authorize_cluster(ctx, AclOperation.ALTER)
    ours = log_dir(ctx.worker.config)
    replicas = ctx.worker.replicas
    answers: dict[str, dict[int, int]] = {}
    for d in request.dirs:
        for t in d.topics:
            codes = answers.setdefault(t.name, {})
            for index in t.partitions:
                if not allowed:
                    codes[index] = ErrorCode.CLUSTER_AUTHORIZATION_FAILED
                elif d.path != ours:
                    codes[index] = ErrorCode.LOG_DIR_NOT_FOUND
                elif replicas.get(t.name, index) is None:
                    codes[index] = replicas.not_here_error(t.name, index)
                else:
                    codes[index] = ErrorCode.NONE
    return _R(
        results=[
            _R.AlterReplicaLogDirTopicResult(
                topic_name=name,
                partitions=[
                    _R.AlterReplicaLogDirPartitionResult(partition_index=i, error_code=c)
                    for i, c in codes.items()
                ],
            )
            for name, codes in answers.items()
        ]
    )


def error_response(
    request: m.AlterReplicaLogDirsRequest, version: int, code: ErrorCode, message: str
) -> m.AlterReplicaLogDirsResponse:
    """Every partition asked for with ``code`` (the response has no top-level error)."""
    return _R(
        results=[
            _R.AlterReplicaLogDirTopicResult(
                topic_name=t.name,
                partitions=[
                    _R.AlterReplicaLogDirPartitionResult(partition_index=i, error_code=code)
                    for i in t.partitions
                ],
            )
            for d in request.dirs
            for t in d.topics
        ]
    )


HANDLER = ApiHandler(api_key=34, min_version=0, max_version=2, handle=handle, error_response=error_response)
