"""RD with EE contexts (B3.9, checks 10 and 21) on the simulated fabric: every packet carried as
its RoCEv2 frame and read back with the ICRC verified."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ftsslab.fast.roce import parse_roce, verify_icrc
from ftsslab.san.fabric import Fabric
from ftsslab.san.memory import PAGE
from ftsslab.san.packets import Packet, Reth, nak, packet
from ftsslab.san.qp import QpState, WcStatus, WrOpcode
from ftsslab.san.rd import NoEeContext, RdDest, UnsupportedWr
from ftsslab.san.verbs import CQ, SGE, Context, RecvWR, SendWR
from tests.san.test_verbs import BUF, RW, endnode, peek, poke

QKEY = 0x5151


def ee(f: Fabric, x: str, y: str, **kw):
    """The EE contexts of endnodes ``x`` and ``y`` to each other, connected (RTS)."""
    cx, cy = f.nodes[x].context, f.nodes[y].context
    ex, ey = cx.open_eec(y), cy.open_eec(x)
    cx.connect_eec(y, ey.qp_num, 0.0, psn=100, remote_psn=700, timeout=0.005, **kw)
    cy.connect_eec(x, ex.qp_num, 0.0, psn=700, remote_psn=100, timeout=0.005, **kw)
    return ex, ey


def rd_qp(ctx: Context, pid: int = 1, **kw):
    cq = CQ()
    return ctx.pd(pid).open_rd_qp(cq, QKEY, **kw), cq


def packets(f: Fabric, src: str | None = None, dst: str | None = None):
    """The packets of the frames ``src`` sent to ``dst`` (all: None), each read back from its
    frame -- which fails if any frame's ICRC is wrong."""
    out = []
    for s in f.frames:
        got = packet(s.data)
        assert got is not None and verify_icrc(s.data), s
        if (src is None or s.src == src) and (dst is None or s.dst == dst):
            out.append(got)
    return out


def test_two_qps_to_one_peer_share_one_ee_context_and_interleave_its_psns():
    """Check 21, first point: A's two RD QPs send to B alternately; every request goes on the
    one EE context A has to B (its RDETH names B's), with PSNs one run across both QPs, and
    B takes them once, in posting order. The responses go to the requesting QP through A's."""
    f = Fabric()
    a, b = endnode(f, "A"), endnode(f, "B")
    ea, eb = ee(f, "A", "B")
    (q1, cq1), (q2, cq2), (qb, cqb) = rd_qp(a), rd_qp(a), rd_qp(b)
    poke(a, 1, BUF, bytes(range(256)) * 8)
    dest = RdDest("B", qb.qp_num, QKEY)
    for i in range(20):
        f.send("B", qb.post_recv(RecvWR(i, (SGE(BUF + PAGE, 2048),))))
        qp = (q1, q2)[i % 2]
        f.send("A", qp.post_rd(SendWR(i, WrOpcode.SEND, (SGE(BUF, 100 + i * 97),)), dest, f.now))
    f.run()
    assert [(w.wr_id, w.status) for w in cq1.poll(20)] == [(i, WcStatus.SUCCESS)
                                                           for i in range(0, 20, 2)]
    assert [w.wr_id for w in cq2.poll(20)] == list(range(1, 20, 2))
    recvs = cqb.poll(20)
    assert [(w.wr_id, w.byte_len, w.src_qp, w.src) for w in recvs] == [
        (i, 100 + i * 97, (q1, q2)[i % 2].qp_num, "A") for i in range(20)]
    assert list(a.rd.eecs) == [ea.qp_num] and list(b.rd.eecs) == [eb.qp_num]
    requests = packets(f, "A", "B")
    assert {p.eec for p in requests} == {eb.qp_num}
    assert [p.psn for p in requests] == list(range(100, 100 + len(requests)))  # one PSN run
    assert len(requests) > 20  # (some SENDs take two packets)
    by_qp = [p.src_qp for p in requests if p.op in ("SEND_ONLY", "SEND_FIRST")]
    assert by_qp == [(q1, q2)[i % 2].qp_num for i in range(20)]  # interleaved
    answers = packets(f, "B", "A")
    assert {p.eec for p in answers} == {ea.qp_num} and all(p.qkey is None for p in answers)
    assert {p.dqpn for p in answers} == {q1.qp_num, q2.qp_num}


