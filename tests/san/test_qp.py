"""The RC queue pair (B3.8, B3.14, IBA chapter 9) on a virtual clock: two QPs back to back
over a wire that may lose, reorder and duplicate packets; node B's memory is reached through
its remote keys."""

from __future__ import annotations

import heapq
import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ftsslab.san.memory import PAGE, SEGMENT_SHIFT, Prot, Vmm, pieces
from ftsslab.san.packets import Packet, psn_diff
from ftsslab.san.qp import (
    TRANSITIONS,
    Completion,
    PageFault,
    QpState,
    QpStateError,
    RcQp,
    RecvWr,
    SendWr,
    StateChanged,
    Transmit,
    WcOpcode,
    WcStatus,
    WrOpcode,
)
from ftsslab.san.rkeys import Access, Consumer, Reach, RKeys

SEG = 1 << SEGMENT_SHIFT
BASE = SEG
USER = Consumer(1)
ALL = Access.REMOTE_READ | Access.REMOTE_WRITE | Access.REMOTE_ATOMIC


class Wire:
    """QP a (node A, the requester) and QP b (node B, whose memory it targets), a virtual
    clock, and what the wire does to each packet: ``loss``, ``reorder`` (a packet held back
    by up to 3 ms), ``dup``, seeded."""

    def __init__(self, *, pages: int = 8, mtu: int = 256, loss: float = 0.0,
                 reorder: float = 0.0, dup: float = 0.0, seed: int = 0,
                 max_outstanding: int = 16, retry_cnt: int = 7, timeout: float = 0.01,
                 drop=None) -> None:
        self.vmm = Vmm(64)
        self.keys = RKeys(self.vmm)
        self.keys.open_process(USER.pid)
        self.vmm.add_segment(USER.pid, esid=1)
        if pages:
            self.vmm.map_range(self.keys.tables[USER.pid], BASE, pages * PAGE)
        self.a = RcQp(10, mtu=mtu, max_outstanding=max_outstanding)
        self.b = RcQp(20, memory=Reach(self.keys, USER.pid), mtu=mtu)
        self.rng = random.Random(seed)
        self.loss, self.reorder, self.dup, self.drop = loss, reorder, dup, drop
        self.now = 0.0
        self.queue: list = []
        self.order = itertools.count()
        self.log: list = []  # (time, side, action)
        self.sent: list[tuple[str, Packet]] = []
        for qp, peer in ((self.a, self.b), (self.b, self.a)):
            self.apply(qp, qp.modify(QpState.INIT, 0.0))
            self.apply(qp, qp.modify(QpState.RTR, 0.0, dest_qp=peer.qp_num, rq_psn=1000))
            self.apply(qp, qp.modify(QpState.RTS, 0.0, sq_psn=1000, timeout=timeout,
                                     retry_cnt=retry_cnt, rnr_retry=7))

    def key(self, base: int = BASE, length: int = 4 * PAGE, access: Access = ALL) -> int:
        k = self.keys.allocate(USER)
        self.keys.bind(USER, k, base, length, access)
        return k

    def apply(self, qp: RcQp, acts) -> None:
        for act in acts:
            self.log.append((self.now, qp.qp_num, act))
            if isinstance(act, Transmit):
                self.sent.append((qp.qp_num, act.packet))
                self._wire(qp, act.packet)

    def _wire(self, qp: RcQp, p: Packet) -> None:
        to = self.b if qp is self.a else self.a
        if self.drop is not None and self.drop(qp.qp_num, p):
            return
        if self.rng.random() < self.loss:
            return
        copies = 2 if self.rng.random() < self.dup else 1
        for _ in range(copies):
            delay = 0.0001 + (self.rng.random() * 0.003 if self.rng.random() < self.reorder
                              else 0)
            heapq.heappush(self.queue, (self.now + delay, next(self.order), to, p))

    def run(self, until: float = 60.0) -> None:
        for _ in range(1_000_000):
            due = [t for t in (self.queue[0][0] if self.queue else None,
                               self.a.next_deadline(), self.b.next_deadline()) if t is not None]
            if not due or min(due) > until:
                return
            self.now = max(self.now, min(due))
            if self.queue and self.queue[0][0] <= self.now:
                _, _, to, p = heapq.heappop(self.queue)
                self.apply(to, to.receive(p, self.now))
                continue
            for qp in (self.a, self.b):
                if (t := qp.next_deadline()) is not None and t <= self.now:
                    self.apply(qp, qp.on_timer(self.now))
        raise AssertionError(f"no end at {self.now}: {self.a.next_deadline()}, "
                             f"{self.b.next_deadline()}, {len(self.queue)} in flight")

    def completions(self, qp: RcQp, recv: bool = False):
        return [a.wc for _, n, a in self.log if n == qp.qp_num and isinstance(a, Completion)
                and a.recv == recv]

    def at(self, va: int, n: int) -> bytes:
        """``n`` bytes of process USER's memory at EA ``va``."""
        table = self.keys.tables[USER.pid]
        return b"".join(self.vmm.memory.read(self.vmm.page_table.pa(table.va(at), Prot.READ),
                                             k) for at, k in pieces(va, n))


