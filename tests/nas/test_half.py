"""A connection split by direction (``ftsslab.nas.half``, Fig. 7): the first device's TCB keeps
sending while the client's segments reach the second device, which acknowledges the client's
data and relays the client's ACKs by Updates; then the second device has the whole
connection. The client is the core as a kernel stand-in, over a lossy wire."""

from __future__ import annotations

import heapq
import itertools
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ftsslab.lab.backend import BackendError
from ftsslab.lab.fetch import HttpFetch, parse_urls
from ftsslab.lab.model import Fetch, Handoff
from ftsslab.lab.runner import Runner
from ftsslab.lab.scenario import ScenarioErrors, load_scenario_text
from ftsslab.lab.sim import SimBackend
from ftsslab.lab.tcp import RST, SYN, Tcb, TcpState, decode
from ftsslab.nas.half import ReceiveHalf, SendHalf, SplitState, restore_tcb, state_of

CLIENT, VIP = ("10.0.0.1", 40000), ("10.0.0.100", 80)
OPTS = {"options": True, "mss": 1460, "rcvbuf": 1 << 20, "max_retries": 12}


class SplitWire:
    """Client <-> d1; after the split the client's segments reach the receiving half (Fig. 7:
    d2, Fig. 8: still d1, muted), which relays Updates to the sending half (Fig. 7: d1, Fig. 8:
    d2). Segments are lost with ``loss``; segments and Updates are delayed up to ``jitter``
    (so reordered)."""

    def __init__(self, rng: random.Random, loss: float, jitter: float) -> None:
        self.rng, self.loss, self.jitter = rng, loss, jitter
        self.now, self.flight, self.order = 0.0, [], itertools.count()
        self.sent, self.muted = [], []
        self.client, segs = Tcb.connect(CLIENT, VIP, 0xFFFF_0000, 0.0, **OPTS)
        self.d1: Tcb | None = None
        self.send: SendHalf | None = None
        self.recv: ReceiveHalf | None = None
        self.mute = False  # Fig. 8: the receiving half "cannot send acknowledgments"
        self.whole = False  # Fig. 7's end: the receiving half has the whole connection
        self.put("server", segs)

    def put(self, to: str, segs, delay: float = 0.001) -> None:
        for seg in segs:
            if to != "update":
                self.sent.append(seg)
            if to != "update" and self.loss and self.rng.random() < self.loss:
                continue  # (an Update is a TCH request: resent until acknowledged)
            late = self.rng.random() * self.jitter
            data = seg if to == "update" else seg.encode()
            heapq.heappush(self.flight, (self.now + delay + late, next(self.order), to, data))

    def split(self, fig: int) -> None:
        """Fig. 7: the client direction goes to d2 (the switch entry moved); Fig. 8: d2 sends,
        from where d1 stopped (drained)."""
        state = state_of(self.d1)
        other = restore_tcb(state, SplitState.of(self.d1), self.now, **OPTS)
        if fig == 7:
            self.send = SendHalf(self.d1)
            self.recv = ReceiveHalf(other, client_ack=state["snd_una"])
        else:
            self.send, self.recv, self.mute = SendHalf(other), ReceiveHalf(self.d1), True

    def _from_receiver(self, segs) -> None:
        if self.mute:
            self.muted += segs
        else:
            self.put("client", segs)

    def _server_in(self, seg) -> None:
        if self.recv is None:
            if self.d1 is None:
                if seg.flags & SYN:
                    self.d1, out = Tcb.accept(seg, 7, self.now, **OPTS)
                    self.put("client", out)
                return
            self.put("client", self.d1.on_segment(seg, self.now))
            return
        self._from_receiver(self.recv.on_segment(seg, self.now))
        if not self.whole and (upd := self.recv.relay()) is not None:
            self.put("update", [upd])

    def step(self) -> bool:
        tcbs = {id(t): t for t in (self.client, self.d1, self.recv and self.recv.tcb,
                                   self.send and self.send.tcb) if t}
        due = [d for t in tcbs.values() if (d := t.next_deadline()) is not None]
        if self.flight:
            due.append(self.flight[0][0])
        if not due:
            return False
        self.now = max(self.now, min(due))
        if self.flight and self.flight[0][0] <= self.now:
            _, _, to, data = heapq.heappop(self.flight)
            if to == "update":
                if not self.whole:
                    self.put("client", self.send.on_update(data, self.now))
                return True
            seg = decode(data, verify=True)
            if to == "client":
                self.put("server", self.client.on_segment(seg, self.now))
            else:
                self._server_in(seg)
            return True
        self.put("server", self.client.on_timer(self.now))
        if self.recv is None:
            if self.d1 is not None:
                self.put("client", self.d1.on_timer(self.now))
            return True
        if not self.whole:
            self.put("client", self.send.outgoing(self.send.tcb.on_timer(self.now)))
        self._from_receiver(self.recv.tcb.on_timer(self.now))
        return True


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32), loss=st.sampled_from([0.0, 0.01, 0.05]),
       jitter=st.sampled_from([0.0, 0.0005, 0.003]),
       first=st.integers(1, 120_000), split_after=st.integers(0, 60_000),
       request=st.integers(1, 5_000), second=st.integers(0, 70_000))
