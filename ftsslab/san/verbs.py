"""Verbs, named as ibverbs and pyverbs users know them, on a node's SANIC (B3.5, B3.19, B3.24).

``Context`` is one SANIC of an endnode, opened on the node's ``memory.Vmm``; ``PD`` a protection
domain, which is one process's address space (D3.9); ``CQ`` a completion queue that several
QPs may share (a completion names its QP and work request, L416); ``QP`` an RC queue pair
(``qp.RcQp``) that gathers what it sends from the process's memory and scatters what comes
back into it, by effective addresses translated with the segment table it took at OpenQP
(B3.19 602-606); ``open_ud_qp`` and ``open_rd_qp`` open the datagram ones, an RD QP's
messages going on the ``Context``'s EE contexts (``rd.Rd``: one per remote endnode, by
``open_eec`` and ``connect_eec``). The seed's own verbs are the PD's: ``allocate_rkey``,
``bind_rkey``, ``unbind_rkey``, ``deallocate_rkey``, ``open_qp``; ``map_local_page`` is the
default error handler's (612).

Sans-IO like the cores under it: a ``Context`` takes packets (``receive``) and the clock
(``on_timer``) and returns what goes on the wire, as ``(peer, Packet)`` -- the peer being the
remote endnode a QP is connected to. ``fabric.Fabric`` runs several on a virtual clock.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from .memory import NoSegment, PageFault, Prot, ProtectionFault, Vmm, pieces
from .packets import Packet
from .qp import (
    WC_OPCODE,
    Action,
    Completion,
    QpState,
    RcQp,
    RecvWr,
    SendWr,
    Transmit,
    Wc,
    WcOpcode,
    WcStatus,
    WrOpcode,
)
from .qp import PageFault as RemoteFault
from .rd import EeContext, Rd, RdDest, RdQp
from .rkeys import Access, Consumer, InvalidParameter, Reach, RKeys
from .ud import UdQp, UdSendWr


@dataclass(frozen=True)
class SGE:
    """A scatter/gather element: ``length`` bytes at effective address ``addr``."""

    addr: int
    length: int


@dataclass(frozen=True)
class SendWR:
    wr_id: int
    opcode: WrOpcode
    sg_list: tuple[SGE, ...] = ()
    remote_addr: int = 0
    rkey: int = 0
    imm: int | None = None
    compare_add: int = 0
    swap: int = 0
    fence: bool = False
    delay: float = 0.0  # DELAY
    bind: tuple[int, int, int, Access] | None = None  # BIND_RKEY: rkey, address, length, access


@dataclass(frozen=True)
class RecvWR:
    wr_id: int
    sg_list: tuple[SGE, ...] = ()


@dataclass(frozen=True)
class UdSendWR:
    """A datagram: its own destination (``peer``, the remote QP and its Q_Key)."""

    wr_id: int
    sg_list: tuple[SGE, ...]
    peer: str
    remote_qpn: int
    remote_qkey: int
    imm: int | None = None


class CQ:
    """A completion queue; ``poll`` takes the oldest completions. With a ``clock``, each
    completion's time is kept in ``stamps`` as it is queued (ibverbs' completion timestamp):
    when the SANIC completed it, not when someone polled."""

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self._wcs = _Queue(self, clock)
        self.stamps: list[tuple[float, Wc]] = []

    def poll(self, num: int = 1) -> list[Wc]:
        return [self._wcs.popleft() for _ in range(min(num, len(self._wcs)))]


class _Queue(deque):
    def __init__(self, cq: CQ, clock: Callable[[], float] | None) -> None:
        super().__init__()
        self.cq, self.clock = cq, clock

    def append(self, wc: Wc) -> None:
        if self.clock is not None:
            self.cq.stamps.append((self.clock(), wc))
        super().append(wc)


class LocalAccessError(Exception):
    """A local buffer that does not translate (the QP's process may not reach it)."""


class Context:
    """One SANIC of an endnode (B3.2): its keys and QPs. ``handler`` is the default error
    handler, called with each page fault an incoming request met (B3.28, D3.8); it may map
    the page (``map_local_page``) -- the requester's retry then lands -- or leave it."""

    def __init__(self, vmm: Vmm, name: str = "sanic0", *, mtu: int = 1024,
                 rdma: bool = True, handler: Callable[[RemoteFault], None] | None = None
                 ) -> None:
        self.vmm, self.name, self.mtu, self.rdma = vmm, name, mtu, rdma
        self.keys = RKeys(vmm)
        self.handler = handler
        self.qps: dict[int, QP] = {}
        self.dropped: Counter[str] = Counter()  # packets no QP takes, by why
        self.rd = Rd(mtu)
        self._next_qpn = 0x11

    def pd(self, pid: int, *, kernel: bool = False) -> PD:
        return PD(self, Consumer(pid, kernel))

    def map_local_page(self, va: int) -> int:
        """MapLocalPage (612): ``va``'s page into a frame; its PFN."""
        return self.vmm.map_page(va)

    def open_eec(self, peer: str) -> EeContext:
        """The EE context to the endnode ``peer``, in RESET (one per peer, B3.9)."""
        return self.rd.open_eec(peer)

    def connect_eec(self, peer: str, remote_eecn: int, now: float, *, psn: int = 0,
                    remote_psn: int = 0, timeout: float = 0.05, retry_cnt: int = 7,
                    rnr_retry: int = 7) -> None:
        """The EE context to ``peer`` to RTS with the peer's EE context ``remote_eecn``."""
        self._apply_rd(self.rd.eec(peer).connect(
            remote_eecn, now, psn=psn, remote_psn=remote_psn, timeout=timeout,
            retry_cnt=retry_cnt, rnr_retry=rnr_retry))

    def _apply_rd(self, actions: list[Action]) -> list[tuple[str, Packet]]:
        """What the EE contexts did: a completion goes to the QP it names."""
        out = []
        for a in actions:
            if isinstance(a, Transmit):
                assert a.peer is not None  # (an EE context addresses all it sends)
                out.append((a.peer, a.packet))
            elif isinstance(a, Completion):
                self.qps[a.wc.qp_num]._complete(a)
            elif isinstance(a, RemoteFault) and self.handler is not None:
                self.handler(a)
        return out

    # ---- the wire ------------------------------------------------------------------------
    def receive(self, packet: Packet, now: float, src: str = "") -> list[tuple[str, Packet]]:
        """A packet from the endnode ``src``."""
        if packet.eec is not None:
            return self._apply_rd(self.rd.receive(packet, now, src))
        qp = self.qps.get(packet.dqpn)
        if qp is None or isinstance(qp.core, RdQp):
            self.dropped["no_qp"] += 1  # no such QP, or RD without an RDETH, as a HCA drops it
            return []
        if isinstance(qp.core, UdQp):
            return qp._apply(qp.core.receive(packet, now, src))
        if packet.qkey is not None:
            self.dropped["datagram_for_rc"] += 1
            return []
        if src and src != qp.peer:
            self.dropped["not_the_peer"] += 1  # an RC QP takes its connected peer's only (IBA)
            return []
        return qp._apply(qp.core.receive(packet, now))

    def next_deadline(self) -> float | None:
        return min((t for t in (*(qp.core.next_deadline() for qp in self.qps.values()),
                                self.rd.next_deadline()) if t is not None), default=None)

    def on_timer(self, now: float) -> list[tuple[str, Packet]]:
        out = self._apply_rd(self.rd.on_timer(now))
        for qp in list(self.qps.values()):
            d = qp.core.next_deadline()
            if d is not None and d <= now:
                out += qp._apply(qp.core.on_timer(now))
        return out


@dataclass
class PD:
    """A protection domain: one process's address space (D3.9), and the seed's verbs."""

    context: Context
    consumer: Consumer

    @property
    def pid(self) -> int:
        return self.consumer.pid

    def allocate_rkey(self) -> int:
        return self.context.keys.allocate(self.consumer)

    def bind_rkey(self, rkey: int, addr: int, length: int, access: Access) -> None:
        """BindRKey; null address and length 0 unbind. ``InvalidParameter`` if not allowed."""
        self.context.keys.bind(self.consumer, rkey, addr, length, access)

    def unbind_rkey(self, rkey: int) -> None:
        self.context.keys.unbind(self.consumer, rkey)

    def deallocate_rkey(self, rkey: int) -> None:
        self.context.keys.deallocate(self.consumer, rkey)

    def open_qp(self, send_cq: CQ, recv_cq: CQ | None = None, *, max_outstanding: int = 16,
                max_send_wr: int = 1024, max_recv_wr: int = 1024) -> QP:
        """OpenQP (602/604): the QP's state is the driver's -- the caller gets a handle with
        the verbs, never the state block 531 -- and it takes the process's segment table."""
        ctx = self.context
        ctx.keys.open_process(self.pid)
        qpn = ctx._next_qpn
        ctx._next_qpn += 1
        core = RcQp(qpn, memory=Reach(ctx.keys, self.pid) if ctx.rdma else None, mtu=ctx.mtu,
                    max_outstanding=max_outstanding, max_send_wr=max_send_wr,
                    max_recv_wr=max_recv_wr)
        qp = QP(self, core, send_cq, recv_cq or send_cq)
        core.local = qp._bind_wqe
        ctx.qps[qpn] = qp
        return qp

    def open_ud_qp(self, send_cq: CQ, qkey: int, recv_cq: CQ | None = None, *,
                   max_recv_wr: int = 1024, qp_num: int | None = None) -> QP:
        """A UD QP (``ud.UdQp``), in RTS at once: it has no peer to connect to. ``qp_num``
        opens a well-known QP (IBA's QP1, the GSI: ``discovery``) instead of the next one."""
        ctx = self.context
        if qp_num in ctx.qps:
            raise ValueError(f"{ctx.name}: QP {qp_num} is open")
        ctx.keys.open_process(self.pid)
        qpn = ctx._next_qpn if qp_num is None else qp_num
        if qp_num is None:
            ctx._next_qpn += 1
        qp = QP(self, UdQp(qpn, qkey=qkey, mtu=ctx.mtu, max_recv_wr=max_recv_wr), send_cq,
                recv_cq or send_cq)
        for state in (QpState.INIT, QpState.RTR, QpState.RTS):
            qp._apply(qp.core.modify(state, 0.0))
        ctx.qps[qpn] = qp
        return qp

    def open_rd_qp(self, send_cq: CQ, qkey: int, recv_cq: CQ | None = None, *,
                   rdma: bool = True, max_recv_wr: int = 1024) -> QP:
        """An RD QP (``rd.RdQp``), in RTS at once: its peers are its messages'. ``rdma``: it
        takes RDMA WRITE, READ and atomics under its process's keys from any node (B3.27);
        never on an endnode that takes no RDMA."""
        ctx = self.context
        ctx.keys.open_process(self.pid)
        qpn = ctx._next_qpn
        ctx._next_qpn += 1
        core = RdQp(qpn, ctx.rd, qkey=qkey, memory=Reach(ctx.keys, self.pid) if ctx.rdma
                    else None, rdma=rdma, max_recv_wr=max_recv_wr)
        qp = QP(self, core, send_cq, recv_cq or send_cq)
        for state in (QpState.INIT, QpState.RTR, QpState.RTS):
            qp._apply(core.modify(state, 0.0))
        ctx.qps[qpn], ctx.rd.qps[qpn] = qp, core
        return qp

    # ---- the process's own loads and stores (no SANIC) -------------------------------------
    def read(self, addr: int, length: int) -> bytes:
        """``length`` bytes at effective address ``addr``, as the process loads them (how it
        reads what a receive scattered); LocalAccessError if they do not translate."""
        memory = self.context.vmm.memory
        return b"".join(memory.read(pa, n) for pa, n in self._pieces((SGE(addr, length),),
                                                                      write=False))

    def write(self, addr: int, data: bytes) -> None:
        """Store ``data`` at effective address ``addr`` (all of it or, LocalAccessError, none)."""
        memory, at = self.context.vmm.memory, 0
        for pa, n in self._pieces((SGE(addr, len(data)),), write=True):
            memory.write(pa, data[at:at + n])
            at += n

    def _pieces(self, sg_list: tuple[SGE, ...], write: bool) -> list[tuple[int, int]]:
        """(PA, length) of each page piece of ``sg_list``, translated with the process's tables
        (B3.19 606, 612); LocalAccessError if one does not."""
        table = self.context.keys.tables[self.pid]
        vmm = self.context.vmm
        out = []
        for sge in sg_list:
            for at, n in pieces(sge.addr, sge.length):
                try:
                    pa = vmm.page_table.pa(table.va(at), Prot.WRITE if write else Prot.READ)
                except (NoSegment, PageFault, ProtectionFault) as exc:
                    raise LocalAccessError(str(exc)) from exc
                out.append((pa, n))
        return out


@dataclass
class QP:
    """A queue pair's handle: modify, post, and where its completions go."""

    pd: PD
    core: RcQp | UdQp | RdQp
    send_cq: CQ
    recv_cq: CQ
    peer: str = ""  # the remote endnode it is connected to
    _sends: dict[int, SendWR] = field(default_factory=dict)
    _recvs: dict[int, RecvWR] = field(default_factory=dict)

    @property
    def qp_num(self) -> int:
        return self.core.qp_num

    @property
    def state(self) -> QpState:
        return self.core.state

    def connect(self, peer: str, dest_qp: int, now: float, *, psn: int = 0,
                remote_psn: int = 0, timeout: float = 0.05, retry_cnt: int = 7,
                rnr_retry: int = 7) -> None:
        """RESET -> INIT -> RTR -> RTS with the remote QP (an RC QP has one peer, L453)."""
        self.peer = peer
        self._apply(self.core.modify(QpState.INIT, now))
        self._apply(self.core.modify(QpState.RTR, now, dest_qp=dest_qp, rq_psn=remote_psn))
        self._apply(self.core.modify(QpState.RTS, now, sq_psn=psn, timeout=timeout,
                                     retry_cnt=retry_cnt, rnr_retry=rnr_retry))

    def reset(self, now: float) -> None:
        """Any state -> RESET, its work requests forgotten: where a reconnect starts."""
        self._apply(self.core.modify(QpState.RESET, now))
        self._sends.clear()
        self._recvs.clear()

    # ---- posting ------------------------------------------------------------------------
    def post_send(self, wr: SendWR, now: float) -> list[tuple[str, Packet]]:
        """Gather the local buffers (EA -> VA -> PA with the QP's tables) and post."""
        assert isinstance(self.core, RcQp)
        got = self._work(wr)
        return [] if got is None else self._apply(self.core.post_send(got, now))

    def post_rd(self, wr: SendWR, dest: RdDest, now: float) -> list[tuple[str, Packet]]:
        """An RD QP's send, WRITE, READ or atomic to ``dest`` (its peer's QP and Q_Key)."""
        assert isinstance(self.core, RdQp)
        got = self._work(wr)
        return [] if got is None else self._apply(self.core.post_send(got, dest, now))

    def _work(self, wr: SendWR) -> SendWr | None:
        """The core's work request, its local buffers gathered (None: they cannot be)."""
        try:
            if wr.opcode in (WrOpcode.SEND, WrOpcode.SEND_WITH_IMM, WrOpcode.RDMA_WRITE,
                             WrOpcode.RDMA_WRITE_WITH_IMM):
                data = self._gather(wr.sg_list)
            elif wr.opcode in (WrOpcode.BIND_RKEY, WrOpcode.DELAY):
                data = b""
            else:  # where the answer goes must be writable now (it is checked again then)
                data = b""
                self.pd._pieces(wr.sg_list, write=True)
        except LocalAccessError:
            self.send_cq._wcs.append(Wc(wr.wr_id, WcStatus.LOC_PROT_ERR, WC_OPCODE[wr.opcode],
                                        self.qp_num))
            return None
        self._sends[wr.wr_id] = wr
        length = sum(s.length for s in wr.sg_list)
        bind = None if wr.bind is None else (*wr.bind[:3], wr.bind[3].value)
        return SendWr(wr.wr_id, wr.opcode, data, length, wr.remote_addr, wr.rkey, wr.imm,
                      wr.compare_add, wr.swap, wr.fence, wr.delay, bind)

    def _bind_wqe(self, wr: SendWr) -> bool:
        """A BIND_RKEY work request, when its turn comes: BindRKey as the QP's process."""
        assert wr.bind is not None
        rkey, addr, length, bits = wr.bind
        try:
            self.pd.context.keys.bind(self.pd.consumer, rkey, addr, length, Access(bits))
        except InvalidParameter:
            return False
        return True

    def post_datagram(self, wr: UdSendWR, now: float) -> list[tuple[str, Packet]]:
        """A UD QP's send."""
        assert isinstance(self.core, UdQp)
        try:
            data = self._gather(wr.sg_list)
        except LocalAccessError:
            self.send_cq._wcs.append(Wc(wr.wr_id, WcStatus.LOC_PROT_ERR, WcOpcode.SEND,
                                        self.qp_num))
            return []
        return self._apply(self.core.post_send(UdSendWr(wr.wr_id, data, wr.peer, wr.remote_qpn,
                                                        wr.remote_qkey, wr.imm), now))

    def post_recv(self, wr: RecvWR) -> list[tuple[str, Packet]]:
        self._recvs[wr.wr_id] = wr
        return self._apply(self.core.post_recv(RecvWr(wr.wr_id,
                                                      sum(s.length for s in wr.sg_list))))

    # ---- local memory (B3.19 606, 612) ----------------------------------------------------
    def _gather(self, sg_list: tuple[SGE, ...]) -> bytes:
        memory = self.pd.context.vmm.memory
        return b"".join(memory.read(pa, n) for pa, n in self.pd._pieces(sg_list, write=False))

    def _scatter(self, sg_list: tuple[SGE, ...], data: bytes) -> None:
        memory, at = self.pd.context.vmm.memory, 0
        for pa, n in self.pd._pieces(sg_list, write=True):
            if at >= len(data):
                break
            memory.write(pa, data[at:at + n])
            at += n

    # ---- what the core did ----------------------------------------------------------------
    def _apply(self, actions: list[Action]) -> list[tuple[str, Packet]]:
        ctx, out = self.pd.context, []
        for a in actions:
            if isinstance(a, Transmit):
                out.append((a.peer or self.peer, a.packet))
            elif isinstance(a, Completion):
                self._complete(a)
            elif isinstance(a, RemoteFault):
                if ctx.handler is not None:
                    ctx.handler(a)
        return out

    def _complete(self, c: Completion) -> None:
        wc = c.wc
        wr = (self._recvs if c.recv else self._sends).pop(wc.wr_id, None)
        status = wc.status
        if wr is not None and status is WcStatus.SUCCESS and wc.data and wc.opcode in (
                WcOpcode.RECV, WcOpcode.RDMA_READ, WcOpcode.COMP_SWAP, WcOpcode.FETCH_ADD):
            try:
                self._scatter(wr.sg_list, wc.data)
            except LocalAccessError:  # (unmapped since it was posted)
                status = WcStatus.LOC_PROT_ERR
        (self.recv_cq if c.recv else self.send_cq)._wcs.append(
            wc._replace(status=status, data=b""))

