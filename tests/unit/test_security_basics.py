"""Principals and SCRAM credentials (security/principal.py, security/scram_credential.py)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest

from shardbroker.metadata.image import MetadataImage
from shardbroker.security.principal import ANONYMOUS, KafkaPrincipal
from shardbroker.security.scram_credential import ScramMechanism, derive_credential


def test_principal_parse_and_text() -> None:
    assert KafkaPrincipal.parse("User:alice") == KafkaPrincipal.user("alice")
    assert str(KafkaPrincipal.parse("User:CN=a,O=b")) == "User:CN=a,O=b"  # only the first ':' splits
    assert str(ANONYMOUS) == "User:ANONYMOUS"
    for bad in ("alice", ":alice", "User:"):
        with pytest.raises(ValueError, match="Type:name"):
            KafkaPrincipal.parse(bad)


def test_credential_matches_rfc7677_example() -> None:
    """RFC 7677 section 3: user "user", password "pencil": the stored keys verify its proof and
    produce its server signature."""
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    cred = derive_credential(ScramMechanism.SCRAM_SHA_256, b"pencil", 4096, salt)
    auth_message = (
        b"n=user,r=rOprNGfwEbeRWgbNEkqO,"
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,"
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
    )
    proof = base64.b64decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    client_signature = hmac.digest(cred.stored_key, auth_message, "sha256")
    client_key = bytes(a ^ b for a, b in zip(proof, client_signature, strict=True))
    assert hashlib.sha256(client_key).digest() == cred.stored_key
    server_signature = hmac.digest(cred.server_key, auth_message, "sha256")
    assert base64.b64encode(server_signature) == b"6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


def test_mechanism_names() -> None:
    assert ScramMechanism.from_mechanism_name("SCRAM-SHA-512") is ScramMechanism.SCRAM_SHA_512
    assert ScramMechanism.SCRAM_SHA_256.mechanism_name == "SCRAM-SHA-256"
    assert int(ScramMechanism.SCRAM_SHA_512) == 2  # KIP-554's wire value
    with pytest.raises(ValueError, match="unknown SCRAM mechanism"):
        ScramMechanism.from_mechanism_name("SCRAM-SHA-1")
    fresh = derive_credential(ScramMechanism.SCRAM_SHA_512, b"pw", 4096)
    assert len(fresh.salt) == 32 and fresh != derive_credential(ScramMechanism.SCRAM_SHA_512, b"pw", 4096)


def test_image_carries_scram_credentials_through_its_json_form() -> None:

    cred = derive_credential(ScramMechanism.SCRAM_SHA_256, b"pw", 4096, b"salt")
    image = MetadataImage(1, "c", 0, (), {}, {"alice": {ScramMechanism.SCRAM_SHA_256: cred}})
    back = MetadataImage.from_dict(json.loads(json.dumps(image.to_dict())))
    assert back.scram_credential("alice", ScramMechanism.SCRAM_SHA_256) == cred
    assert back.scram_credential("alice", ScramMechanism.SCRAM_SHA_512) is None
    assert back.scram_credential("bob", ScramMechanism.SCRAM_SHA_256) is None


def test_credential_repr_hides_the_keys() -> None:
    cred = derive_credential(ScramMechanism.SCRAM_SHA_256, b"pw", 4096, b"salty")
    assert "salty" not in repr(cred) and cred.stored_key.hex() not in repr(cred)
    assert "SCRAM_SHA_256" in repr(cred) and "4096" in repr(cred)
