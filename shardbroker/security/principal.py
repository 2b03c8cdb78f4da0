"""Who a connection is: Kafka's ``KafkaPrincipal`` (``User:alice``), the subject of every ACL.

A connection starts as ``User:ANONYMOUS`` (PLAINTEXT, SSL without a client certificate), becomes
the certificate's mapped subject on SSL with client auth, or the SASL authorization id once a
SASL exchange succeeded. Kafka compares principals by type and name, exactly (case-sensitive).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["ANONYMOUS", "USER_TYPE", "KafkaPrincipal"]

USER_TYPE: Final = "User"


@dataclass(frozen=True, slots=True)
class KafkaPrincipal:
    principal_type: str
    name: str

    def __str__(self) -> str:
        return f"{self.principal_type}:{self.name}"

    @classmethod
    def parse(cls, text: str) -> KafkaPrincipal:
        """``Type:name`` as in ACLs and ``super.users`` (Kafka's SecurityUtils.parseKafkaPrincipal)."""
        principal_type, sep, name = text.partition(":")
        if not sep or not principal_type or not name:
            raise ValueError(f"expected a principal in the form Type:name, got {text!r}")
        return cls(principal_type, name)

    @classmethod
    def user(cls, name: str) -> KafkaPrincipal:
        return cls(USER_TYPE, name)


ANONYMOUS: Final = KafkaPrincipal(USER_TYPE, "ANONYMOUS")
