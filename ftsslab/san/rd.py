"""The reliable-datagram transport with EE contexts (B3.9, check 21; IBA 9.7 where the seed is
silent), sans-IO like ``qp.py``: work requests and packets in, packets, completions and events
out, the clock passed in.

**Per EE context** (``EeContext``, one per pair of endnodes): what makes RD reliable -- the
send PSN and the expected PSN, ACKs and NAKs, the timeout, ``retry_cnt``/``rnr_retry``,
go-back-N, the MSN and the saved answers to duplicates. The seed: "End-to-end (EE) contexts
maintain end-to-end specific state to keep track of sequence numbers, acknowledgments, and
time-out values. The end-to-end state held in the EE contexts is shared by all the
connectionless QPs communicating between a pair of endnodes" (L482). That is the RC machinery
of ``qp.RcQp`` between two endnodes instead of two QPs, so an EE context is one, with its hooks
aimed at RD: a request names its destination QP (BTH), the Q_Key and source QP (DETH) and the
remote EE context (RDETH); a response goes back to the requesting QP through the requester's
EE context. States and transitions are the QP's (``qp.TRANSITIONS``).

**Per QP** (``RdQp``): its Q_Key, whether it takes RDMA, its receive queue, the memory its
RDMA requests reach (its process's keys, ``rkeys.Reach``). Each message is posted to (peer,
remote QP, Q_Key) and goes on the EE context to that peer. ``Rd`` is the endnode's table of
both, and takes each packet to the EE context its RDETH names.

Decisions (docs/san.md, "RD"):

- **One message outstanding per EE context** (IBA: an RD requester EE context has one
  message in flight at a time): the messages of all QPs to one peer go out one after the other
  in posting order, their PSNs interleaved on the EE context.
- **The responder's checks**, before a byte moves: the QP exists and is RD, the Q_Key is its
  QP's (else NAK INVALID_RD_REQUEST, IBA's NAK code 4 for RD); a WRITE, READ or atomic needs
  the QP's RDMA enabled (else NAK INVALID_REQUEST: an operation the QP does not support, as
  Linux's rxe answers a request its QP's access flags lack); then the keys, as for RC. The key
  is checked against the RD QP's process only, not the requesting node: any node that holds the
  key may use it (B3.27, L832: "can accept RDMA operations from any node ... that obtains the
  RKey").
- **A NAK fails the requesting QP, not the EE context** (D3.7 for RD): that QP goes to ERROR
  and its queued messages are flushed; the other QPs sharing the EE context go on, and the
  responder's QP, which takes messages from every peer, stays as it is. Retries exhausted fail
  the EE context (a transport error): everything queued on it is flushed.
- **No RESYNC.** IBA realigns an EE context's PSNs after a NAK with RESYNC (opcode 0x55),
  which ftsslab's wire tables do not have. Instead a message refused before its last packet is
  taken to its end without a byte moving -- its PSNs consumed, as the requester assigned them
  -- and its last packet is NAKed; the NAK answers any duplicate until a later request is taken.
"""

from __future__ import annotations

import itertools
from collections import deque
from typing import NamedTuple

from .packets import MESSAGE_ENDS, SENDS, WRITES, Packet, nak, psn_add
from .qp import (
    INVALID_RD_REQUEST,
    LOCAL_OPS,
    TRANSITIONS,
    WC_OPCODE,
    Action,
    Completion,
    Memory,
    QpState,
    QpStateError,
    RcQp,
    RecvWr,
    SendWr,
    StateChanged,
    Transmit,
    Wc,
    WcOpcode,
    WcStatus,
    _chunks,
    _Req,
)
from .rkeys import INVALID_REQUEST

RDMA_OPS = WRITES | {"RDMA_READ_REQUEST", "COMPARE_SWAP", "FETCH_ADD"}
_GOES_ON = frozenset(op for op in SENDS | WRITES if op not in MESSAGE_ENDS)  # FIRST, MIDDLE
_CONTINUES = frozenset(op for op in SENDS | WRITES if "MIDDLE" in op or "LAST" in op)


class NoEeContext(Exception):
    """A message to an endnode this one has no EE context to."""


class UnsupportedWr(ValueError):
    """A work request RD does not carry here (BIND_RKEY and DELAY are RC's)."""


class RdDest(NamedTuple):
    """Where an RD message goes: the endnode, its QP and that QP's Q_Key."""

    peer: str
    qpn: int
    qkey: int


