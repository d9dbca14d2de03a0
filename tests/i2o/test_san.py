"""Seed 001's host on the SAN, its cores wired back to back (no switch, no clock): check 4's
direct call from the frame the SAN delivers to the LT's post, with nothing in between that
could block or hop (no socket, select, os, time, thread or queue call; one thread), and the
host's SAN side against arbitrary bytes on a service connection and on the management
channel (D1.7): never raises, nothing left behind."""

from __future__ import annotations

import gc
import sys
import threading
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from ftsslab.fast import i2o as fast
from ftsslab.i2o.kinds import _sim_host, _sim_remote
from ftsslab.i2o.local_transport import LocalTransport
from ftsslab.i2o.remote_transport import RemoteTransport
from ftsslab.lab.scenario import load_scenario
from ftsslab.san.node import SanicCore

SCENARIO = Path(__file__).resolve().parents[2] / "scenarios" / "i2o-export.yaml"
BLOCKING = ("socket", "_socket", "select", "selectors", "os", "posix", "time", "threading",
            "_thread", "queue", "_queue", "asyncio", "subprocess")
PURE = {"inet_ntoa"}  # of those modules, formatting that makes no system call


class Pair:
    """Host h and remote r1 of i2o-export, each one's frames handed to the other."""

    def __init__(self) -> None:
        sc = load_scenario(SCENARIO)
        self.h, self.r = _sim_host(sc.node("h"), sc), _sim_remote(sc.node("r1"), sc)

    def exchange(self, out, to: SanicCore) -> None:
        while out:
            other = self.h if to is self.r else self.r
            back = []
            for t in out:
                back += to.on_frame(to.cfg.iface, t.frame, 0.0)
            out, to = back, other

    def verb(self, **args) -> None:
        self.exchange(self.r.verb(args, 0.0), self.h)

    def connected(self) -> Pair:
        self.verb(op="connect", iop="p1")
        assert "p1" in self.r.client.connections
        return self


def _chain(pair: Pair, frames: list[bytes]) -> tuple[list, int | None]:
    """Profile the host taking ``frames`` (the last one completes the message): every call
    and C call from its ``on_frame`` until the LT posts to the IOP, and the thread it ran on."""
    events, post_thread = [], None

    def profile(frame, event, arg):
        nonlocal post_thread
        if post_thread is not None:
            return
        if event == "call" and frame.f_code is LocalTransport.send_handler.__code__:
            post_thread = threading.get_ident()
        if event == "call":
            events.append((event, frame.f_code))
        elif event == "c_call":
            events.append((event, arg, f"{frame.f_code.co_filename}:{frame.f_lineno}"))

    for data in frames[:-1]:
        pair.h.on_frame("eth0", data, 0.0)
    gc.disable()  # a collection's callbacks (hypothesis times them) are not the path's
    sys.setprofile(profile)
    try:
        pair.h.on_frame("eth0", frames[-1], 0.0)
    finally:
        sys.setprofile(None)
        gc.enable()
    return events, post_thread


def _module(c_func) -> str:
    owner = getattr(c_func, "__self__", None)
    return getattr(c_func, "__module__", None) or type(owner).__module__ or ""


def _sends_of(pair: Pair, **args) -> list[bytes]:
    return [t.frame for t in pair.r.verb(args, 0.0)]


def test_direct_call_from_the_san_frame():
    """A BlockRead's SEND (one frame) and a BlockWrite's last RDMA READ response: from the
    SAN's frame to the LT's post, plain calls in one thread -- RT.receive_handler on the way,
    no blocking or hopping call at all (check 4)."""
    for op in ("read", "write"):
        pair = Pair().connected()
        frames = _sends_of(pair, op=op, iop="p1", offset=4096, length=4096, seed=1)
        if op == "write":  # the host RDMA READs the data: the message is complete with it
            reads = [t.frame for f in frames for t in pair.h.on_frame("eth0", f, 0.0)]
            frames = [t.frame for f in reads for t in pair.r.on_frame("eth0", f, 0.0)]
        events, thread = _chain(pair, frames)
        assert thread == threading.get_ident(), f"{op}: the LT's post ran in another thread"
        codes = [c for e, c, *_ in events if e == "call"]
        assert SanicCore.on_frame.__code__ in codes
        assert RemoteTransport.receive_handler.__code__ in codes
        assert codes.index(RemoteTransport.receive_handler.__code__) < \
            codes.index(LocalTransport.send_handler.__code__)
        blocking = [(c, where) for e, c, *where in events if e == "c_call" and
                    _module(c).split(".")[0] in BLOCKING and c.__name__ not in PURE]
        assert blocking == [], f"{op}: {blocking}"