def test_fig7_a_split_connection_keeps_both_byte_streams(seed, loss, jitter, first,
                                                          split_after, request, second):
    """Property (Fig. 7): whatever the first device writes, then the second, the client reads
    in order; what the client writes after the split, the second device reads; the first
    device's SND.UNA reaches its SND.NXT by relayed ACKs alone; no RST anywhere."""
    rng = random.Random(seed)
    a, b, c = rng.randbytes(first), rng.randbytes(request), rng.randbytes(second)
    w = SplitWire(rng, loss, jitter)
    got, left, asked, wrote_c, rest = bytearray(), memoryview(a), b"", False, memoryview(c)
    for _ in range(2_000_000):
        if w.d1 is not None and w.d1.state is TcpState.ESTABLISHED and left and not w.whole:
            n, segs = w.d1.write(bytes(left[:65536]), w.now)
            w.put("client", w.send.outgoing(segs) if w.send else segs)
            left = left[n:]
        got += w.client.read()
        if w.recv is None and w.d1 is not None and w.d1.state is TcpState.ESTABLISHED \
                and len(got) >= min(split_after, first):
            w.split(7)
            _, segs = w.client.write(b, w.now)  # the pipelined request, after the split
            w.put("server", segs)
        if w.recv is not None:
            asked += w.recv.tcb.read()
        if w.recv is not None and not w.whole and not left and w.send.drained \
                and asked == b:
            w.whole = True  # Complete, Ack, Done: the first device lets go
            w.d1.drop()
            assert w.recv.tcb.snd_una == w.d1.snd_nxt
        if w.whole and not wrote_c:
            n, segs = w.recv.tcb.write(bytes(rest[:65536]), w.now)
            w.put("client", segs)
            rest = rest[n:]
            wrote_c = not rest
        if wrote_c and len(got) == first + second:
            break
        if not w.step():
            break
    assert bytes(got) == a + c
    assert asked == b
    assert w.send.relayed > 0 or first <= split_after
    assert not w.client.reset and not w.recv.tcb.reset
    assert not any(s.flags & RST for s in w.sent)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32), loss=st.sampled_from([0.0, 0.01, 0.05]),
       jitter=st.sampled_from([0.0, 0.0005, 0.003]),
       size=st.integers(1, 200_000), split_at=st.integers(1, 150_000))
def test_fig8_the_second_device_sends_the_rest_acknowledged_through_the_first(
        seed, loss, jitter, size, split_at):
    """Property (Fig. 8): the first device writes part of the body and drains; the second
    sends the rest from where the client is; the client reads the body in order; the second
    device's SND.UNA reaches its SND.NXT by the ACKs the first relays; the first device sends
    the client nothing after the split; no RST."""
    rng = random.Random(seed)
    body = rng.randbytes(size)
    cut = min(split_at, size - 1) if size > 1 else 0
    w = SplitWire(rng, loss, jitter)
    got, left, sent_before = bytearray(), memoryview(body[:cut]), None
    rest = memoryview(body[cut:])
    for _ in range(2_000_000):
        if w.recv is None and w.d1 is not None and w.d1.state is TcpState.ESTABLISHED \
                and not left and not w.d1.unacked:
            w.split(8)
            sent_before = len(w.sent)
        if w.d1 is not None and w.d1.state is TcpState.ESTABLISHED:
            tcb, part = (w.d1, left) if w.recv is None else (w.send.tcb, rest)
            if part:
                n, segs = tcb.write(bytes(part[:65536]), w.now)
                w.put("client", w.send.outgoing(segs) if w.send else segs)
                if w.recv is None:
                    left = left[n:]
                else:
                    rest = rest[n:]
        got += w.client.read()
        if w.recv is not None and not rest and w.send.drained and len(got) == size:
            break
        if not w.step():
            break
    assert bytes(got) == body
    assert w.send.relayed > 0 or not rest
    assert w.send.drained and w.send.acked == len(body) - cut
    after = w.sent[sent_before:]
    assert not any(s.sport == VIP[1] and s.src == VIP[0] and s in w.muted for s in after)
    assert not any(s.flags & RST for s in w.sent)
    assert not w.client.reset