class RdQp:
    """One RD queue pair. ``memory`` is what RDMA requests to it reach (None: an endnode that
    takes no RDMA, L665); ``rdma`` False refuses them on this QP."""

    def __init__(self, qp_num: int, rd: Rd, *, qkey: int, memory: Memory | None,
                 rdma: bool = True, max_recv_wr: int = 1024) -> None:
        self.qp_num, self.rd, self.qkey, self.memory = qp_num, rd, qkey, memory
        self.rdma, self.max_recv_wr = rdma and memory is not None, max_recv_wr
        self.state = QpState.RESET
        self._rq: deque[RecvWr] = deque()

    def modify(self, new: QpState, now: float) -> list[Action]:
        why = TRANSITIONS.get((self.state, new))
        if why is None:
            raise QpStateError(f"RD QP {self.qp_num}: {self.state.name} -> {new.name}")
        old, self.state = self.state, new
        acts: list[Action] = [StateChanged(self.qp_num, old, new, why)]
        if new in (QpState.ERROR, QpState.RESET):  # (RESET: discarded, as RC's)
            flushed = [Completion(Wc(r.wr_id, WcStatus.WR_FLUSH_ERR, WcOpcode.RECV,
                                     self.qp_num), recv=True) for r in self._rq]
            flushed += self.rd.drop(self)
            self._rq.clear()
            if new is QpState.ERROR:
                acts += flushed
        return acts

    def post_send(self, wr: SendWr, dest: RdDest, now: float) -> list[Action]:
        if wr.opcode in LOCAL_OPS:
            raise UnsupportedWr(f"RD QP {self.qp_num}: {wr.opcode.name} is an RC work request")
        if self.state is QpState.ERROR:
            return [Completion(Wc(wr.wr_id, WcStatus.WR_FLUSH_ERR, WC_OPCODE[wr.opcode],
                                  self.qp_num))]
        if self.state is not QpState.RTS:
            raise QpStateError(f"RD QP {self.qp_num}: post_send in {self.state.name}")
        return self.rd.eec(dest.peer).post(self, wr, dest, now)

    def post_recv(self, wr: RecvWr) -> list[Action]:
        if self.state is QpState.ERROR:
            return [Completion(Wc(wr.wr_id, WcStatus.WR_FLUSH_ERR, WcOpcode.RECV, self.qp_num),
                               recv=True)]
        if self.state is QpState.RESET:
            raise QpStateError(f"RD QP {self.qp_num}: post_recv in RESET")
        if len(self._rq) >= self.max_recv_wr:
            raise QpStateError(f"RD QP {self.qp_num}: receive queue full ({self.max_recv_wr})")
        self._rq.append(wr)
        return []

    def next_deadline(self) -> float | None:
        return None  # (the timers are the EE contexts')

    def on_timer(self, now: float) -> list[Action]:
        return []