def test_the_chain_check_sees_a_blocking_call(monkeypatch):
    """The check above can fail: a sleep on the path is seen."""
    import time

    pair = Pair().connected()
    frames = _sends_of(pair, op="read", iop="p1", offset=0, length=4096)
    real = RemoteTransport.receive_handler

    def slow(self, *a, **k):
        time.sleep(0)
        return real(self, *a, **k)

    monkeypatch.setattr(RemoteTransport, "receive_handler", slow)
    events, _ = _chain(pair, frames)
    assert any(e == "c_call" and _module(c) == "time" for e, c, *_ in events)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1100), st.booleans())
def test_arbitrary_bytes_on_the_san_never_break_the_host(data, management):
    """On a service connection: answered (a FAIL-flag or error reply) or dropped, counted;
    on the management channel: a FAIL-flag reply unless it is a CM request. Nothing raises,
    no callback object or bounce slot is left behind."""
    pair = Pair().connected()
    port = pair.h.port
    before = dict(port.counters)
    port.received("r1_cm" if management else "r1_p1_msg", data)
    assert len(pair.h.module.callbacks) == 0
    assert len(port._free) == pair.h.port.layout.slots or port._moving
    if management:
        handled = port.counters["cm_messages"] + port.counters["cm_malformed"]
        assert handled == before["cm_messages"] + before["cm_malformed"] + 1
    else:
        assert port.counters["requests"] == before["requests"] + 1


def test_malformed_cm_messages_get_the_fail_reply():
    pair = Pair().connected()
    port = pair.h.port
    sent = []
    port._send = lambda qp, frame: sent.append((qp, frame))
    hello_reply = fast.build_cm(fast.CM_CONNECT, {"status": 0, "conn_id": 1, "message_qpn": 1,
                                                  "data_qpn": 2}, reply=True)
    for junk in (b"", b"\x01" * 7, hello_reply):
        port.received("r1_cm", junk)
    assert port.counters["cm_malformed"] == 3
    assert [fast.parse_i2o(f)["msg_flags"] & fast.MSG_FAIL for _, f in sent] == [fast.MSG_FAIL] * 3


def test_a_spent_key_is_refused_because_it_is_spent():
    """``key: spent`` names the last one-shot binding again (its key and buffer): the key is
    SPENT at the remote, the host's RDMA READ of it refused, the IOP never sees the write."""
    from ftsslab.san.rkeys import KeyState

    pair = Pair().connected()
    pair.verb(op="write", iop="p1", offset=0, length=4096, seed=3, key="oneshot")
    va, key = pair.r.client._last_oneshot
    assert pair.r.ctx.keys.state(key) is KeyState.SPENT
    frames = _sends_of(pair, op="write", iop="p1", offset=4096, length=4096, seed=4,
                       key="spent")
    element = fast.parse_i2o(frames[0][54:-4])["sgl"][0]
    assert (element["virtual_address"], element["rkey"]) == (va, key)
    requests = pair.h.bus.iop(pair.h.iop_slots["p1"]).ddm.requests
    pair.exchange([t for f in frames for t in pair.h.on_frame("eth0", f, 0.0)], pair.r)
    assert pair.h.port.counters["rdma_refused"] == 1
    assert pair.h.bus.iop(pair.h.iop_slots["p1"]).ddm.requests == requests
    assert [e["dsc"] for e in pair.r.events if e["kind"] == "io"] == ["SUCCESS", "ACCESS_ERROR"]


def test_a_request_naming_host_memory_is_refused():
    """From the SAN, data moves only under the remote's key: a BlockWrite or BlockRead whose
    SGL names host memory (a bounce slot, where another remote's data may be) is refused, and
    the IOP never sees it."""
    pair = Pair().connected()
    port, sent = pair.h.port, []
    port._send = lambda qp, frame: sent.append(frame)
    slot = port.layout.slot(0)
    for function in (fast.I2O_BSA_BLOCK_WRITE, fast.I2O_BSA_BLOCK_READ):
        port.received("r1_p1_msg", fast.build_block_rw(
            function, [fast.sge_simple(4096, slot)], 0, target_tid=0x10, initiator_context=7))
    assert port.counters["refused_sgl"] == 2
    assert pair.h.bus.iop(pair.h.iop_slots["p1"]).ddm.requests == 0
    replies = [fast.parse_i2o(f) for f in sent]
    assert [(r["initiator_context"], r["detailed_status"]) for r in replies] == [(7, 2), (7, 2)]
