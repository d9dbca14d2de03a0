"""Verbs on two endnodes of a simulated fabric (``san/fabric.py``): local buffers gathered and
scattered by effective address, the seed's key verbs, shared CQs, the default error handler,
and RC over a lossy fabric -- every frame a RoCEv2 frame with a right ICRC."""

from __future__ import annotations

import pytest

from ftsslab.fast.roce import verify_icrc
from ftsslab.san.fabric import Fabric
from ftsslab.san.memory import PAGE, SEGMENT_SHIFT, Vmm
from ftsslab.san.qp import QpState, WcOpcode, WcStatus, WrOpcode
from ftsslab.san.rkeys import Access, InvalidParameter
from ftsslab.san.verbs import CQ, SGE, Context, RecvWR, SendWR, UdSendWR

SEG = 1 << SEGMENT_SHIFT
BUF = SEG  # each process's buffer: EA 1 << 28, 16 pages
RW = Access.REMOTE_READ | Access.REMOTE_WRITE | Access.REMOTE_ATOMIC


def endnode(fabric: Fabric, name: str, pids=(1,), mapped: bool = True, **kw) -> Context:
    vmm = Vmm(256)
    ctx = Context(vmm, **kw)
    for pid in pids:
        vmm.add_segment(pid, esid=1)
        if mapped:
            vmm.map_range(vmm.process(pid), BUF, 16 * PAGE)
    fabric.add(name, ctx)
    return ctx


def poke(ctx: Context, pid: int, ea: int, data: bytes) -> None:
    from ftsslab.san.memory import Prot, pieces

    table, at = ctx.vmm.process(pid), 0
    for va, n in pieces(ea, len(data)):
        ctx.vmm.memory.write(ctx.vmm.page_table.pa(table.va(va), Prot.WRITE), data[at:at + n])
        at += n


def peek(ctx: Context, pid: int, ea: int, n: int) -> bytes:
    from ftsslab.san.memory import Prot, pieces

    table = ctx.vmm.process(pid)
    return b"".join(ctx.vmm.memory.read(ctx.vmm.page_table.pa(table.va(va), Prot.READ), k)
                    for va, k in pieces(ea, n))


def pair(fabric: Fabric, a: Context, b: Context, pid_a: int = 1, pid_b: int = 1, **kw):
    pa, pb = a.pd(pid_a), b.pd(pid_b)
    cqa, cqb = CQ(), CQ()
    qa, qb = pa.open_qp(cqa, **kw), pb.open_qp(cqb)
    names = {id(c): n for n, e in fabric.nodes.items() for c in (e.context,)}
    qa.connect(names[id(b)], qb.qp_num, 0.0, psn=100, remote_psn=500, timeout=0.005)
    qb.connect(names[id(a)], qa.qp_num, 0.0, psn=500, remote_psn=100, timeout=0.005)
    return pa, pb, qa, qb, cqa, cqb


def test_rdma_write_read_and_send_move_bytes_between_the_processes_memories():
    """Claim 1 / B3.23: B binds a key to its buffer and the key reaches A; A writes from its
    own buffer into B's, reads it back into another of its buffers, and SENDs into B's posted
    receive buffer."""
    f = Fabric()
    a, b = endnode(f, "A"), endnode(f, "B")
    pa, pb, qa, qb, cqa, cqb = pair(f, a, b)
    key = pb.allocate_rkey()
    pb.bind_rkey(key, BUF + 1000, 5000, RW)
    poke(a, 1, BUF, bytes(range(256)) * 12)
    f.send("A", qa.post_send(SendWR(1, WrOpcode.RDMA_WRITE, (SGE(BUF, 3000),),
                                    remote_addr=BUF + 1000, rkey=key), f.now))
    f.send("A", qa.post_send(SendWR(2, WrOpcode.RDMA_READ, (SGE(BUF + 8 * PAGE, 3000),),
                                    remote_addr=BUF + 1000, rkey=key), f.now))
    f.send("B", qb.post_recv(RecvWR(9, (SGE(BUF + 12 * PAGE, 100),))))
    f.send("A", qa.post_send(SendWR(3, WrOpcode.SEND_WITH_IMM, (SGE(BUF + 7, 50),), imm=5),
                             f.now))
    f.run()
    assert [(w.wr_id, w.status, w.opcode) for w in cqa.poll(10)] == [
        (1, WcStatus.SUCCESS, WcOpcode.RDMA_WRITE), (2, WcStatus.SUCCESS, WcOpcode.RDMA_READ),
        (3, WcStatus.SUCCESS, WcOpcode.SEND)]
    assert peek(b, 1, BUF + 1000, 3000) == peek(a, 1, BUF, 3000)
    assert peek(a, 1, BUF + 8 * PAGE, 3000) == peek(a, 1, BUF, 3000)
    (recv,) = cqb.poll(10)
    assert (recv.wr_id, recv.byte_len, recv.imm) == (9, 50, 5)
    assert peek(b, 1, BUF + 12 * PAGE, 50) == peek(a, 1, BUF + 7, 50)
    assert f.frames and all(verify_icrc(s.data) for s in f.frames)


