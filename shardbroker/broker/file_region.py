"""A byte range of an open file, as a ``records`` value in a response: sent without copying.

A Fetch handler puts ``FileRegion(info.fd, info.position, info.length)`` (from the partition
log's ``FetchDataInfo``) into a response's ``records`` field. ``codec.encode_parts`` only needs
``len()`` and leaves the object as its own part; the connection (``broker/connection.py``) then
sends it with ``os.sendfile`` straight from the page cache to the socket when the transport has
nothing buffered, and otherwise (or for what sendfile could not send at once) reads it with
``os.pread`` and writes the bytes through the transport. The numbers are in connection.py.

The file descriptor belongs to the log: it must stay open until the response is sent, which the
log guarantees for ``file.delete.delay.ms`` after a segment is deleted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["FileRegion"]


@dataclass(frozen=True, slots=True)
class FileRegion:
    fd: int
    position: int
    length: int

    def __post_init__(self) -> None:
        if self.position < 0 or self.length < 0:
            raise ValueError(f"bad file region: position {self.position}, length {self.length}")

    def __len__(self) -> int:
        return self.length

    def read(self) -> bytes:
        """The bytes themselves, for transports that cannot sendfile and for tests.

        Raises OSError if the file is shorter than the region (truncated under us): the bytes of a
        response are counted in its size prefix before they are sent, so a short region cannot be
        sent and the connection must be closed.
        """
        data = os.pread(self.fd, self.length, self.position) if self.length else b""
        if len(data) != self.length:
            raise OSError(f"file region of {self.length} bytes at {self.position}: only {len(data)} readable")
        return data
