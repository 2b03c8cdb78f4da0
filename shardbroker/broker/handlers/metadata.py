"""Metadata (api key 3), v0-v12: the whole broker as this worker's metadata image describes it.

Brokers are the workers (node id = worker index, advertised host, ``port + i``) on the listener
the request came in on (``ctx.session.listener``: a client is told the addresses of the listener
it uses, as Kafka answers with the request's listener name); each partition is
led by its owning worker, whose leader epoch the image carries; replicas = ISR = [leader] (one
copy per partition on a single host), offline replicas none. Topic ids from v10; lookups by id
(v12, name null) answer UNKNOWN_TOPIC_ID (100) for ids the image does not have, as Kafka.

Unknown topics, as Kafka: an illegal name is INVALID_TOPIC_EXCEPTION (17); otherwise, when the
request allows auto-creation (v4+ flag; always for v0-v3) and ``auto.create.topics.enable`` is
on, the topic is created through the controller with ``num.partitions`` (-1) in the background
and answered LEADER_NOT_AVAILABLE (5, retriable: clients ask again and find it once the image
has it); else UNKNOWN_TOPIC_OR_PARTITION (3). The creation is not awaited: Kafka does not wait
either, and a Metadata request must not block behind the controller.

Topic list semantics: null (v1+) or, in v0, an empty list means every topic; an empty list in
v1+ means none (clients use it to learn the brokers only).

Authorization, as KafkaApis.handleTopicMetadataRequest: every topic is listed only with DESCRIBE
on it (unaudited: hiding is expected); a named topic without DESCRIBE is TOPIC_AUTHORIZATION_FAILED
(29) with no partitions, whether it exists or not (by id: with its id and a null name; an unknown
id is UNKNOWN_TOPIC_ID first); a missing topic that would be auto-created needs CREATE on the
CLUSTER or on the TOPIC, else 29. Authorized operations (v8+, when asked) are the principal's:
per topic for the topics it may describe; for the cluster (v8-v10) only with DESCRIBE on the
CLUSTER, else 0.
"""

from __future__ import annotations

import logging
import uuid

from shardbroker.broker.auth_helper import (
    authorize,
    authorize_cluster,
    authorized_operations,
    filter_authorized,
)
from shardbroker.broker.dispatch import ApiHandler, RequestContext
from shardbroker.broker.worker_state import WorkerState
from shardbroker.config.broker_properties import AUTO_CREATE_TOPICS_ENABLE
from shardbroker.metadata.image import MetadataImage, TopicImage
from shardbroker.metadata.topic_names import INTERNAL_TOPICS, validate_topic_name
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode
from shardbroker.protocol.schema import ZERO_UUID
from shardbroker.security.acl import CLUSTER_NAME, AclOperation, ResourceType

__all__ = ["HANDLER"]

log = logging.getLogger(__name__)

_Topic = m.MetadataResponse.MetadataResponseTopic
_Partition = m.MetadataResponse.MetadataResponsePartition
_Broker = m.MetadataResponse.MetadataResponseBroker


def _topic(image: MetadataImage, live: set[int], topic: TopicImage, version: int) -> _Topic:
    partitions = []
    for p in topic.partitions:
        if p.leader in live:
            partitions.append(
                _Partition(
                    error_code=0,
                    partition_index=p.partition,
                    leader_id=p.leader,
                    leader_epoch=p.leader_epoch if version >= 7 else -1,
                    replica_nodes=[p.leader],
                    isr_nodes=[p.leader],
                )
            )
        else:  # its worker is not in the image's broker list (being restarted)
            partitions.append(
                _Partition(
                    error_code=ErrorCode.LEADER_NOT_AVAILABLE,
                    partition_index=p.partition,
                    leader_id=-1,
                    leader_epoch=p.leader_epoch if version >= 7 else -1,
                    replica_nodes=[p.leader] if p.leader >= 0 else [],  # -1: moving (control/controller.py)
                    isr_nodes=[],
                    offline_replicas=[p.leader] if version >= 5 and p.leader >= 0 else [],
                )
            )
    return _Topic(
        error_code=0,
        name=topic.name,
        topic_id=topic.topic_id if version >= 10 else ZERO_UUID,
        is_internal=topic.is_internal if version >= 1 else False,
        partitions=partitions,
    )


def _error_topic(name: str | None, code: ErrorCode, version: int, topic_id: uuid.UUID = ZERO_UUID) -> _Topic:
    if name is None and version < 12:
        name = ""  # name is nullable from v12 only
    return _Topic(error_code=code, name=name, topic_id=topic_id if version >= 10 else ZERO_UUID)


