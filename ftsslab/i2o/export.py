# SPDX-License-Identifier: GPL-2.0-or-later
"""A remote's disk as a block device for real clients (D1.10): blockproto requests from the
nbdkit plugin (``nbdkit_plugin``) become the client library's reads, writes and flushes on
one IOP's device, and their ``Done`` records become replies. Sans-IO: bytes per connection
in (``feed``), bytes per connection out (``take``); the node process owns the sockets.

Requests wait until the service connection is up and the host has advertised the device
(its capacity answers INFO). Offsets and lengths are the client's; one past the device's end
is EINVAL, a request the host answers with an error is EIO.
"""

from __future__ import annotations

import errno
from collections import defaultdict
from dataclasses import dataclass, field

from .blockproto import Decoder, Malformed, Op, Reply, Request, encode
from .client import Done
from .frames import FIRST_DEVICE_TID
from .nodes import I2oRemoteCore


@dataclass
class _Conn:
    decoder: Decoder = field(default_factory=lambda: Decoder(Request))
    waiting: list[Request] = field(default_factory=list)  # until the device is known
    closed: bool = False


class BlockExport:
    def __init__(self, core: I2oRemoteCore, iop: str, device: int) -> None:
        self.core, self.iop, self.device = core, iop, device
        self._conns: dict[int, _Conn] = {}
        self._out: dict[int, bytearray] = defaultdict(bytearray)
        self.counters = {"requests": 0, "errors": 0, "malformed": 0}

    def open(self, conn: int) -> None:
        self._conns[conn] = _Conn()

    def close(self, conn: int) -> None:
        self._conns.pop(conn, None)
        self._out.pop(conn, None)

    def _geometry(self) -> tuple[int, int] | None:
        c = self.core.client
        conn = c.connections.get(self.iop)
        if conn is None:
            return None
        for d in c.advertised.iops.get(conn.iop_id, ()):
            if d["tid"] == FIRST_DEVICE_TID + self.device:
                return d["capacity"], d["block_size"]
        return None

    def feed(self, conn: int, data: bytes) -> bool:
        """Bytes from a client; False if its stream is broken (close it)."""
        state = self._conns[conn]
        for record in state.decoder.feed(data):
            if isinstance(record, Malformed):
                self.counters["malformed"] += 1
                state.closed = True
                return False
            state.waiting.append(record)
        self.pump()
        return True

    def pump(self) -> None:
        """Submit what waits, once the device is known (call after the core moved)."""
        geometry = self._geometry()
        if geometry is None:
            return
        for conn, state in self._conns.items():
            waiting, state.waiting = state.waiting, []
            for r in waiting:
                self._submit(conn, r, *geometry)

    def _submit(self, conn: int, r: Request, size: int, block_size: int) -> None:
        self.counters["requests"] += 1
        if r.op == Op.INFO:
            self._reply(conn, Reply.info(r.handle, size, block_size))
            return
        if r.offset + r.length > size:
            self._reply(conn, Reply.error(r, errno.EINVAL))
            return
        c = self.core.client
        if r.op == Op.READ:
            op_id = c.read(self.iop, self.device, r.offset, r.length)
        elif r.op == Op.WRITE:
            op_id = c.write(self.iop, self.device, r.offset, r.data)
        else:
            op_id = c.flush(self.iop, self.device)
        self.core.on_done[op_id] = lambda d, conn=conn, r=r: self._done(conn, r, d)

    def _done(self, conn: int, r: Request, d: Done) -> None:
        if d.req_status != 0:
            self.counters["errors"] += 1
            self._reply(conn, Reply.error(r, errno.EIO))
        else:
            self._reply(conn, Reply.to(r, d.data if r.op == Op.READ else b""))

    def _reply(self, conn: int, reply: Reply) -> None:
        if conn in self._conns:
            self._out[conn] += encode(reply)

    def take(self) -> dict[int, bytes]:
        out = {c: bytes(b) for c, b in self._out.items() if b}
        self._out.clear()
        return out
