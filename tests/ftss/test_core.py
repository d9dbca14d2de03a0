"""FtssCore (seed 000 Figs. 6-8): routing decisions, durability before acks, retries,
retention and roll back, file-I/O spools, bad input, recovery."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ftsslab.fast import ftss as wire
from ftsslab.ftss import actions as A
from ftsslab.ftss.actions import Forget, Persist, Transmit
from ftsslab.ftss.core import FtssCore
from ftsslab.ftss.delivery import Rto
from ftsslab.layers import ftss as L

FTSS_MACS = {"a1": "0e:fc:00:00:00:a1", "b1": "0e:fc:00:00:00:b1",
             "a2": "0e:fc:00:00:00:a2", "b2": "0e:fc:00:00:00:b2"}
NODE_MACS = {"a1": "0e:fc:00:01:00:0a", "b1": "0e:fc:00:01:00:0b",
             "a2": "0e:fc:00:02:00:0a", "b2": "0e:fc:00:02:00:0b"}
APP = {1: "02:00:00:00:00:01", 2: "02:00:00:00:00:02"}
PORTS = {1: ("a1", "b1"), 2: ("a2", "b2")}


def inner(dst: str, src: str = APP[1], body: bytes = b"x" * 20) -> bytes:
    return bytes.fromhex(dst.replace(":", "")) + bytes.fromhex(src.replace(":", "")) + \
        b"\x08\x00" + body


def fabric(port: str, message: bytes, ox: int = 1) -> bytes:
    node = 1 if port.endswith("1") else 2
    return wire.build_ftss_frame(FTSS_MACS[port], NODE_MACS[port], message, d_id=A.FTSS_FC_ID,
                                 s_id=0x010000 | node << 8, ox_id=ox)


def hello(node: int, state: int = A.FTSS_NODE_UP, hold: int = 30) -> list[tuple[str, bytes]]:
    return [(p, fabric(p, wire.build_hello(node, 1, [APP[node]], state=state, hold_time=hold)))
            for p in PORTS[node]]


def pkt(msg_id: int, frame: bytes, *, src: int = 1, flags: int = 0, retention: int = 0) -> bytes:
    return fabric(PORTS[src][0], wire.build_pkt(msg_id, src, frame, pkt_flags=flags,
                                                retention=retention))


class Driver:
    """Runs a core's actions: a dict store, transmits collected, fsync on demand."""

    def __init__(self, core: FtssCore):
        self.core = core
        self.store: dict[int, tuple[int, bytes]] = {}
        self.unsynced: list[Persist] = []
        self.sent: list[Transmit] = []
        self.now = 0.0

    def run(self, actions: list) -> list[Transmit]:
        out = []
        for a in actions:
            if isinstance(a, Persist):
                self.unsynced.append(a)
            elif isinstance(a, Forget):
                assert a.record_id in self.store or any(
                    p.record_id == a.record_id for p in self.unsynced)
                self.store.pop(a.record_id, None)
                self.unsynced = [p for p in self.unsynced if p.record_id != a.record_id]
            else:
                out.append(a)
        self.sent += out
        return out

    def frame(self, port: str, frame: bytes) -> list[Transmit]:
        return self.run(self.core.on_frame(port, frame, self.now))

    def fsync(self) -> list[Transmit]:
        done, self.unsynced = self.unsynced, []
        for p in done:
            self.store[p.record_id] = (p.kind, p.payload)
        out = []
        for p in done:
            out += self.run(self.core.on_durable(p.record_id, self.now))
        return out

    def tick(self, dt: float) -> list[Transmit]:
        self.now += dt
        return self.run(self.core.on_timer(self.now))

    def group_commit(self) -> list[Transmit]:
        """``fsync`` as the veth daemon reports it: one ``on_durable_batch`` per commit."""
        done, self.unsynced = self.unsynced, []
        for p in done:
            self.store[p.record_id] = (p.kind, p.payload)
        return self.run(self.core.on_durable_batch([p.record_id for p in done], self.now))


def decode(t: Transmit) -> dict:
    d = wire.parse_ftss_frame(t.frame)
    assert d is not None and d["fc"]["crc_ok"]
    return d


def acks(out: list[Transmit]) -> list[tuple[int, int, int]]:
    return [(d["msg_id"], d["status"], d["reason"]) for t in out if t.port in FTSS_MACS
            for d in [decode(t)] if d["opcode"] == wire.FTSS_OP_ACK]


def pkts(out: list[Transmit], port: str | None = None) -> list[dict]:
    return [d for t in out if (port is None or t.port == port) and t.port in FTSS_MACS
            for d in [decode(t)] if d["opcode"] == wire.FTSS_OP_PKT]


def make(**kw) -> Driver:
    d = Driver(FtssCore(92, FTSS_MACS, **kw))
    for node in (1, 2):
        for port, frame in hello(node):
            d.frame(port, frame)
    d.sent.clear()
    return d


