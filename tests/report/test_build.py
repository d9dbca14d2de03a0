"""The report's model: which frames make an exchange, what is folded, what a capture says."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.contrib.roce import AETH, BTH
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether

from ftsslab.layers.ftss import FTSSAck, FTSSPacket
from ftsslab.layers.i2o import MSG_REPLY, I2OMessage
from ftsslab.layers.roce import RETH, roce_answers
from ftsslab.layers.tch import TCHMessage
from ftsslab.pcapng import Interface, PcapNgWriter
from ftsslab.report.build import HEAD, TAIL, build_report

REPO = Path(__file__).resolve().parents[2]

A, B = "10.0.0.1", "10.0.0.2"
MA, MB = "02:00:00:00:00:01", "02:00:00:00:00:02"


def write(path, frames, *, comments=True):
    """frames: (packet, "h1:eth0 -> s1:p1") pairs, as ftsslab's captures note them."""
    with open(path, "wb") as fh:
        w = PcapNgWriter(fh, comments=["ftsslab scenario crafted (x.yaml) on sim"]
                         if comments else [])
        iface = Interface("h1:eth0", "link h1:eth0 <-> s1:p1 (mtu 1500)")
        for i, (pkt, where) in enumerate(frames):
            w.packet(iface, bytes(pkt), 1_700_000_000 * 10**9 + i * 1000,
                     [f"{where} [step s{i // 4}]"] if comments else [])
    return path


def roce(op, psn, *layers, to_b=True, qp=0x11):
    src, dst = (A, B) if to_b else (B, A)
    pkt = Ether(src=MA, dst=MB) / IP(src=src, dst=dst) / UDP(sport=49152, dport=4791) / BTH(
        opcode=op, psn=psn, dqpn=qp)
    for layer in layers:
        pkt = pkt / layer
    return pkt


def groups(report):
    return [list(e.frames) for e in report.exchanges]


def test_an_rdma_message_and_its_answers_are_one_exchange(tmp_path):
    there, back = "a:eth0 -> b:eth0", "b:eth0 -> a:eth0"
    frames = [
        (roce(6, 10, RETH(va=0x1000, rkey=7, dmalen=3000), b"x" * 1024), there),  # WRITE FIRST
        (roce(7, 11, b"x" * 1024), there),                                          # MIDDLE
        (roce(8, 12, b"x" * 952), there),                                           # LAST
        (roce(0x11, 12, AETH(syndrome=0, msn=1), to_b=False), back),                # ACK
        (roce(0x0C, 13, RETH(va=0x1000, rkey=7, dmalen=600)), there),               # READ
        (roce(0x0D, 13, AETH(syndrome=0, msn=2), b"y" * 256, to_b=False), back),    # RESP FIRST
        (roce(0x0E, 14, b"y" * 256, to_b=False), back),                             # MIDDLE
        (roce(0x0F, 15, AETH(syndrome=0, msn=2), b"y" * 88, to_b=False), back),     # LAST
        (roce(0x04, 16, b"hello"), there),                                          # SEND ONLY
        (roce(0x11, 16, AETH(syndrome=0x62, msn=2), to_b=False), back),             # NAK
    ]
    r = build_report(write(tmp_path / "c.pcapng", frames))
    assert groups(r) == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10]]
    assert {e.family for e in r.exchanges} == {"roce"}
    assert r.exchanges[0].lanes == ("a", "b")
    assert r.frames[4].summary.startswith("RC_ACKNOWLEDGE")


