# SPDX-License-Identifier: GPL-2.0-or-later
"""The Local Transport 314: the host driver module's interface to the IOPs on the local bus
(L184, L188, L192; claims 19, 20).

``scan`` locates every IOP on the bus, initialises it with the I2O executive sequence (D1.4:
ExecStatusGet, ExecOutboundInit, ExecHrtGet, ExecSysTabSet, ExecSysEnable, ExecLctNotify,
each posted and its reply awaited, as a driver polls during initialisation) and builds an
opaque ``IopContext`` for it (L188). The two handlers (D1.1):

* ``send_handler(iop_context, frame)`` -- the seed's LT "send handler function", "a program
  interface to receive an inbound message from a remote SAN server for direct access to local
  IOP" (L192, step 560): posts the frame to that IOP's inbound FIFO.
* ``outbound_handler(frame)`` -- what step 610 calls the LT's "send handler" with the
  direction reversed (L194, L214): a frame from an IOP; its InitiatorContext (620) names a
  callback object, whose function is called with it (630). A context naming none is dropped
  (counted by the callback table, check 10).

``poll`` is the LT's interrupt service: it notices an IOP that died or came back (the hooks
``on_iop_failed`` / ``on_iop_ready`` tell the Connection Manager) and drains the outbound
FIFOs through ``outbound_handler``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from ftsslab.fast import i2o as fast

from .bus import LocalBus
from .context import CallbackTable
from .frames import (
    EXEC_HRT_GET,
    EXEC_LCT_NOTIFY,
    EXEC_OUTBOUND_INIT,
    EXEC_STATUS_GET,
    EXEC_SYS_ENABLE,
    EXEC_SYS_TAB_SET,
    EXEC_TID,
    FIRST_IOP_ID,
    HOST_TID,
    LCT_ENTRY,
    REQ_SUCCESS,
    SYS_TAB,
    Reply,
    parse_reply,
)
from .trace import Trace

INIT_SEQUENCE = (EXEC_STATUS_GET, EXEC_OUTBOUND_INIT, EXEC_HRT_GET, EXEC_SYS_TAB_SET,
                 EXEC_SYS_ENABLE, EXEC_LCT_NOTIFY)


class DeviceInfo(NamedTuple):
    tid: int
    capacity: int
    block_size: int


class IopInfo(NamedTuple):
    """What the LT tells the Connection Manager of an IOP (from its LCT)."""

    iop_id: int
    devices: tuple[DeviceInfo, ...]


class IopContext:
    """The opaque "context" structure the LT builds for each IOP found (L188, L192): only the
    LT reads it; everyone else passes it back (check 1)."""

    __slots__ = ("_slot", "_iop_id", "_devices", "_ready", "_failures")

    def __init__(self, slot: int, iop_id: int) -> None:
        self._slot, self._iop_id = slot, iop_id
        self._devices: tuple[DeviceInfo, ...] = ()
        self._ready = False
        self._failures = 0  # the bus's failure count when the IOP was initialised

    def __repr__(self) -> str:
        return f"<IopContext slot {self._slot}>"


class LocalTransport:
    def __init__(self, bus: LocalBus, callbacks: CallbackTable, trace: Trace) -> None:
        self._bus, self._callbacks, self.trace = bus, callbacks, trace
        self._contexts: list[IopContext] = []
        self.on_iop_failed: Callable[[IopContext], list] = lambda ctx: []
        self.on_iop_ready: Callable[[IopContext], list] = lambda ctx: []
        self.dropped = 0  # outbound frames that are no reply

    # ---------------------------------------------------------------- initialisation
    def scan(self) -> None:
        slots = self._bus.scan()
        self.trace.emit("LT", "scan", found=len(slots))
        for n, slot in enumerate(slots):
            ctx = IopContext(slot, FIRST_IOP_ID + n)
            if self._initialise(ctx, len(slots)):
                self._contexts.append(ctx)

    def _initialise(self, ctx: IopContext, iops: int) -> bool:
        """The executive sequence, one request and its reply at a time; False if a step fails."""
        bodies = {EXEC_SYS_TAB_SET: SYS_TAB.pack(ctx._iop_id, iops)}
        ctx._failures = self._bus.failures(ctx._slot)
        for function in INIT_SEQUENCE:
            reply = self._exec(ctx, function, bodies.get(function, b""))
            ok = reply is not None and reply.req_status == REQ_SUCCESS
            self.trace.emit("LT", "exec", iop=ctx._iop_id, function=function, ok=ok)
            if not ok:
                return False
        lct = reply.payload
        ctx._devices = tuple(DeviceInfo(tid, capacity, block)
                             for tid, _, capacity, block in LCT_ENTRY.iter_unpack(
                                 lct[:len(lct) - len(lct) % LCT_ENTRY.size]))
        ctx._ready = True
        return True

    def _exec(self, ctx: IopContext, function: int, body: bytes) -> Reply | None:
        frame = fast.build_i2o(function, body, target_tid=EXEC_TID, initiator_tid=HOST_TID)
        if not self._bus.post(ctx._slot, frame):
            return None
        self._bus.service()
        replies = self._bus.take(ctx._slot)
        return parse_reply(replies[0]) if len(replies) == 1 else None

    # ---------------------------------------------------------------- the CM's queries
    def iop_count(self) -> int:
        return len(self._contexts)

    def contexts(self) -> tuple[IopContext, ...]:
        return tuple(self._contexts)

    def info(self, ctx: IopContext) -> IopInfo:
        return IopInfo(ctx._iop_id, ctx._devices)

    # ---------------------------------------------------------------- the handlers
    def send_handler(self, iop_context: IopContext, frame: bytes) -> bool:
        """Step 560: post to the IOP; False if it is not there to take it."""
        self.trace.emit("LT", "send_handler", iop=iop_context._iop_id)
        return iop_context._ready and self._bus.post(iop_context._slot, frame)

    def outbound_handler(self, frame: bytes) -> list[Any]:
        """Steps 610-630; returns what the callback function returned (the RT's actions)."""
        self.trace.emit("LT", "610")
        reply = parse_reply(frame)
        if reply is None:
            self.dropped += 1
            return []
        self.trace.emit("LT", "620", context=reply.initiator_context)
        cb = self._callbacks.lookup(reply.initiator_context)
        if cb is None:
            return []
        self.trace.emit("LT", "630", handle=cb.handle)
        return cb.function(cb, frame)

    # ---------------------------------------------------------------- service
    def poll(self) -> list[Any]:
        actions: list[Any] = []
        for ctx in self._contexts:
            alive = self._bus.alive(ctx._slot)
            if ctx._ready and (not alive or self._bus.failures(ctx._slot) != ctx._failures):
                ctx._ready = False  # dead, or died and restarted since the last poll
                self.trace.emit("LT", "iop failed", iop=ctx._iop_id)
                actions += self.on_iop_failed(ctx)
            if not ctx._ready and alive and self._initialise(ctx, len(self._contexts)):
                self.trace.emit("LT", "iop ready", iop=ctx._iop_id)
                actions += self.on_iop_ready(ctx)
            for frame in self._bus.take(ctx._slot):
                actions += self.outbound_handler(frame)
        return actions