def test_constants_equal_the_scapy_layer():
    for name in dir(A):
        if name.startswith("FTSS_") and hasattr(L, name):
            assert getattr(A, name) == getattr(L, name), name
    assert A.FC_FCTL_ANSWER == 0x980000


def test_hello_fills_routing_table_and_is_answered_with_status():
    d = Driver(FtssCore(92, FTSS_MACS))
    out = d.frame(*hello(2)[0])
    assert decode(out[0])["opcode"] == wire.FTSS_OP_STATUS and out[0].port == "a2"
    assert d.core.lookup(APP[2]) == 2 and d.core.able(2)


def test_guaranteed_ack_only_after_durable_then_delivery_then_forget():
    d = make()
    assert d.frame("a1", pkt(7, inner(APP[2]))) == []  # block 154 first: nothing leaves
    assert len(d.unsynced) == 1
    out = d.fsync()
    assert acks(out) == [(7, A.FTSS_ACK_STORED_GUARANTEED, 0)]  # block 174
    (p,) = pkts(out, "a2")  # block 176, fabric A first, same msg id
    assert (p["msg_id"], p["src_node"], p["flags"]) == (7, 1, 0)
    ack = wire.build_ack(7, 2, A.FTSS_ACK_DELIVERED)
    d.frame("a2", fabric("a2", ack, ox=p["fc"]["ox_id"]))  # block 178
    assert d.store == {} and d.core.stored == {}  # block 172
    assert d.tick(1.0) == []  # no retry after the receipt


def test_a_group_commit_acknowledges_a_run_of_msg_ids_with_one_ack():
    """Consecutive msg ids of one unit with one verdict: one ACK (``more``), the first's
    exchange; a gap, another verdict or another unit starts the next. Acks come first."""
    d = make()
    for msg_id, dst in ((20, APP[2]), (21, APP[2]), (22, APP[2]), (24, APP[2]),
                        (25, "02:00:00:00:00:77"), (26, APP[2])):
        d.frame("a1", fabric("a1", wire.build_pkt(msg_id, 1, inner(dst)), ox=msg_id))
    d.frame("a2", fabric("a2", wire.build_pkt(27, 2, inner(APP[1])), ox=27))
    out = d.group_commit()
    assert [decode(t)["opcode"] for t in out[5:]] == [wire.FTSS_OP_PKT] * 6
    got = [(t.port, decode(t)["msg_id"], decode(t)["more"], decode(t)["status"],
            decode(t)["fc"]["ox_id"]) for t in out[:5]]
    assert got == [("a1", 20, 2, A.FTSS_ACK_STORED_GUARANTEED, 20),
                   ("a1", 24, 0, A.FTSS_ACK_STORED_GUARANTEED, 24),
                   ("a1", 25, 0, A.FTSS_ACK_UNDELIVERABLE, 25),
                   ("a1", 26, 0, A.FTSS_ACK_STORED_GUARANTEED, 26),
                   ("a2", 27, 0, A.FTSS_ACK_STORED_GUARANTEED, 27)]


def test_one_delivered_ack_settles_the_run_it_names():
    d = make()
    for msg_id in (30, 31, 32, 33):
        d.frame("a1", pkt(msg_id, inner(APP[2])))
    first = pkts(d.group_commit(), "a2")[0]
    d.core.stats.pop("stale_ack", None)
    ack = wire.build_ack(30, 2, A.FTSS_ACK_DELIVERED, more=2)
    d.frame("a2", fabric("a2", ack, ox=first["fc"]["ox_id"]))
    assert sorted(p.msg_id for p in d.core.stored.values()) == [33]
    assert d.core.stats["delivered"] == 3 and not d.core.stats.get("stale_ack")
    # a range naming a msg id that is not waiting for node 2 (35) settles the rest only
    d.frame("a1", pkt(34, inner(APP[2])))
    d.group_commit()
    (p33,) = [q for q in pkts(d.sent, "a2") if q["msg_id"] == 33]
    d.frame("a2", fabric("a2", wire.build_ack(33, 2, A.FTSS_ACK_DELIVERED, more=2),
                         ox=p33["fc"]["ox_id"]))
    assert d.core.stored == {} and d.core.stats["delivered"] == 5
    # the longest range a frame can name settles only what waits for the node in it
    for msg_id in (40, 41, 60):
        d.frame("a1", pkt(msg_id, inner(APP[2])))
    (p40, *_) = pkts(d.group_commit(), "a2")
    d.frame("a2", fabric("a2", wire.build_ack(40, 2, A.FTSS_ACK_DELIVERED,
                                              more=wire.MAX_ACK_MORE), ox=p40["fc"]["ox_id"]))
    assert d.core.stored == {} and d.core.stats["delivered"] == 8


