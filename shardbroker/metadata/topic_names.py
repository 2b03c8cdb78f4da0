"""Kafka's rules for topic names (Topic.java), and the internal topics: shared by the controller,
which refuses a bad name at creation, and the broker, which refuses it in Metadata and
DescribeConfigs before asking the controller."""

from __future__ import annotations

import re
from typing import Final

__all__ = ["INTERNAL_TOPICS", "MAX_TOPIC_NAME_LENGTH", "TOPIC_NAME_RE", "validate_topic_name"]

#: Kafka's Topic.java: legal characters and the maximum length (255 minus room for a partition
#: suffix and the ``.deleted`` markers in directory names).
TOPIC_NAME_RE: Final = re.compile(r"[a-zA-Z0-9._-]+")
MAX_TOPIC_NAME_LENGTH: Final = 249
INTERNAL_TOPICS: Final = frozenset({"__consumer_offsets", "__transaction_state"})


def validate_topic_name(name: object) -> str | None:
    """Kafka's Topic.validate: None if fine, else why not."""
    if not isinstance(name, str) or not name:
        return "Topic name is illegal, it can't be empty"
    if name in (".", ".."):
        return 'Topic name cannot be "." or ".."'
    if len(name) > MAX_TOPIC_NAME_LENGTH:
        return f"Topic name is illegal, it can't be longer than {MAX_TOPIC_NAME_LENGTH} characters"
    if not TOPIC_NAME_RE.fullmatch(name):
        return (
            f"Topic name {name!r} is illegal, it contains a character other than "
            "ASCII alphanumerics, '.', '_' and '-'"
        )
    return None