def test_a_frame_forwarded_onto_the_next_link_stays_in_its_exchange(tmp_path):
    req = Ether(src=MA, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, psrc=A, pdst=B, hwsrc=MA)
    rep = Ether(src=MB, dst=MA) / ARP(op=2, psrc=B, pdst=A, hwsrc=MB, hwdst=MA)
    again = Ether(src=MA, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, psrc=A, pdst="10.0.0.3",
                                                         hwsrc=MA)
    frames = [(req, "h1:eth0 -> s1:p1"), (req, "s1:p2 -> h2:eth0"), (req, "s1:p3 -> h3:eth0"),
              (rep, "h2:eth0 -> s1:p2"), (rep, "s1:p1 -> h1:eth0"),
              (again, "h1:eth0 -> s1:p1"), (again, "h1:eth0 -> s1:p1")]
    r = build_report(write(tmp_path / "c.pcapng", frames))
    # flooded onto two ports, answered, forwarded back: one exchange; an answered request is
    # closed, so a new one opens, and the same frame on the same link is sent again
    assert groups(r) == [[1, 2, 3, 4, 5], [6, 7]]
    assert r.exchanges[0].lanes == ("h1", "s1", "h2", "h3")
    assert r.exchanges[0].family == "arp"


def test_a_new_syn_opens_a_new_tcp_connection_on_the_same_addresses(tmp_path):
    def seg(flags, to_b=True):
        ends = dict(src=A, dst=B) if to_b else dict(src=B, dst=A)
        ports = dict(sport=4000, dport=80) if to_b else dict(sport=80, dport=4000)
        return Ether() / IP(**ends) / TCP(flags=flags, **ports)

    frames = [(seg("S"), "c:eth0 -> s:eth0"), (seg("SA", False), "s:eth0 -> c:eth0"),
              (seg("A"), "c:eth0 -> s:eth0"), (seg("FA"), "c:eth0 -> s:eth0"),
              (seg("S"), "c:eth0 -> s:eth0"), (seg("R", False), "s:eth0 -> c:eth0")]
    r = build_report(write(tmp_path / "c.pcapng", frames))
    assert groups(r) == [[1, 2, 3, 4], [5, 6]]
    assert r.exchanges[0].title == f"TCP {A}:4000 \u21c4 {B}:80"


def test_a_long_exchange_is_drawn_by_its_head_and_tail_and_the_report_says_so(tmp_path):
    frames = [(Ether() / IP(src=A, dst=B) / UDP(sport=5000, dport=9) / (bytes([i]) * 20),
               "c:eth0 -> s:eth0") for i in range(HEAD + TAIL + 25)]
    r = build_report(write(tmp_path / "c.pcapng", frames))
    (e,) = r.exchanges
    assert e.drawn == tuple(range(1, HEAD + 1)) + tuple(range(HEAD + 26, HEAD + TAIL + 26))
    assert e.folded == 25 and set(r.frames) == set(e.drawn)
    assert any("25 frames folded" in f for f in r.folds)


def test_past_the_budget_each_conversation_is_dissected_by_its_head_and_tail(tmp_path):
    """A long conversation's middle is counted, a short one's frames are all dissected."""
    bulk = [(Ether() / IP(src=A, dst=B) / UDP(sport=5000, dport=9) / (bytes([i]) * 9),
             "c:eth0 -> s:eth0") for i in range(60)]
    brief = [(Ether() / IP(src=A, dst=B) / UDP(sport=5000, dport=10) / b"z", "s:eth0 -> c:eth0")
             for _ in range(3)]
    frames = bulk[:30] + brief + bulk[30:]  # the brief one in the bulk's middle
    r = build_report(write(tmp_path / "c.pcapng", frames), dissect=23)
    assert (r.total_frames, r.dissected_frames) == (63, 23)
    long, short = sorted(r.exchanges, key=lambda e: -len(e.frames))
    assert long.frames == tuple(range(1, 17)) + tuple(range(60, 64))  # 16 first, 4 last
    assert short.frames == (31, 32, 33)
    assert [(c.title, c.frames) for c in r.undissected] == [(f"IPv4 {A} <-> {B} UDP 9/5000", 40)]
    assert r.undissected[0].bytes == 40 * len(bulk[0][0])
    assert any("40 frames were counted per conversation" in f and "first 16 and last 4" in f
               for f in r.folds)