def test_destination_down_is_undeliverable_and_forgotten():
    d = make()
    for port, frame in hello(2, state=A.FTSS_NODE_MAINTENANCE):
        d.frame(port, frame)
    d.frame("a1", pkt(8, inner(APP[2])))
    out = d.fsync()
    assert acks(out) == [(8, A.FTSS_ACK_UNDELIVERABLE, A.FTSS_REASON_DEST_DOWN)]  # block 170
    assert pkts(out) == [] and d.store == {}  # block 172


def test_hold_time_expiry_makes_a_node_unable():
    d = Driver(FtssCore(92, FTSS_MACS))
    for port, frame in hello(2, hold=2):
        d.frame(port, frame)
    d.tick(1.0)
    assert d.core.able(2)
    d.tick(1.5)
    assert not d.core.able(2)


def test_unknown_destination_without_external_port():
    d = make()
    d.frame("a1", pkt(9, inner("02:00:00:00:00:77")))
    assert acks(d.fsync()) == [(9, A.FTSS_ACK_UNDELIVERABLE, A.FTSS_REASON_DEST_UNKNOWN)]
    assert d.store == {}


def test_external_destination_best_effort_then_external_port():
    d = make(external_port="ext")
    frame = inner("02:00:00:00:00:96")
    d.frame("a1", pkt(10, frame))
    out = d.fsync()
    assert acks(out) == [(10, A.FTSS_ACK_STORED_BEST_EFFORT, 0)]  # block 160
    assert [t for t in out if t.port == "ext"] == [Transmit("ext", frame)]  # block 164
    assert d.store == {}  # block 166


def test_configured_external_mac_goes_out_even_if_a_node_serves_it():
    d = make(external_port="ext", external_macs=[APP[2]])
    d.frame("a1", pkt(11, inner(APP[2])))
    out = d.fsync()
    assert acks(out)[0][1] == A.FTSS_ACK_STORED_BEST_EFFORT and pkts(out) == []


def test_from_external_port_delivered_or_dropped():
    d = make(external_port="ext")
    assert d.frame("ext", inner(APP[2], src="02:00:00:00:00:96")) == []  # block 182 first
    out = d.fsync()
    (p,) = pkts(out, "a2")  # block 192
    assert p["pkt_flags"] & A.FTSS_PKT_EXTERNAL and p["src_node"] == 92
    assert acks(out) == []  # nobody on the fabric to acknowledge
    d.frame("a2", fabric("a2", wire.build_ack(p["msg_id"], 2, A.FTSS_ACK_DELIVERED),
                         ox=p["fc"]["ox_id"]))  # claim 18
    assert d.store == {}  # block 188 after 192 (claim 19)
    d.frame("ext", inner("02:00:00:00:00:55"))
    assert pkts(d.fsync()) == [] and d.store == {}  # block 188: unknown MAC, deleted


def test_external_origin_retained_and_replayed():
    d = make(external_port="ext", retain=60)
    d.frame("ext", inner(APP[2], src="02:00:00:00:00:96"))
    (p,) = pkts(d.fsync())
    d.frame("a2", fabric("a2", wire.build_ack(p["msg_id"], 2, A.FTSS_ACK_DELIVERED),
                         ox=p["fc"]["ox_id"]))
    d.fsync()
    assert len(d.store) == 2  # claim 20: packet + DELIVERED marker stay queued
    out = d.frame("a2", fabric("a2", wire.build_read(1, A.REPLAY_FILE)))
    assert [q["msg_id"] for q in pkts(out)] == [p["msg_id"]]


def test_external_frame_to_a_file_mode_node_is_spooled():
    d = make(external_port="ext")
    d.frame("a2", fabric("a2", wire.build_list(1, b"in")))
    d.frame("ext", inner(APP[2], src="02:00:00:00:00:96"))
    assert pkts(d.fsync()) == []
    (lst,) = responses(d.frame("a2", fabric("a2", wire.build_list(2, b"in"))))
    assert lst["names"] == [b"in/92-1"]  # claim 21: to the node as a file


def test_file_write_to_an_external_destination():
    d = make(external_port="ext")
    frame = inner("02:00:00:00:00:96")
    d.frame("a1", fabric("a1", wire.build_write(5, b"out/5", frame)))
    out = d.fsync()
    assert acks(out) == [(5, A.FTSS_ACK_STORED_BEST_EFFORT, 0)]  # claim 13
    assert Transmit("ext", frame) in out and d.store == {}


def test_broadcast_reaches_every_node_and_is_kept_until_all_acked():
    d = make(external_port="ext")
    d.frame("a2", fabric("a2", wire.build_pkt(1, 2, inner("ff:ff:ff:ff:ff:ff", APP[2]))))
    out = d.fsync()
    assert acks(out) == [(1, A.FTSS_ACK_STORED_GUARANTEED, 0)]
    assert [t.port for t in out if t.port == "ext"] == ["ext"]
    (p,) = pkts(out, "a1")  # not back to the sender
    assert d.store
    d.frame("a1", fabric("a1", wire.build_ack(1, 1, A.FTSS_ACK_DELIVERED), ox=p["fc"]["ox_id"]))
    assert d.store == {}