def test_three_peers_three_ee_contexts_and_loss_on_one_pair_is_recovered_on_its_own():
    """Check 21, second and third points: A reaching B, C and D has three EE contexts; 10 %
    loss, reordering and duplicates on the A-B link only: every SEND and WRITE to every peer
    arrives once and in order, A-B's EE context retransmits, the other two never do."""
    f = Fabric(seed=5, loss=0.10, reorder=0.05, duplicate=0.02,
               faulty=lambda src, dst: {src, dst} == {"A", "B"})
    a = endnode(f, "A")
    peers = {n: endnode(f, n) for n in "BCD"}
    eecs = {n: ee(f, "A", n) for n in peers}
    (q1, cq1), (q2, cq2) = rd_qp(a), rd_qp(a)
    remote, keys = {}, {}
    for n, ctx in peers.items():
        remote[n] = rd_qp(ctx)
        keys[n] = ctx.pd(1).allocate_rkey()
        ctx.pd(1).bind_rkey(keys[n], BUF + 4 * PAGE, 4 * PAGE, RW)
    assert len(a.rd.eecs) == 3 and len({e.qp_num for e, _ in eecs.values()}) == 3
    assert all(len(ctx.rd.eecs) == 1 for ctx in peers.values())
    n = 100
    for i in range(n):
        poke(a, 1, BUF + (i % 64) * 8, i.to_bytes(8, "big"))
        for name, (qb, _) in remote.items():
            f.send(name, qb.post_recv(RecvWR(i, (SGE(BUF + (i % 64) * 8, 8),))))
            dest = RdDest(name, qb.qp_num, QKEY)
            f.send("A", q1.post_rd(SendWR(i, WrOpcode.SEND, (SGE(BUF + (i % 64) * 8, 8),)),
                                   dest, f.now))
            f.send("A", q2.post_rd(SendWR(i, WrOpcode.RDMA_WRITE, (SGE(BUF + (i % 64) * 8, 8),),
                                          remote_addr=BUF + 4 * PAGE + i * 8, rkey=keys[name]),
                                   dest, f.now))
        if i % 10 == 9:
            f.run()
    f.run()
    for cq in (cq1, cq2):
        wcs = cq.poll(10 * n)
        assert len(wcs) == 3 * n and all(w.status is WcStatus.SUCCESS for w in wcs)
    want = b"".join(i.to_bytes(8, "big") for i in range(n))
    for name, (_, cqb) in remote.items():
        assert [w.wr_id for w in cqb.poll(10 * n)] == list(range(n))
        assert peek(peers[name], 1, BUF + 4 * PAGE, 8 * n) == want
    (ab, ba) = eecs["B"]
    assert ab.counters["resent"] > 5 and ba.counters["duplicates"] > 0
    for name in "CD":
        for e in eecs[name]:
            assert e.counters["resent"] == e.counters["timeouts"] == 0, name
    assert any(not s.delivered for s in f.frames)
    assert all(s.delivered for s in f.frames if {s.src, s.dst} != {"A", "B"})
    packets(f)  # every frame read back, its ICRC right