def test_a_write_then_a_read_of_several_packets():
    w = Wire()
    k = w.key()
    data = bytes(range(256)) * 5 + b"tail"  # 1284 bytes: 6 packets of 256
    w.apply(w.a, w.a.post_send(SendWr(1, WrOpcode.RDMA_WRITE, data, remote_addr=BASE + 100,
                                      rkey=k), 0.0))
    w.apply(w.a, w.a.post_send(SendWr(2, WrOpcode.RDMA_READ, length=len(data),
                                      remote_addr=BASE + 100, rkey=k), 0.0))
    w.run()
    wcs = w.completions(w.a)
    assert [(c.wr_id, c.status, c.opcode) for c in wcs] == [
        (1, WcStatus.SUCCESS, WcOpcode.RDMA_WRITE), (2, WcStatus.SUCCESS, WcOpcode.RDMA_READ)]
    assert wcs[1].data == data and w.at(BASE + 100, len(data)) == data
    ops = [p.op for side, p in w.sent if side == 10]
    assert ops == ["RDMA_WRITE_FIRST"] + ["RDMA_WRITE_MIDDLE"] * 4 + ["RDMA_WRITE_LAST",
                                                                       "RDMA_READ_REQUEST"]
    acks = [p for side, p in w.sent if side == 20 and p.op == "ACKNOWLEDGE"]
    assert len(acks) == 6  # one per request packet (L614); the READ is answered by data


def test_a_send_waits_for_a_receive_by_rnr_nak():
    w = Wire()
    w.apply(w.a, w.a.post_send(SendWr(7, WrOpcode.SEND_WITH_IMM, b"x" * 600, imm=0xABCD), 0.0))
    w.run(until=0.0105)  # RNR NAKed, retried, still nothing posted
    assert w.b.counters["naks_sent"] >= 1 and not w.completions(w.b, recv=True)
    w.apply(w.b, w.b.post_recv(RecvWr(70, 1024)))
    w.run()
    (recv,) = w.completions(w.b, recv=True)
    assert (recv.wr_id, recv.status, recv.byte_len, recv.imm, recv.data) == (
        70, WcStatus.SUCCESS, 600, 0xABCD, b"x" * 600)
    assert [c.status for c in w.completions(w.a)] == [WcStatus.SUCCESS]


def test_a_refused_write_completes_rem_access_err_and_flushes_the_rest():
    """Checks 1 and 11: NAK remote access error, 0 bytes change, the QP in ERROR, later work
    flushed; the responder's QP goes to ERROR too (D3.7)."""
    w = Wire()
    before = w.vmm.memory.digest()
    for i, rkey in enumerate((0x4242, 0x4243)):
        w.apply(w.a, w.a.post_send(SendWr(i, WrOpcode.RDMA_WRITE, b"z" * 700,
                                          remote_addr=BASE, rkey=rkey), 0.0))
    w.run()
    assert [(c.wr_id, c.status) for c in w.completions(w.a)] == [
        (0, WcStatus.REM_ACCESS_ERR), (1, WcStatus.WR_FLUSH_ERR)]
    assert w.a.state is QpState.ERROR and w.b.state is QpState.ERROR
    assert w.vmm.memory.digest() == before
    naks = [p for side, p in w.sent if side == 20 and p.op == "ACKNOWLEDGE"]
    assert naks[0].syndrome == 0x62
    w.apply(w.a, w.a.post_send(SendWr(9, WrOpcode.SEND, b"late"), 1.0))
    assert w.completions(w.a)[-1].status is WcStatus.WR_FLUSH_ERR


def test_a_multi_packet_write_that_would_overflow_writes_nothing():
    """Check 3 with D3.6: the whole RETH DMA length is checked on the first packet."""
    w = Wire()
    k = w.key(BASE + 3, 1000)
    before = w.vmm.memory.digest()
    w.apply(w.a, w.a.post_send(SendWr(1, WrOpcode.RDMA_WRITE, b"q" * 1001, remote_addr=BASE + 3,
                                      rkey=k), 0.0))
    w.run()
    assert [c.status for c in w.completions(w.a)] == [WcStatus.REM_ACCESS_ERR]
    assert w.vmm.memory.digest() == before