def test_broadcast_waits_for_every_receiver():
    d = make()
    core = d.core
    core.add_route(3, ["02:00:00:00:00:03"], {"a1": NODE_MACS["a1"]})  # shares a port: static
    d.frame("a2", fabric("a2", wire.build_pkt(1, 2, inner("ff:ff:ff:ff:ff:ff", APP[2]))))
    out = d.fsync()
    sent = pkts(out)
    assert len(sent) == 2
    d.frame("a1", fabric("a1", wire.build_ack(1, 1, A.FTSS_ACK_DELIVERED),
                         ox=sent[0]["fc"]["ox_id"]))
    assert d.store  # one receiver still owes its receipt
    d.frame("a1", fabric("a1", wire.build_ack(1, 3, A.FTSS_ACK_DELIVERED),
                         ox=sent[1]["fc"]["ox_id"]))
    assert d.store == {}


def test_retry_goes_to_the_other_fabric_port_with_same_msg_id():
    d = make(retry=0.01)
    d.frame("a1", pkt(5, inner(APP[2])))
    (first,) = pkts(d.fsync(), "a2")
    out = d.tick(0.011)
    (p,) = pkts(out, "b2")
    assert p["msg_id"] == 5 and p["flags"] & A.FTSS_FLAG_ALTPATH
    assert p["pkt_flags"] & A.FTSS_PKT_RETRANSMIT
    assert p["fc"]["ox_id"] == first["fc"]["ox_id"]  # one exchange: any copy's ACK settles it
    assert pkts(d.tick(0.011)) == []  # the timeout backs off (RFC 6298) ...
    (p2,) = pkts(d.tick(0.011), "a2")  # ... then back to A
    assert p2["msg_id"] == 5
    late = wire.build_ack(5, 2, A.FTSS_ACK_DELIVERED)  # the first copy's ACK, late
    d.frame("a2", fabric("a2", late, ox=first["fc"]["ox_id"]))
    assert d.core.stored == {} and pkts(d.tick(1.0)) == []


def test_a_timeout_probes_with_the_oldest_only_then_the_rest_follow_in_order():
    """Lane PROBING: after a timeout nothing newer may overtake the oldest packet."""
    d = make(retry=0.01)
    for msg in range(1, 6):
        d.frame("a1", pkt(msg, inner(APP[2])))
    first = pkts(d.fsync(), "a2")
    assert [p["msg_id"] for p in first] == [1, 2, 3, 4, 5]
    (probe,) = pkts(d.tick(0.011))
    assert probe["msg_id"] == 1 and d.sent[-1].port == "b2"
    d.frame("a1", pkt(6, inner(APP[2])))
    assert pkts(d.fsync()) == []  # queued behind the probe
    ack = wire.build_ack(1, 2, A.FTSS_ACK_DELIVERED)
    out = d.frame("b2", fabric("b2", ack, ox=probe["fc"]["ox_id"]))
    assert [(t.port, p["msg_id"]) for t in out for p in pkts([t])] == [
        ("b2", m) for m in (2, 3, 4, 5, 6)]
    assert d.core.lanes[2].state.value == "flowing"


def test_a_restart_hello_on_an_idle_lane_does_not_stall_it():
    d = make()
    d.frame("a1", pkt(1, inner(APP[2])))
    (p,) = pkts(d.fsync())
    d.frame("a2", fabric("a2", wire.build_ack(1, 2, A.FTSS_ACK_DELIVERED), ox=p["fc"]["ox_id"]))
    for port, frame in hello(2):  # seq 1: node 2 restarted, nothing was in flight
        d.frame(port, frame)
    d.frame("a1", pkt(2, inner(APP[2])))
    assert [q["msg_id"] for q in pkts(d.fsync())] == [2]


def test_a_spurious_timeout_sends_nothing_twice():
    """Late ACKs, not lost packets: an ACK of a copy sent before the timeout arrives while
    probing, so after the probe's ACK the rest stay in flight instead of going again."""
    d = make(retry=0.01)
    for msg in range(1, 5):
        d.frame("a1", pkt(msg, inner(APP[2])))
    first = pkts(d.fsync(), "a2")
    (probe,) = pkts(d.tick(0.011))
    late = wire.build_ack(2, 2, A.FTSS_ACK_DELIVERED)  # msg 2's first copy did arrive
    assert pkts(d.frame("a2", fabric("a2", late, ox=first[1]["fc"]["ox_id"]))) == []
    ack = wire.build_ack(1, 2, A.FTSS_ACK_DELIVERED)
    assert pkts(d.frame("b2", fabric("b2", ack, ox=probe["fc"]["ox_id"]))) == []
    for msg in (3, 4):
        ack = wire.build_ack(msg, 2, A.FTSS_ACK_DELIVERED)
        d.frame("a2", fabric("a2", ack, ox=first[msg - 1]["fc"]["ox_id"]))
    assert d.core.stored == {} and d.core.stats["retransmit"] == 1