def test_two_remote_nodes_both_use_one_key_through_an_rd_qp_with_rdma_enabled():
    """Check 10, RD part (B3.27, L832): B binds one key; A and C, each with an EE context to
    B, WRITE with it through B's RD QP and READ it back -- both succeed."""
    f = Fabric()
    b, a, c = endnode(f, "B"), endnode(f, "A"), endnode(f, "C")
    ee(f, "A", "B"), ee(f, "C", "B")
    qb, _ = rd_qp(b)
    key = b.pd(1).allocate_rkey()
    b.pd(1).bind_rkey(key, BUF, 2 * PAGE, RW)
    dest = RdDest("B", qb.qp_num, QKEY)
    for i, (name, ctx) in enumerate((("A", a), ("C", c))):
        q, cq = rd_qp(ctx)
        poke(ctx, 1, BUF, name.encode() * 3000)
        f.send(name, q.post_rd(SendWR(1, WrOpcode.RDMA_WRITE, (SGE(BUF, 3000),),
                                      remote_addr=BUF + i * 3000, rkey=key), dest, f.now))
        f.send(name, q.post_rd(SendWR(2, WrOpcode.RDMA_READ, (SGE(BUF + 8 * PAGE, 3000),),
                                      remote_addr=BUF + i * 3000, rkey=key), dest, f.now))
        f.run()
        assert [(w.wr_id, w.status) for w in cq.poll(5)] == [(1, WcStatus.SUCCESS),
                                                             (2, WcStatus.SUCCESS)]
        assert peek(b, 1, BUF + i * 3000, 3000) == name.encode() * 3000
        assert peek(ctx, 1, BUF + 8 * PAGE, 3000) == name.encode() * 3000
    packets(f)


@pytest.mark.parametrize("refuser", ["rd qp with rdma disabled", "i/o adapter endnode"])
def test_rdma_refused_by_an_rd_qp_or_endnode_is_naked_and_changes_no_byte(refuser):
    """Check 10, the refusals: NAK INVALID_REQUEST (an operation the QP does not support),
    REM_INV_REQ_ERR to the requester, that QP in ERROR and its next work flushed; a 3-packet
    WRITE is NAKed at its last packet, a READ at its request, and not one byte of B's whole
    physical memory changes (SHA-256). The EE context goes on: another QP's SEND arrives."""
    f = Fabric()
    a = endnode(f, "A")
    b = endnode(f, "B", rdma=refuser != "i/o adapter endnode")
    ee(f, "A", "B")
    qb, cqb = rd_qp(b, rdma=refuser != "rd qp with rdma disabled")
    key = b.pd(1).allocate_rkey()
    b.pd(1).bind_rkey(key, BUF, 4 * PAGE, RW)
    before = b.vmm.memory.digest()
    (q1, cq1), (q2, cq2), (q3, cq3) = rd_qp(a), rd_qp(a), rd_qp(a)
    dest = RdDest("B", qb.qp_num, QKEY)
    f.send("A", q1.post_rd(SendWR(1, WrOpcode.RDMA_WRITE, (SGE(BUF, 3000),), remote_addr=BUF,
                                  rkey=key), dest, f.now))
    f.send("A", q1.post_rd(SendWR(2, WrOpcode.SEND, (SGE(BUF, 8),)), dest, f.now))
    f.send("A", q2.post_rd(SendWR(3, WrOpcode.RDMA_READ, (SGE(BUF, 3000),), remote_addr=BUF,
                                  rkey=key), dest, f.now))
    f.send("B", qb.post_recv(RecvWR(9, (SGE(BUF + 8 * PAGE, 8),))))
    f.send("A", q3.post_rd(SendWR(4, WrOpcode.SEND, (SGE(BUF, 8),)), dest, f.now))
    f.run()
    assert [(w.wr_id, w.status) for w in cq1.poll(5)] == [(1, WcStatus.REM_INV_REQ_ERR),
                                                          (2, WcStatus.WR_FLUSH_ERR)]
    assert [(w.wr_id, w.status) for w in cq2.poll(5)] == [(3, WcStatus.REM_INV_REQ_ERR)]
    assert [(w.wr_id, w.status) for w in cq3.poll(5)] == [(4, WcStatus.SUCCESS)]
    assert [w.wr_id for w in cqb.poll(5)] == [9]
    assert b.vmm.memory.digest() == before
    assert q1.state is QpState.ERROR and q3.state is qb.state is QpState.RTS
    assert a.rd.peers["B"].state is QpState.RTS
    sent = packets(f, "A", "B")
    naks = [p for p in packets(f, "B", "A") if p.syndrome == nak("INVALID_REQUEST")]
    assert [p.psn for p in naks] == [sent[2].psn, sent[3].psn]  # WRITE_LAST, READ_REQUEST
    assert [p.op for p in sent[:4]] == ["RDMA_WRITE_FIRST", "RDMA_WRITE_MIDDLE",
                                        "RDMA_WRITE_LAST", "RDMA_READ_REQUEST"]