def test_the_split_state_round_trips_and_never_raises_on_junk():
    s = SplitState(True, 0xDEADBEEF, 12345)
    assert SplitState.unpack(s.pack()) == s
    assert SplitState.unpack(b"") is None
    assert SplitState.unpack(b"HALF\x07" + bytes(8)) is None
    assert SplitState.unpack(b"NOPE" + bytes(9)) is None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40))
def test_split_state_parser_never_raises(data):
    got = SplitState.unpack(data)
    assert got is None or got.pack() == data[:13]


def test_an_update_with_missing_fields_is_ignored():
    w = SplitWire(random.Random(1), 0.0, 0.0)
    while w.d1 is None or w.d1.state is not TcpState.ESTABLISHED:
        w.step()
    half = SendHalf(w.d1)
    assert half.on_update({"snd_una": 1}, w.now) == []
    assert half.on_update({"snd_una": 1, "snd_wnd": "x", "ack": 2, "rcv_wnd": 3}, w.now) == []
    assert (half.relayed, half.malformed) == (0, 2)


# ---- the scenario's side: the handoff step's type, tcp: user, the sim's refusal --------------

HALF_SCENARIO = Path(__file__).resolve().parents[2] / "scenarios" / "nas-half-client.yaml"


def _variant(old: str, new: str) -> str:
    text = HALF_SCENARIO.read_text()
    assert old in text
    return text.replace(old, new)


def test_the_handoff_type_and_tcp_user_are_validated():
    with pytest.raises(ScenarioErrors) as info:
        load_scenario_text(_variant("type: half-client", "type: quarter"), "t.yaml")
    assert "not a handoff type: 'quarter'" in str(info.value)
    with pytest.raises(ScenarioErrors) as info:
        load_scenario_text(_variant("    tch: messages\n", ""), "t.yaml")
    assert "hands connections off by the second embodiment's messages" in str(info.value)
    with pytest.raises(ScenarioErrors) as info:
        load_scenario_text(_variant("    tcp: user\n", "    tcp: user\n    proxy_limit: 1000\n"),
                           "t.yaml")
    assert "the device model, which has no proxy_limit yet" in str(info.value)
    scenario = load_scenario_text(HALF_SCENARIO.read_text(), "t.yaml")
    assert [s.type for s in scenario.steps if isinstance(s, Handoff)] == ["half-client"]
    assert [s.pipeline for s in scenario.steps if isinstance(s, Fetch)] == [True]


def test_a_half_handoff_between_kernel_devices_is_refused():
    """D2.6: one kernel socket cannot be split, so the step fails with a named reason."""
    text = _variant("    tcp: user\n", "")
    with pytest.raises(BackendError, match="give both devices tcp: user"):
        Runner(load_scenario_text(text, "t.yaml"), SimBackend()).run()


def test_a_pipelined_fetch_sends_the_next_request_at_half_the_body():
    target = parse_urls(("http://10.0.0.100/a", "http://10.0.0.100/b", "http://10.0.0.100/c"))
    f = HttpFetch(target, pipeline=True)
    assert f.requests().count(b"GET ") == 1 and f.due() == b""
    f.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n1234")
    assert f.due() == b""
    f.feed(b"5")
    assert f.due().startswith(b"GET /b ") and f.due() == b""
    f.feed(b"67890HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")  # b answered at once
    assert f.due().startswith(b"GET /c ")
    assert HttpFetch(target).requests().count(b"GET ") == 3
