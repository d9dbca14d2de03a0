"""Check 23: the seed's Figs. 8-10 example (L622-658), reproduced on the simulated fabric.

Fig. 8 is two host nodes, each a SANIC with one QP; Fig. 9A a send WQE whose gather list names
four buffers, message 0's parts 0-3; Fig. 9B the packetisation: frame 0 carries all of part 0
and the first piece of part 1, frame 1 the rest of part 1 and all of parts 2 and 3 (L633-635);
Fig. 10A each request frame acknowledged by its own ACK frame (L643-645). The seed gives no
sizes: the parts here are 200, 148, 100 and 52 bytes at four scattered addresses, and the path
MTU is 256 -- IBA's smallest -- so 500 bytes make exactly two frames, split inside part 1 (56
bytes in frame 0, 92 in frame 1), as the figure draws it. Everything is read back from the
frames the fabric carried, by the fast parser and by Scapy. Fig. 10B's flits, and each link's
acknowledgement of them, come from the sim-only link model (``san/flits.py``, D3.13).
"""

from __future__ import annotations

from itertools import pairwise

from scapy.contrib.roce import AETH, BTH
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from ftsslab.layers.roce import roce_answers
from ftsslab.reference.roce import fig_9b_10a
from ftsslab.san.fabric import Fabric
from ftsslab.san.flits import carry, cut
from ftsslab.san.memory import PAGE
from ftsslab.san.packets import ack_kind, packet
from ftsslab.san.qp import WcOpcode, WcStatus, WrOpcode
from ftsslab.san.verbs import SGE, RecvWR, SendWR

from .test_verbs import BUF, endnode, pair, peek, poke

MTU = 256
PARTS = (SGE(BUF + 40, 200), SGE(BUF + 3 * PAGE + 1000, 148), SGE(BUF + 5 * PAGE - 60, 100),
         SGE(BUF + 9 * PAGE + 8, 52))  # buffers 334a-334d; the third crosses a page


def fig_8() -> tuple[Fabric, bytes]:
    """Nodes 302 and 304, one SEND of message 0 from QP 324 to QP 326; the fabric after it
    ran, and the message."""
    f = Fabric()
    a, b = endnode(f, "302", mtu=MTU), endnode(f, "304", mtu=MTU)
    _, _, qa, qb, cqa, cqb = pair(f, a, b)
    parts = [bytes([0xA0 + i]) * s.length for i, s in enumerate(PARTS)]
    for sge, data in zip(PARTS, parts, strict=True):
        poke(a, 1, sge.addr, data)
    f.send("304", qb.post_recv(RecvWR(7, (SGE(BUF + 12 * PAGE, 1024),))))
    f.send("302", qa.post_send(SendWR(1, WrOpcode.SEND, PARTS), f.now))  # WQE 330
    f.run()
    assert [(w.wr_id, w.status, w.opcode) for w in cqa.poll(9)] == [
        (1, WcStatus.SUCCESS, WcOpcode.SEND)]
    assert [(w.wr_id, w.status, w.byte_len) for w in cqb.poll(9)] == [(7, WcStatus.SUCCESS, 500)]
    message = b"".join(parts)
    assert peek(b, 1, BUF + 12 * PAGE, 500) == message
    return f, message


def test_a_four_part_gathered_message_is_two_frames_split_inside_part_1():
    """Fig. 9B: frame 0 = part 0 + the first 56 bytes of part 1, frame 1 = the other 92 + parts
    2 and 3; one PSN each, each asking for its acknowledgement."""
    f, message = fig_8()
    requests = [packet(s.data) for s in f.frames if s.src == "302"]
    assert [(p.op, p.psn, p.ackreq) for p in requests] == [
        ("SEND_FIRST", 100, True), ("SEND_LAST", 101, True)]
    assert [len(p.payload) for p in requests] == [256, 244]
    assert requests[0].payload == message[:256] == b"\xa0" * 200 + b"\xa1" * 56
    assert requests[1].payload == message[256:] == b"\xa1" * 92 + b"\xa2" * 100 + b"\xa3" * 52