def test_a_lost_nak_is_answered_again_not_taken_for_an_ack():
    """The NAK of a refused 3-packet WRITE is lost: the requester's resend is a duplicate, and
    the responder answers it with the NAK again (an ACK of its PSN would complete the WRITE
    SUCCESS)."""
    f = Fabric()
    a, b = endnode(f, "A"), endnode(f, "B")
    ee(f, "A", "B")
    qb, _ = rd_qp(b, rdma=False)
    (qa, cqa) = rd_qp(a)
    lost, send = [], f.send

    def lose_the_first_nak(src, out):
        send(src, [(d, p) for d, p in out if lost or p.syndrome != nak("INVALID_REQUEST")
                   or lost.append(p)])

    f.send = lose_the_first_nak
    f.send("A", qa.post_rd(SendWR(1, WrOpcode.RDMA_WRITE, (SGE(BUF, 3000),), remote_addr=BUF,
                                  rkey=1), RdDest("B", qb.qp_num, QKEY), f.now))
    f.run()
    assert len(lost) == 1 and [w.status for w in cqa.poll()] == [WcStatus.REM_INV_REQ_ERR]
    assert a.rd.peers["B"].counters["timeouts"] == 1


def test_a_wrong_q_key_or_no_such_qp_is_an_invalid_rd_request():
    f = Fabric()
    a, b = endnode(f, "A"), endnode(f, "B")
    ee(f, "A", "B")
    qb, cqb = rd_qp(b)
    (q1, cq1), (q2, cq2), (q3, cq3) = rd_qp(a), rd_qp(a), rd_qp(a)
    f.send("B", qb.post_recv(RecvWR(9, (SGE(BUF, 2048),))))
    for q, dest in ((q1, RdDest("B", qb.qp_num, QKEY + 1)), (q2, RdDest("B", 0x99, QKEY)),
                    (q3, RdDest("B", qb.qp_num, QKEY))):
        f.send("A", q.post_rd(SendWR(1, WrOpcode.SEND, (SGE(BUF, 1500),)), dest, f.now))
    f.run()
    assert [w.status for w in cq1.poll() + cq2.poll() + cq3.poll()] == [
        WcStatus.REM_INV_RD_REQ_ERR, WcStatus.REM_INV_RD_REQ_ERR, WcStatus.SUCCESS]
    assert [w.byte_len for w in cqb.poll(5)] == [1500]  # its receive was not used up before


def test_what_rd_does_not_carry_is_a_named_error():
    f = Fabric()
    a = endnode(f, "A")
    endnode(f, "B")
    q, _ = rd_qp(a)
    with pytest.raises(NoEeContext):
        q.post_rd(SendWR(1, WrOpcode.SEND, (SGE(BUF, 8),)), RdDest("B", 0x11, QKEY), 0.0)
    ee(f, "A", "B")
    with pytest.raises(UnsupportedWr):
        q.post_rd(SendWR(2, WrOpcode.DELAY, delay=0.1), RdDest("B", 0x11, QKEY), 0.0)


