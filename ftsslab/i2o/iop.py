# SPDX-License-Identifier: GPL-2.0-or-later
"""An I/O processor (IOP 320): its executive's state machine and the dispatch of the frames
posted to it (the communication layer 324, L180; claims 4-6).

The executive follows the I2O initialisation the Local Transport drives (D1.4): one table,
``TRANSITIONS``; an event it has no entry for raises ``IopStateError``::

    RESET --ExecOutboundInit--> HOLD --ExecSysTabSet--> READY --ExecSysEnable--> OPERATIONAL
    ExecStatusGet: any live state; ExecHrtGet: HOLD on; ExecLctNotify: READY, OPERATIONAL
    device requests: OPERATIONAL only
    any --the emulator dies--> FAILED --restarted--> RESET

States carry the I2O IopState codes the status block reports. ``inbound`` takes any bytes and
returns the reply frames; it never raises: a frame that is no request gets the FAIL-flag
reply, an executive message the state forbids an error reply, a request to a TID the IOP has
no device for ERROR_NO_DATA_TRANSFER / DEVICE_NOT_AVAILABLE (D1.7).
"""

from __future__ import annotations

from enum import Enum

from ftsslab.fast import i2o as fast

from .ddm import Ddm
from .frames import (
    BSA_DSC_DEVICE_NOT_READY,
    DSC_DEVICE_NOT_AVAILABLE,
    DSC_INAPPROPRIATE_FUNCTION,
    DSC_UNSUPPORTED_FUNCTION,
    EXEC_HRT_GET,
    EXEC_LCT_NOTIFY,
    EXEC_OUTBOUND_INIT,
    EXEC_STATUS_GET,
    EXEC_SYS_ENABLE,
    EXEC_SYS_TAB_SET,
    EXEC_TID,
    HRT_ENTRY,
    I2O_CLASS_RANDOM_BLOCK_STORAGE,
    LCT_ENTRY,
    STATUS_BLOCK,
    SYS_TAB,
    Request,
    error_reply,
    failure_reply,
    parse_request,
    reply,
)


class IopState(Enum):
    RESET = 0x02
    HOLD = 0x04
    READY = 0x05
    OPERATIONAL = 0x08
    FAILED = 0x10


class IopEvent(Enum):
    STATUS_GET = "ExecStatusGet"
    OUTBOUND_INIT = "ExecOutboundInit"
    HRT_GET = "ExecHrtGet"
    SYS_TAB_SET = "ExecSysTabSet"
    SYS_ENABLE = "ExecSysEnable"
    LCT_NOTIFY = "ExecLctNotify"
    DEVICE_REQUEST = "a request to a device"
    FAIL = "the emulator dies"
    RESTART = "the emulator restarts"


_S, _E = IopState, IopEvent
_LIVE = (_S.RESET, _S.HOLD, _S.READY, _S.OPERATIONAL)
TRANSITIONS: dict[tuple[IopState, IopEvent], IopState] = {
    **{(s, _E.STATUS_GET): s for s in _LIVE},
    (_S.RESET, _E.OUTBOUND_INIT): _S.HOLD,
    **{(s, _E.HRT_GET): s for s in (_S.HOLD, _S.READY, _S.OPERATIONAL)},
    (_S.HOLD, _E.SYS_TAB_SET): _S.READY,
    (_S.READY, _E.SYS_ENABLE): _S.OPERATIONAL,
    **{(s, _E.LCT_NOTIFY): s for s in (_S.READY, _S.OPERATIONAL)},
    (_S.OPERATIONAL, _E.DEVICE_REQUEST): _S.OPERATIONAL,
    **{(s, _E.FAIL): _S.FAILED for s in _LIVE},
    (_S.FAILED, _E.RESTART): _S.RESET,
}

_EXEC_EVENTS = {EXEC_STATUS_GET: _E.STATUS_GET, EXEC_OUTBOUND_INIT: _E.OUTBOUND_INIT,
                EXEC_HRT_GET: _E.HRT_GET, EXEC_SYS_TAB_SET: _E.SYS_TAB_SET,
                EXEC_SYS_ENABLE: _E.SYS_ENABLE, EXEC_LCT_NOTIFY: _E.LCT_NOTIFY}


class IopStateError(Exception):
    """An event the IOP's state has no transition for."""


class Iop:
    def __init__(self, ddm: Ddm) -> None:
        self.ddm = ddm
        self.state = IopState.RESET
        self.iop_id = 0  # assigned by ExecSysTabSet

    def transition(self, event: IopEvent) -> IopState:
        new = TRANSITIONS.get((self.state, event))
        if new is None:
            raise IopStateError(f"IOP {self.iop_id}: {event.value} in {self.state.name}")
        self.state = new
        return new

    def inbound(self, frame: bytes) -> list[bytes]:
        """One frame from the inbound FIFO; the frames it puts in the outbound FIFO."""
        request = parse_request(frame)
        if request is None:
            return [failure_reply(frame)]
        if request.target_tid == EXEC_TID:
            return [self._executive(request)]
        if request.target_tid not in self.ddm.devices:
            return [error_reply(request, DSC_DEVICE_NOT_AVAILABLE)]
        if request.function not in fast.I2O_BSA_FUNCTION_CODES:
            return [error_reply(request, DSC_UNSUPPORTED_FUNCTION)]
        try:
            self.transition(IopEvent.DEVICE_REQUEST)
        except IopStateError:
            return [error_reply(request, BSA_DSC_DEVICE_NOT_READY)]
        return [self.ddm.handle(request)]

    def _executive(self, request: Request) -> bytes:
        event = _EXEC_EVENTS.get(request.function)
        if event is None:
            return error_reply(request, DSC_UNSUPPORTED_FUNCTION)
        try:
            self.transition(event)
        except IopStateError:
            return error_reply(request, DSC_INAPPROPRIATE_FUNCTION)
        return reply(request, body=self._exec_body(event, request))

    def _exec_body(self, event: IopEvent, request: Request) -> bytes:
        devices = self.ddm.devices
        if event is IopEvent.STATUS_GET:
            return STATUS_BLOCK.pack(self.iop_id, self.state.value, len(devices))
        if event is IopEvent.SYS_TAB_SET:
            self.iop_id, _ = SYS_TAB.unpack_from(bytes(request.fields["payload"]).ljust(4, b"\0"))
        if event is IopEvent.HRT_GET:
            return b"".join(HRT_ENTRY.pack(tid) for tid in devices)
        if event is IopEvent.LCT_NOTIFY:
            return b"".join(LCT_ENTRY.pack(tid, I2O_CLASS_RANDOM_BLOCK_STORAGE, d.capacity,
                                           d.block_size) for tid, d in devices.items())
        return b""