def test_a_foreign_capture_is_drawn_by_its_addresses(tmp_path):
    """No ftsslab comments: lanes are IP addresses, MACs named by the IP they carried."""
    frames = [(Ether(src=MA, dst="ff:ff:ff:ff:ff:ff") / ARP(psrc=A, pdst=B, hwsrc=MA), ""),
              (Ether(src=MA, dst=MB) / IP(src=A, dst=B) / UDP(sport=1, dport=2), "")]
    r = build_report(write(tmp_path / "c.pcapng", frames, comments=False))
    assert r.exchanges[0].lanes == (A, "broadcast")
    assert r.exchanges[1].lanes == (A, B)
    assert r.topology.drawn_from == "capture"
    assert r.timeline == [] and r.passed is None


def test_a_damaged_capture_reports_the_frames_before_the_damage(tmp_path):
    path = write(tmp_path / "c.pcapng", [(Ether() / IP() / UDP(), "a:e -> b:e")] * 3)
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    r = build_report(path)
    assert r.total_frames == 2 and "damaged" in r.folds[0] and r.damage


def test_frames_no_dissector_understands_are_still_each_in_one_exchange(tmp_path):
    rng = random.Random(7)
    frames = [(bytes(rng.randrange(256) for _ in range(rng.randrange(0, 90))), "a:e -> b:e")
              for _ in range(200)]
    r = build_report(write(tmp_path / "c.pcapng", frames))
    numbers = sorted(n for e in r.exchanges for n in e.frames)
    assert numbers == list(range(1, 201))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0x0800, 0x86DD, 0x0806, 0x8906, 0x8100, 0x88B5]),
                          st.binary(max_size=80)), max_size=30))
def test_any_bytes_give_a_partition_of_the_frames(frames):
    """Whatever the bytes, every frame lands in exactly one exchange (a range ACK in each one
    it answers) and no layer's error escapes (the Ethernet types steer the bytes into IP,
    ARP, FCoE, VLAN and raw dissectors)."""
    data = [b"\x02" * 12 + t.to_bytes(2, "big") + body for t, body in frames]
    buf = io.BytesIO()
    w = PcapNgWriter(buf)
    iface = Interface("x")
    for i, d in enumerate(data):
        w.packet(iface, d, i)
    r = build_report(buf.getvalue())
    assert sorted({n for e in r.exchanges for n in e.frames}) == list(range(1, len(data) + 1))
    placed = [n for e in r.exchanges for n in e.frames]
    again = {n for n in placed if placed.count(n) > 1}  # only a range ACK answers many
    assert all(FTSSAck in Ether(data[n - 1]) and Ether(data[n - 1])[FTSSAck].more for n in again)
    assert all(set(e.drawn) <= set(e.frames) for e in r.exchanges)


@pytest.fixture(scope="module")
def sim_run(tmp_path_factory):
    """Run a shipped scenario on the sim backend; (its RunResult, its capture)."""
    from ftsslab.lab.capture import write_capture
    from ftsslab.lab.runner import Runner
    from ftsslab.lab.scenario import load_scenario
    from ftsslab.lab.sim import SimBackend

    runs = {}

    def run(name):
        if name not in runs:
            sc = load_scenario(REPO / "scenarios" / f"{name}.yaml")
            result = Runner(sc, SimBackend()).run()
            path = tmp_path_factory.mktemp(name) / "c.pcapng"
            write_capture(path, sc, result.frames, result.events, "sim")
            runs[name] = result, path
        return runs[name]

    return run


def test_an_ftss_message_is_pkt_stored_delivery_delivered(sim_run):
    """Seed 004's round on the real cores: the four legs of each message, in this order."""
    result, path = sim_run("ftss-guaranteed")
    r = build_report(path, result)
    messages = [e for e in r.exchanges if e.title.startswith("FTSS message")]
    assert len(messages) >= 5
    for e in messages:
        legs = [r.frames[n] for n in e.frames]
        kinds = [("PKT" if "PKT" in f.summary else f.summary.split()[3]) for f in legs]
        assert kinds == ["PKT", "STORED_GUARANTEED", "PKT", "DELIVERED"], kinds
        assert legs[0].dst == legs[1].src == legs[2].src == legs[3].dst == "ftss"
        assert legs[1].dst == legs[0].src != legs[2].dst == legs[3].src  # sender, receiver