def test_each_request_frame_gets_its_own_ack():
    """Fig. 10A: 4 frames in all. Both requests leave at once (several may be outstanding,
    L616), then ACK 346a answers frame 336a and 346b answers 336b, each sent when its request
    arrived; Scapy's reading of the same bytes pairs them alike."""
    f, _ = fig_8()
    assert all(s.delivered for s in f.frames)
    seen = [(s.time, s.src, packet(s.data)) for s in f.frames]
    assert [(src, p.op, p.psn) for _, src, p in seen] == [
        ("302", "SEND_FIRST", 100), ("302", "SEND_LAST", 101),
        ("304", "ACKNOWLEDGE", 100), ("304", "ACKNOWLEDGE", 101)]
    assert [t for t, _, _ in seen] == [0.0, 0.0, f.latency, f.latency]
    acks = [packet(s.data) for s in f.frames if s.src == "304"]
    assert [ack_kind(p.syndrome)[0] for p in acks] == ["ACK", "ACK"]
    scapy = [Ether(s.data) for s in f.frames]
    assert all(BTH in p for p in scapy)
    req, ack = scapy[:2], scapy[2:]
    assert [[roce_answers(q, r) for r in ack] for q in req] == [[True, False], [False, True]]


def _fields(pkt) -> tuple:
    p = pkt[BTH]
    aeth = (pkt[AETH].syndrome,) if AETH in pkt else ()
    return (p.opcode, p.psn, p.ackreq, *aeth, bytes(pkt[Raw].load) if Raw in pkt else b"")


def test_the_sim_sends_the_reference_capture_frames():
    """pcaps/reference/roce.pcapng holds Figs. 9B/10A (other addresses): the same operations,
    PSNs, ACK requests, syndromes and payloads as the simulated SAN's four frames."""
    f, _ = fig_8()
    assert [_fields(Ether(s.data)) for s in f.frames] == [_fields(p) for _, p in fig_9b_10a()]


def test_the_ack_of_frame_1_carries_the_msn_of_message_0():
    """IBA 9.7.5.1.1: the ACK of a message's last packet counts that message."""
    f, _ = fig_8()
    assert [Ether(s.data)[AETH].msn for s in f.frames[2:]] == [
        p[AETH].msn for _, p in fig_9b_10a()[2:]] == [0, 1]


# ---- Fig. 10B: the link level, modelled in the sim only (D3.13, san/flits.py) ----------------
PATH = ("302", "310", "312", "304")  # SANIC 306, switches 310 and 312, SANIC 308 (Fig. 8)


def _trains(f: Fabric) -> tuple[list[bytes], list[bytes]]:
    """The frames of Fig. 10A as the links see them: the two requests leave 302 back to back,
    the two ACKs leave 304 back to back."""
    requests = [s.data for s in f.frames if s.src == "302"]
    acks = [s.data for s in f.frames if s.src == "304"]
    assert len({s.time for s in f.frames if s.src == "302"}) == 1
    assert len({s.time for s in f.frames if s.src == "304"}) == 1
    return requests, acks


def test_fig_10b_eight_flits_on_each_link_and_one_ack_flit_per_link():
    """Frames 0 and 1 are flits 0-3 and 4-7 (Fig. 9B) on each of the three links, each link's
    receiver acknowledging all eight with one ack flit (342a-h / 352, 348a-h / 354, 350a-h /
    356); each ACK frame fits one flit, and one ack flit per link acknowledges both (370, 372,
    374). What the last node takes is what was sent."""
    f, _ = fig_8()
    requests, acks = _trains(f)
    assert [len(cut([r])) for r in requests] == [4, 4]
    events, got = carry(PATH, requests)
    assert got == requests
    for a, b in pairwise(PATH):
        assert [e.seqs for e in events if (e.src, e.dst, e.kind) == (a, b, "flit")] == [
            (i,) for i in range(8)]
        assert [e.seqs for e in events if e.kind == "ack" and (e.src, e.dst) == (b, a)] == [
            tuple(range(8))]
    back = PATH[::-1]
    events, got = carry(back, acks)
    assert got == acks
    assert [(e.src, e.dst, e.kind, e.seqs) for e in events] == [
        x for a, b in pairwise(back)
        for x in ((a, b, "flit", (0,)), (a, b, "flit", (1,)), (b, a, "ack", (0, 1)))]


def test_a_flit_that_fails_its_check_is_sent_again_by_its_link_alone():
    """Flit 5 fails on the middle link: 312 acknowledges 0-4, 310 sends 5-7 again, and the
    frames reach 304 whole; the other links see eight flits once."""
    f, _ = fig_8()
    requests, _ = _trains(f)
    events, got = carry(PATH, requests, bad={(1, 5)})
    assert got == requests
    middle = [(e.kind, e.seqs, e.bad) for e in events if {e.src, e.dst} == {"310", "312"}]
    assert middle == [*(("flit", (i,), i == 5) for i in range(8)), ("ack", (0, 1, 2, 3, 4), False),
                      *(("flit", (i,), False) for i in (5, 6, 7)), ("ack", (5, 6, 7), False)]
    for link in ({"302", "310"}, {"312", "304"}):
        assert sum(e.kind == "flit" and {e.src, e.dst} == link for e in events) == 8
