"""ServerUnit (seed 000 Fig. 5, unit 122), alone and end to end with an FtssCore over a
lossy fabric: exactly-once delivery under drops, duplicates and reordering."""

from __future__ import annotations

import heapq
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ftsslab.fast import ftss as wire
from ftsslab.ftss import actions as A
from ftsslab.ftss import unit as unit_mod
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


def test_link_failure_resends_at_once_on_the_other_link_in_order():
    u = unit(retry=10.0)
    u.on_timer(0.0)
    sent = [decode(u.on_frame("stack", inner(APP[2], body=b"%d" % i), 0.0)[0])["msg_id"]
            for i in range(3)]
    again = u.on_port("fa", False, 0.001)
    assert [(t.port, decode(t)["msg_id"]) for t in again] == [("fb", m) for m in sent]
    (t,) = u.on_frame("stack", inner(APP[2]), 0.002)  # and what comes next follows them
    assert t.port == "fb"


def synced(u: ServerUnit) -> ServerUnit:
    """The FTSS answered the unit's HELLO on both links: it takes packets from now on."""
    for port in ("fa", "fb"):
        u.on_frame(port, from_ftss(port, wire.build_status(1, 1, [APP[1]])), 0.0)
    return u


def test_packets_before_the_ftss_answered_a_hello_are_dropped():
    u = unit()
    (hello, _) = u.on_timer(0.0)
    assert decode(hello)["seq"] == 1  # "(re)started"
    msg = from_ftss("fa", wire.build_pkt(77, 2, inner(APP[1], APP[2])))
    assert u.on_frame("fa", msg, 0.0) == [] and u.stats["before_sync"] == 1
    u.on_frame("fa", from_ftss("fa", wire.build_status(1, 1, [APP[1]])), 0.0)
    assert u.on_frame("fa", msg, 0.0)[0].port == "stack"
    assert u.on_frame("fb", from_ftss("fb", wire.build_pkt(78, 2, inner(APP[1]))), 0.0) == []
    assert [decode(h)["seq"] for h in u.on_timer(1.0)] == [2, 2]  # in sync: counting on


def batch(u: ServerUnit, now: float, *frames: tuple[str, bytes]) -> list[Transmit]:
    """One batch of frames from the fabric and its ``flush``: what goes out (no records)."""
    out = [t for port, frame in frames for t in u.on_frame(port, frame, now)]
    return [t for t in out + u.flush(now) if isinstance(t, Transmit)]


def test_incoming_pkt_delivered_once_and_acked_every_time():
    u = synced(unit())
    frame = inner(APP[1], APP[2])
    msg = from_ftss("fa", wire.build_pkt(77, 2, frame), ox=33)
    out = batch(u, 0.0, ("fa", msg))
    assert out[0] == Transmit("stack", frame)
    ack = decode(out[1])
    assert (ack["msg_id"], ack["status"], ack["node_id"], ack["more"]) == \
        (77, A.FTSS_ACK_DELIVERED, 1, 0)
    assert ack["fc"]["ox_id"] == 33 and ack["fc"]["f_ctl"] == A.FC_FCTL_ANSWER
    again = batch(u, 0.1, ("fb", from_ftss("fb", wire.build_pkt(77, 2, frame))))
    assert [t.port for t in again] == ["fb"]  # duplicate: re-acked, not delivered
    other = batch(u, 0.2, ("fa", from_ftss("fa", wire.build_pkt(77, 3, frame))))
    assert other[0].port == "stack"  # same msg id from another source is another packet
    roll = batch(u, 0.3, ("fa", from_ftss("fa", wire.build_pkt(77, 2, frame,
                                                                pkt_flags=A.FTSS_PKT_ROLLBACK))))
    assert roll[0] == Transmit("stack", frame)  # roll back: handed over again


def test_a_batch_of_deliveries_is_acknowledged_by_one_ack_per_run():
    """Consecutive msg ids of one source on one port: one ACK (the first's exchange, ``more``
    the rest); another source, another port or a gap starts the next."""
    u = synced(unit())
    frame = inner(APP[1], APP[2])
    pkts = [("fa", 10, 2), ("fa", 11, 2), ("fa", 12, 2), ("fa", 5, 3), ("fa", 13, 2),
            ("fb", 14, 2), ("fb", 15, 2), ("fb", 17, 2)]
    out = batch(u, 0.0, *[(p, from_ftss(p, wire.build_pkt(m, src, frame), ox=100 + m))
                          for p, m, src in pkts])
    assert [t.port for t in out[:8]] == ["stack"] * 8
    acks = [(t.port, decode(t)["msg_id"], decode(t)["more"], decode(t)["fc"]["ox_id"])
            for t in out[8:]]
    assert acks == [("fa", 10, 2, 110), ("fa", 5, 0, 105), ("fa", 13, 0, 113),
                    ("fb", 14, 1, 114), ("fb", 17, 0, 117)]