def test_a_range_ack_is_drawn_with_every_message_it_answers(tmp_path):
    """STORED for three PKTs in one ACK (more=2) is in each of the three messages' exchanges,
    and in no other (the fourth message is not in its range)."""
    from ftsslab.layers.ftss import FTSS
    from ftsslab.reference.ftss import FTSS_NODE, SERVER_A, _frame

    msgs = [(_frame(SERVER_A, FTSS_NODE, i, FTSS() / FTSSPacket(msg_id=i) / (b"x" * 20)),
             "srv1:fa -> ftss:a1") for i in (5, 6, 7, 8)]
    ack = (_frame(FTSS_NODE, SERVER_A, 5, FTSS() / FTSSAck(msg_id=5, more=2), reply=True),
           "ftss:a1 -> srv1:fa")
    r = build_report(write(tmp_path / "c.pcapng", msgs + [ack]))
    holding = {e.title.split()[2].rstrip(":"): e.frames for e in r.exchanges}
    assert holding == {"0x5": (1, 5), "0x6": (2, 5), "0x7": (3, 5), "0x8": (4,)}


def test_i2o_replies_and_roce_acks_are_with_what_they_answer(sim_run):
    """Seed 001 over seed 003: every I2O reply drawn is in the exchange of a request it
    answers (its contexts), every ACK in one of a request it acknowledges (its PSN)."""
    from ftsslab.pcapng import load_capture

    result, path = sim_run("i2o-export")
    r = build_report(path, result)
    pkts = [p.pkt for p in load_capture(path).packets()]
    replies = acks = 0
    for e in r.exchanges:
        mine = [pkts[n - 1] for n in e.frames]
        for p in mine:
            if I2OMessage in p and p[I2OMessage].msg_flags & MSG_REPLY:
                replies += 1
                assert any(p[I2OMessage].answers(q[I2OMessage]) for q in mine
                           if I2OMessage in q and q is not p)
            if BTH in p and p[BTH].opcode == 0x11:
                acks += 1
                assert any(roce_answers(q, p) for q in mine if q is not p)
    assert replies >= 10 and acks >= 10


def test_a_tcp_connection_opened_with_tch_flags_is_a_handoff():
    r = build_report(REPO / "pcaps" / "reference" / "tch.pcapng")
    first = r.exchanges[0]
    assert first.family == "tch" and first.title.startswith("TCH handoff (HND) over TCP")


def test_a_tch_session_is_one_exchange():
    r = build_report(REPO / "pcaps" / "reference" / "tch.pcapng")
    (session,) = [e for e in r.exchanges if e.title.startswith("TCH session")]
    from ftsslab.pcapng import load_capture

    pkts = [p.pkt for p in load_capture(REPO / "pcaps" / "reference" / "tch.pcapng").packets()]
    assert list(session.frames) == [i + 1 for i, p in enumerate(pkts) if TCHMessage in p]


def test_a_runs_report_has_its_topology_steps_events_and_verdicts(sim_run):
    result, path = sim_run("ftss-guaranteed")
    r = build_report(path, result)
    sc = result.scenario
    assert [n.name for n in r.topology.nodes] == [n.name for n in sc.nodes]
    assert {ln.name: ln.frames for ln in r.topology.links} == result.frames_per_link()
    steps = [m.label for m in r.timeline if m.kind == "step"]
    assert steps == [label for label, _ in result.step_times]
    verdicts = [m for m in r.timeline if m.kind == "verdict"]
    assert len(verdicts) == len(result.outcomes) and all(m.passed for m in verdicts)
    assert r.passed is True and r.backend == "sim" and r.title == sc.name
    times = [m.time for m in r.timeline if m.time is not None]
    assert times == sorted(times)
