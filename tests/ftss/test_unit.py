"""ServerUnit (seed 000 Fig. 5, unit 122), alone and end to end with an FtssCore over a
lossy fabric: exactly-once delivery under drops, duplicates and reordering."""

from __future__ import annotations

import heapq
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ftsslab.fast import ftss as wire
from ftsslab.ftss import actions as A
from ftsslab.ftss.actions import Forget, Persist, Transmit
from ftsslab.ftss.core import FtssCore
from ftsslab.ftss.unit import ServerUnit

from .test_core import APP, FTSS_MACS, NODE_MACS, inner

TO_FTSS = {(1, "fa"): "a1", (1, "fb"): "b1", (2, "fa"): "a2", (2, "fb"): "b2"}
TO_UNIT = {v: k for k, v in TO_FTSS.items()}


def unit(node: int = 1, **kw) -> ServerUnit:
    ports = {"fa": NODE_MACS[TO_FTSS[(node, "fa")]], "fb": NODE_MACS[TO_FTSS[(node, "fb")]]}
    ftss = {"fa": FTSS_MACS[TO_FTSS[(node, "fa")]], "fb": FTSS_MACS[TO_FTSS[(node, "fb")]]}
    return ServerUnit(node, ports, ftss, "stack", [APP[node]], fc_id=0x010000 | node << 8,
                      **kw)


def decode(t: Transmit) -> dict:
    d = wire.parse_ftss_frame(t.frame)
    assert d is not None and d["fc"]["crc_ok"]
    return d


def from_ftss(port: str, message: bytes, ox: int = 5) -> bytes:
    return wire.build_ftss_frame(NODE_MACS[TO_FTSS[(1, port)]], FTSS_MACS[TO_FTSS[(1, port)]],
                                 message, d_id=0x010100, s_id=A.FTSS_FC_ID, ox_id=ox)


def test_hello_on_both_links_at_start():
    u = unit()
    assert u.next_deadline() == 0.0
    out = u.on_timer(0.0)
    assert [(t.port, decode(t)["opcode"]) for t in out] == [("fa", wire.FTSS_OP_HELLO),
                                                            ("fb", wire.FTSS_OP_HELLO)]
    assert decode(out[0])["macs"] == [APP[1]]


def test_stack_frame_becomes_pkt_on_fabric_a_then_retransmitted_on_b():
    u = unit(retry=0.01)
    u.on_timer(0.0)
    (t,) = u.on_frame("stack", inner(APP[2]), 0.0)
    d = decode(t)
    assert t.port == "fa" and d["opcode"] == wire.FTSS_OP_PKT and d["src_node"] == 1
    assert bytes(d["payload"]) == inner(APP[2]) and d["flags"] == 0
    (r,) = [x for x in u.on_timer(0.011) if decode(x)["opcode"] == wire.FTSS_OP_PKT]
    dr = decode(r)
    assert r.port == "fb" and dr["msg_id"] == d["msg_id"]
    assert dr["flags"] & A.FTSS_FLAG_ALTPATH and dr["pkt_flags"] & A.FTSS_PKT_RETRANSMIT
    u.on_frame("fb", from_ftss("fb", wire.build_ack(d["msg_id"], 92)), 0.012)
    assert u.pending == {} and u.outcome[d["msg_id"]] == A.FTSS_ACK_STORED_GUARANTEED
    assert [x for x in u.on_timer(0.05) if decode(x)["opcode"] == wire.FTSS_OP_PKT] == []


def test_link_failure_resends_at_once_on_the_other_link():
    u = unit(retry=10.0)
    u.on_timer(0.0)
    (t,) = u.on_frame("stack", inner(APP[2]), 0.0)
    u.set_port("fa", False)
    assert u.next_deadline() == 0.0
    (r,) = u.on_timer(0.001)
    assert r.port == "fb" and decode(r)["msg_id"] == decode(t)["msg_id"]


def test_incoming_pkt_delivered_once_and_acked_every_time():
    u = unit()
    frame = inner(APP[1], APP[2])
    msg = from_ftss("fa", wire.build_pkt(77, 2, frame), ox=33)
    out = u.on_frame("fa", msg, 0.0)
    assert out[0] == Transmit("stack", frame)
    ack = decode(out[1])
    assert (ack["msg_id"], ack["status"], ack["node_id"]) == (77, A.FTSS_ACK_DELIVERED, 1)
    assert ack["fc"]["ox_id"] == 33 and ack["fc"]["f_ctl"] == A.FC_FCTL_ANSWER
    again = u.on_frame("fb", from_ftss("fb", wire.build_pkt(77, 2, frame)), 0.1)
    assert [t.port for t in again] == ["fb"]  # duplicate: re-acked, not delivered
    other = u.on_frame("fa", from_ftss("fa", wire.build_pkt(77, 3, frame)), 0.2)
    assert other[0].port == "stack"  # same msg id from another source is another packet
    roll = u.on_frame("fa", from_ftss("fa", wire.build_pkt(77, 2, frame,
                                                            pkt_flags=A.FTSS_PKT_ROLLBACK)), 0.3)
    assert roll[0] == Transmit("stack", frame)  # roll back: handed over again


def test_restart_epoch_gives_new_msg_ids():
    a, b = unit(epoch=0), unit(epoch=1)
    ta = a.on_frame("stack", inner(APP[2]), 0.0)[0]
    tb = b.on_frame("stack", inner(APP[2]), 0.0)[0]
    assert decode(ta)["msg_id"] != decode(tb)["msg_id"]


