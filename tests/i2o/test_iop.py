"""The IOP executive's state table (D1.4) and its answers to the initialisation messages."""

from __future__ import annotations

import pytest

from ftsslab.fast import i2o as fast
from ftsslab.i2o.blockdev import FileBlockDevice
from ftsslab.i2o.bus import HostMemory
from ftsslab.i2o.ddm import Ddm
from ftsslab.i2o.frames import EXEC_TID, Reply, parse_reply
from ftsslab.i2o.iop import TRANSITIONS, Iop, IopEvent, IopState, IopStateError


def _exec(iop: Iop, function: int, body: bytes = b"") -> Reply:
    (frame,) = iop.inbound(fast.build_i2o(function, body, target_tid=EXEC_TID))
    return parse_reply(frame)


def test_executive_initialisation_and_states():
    iop = Iop(Ddm([], HostMemory(0)))
    states = []
    for function in (0xA0, 0xA1, 0xA8, 0xA3, 0xD1, 0xA2):  # D1.4's order
        assert _exec(iop, function, b"\x07\x00\x01\x00").req_status == 0
        states.append(iop.state)
    assert states == [IopState.RESET, IopState.HOLD, IopState.HOLD, IopState.READY,
                      IopState.OPERATIONAL, IopState.OPERATIONAL]
    assert iop.iop_id == 7


def test_an_illegal_event_raises_its_named_error():
    iop = Iop(Ddm([], HostMemory(0)))
    with pytest.raises(IopStateError, match="ExecSysEnable in RESET"):
        iop.transition(IopEvent.SYS_ENABLE)
    assert iop.state is IopState.RESET
    iop.transition(IopEvent.FAIL)
    with pytest.raises(IopStateError):
        iop.transition(IopEvent.STATUS_GET)


@pytest.mark.parametrize("state", list(IopState))
@pytest.mark.parametrize("event", list(IopEvent))
def test_the_table_is_the_only_authority(state, event):
    iop = Iop(Ddm([], HostMemory(0)))
    iop.state = state
    if (state, event) in TRANSITIONS:
        assert iop.transition(event) is TRANSITIONS[state, event]
    else:
        with pytest.raises(IopStateError):
            iop.transition(event)
        assert iop.state is state


def test_an_executive_message_out_of_order_gets_an_error_reply():
    iop = Iop(Ddm([], HostMemory(0)))
    r = _exec(iop, 0xD1)  # ExecSysEnable in RESET
    assert (r.req_status, r.detailed_status, iop.state) == (0x05, 0x0D, IopState.RESET)
    r = _exec(iop, 0xBD)  # ExecIopReset: not emulated
    assert (r.req_status, r.detailed_status) == (0x05, 0x0A)


def test_device_requests_wait_for_operational(tmp_path):
    memory = HostMemory(4096)
    iop = Iop(Ddm([FileBlockDevice(tmp_path / "d.img", 4096)], memory))
    frame = fast.build_block_rw(fast.I2O_BSA_BLOCK_READ, [fast.sge_simple(512, 0)], 0,
                                target_tid=0x10)
    (r,) = iop.inbound(frame)
    r = parse_reply(r)
    assert (r.req_status, r.detailed_status) == (0x05, 0x04)  # BSA DEVICE_NOT_READY
    for function in (0xA1, 0xA3, 0xD1):
        _exec(iop, function, b"\x02\x00\x01\x00")
    assert parse_reply(iop.inbound(frame)[0]).req_status == 0
    status = _exec(iop, 0xA0)
    assert status.payload[:4] == bytes([2, 0, IopState.OPERATIONAL.value, 1])
    lct = _exec(iop, 0xA2)
    assert lct.payload == (0x10).to_bytes(2, "little") + (0x010).to_bytes(2, "little") + (
        4096).to_bytes(8, "little") + (512).to_bytes(4, "little")