class EeContext(RcQp):
    """This endnode's EE context to ``peer``: ``qp_num`` is its number (the RDETH the peer
    sends to), ``dest_qp`` the peer's EE context."""

    def __init__(self, eecn: int, rd: Rd, peer: str, *, mtu: int = 1024,
                 max_send_wr: int = 1024) -> None:
        super().__init__(eecn, mtu=mtu, max_outstanding=1, max_send_wr=max_send_wr)
        self.rd, self.peer = rd, peer
        self._msgs: dict[int, tuple[RdQp, SendWr, RdDest]] = {}  # by the engine's wr_id
        self._tokens = itertools.count()
        self._requester_qp = 0  # the source QP of the request being answered
        self._discard: str | None = None  # the NAK code of a refused message being run out
        self._naked: tuple[int, Transmit] | None = None  # (the expected PSN after it, NAK)

    def connect(self, remote_eecn: int, now: float, *, psn: int = 0, remote_psn: int = 0,
                timeout: float = 0.05, retry_cnt: int = 7, rnr_retry: int = 7
                ) -> list[Action]:
        """RESET -> INIT -> RTR -> RTS with the peer's EE context ``remote_eecn``."""
        return [*self.modify(QpState.INIT, now),
                *self.modify(QpState.RTR, now, dest_qp=remote_eecn, rq_psn=remote_psn),
                *self.modify(QpState.RTS, now, sq_psn=psn, timeout=timeout,
                             retry_cnt=retry_cnt, rnr_retry=rnr_retry)]

    def post(self, qp: RdQp, wr: SendWr, dest: RdDest, now: float) -> list[Action]:
        """``qp``'s message to ``dest``, behind those already queued here."""
        if self.state not in (QpState.RTS, QpState.ERROR):
            raise QpStateError(f"EE context {self.qp_num} to {self.peer}: {self.state.name}")
        token = next(self._tokens)
        self._msgs[token] = (qp, wr, dest)
        return self.post_send(wr._replace(wr_id=token), now)

    def drop(self, qp: RdQp) -> list[Action]:
        """``qp``'s messages still queued here, flushed (the QP went to ERROR)."""
        gone = [wr for wr in self._sq if self._msgs[wr.wr_id][0] is qp]
        self._sq = deque(wr for wr in self._sq if self._msgs[wr.wr_id][0] is not qp)
        return [self._wc(wr, WcStatus.WR_FLUSH_ERR) for wr in gone]

    def receive(self, p: Packet, now: float) -> list[Action]:
        if not p.is_response:
            self._requester_qp = p.src_qp
        return super().receive(p, now)

    # ---- requester hooks -------------------------------------------------------------------
    def _wc(self, wr: SendWr, status: WcStatus, data: bytes = b"") -> Completion:
        qp, posted, _ = self._msgs.pop(wr.wr_id)
        c = super()._wc(posted, status, data)
        return c._replace(wc=c.wc._replace(qp_num=qp.qp_num))

    def _request(self, r: _Req) -> Packet:
        qp, _, dest = self._msgs[r.wr.wr_id]
        return super()._request(r)._replace(dqpn=dest.qpn, qkey=dest.qkey, src_qp=qp.qp_num,
                                            eec=self.dest_qp)

    def _pump(self, now: float) -> list[Action]:
        return [Transmit(a.packet, self.peer) if isinstance(a, Transmit) else a
                for a in super()._pump(now)]

    def _nak_failed(self, head: _Req, status: WcStatus, why: str, now: float) -> list[Action]:
        qp = self._msgs[head.wr.wr_id][0]
        acts = [self._wc(head.wr, status)]
        if qp.state is not QpState.ERROR:
            acts += qp.modify(QpState.ERROR, now)
        return acts + self._pump(now)

    # ---- responder hooks -------------------------------------------------------------------
    def _take(self, p: Packet) -> list[Action]:
        if self._discard is not None and p.op in _CONTINUES:
            if p.op in MESSAGE_ENDS:
                code, self._discard = self._discard, None
                return self._nak_end(p, code)
            return self._accept(p)
        self._discard = None
        qp = self.rd.qps.get(p.dqpn)
        if qp is None or qp.state not in (QpState.RTR, QpState.RTS):
            return self._refuse(p, INVALID_RD_REQUEST, f"no RD QP {p.dqpn} ready")
        if p.qkey != qp.qkey:
            return self._refuse(p, INVALID_RD_REQUEST, f"Q_Key {p.qkey} is not QP "
                                f"{qp.qp_num}'s")
        if p.op in RDMA_OPS and not qp.rdma:
            return self._refuse(p, INVALID_REQUEST, f"RD QP {qp.qp_num} takes no RDMA")
        return [a._replace(wc=a.wc._replace(src_qp=p.src_qp, src=self.peer))
                if isinstance(a, Completion) and a.recv else a for a in super()._take(p)]

    def _target(self, p: Packet) -> RdQp:
        return self.rd.qps[p.dqpn]  # (``_take`` let only a ready RD QP's requests in)

    def _reply(self, p: Packet) -> Transmit:
        return Transmit(p._replace(dqpn=self._requester_qp, eec=self.dest_qp), self.peer)

    def _refuse(self, p: Packet, code: str, why: str) -> list[Action]:
        """NAK the refused message at its last packet (see "No RESYNC" above)."""
        self._incoming = None
        if p.op in _GOES_ON:
            self._discard = code
            return self._accept(p)
        return self._nak_end(p, code)

    def _nak_end(self, p: Packet, code: str) -> list[Action]:
        n = _chunks(p.reth.dmalen, self.mtu) if p.op == "RDMA_READ_REQUEST" and p.reth else 1
        self._epsn = psn_add(self._epsn, n)
        sent = self._ack(nak(code), p.psn, naked=True)
        self._naked = (self._epsn, sent)
        return [sent]

    def _duplicate(self, p: Packet) -> list[Action]:
        if self._naked is not None and self._naked[0] == self._epsn:
            return [self._naked[1]]  # nothing taken since the NAK: it is the answer
        if p.dqpn not in self.rd.qps:
            return []  # (no request to a QP that does not exist was ever taken)
        return super()._duplicate(p)


class Rd:
    """One endnode's RD: its EE contexts, one per remote endnode ("Each endnode requires at
    least one EE context for every endnode it wishes to communicate with", L482), and RD QPs."""

    def __init__(self, mtu: int = 1024) -> None:
        self.mtu = mtu
        self.eecs: dict[int, EeContext] = {}  # by number: what an RDETH names
        self.peers: dict[str, EeContext] = {}
        self.qps: dict[int, RdQp] = {}
        self._next_eecn = 1

    def open_eec(self, peer: str) -> EeContext:
        if peer in self.peers:
            raise QpStateError(f"an EE context to {peer} exists: {self.peers[peer].qp_num}")
        eec = EeContext(self._next_eecn, self, peer, mtu=self.mtu)
        self._next_eecn += 1
        self.eecs[eec.qp_num] = self.peers[peer] = eec
        return eec

    def eec(self, peer: str) -> EeContext:
        try:
            return self.peers[peer]
        except KeyError:
            raise NoEeContext(f"no EE context to {peer}") from None

    def drop(self, qp: RdQp) -> list[Action]:
        return [a for eec in self.eecs.values() for a in eec.drop(qp)]

    def receive(self, p: Packet, now: float, src: str = "") -> list[Action]:
        """A packet from the endnode ``src``: to the EE context its RDETH names, if that one is
        ``src``'s (a stray is dropped, as a HCA drops it)."""
        eec = self.eecs.get(p.eec) if p.eec is not None else None
        if eec is None or (src and src != eec.peer):
            return []
        return eec.receive(p, now)

    def next_deadline(self) -> float | None:
        return min((t for e in self.eecs.values() if (t := e.next_deadline()) is not None),
                   default=None)

    def on_timer(self, now: float) -> list[Action]:
        return [a for e in list(self.eecs.values())
                if (t := e.next_deadline()) is not None and t <= now for a in e.on_timer(now)]
