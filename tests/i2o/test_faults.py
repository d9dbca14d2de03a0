"""The error paths (D1.7): disconnect with requests in flight (check 11), IOP failure and
restart (check 12), malformed frames, unknown connections and TIDs, refused connections."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ftsslab.fast import i2o as fast
from ftsslab.i2o.bus import HostMemory
from ftsslab.i2o.connection_manager import Advertise, ConnectStatus
from ftsslab.i2o.ddm import Ddm
from ftsslab.i2o.frames import parse_request
from ftsslab.i2o.iop import Iop, IopState
from ftsslab.i2o.remote_transport import Send
from ftsslab.layers.i2o import I2OMessage

from .rig import TID, Rig, read, write

R1, R2 = 100, 200


def connected(tmp_path) -> Rig:
    rig = Rig(tmp_path)
    assert rig.cm.connect("R1", 3, R1).status is ConnectStatus.CONNECTED
    assert rig.cm.connect("R2", 3, R2).status is ConnectStatus.CONNECTED
    return rig


def test_disconnect_with_requests_in_flight_leaks_nothing(tmp_path):
    rig = connected(tmp_path)
    for n in range(16):
        rig.rt.receive_handler(R1, write(n * 512, 512, 0, ictx=n))
    rig.rt.receive_handler(R2, read(0, 512, 0, ictx=7))
    assert len(rig.cm.disconnect(R1)) == 16
    assert len(rig.host.callbacks) == 1  # R2's
    out = rig.run()
    assert [(s.conn_id, fast.parse_i2o(s.frame)["initiator_context"]) for s in out] == [(R2, 7)]
    assert rig.host.callbacks.stale == 16 and len(rig.host.callbacks) == 0
    assert rig.rt.receive_handler(R1, read(0, 512, 0)) == []  # the connection is gone
    assert rig.rt.unknown_connection == 1
    rig.rt.receive_handler(R2, read(0, 512, 0, ictx=8))
    assert [s.conn_id for s in rig.run()] == [R2]


def test_iop_failure_fails_outstanding_withdraws_and_readvertises(tmp_path):
    rig = connected(tmp_path)
    for n in range(4):
        rig.rt.receive_handler(R1, write(0, 512, 0, ictx=n, tctx=n + 10))
    rig.bus.fail(1)
    out = rig.run()
    sends = [a for a in out if isinstance(a, Send)]
    assert [a for a in out if not isinstance(a, Send)] == [Advertise(rig.cm.advertisement())]
    assert [a.iop_id for a in rig.cm.advertisement()] == [2]
    replies = [fast.parse_i2o(s.frame) for s in sends]
    assert [(s.conn_id, r["initiator_context"], r["transaction_context"]) for s, r in
            zip(sends, replies, strict=True)] == [(R1, n, n + 10) for n in range(4)]
    assert {(r["req_status"], r["detailed_status"]) for r in replies} == {(0x05, 0x03)}
    assert len(rig.host.callbacks) == 0
    assert rig.cm.connect("R3", 3, 300).status is ConnectStatus.IOP_UNAVAILABLE
    assert rig.rt.connection(300) is None
    (now,) = rig.rt.receive_handler(R2, read(0, 512, 0, ictx=5))  # answered at once
    assert fast.parse_i2o(now.frame)["req_status"] == 0x05 and len(rig.host.callbacks) == 0

    rig.bus.restart(1)
    assert rig.run() == [Advertise(rig.cm.advertisement())]
    assert [a.iop_id for a in rig.cm.advertisement()] == [2, 3]
    assert rig.bus.iop(1).state is IopState.OPERATIONAL
    rig.rt.receive_handler(R2, read(0, 512, 0, ictx=6))
    (s,) = rig.run()
    assert (s.conn_id, fast.parse_i2o(s.frame)["req_status"]) == (R2, 0)


def test_a_failure_the_lt_polled_too_late_to_see_is_still_seen(tmp_path):
    rig = connected(tmp_path)
    rig.rt.receive_handler(R1, write(0, 512, 0, ictx=1))
    rig.bus.fail(1)
    rig.bus.restart(1)  # back in RESET before the LT's next poll
    out = rig.run()
    (s,) = [a for a in out if isinstance(a, Send)]
    assert fast.parse_i2o(s.frame)["req_status"] == 0x05 and len(rig.host.callbacks) == 0
    assert out[-1] == Advertise(rig.cm.advertisement()) and len(out[-1].adverts) == 2
    assert rig.bus.iop(1).state is IopState.OPERATIONAL
    assert [e.step for e in rig.host.trace][-3:] == ["exec", "iop ready", "advertise"]


def test_refused_connections_create_nothing(tmp_path):
    rig = connected(tmp_path)
    assert rig.cm.connect("R3", 9, 300).status is ConnectStatus.NO_SUCH_IOP
    assert rig.cm.connect("R3", 2, R1).status is ConnectStatus.CONNECTION_IN_USE
    assert rig.rt.connection(300) is None and rig.rt.connection(R1).remote == "R1"
    assert rig.rt.connection(R1).descriptor is rig.cm.descriptors[3]
    (tmp_path / "early").mkdir()
    early = Rig(tmp_path / "early", initialise=False)
    assert early.cm.connect("R1", 2, R1).status is ConnectStatus.NOT_STARTED


def test_an_allow_list_refuses_other_remotes_and_hides_the_iop_from_them(tmp_path):
    """D1.9: IOP 3 is R1's only -- R2 is not told of it and may not attach."""
    rig = Rig(tmp_path, allowed={3: frozenset({"R1"})})
    assert [a.iop_id for a in rig.cm.advertisement("R2")] == [2]
    assert [a.iop_id for a in rig.cm.advertisement("R1")] == [2, 3]
    assert rig.cm.connect("R2", 3, R2).status is ConnectStatus.REFUSED
    assert rig.rt.connection(R2) is None
    assert rig.cm.connect("R1", 3, R1).status is ConnectStatus.CONNECTED