def test_the_window_bounds_what_is_in_flight():
    d = make(window=3)
    for msg in range(1, 6):
        d.frame("a1", pkt(msg, inner(APP[2])))
    out = pkts(d.fsync(), "a2")
    assert [p["msg_id"] for p in out] == [1, 2, 3]
    ack = wire.build_ack(1, 2, A.FTSS_ACK_DELIVERED)
    (nxt,) = pkts(d.frame("a2", fabric("a2", ack, ox=out[0]["fc"]["ox_id"])))
    assert nxt["msg_id"] == 4


def test_parked_while_unreachable_then_resumed_when_a_link_returns():
    d = make(retry=0.01)
    d.frame("a1", pkt(5, inner(APP[2])))
    d.fsync()  # guaranteed: stored, first copy out on a2
    d.core.set_port("a2", False)
    d.core.set_port("b2", False)
    assert pkts(d.tick(0.02)) == []  # parked, still stored
    assert d.store
    (p,) = pkts(d.run(d.core.on_port("b2", True, d.now)), "b2")
    assert p["msg_id"] == 5


def test_duplicate_pkt_is_stored_once_and_answered_again():
    d = make()
    d.frame("a1", pkt(3, inner(APP[2])))
    assert d.frame("b1", pkt(3, inner(APP[2]))) == []  # not durable yet: no answer yet
    out = d.fsync()
    assert len(d.store) == 1 and acks(out) == [(3, A.FTSS_ACK_STORED_GUARANTEED, 0)]
    again = d.frame("b1", pkt(3, inner(APP[2]), flags=A.FTSS_PKT_RETRANSMIT))
    assert acks(again) == [(3, A.FTSS_ACK_STORED_GUARANTEED, 0)] and again[0].port == "b1"
    (p,) = pkts(out)
    d.frame("a2", fabric("a2", wire.build_ack(3, 2, A.FTSS_ACK_DELIVERED), ox=p["fc"]["ox_id"]))
    late = d.frame("a1", pkt(3, inner(APP[2])))  # after it was forgotten: still once
    assert acks(late) == [(3, A.FTSS_ACK_STORED_GUARANTEED, 0)] and d.store == {}


def test_retention_by_age():
    d = make(retain=1.0)
    d.frame("a1", pkt(1, inner(APP[2])))
    (p,) = pkts(d.fsync())
    d.frame("a2", fabric("a2", wire.build_ack(1, 2, A.FTSS_ACK_DELIVERED), ox=p["fc"]["ox_id"]))
    assert len(d.store) == 1 and len(d.unsynced) == 1  # packet + its DELIVERED marker
    d.fsync()
    d.tick(0.5)
    assert len(d.store) == 2
    d.tick(0.6)
    assert d.store == {}


def test_retention_field_of_the_pkt_and_fifo_capacity():
    d = make(retain_max=2)
    for msg in (1, 2, 3):
        d.frame("a1", pkt(msg, inner(APP[2]), retention=60))
        (p,) = pkts(d.fsync())
        d.frame("a2", fabric("a2", wire.build_ack(msg, 2, A.FTSS_ACK_DELIVERED),
                             ox=p["fc"]["ox_id"]))
        d.fsync()
    kept = sorted(s.msg_id for s in d.core.stored.values())
    assert kept == [2, 3]  # FIFO: the oldest went first
    assert len(d.store) == 4


def test_replay_resends_the_dialog_since_a_time_flagged_rollback():
    d = make(retain=60)
    for msg in (1, 2, 3):
        d.now = msg
        d.frame("a1", pkt(msg, inner(APP[2])))
        (p,) = pkts(d.fsync())
        d.frame("a2", fabric("a2", wire.build_ack(msg, 2, A.FTSS_ACK_DELIVERED),
                             ox=p["fc"]["ox_id"]))
    out = d.frame("a2", fabric("a2", wire.build_read(4, A.REPLAY_FILE, offset=2000)))
    replayed = pkts(out, "a2")
    assert [p["msg_id"] for p in replayed] == [2, 3]
    assert all(p["pkt_flags"] & A.FTSS_PKT_ROLLBACK for p in replayed)
    (resp,) = responses(out)
    assert resp["data"] == (2).to_bytes(4, "big")