def test_a_stray_rd_packet_from_another_node_is_dropped():
    """An EE context takes packets from its peer only: the SEND B would send, coming from C
    into A's EE context to B, reaches nothing; from B it is taken. Neither an RC packet to an
    RD QP nor a duplicate READ naming no QP reaches anything."""
    f = Fabric()
    a = endnode(f, "A")
    endnode(f, "B"), endnode(f, "C")
    ea, _ = ee(f, "A", "B")
    qa, cqa = rd_qp(a)
    key = a.pd(1).allocate_rkey()
    a.pd(1).bind_rkey(key, BUF, 64, RW)
    f.send("A", qa.post_recv(RecvWR(1, (SGE(BUF, 64),))))
    p = Packet("SEND_ONLY", 700, qa.qp_num, True, payload=b"is it B?", qkey=QKEY, src_qp=0x11,
               eec=ea.qp_num)
    assert a.receive(p, 0.0, "C") == [] and cqa.poll() == []
    assert a.receive(p._replace(eec=None, qkey=None), 0.0) == []  # an RC packet, to RD QP
    assert [q.op for _, q in a.receive(p, 0.0, "B")] == ["ACKNOWLEDGE"]
    assert [(w.wr_id, w.src) for w in cqa.poll()] == [(1, "B")]
    read = p._replace(op="RDMA_READ_REQUEST", psn=701, reth=Reth(BUF, key, 8), payload=b"")
    assert [q.op for _, q in a.receive(read, 0.0, "B")] == ["RDMA_READ_RESPONSE_ONLY"]
    assert a.receive(read._replace(dqpn=0x99), 0.0, "B") == []



@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32), ops=st.lists(st.tuples(
    st.sampled_from(["write", "send", "read"]), st.integers(0, 1500), st.integers(0, 1)),
    min_size=1, max_size=20))
def test_a_lossy_reordering_fabric_delivers_every_rd_operation_once_in_order(seed, ops):
    """Check 21's recovery in miniature (test_qp's for RC): 10 % loss, reordering and
    duplicates; two QPs of A post to B on one EE context -- every WRITE lands, every SEND
    arrives once and in order, every READ returns what the model says, all SUCCESS. No fence
    is needed: one message at a time on an EE context, a READ asked again reads what it read."""
    f = Fabric(seed=seed, loss=0.1, reorder=0.05, duplicate=0.02)
    a, b = endnode(f, "A"), endnode(f, "B")
    ee(f, "A", "B")
    qb, cqb = rd_qp(b)
    key = b.pd(1).allocate_rkey()
    b.pd(1).bind_rkey(key, BUF, 8 * PAGE, RW)
    qps = [rd_qp(a), rd_qp(a)]
    dest = RdDest("B", qb.qp_num, QKEY)
    model, sends, reads, posted = bytearray(8 * PAGE), [], {}, ([], [])
    for i, (kind, n, which) in enumerate(ops):
        off, data = (i * 997) % (7 * PAGE), bytes((i + j) % 256 for j in range(n))
        poke(a, 1, BUF, data)
        if kind == "write":
            wr = SendWR(i, WrOpcode.RDMA_WRITE, (SGE(BUF, n),), remote_addr=BUF + off, rkey=key)
            model[off:off + n] = data
        elif kind == "send":
            f.send("B", qb.post_recv(RecvWR(i, (SGE(BUF + 8 * PAGE, 2048),))))
            wr = SendWR(i, WrOpcode.SEND, (SGE(BUF, n),))
            sends.append((i, n, qps[which][0].qp_num))
        else:
            wr = SendWR(i, WrOpcode.RDMA_READ, (SGE(BUF + 4 * PAGE + i * 1500, n),),
                        remote_addr=BUF + off, rkey=key)
            reads[i] = bytes(model[off:off + n])
        posted[which].append(i)
        f.send("A", qps[which][0].post_rd(wr, dest, f.now))
    f.run()
    for (_, cq), mine in zip(qps, posted, strict=True):
        assert [(w.wr_id, w.status) for w in cq.poll(50)] == [(i, WcStatus.SUCCESS)
                                                              for i in mine]
    assert [(w.wr_id, w.byte_len, w.src_qp) for w in cqb.poll(50)] == sends
    assert peek(b, 1, BUF, 8 * PAGE) == bytes(model)
    assert {i: peek(a, 1, BUF + 4 * PAGE + i * 1500, len(want)) for i, want in reads.items()} \
        == reads
    packets(f)