def test_one_cq_for_several_qps_names_each_completions_qp_and_a_nak_errors_its_qp():
    """Check 11: a remote access NAK completes REM_ACCESS_ERR on the QP's CQ, shared by two
    QPs; the completion names the QP and the work request, that QP goes to ERROR and its later
    work is flushed, the other QP goes on."""
    f = Fabric()
    a, b = endnode(f, "A"), endnode(f, "B")
    pa, pb = a.pd(1), b.pd(1)
    shared, cqb = CQ(), CQ()
    q1, q2 = pa.open_qp(shared), pa.open_qp(shared)
    r1, r2 = pb.open_qp(cqb), pb.open_qp(cqb)
    for q, r in ((q1, r1), (q2, r2)):
        q.connect("B", r.qp_num, 0.0)
        r.connect("A", q.qp_num, 0.0)
    key = pb.allocate_rkey()
    pb.bind_rkey(key, BUF, 100, RW)
    f.send("A", q1.post_send(SendWR(1, WrOpcode.RDMA_WRITE, (SGE(BUF, 10),),
                                    remote_addr=BUF + 200, rkey=key), 0.0))
    f.send("A", q1.post_send(SendWR(2, WrOpcode.RDMA_WRITE, (SGE(BUF, 10),),
                                    remote_addr=BUF, rkey=key), 0.0))
    f.send("A", q2.post_send(SendWR(3, WrOpcode.RDMA_WRITE, (SGE(BUF, 10),),
                                    remote_addr=BUF, rkey=key), 0.0))
    f.run()
    got = sorted((w.qp_num, w.wr_id, w.status) for w in shared.poll(10))
    assert got == sorted([(q1.qp_num, 1, WcStatus.REM_ACCESS_ERR),
                          (q1.qp_num, 2, WcStatus.WR_FLUSH_ERR),
                          (q2.qp_num, 3, WcStatus.SUCCESS)])
    assert q1.state is QpState.ERROR and q2.state is QpState.RTS


def test_ten_qps_of_the_bound_process_may_use_its_key_and_another_processs_qp_may_not():
    """Check 9 (B3.26, D3.9), with B's QPs of process 1 (bound) and of process 2."""
    f = Fabric()
    a, b = endnode(f, "A"), endnode(f, "B", pids=(1, 2))
    pb1, key, results = b.pd(1), None, {}
    for pid_b in (1,) * 10 + (2,):
        _, _, qa, qb, cqa, _ = pair(f, a, b, pid_b=pid_b)
        if key is None:  # (a process binds once it has a QP: OpenQP took its table, 604)
            key = pb1.allocate_rkey()
            pb1.bind_rkey(key, BUF, 64, RW)
        f.send("A", qa.post_send(SendWR(qa.qp_num, WrOpcode.RDMA_WRITE, (SGE(BUF, 8),),
                                        remote_addr=BUF, rkey=key), f.now))
        f.run()
        results[(pid_b, qb.qp_num)] = cqa.poll()[0].status
    statuses = [s for (pid, _), s in results.items() if pid == 1]
    assert statuses == [WcStatus.SUCCESS] * 10
    assert [s for (pid, _), s in results.items() if pid == 2] == [WcStatus.REM_ACCESS_ERR]


