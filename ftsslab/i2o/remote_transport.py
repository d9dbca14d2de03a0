# SPDX-License-Identifier: GPL-2.0-or-later
"""The Remote Transport 316: the host driver module's interface to the remote servers on the
SAN (L184, L194, L204-L218; claims 20, 21, 27, 28).

A service connection (L198) is identified by ``conn_id`` -- the RC QP it runs on, once the SAN
carries it. The Connection Manager ``attach``es one, handing over the address of an IOP
descriptor (L200); the RT builds an ``IopConnection`` holding it. The two handlers (D1.1):

* ``receive_handler(conn_id, frame)`` -- the seed's RT "receive handler function" (L194):
  SAN -> host, Fig. 5. 520 finds the IOP connection structure, 530 saves the frame's
  InitiatorContext in a callback object and puts the object's 32-bit handle in its place,
  540/550 read the descriptor's send handler and IOP context, 560 calls the one with the
  other and the frame: plain calls from the SAN receive to the LT post (B1.7).
* ``send_handler(callback, frame)`` -- the RT "send handler function (not shown)" (L204):
  host -> SAN, Fig. 6 640-660. The callback object is "the callback context pointer" 630
  passes; it holds the IOP connection (620) and the saved context that 650 restores.

Both return the frames to send as ``Send`` actions (660); the caller owns the SAN. Frames
that are no request get the FAIL-flag reply; executive messages are the host's own (the LT
initialises the IOPs) and are refused; a frame for an IOP that is gone gets a failure reply at
once (D1.7).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from ftsslab.fast import i2o as fast

from .connection_manager import IopDescriptor
from .context import CallbackObject, CallbackTable, TableFull
from .frames import (
    BSA_DSC_DEVICE_FAILURE,
    DSC_DEVICE_NOT_AVAILABLE,
    DSC_INAPPROPRIATE_FUNCTION,
    Request,
    error_reply,
    failure_reply,
    last_frame,
    parse_request,
)
from .trace import Trace

DSC_INSUFFICIENT_RESOURCE_SOFT = 0x0006


class Send(NamedTuple):
    """Step 660: a frame to send out a service connection, and what the SAN side staged for
    its request (given to ``receive_handler``, kept in the callback object)."""

    conn_id: int
    frame: bytes
    staged: Any = None


@dataclass(eq=False)
class IopConnection:
    """The IOP connection structure (Fig. 4): one per service connection."""

    conn_id: int
    remote: str
    descriptor: IopDescriptor  # the CM's own object (check 3)


def iop_gone_reply(request: Request) -> bytes:
    """The failure reply for a request its IOP will never answer (check 12)."""
    bsa = request.function in fast.I2O_BSA_FUNCTION_CODES
    return error_reply(request, BSA_DSC_DEVICE_FAILURE if bsa else DSC_DEVICE_NOT_AVAILABLE)


class RemoteTransport:
    def __init__(self, callbacks: CallbackTable, trace: Trace) -> None:
        self._callbacks, self.trace = callbacks, trace
        self._connections: dict[int, IopConnection] = {}
        self.listening = False
        self.management_open = False
        self.unknown_connection = 0  # frames on no service connection: dropped (D1.7)
        self.malformed = 0  # frames answered with the FAIL-flag reply

    def listen(self) -> None:
        """Prepare to accept requests through the SAN NIC (L188, claim 19)."""
        self.listening = True
        self.trace.emit("RT", "listen")

    def open_management_channel(self) -> None:
        self.management_open = True
        self.trace.emit("RT", "management channel open")

    def attach(self, conn_id: int, remote: str, descriptor: IopDescriptor) -> IopConnection:
        conn = self._connections[conn_id] = IopConnection(conn_id, remote, descriptor)
        self.trace.emit("RT", "service connection", conn=conn_id, remote=remote)
        return conn

    def connection(self, conn_id: int) -> IopConnection | None:
        return self._connections.get(conn_id)

    @property
    def connections(self) -> int:
        return len(self._connections)

    def detach(self, conn_id: int) -> list[CallbackObject]:
        """The remote disconnected: its outstanding requests are abandoned, their callback
        objects freed now, and the IOP's late replies dropped as stale (check 11). Returns
        the objects freed (what the SAN side staged for them comes back)."""
        conn = self._connections.pop(conn_id, None)
        in_flight = [cb for cb in self._callbacks.live() if cb.connection is conn]
        for cb in in_flight:
            self._callbacks.free(cb)
        self.trace.emit("RT", "disconnect", conn=conn_id, aborted=len(in_flight))
        return in_flight

    # ---------------------------------------------------------------- Fig. 5
    def receive_handler(self, conn_id: int, frame: bytes, staged: Any = None) -> list[Send]:
        self.trace.emit("RT", "510", conn=conn_id)
        conn = self._connections.get(conn_id)
        if conn is None:
            self.unknown_connection += 1
            return []
        self.trace.emit("RT", "520", conn=conn_id)
        request = parse_request(frame)
        if request is None:
            self.malformed += 1
            return [Send(conn_id, failure_reply(frame))]
        if request.function in fast.I2O_EXEC_FUNCTIONS:
            return [Send(conn_id, error_reply(request, DSC_INAPPROPRIATE_FUNCTION), staged)]
        try:
            cb = self._callbacks.alloc(self.send_handler, conn, request, staged)
        except TableFull:
            return [Send(conn_id, error_reply(request, DSC_INSUFFICIENT_RESOURCE_SOFT), staged)]
        frame, _ = fast.swap_initiator_context(frame, cb.handle)
        self.trace.emit("RT", "530", saved=request.initiator_context, handle=cb.handle)
        descriptor = conn.descriptor
        self.trace.emit("RT", "540")
        send_handler, iop_context = descriptor.send_handler, descriptor.iop_context
        self.trace.emit("RT", "550")
        self.trace.emit("RT", "560")
        if send_handler(iop_context, frame):
            return []
        self._callbacks.free(cb)
        return [Send(conn_id, iop_gone_reply(request), staged)]

    # ---------------------------------------------------------------- Fig. 6
    def send_handler(self, callback: CallbackObject, frame: bytes) -> list[Send]:
        self.trace.emit("RT", "640", handle=callback.handle)
        if last_frame(frame[1]):
            self._callbacks.free(callback)  # only after the reply's last frame (D1.3)
        frame, _ = fast.swap_initiator_context(frame, callback.saved_initiator_context)
        self.trace.emit("RT", "650", restored=callback.saved_initiator_context)
        self.trace.emit("RT", "660", conn=callback.connection.conn_id)
        return [Send(callback.connection.conn_id, frame, callback.staged)]

    def fail_outstanding(self, descriptor: IopDescriptor) -> list[Send]:
        """The IOP behind ``descriptor`` died: each request it held gets its failure reply."""
        out = []
        for cb in self._callbacks.live():
            if cb.connection.descriptor is descriptor:
                self._callbacks.free(cb)
                out.append(Send(cb.connection.conn_id, iop_gone_reply(cb.request), cb.staged))
        return out