def test_gives_up_after_max_tries():
    u = unit(retry=0.01, max_tries=3)
    u.on_frame("stack", inner(APP[2]), 0.0)
    for i in range(1, 6):
        u.on_timer(i * 0.011)
    assert u.pending == {} and u.stats["gave_up"] == 1


def test_malformed_from_fabric_is_rejected_and_runts_from_stack_dropped():
    u = unit()
    bad = bytearray(from_ftss("fa", wire.build_pkt(1, 2, inner(APP[1]))))
    bad[-9] ^= 1
    (t,) = u.on_frame("fa", bytes(bad), 0.0)
    assert decode(t)["status"] == A.FTSS_ACK_REJECTED
    assert u.on_frame("stack", b"abc", 0.0) == [] and u.stats["stack_runt"] == 1


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(["fa", "fb", "stack", "x"]), st.binary(max_size=120)),
                max_size=10))
def test_arbitrary_bytes_never_raise(frames):
    u = unit(mode="file")
    for port, frame in frames:
        u.on_frame(port, frame, 0.0)
        u.on_timer(0.5)
    assert "internal_error" not in u.stats


# ---- end to end over a hostile fabric -----------------------------------------------------


class Fabric:
    """Unit 1 and unit 2 wired to one FtssCore; frames can be dropped, duplicated, delayed."""

    def __init__(self, rng: random.Random, loss: float, dup: float, jitter: float, mode: str):
        self.rng, self.loss, self.dup, self.jitter = rng, loss, dup, jitter
        self.core = FtssCore(92, FTSS_MACS, retry=0.02)
        self.units = {n: unit(n, retry=0.02, mode=mode, poll=0.01, max_tries=10**6)
                      for n in (1, 2)}
        self.queue: list = []
        self.seq = 0
        self.now = 0.0
        self.store: dict[int, bytes] = {}
        self.unsynced: list[Persist] = []
        self.stacks: dict[int, list[bytes]] = {1: [], 2: []}
        self.chaos = False

    def _put(self, dst: tuple, frame: bytes) -> None:
        if self.chaos and self.rng.random() < self.loss:
            return
        copies = 2 if self.chaos and self.rng.random() < self.dup else 1
        for _ in range(copies):
            delay = 1e-5 + (self.rng.random() * self.jitter if self.chaos else 0)
            heapq.heappush(self.queue, (self.now + delay, self.seq, dst, frame))
            self.seq += 1

    def unit_out(self, node: int, actions: list) -> None:
        for t in actions:
            if t.port == "stack":
                self.stacks[node].append(t.frame)
            else:
                self._put(("ftss", TO_FTSS[(node, t.port)]), t.frame)

    def ftss_out(self, actions: list) -> None:
        for a in actions:
            if isinstance(a, Persist):
                self.unsynced.append(a)
            elif isinstance(a, Forget):
                self.store.pop(a.record_id, None)
                self.unsynced = [p for p in self.unsynced if p.record_id != a.record_id]
            else:
                self._put(TO_UNIT[a.port], a.frame)

    def step(self, dt: float) -> None:
        end = self.now + dt
        while self.queue and self.queue[0][0] <= end:
            self.now, _, dst, frame = heapq.heappop(self.queue)
            if dst[0] == "ftss":
                self.ftss_out(self.core.on_frame(dst[1], frame, self.now))
            else:
                self.unit_out(dst[0], self.units[dst[0]].on_frame(dst[1], frame, self.now))
        self.now = end
        if self.unsynced and (not self.chaos or self.rng.random() < 0.5):  # group commit
            done, self.unsynced = self.unsynced, []
            for p in done:
                self.store[p.record_id] = p.payload
            for p in done:
                self.ftss_out(self.core.on_durable(p.record_id, self.now))
        for n, u in self.units.items():
            if due(u.next_deadline(), self.now):
                self.unit_out(n, u.on_timer(self.now))
        if due(self.core.next_deadline(), self.now):
            self.ftss_out(self.core.on_timer(self.now))


def due(deadline: float | None, now: float) -> bool:
    return deadline is not None and deadline <= now


def run_exactly_once(seed: int, count: int, loss: float, dup: float, jitter: float, mode: str):
    rng = random.Random(seed)
    net = Fabric(rng, loss, dup, jitter, mode)
    for _ in range(20):  # HELLOs: routing table 146 learns both servers
        net.step(0.001)
    net.chaos = True
    sent = []
    for i in range(count):
        frame = inner(APP[2], body=b"msg-%05d" % i)
        sent.append(frame)
        net.unit_out(1, net.units[1].on_frame("stack", frame, net.now))
        net.step(rng.random() * 0.005)
    for _ in range(300):
        net.step(0.002)
    net.chaos = False
    for _ in range(1500):
        net.step(0.002)
        if not net.units[1].pending and not net.core.stored and not net.queue:
            break
    assert sorted(net.stacks[2]) == sorted(sent)  # each exactly once
    assert net.units[1].pending == {}
    assert set(net.units[1].outcome.values()) == {A.FTSS_ACK_STORED_GUARANTEED}
    assert net.core.stored == {} and net.store == {}
    assert "internal_error" not in net.core.stats


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32), st.integers(1, 12), st.floats(0, 0.4), st.floats(0, 0.3),
       st.floats(0, 0.03))
def test_exactly_once_under_drops_duplicates_reordering(seed, count, loss, dup, jitter):
    run_exactly_once(seed, count, loss, dup, jitter, "packet")


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32), st.integers(1, 6), st.floats(0, 0.3), st.floats(0, 0.3))
def test_exactly_once_file_mode(seed, count, loss, dup):
    run_exactly_once(seed, count, loss, dup, 0.01, "file")
