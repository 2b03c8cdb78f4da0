"""Salted, iterated password hashes in Django's PBKDF2 text form, for ``metrics.basic.auth.users``.

``pbkdf2_sha256$<iterations>$<salt>$<base64 of the 32-byte PBKDF2-HMAC-SHA256 key>``: the config
file holds only this, never a password, so reading the file (a backup, a config repository) does
not give /metrics away. Why this form: the standard library has PBKDF2 (no bcrypt, which is what
Prometheus's own web config uses), and Django's text form is a widely known one that other tools
write too (Django's ``make_password``, passlib's ``django_pbkdf2_sha256``);
``shardbroker metrics-password`` writes it here.

``DEFAULT_ITERATIONS`` is OWASP's 2023 figure for PBKDF2-HMAC-SHA256, 600,000: one check takes
113 ms on the 2-core test VM (observability/metrics_security.py keeps it off the scrape path).
Fewer than ``MIN_ITERATIONS`` are refused. ``PasswordHash.parse`` refuses anything else with a
message that never repeats the text; ``verify`` compares in constant time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from typing import Final

__all__ = ["DEFAULT_ITERATIONS", "MAX_ITERATIONS", "MIN_ITERATIONS", "SCHEME", "PasswordHash"]

SCHEME: Final = "pbkdf2_sha256"
DEFAULT_ITERATIONS: Final = 600_000
MIN_ITERATIONS: Final = 10_000
MAX_ITERATIONS: Final = 10_000_000
_KEY_BYTES: Final = 32


@dataclass(frozen=True, slots=True)
class PasswordHash:
    """One parsed hash (the key is kept out of the repr)."""

    iterations: int
    salt: str
    key: bytes = field(repr=False)

    @classmethod
    def create(cls, password: bytes, iterations: int = DEFAULT_ITERATIONS) -> PasswordHash:
        """A new hash of ``password`` with a random salt (22 characters, 131 bits)."""
        salt = secrets.token_urlsafe(16)
        return cls(iterations, salt, _derive(password, salt, iterations))

    @classmethod
    def parse(cls, text: str) -> PasswordHash:
        """The hash in ``text``; ValueError saying what is wrong, without repeating ``text``."""
        parts = text.split("$")
        if len(parts) != 4 or parts[0] != SCHEME:
            raise ValueError(f"not a {SCHEME}$<iterations>$<salt>$<hash> password hash")
        _, count, salt, encoded = parts
        if not count.isdigit() or not MIN_ITERATIONS <= int(count) <= MAX_ITERATIONS:
            raise ValueError(f"iterations must be a number in [{MIN_ITERATIONS}, {MAX_ITERATIONS}]")
        if not salt:
            raise ValueError("empty salt")
        try:
            key = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if len(key) != _KEY_BYTES:
            raise ValueError(f"the hash is not the base64 of {_KEY_BYTES} bytes")
        return cls(int(count), salt, key)

    def verify(self, password: bytes) -> bool:
        """Whether ``password`` hashes to this (constant-time comparison)."""
        return hmac.compare_digest(_derive(password, self.salt, self.iterations), self.key)

    def text(self) -> str:
        return f"{SCHEME}${self.iterations}${self.salt}${base64.b64encode(self.key).decode()}"


def _derive(password: bytes, salt: str, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", password, salt.encode(), iterations, _KEY_BYTES)