def test_executive_messages_from_a_remote_are_refused(tmp_path):
    rig = connected(tmp_path)
    (s,) = rig.rt.receive_handler(R1, fast.build_i2o(0xBD, target_tid=0, initiator_context=3))
    r = fast.parse_i2o(s.frame)
    assert (r["req_status"], r["detailed_status"], r["initiator_context"]) == (0x05, 0x0D, 3)
    assert rig.bus.iop(1).state is IopState.OPERATIONAL


def test_unknown_tid_is_refused_through_the_whole_path(tmp_path):
    rig = connected(tmp_path)
    rig.rt.receive_handler(R1, write(0, 512, 0, tid=TID + 5, ictx=4))
    ((conn, frame, _),) = rig.run()
    r = fast.parse_i2o(frame)
    assert (conn, r["req_status"], r["detailed_status"], r["initiator_context"]) == (
        R1, 0x05, 0x1C, 4)


@pytest.mark.parametrize("frame", [
    write(0, 512, 0)[:1] + b"\x04" + write(0, 512, 0)[2:],  # a reserved MsgFlags bit
    write(0, 512, 0)[:1] + b"\x80" + write(0, 512, 0)[2:],  # a reply, inbound
    write(0, 512, 0)[:1] + b"\x20" + write(0, 512, 0)[2:],  # FAIL, inbound
    b"\x82" + write(0, 512, 0)[1:],  # I2O version 2
    fast.build_i2o(fast.I2O_BSA_BLOCK_WRITE, b"\0" * 8, target_tid=TID),  # body cut short
    write(0, 512, 0)[:2] + b"\x40\x00" + write(0, 512, 0)[4:],  # MessageSize past the end
    b"\x01\x00\x03",
])
def test_frames_that_are_no_request_get_the_fail_reply(tmp_path, frame):
    rig = connected(tmp_path)
    (s,) = rig.rt.receive_handler(R1, frame)
    assert fast.parse_i2o(s.frame)["msg_flags"] == fast.MSG_REPLY | fast.MSG_FAIL | fast.MSG_FINAL
    assert rig.run() == [] and rig.rt.malformed == 1


@settings(max_examples=600, deadline=None)
@given(st.one_of(st.binary(max_size=64),
                 st.builds(lambda f, b, fl: fast.build_i2o(f, b, msg_flags=fl, target_tid=TID),
                           st.sampled_from(sorted(fast.I2O_FUNCTIONS)), st.binary(max_size=40),
                           st.integers(0, 255))))
def test_malformed_frames_get_a_fail_reply_and_never_raise(tmp_path_factory, frame):
    rig = connected(tmp_path_factory.mktemp("m"))
    out = rig.rt.receive_handler(R1, frame)
    if parse_request(frame) is None:
        (s,) = out
        r = fast.parse_i2o(s.frame)
        assert r["msg_flags"] & fast.MSG_FAIL and r["msg_flags"] & fast.MSG_REPLY
        assert bytes(r["payload"]) == frame[:16].ljust(16, b"\0")
        assert I2OMessage(s.frame).msg_flags.fail
        assert len(rig.host.callbacks) == 0 and rig.rt.malformed == 1
    for action in rig.run():  # whatever went in, what comes out is a frame to R1
        assert action.conn_id == R1 and fast.parse_i2o(action.frame) is not None
    assert len(rig.host.callbacks) == 0


@settings(max_examples=600, deadline=None)
@given(st.binary(max_size=80))
def test_the_iop_and_the_lt_take_any_bytes(tmp_path_factory, frame):
    iop = Iop(Ddm([], HostMemory(64)))
    (reply,) = iop.inbound(frame)
    assert fast.parse_i2o(reply)["msg_flags"] & fast.MSG_REPLY
    rig = Rig(tmp_path_factory.mktemp("o"), 1)
    assert rig.lt.outbound_handler(frame) == []


def test_a_fail_reply_preserves_a_short_frame_header():
    iop = Iop(Ddm([], HostMemory(64)))
    (reply,) = iop.inbound(struct.pack("<BBH", 0x01, 0, 2))
    assert fast.parse_i2o(reply)["payload"] == b"\x01\x00\x02\x00" + bytes(12)