def _rd_run() -> Fabric:
    """A WRITE, a READ, a FETCH_ADD and a SEND with immediate data over RD, and their answers."""
    f = Fabric()
    a, b = endnode(f, "A"), endnode(f, "B")
    ee(f, "A", "B")
    (qb, _), (qa, cqa) = rd_qp(b), rd_qp(a)
    key = b.pd(1).allocate_rkey()
    b.pd(1).bind_rkey(key, BUF, 2 * PAGE, RW)
    poke(a, 1, BUF, b"remote write")
    d = RdDest("B", qb.qp_num, QKEY)
    f.send("B", qb.post_recv(RecvWR(1, (SGE(BUF + 8 * PAGE, 64),))))
    for wr in (SendWR(1, WrOpcode.RDMA_WRITE, (SGE(BUF, 12),), remote_addr=BUF + 32, rkey=key),
               SendWR(2, WrOpcode.RDMA_READ, (SGE(BUF + 4 * PAGE, 12),), remote_addr=BUF + 32,
                      rkey=key),
               SendWR(3, WrOpcode.ATOMIC_FETCH_AND_ADD, (SGE(BUF + 5 * PAGE, 8),),
                      remote_addr=BUF, rkey=key, compare_add=3),
               SendWR(4, WrOpcode.SEND_WITH_IMM, (SGE(BUF, 12),), imm=7)):
        f.send("A", qa.post_rd(wr, d, f.now))
    f.run()
    assert [w.status for w in cqa.poll(9)] == [WcStatus.SUCCESS] * 4
    return f


def test_ftsslabs_dissectors_read_every_rd_field():
    """The Scapy layer (RD ACKNOWLEDGE per IBA, ``read_rd_ack_per_iba``) and
    ``fast.roce.parse_roce`` read each RD frame's RDETH, DETH, RETH, AtomicETH, AETH and ImmDt
    as the packet that was sent."""
    from scapy.layers.l2 import Ether

    from ftsslab.layers import roce as layer

    f = _rd_run()
    layer.read_rd_ack_per_iba(True)
    try:
        for s in f.frames:
            p, d = packet(s.data), parse_roce(s.data)
            scapy = Ether(s.data)
            assert scapy[layer.RDETH].eecnxt == d["RDETH"]["eecnxt"] == p.eec
            if p.qkey is not None:
                assert (scapy[layer.DETH].qkey, scapy[layer.DETH].srcqp) == (
                    d["DETH"]["qkey"], d["DETH"]["srcqp"]) == (p.qkey, p.src_qp)
            if p.reth is not None:
                r = scapy[layer.RETH]
                assert (r.va, r.rkey, r.dmalen) == tuple(d["RETH"].values()) == p.reth
            if p.atomic is not None:
                at = scapy[layer.AtomicETH]
                assert (at.va, at.rkey, at.swapdt, at.cmpdt) == p.atomic
            if p.syndrome is not None:
                assert (scapy[layer.AETH].syndrome, scapy[layer.AETH].msn) == (
                    d["AETH"]["syndrome"], d["AETH"]["msn"]) == (p.syndrome, p.msn)
            if p.imm is not None:
                assert scapy[layer.ImmDt].imm == p.imm == 7
    finally:
        layer.read_rd_ack_per_iba(False)
    assert {p.op for p in packets(f)} >= {"RDMA_WRITE_ONLY", "RDMA_READ_REQUEST", "FETCH_ADD",
                                          "SEND_ONLY_WITH_IMMEDIATE", "ACKNOWLEDGE",
                                          "RDMA_READ_RESPONSE_ONLY", "ATOMIC_ACKNOWLEDGE"}


