"""A reliable-connection queue pair (B3.5-B3.8, B3.14; IBA chapter 9 where the seed is
silent), sans-IO: work requests and packets in, packets, completions and events out; the
caller passes the clock and calls ``on_timer`` once ``next_deadline`` has passed.

States (``TRANSITIONS``, IBA 10.3.1): RESET -> INIT -> RTR -> RTS by ``modify``; any -> ERROR
by ``modify`` or a fatal completion; any -> RESET. In ERROR every outstanding and newly posted
work request completes with WR_FLUSH_ERR (D3.7).

**Requester.** A message is cut into packets of the path MTU, one PSN each (an RDMA READ
request takes one PSN per response packet it asks for); every packet asks for an ACK ("an
acknowledgment frame is sent back to the requestor after each request frame", L614). At most
``max_outstanding`` messages are unacknowledged at once (B3.12, fixed at creation). What is not
acknowledged in ``timeout`` seconds is sent again from the oldest unacknowledged PSN
(go-back-N), ``retry_cnt`` times (7: for ever), then RETRY_EXC_ERR; a NAK PSN sequence error
resends from its PSN and counts the same; an RNR NAK waits its timer and resends,
``rnr_retry`` times, then RNR_RETRY_EXC_ERR. Any other NAK completes its request with the
matching status -- REMOTE_ACCESS_ERROR: REM_ACCESS_ERR, INVALID_REQUEST: REM_INV_REQ_ERR,
REMOTE_OPERATIONAL_ERROR: REM_OP_ERR -- and the QP goes to ERROR. A READ whose answer is cut
short is asked again for what is missing, and the responder reads the memory again: a WRITE
posted after it may have landed meanwhile, unless it was posted with ``fence`` (IBA 10.8.3.3).

**Responder.** Packets are taken in PSN order: a later one gets one NAK PSN sequence error
(until the expected one comes), an earlier one is a duplicate -- re-acknowledged, a READ
answered again, an atomic's saved answer sent again. Every request is checked before a byte
moves by the ``Memory`` it targets (the SANIC's keys: ``rkeys.RKeys.check``), for the whole
DMA length on the first packet (D3.6); a refusal is NAKed with its code and puts this QP in
ERROR too (D3.7); a page that is not mapped is an RNR NAK and a ``PageFault`` event for the
default error handler (D3.8), the PSN not taken, so the retry lands once the page is mapped.
A SEND without a posted receive is an RNR NAK (IBA 9.7.5.2.8). Atomics work on an aligned
64-bit word, big-endian (the byte order is not in the seed; network order is ftsslab's).

**Reused by RD.** An RD EE context (``rd.EeContext``) is this machinery between two endnodes;
it overrides the methods that tie it to one peer QP: ``_take`` (the checks before a request is
taken), ``_target`` (whose receive queue and memory a request reaches), ``_reply`` and
``_request`` (how packets are addressed), ``_refuse``, ``_duplicate``, ``_nak_failed`` (what a
refusal or a NAK fails), ``_wc`` and ``_pump``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import NamedTuple, Protocol

from ftsslab.fast.roce import NAK_CODES

from .packets import (
    ACK_SYNDROME,
    MESSAGE_ENDS,
    SENDS,
    WRITES,
    AtomicEth,
    Packet,
    Reth,
    ack_kind,
    nak,
    psn_add,
    psn_diff,
    rnr_nak,
)
from .rkeys import (
    INVALID_REQUEST,
    REMOTE_ACCESS_ERROR,
    REMOTE_OPERATIONAL_ERROR,
    Fault,
    Grant,
    Op,
    Refusal,
)

INVALID_RD_REQUEST = "INVALID_RD_REQUEST"  # (RD only: ``rd.py``)
PSN_SEQUENCE_ERROR = "PSN_SEQUENCE_ERROR"
READ_RESPONSES = frozenset(f"RDMA_READ_RESPONSE_{p}" for p in ("FIRST", "MIDDLE", "LAST", "ONLY"))
RNR_TIMER = 1  # the RNR NAK's timer field: 0.01 ms (IBA table 45) ...
RNR_DELAY = 0.001  # ... but a driver on a loaded box waits at least this long
INFINITE = 7  # a retry count of 7 retries for ever (IBA 9.7.5.2.8)


class QpState(Enum):
    RESET = "RESET"
    INIT = "INIT"
    RTR = "RTR"
    RTS = "RTS"
    ERROR = "ERROR"


_Q = QpState
TRANSITIONS: dict[tuple[QpState, QpState], str] = {
    (_Q.RESET, _Q.INIT): "modify: INIT",
    (_Q.INIT, _Q.RTR): "modify: RTR (the remote QP and the expected PSN)",
    (_Q.RTR, _Q.RTS): "modify: RTS (the send PSN, timeout, retry counts)",
    **{(s, _Q.ERROR): "to ERROR: outstanding work flushed" for s in QpState if s is not _Q.ERROR},
    **{(s, _Q.RESET): "modify: RESET" for s in QpState if s is not _Q.RESET},
}


class QpStateError(Exception):
    """A modify or a verb the QP's state does not allow."""