@pytest.mark.parametrize(("mutate", "reason"), [
    (lambda m: bytes([0x20]) + m[1:], A.FTSS_REASON_BAD_VERSION),
    (lambda m: m[:1] + b"\x7f" + m[2:], A.FTSS_REASON_UNKNOWN_OPCODE),
    (lambda m: m[:2] + (len(m) + 8).to_bytes(2, "big") + m[4:], A.FTSS_REASON_BAD_LENGTH),
    (lambda m: m[:2] + (10).to_bytes(2, "big") + m[4:12], A.FTSS_REASON_MALFORMED),
])
def test_bad_messages_are_rejected_with_a_reason(mutate, reason):
    d = make()
    message = mutate(wire.build_pkt(1, 1, inner(APP[2])))
    out = d.frame("a1", fabric("a1", message))
    assert acks(out) == [(0, A.FTSS_ACK_REJECTED, reason)]
    assert d.core.stats[f"rejected_{reason}"] == 1 and not d.unsynced


@pytest.mark.parametrize("opcode", range(0x15, 0x20))
def test_unknown_file_class_opcodes_are_rejected(opcode):
    """0x15..0x1F share the file-I/O class nibble but name no operation."""
    d = make()
    out = d.frame("a1", fabric("a1", wire.build_ftss(opcode, b"\0" * 12)))
    assert acks(out) == [(0, A.FTSS_ACK_REJECTED, A.FTSS_REASON_UNKNOWN_OPCODE)]


def test_a_write_never_leaves_a_hole_nor_grows_past_max_file():
    """One 88-byte WRITE at offset 256 MiB used to become a 256 MiB record."""
    d = make(max_file=1000)
    far = wire.build_write(1, b"f", b"x", offset=256 << 20)
    (r,) = responses(d.frame("a1", fabric("a1", far)))
    assert r["status"] == A.FTSS_FILE_BAD_REQUEST and not d.unsynced
    d.frame("a1", fabric("a1", wire.build_write(2, b"f", b"y" * 600)))
    d.fsync()
    grow = wire.build_write(3, b"f", b"z" * 600, offset=600)  # appends: allowed, up to 1000
    (r,) = responses(d.frame("a1", fabric("a1", grow)))
    assert r["status"] == A.FTSS_FILE_NO_SPACE and not d.unsynced
    d.frame("a1", fabric("a1", wire.build_write(4, b"f", b"z" * 400, offset=600)))
    assert len(d.unsynced[0].payload) < 1100


def test_store_bytes_are_bounded():
    d = make(capacity_bytes=3000)
    d.frame("a1", pkt(1, inner(APP[2], body=b"x" * 1400)))
    d.frame("a1", pkt(2, inner(APP[2], body=b"x" * 1400)))
    assert acks(d.frame("a1", pkt(3, inner(APP[2], body=b"x" * 1400)))) == [
        (3, A.FTSS_ACK_REJECTED, A.FTSS_REASON_STORE_FULL)]
    assert sum(len(p.payload) for p in d.unsynced) <= 3000


def test_oversize_runt_and_store_full():
    d = make(max_frame=100)
    assert acks(d.frame("a1", pkt(1, inner(APP[2], body=b"x" * 200)))) == [
        (1, A.FTSS_ACK_REJECTED, A.FTSS_REASON_OVERSIZE)]
    assert acks(d.frame("a1", pkt(2, b"short"))) == [
        (2, A.FTSS_ACK_REJECTED, A.FTSS_REASON_MALFORMED)]
    full = make(capacity=1)
    full.frame("a1", pkt(1, inner(APP[2])))
    assert acks(full.frame("a1", pkt(2, inner(APP[2])))) == [
        (2, A.FTSS_ACK_REJECTED, A.FTSS_REASON_STORE_FULL)]


def test_store_failure_rejects_instead_of_acking():
    d = make()
    d.frame("a1", pkt(1, inner(APP[2])))
    (p,) = d.unsynced
    out = d.run(d.core.on_persist_failed(p.record_id, 0.0))
    assert acks(out) == [(1, A.FTSS_ACK_REJECTED, A.FTSS_REASON_STORE_FULL)]


def test_bad_crc_and_non_fcoe_frames():
    d = make()
    frame = bytearray(pkt(1, inner(APP[2])))
    frame[-9] ^= 0xFF  # inside the CRC
    assert acks(d.frame("a1", bytes(frame)))[0][1] == A.FTSS_ACK_REJECTED
    assert acks(d.frame("a1", inner(APP[2])))[0][2] == A.FTSS_REASON_MALFORMED
    assert d.frame("a1", b"\x01") == [] and d.core.stats["malformed"] == 2


def file_req(port: str, message: bytes) -> bytes:
    return fabric(port, message)


def responses(out: list[Transmit]) -> list[dict]:
    return [d for t in out if t.port in FTSS_MACS
            for d in [decode(t)] if d["opcode"] == wire.FTSS_OP_RESPONSE]