def test_one_ack_settles_the_run_of_msg_ids_it_names():
    u = synced(unit(window=8))
    sent = [decode(t)["msg_id"] for i in range(5)
            for t in u.on_frame("stack", inner(APP[2], body=b"%d" % i), 0.0)]
    assert len(sent) == 5 and sent == list(range(sent[0], sent[0] + 5))
    u.on_frame("fa", from_ftss("fa", wire.build_ack(sent[1], 92, more=2)), 0.001)
    assert sorted(u.pending) == [sent[0], sent[4]]
    assert u.stats["ack_1"] == 3 and not u.stats.get("stale_ack")
    # the longest range a frame can name settles what is pending in it, and no more
    u.on_frame("fa", from_ftss("fa", wire.build_ack(sent[4], 92, more=wire.MAX_ACK_MORE)), 0.002)
    assert sorted(u.pending) == [sent[0]] and u.stats["ack_1"] == 4


def test_restart_epoch_gives_new_msg_ids():
    a, b = unit(epoch=0), unit(epoch=1)
    ta = a.on_frame("stack", inner(APP[2]), 0.0)[0]
    tb = b.on_frame("stack", inner(APP[2]), 0.0)[0]
    assert decode(ta)["msg_id"] != decode(tb)["msg_id"]


def test_gives_up_after_max_tries():
    u = unit(retry=0.01, max_tries=3)
    u.on_frame("stack", inner(APP[2]), 0.0)
    for i in range(1, 6):
        u.on_timer(float(i))  # past every backed-off timeout
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


# ---- end to end over a hostile fabric -----------------------------------------------------


class Fabric:
    """Unit 1 and unit 2 wired to one FtssCore; frames can be dropped, duplicated, delayed;
    links cut, units killed and restarted (with the seen keys their store kept)."""

    def __init__(self, rng: random.Random, loss: float, dup: float, jitter: float, mode: str):
        self.rng, self.loss, self.dup, self.jitter = rng, loss, dup, jitter
        self.mode = mode
        self.core = FtssCore(92, FTSS_MACS, retry=0.02)
        self.lives = {1: 0, 2: 0}
        self.units = {n: self._unit(n) for n in (1, 2)}
        self.queue: list = []
        self.seq = 0
        self.now = 0.0
        self.store: dict[int, bytes] = {}
        self.unsynced: list[Persist] = []
        self.unit_store: dict[int, dict[int, bytes]] = {1: {}, 2: {}}
        self.stacks: dict[int, list[bytes]] = {1: [], 2: []}
        self.chaos = False
        self.dead: set[int] = set()
        self.cut: set[str] = set()  # FTSS ports whose link is down
        self.drop = lambda dst, frame: False  # a test's filter: True loses the frame

    def _unit(self, n: int) -> ServerUnit:
        return unit(n, retry=0.02, mode=self.mode, poll=0.01, max_tries=10**6,
                    epoch=self.lives[n])

    def kill(self, node: int) -> None:
        self.dead.add(node)

    def restart(self, node: int) -> None:
        """A new life: new msg-id epoch, the seen keys of its store recovered."""
        self.dead.discard(node)
        self.lives[node] += 1
        self.units[node] = self._unit(node)
        records = [(rid, unit_mod.REC_SEEN, p) for rid, p in sorted(self.unit_store[node].items())]
        self.units[node].recover(records, self.now)

    def set_link(self, ftss_port: str, up: bool) -> None:
        (self.cut.discard if up else self.cut.add)(ftss_port)
        node, uport = TO_UNIT[ftss_port]
        self.ftss_out(self.core.on_port(ftss_port, up, self.now))
        if node not in self.dead:
            self.unit_out(node, self.units[node].on_port(uport, up, self.now))

    def _put(self, dst: tuple, frame: bytes) -> None:
        port = dst[1] if dst[0] == "ftss" else TO_FTSS[dst]
        if port in self.cut or self.drop(dst, frame):
            return
        if self.chaos and self.rng.random() < self.loss:
            return
        copies = 2 if self.chaos and self.rng.random() < self.dup else 1
        for _ in range(copies):
            delay = 1e-5 + (self.rng.random() * self.jitter if self.chaos else 0)
            heapq.heappush(self.queue, (self.now + delay, self.seq, dst, frame))
            self.seq += 1

    def unit_out(self, node: int, actions: list) -> None:
        actions = list(actions) + self.units[node].flush(self.now)  # a batch of one event
        for t in actions:
            if isinstance(t, Persist):  # the unit's seen keys: durable at once here
                self.unit_store[node][t.record_id] = t.payload
                continue
            if isinstance(t, Forget):
                self.unit_store[node].pop(t.record_id, None)
                continue
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
            elif dst[0] not in self.dead:
                self.unit_out(dst[0], self.units[dst[0]].on_frame(dst[1], frame, self.now))
        self.now = end
        if self.unsynced and (not self.chaos or self.rng.random() < 0.5):  # group commit
            done, self.unsynced = self.unsynced, []
            for p in done:
                self.store[p.record_id] = p.payload
            for p in done:
                self.ftss_out(self.core.on_durable(p.record_id, self.now))
        for n, u in self.units.items():
            if n not in self.dead and due(u.next_deadline(), self.now):
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


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32), st.integers(1, 12), st.floats(0, 0.4), st.floats(0, 0.3),
       st.floats(0, 0.03))