class WrOpcode(Enum):
    SEND = "SEND"
    SEND_WITH_IMM = "SEND_WITH_IMM"
    RDMA_WRITE = "RDMA_WRITE"
    RDMA_WRITE_WITH_IMM = "RDMA_WRITE_WITH_IMM"
    RDMA_READ = "RDMA_READ"
    ATOMIC_CMP_AND_SWP = "ATOMIC_CMP_AND_SWP"
    ATOMIC_FETCH_AND_ADD = "ATOMIC_FETCH_AND_ADD"
    BIND_RKEY = "BIND_RKEY"  # B3.6: "Bind/unbind RKey" as a WQE (length 0: unbind)
    DELAY = "DELAY"  # B3.6: "delay processing of the QP's WQEs for a specific time interval"


LOCAL_OPS = (WrOpcode.BIND_RKEY, WrOpcode.DELAY)  # done by the SANIC, nothing on the wire


class WcStatus(Enum):
    """ibv_wc_status names."""

    SUCCESS = "SUCCESS"
    LOC_LEN_ERR = "LOC_LEN_ERR"
    LOC_PROT_ERR = "LOC_PROT_ERR"
    REM_INV_REQ_ERR = "REM_INV_REQ_ERR"
    REM_ACCESS_ERR = "REM_ACCESS_ERR"
    REM_OP_ERR = "REM_OP_ERR"
    REM_INV_RD_REQ_ERR = "REM_INV_RD_REQ_ERR"  # RD: no such QP, or not its Q_Key
    RETRY_EXC_ERR = "RETRY_EXC_ERR"
    RNR_RETRY_EXC_ERR = "RNR_RETRY_EXC_ERR"
    WR_FLUSH_ERR = "WR_FLUSH_ERR"
    MW_BIND_ERR = "MW_BIND_ERR"  # a bind WQE the caller may not make (L822, D3.7)


class WcOpcode(Enum):
    SEND = "SEND"
    RDMA_WRITE = "RDMA_WRITE"
    RDMA_READ = "RDMA_READ"
    COMP_SWAP = "COMP_SWAP"
    FETCH_ADD = "FETCH_ADD"
    RECV = "RECV"
    RECV_RDMA_WITH_IMM = "RECV_RDMA_WITH_IMM"
    BIND_MW = "BIND_MW"
    DELAY = "DELAY"


_NAK_STATUS = {REMOTE_ACCESS_ERROR: WcStatus.REM_ACCESS_ERR,
               INVALID_REQUEST: WcStatus.REM_INV_REQ_ERR,
               REMOTE_OPERATIONAL_ERROR: WcStatus.REM_OP_ERR,
               INVALID_RD_REQUEST: WcStatus.REM_INV_RD_REQ_ERR}
WC_OPCODE = {WrOpcode.SEND: WcOpcode.SEND, WrOpcode.SEND_WITH_IMM: WcOpcode.SEND,
          WrOpcode.RDMA_WRITE: WcOpcode.RDMA_WRITE,
          WrOpcode.RDMA_WRITE_WITH_IMM: WcOpcode.RDMA_WRITE,
          WrOpcode.RDMA_READ: WcOpcode.RDMA_READ, WrOpcode.ATOMIC_CMP_AND_SWP: WcOpcode.COMP_SWAP,
          WrOpcode.ATOMIC_FETCH_AND_ADD: WcOpcode.FETCH_ADD, WrOpcode.BIND_RKEY: WcOpcode.BIND_MW,
          WrOpcode.DELAY: WcOpcode.DELAY}


class SendWr(NamedTuple):
    """A send-queue work request. ``data``: what a SEND or WRITE carries (the verbs layer
    gathers it); ``length``: how much a READ asks for; ``compare_add``/``swap``: an atomic's."""

    wr_id: int
    opcode: WrOpcode
    data: bytes = b""
    length: int = 0
    remote_addr: int = 0
    rkey: int = 0
    imm: int | None = None
    compare_add: int = 0
    swap: int = 0
    fence: bool = False  # IBV_SEND_FENCE: start once every earlier READ and atomic completed
    delay: float = 0.0  # DELAY: seconds before the next work request starts
    bind: tuple[int, int, int, int] | None = None  # BIND_RKEY: rkey, address, length, access


@dataclass(frozen=True)
class RecvWr:
    wr_id: int
    length: int  # the receive buffer's size


class Wc(NamedTuple):
    """A work completion: it names its QP and work request (B3.5, L416). ``data``: what a
    READ or a receive brought (the verbs layer scatters it), an atomic's original value."""

    wr_id: int
    status: WcStatus
    opcode: WcOpcode
    qp_num: int
    byte_len: int = 0
    imm: int | None = None
    data: bytes = b""
    src_qp: int = 0  # a datagram's: who sent it
    src: str = ""