async def _auto_create(state: WorkerState, name: str) -> None:
    args = {
        "topics": [{"name": name, "num_partitions": -1, "replication_factor": -1, "configs": {}}],
        "validate_only": False,
    }
    try:
        result = await state.channel.request("create_topics", args)
    except Exception as exc:  # logged, never raised: nobody awaits this task
        log.warning("worker %d: auto-creating topic %r failed: %s", state.node_id, name, exc)
        return
    for item in result.get("topics", []):
        code = item.get("error_code", 0)
        if code not in (0, ErrorCode.TOPIC_ALREADY_EXISTS):
            log.warning(
                "worker %d: auto-creating topic %r: error %s %s",
                state.node_id,
                name,
                code,
                item.get("error_message"),
            )
        else:
            log.info("worker %d: auto-created topic %r", state.node_id, name)


async def handle(ctx: RequestContext, request: m.MetadataRequest) -> m.MetadataResponse:
    version = ctx.api_version
    image = ctx.worker.image
    brokers = image.brokers_on(ctx.session.listener)
    live = {b.node_id for b in brokers}
    response = m.MetadataResponse(
        brokers=[_Broker(node_id=b.node_id, host=b.host, port=b.port, rack=None) for b in brokers],
        cluster_id=image.cluster_id if version >= 2 else None,
        controller_id=image.controller_id if version >= 1 else -1,
    )
    if 8 <= version <= 10 and request.include_cluster_authorized_operations:
        response.cluster_authorized_operations = (
            authorized_operations(ctx, ResourceType.CLUSTER, CLUSTER_NAME)
            if authorize_cluster(ctx, AclOperation.DESCRIBE)
            else 0
        )
    wanted = request.topics
    if wanted is None or (version == 0 and not wanted):
        visible = filter_authorized(
            ctx, AclOperation.DESCRIBE, ResourceType.TOPIC, image.topics, log_if_denied=False
        )
        described = [
            (_topic(image, live, t, version), t.name) for t in image.topics.values() if t.name in visible
        ]
        response.topics = [t for t, _ in described]
    else:
        response.topics, described = _named(ctx, request, image, live)
    if version >= 8 and request.include_topic_authorized_operations:
        for t, name in described:
            t.topic_authorized_operations = authorized_operations(ctx, ResourceType.TOPIC, name)
    return response


def _named(
    ctx: RequestContext, request: m.MetadataRequest, image: MetadataImage, live: set[int]
) -> tuple[list[_Topic], list[tuple[_Topic, str]]]:
    """The answers to the topics asked for, and those of them the principal may describe (with
    their names)."""
    version = ctx.api_version
    state = ctx.worker
    auto = (version < 4 or request.allow_auto_topic_creation) and state.config.get(AUTO_CREATE_TOPICS_ENABLE)
    by_id = image.topics_by_id if version >= 10 else {}
    out: list[_Topic] = []
    described: list[tuple[_Topic, str]] = []
    for want in request.topics or ():
        name = want.name
        if name is None:
            found = by_id.get(want.topic_id)
            if found is None:
                out.append(_error_topic(None, ErrorCode.UNKNOWN_TOPIC_ID, version, want.topic_id))
            elif not authorize(ctx, AclOperation.DESCRIBE, ResourceType.TOPIC, found.name):
                out.append(_error_topic(None, ErrorCode.TOPIC_AUTHORIZATION_FAILED, version, want.topic_id))
            else:
                out.append(_topic(image, live, found, version))
                described.append((out[-1], found.name))
            continue
        if not authorize(ctx, AclOperation.DESCRIBE, ResourceType.TOPIC, name):
            out.append(_error_topic(name, ErrorCode.TOPIC_AUTHORIZATION_FAILED, version))
            continue
        topic = image.topics.get(name)
        if topic is not None:
            out.append(_topic(image, live, topic, version))
        elif auto and not _may_create(ctx, name):
            out.append(_error_topic(name, ErrorCode.TOPIC_AUTHORIZATION_FAILED, version))
            out[-1].is_internal = name in INTERNAL_TOPICS
            continue
        elif validate_topic_name(name) is not None:
            out.append(_error_topic(name, ErrorCode.INVALID_TOPIC_EXCEPTION, version))
        elif auto:
            state.start_background(f"auto-create-topic:{name}", _auto_create(state, name))
            out.append(_error_topic(name, ErrorCode.LEADER_NOT_AVAILABLE, version))
        else:
            out.append(_error_topic(name, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, version))
        described.append((out[-1], name))
    return out, described


def _may_create(ctx: RequestContext, name: str) -> bool:
    """May the principal have the missing topic ``name`` auto-created (CREATE on the CLUSTER, or
    on the TOPIC)?"""
    return authorize(
        ctx, AclOperation.CREATE, ResourceType.CLUSTER, CLUSTER_NAME, log_if_denied=False
    ) or authorize(ctx, AclOperation.CREATE, ResourceType.TOPIC, name)


def error_response(
    request: m.MetadataRequest, version: int, code: ErrorCode, message: str
) -> m.MetadataResponse:
    """Every requested topic with ``code`` (no brokers: the client asks again)."""
    topics = [_error_topic(t.name, code, version, t.topic_id) for t in request.topics or []]
    return m.MetadataResponse(topics=topics)


HANDLER = ApiHandler(api_key=3, min_version=0, max_version=12, handle=handle, error_response=error_response)
