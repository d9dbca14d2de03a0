# SPDX-License-Identifier: GPL-2.0-or-later
"""The remote's client library (D1.10): a host's exported disks as block devices -- read and
write at byte offsets -- over I2O BSA frames on the service connections, the data moved by the
host under this node's RKeys. An application of the remote's ``SanicCore``, sans-IO: calls
and the SAN's completions in, ``Done`` records out (``done``), the clock in the core.

A request is at most ``MAX_TRANSFER`` bytes in one I/O slot of this node's memory; larger
I/O is cut into requests and completes when all have. ``DEPTH`` requests are outstanding at
most, the rest wait for a slot. A request's InitiatorContext is its slot number and its
TransactionContext the connection's request count -- the same values on every remote doing
the same work, on purpose (check 7): the host's context swap keeps them apart, and a reply
whose contexts name no outstanding request of this connection is counted as a misroute.

Keys: one key over all the I/O slots (``region``, REMOTE_READ|REMOTE_WRITE), or per request
a fresh one-shot binding of the slot's own key (``oneshot``); ``spent`` names the last
one-shot binding again -- its key and its buffer, without binding it again -- and ``forged``
sends a key value nobody bound (check 13). A reply
with BSA ACCESS_ERROR whose data QP is in ERROR resets and reconnects the data QP (the host
resets its end before it replies).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from ftsslab.fast import i2o as fast
from ftsslab.san.node import APP_WR, SanicCore
from ftsslab.san.qp import QpState, Wc
from ftsslab.san.rkeys import Access
from ftsslab.san.verbs import SGE, SendWR, WrOpcode

from .frames import BSA_DSC_ACCESS_ERROR, BSA_WRITE_THRU, FIRST_DEVICE_TID
from .san_layout import MAX_TRANSFER, Layout

KEY_MODES = ("region", "oneshot", "spent", "forged")
FAILED = 0xFF  # a Done's req_status when the reply was a FAIL-flag frame (no status word)
ABANDONED = 0xFE  # ... when the connection was closed with it outstanding
RW = Access.REMOTE_READ | Access.REMOTE_WRITE


class Done(NamedTuple):
    """An operation completed: its I2O status (0 SUCCESS), and for a read the bytes."""

    op_id: int
    kind: str  # "read", "write", "flush"
    req_status: int
    detailed_status: int
    data: bytes
    started: float
    finished: float


class Connection(NamedTuple):
    iop: str
    iop_id: int
    msg: str
    data: str
    conn_id: int


@dataclass(eq=False)
class _Op:
    op_id: int
    kind: str
    started: float
    parts: int
    data: bytearray
    req_status: int = 0
    detailed_status: int = 0


@dataclass(eq=False)
class _Request:
    op: _Op
    conn: Connection
    function: int
    tid: int
    offset: int
    length: int
    at: int  # where in the op's data
    key: str
    write_through: bool
    payload: bytes = b""
    slot: int = -1
    tctx: int = 0


@dataclass
class Advertised:
    host: str = ""
    iops: dict[int, list[dict]] = field(default_factory=dict)  # iop id -> its devices
    count: int = 0  # advertisements received


class RemoteClient:
    def __init__(self, san: SanicCore, layout: Layout, iops: dict[str, int], *,
                 process: str, on_cm: Callable[[dict], None]) -> None:
        self.san, self.layout, self.process = san, layout, process
        self._iop_names = iops  # IOP name -> id (the scenario's names, the host's numbers)
        self._on_cm = on_cm  # what the management channel said (the node logs it)
        self.qps = frozenset(q for q, (_, _, messages) in layout.qps.items() if messages)
        self.connections: dict[str, Connection] = {}
        self.advertised = Advertised()
        self.done: list[Done] = []
        self._pending_cm: dict[int, dict] = {}  # TransactionContext -> the request
        self._cm_seq = 0
        self._helloed = False
        self._free = deque(range(layout.slots))
        self._queue: deque[_Request] = deque()
        self._outstanding: dict[tuple[str, int], _Request] = {}  # (msg QP, slot) -> request
        self._tctx: dict[str, int] = {}
        self._ops = 0
        pd = san.pds[process]
        self._pd = pd
        self.region_key = pd.allocate_rkey()
        pd.bind_rkey(self.region_key, layout.data, layout.slots * MAX_TRANSFER, RW)
        self._slot_keys = [pd.allocate_rkey() for _ in range(layout.slots)]
        self._last_oneshot = (layout.data, self._slot_keys[0])  # (unbound until one is made)
        self.counters = {"requests": 0, "replies": 0, "misroutes": 0, "errors": 0,
                         "data_qp_resets": 0, "malformed": 0}

    # ---- the management channel --------------------------------------------------------
    def hello(self) -> None:
        self._helloed = True
        self._cm(fast.CM_HELLO, {"name": self.san.name})

    def connect(self, iop: str) -> None:
        if not self._helloed:
            self.hello()
        self._cm(fast.CM_CONNECT, {"iop_id": self._iop_names[iop]}, iop=iop)

    def disconnect(self, iop: str) -> None:
        conn = self.connections.get(iop)
        self._cm(fast.CM_DISCONNECT, {"conn_id": conn.conn_id if conn else 0}, iop=iop)

    def _cm(self, xfunction: int, fields: dict, **note) -> None:
        self._cm_seq += 1
        self._pending_cm[self._cm_seq] = {"xfunction": xfunction, **fields, **note}
        self._send("cm", fast.build_cm(xfunction, fields, transaction_context=self._cm_seq))

    def _management(self, data: bytes) -> None:
        msg = fast.parse_cm(data)
        if msg is None:
            self.counters["malformed"] += 1
            return
        if msg["xfunction"] == fast.CM_ADVERTISE and not msg["reply"]:
            self.advertised = Advertised(msg["host"], {i["iop_id"]: i["devices"]
                                                       for i in msg["iops"]},
                                         self.advertised.count + 1)
            self._on_cm({"kind": "advertised", **msg})
            return
        asked = self._pending_cm.pop(msg["transaction_context"], None)
        if asked is None or not msg["reply"] or asked["xfunction"] != msg["xfunction"]:
            self.counters["malformed"] += 1
            return
        iop = asked.get("iop", "")
        if msg["xfunction"] == fast.CM_CONNECT and msg["status"] == fast.CM_OK:
            self.connections[iop] = Connection(iop, asked["iop_id"], f"{iop}_msg",
                                               f"{iop}_data", msg["conn_id"])
            if self.san.qps[f"{iop}_data"].state is QpState.ERROR:
                self._reset_data(f"{iop}_data")
        if msg["xfunction"] == fast.CM_DISCONNECT and msg["status"] == fast.CM_OK and \
                iop in self.connections:
            self._abandon(self.connections.pop(iop))
        self._on_cm({"kind": "cm_reply", "iop": iop, **msg})

    def _abandon(self, conn: Connection) -> None:
        """The connection is gone: what it still owed fails (its late replies are strays)."""
        mine = [r for r in (*self._outstanding.values(), *self._queue) if r.conn is conn]
        self._queue = deque(r for r in self._queue if r.conn is not conn)
        for r in mine:
            if self._outstanding.get((r.conn.msg, r.slot)) is r:
                del self._outstanding[(r.conn.msg, r.slot)]
                self._free.append(r.slot)
            self._answered(r, ABANDONED, 0, b"")
        self._pump()

    # ---- block I/O ---------------------------------------------------------------------
    def read(self, iop: str, device: int, offset: int, length: int, *,
             key: str = "region") -> int:
        return self._submit(iop, fast.I2O_BSA_BLOCK_READ, device, offset, length, b"", key,
                            False)

    def write(self, iop: str, device: int, offset: int, data: bytes, *, key: str = "region",
              write_through: bool = False) -> int:
        return self._submit(iop, fast.I2O_BSA_BLOCK_WRITE, device, offset, len(data), data,
                            key, write_through)

    def flush(self, iop: str, device: int) -> int:
        return self._submit(iop, fast.I2O_BSA_CACHE_FLUSH, device, 0, 0, b"", "region", False)

    def _submit(self, iop: str, function: int, device: int, offset: int, length: int,
                payload: bytes, key: str, write_through: bool) -> int:
        """Queue an operation, cut into requests; its ``Done`` comes when all are answered.
        KeyError: no connection to ``iop``."""
        conn = self.connections[iop]
        self._ops += 1
        kind = {fast.I2O_BSA_BLOCK_READ: "read", fast.I2O_BSA_BLOCK_WRITE: "write"}.get(
            function, "flush")
        pieces = range(0, length, MAX_TRANSFER) if length else range(1)
        op = _Op(self._ops, kind, self.san.now, len(pieces),
                 bytearray(length if kind == "read" else 0))
        for at in pieces:
            n = min(MAX_TRANSFER, length - at)
            self._queue.append(_Request(op, conn, function, FIRST_DEVICE_TID + device,
                                        offset + at, n, at, key, write_through,
                                        payload[at:at + n]))
        self._pump()
        return op.op_id

    def _pump(self) -> None:
        while self._queue and self._free:
            r = self._queue.popleft()
            r.slot = self._free.popleft()
            self._tctx[r.conn.msg] = r.tctx = (self._tctx.get(r.conn.msg, 0) + 1) & 0xFFFFFFFF
            self._outstanding[(r.conn.msg, r.slot)] = r
            self.counters["requests"] += 1
            self._send(r.conn.msg, self._frame(r))

    def _frame(self, r: _Request) -> bytes:
        header = {"target_tid": r.tid, "initiator_context": r.slot,
                  "transaction_context": r.tctx}
        if r.function == fast.I2O_BSA_CACHE_FLUSH:
            return fast.build_i2o(fast.I2O_BSA_CACHE_FLUSH, b"\x00\x00\x01\x00", **header)
        ea = self.layout.slot(r.slot)
        if r.payload:
            self.san.store(self.process, ea, r.payload)
        va, key = self._remote(r, ea)
        return fast.build_block_rw(
            r.function, [fast.sge_remote(r.length, va, key)], r.offset,
            control_flags=BSA_WRITE_THRU if r.write_through else 0, **header)

    def _remote(self, r: _Request, ea: int) -> tuple[int, int]:
        """The buffer and key the request names for its data."""
        if r.key == "region":
            return ea, self.region_key
        if r.key == "forged":
            return ea, self.region_key ^ 0x5A5A0000
        if r.key == "spent":
            return self._last_oneshot
        key = self._slot_keys[r.slot]
        self._pd.bind_rkey(key, ea, r.length, RW | Access.ONE_SHOT)
        self._last_oneshot = (ea, key)
        return ea, key

    # ---- san.node.App ------------------------------------------------------------------
    def received(self, qp: str, data: bytes) -> None:
        if qp == "cm":
            self._management(data)
            return
        out = fast.parse_i2o(data)
        if out is None or not out["msg_flags"] & fast.MSG_REPLY:
            self.counters["malformed"] += 1
            return
        r = self._outstanding.get((qp, out["initiator_context"]))
        if r is None or r.tctx != out["transaction_context"]:
            self.counters["misroutes"] += 1
            return
        self.counters["replies"] += 1
        if out["msg_flags"] & fast.MSG_MULTI_TRANS and not out["msg_flags"] & fast.MSG_FINAL:
            return
        del self._outstanding[(qp, r.slot)]
        status = FAILED if out["msg_flags"] & fast.MSG_FAIL else out.get("req_status", FAILED)
        dsc = out.get("detailed_status", 0)
        if status != 0 and dsc == BSA_DSC_ACCESS_ERROR and \
                self.san.qps[r.conn.data].state is QpState.ERROR:
            self._reset_data(r.conn.data)
        data = self.san.load(self.process, self.layout.slot(r.slot), r.length) \
            if status == 0 and r.op.kind == "read" else b""
        self._free.append(r.slot)
        self._answered(r, status, dsc, data)
        self._pump()

    def _answered(self, r: _Request, status: int, dsc: int, data: bytes) -> None:
        op = r.op
        if status != 0:
            self.counters["errors"] += 1
            op.req_status, op.detailed_status = status, dsc
        elif data:
            op.data[r.at:r.at + r.length] = data
        op.parts -= 1
        if op.parts == 0:
            self.done.append(Done(op.op_id, op.kind, op.req_status, op.detailed_status,
                                  bytes(op.data), op.started, self.san.now))

    def completed(self, qp: str, wc: Wc) -> None:
        """(Its SENDs' completions: nothing to do.)"""

    def _reset_data(self, qp: str) -> None:
        self.counters["data_qp_resets"] += 1
        self.san.reconnect(qp)

    def _send(self, qp: str, frame: bytes) -> None:
        self.san.store(self.process, self.layout.scratch, frame)
        self.san.post(qp, SendWR(APP_WR << 32, WrOpcode.SEND,
                                 (SGE(self.layout.scratch, len(frame)),)))

    @property
    def busy(self) -> int:
        """Requests outstanding or waiting."""
        return len(self._outstanding) + len(self._queue)