def test_file_io_spools_route_packets_with_the_same_acks():
    d = make()
    d.frame("a2", file_req("a2", wire.build_list(1, b"in")))  # node 2 watches in/
    frame = inner(APP[2])
    assert d.frame("a1", file_req("a1", wire.build_write(42, b"out/42", frame))) == []
    out = d.fsync()
    assert [r["status"] for r in responses(out)] == [A.FTSS_FILE_OK]
    assert acks(out) == [(42, A.FTSS_ACK_STORED_GUARANTEED, 0)]
    assert pkts(out) == []  # spooled for node 2, not pushed
    (lst,) = responses(d.frame("a2", file_req("a2", wire.build_list(2, b"in"))))
    assert lst["names"] == [b"in/1-42"]
    (rd,) = responses(d.frame("a2", file_req("a2", wire.build_read(3, b"in/1-42"))))
    assert rd["data"] == frame
    (dl,) = responses(d.frame("a2", file_req("a2", wire.build_delete(4, b"in/1-42"))))
    assert dl["status"] == A.FTSS_FILE_OK and d.store == {}  # deleting it = receipt
    again = d.frame("a1", file_req("a1", wire.build_write(42, b"out/42", frame)))
    assert acks(again) == [(42, A.FTSS_ACK_STORED_GUARANTEED, 0)] and not d.unsynced


def test_plain_files_write_read_list_delete():
    d = make()
    assert d.frame("a1", file_req("a1", wire.build_write(1, b"etc/conf", b"abc"))) == []
    assert responses(d.fsync())[0]["status"] == A.FTSS_FILE_OK
    (r,) = responses(d.frame("a1", file_req("a1", wire.build_write(2, b"etc/conf", b"x"))))
    assert r["status"] == A.FTSS_FILE_EXISTS
    d.frame("a1", file_req("a1", wire.build_write(3, b"etc/conf", b"Z", offset=1)))
    d.fsync()
    assert responses(d.frame("a1", file_req("a1", wire.build_read(4, b"etc/conf"))))[0][
        "data"] == b"aZc"
    assert len(d.store) == 1  # the old version was forgotten
    assert responses(d.frame("a1", file_req("a1", wire.build_list(5, b"etc"))))[0][
        "names"] == [b"etc/conf"]
    assert responses(d.frame("a2", file_req("a2", wire.build_read(6, b"etc/conf"))))[0][
        "status"] == A.FTSS_FILE_NOT_FOUND  # per-node directories
    d.frame("a1", file_req("a1", wire.build_delete(7, b"etc/conf")))
    assert d.store == {}


def test_recover_resumes_delivery_and_retention():
    d = make(retain=60)
    d.frame("a1", pkt(1, inner(APP[2])))  # delivered and retained
    (p,) = pkts(d.fsync())
    d.frame("a2", fabric("a2", wire.build_ack(1, 2, A.FTSS_ACK_DELIVERED), ox=p["fc"]["ox_id"]))
    d.frame("a1", pkt(2, inner(APP[2])))  # acknowledged, not delivered
    d.fsync()
    d.frame("a1", pkt(3, inner(APP[2])))  # never durable: lost with the crash, never acked
    records = [(rid, k, p) for rid, (k, p) in sorted(d.store.items())]
    new = Driver(FtssCore(92, FTSS_MACS, retain=60))
    new.store = dict(d.store)
    assert new.run(new.core.recover(records, 10.0, grace=0.5)) == []
    for port, frame in hello(1) + hello(2):
        new.frame(port, frame)
    new.now = 10.6
    out = new.run(new.core.on_timer(new.now))
    assert [q["msg_id"] for q in pkts(out)] == [2] and acks(out) == []
    dup = new.frame("b1", pkt(2, inner(APP[2])))  # the source retransmits: same answer
    assert acks(dup) == [(2, A.FTSS_ACK_STORED_GUARANTEED, 0)]
    out = new.frame("a2", fabric("a2", wire.build_read(9, A.REPLAY_FILE)))
    assert sorted(q["msg_id"] for q in pkts(out)) == [1, 2]


def test_packets_committed_during_the_recovery_grace_follow_the_recovered_ones():
    """After a crash nothing new overtakes what the store gave back, and a node whose HELLO
    has not come back yet is not declared undeliverable."""
    d = make()
    d.frame("a1", pkt(1, inner(APP[2])))
    d.fsync()  # guaranteed, never delivered (no receipt)
    records = [(rid, k, p) for rid, (k, p) in sorted(d.store.items())]
    new = Driver(FtssCore(92, FTSS_MACS))
    new.run(new.core.recover(records, 10.0, grace=0.5))
    new.now = 10.1
    new.frame("a1", pkt(2, inner(APP[2])))  # before node 2's HELLO is back
    assert new.fsync() == []  # held: no verdict yet
    for port, frame in hello(1) + hello(2):
        new.frame(port, frame)
    new.now = 10.6
    out = new.run(new.core.on_timer(new.now))
    assert [p["msg_id"] for p in pkts(out)] == [1, 2]
    assert acks(out) == [(2, A.FTSS_ACK_STORED_GUARANTEED, 0)]