def test_the_default_error_handler_maps_a_faulting_page_and_the_retry_lands():
    """Check 12 end to end: the handler gets (QP, VA, rkey), maps the page; the requester saw
    RNR NAK and retried; the data is in the frame the PTE now names."""
    f = Fabric()
    a = endnode(f, "A")
    seen = []

    def handler(fault):
        seen.append(fault)
        b.map_local_page(fault.va)

    b = endnode(f, "B", mapped=False, handler=handler)
    pa, pb, qa, qb, cqa, _ = pair(f, a, b)
    key = pb.allocate_rkey()
    pb.bind_rkey(key, BUF, 2 * PAGE, RW)
    poke(a, 1, BUF, b"paged in")
    f.send("A", qa.post_send(SendWR(1, WrOpcode.RDMA_WRITE, (SGE(BUF, 8),),
                                    remote_addr=BUF + PAGE + 5, rkey=key), 0.0))
    f.run()
    assert [w.status for w in cqa.poll()] == [WcStatus.SUCCESS]
    assert len(seen) == 1 and seen[0].rkey == key and seen[0].qp_num == qb.qp_num
    assert peek(b, 1, BUF + PAGE + 5, 8) == b"paged in"
    assert qa.core.counters["rnr_naks"] == 1


def test_a_local_buffer_outside_the_process_is_a_local_protection_error():
    f = Fabric()
    a, b = endnode(f, "A"), endnode(f, "B")
    _, _, qa, _, cqa, _ = pair(f, a, b)
    assert qa.post_send(SendWR(1, WrOpcode.SEND, (SGE(5 * SEG, 8),)), 0.0) == []
    assert [w.status for w in cqa.poll()] == [WcStatus.LOC_PROT_ERR]


def test_a_user_process_may_not_bind_another_processs_memory():
    f = Fabric()
    b = endnode(f, "B", pids=(1, 2))
    one, two = b.pd(1), b.pd(2)
    with pytest.raises(InvalidParameter, match="has opened no QP"):
        one.bind_rkey(one.allocate_rkey(), BUF, 8, RW)
    one.open_qp(CQ()), two.open_qp(CQ())
    key = one.allocate_rkey()
    one.bind_rkey(key, BUF, 8, RW)
    with pytest.raises(InvalidParameter, match="bound by process 1"):
        two.bind_rkey(key, BUF, 8, RW)
    with pytest.raises(InvalidParameter, match="bound by process 1"):
        two.unbind_rkey(key)


@pytest.mark.parametrize("seed", [1, 2])
def test_rc_over_a_lossy_reordering_fabric_delivers_every_send_once_and_in_order(seed):
    """Check 17 (a short version): 10 % of frames lost, 1 % reordered; 1000 SENDs and 1000
    WRITEs delivered exactly once, in order; every request frame acknowledged; the losses
    recovered by retransmission."""
    f = Fabric(seed=seed, loss=0.10, reorder=0.01)
    a, b = endnode(f, "A"), endnode(f, "B")
    pa, pb, qa, qb, cqa, cqb = pair(f, a, b, max_outstanding=16)
    key = pb.allocate_rkey()
    pb.bind_rkey(key, BUF, 16 * PAGE, RW)
    n = 1000
    for i in range(n):
        poke(a, 1, BUF + (i % 64) * 8, i.to_bytes(8, "big"))
        f.send("B", qb.post_recv(RecvWR(i, (SGE(BUF + 8 * PAGE + (i % 64) * 8, 8),))))
        f.send("A", qa.post_send(SendWR(2 * i, WrOpcode.SEND, (SGE(BUF + (i % 64) * 8, 8),)),
                                 f.now))
        f.send("A", qa.post_send(SendWR(2 * i + 1, WrOpcode.RDMA_WRITE,
                                        (SGE(BUF + (i % 64) * 8, 8),),
                                        remote_addr=BUF + 4 * PAGE + i * 8, rkey=key), f.now))
        if i % 50 == 49:
            f.run()
    f.run()
    wcs = cqa.poll(3 * n)
    assert [(w.wr_id, w.status) for w in wcs] == [(i, WcStatus.SUCCESS) for i in range(2 * n)]
    recvs = cqb.poll(3 * n)
    assert [w.wr_id for w in recvs] == list(range(n))
    assert peek(b, 1, BUF + 4 * PAGE, 8 * n) == b"".join(i.to_bytes(8, "big") for i in range(n))
    assert qa.core.counters["resent"] > 10 and qb.core.counters["duplicates"] > 0
    lost = sum(1 for s in f.frames if not s.delivered)
    assert 0.07 < lost / len(f.frames) < 0.13


