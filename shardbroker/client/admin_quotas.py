"""Client quotas from the admin client: DescribeClientQuotas and AlterClientQuotas (KIP-546).

An entity is a tuple of ``(type, name)`` pairs, type ``user`` or ``client-id``, name None for
Kafka's ``<default>`` (metadata/client_quotas.py's ``QuotaEntity``). Opens sockets (through the
cluster admin's connections).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from shardbroker.client.admin_cluster import ClusterAdmin
from shardbroker.client.connection import KafkaApiError
from shardbroker.metadata.client_quotas import QuotaEntity, entity_text
from shardbroker.protocol import messages as m

__all__ = ["QuotaAdmin"]

#: DescribeClientQuotas match types: a name, the default, any name.
MATCH_EXACT, MATCH_DEFAULT, MATCH_SPECIFIED = 0, 1, 2


class QuotaAdmin(ClusterAdmin):
    """DescribeClientQuotas, AlterClientQuotas."""

    def describe_client_quotas(
        self, components: Sequence[tuple[str, int, str | None]], strict: bool = False
    ) -> dict[QuotaEntity, dict[str, float]]:
        """The entities matching the filter ``(entity type, match type, match)`` with their
        quotas; raises KafkaApiError when the broker refuses the filter."""
        request = m.DescribeClientQuotasRequest(
            components=[
                m.DescribeClientQuotasRequest.ComponentData(entity_type=t, match_type=mt, match_=name)
                for t, mt, name in components
            ],
            strict=strict,
        )
        conn = self._any_conn()
        version = conn.version_for(request.API_KEY, "DescribeClientQuotas")
        response: m.DescribeClientQuotasResponse = conn.send(request, version)
        error = self._result_error(response.error_code, response.error_message, "DescribeClientQuotas")
        if error is not None:
            raise error
        return {
            tuple(sorted((e.entity_type, e.entity_name) for e in entry.entity)): {
                v.key: v.value for v in entry.values
            }
            for entry in response.entries or []
        }

    def alter_client_quotas(
        self, alterations: Mapping[QuotaEntity, Mapping[str, float | None]], validate_only: bool = False
    ) -> dict[QuotaEntity, KafkaApiError | None]:
        """Set (a value) or remove (None) quota keys of each entity; per entity None (done) or
        its error."""
        req = m.AlterClientQuotasRequest
        request = req(
            entries=[
                req.EntryData(
                    entity=[req.EntityData(entity_type=t, entity_name=n) for t, n in entity],
                    ops=[
                        req.OpData(key=k, value=0.0 if v is None else v, remove=v is None)
                        for k, v in ops.items()
                    ],
                )
                for entity, ops in alterations.items()
            ],
            validate_only=validate_only,
        )
        conn = self._any_conn()
        version = conn.version_for(request.API_KEY, "AlterClientQuotas")
        response: m.AlterClientQuotasResponse = conn.send(request, version)
        out: dict[QuotaEntity, KafkaApiError | None] = {}
        for entry in response.entries:
            entity = tuple(sorted((e.entity_type, e.entity_name) for e in entry.entity))
            out[entity] = self._result_error(entry.error_code, entry.error_message, entity_text(entity))
        return self._answered(list(alterations), out)
