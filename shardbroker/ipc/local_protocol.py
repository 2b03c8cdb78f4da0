"""The local-client protocol: the attach handshake and the frames on a client's rings.

Pure encoding; the sockets and rings that carry it are opened by ``client/local_*.py`` (client
side) and ``broker/local_clients.py`` (worker side).

Attach. A client connects to the owning worker's ``SOCK_SEQPACKET`` socket
(``local_directory.worker_socket_address``) and sends one JSON message; the worker answers one
(``{"ok": true}`` or ``{"ok": false, "error": why}``) and from then on the open connection only
says the client is alive: EOF (the process exited or was killed) makes the worker detach and
unlink the client's rings. The client creates its rings itself (named ``lc<pid>-<n>-...``, owner
= the client, so ``shm.reclaim_stale`` at the next broker start also removes what a SIGKILLed
client and worker left)::

    {"op": "produce", "requests": RING, "acks": RING}       request ring client->worker, acks back
    {"op": "watch", "ring": RING, "topic": T, "partition": P}  wake-ups worker->client

Request frame (one record batch, little-endian header, 16 bytes)::

    0  u64 batch id       chosen by the client, echoed in the ack
    8  i32 partition
    12 u16 topic length   UTF-8 bytes of the topic name follow the header
    14 i8  acks           0: no ack; 1: after the write; -1: also after a flush the topic's
                          flush policy asks for (acks=all, LogFlusher.wait_durable)
    15 u8  flags          0 for a producer's batch; FLAG_TXN_MARKER (1): the batch is a
                          transaction marker (control batch) of the transaction coordinator,
                          taken only from a sibling worker (broker/txn_markers.py);
                          with FLAG_TXN_MARKER_V2 (2) too: of a transactions-v2 transaction
                          (KIP-890 part 2: the log checks its epoch with v2's rules);
                          FLAG_TXN_VERIFY (4): not a batch but a question to the transaction
                          coordinator's worker, is this partition in the transaction
                          (broker/txn_verification.py); the ack's error code answers it
    16 topic name, padded with zeros to a multiple of 8
    .. the record batch (magic v2), exactly as it will be stored; base offset 0

Ack frame: any number of 32-byte entries ``u64 batch id | i64 base offset | i64 log-append time
(ms; -1 unless the topic's message.timestamp.type is LogAppendTime) | i32 Kafka error code | i32
reserved``, one frame per drain of the request ring.

Wake-up frame (watch): an 8-byte ``i64`` high watermark, written after the owner published a new
one; the consumer reads the watermark itself from shared memory, the frame only wakes it (and a
full wake ring is simply not written to: its reader is awake).
"""

from __future__ import annotations

import json
import struct
from typing import Any, Final

__all__ = [
    "ACK",
    "FLAG_TXN_MARKER",
    "FLAG_TXN_MARKER_V2",
    "FLAG_TXN_VERIFY",
    "REQUEST_HEADER",
    "WAKE",
    "LocalProtocolError",
    "decode_message",
    "encode_message",
    "pack_request_header",
    "request_header_size",
]

REQUEST_HEADER: Final = struct.Struct("<QiHbB")
ACK: Final = struct.Struct("<Qqqii")
WAKE: Final = struct.Struct("<q")
#: Request frame flag: a transaction marker written for the transaction coordinator.
FLAG_TXN_MARKER: Final = 1
#: With FLAG_TXN_MARKER: the marker ends a transaction of transactions v2 (KIP-890 part 2).
FLAG_TXN_MARKER_V2: Final = 2
#: A transaction verification (KIP-890 part 1) for the coordinator's worker, from a sibling.
FLAG_TXN_VERIFY: Final = 4
#: Largest handshake message (a JSON object of a few names).
MAX_MESSAGE: Final = 4096


class LocalProtocolError(ValueError):
    """A handshake message or frame that this protocol does not allow; the message says why."""


def request_header_size(topic: bytes) -> int:
    """Bytes before the batch in a request frame for this (UTF-8) topic name."""
    return REQUEST_HEADER.size + (len(topic) + 7) // 8 * 8


def pack_request_header(
    buf: memoryview, batch_id: int, partition: int, topic: bytes, acks: int, flags: int = 0
) -> int:
    """Write a request frame's header into ``buf``; returns where the batch goes."""
    REQUEST_HEADER.pack_into(buf, 0, batch_id, partition, len(topic), acks, flags)
    end = request_header_size(topic)
    buf[REQUEST_HEADER.size : REQUEST_HEADER.size + len(topic)] = topic
    buf[REQUEST_HEADER.size + len(topic) : end] = bytes(end - REQUEST_HEADER.size - len(topic))
    return end


def encode_message(message: dict[str, Any]) -> bytes:
    raw = json.dumps(message, separators=(",", ":")).encode()
    if len(raw) > MAX_MESSAGE:
        raise LocalProtocolError(f"a {len(raw)}-byte handshake message is over {MAX_MESSAGE}")
    return raw


def decode_message(raw: bytes) -> dict[str, Any]:
    try:
        message = json.loads(raw)
    except ValueError as exc:
        raise LocalProtocolError(f"not a JSON handshake message: {exc}") from None
    if not isinstance(message, dict):
        raise LocalProtocolError("a handshake message must be a JSON object")
    return message