def test_atomics_compare_swap_fetch_add_and_a_misaligned_one():
    w = Wire()
    k = w.key()
    post = lambda wr: w.apply(w.a, w.a.post_send(wr, w.now))  # noqa: E731
    post(SendWr(1, WrOpcode.ATOMIC_FETCH_AND_ADD, remote_addr=BASE + 8, rkey=k, compare_add=5))
    post(SendWr(2, WrOpcode.ATOMIC_CMP_AND_SWP, remote_addr=BASE + 8, rkey=k, compare_add=5,
                swap=99))
    post(SendWr(3, WrOpcode.ATOMIC_CMP_AND_SWP, remote_addr=BASE + 8, rkey=k, compare_add=5,
                swap=7))
    w.run()
    assert [int.from_bytes(c.data, "big") for c in w.completions(w.a)] == [0, 5, 99]
    assert w.at(BASE + 8, 8) == (99).to_bytes(8, "big")
    w2 = Wire()
    k2 = w2.key()
    w2.apply(w2.a, w2.a.post_send(SendWr(1, WrOpcode.ATOMIC_FETCH_AND_ADD,
                                         remote_addr=BASE + 4, rkey=k2, compare_add=1), 0.0))
    w2.run()
    assert [c.status for c in w2.completions(w2.a)] == [WcStatus.REM_INV_REQ_ERR]


def test_a_page_fault_is_an_rnr_nak_and_the_retry_lands_once_the_page_is_mapped():
    """Check 12 (D3.8): the default error handler gets the fault, maps the page (MapLocalPage),
    the requester's retry succeeds and the data is in the frame the PTE names."""
    w = Wire(pages=0)
    k = w.key(BASE, 2 * PAGE)
    w.apply(w.a, w.a.post_send(SendWr(1, WrOpcode.RDMA_WRITE, b"fault", remote_addr=BASE + 10,
                                      rkey=k), 0.0))
    w.run(until=0.0005)
    faults = [a for _, _, a in w.log if isinstance(a, PageFault)]
    assert len(faults) == 1 and faults[0].rkey == k
    w.vmm.map_page(faults[0].va)  # the handler
    w.run()
    assert [c.status for c in w.completions(w.a)] == [WcStatus.SUCCESS]
    assert w.at(BASE + 10, 5) == b"fault" and w.a.counters["rnr_naks"] >= 1


def test_retries_exhausted_give_retry_exc_err():
    w = Wire(retry_cnt=3, drop=lambda side, p: side == 20)  # every answer lost
    k = w.key()
    w.apply(w.a, w.a.post_send(SendWr(1, WrOpcode.RDMA_WRITE, b"w", remote_addr=BASE, rkey=k),
                               0.0))
    w.apply(w.a, w.a.post_send(SendWr(2, WrOpcode.SEND, b"s"), 0.0))
    w.run()
    assert [(c.wr_id, c.status) for c in w.completions(w.a)] == [
        (1, WcStatus.RETRY_EXC_ERR), (2, WcStatus.WR_FLUSH_ERR)]
    assert w.a.counters["timeouts"] == 4  # the first send and three retries
    assert w.a.state is QpState.ERROR


def test_an_out_of_order_psn_gets_one_psn_sequence_nak_and_a_resend_from_there():
    """Check 17's third point."""
    first = []

    def lose_once(side, p):
        if side == 10 and p.op == "RDMA_WRITE_MIDDLE" and not first:
            first.append(p.psn)
            return True
        return False

    w = Wire(drop=lose_once)
    k = w.key()
    data = bytes(range(256)) * 6
    w.apply(w.a, w.a.post_send(SendWr(1, WrOpcode.RDMA_WRITE, data, remote_addr=BASE, rkey=k),
                               0.0))
    w.run()
    naks = [p for side, p in w.sent if side == 20 and p.syndrome == 0x60]
    assert len(naks) == 1 and naks[0].psn == first[0]
    resent = [p.psn for side, p in w.sent if side == 10]
    assert resent.count(first[0]) == 2
    assert [c.status for c in w.completions(w.a)] == [WcStatus.SUCCESS]
    assert w.at(BASE, len(data)) == data