class Transmit(NamedTuple):
    packet: Packet
    peer: str | None = None  # a datagram's destination (an RC QP has one peer)


class Completion(NamedTuple):
    wc: Wc
    recv: bool = False  # on the receive queue's CQ


@dataclass(frozen=True)
class PageFault:
    """The asynchronous error to the SANIC's default error handler (B3.28, D3.8)."""

    qp_num: int
    rkey: int
    va: int
    pid: int


@dataclass(frozen=True)
class StateChanged:
    qp_num: int
    old: QpState
    new: QpState
    why: str


Action = Transmit | Completion | PageFault | StateChanged


class Memory(Protocol):
    """What a responder reaches of its node's memory through the remote keys."""

    def check(self, rkey: int, va: int, length: int, op: Op) -> Grant | Refusal | Fault: ...
    def write(self, grant: Grant, offset: int, data: bytes) -> None: ...
    def read(self, grant: Grant, offset: int, n: int) -> bytes: ...
    def used(self, grant: Grant) -> None: ...


class Endpoint(Protocol):
    """What a request reaches at the responder: a QP's receive queue and memory. An RC QP is
    its own; an RD EE context takes each request to the RD QP it names (``rd.EeContext``)."""

    qp_num: int
    memory: Memory | None
    _rq: deque[RecvWr]


@dataclass
class _Req:
    wr: SendWr
    first: int  # its first PSN
    npkts: int  # PSNs it takes
    sent: int = 0  # packets (READ: responses asked for) sent since the last go-back
    got: int = 0  # READ: response packets taken
    data: bytearray = field(default_factory=bytearray)
    done: bool = False  # completed (a go-back may still list it as unsent)
    local: bool = False  # a BIND_RKEY or DELAY: done when taken, completed in its turn
    ok: bool = True

    @property
    def reads(self) -> bool:
        return self.wr.opcode in (WrOpcode.RDMA_READ, WrOpcode.ATOMIC_CMP_AND_SWP,
                                  WrOpcode.ATOMIC_FETCH_AND_ADD)


@dataclass
class _Incoming:
    """The responder's message being taken (a SEND's receive, a WRITE's grant)."""

    kind: str  # "SEND" / "RDMA_WRITE"
    offset: int = 0
    recv: RecvWr | None = None
    grant: Grant | None = None
    buf: bytearray = field(default_factory=bytearray)
    dmalen: int = 0