def test_no_physical_address_appears_in_any_frame():
    """Check 15 (B3.19 614): an advertised key, WRITEs, READs, SENDs and an atomic -- and
    no frame holds, anywhere, any PA of either node's page table or of a byte that moved."""
    from ftsslab.fast.roce import build_rkey_advert
    from ftsslab.san.memory import frame_pa

    f = Fabric()
    a, b = endnode(f, "A"), endnode(f, "B")
    pa, pb, qa, qb, cqa, cqb = pair(f, a, b)
    key = pb.allocate_rkey()
    pb.bind_rkey(key, BUF, 8 * PAGE, RW)
    poke(b, 1, BUF + 15 * PAGE, build_rkey_advert(va=BUF, rkey=key, length=8 * PAGE,
                                                  access=int(RW.value), qpn=qb.qp_num))
    f.send("A", qa.post_recv(RecvWR(1, (SGE(BUF + 15 * PAGE, 32),))))
    f.send("B", qb.post_send(SendWR(1, WrOpcode.SEND, (SGE(BUF + 15 * PAGE, 32),)), 0.0))
    poke(a, 1, BUF, bytes(range(256)) * 32)
    f.send("A", qa.post_send(SendWR(2, WrOpcode.RDMA_WRITE, (SGE(BUF, 8192),),
                                    remote_addr=BUF + 100, rkey=key), 0.0))
    f.send("A", qa.post_send(SendWR(3, WrOpcode.RDMA_READ, (SGE(BUF + 4 * PAGE, 8192),),
                                    remote_addr=BUF + 100, rkey=key), 0.0))
    f.send("A", qa.post_send(SendWR(4, WrOpcode.ATOMIC_FETCH_AND_ADD, (SGE(BUF + 9 * PAGE, 8),),
                                    remote_addr=BUF + 64, rkey=key, compare_add=1), 0.0))
    f.run()
    assert [w.status for w in cqa.poll(10)] == [WcStatus.SUCCESS] * 4  # (and the receive)
    assert peek(a, 1, BUF + 15 * PAGE, 32)[:4] == b"RKEY"  # the advert came
    pas = set()
    for ctx in (a, b):
        for pte in ctx.vmm.page_table.frames:
            if pte is not None:
                base = frame_pa(pte.pfn)
                pas.update(range(base, base + PAGE, 8))  # every aligned PA of every frame
    values = {v.to_bytes(8, "big") for v in pas} | {v.to_bytes(8, "little") for v in pas}
    wire = b"".join(s.data for s in f.frames)
    assert len(f.frames) > 20
    assert not any(wire[i:i + 8] in values for i in range(len(wire) - 7))


