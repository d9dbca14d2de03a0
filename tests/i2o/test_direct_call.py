"""Fig. 5's direct call (check 4): from the RT's receive handler to the LT's send handler
through the CM's descriptor by plain calls, in one thread, with no queue, socket or thread hop;
and Fig. 6 back, the context restored (check 5)."""

from __future__ import annotations

import sys
import threading

from ftsslab.fast import i2o as fast
from ftsslab.i2o.remote_transport import Send
from ftsslab.layers.i2o import I2OMessage

from .rig import Rig, write

R1 = 100
HOPS = ("queue", "threading", "socket", "selectors", "asyncio", "multiprocessing", "_queue",
        "_thread", "_socket")


def test_the_inbound_path_is_plain_calls(tmp_path):
    rig = Rig(tmp_path)
    rig.cm.connect("R1", 3, R1)
    frame = write(0, 4096, 0, ictx=0xCAFE, tctx=9)
    events: list[tuple[str, str, str]] = []  # (event, caller or callee, module)
    at_lt: list = []

    def profile(f, event, arg):
        if event == "call":
            events.append(("call", f.f_code.co_qualname, f.f_globals.get("__name__", "")))
            if f.f_code.co_qualname == "LocalTransport.send_handler":
                at_lt.append((f.f_back.f_code.co_qualname, threading.get_ident()))
        elif event == "c_call":
            owner = type(getattr(arg, "__self__", None)).__module__  # a method: its class's
            events.append(("c_call", f"{f.f_code.co_qualname}>{getattr(arg, '__qualname__', '')}",
                           getattr(arg, "__module__", None) or owner))

    caller = threading.get_ident()
    sys.setprofile(profile)
    try:
        out = rig.rt.receive_handler(R1, frame)
    finally:
        sys.setprofile(None)
    assert out == []
    assert at_lt == [("RemoteTransport.receive_handler", caller)]  # called directly from it
    ours = [q for e, q, m in events if e == "call" and m.startswith("ftsslab.i2o")]
    assert ours.index("RemoteTransport.receive_handler") < ours.index(
        "LocalTransport.send_handler") < ours.index("LocalBus.post")
    assert not [e for e in events if e[2].split(".")[0] in HOPS]
    fifo = [q for e, q, _ in events if e == "c_call" and q.endswith(">deque.append")]
    assert fifo == ["LocalBus.post>deque.append"]  # the only FIFO: the IOP's own (D1.4)
    steps = rig.host.trace.steps()[-7:]
    assert steps == ["510", "520", "530", "540", "550", "560", "send_handler"]


def test_the_iop_sees_the_handle_and_the_remote_its_own_context(tmp_path):
    rig = Rig(tmp_path)
    rig.cm.connect("R1", 3, R1)
    seen: list[bytes] = []
    iop = rig.bus.iop(1)
    inbound = iop.inbound
    iop.inbound = lambda f: seen.append(f) or inbound(f)
    request = write(0, 4096, 0, ictx=0xCAFE, tctx=9)
    rig.rt.receive_handler(R1, request)
    ((conn, reply, _),) = rig.run()
    handle = fast.parse_i2o(seen[0])["initiator_context"]
    (swap,) = [e for e in rig.host.trace if e.step == "530"]
    assert handle != 0xCAFE and swap.detail == {"saved": 0xCAFE, "handle": handle}
    assert seen[0][12:] == request[12:] and seen[0][:8] == request[:8]
    out = fast.parse_i2o(reply)
    assert (conn, out["initiator_context"], out["transaction_context"]) == (R1, 0xCAFE, 9)
    assert I2OMessage(reply).answers(I2OMessage(request))
    assert [s for s in rig.host.trace.steps() if s[0] == "6"] == [
        "610", "620", "630", "640", "650", "660"]
    assert len(rig.host.callbacks) == 0


def test_a_multi_frame_reply_keeps_its_callback_until_the_last_frame(tmp_path):
    rig = Rig(tmp_path)
    rig.cm.connect("R1", 3, R1)
    request = fast.parse_i2o(write(0, 512, 0, ictx=0xAB, tctx=1))
    rig.rt.receive_handler(R1, write(0, 512, 0, ictx=0xAB, tctx=1))
    (cb,) = rig.host.callbacks.live()
    middle = fast.MSG_REPLY | fast.MSG_MULTI_TRANS
    frames = [fast.build_reply({**request, "initiator_context": cb.handle}, msg_flags=flags)
              for flags in (middle, middle, middle | fast.MSG_FINAL)]
    sent = []
    for n, f in enumerate(frames):
        sent += rig.lt.outbound_handler(f)
        assert len(rig.host.callbacks) == (1 if n < 2 else 0)
    assert [fast.parse_i2o(s.frame)["initiator_context"] for s in sent] == [0xAB] * 3
    assert all(isinstance(s, Send) and s.conn_id == R1 for s in sent)
    assert rig.lt.outbound_handler(frames[0]) == []  # after the last one: stale