def test_the_outstanding_limit_holds_on_the_wire():
    """Check 18: max_outstanding 4 -- in the packets as sent, never more than 4 messages
    begun and not yet acknowledged (each WRITE is two packets, FIRST and LAST)."""
    w = Wire(max_outstanding=4, loss=0.05, seed=3)
    k = w.key()
    for i in range(40):
        w.apply(w.a, w.a.post_send(SendWr(i, WrOpcode.RDMA_WRITE, bytes([i]) * 300,
                                          remote_addr=BASE + i * 300, rkey=k), 0.0))
    w.run()
    assert [c.status for c in w.completions(w.a)] == [WcStatus.SUCCESS] * 40
    begun, worst = set(), 0
    for side, p in w.sent:
        if side == 10 and p.op == "RDMA_WRITE_FIRST":
            begun.add(p.psn)
        elif side == 20 and p.op == "ACKNOWLEDGE":
            begun = {first for first in begun if psn_diff(p.psn, first + 1) < 0}
        worst = max(worst, len(begun))
    assert worst == 4  # the window is used, and never exceeded


def test_illegal_state_changes_are_named_errors():
    qp = RcQp(1)
    with pytest.raises(QpStateError):
        qp.modify(QpState.RTS, 0.0, sq_psn=0)
    with pytest.raises(QpStateError):
        qp.post_send(SendWr(1, WrOpcode.SEND, b"x"), 0.0)
    assert all(isinstance(a, StateChanged) for a in qp.modify(QpState.INIT, 0.0))
    assert (QpState.RTS, QpState.INIT) not in TRANSITIONS


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32), ops=st.lists(st.tuples(
    st.sampled_from(["write", "send", "read"]), st.integers(0, 1500)), min_size=1, max_size=25))
def test_a_lossy_reordering_wire_delivers_every_operation_once_in_order(seed, ops):
    """Check 17 in miniature: 10 % loss, reordering, duplicates -- every WRITE lands, every
    SEND arrives once and in order, every READ returns what the model says, all SUCCESS."""
    w = Wire(loss=0.1, reorder=0.05, dup=0.02, seed=seed, mtu=256)
    k = w.key(BASE, 8 * PAGE)
    model = bytearray(8 * PAGE)
    sends, reads = [], {}
    for i, (kind, n) in enumerate(ops):
        off = (i * 997) % (7 * PAGE)
        data = bytes((i + j) % 256 for j in range(n))
        if kind == "write":  # fenced: a READ asked again must not see it (IBA 10.8.3.3)
            wr = SendWr(i, WrOpcode.RDMA_WRITE, data, remote_addr=BASE + off, rkey=k,
                        fence=True)
            model[off:off + n] = data
        elif kind == "send":
            w.apply(w.b, w.b.post_recv(RecvWr(i, 2048)))
            wr = SendWr(i, WrOpcode.SEND, data)
            sends.append(data)
        else:
            wr = SendWr(i, WrOpcode.RDMA_READ, length=n, remote_addr=BASE + off, rkey=k)
            reads[i] = bytes(model[off:off + n])
        w.apply(w.a, w.a.post_send(wr, 0.0))
    w.run()
    wcs = w.completions(w.a)
    assert [(c.wr_id, c.status) for c in wcs] == [(i, WcStatus.SUCCESS) for i in range(len(ops))]
    assert {c.wr_id: c.data for c in wcs if c.wr_id in reads} == reads
    assert [c.data for c in w.completions(w.b, recv=True)] == sends
    assert w.at(BASE, 8 * PAGE) == bytes(model)
    assert psn_diff(w.b._epsn, 1000) >= len(ops)


def test_a_one_shot_key_takes_one_multi_packet_write_whole_and_no_more():
    """Check 8: an 8 KiB WRITE of 32 packets is one use (D3.4); the next is refused, 0 bytes
    change."""
    w = Wire(mtu=256)
    k = w.key(BASE, 8192, ALL | Access.ONE_SHOT)
    w.apply(w.a, w.a.post_send(SendWr(1, WrOpcode.RDMA_WRITE, b"\x01" * 8192,
                                      remote_addr=BASE, rkey=k), 0.0))
    w.run()
    before = w.vmm.memory.digest()
    w.apply(w.a, w.a.post_send(SendWr(2, WrOpcode.RDMA_WRITE, b"\x02", remote_addr=BASE,
                                      rkey=k), w.now))
    w.run()
    assert [c.status for c in w.completions(w.a)] == [WcStatus.SUCCESS, WcStatus.REM_ACCESS_ERR]
    assert w.vmm.memory.digest() == before and w.at(BASE, 8192) == b"\x01" * 8192