@pytest.mark.parametrize("seed", range(5))
def test_after_a_rebind_completes_the_old_region_is_never_reached(seed):
    """Check 7's stress: WRITEs to R1 stream while B rebinds the key to R2 at a random
    moment; from that instant no byte of R1 changes (its hash), the WRITE in flight is NAKed
    or was done, and a WRITE to R2 with the same key succeeds."""
    import hashlib
    import random

    rng = random.Random(seed)
    f = Fabric(seed=seed, loss=0.02)
    a, b = endnode(f, "A"), endnode(f, "B")
    pa, pb, qa, qb, cqa, cqb = pair(f, a, b)
    key = pb.allocate_rkey()
    pb.bind_rkey(key, BUF, 4 * PAGE, RW)
    poke(a, 1, BUF, bytes(range(1, 256)) * 17)
    at = rng.randrange(5, 60)
    r1 = lambda: hashlib.sha256(peek(b, 1, BUF, 4 * PAGE)).hexdigest()  # noqa: E731
    frozen = None
    for i in range(80):
        f.send("A", qa.post_send(SendWR(i, WrOpcode.RDMA_WRITE, (SGE(BUF + (i % 16), 700),),
                                        remote_addr=BUF + (i * 97) % (3 * PAGE), rkey=key),
                                 f.now))
        f.run(until=f.now + rng.random() * 0.0004)
        if i == at:
            pb.bind_rkey(key, BUF + 8 * PAGE, 4 * PAGE, RW)  # the rebind completes here
            frozen = r1()
        if frozen is not None:
            assert r1() == frozen
    f.run()
    assert r1() == frozen
    statuses = [w.status for w in cqa.poll(100)]
    assert WcStatus.REM_ACCESS_ERR in statuses and statuses[-1] is WcStatus.WR_FLUSH_ERR
    _, _, q2, _, cq2, _ = pair(f, a, b)
    f.send("A", q2.post_send(SendWR(1, WrOpcode.RDMA_WRITE, (SGE(BUF, 8),),
                                    remote_addr=BUF + 8 * PAGE, rkey=key), f.now))
    f.run()
    assert [w.status for w in cq2.poll()] == [WcStatus.SUCCESS]


def test_ud_datagrams_name_their_sender_and_what_cannot_be_taken_is_dropped_and_counted():
    """B3.10, check 22's second half: a datagram completes when sent; the receiver drops and
    counts a wrong Q_Key, no receive posted, a datagram longer than the buffer; a receive
    names the sender's QP and endnode."""
    f = Fabric()
    a, b = endnode(f, "A"), endnode(f, "B")
    cqa, cqb = CQ(), CQ()
    ua, ub = a.pd(1).open_ud_qp(cqa, qkey=0x1111), b.pd(1).open_ud_qp(cqb, qkey=0x2222)
    poke(a, 1, BUF, b"datagram" * 100)
    send = lambda i, n, qkey: f.send("A", ua.post_datagram(UdSendWR(  # noqa: E731
        i, (SGE(BUF, n),), "B", ub.qp_num, qkey), f.now))
    f.send("B", ub.post_recv(RecvWR(1, (SGE(BUF + PAGE, 64),))))
    for i, n, qkey in ((1, 64, 0x2222), (2, 64, 0x9999),  # a wrong Q_Key
                       (3, 64, 0x2222)):  # no receive posted any more
        send(i, n, qkey)
        f.run()
    f.send("B", ub.post_recv(RecvWR(2, (SGE(BUF + PAGE, 64),))))
    send(4, 65, 0x2222)  # longer than the buffer
    send(5, 2000, 0x2222)  # longer than a packet: not sent
    f.run()
    assert [(w.wr_id, w.status) for w in cqa.poll(10)] == [
        (1, WcStatus.SUCCESS), (2, WcStatus.SUCCESS), (3, WcStatus.SUCCESS),
        (4, WcStatus.SUCCESS), (5, WcStatus.LOC_LEN_ERR)]
    (got,) = cqb.poll(10)
    assert (got.wr_id, got.byte_len, got.src_qp, got.src) == (1, 64, ua.qp_num, "A")
    assert peek(b, 1, BUF + PAGE, 64) == (b"datagram" * 8)
    assert {k: ub.core.counters[k] for k in ("received", "qkey_drops", "no_receive",
                                             "too_long")} == {
        "received": 1, "qkey_drops": 1, "no_receive": 1, "too_long": 1}


def test_a_lost_datagram_is_not_sent_again():
    f = Fabric(seed=4, loss=0.2)
    a, b = endnode(f, "A"), endnode(f, "B")
    cqa, cqb = CQ(), CQ()
    ua, ub = a.pd(1).open_ud_qp(cqa, qkey=7), b.pd(1).open_ud_qp(cqb, qkey=7)
    for i in range(200):
        f.send("B", ub.post_recv(RecvWR(i, (SGE(BUF + PAGE, 16),))))
        f.send("A", ua.post_datagram(UdSendWR(i, (SGE(BUF, 16),), "B", ub.qp_num, 7), f.now))
    f.run()
    lost = sum(not s.delivered for s in f.frames)
    assert len(f.frames) == 200 and 20 < lost < 60  # one frame each, none resent
    assert len(cqa.poll(300)) == 200 and len(cqb.poll(300)) == 200 - lost