@pytest.mark.tshark
def test_tshark_4_reads_every_rd_header_8_bytes_late(tmp_path):
    """What tshark 4.0 makes of RD (opcodes 0x40-0x5f): it calls them "DC" in the Info column
    and takes a 20-byte BTH (IBA's is 12), as if an 8-byte header of Mellanox's Dynamically
    Connected transport followed it; so every RDETH, DETH, RETH, AETH it shows is the bytes 8
    further on -- a request's "E2E Context" is the DETH's source QP -- some valid frames are
    "Malformed", and an RD ACKNOWLEDGE shows no RDETH and reads its AETH from the ICRC. If this
    fails, tshark may read RD right: then assert the truth here, and docs/san.md changes."""
    import subprocess
    import xml.etree.ElementTree as ET

    from tests.wireshark.oracle import TSHARK, write_pcap

    f = _rd_run()
    pcap = write_pcap(tmp_path / "rd.pcapng", [s.data for s in f.frames])
    shown = subprocess.run([TSHARK, "-r", str(pcap), "-T", "pdml"], capture_output=True,
                           text=True, timeout=120, check=True).stdout
    info = subprocess.run([TSHARK, "-r", str(pcap)], capture_output=True, text=True,
                          timeout=120, check=True).stdout.splitlines()
    sent, trees = packets(f), ET.fromstring(shown).findall("packet")
    assert len(info) == len(sent) == len(trees) == 8
    for p, line, frame, tree in zip(sent, info, (s.data for s in f.frames), trees, strict=True):
        fields = {e.get("name"): (int(e.get("pos")), int(e.get("size")), e.get("show"))
                  for e in tree.iter("field") if e.get("name", "").startswith("infiniband.")}
        assert fields["infiniband.bth"][:2] == (42, 20), p.op  # IBA: 12 bytes, at 42
        rdeth = 54  # where IBA puts it (then DETH at 58, RETH or AtomicETH at 66; AETH at 58)
        if p.op != "SEND_ONLY_WITH_IMMEDIATE":  # (shown "RESERVED (Unknown Attribute)")
            assert " DC " in line, line
        if p.op in ("RDMA_READ_REQUEST", "FETCH_ADD", "ATOMIC_ACKNOWLEDGE"):
            assert "Malformed" in line, line  # well-formed frames, their headers run short
        if p.op == "ACKNOWLEDGE":
            assert "infiniband.rdeth" not in fields
            assert fields["infiniband.aeth"][0] == len(frame) - 4  # it reads the ICRC
            assert int(fields["infiniband.aeth.syndrome"][2]) == frame[-4] != p.syndrome
            continue
        assert fields["infiniband.rdeth"][0] == rdeth + 8
        eec = int(fields["infiniband.rdeth.eecnxt"][2])
        assert eec == int.from_bytes(frame[rdeth + 9:rdeth + 12], "big") != p.eec
        if p.qkey is not None:  # a request: the DETH's source QP taken for the EE context
            assert eec == p.src_qp
            assert int(fields["infiniband.deth.q_key"][2], 16) != p.qkey
        if "infiniband.reth" in fields:
            assert fields["infiniband.reth"][0] == rdeth + 12 + 8
            assert int(fields["infiniband.reth.va"][2], 16) != p.reth.va


def test_rc_a_third_node_has_no_qp_connected_and_cannot_use_the_key():
    """Check 10, RC part (B3.27): B's key reaches B's RC QP from A, the one node it is
    connected to; the very WRITE, coming from C, is dropped and no byte of B changes."""
    from tests.san.test_verbs import pair

    f = Fabric()
    a, b = endnode(f, "A"), endnode(f, "B")
    endnode(f, "C")
    pa, pb, qa, qb, cqa, _ = pair(f, a, b)
    key = pb.allocate_rkey()
    pb.bind_rkey(key, BUF, 64, RW)
    poke(a, 1, BUF, b"from A, or C?")
    ((_, write),) = qa.post_send(SendWR(1, WrOpcode.RDMA_WRITE, (SGE(BUF, 13),),
                                        remote_addr=BUF, rkey=key), f.now)
    before = b.vmm.memory.digest()
    assert b.receive(write, f.now, "C") == [] and b.vmm.memory.digest() == before
    assert [p.op for _, p in b.receive(write, f.now, "A")] == ["ACKNOWLEDGE"]
    assert peek(b, 1, BUF, 13) == b"from A, or C?"
