"""Control messages between the controller (in the supervisor) and the workers.

They travel as ring frames (``ring.py``), one JSON object per frame. JSON because control
traffic is rare (admin operations, metadata pushes, producer-id blocks) and must stay readable
in a debugger; record batches never go through here.

Controller -> worker:
    ``MetadataPush``   a whole new metadata image (see ``metadata/image.py``).
    ``ControlReply``   the answer to one ``ControlRequest`` of that worker.
Worker -> controller:
    ``ControlRequest`` an admin operation (``op`` names it, ``args`` carries it), answered by a
                       ``ControlReply`` with the same ``request_id`` once every live worker has
                       applied the resulting metadata.
    ``MetadataApplied`` the image version the worker now serves.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


class ControlMessageError(ValueError):
    """A frame that is not a control message: a bug or a corrupt ring, never client input."""


@dataclass(frozen=True, slots=True)
class MetadataPush:
    image: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ControlRequest:
    request_id: int
    op: str
    args: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ControlReply:
    request_id: int
    result: dict[str, Any]


@dataclass(frozen=True, slots=True)
class MetadataApplied:
    version: int


ControlMessage = MetadataPush | ControlRequest | ControlReply | MetadataApplied


def encode_control(message: ControlMessage) -> bytes:
    match message:
        case MetadataPush(image):
            body: dict[str, Any] = {"kind": "metadata", "image": image}
        case ControlRequest(request_id, op, args):
            body = {"kind": "request", "request_id": request_id, "op": op, "args": args}
        case ControlReply(request_id, result):
            body = {"kind": "reply", "request_id": request_id, "result": result}
        case MetadataApplied(version):
            body = {"kind": "applied", "version": version}
    return json.dumps(body, separators=(",", ":")).encode()


def decode_control(frame: bytes | bytearray | memoryview) -> ControlMessage:
    try:
        body = json.loads(bytes(frame))
        kind = body["kind"]
        if kind == "metadata":
            return MetadataPush(dict(body["image"]))
        if kind == "request":
            return ControlRequest(int(body["request_id"]), str(body["op"]), dict(body["args"]))
        if kind == "reply":
            return ControlReply(int(body["request_id"]), dict(body["result"]))
        if kind == "applied":
            return MetadataApplied(int(body["version"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise ControlMessageError(f"not a control message: {exc}") from exc
    raise ControlMessageError(f"unknown control message kind {kind!r}")