def test_a_delay_work_request_holds_the_queue_for_its_interval():
    """Check 20 (B3.6 "Delay"), on the virtual clock: SEND, Delay(50 ms), SEND -- the second
    arrives at least 50 ms after the first; completions keep the order of posting."""
    f = Fabric()
    a, b = endnode(f, "A"), endnode(f, "B")
    pa, pb, qa, qb, cqa, cqb = pair(f, a, b)
    for i in range(2):
        f.send("B", qb.post_recv(RecvWR(i, (SGE(BUF, 8),))))
    f.send("A", qa.post_send(SendWR(1, WrOpcode.SEND, (SGE(BUF, 8),)), f.now))
    f.send("A", qa.post_send(SendWR(2, WrOpcode.DELAY, delay=0.05), f.now))
    f.send("A", qa.post_send(SendWR(3, WrOpcode.SEND, (SGE(BUF, 8),)), f.now))
    f.run()
    sends = [s.time for s in f.frames if s.src == "A"]
    assert len(sends) == 2 and sends[1] - sends[0] >= 0.05
    assert [(w.wr_id, w.opcode) for w in cqa.poll(5)] == [
        (1, WcOpcode.SEND), (2, WcOpcode.DELAY), (3, WcOpcode.SEND)]
    f.send("A", qa.post_send(SendWR(4, WrOpcode.DELAY, delay=0.01), f.now))  # last in line
    f.run()  # (ends: the delay's timer is not left due)
    assert qa.core.next_deadline() is None and [w.wr_id for w in cqa.poll()] == [4]


def test_a_bind_work_request_takes_effect_before_the_advert_behind_it_is_sent():
    """Check 16's second half: BIND_RKEY as a WQE, then SEND(RKeyAdvert) on the same QP; the
    peer RDMAs the moment the advert arrives -- 1000 times out of 1000, a new range each time.
    A bind the process may not make completes MW_BIND_ERR."""
    from ftsslab.fast.roce import build_rkey_advert, parse_rkey_advert

    f = Fabric(seed=9, loss=0.05)
    a, b = endnode(f, "A"), endnode(f, "B")
    pa, pb, qa, qb, cqa, cqb = pair(f, a, b)  # A binds, B writes into A
    key = pa.allocate_rkey()
    ok = 0
    for i in range(1000):
        where = BUF + (i % 8) * PAGE + (i % 100)
        poke(a, 1, BUF + 15 * PAGE, build_rkey_advert(va=where, rkey=key, length=8,
                                                      access=RW.value, qpn=qa.qp_num))
        f.send("B", qb.post_recv(RecvWR(i, (SGE(BUF + 15 * PAGE, 32),))))
        f.send("A", qa.post_send(SendWR(2 * i, WrOpcode.BIND_RKEY, bind=(key, where, 8, RW)),
                                 f.now))
        f.send("A", qa.post_send(SendWR(2 * i + 1, WrOpcode.SEND,
                                        (SGE(BUF + 15 * PAGE, 32),)), f.now))
        for _ in range(10_000):  # (bounded: a lost advert would otherwise hang the test)
            if got := cqb.poll():
                break
            f.run(until=f.now + 0.001)
        ad = parse_rkey_advert(peek(b, 1, BUF + 15 * PAGE, 32))
        f.send("B", qb.post_send(SendWR(i, WrOpcode.RDMA_WRITE, (SGE(BUF, 8),),
                                        remote_addr=ad["va"], rkey=ad["rkey"]), f.now))
        f.run()
        ok += sum(w.status is WcStatus.SUCCESS for w in cqb.poll(5))
        assert got[0].status is WcStatus.SUCCESS
    assert ok == 1000
    assert all(w.status is WcStatus.SUCCESS for w in cqa.poll(3000))
    f.send("A", qa.post_send(SendWR(1, WrOpcode.BIND_RKEY, bind=(key, 9 * SEG, 8, RW)), f.now))
    assert [w.status for w in cqa.poll()] == [WcStatus.MW_BIND_ERR]
