# SPDX-License-Identifier: GPL-2.0-or-later
"""Moving a partial upload with its connection (check 5, D2.5).

The first bytes of a PUT body live in the first device's upload file; the TCH state
carries only the connection. Before the freeze (the connection is only flow-controlled
then: the device stopped reading, so the client just waits, nothing is lost), the first
device copies those bytes to the second device over a plain kernel TCP connection between
their own addresses, port ``PORT`` (an internal port: clients cannot reach device
addresses). The second device stages them as an open upload, keyed by the client's
connection and the path; when the connection arrives by TCH its resumed HTTP core goes
on writing at the offset it was exported at.

One message per partial upload, then one byte back when it is on the second device's disk:

    "FTUP" | client IPv4 (4) | client port (2) | path length (2) | path | data length (8) | data
    <- "K"
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field

PORT = 4495
MAGIC = b"FTUP"
_HEAD = struct.Struct(">4s4sHH")
_LEN = struct.Struct(">Q")
MAX_PATH = 4096
STAGED_FOR = 30.0  # seconds a staged upload waits for its connection


def message(client: tuple[str, int], path: str, data: bytes) -> bytes:
    raw = path.encode()
    return (_HEAD.pack(MAGIC, socket.inet_aton(client[0]), client[1], len(raw)) + raw
            + _LEN.pack(len(data)) + data)


@dataclass
class Incoming:
    """A message being received; ``parse`` says when it is whole."""

    buf: bytearray = field(default_factory=bytearray)

    def parse(self) -> tuple[tuple[str, int], str, bytes] | None | bool:
        """(client, path, data) when whole, None while short, False when it is not one."""
        if len(self.buf) < _HEAD.size:
            return None
        magic, ip, port, n = _HEAD.unpack_from(self.buf)
        if magic != MAGIC or n > MAX_PATH:
            return False
        at = _HEAD.size + n
        if len(self.buf) < at + _LEN.size:
            return None
        (size,) = _LEN.unpack_from(self.buf, at)
        start = at + _LEN.size
        if len(self.buf) < start + size:
            return None
        try:
            path = bytes(self.buf[_HEAD.size:at]).decode()
        except UnicodeDecodeError:
            return False
        return (socket.inet_ntoa(ip), port), path, bytes(self.buf[start:start + size])
