"""The synchronous Kafka admin client over TCP (Kafka's Admin API on our sans-IO codec), for the
operator CLI, the TCP producer and consumer (their view of the cluster) and tests.

:class:`AdminClient` is its API families mixed over one ``ClusterAdmin`` (admin_cluster.py:
connections, Metadata, routing to the controller or a group's coordinator, retries):
:class:`TopicAdmin` (admin_topics.py: CreateTopics, DeleteTopics, DescribeConfigs,
IncrementalAlterConfigs), :class:`PartitionAdmin` (admin_partitions.py: CreatePartitions,
ListOffsets, Alter/ListPartitionReassignments), :class:`GroupAdmin` (admin_groups.py:
ListGroups, DescribeGroups, OffsetFetch, OffsetCommit, DeleteGroups), :class:`UserAdmin`
(admin_users.py: Describe/AlterUserScramCredentials), :class:`AclAdmin` (admin_acls.py:
Create/Describe/DeleteAcls), :class:`TransactionAdmin` (admin_transactions.py: List/Describe
Transactions, DescribeProducers, abort), :class:`OperationsAdmin` (admin_operations.py:
Describe/AlterReplicaLogDirs, DescribeTopicPartitions, ElectLeaders, features).
Mixins, not composed objects: callers keep one flat object with Kafka's method set, and the
families share the connections without forwarding methods.
"""

from __future__ import annotations

from shardbroker.client.admin_acls import AclAdmin
from shardbroker.client.admin_groups import GroupAdmin
from shardbroker.client.admin_operations import OperationsAdmin
from shardbroker.client.admin_partitions import PartitionAdmin
from shardbroker.client.admin_quotas import QuotaAdmin
from shardbroker.client.admin_topics import TopicAdmin
from shardbroker.client.admin_transactions import TransactionAdmin
from shardbroker.client.admin_users import UserAdmin

__all__ = ["AdminClient"]


class AdminClient(
    TopicAdmin, PartitionAdmin, GroupAdmin, UserAdmin, AclAdmin, TransactionAdmin, OperationsAdmin, QuotaAdmin
):
    """Synchronous admin client. ``timeout`` (seconds) bounds each connect and each response, and
    the total time spent retrying retriable controller and coordinator errors; ``security``
    (client/client_security.py) makes every connection use TLS and/or SASL."""