# ---- properties -------------------------------------------------------------------------------

PORT = st.sampled_from(["a1", "b1", "a2", "b2", "ext", "zz"])


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(PORT, st.binary(max_size=200)), max_size=10))
def test_arbitrary_bytes_never_raise(frames):
    d = make(external_port="ext")
    for port, frame in frames:
        d.frame(port, frame)
        d.fsync()


OPS = st.sampled_from([wire.FTSS_OP_PKT, wire.FTSS_OP_ACK, wire.FTSS_OP_HELLO, 0x7F,
                       wire.FTSS_OP_WRITE, wire.FTSS_OP_READ, wire.FTSS_OP_LIST,
                       wire.FTSS_OP_DELETE, wire.FTSS_OP_RESPONSE])


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(["a1", "a2"]), OPS, st.binary(max_size=80)),
                max_size=10))
def test_well_framed_random_bodies_never_raise(msgs):
    d = make()
    for port, op, body in msgs:
        d.frame(port, fabric(port, wire.build_ftss(op, body)))
        d.fsync()
        d.tick(0.05)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(["pkt", "ext", "sync", "tick", "hello_down"]),
                          st.integers(1, 6), st.sampled_from([1, 2, 5])), max_size=25))
def test_no_stored_ack_before_durable(ops):
    """Every STORED_* ACK names a packet whose record the driver reported durable."""
    d = make(external_port="ext")
    durable_msgs: set[tuple[int, int]] = set()
    stored_ack = (A.FTSS_ACK_STORED_GUARANTEED, A.FTSS_ACK_STORED_BEST_EFFORT)
    for op, msg, dst in ops:
        if op == "pkt":
            out = d.frame("a1", pkt(msg, inner(APP.get(dst, "02:00:00:00:00:05"))))
        elif op == "ext":
            out = d.frame("ext", inner(APP[1], "02:00:00:00:00:96"))
        elif op == "hello_down":
            out = d.frame(*hello(2, state=A.FTSS_NODE_DOWN)[0])
        elif op == "tick":
            out = d.tick(0.05)
        else:
            for p in d.unsynced:
                if p.kind == A.REC_PKT:
                    src, mid = A.PKT_REC.unpack_from(p.payload)[:2]
                    durable_msgs.add((src, mid))
            out = d.fsync()
        for mid, status, _ in acks(out):
            if status in stored_ack:
                assert (1, mid) in durable_msgs


BOUND = 64 << 10  # max_file below: no record may be larger than this plus its header


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(["a1", "a2", "ext"]),
                          st.sampled_from(sorted(range(0, 0x20)) + [0x7F, 0xFF]),
                          st.binary(max_size=120), st.integers(0, 2**64 - 1)),
                max_size=12))
def test_every_frame_is_answered_or_counted_and_records_stay_bounded(msgs):
    """Arbitrary FTSS messages (any opcode, random bodies, WRITE offsets up to 2^64):
    never an exception, never a record over the bound, and every frame leaves a trace --
    an answer on the wire, a record, or a counter."""
    d = make(external_port="ext", max_file=BOUND)
    for port, op, body, offset in msgs:
        if op == wire.FTSS_OP_WRITE:
            message = wire.build_write(1, body[:8] or b"n", body[8:], offset=offset)
        else:
            message = wire.build_ftss(op, body)
        frame = inner(APP[2]) + body if port == "ext" else fabric(port, message)
        before = sum(d.core.stats.values())
        out = d.frame(port, frame)
        assert out or d.unsynced or sum(d.core.stats.values()) > before
        assert all(len(p.payload) <= BOUND + 64 + 255 for p in d.unsynced)
        d.fsync()
        d.tick(0.05)


def test_the_state_machines_refuse_what_their_tables_do_not_allow():
    """A packet's life and a lane are explicit tables: an event they do not list is a bug."""
    from ftsslab.ftss.delivery import LaneEvent, Outbox, ProtocolError
    from ftsslab.ftss.packet import PACKET_TRANSITIONS, PacketEvent, PacketState, Stored

    pkt = Stored(1, 1, 7, 0, 0, A.ORIGIN_FABRIC, 0.0, b"")
    with pytest.raises(ProtocolError, match="retain while committing"):
        pkt.fire(PacketEvent.RETAIN)
    assert pkt.fire(PacketEvent.DURABLE) is PacketState.HELD and pkt.durable
    assert {s for s, _ in PACKET_TRANSITIONS} == set(PacketState) - {PacketState.GONE}
    lane = Outbox(2, Rto(0.1))
    with pytest.raises(ProtocolError, match="probe-acked while flowing"):
        lane.fire(LaneEvent.PROBE_ACKED)