def test_exactly_once_under_drops_duplicates_reordering(seed, count, loss, dup, jitter):
    run_exactly_once(seed, count, loss, dup, jitter, "packet")


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32), st.integers(1, 6), st.floats(0, 0.3), st.floats(0, 0.3))
def test_exactly_once_file_mode(seed, count, loss, dup):
    run_exactly_once(seed, count, loss, dup, 0.01, "file")


# ---- order per source and exactly once across a receiver restart and a link cut ----------


def quiet(net: Fabric) -> Fabric:
    for _ in range(20):  # HELLO / STATUS: routing table 146 learns both, both in sync
        net.step(0.001)
    return net


def stream(net: Fabric, count: int, events: dict[int, callable]) -> list[bytes]:
    """Unit 1's stack sends ``count`` frames to app 2, one per ms; ``events[i]`` runs
    before frame i. Returns what was sent, after the network drained."""
    sent = []
    for i in range(count):
        if i in events:
            events[i](net)
        frame = inner(APP[2], body=b"msg-%05d" % i)
        sent.append(frame)
        net.unit_out(1, net.units[1].on_frame("stack", frame, net.now))
        net.step(0.001)
    for _ in range(3000):
        net.step(0.002)
        if not net.units[1].pending and not net.core.stored and not net.queue:
            break
    return sent


@pytest.mark.parametrize("dead", [2, 30])
def test_receiver_restart_keeps_order_and_exactly_once(dead):
    """srv2 dies mid-stream and comes back as a new unit ``dead`` ms later -- after its
    lane timed out (30), or before (2: only its seq-1 HELLO tells the FTSS): the FTSS
    re-sends from the oldest packet it holds for it, and nothing newer overtakes it."""
    net = quiet(Fabric(random.Random(0), 0, 0, 0, "packet"))
    sent = stream(net, 200, {60: lambda n: n.kill(2), 60 + dead: lambda n: n.restart(2)})
    assert "reordered" not in net.units[2].stats
    assert net.stacks[2] == sent
    assert net.core.stats["node_restarted"] >= 1


def test_link_cut_mid_stream_keeps_order_and_exactly_once():
    net = quiet(Fabric(random.Random(0), 0, 0, 0, "packet"))
    sent = stream(net, 200, {50: lambda n: n.set_link("a2", False),
                             100: lambda n: n.set_link("b1", False),
                             150: lambda n: n.set_link("a2", True)})
    assert net.stacks[2] == sent


def test_a_lost_delivered_ack_and_a_restart_deliver_once():
    """The gap the seen keys close: srv2 hands a packet up, its DELIVERED ack is lost, srv2
    restarts; the FTSS re-sends the packet to the new unit, which must not hand it up again
    (it did, before the keys were persisted)."""
    net = quiet(Fabric(random.Random(0), 0, 0, 0, "packet"))
    lost = []

    def drop(dst, frame):
        d = wire.parse_ftss_frame(frame)
        if dst[0] == "ftss" and d["opcode"] == wire.FTSS_OP_ACK and \
                d["status"] == A.FTSS_ACK_DELIVERED and not lost:
            lost.append(frame)
            return True
        return False

    net.drop = drop
    frame = inner(APP[2], body=b"once")
    net.unit_out(1, net.units[1].on_frame("stack", frame, net.now))
    while not lost:
        net.step(0.0001)
    assert net.stacks[2] == [frame]
    net.restart(2)
    for _ in range(500):
        net.step(0.002)
    assert net.stacks[2] == [frame] and net.core.stored == {}