def _chunks(n: int, mtu: int) -> int:
    return max(1, -(-n // mtu))


class RcQp:
    """One RC queue pair of a SANIC. ``memory`` is what RDMA requests to it reach
    (None: an endnode that allows no incoming RDMA, B3.12 L665)."""

    def __init__(self, qp_num: int, *, memory: Memory | None = None, mtu: int = 1024,
                 max_outstanding: int = 16, max_send_wr: int = 1024, max_recv_wr: int = 1024,
                 local: Callable[[SendWr], bool] | None = None) -> None:
        """``local`` carries out a BIND_RKEY work request on this node's keys (True: bound),
        when the send queue reaches it: before anything posted after it is sent (check 16)."""
        self.qp_num, self.memory, self.mtu, self.local = qp_num, memory, mtu, local
        self.max_outstanding, self.max_send_wr, self.max_recv_wr = \
            max_outstanding, max_send_wr, max_recv_wr
        self.state = QpState.RESET
        self.dest_qp = 0
        self.timeout, self.retry_cnt, self.rnr_retry = 0.5, 7, 7
        self.counters = {"sent": 0, "resent": 0, "acks_sent": 0, "naks_sent": 0,
                         "duplicates": 0, "out_of_order": 0, "timeouts": 0, "rnr_naks": 0}
        # requester
        self._sq: deque[SendWr] = deque()
        self._inflight: deque[_Req] = deque()
        self._unsent: deque[_Req] = deque()  # of those, the ones with packets still to send
        self._next_psn = 0
        self._retries = self._rnr_retries = 0
        self._deadline: float | None = None
        self._rnr_until: float | None = None
        self._delay_until: float | None = None  # a DELAY work request holds the queue
        # responder
        self._rq: deque[RecvWr] = deque()
        self._epsn = 0
        self._msn = 0
        self._nak_sent = False
        self._incoming: _Incoming | None = None
        self._atomics: dict[int, int] = {}  # PSN -> the original value it answered
        # the READs answered lately: first PSN, PSNs, RETH, grant, MSN (for duplicates)
        self._reads: deque[tuple[int, int, Reth, Grant, int]] = deque(maxlen=16)

    # ---- state (IBA 10.3) -----------------------------------------------------------------
    def modify(self, new: QpState, now: float, *, dest_qp: int | None = None,
               rq_psn: int | None = None, sq_psn: int | None = None,
               timeout: float | None = None, retry_cnt: int | None = None,
               rnr_retry: int | None = None) -> list[Action]:
        why = TRANSITIONS.get((self.state, new))
        if why is None:
            raise QpStateError(f"QP {self.qp_num}: {self.state.name} -> {new.name}")
        if new is QpState.RTR:
            if dest_qp is None or rq_psn is None:
                raise QpStateError("RTR needs dest_qp and rq_psn")
            self.dest_qp, self._epsn = dest_qp, rq_psn & 0xFFFFFF
        if new is QpState.RTS:
            if sq_psn is None:
                raise QpStateError("RTS needs sq_psn")
            self._next_psn = sq_psn & 0xFFFFFF
            self.timeout = timeout if timeout is not None else self.timeout
            self.retry_cnt = retry_cnt if retry_cnt is not None else self.retry_cnt
            self.rnr_retry = rnr_retry if rnr_retry is not None else self.rnr_retry
            self._retries, self._rnr_retries = self.retry_cnt, self.rnr_retry
        acts = self._to(new, why)
        if new is QpState.ERROR:
            acts += self._flush()
        elif new is QpState.RESET:
            self._sq.clear(), self._inflight.clear(), self._unsent.clear(), self._rq.clear()
            self._incoming, self._deadline, self._rnr_until = None, None, None
        elif new is QpState.RTS:
            acts += self._pump(now)
        return acts

    def _to(self, new: QpState, why: str) -> list[Action]:
        old, self.state = self.state, new
        return [StateChanged(self.qp_num, old, new, why)]

    def _fail(self, why: str) -> list[Action]:
        return self._to(QpState.ERROR, why) + self._flush() if self.state is not _Q.ERROR \
            else []

    def _flush(self) -> list[Action]:
        acts: list[Action] = []
        for r in self._inflight:
            acts.append(self._wc(r.wr, WcStatus.WR_FLUSH_ERR))
        for wr in self._sq:
            acts.append(self._wc(wr, WcStatus.WR_FLUSH_ERR))
        for rwr in self._rq:
            acts.append(Completion(Wc(rwr.wr_id, WcStatus.WR_FLUSH_ERR, WcOpcode.RECV,
                                      self.qp_num), recv=True))
        self._inflight.clear(), self._unsent.clear(), self._sq.clear(), self._rq.clear()
        self._deadline = self._rnr_until = self._delay_until = None
        return acts

    def _wc(self, wr: SendWr, status: WcStatus, data: bytes = b"") -> Completion:
        n = len(data) if wr.opcode is WrOpcode.RDMA_READ else len(wr.data)
        return Completion(Wc(wr.wr_id, status, WC_OPCODE[wr.opcode], self.qp_num, n, wr.imm,
                             data))

    # ---- verbs ---------------------------------------------------------------------------
    def post_send(self, wr: SendWr, now: float) -> list[Action]:
        if self.state is QpState.ERROR:
            return [self._wc(wr, WcStatus.WR_FLUSH_ERR)]
        if self.state is not QpState.RTS:
            raise QpStateError(f"QP {self.qp_num}: post_send in {self.state.name}")
        if len(self._sq) + len(self._inflight) >= self.max_send_wr:
            raise QpStateError(f"QP {self.qp_num}: send queue full ({self.max_send_wr})")
        self._sq.append(wr)
        return self._pump(now)

    def post_recv(self, wr: RecvWr) -> list[Action]:
        if self.state is QpState.ERROR:
            return [Completion(Wc(wr.wr_id, WcStatus.WR_FLUSH_ERR, WcOpcode.RECV, self.qp_num),
                               recv=True)]
        if self.state is QpState.RESET:
            raise QpStateError(f"QP {self.qp_num}: post_recv in RESET")
        if len(self._rq) >= self.max_recv_wr:
            raise QpStateError(f"QP {self.qp_num}: receive queue full ({self.max_recv_wr})")
        self._rq.append(wr)
        return []

    # ---- the clock -----------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        times = [t for t in (self._deadline, self._rnr_until, self._delay_until)
                 if t is not None]
        return min(times, default=None)

    def on_timer(self, now: float) -> list[Action]:
        if self.state is not QpState.RTS:
            return []
        acts: list[Action] = []
        if self._delay_until is not None and self._delay_until <= now:
            self._delay_until = None  # (also with nothing queued after it)
            acts += self._pump(now)
        if self._rnr_until is not None and self._rnr_until <= now:
            self._rnr_until = None
            self._arm(now)
            return acts + self._pump(now)
        if self._deadline is None or self._deadline > now:
            return acts
        if not any(r.sent for r in self._inflight):
            self._deadline = None
            return acts
        self.counters["timeouts"] += 1
        return acts + self._retry(self._una(), now, rnr=False)

    def _arm(self, now: float) -> None:
        self._deadline = now + self.timeout if any(r.sent for r in self._inflight) else None

    # ---- requester ----------------------------------------------------------------------
    def _pop(self) -> _Req:
        r = self._inflight.popleft()
        r.done = True
        return r

    def _una(self) -> int:
        head = self._inflight[0]
        return psn_add(head.first, head.got)

    def _pump(self, now: float) -> list[Action]:
        """Start what the window allows, send what is due (nothing while an RNR wait runs)."""
        if self.state is not QpState.RTS or self._rnr_until is not None:
            return []
        acts: list[Action] = self._locals_done()
        while self._sq and len(self._inflight) < self.max_outstanding:
            if self._delay_until is not None:
                if now < self._delay_until:
                    break
                self._delay_until = None
            if self._sq[0].fence and any(r.reads for r in self._inflight):
                break
            wr = self._sq.popleft()
            if wr.opcode in LOCAL_OPS:
                r = _Req(wr, self._next_psn, 0, local=True)
                if wr.opcode is WrOpcode.DELAY:
                    self._delay_until = now + wr.delay
                else:
                    r.ok = self.local is not None and self.local(wr)
                self._inflight.append(r)
                acts += self._locals_done()
                continue
            size = wr.length if wr.opcode is WrOpcode.RDMA_READ else len(wr.data)
            atomic = wr.opcode in (WrOpcode.ATOMIC_CMP_AND_SWP, WrOpcode.ATOMIC_FETCH_AND_ADD)
            n = 1 if atomic else _chunks(size, self.mtu)
            r = _Req(wr, self._next_psn, n)
            self._inflight.append(r)
            self._unsent.append(r)
            self._next_psn = psn_add(self._next_psn, n)
        while self._unsent:
            r = self._unsent.popleft()
            while r.sent < r.npkts and not r.done:
                acts.append(Transmit(self._request(r)))
                self.counters["sent"] += 1
        if acts and self._deadline is None:
            self._deadline = now + self.timeout
        return acts

    def _request(self, r: _Req) -> Packet:
        """The next packet of ``r`` (a READ: its one request, for what is still missing)."""
        wr, i = r.wr, r.sent
        psn = psn_add(r.first, i)
        if wr.opcode is WrOpcode.RDMA_READ:
            done = i * self.mtu
            r.sent = r.npkts
            return Packet("RDMA_READ_REQUEST", psn, self.dest_qp, True,
                          reth=Reth(wr.remote_addr + done, wr.rkey, wr.length - done))
        if wr.opcode in (WrOpcode.ATOMIC_CMP_AND_SWP, WrOpcode.ATOMIC_FETCH_AND_ADD):
            r.sent = 1
            op = "COMPARE_SWAP" if wr.opcode is WrOpcode.ATOMIC_CMP_AND_SWP else "FETCH_ADD"
            swap = wr.swap if op == "COMPARE_SWAP" else wr.compare_add
            compare = wr.compare_add if op == "COMPARE_SWAP" else 0
            return Packet(op, psn, self.dest_qp, True,
                          atomic=AtomicEth(wr.remote_addr, wr.rkey, swap, compare))
        r.sent += 1
        write = wr.opcode in (WrOpcode.RDMA_WRITE, WrOpcode.RDMA_WRITE_WITH_IMM)
        base = "RDMA_WRITE_" if write else "SEND_"
        first, last = i == 0, i == r.npkts - 1
        pos = "ONLY" if first and last else "FIRST" if first else "LAST" if last else "MIDDLE"
        imm = wr.imm if last and wr.opcode in (WrOpcode.SEND_WITH_IMM,
                                               WrOpcode.RDMA_WRITE_WITH_IMM) else None
        op = base + pos + ("_WITH_IMMEDIATE" if imm is not None else "")
        reth = Reth(wr.remote_addr, wr.rkey, len(wr.data)) if write and first else None
        return Packet(op, psn, self.dest_qp, True, reth=reth, imm=imm,
                      payload=wr.data[i * self.mtu:(i + 1) * self.mtu])

    def _retry(self, psn: int, now: float, *, rnr: bool) -> list[Action]:
        """Go back to ``psn`` (counted against the retry or the RNR retry count)."""
        left = self._rnr_retries if rnr else self._retries
        if left == 0:
            head = self._pop()
            status = WcStatus.RNR_RETRY_EXC_ERR if rnr else WcStatus.RETRY_EXC_ERR
            return [self._wc(head.wr, status), *self._fail(f"{status.name} at PSN {psn}")]
        if left != INFINITE:
            if rnr:
                self._rnr_retries -= 1
            else:
                self._retries -= 1
        for r in self._inflight:
            back = psn_diff(psn, r.first)
            if back < r.npkts:
                r.sent = max(0, min(r.sent, back), r.got)
        self._unsent = deque(r for r in self._inflight if r.sent < r.npkts)
        self.counters["resent"] += 1
        self._deadline = None
        if rnr:
            self._rnr_until = now + RNR_DELAY
            return []
        return self._pump(now)

    def _response(self, p: Packet, now: float) -> list[Action]:
        if not self._inflight or self.state is not QpState.RTS:
            return []
        acts: list[Action] = []
        kind, value = ack_kind(p.syndrome) if p.syndrome is not None else ("ACK", 0)
        if kind == "RNR":
            self.counters["rnr_naks"] += 1
            acts += self._acked_before(p.psn, now)
            return acts + (self._retry(p.psn, now, rnr=True) if self._inflight else [])
        if kind == "NAK":
            code = NAK_CODES.get(value, INVALID_REQUEST)
            if code == PSN_SEQUENCE_ERROR:
                acts += self._acked_before(p.psn, now)
                return acts + (self._retry(p.psn, now, rnr=False) if self._inflight else [])
            acts += self._acked_before(p.psn, now)
            if not self._inflight or psn_diff(p.psn, self._inflight[0].first) < 0:
                return acts  # (a NAK of a message already completed: a duplicate)
            head = self._pop()
            return acts + self._nak_failed(head, _NAK_STATUS.get(code, WcStatus.REM_INV_REQ_ERR),
                                           f"NAK {code} at PSN {p.psn}", now)
        if p.op in READ_RESPONSES:
            return self._read_response(p, now)
        if p.op == "ATOMIC_ACKNOWLEDGE":
            acts += self._acked_before(p.psn, now)
            head = self._inflight[0] if self._inflight else None
            if head is not None and head.first == p.psn and head.wr.opcode in (
                    WrOpcode.ATOMIC_CMP_AND_SWP, WrOpcode.ATOMIC_FETCH_AND_ADD):
                self._pop()
                acts.append(self._wc(head.wr, WcStatus.SUCCESS,
                                     (p.orig or 0).to_bytes(8, "big")))
                self._progress(now)
            return acts + self._pump(now)
        acts += self._acked_before(psn_add(p.psn, 1), now)
        if self._inflight and self._inflight[0].reads and psn_diff(
                p.psn, self._inflight[0].first) >= 0:
            return acts + self._retry(self._una(), now, rnr=False)  # its answer was lost
        return acts + self._pump(now)

    def _nak_failed(self, head: _Req, status: WcStatus, why: str, now: float) -> list[Action]:
        """``head`` NAKed for good: its completion, and the QP to ERROR (D3.7)."""
        return [self._wc(head.wr, status), *self._fail(why)]

    def _locals_done(self) -> list[Action]:
        """Complete the BIND_RKEY and DELAY work requests whose turn it is (completions come in
        the order of posting)."""
        acts: list[Action] = []
        while self._inflight and self._inflight[0].local:
            r = self._pop()
            acts.append(self._wc(r.wr, WcStatus.SUCCESS if r.ok else WcStatus.MW_BIND_ERR))
        return acts

    def _acked_before(self, psn: int, now: float) -> list[Action]:
        """Complete the SENDs and WRITEs wholly before ``psn`` (an ACK of PSN p acknowledges
        every packet up to p); stop at a READ or atomic, which only its answer completes."""
        acts: list[Action] = []
        while self._inflight:
            r = self._inflight[0]
            if r.local:
                acts += self._locals_done()
                continue
            end = psn_add(r.first, r.npkts)
            if r.reads or psn_diff(psn, end) < 0 or not r.sent:
                if not r.reads and psn_diff(psn, r.first) > 0:
                    r.got = max(r.got, psn_diff(psn, r.first))
                break
            self._pop()
            acts.append(self._wc(r.wr, WcStatus.SUCCESS))
            self._progress(now)
        return acts

    def _progress(self, now: float) -> None:
        self._retries, self._rnr_retries = self.retry_cnt, self.rnr_retry
        self._deadline = None
        self._arm(now)

    def _read_response(self, p: Packet, now: float) -> list[Action]:
        acts = self._acked_before(p.psn, now)
        if not self._inflight or self._inflight[0].wr.opcode is not WrOpcode.RDMA_READ:
            return acts
        r = self._inflight[0]
        want = psn_add(r.first, r.got)
        d = psn_diff(p.psn, want)
        if d < 0:
            return acts  # a duplicate
        if d > 0:
            return acts + self._retry(want, now, rnr=False)  # a response lost: ask again
        r.data += p.payload
        r.got += 1
        self._progress(now)
        if r.got == r.npkts:
            self._pop()
            acts.append(self._wc(r.wr, WcStatus.SUCCESS, bytes(r.data)))
        return acts + self._pump(now)

    # ---- responder ----------------------------------------------------------------------
    def receive(self, p: Packet, now: float) -> list[Action]:
        """A packet for this QP."""
        if p.is_response:
            return self._response(p, now)
        if self.state not in (QpState.RTR, QpState.RTS):
            return []  # (RESET, INIT: not connected yet; ERROR: dropped)
        d = psn_diff(p.psn, self._epsn)
        if d < 0:
            self.counters["duplicates"] += 1
            return self._duplicate(p)
        if d > 0:
            self.counters["out_of_order"] += 1
            if self._nak_sent:
                return []
            self._nak_sent = True
            return [self._ack(nak(PSN_SEQUENCE_ERROR), self._epsn, naked=True)]
        self._nak_sent = False
        return self._take(p)

    def _take(self, p: Packet) -> list[Action]:
        """The request packet the PSN order lets in."""
        if p.op in SENDS:
            return self._send_in(p)
        if p.op in WRITES:
            return self._write_in(p)
        if p.op == "RDMA_READ_REQUEST":
            return self._read_in(p)
        return self._atomic_in(p)

    def _target(self, p: Packet) -> Endpoint:
        """Whose receive queue and memory the request ``p`` reaches: this QP's."""
        return self

    def _reply(self, p: Packet) -> Transmit:
        """A response, on its way to the requester (an RC QP has one)."""
        return Transmit(p)

    def _ack(self, syndrome: int, psn: int, naked: bool = False) -> Transmit:
        self.counters["naks_sent" if naked else "acks_sent"] += 1
        return self._reply(Packet("ACKNOWLEDGE", psn, self.dest_qp, syndrome=syndrome,
                                  msn=self._msn))

    def _accept(self, p: Packet) -> list[Action]:
        """``p`` taken: the expected PSN moves on, and it is acknowledged."""
        self._epsn = psn_add(self._epsn, 1)
        return [self._ack(ACK_SYNDROME, p.psn)] if p.ackreq else []

    def _refuse(self, p: Packet, code: str, why: str) -> list[Action]:
        self._incoming = None
        return [self._ack(nak(code), p.psn, naked=True), *self._fail(f"NAKed {code}: {why}")]

    def _fault(self, p: Packet, f: Fault) -> list[Action]:
        self._incoming = None
        return [PageFault(self._target(p).qp_num, f.rkey, f.va, f.pid),
                self._ack(rnr_nak(RNR_TIMER), p.psn, naked=True)]

    def _check(self, t: Endpoint, rkey: int, va: int, n: int, op: Op
               ) -> Grant | Refusal | Fault:
        if t.memory is None:
            return Refusal(REMOTE_ACCESS_ERROR, "this endnode takes no RDMA (L665)")
        return t.memory.check(rkey, va, n, op)

    def _send_in(self, p: Packet) -> list[Action]:
        start = p.op in ("SEND_FIRST", "SEND_ONLY", "SEND_ONLY_WITH_IMMEDIATE")
        t = self._target(p)
        if start:
            if not t._rq:
                return [self._ack(rnr_nak(RNR_TIMER), p.psn, naked=True)]
            self._incoming = _Incoming("SEND", recv=t._rq.popleft())
        inc = self._incoming
        if inc is None or inc.kind != "SEND" or inc.recv is None:
            return self._refuse(p, INVALID_REQUEST, f"{p.op} outside a SEND")
        inc.buf += p.payload
        if len(inc.buf) > inc.recv.length:
            t._rq.appendleft(inc.recv)
            return self._refuse(p, INVALID_REQUEST, f"{len(inc.buf)} bytes for a "
                                f"{inc.recv.length}-byte receive")
        if p.op in MESSAGE_ENDS:  # (before the ACK: it carries the count with this one)
            self._msn = (self._msn + 1) & 0xFFFFFF
        acts = self._accept(p)
        if p.op in MESSAGE_ENDS:
            self._incoming = None
            acts.insert(0, Completion(Wc(inc.recv.wr_id, WcStatus.SUCCESS, WcOpcode.RECV,
                                         t.qp_num, len(inc.buf), p.imm, bytes(inc.buf)),
                                      recv=True))
        return acts

    def _write_in(self, p: Packet) -> list[Action]:
        t = self._target(p)
        if p.reth is not None:  # FIRST or ONLY: the whole DMA length is checked (D3.6)
            got = self._check(t, p.reth.rkey, p.reth.va, p.reth.dmalen, Op.WRITE)
            if isinstance(got, Fault):
                return self._fault(p, got)
            if isinstance(got, Refusal):
                return self._refuse(p, got.code, got.why)
            self._incoming = _Incoming("RDMA_WRITE", grant=got, dmalen=p.reth.dmalen)
        inc = self._incoming
        if inc is None or inc.kind != "RDMA_WRITE" or inc.grant is None:
            return self._refuse(p, INVALID_REQUEST, f"{p.op} outside a WRITE")
        if inc.offset + len(p.payload) > inc.dmalen:
            return self._refuse(p, INVALID_REQUEST, "more data than the RETH's DMA length")
        last = p.op in MESSAGE_ENDS
        if last and inc.offset + len(p.payload) != inc.dmalen:
            return self._refuse(p, INVALID_REQUEST, "less data than the RETH's DMA length")
        imm = p.imm is not None
        if last and imm and not t._rq:
            return [self._ack(rnr_nak(RNR_TIMER), p.psn, naked=True)]
        memory = t.memory
        assert memory is not None
        if p.payload:
            memory.write(inc.grant, inc.offset, p.payload)
        inc.offset += len(p.payload)
        if last:  # (before the ACK: it carries the count with this message)
            self._msn = (self._msn + 1) & 0xFFFFFF
        acts = self._accept(p)
        if last:
            memory.used(inc.grant)
            self._incoming = None
            if imm:
                rwr = t._rq.popleft()
                acts.insert(0, Completion(Wc(rwr.wr_id, WcStatus.SUCCESS,
                                             WcOpcode.RECV_RDMA_WITH_IMM, t.qp_num,
                                             inc.dmalen, p.imm), recv=True))
        return acts

    def _read_in(self, p: Packet) -> list[Action]:
        assert p.reth is not None
        t = self._target(p)
        memory = t.memory
        got = self._check(t, p.reth.rkey, p.reth.va, p.reth.dmalen, Op.READ)
        if isinstance(got, Fault):
            return self._fault(p, got)
        if isinstance(got, Refusal):
            return self._refuse(p, got.code, got.why)
        assert memory is not None
        n = _chunks(p.reth.dmalen, self.mtu)
        self._msn = (self._msn + 1) & 0xFFFFFF
        self._reads.append((p.psn, n, p.reth, got, self._msn))
        acts = self._read_responses(memory, p.psn, p.reth.dmalen, got, 0, self._msn)
        memory.used(got)
        self._epsn = psn_add(self._epsn, n)
        return acts

    def _read_responses(self, memory: Memory, psn: int, dmalen: int, grant: Grant, offset: int,
                        msn: int) -> list[Action]:
        """The responses to a READ of ``dmalen`` bytes at ``offset`` into ``grant``."""
        n = _chunks(dmalen, self.mtu)
        acts: list[Action] = []
        for i in range(n):
            pos = "ONLY" if n == 1 else "FIRST" if i == 0 else "LAST" if i == n - 1 \
                else "MIDDLE"
            data = memory.read(grant, offset + i * self.mtu, min(self.mtu, dmalen - i * self.mtu))
            aeth = pos != "MIDDLE"
            acts.append(self._reply(Packet(f"RDMA_READ_RESPONSE_{pos}", psn_add(psn, i),
                                           self.dest_qp, syndrome=ACK_SYNDROME if aeth else None,
                                           msn=msn if aeth else 0, payload=data)))
        return acts

    def _atomic_in(self, p: Packet) -> list[Action]:
        a = p.atomic
        assert a is not None
        t = self._target(p)
        memory = t.memory
        got = self._check(t, a.rkey, a.va, 8, Op.ATOMIC)
        if isinstance(got, Fault):
            return self._fault(p, got)
        if isinstance(got, Refusal):
            return self._refuse(p, got.code, got.why)
        assert memory is not None
        orig = int.from_bytes(memory.read(got, 0, 8), "big")
        if p.op == "COMPARE_SWAP":
            new = a.swap if orig == a.compare else orig
        else:
            new = (orig + a.swap) & ((1 << 64) - 1)
        if new != orig:
            memory.write(got, 0, new.to_bytes(8, "big"))
        memory.used(got)
        self._msn = (self._msn + 1) & 0xFFFFFF
        self._atomics[p.psn] = orig
        if len(self._atomics) > 64:
            del self._atomics[next(iter(self._atomics))]
        self._epsn = psn_add(self._epsn, 1)
        return [self._reply(Packet("ATOMIC_ACKNOWLEDGE", p.psn, self.dest_qp,
                                   syndrome=ACK_SYNDROME, msn=self._msn, orig=orig))]

    def _duplicate(self, p: Packet) -> list[Action]:
        """IBA 9.7.5.1.1: answer a duplicate again, doing nothing twice."""
        if p.op == "RDMA_READ_REQUEST":  # (the rest of) one answered lately: the same bytes
            for first, n, reth, grant, msn in reversed(self._reads):
                k = psn_diff(p.psn, first)
                if (0 <= k < n and p.reth is not None and p.reth.va == reth.va + k * self.mtu
                        and p.reth.dmalen == reth.dmalen - k * self.mtu):
                    memory = self._target(p).memory
                    assert memory is not None
                    return self._read_responses(memory, p.psn, p.reth.dmalen, grant,
                                                k * self.mtu, msn)
            return []
        if p.op in ("COMPARE_SWAP", "FETCH_ADD") and p.psn in self._atomics:
            return [self._reply(Packet("ATOMIC_ACKNOWLEDGE", p.psn, self.dest_qp,
                                       syndrome=ACK_SYNDROME, msn=self._msn,
                                       orig=self._atomics[p.psn]))]
        return [self._ack(ACK_SYNDROME, psn_add(self._epsn, -1))]

