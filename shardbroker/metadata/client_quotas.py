"""Client quotas as the metadata image holds them, and DescribeClientQuotas' filter (Kafka's
ClientQuotasImage), pure.

An entity is a user, a client id, or a (user, client id) pair, each name a string or None for
Kafka's ``<default>``, kept as a tuple of ``(type, name)`` sorted by type, so one entity has one
key however a request orders it. Each entity holds ``key -> value`` for Kafka's four user/client
keys (``QUOTA_KEYS``). The records that change them: control/quota_control.py; enforcement:
broker/client_quota_manager.py.

Describe follows Kafka's KRaft brokers, errors and messages included: an empty or repeated
entity type and a match string where the match type takes none (or none where EXACT needs one)
are INVALID_REQUEST; an unknown entity type or match type UNSUPPORTED_VERSION; ``ip`` may not be
combined with ``user`` or ``client-id``. SPECIFIED matches any entity with that type, the default
included (as KRaft); ``strict`` leaves out entities with types the filter does not name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from shardbroker.protocol.errors import ErrorCode

__all__ = [
    "CLIENT_ID",
    "CONSUMER_BYTE_RATE",
    "CONTROLLER_MUTATION_RATE",
    "IP",
    "PRODUCER_BYTE_RATE",
    "QUOTA_KEYS",
    "REQUEST_PERCENTAGE",
    "USER",
    "ClientQuotas",
    "DescribeError",
    "QuotaEntity",
    "describe_client_quotas",
    "entity_text",
]

USER: Final = "user"
CLIENT_ID: Final = "client-id"
IP: Final = "ip"

PRODUCER_BYTE_RATE: Final = "producer_byte_rate"
CONSUMER_BYTE_RATE: Final = "consumer_byte_rate"
REQUEST_PERCENTAGE: Final = "request_percentage"
CONTROLLER_MUTATION_RATE: Final = "controller_mutation_rate"
#: Kafka's user/client quota keys, and whether each is a LONG (else a DOUBLE), as QuotaConfig.
QUOTA_KEYS: Final[Mapping[str, bool]] = {
    PRODUCER_BYTE_RATE: True,
    CONSUMER_BYTE_RATE: True,
    REQUEST_PERCENTAGE: False,
    CONTROLLER_MUTATION_RATE: False,
}

# DescribeClientQuotas match types.
MATCH_EXACT: Final = 0
MATCH_DEFAULT: Final = 1
MATCH_SPECIFIED: Final = 2

#: ``((type, name or None for <default>), ...)`` sorted by type.
QuotaEntity = tuple[tuple[str, str | None], ...]
#: entity -> key -> value, as in `MetadataImage.client_quotas`.
ClientQuotas = Mapping[QuotaEntity, Mapping[str, float]]


def entity_text(entity: QuotaEntity) -> str:
    """``{client-id=x, user=<default>}``: how messages and the CLI name an entity."""
    return "{" + ", ".join(f"{t}={'<default>' if n is None else n}" for t, n in entity) + "}"


class DescribeError(ValueError):
    """A filter Kafka refuses as a whole: ``code`` and the message answer the request."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def describe_client_quotas(
    quotas: ClientQuotas, components: Sequence[tuple[str, int, str | None]], strict: bool
) -> list[tuple[QuotaEntity, Mapping[str, float]]]:
    """The entities matching ``components`` ((entity type, match type, match)), as Kafka's
    ClientQuotasImage.describe, in entity order; raises DescribeError for a bad filter."""
    exact: dict[str, str | None] = {}
    specified: set[str] = set()
    for kind, match_type, match in components:
        if not kind:
            raise DescribeError(ErrorCode.INVALID_REQUEST, "Invalid empty entity type.")
        if kind in exact or kind in specified:
            raise DescribeError(
                ErrorCode.INVALID_REQUEST, f"Entity type {kind} cannot appear more than once in the filter."
            )
        if kind not in (USER, CLIENT_ID, IP):
            raise DescribeError(ErrorCode.UNSUPPORTED_VERSION, f"Unsupported entity type {kind}")
        if match_type == MATCH_EXACT:
            if match is None:
                raise DescribeError(
                    ErrorCode.INVALID_REQUEST,
                    "Request specified MATCH_TYPE_EXACT, but set match string to null.",
                )
            exact[kind] = match
        elif match_type in (MATCH_DEFAULT, MATCH_SPECIFIED):
            if match is not None:
                name = "MATCH_TYPE_DEFAULT" if match_type == MATCH_DEFAULT else "MATCH_TYPE_SPECIFIED"
                raise DescribeError(
                    ErrorCode.INVALID_REQUEST, f"Request specified {name}, but also specified a match string."
                )
            if match_type == MATCH_DEFAULT:
                exact[kind] = None
            else:
                specified.add(kind)
        else:
            raise DescribeError(ErrorCode.UNSUPPORTED_VERSION, f"Unknown match type {match_type}")
    kinds = {*exact, *specified}
    if IP in kinds and kinds & {USER, CLIENT_ID}:
        raise DescribeError(
            ErrorCode.INVALID_REQUEST,
            "Invalid entity filter component combination. IP filter component should not be used "
            "with user or clientId filter component.",
        )
    out = []
    for entity, values in sorted(quotas.items(), key=lambda kv: entity_text(kv[0])):
        names = dict(entity)
        if strict and len(names) != len(kinds):
            continue
        if all(k in names and names[k] == v for k, v in exact.items()) and specified <= names.keys():
            out.append((entity, values))
    return out
