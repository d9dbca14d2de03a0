"""An unreliable-datagram queue pair (B3.10; IBA 9.8.1), sans-IO: SEND only (D3.11: RDMA needs
RD), one packet per message, no acknowledgement and no retry. A datagram completes when it is
sent; one that is lost is lost. The receiver drops, and counts, a datagram whose Q_Key is not
its QP's (``qkey_drops``), or that finds no receive posted (``no_receive``: UD has no RNR), or
longer than the receive buffer (``too_long``); a receive's completion names the sender's QP and
address. States and their table are the RC QP's (``qp.TRANSITIONS``).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from .packets import Packet, psn_add
from .qp import (
    TRANSITIONS,
    Action,
    Completion,
    QpState,
    QpStateError,
    RecvWr,
    StateChanged,
    Transmit,
    Wc,
    WcOpcode,
    WcStatus,
)


@dataclass(frozen=True)
class UdSendWr:
    wr_id: int
    data: bytes
    peer: str  # the destination endnode
    remote_qpn: int
    remote_qkey: int
    imm: int | None = None


class UdQp:
    def __init__(self, qp_num: int, *, qkey: int, mtu: int = 1024, max_recv_wr: int = 1024
                 ) -> None:
        self.qp_num, self.qkey, self.mtu, self.max_recv_wr = qp_num, qkey, mtu, max_recv_wr
        self.state = QpState.RESET
        self.counters = {"sent": 0, "received": 0, "qkey_drops": 0, "no_receive": 0,
                         "too_long": 0}
        self._rq: deque[RecvWr] = deque()
        self._psn = 0

    def modify(self, new: QpState, now: float, *, sq_psn: int = 0) -> list[Action]:
        why = TRANSITIONS.get((self.state, new))
        if why is None:
            raise QpStateError(f"UD QP {self.qp_num}: {self.state.name} -> {new.name}")
        old, self.state = self.state, new
        acts: list[Action] = [StateChanged(self.qp_num, old, new, why)]
        if new is QpState.RTS:
            self._psn = sq_psn & 0xFFFFFF
        if new in (QpState.ERROR, QpState.RESET):
            if new is QpState.ERROR:
                acts += [Completion(Wc(r.wr_id, WcStatus.WR_FLUSH_ERR, WcOpcode.RECV,
                                       self.qp_num), recv=True) for r in self._rq]
            self._rq.clear()
        return acts

    def post_send(self, wr: UdSendWr, now: float) -> list[Action]:
        if self.state is not QpState.RTS:
            raise QpStateError(f"UD QP {self.qp_num}: post_send in {self.state.name}")
        if len(wr.data) > self.mtu:  # a datagram is one packet
            return [Completion(Wc(wr.wr_id, WcStatus.LOC_LEN_ERR, WcOpcode.SEND, self.qp_num,
                                  len(wr.data)))]
        op = "SEND_ONLY_WITH_IMMEDIATE" if wr.imm is not None else "SEND_ONLY"
        p = Packet(op, self._psn, wr.remote_qpn, imm=wr.imm, payload=wr.data,
                   qkey=wr.remote_qkey, src_qp=self.qp_num)
        self._psn = psn_add(self._psn, 1)
        self.counters["sent"] += 1
        return [Transmit(p, wr.peer), Completion(Wc(wr.wr_id, WcStatus.SUCCESS, WcOpcode.SEND,
                                                    self.qp_num, len(wr.data), wr.imm))]

    def post_recv(self, wr: RecvWr) -> list[Action]:
        if self.state is QpState.RESET:
            raise QpStateError(f"UD QP {self.qp_num}: post_recv in RESET")
        if len(self._rq) >= self.max_recv_wr:
            raise QpStateError(f"UD QP {self.qp_num}: receive queue full")
        self._rq.append(wr)
        return []

    def receive(self, p: Packet, now: float, src: str = "") -> list[Action]:
        if self.state not in (QpState.RTR, QpState.RTS) or p.qkey is None:
            return []
        if p.qkey != self.qkey:
            self.counters["qkey_drops"] += 1
            return []
        if not self._rq:
            self.counters["no_receive"] += 1
            return []
        if len(p.payload) > self._rq[0].length:
            self.counters["too_long"] += 1
            return []
        r = self._rq.popleft()
        self.counters["received"] += 1
        return [Completion(Wc(r.wr_id, WcStatus.SUCCESS, WcOpcode.RECV, self.qp_num,
                              len(p.payload), p.imm, p.payload, p.src_qp, src), recv=True)]

    def next_deadline(self) -> float | None:
        return None

    def on_timer(self, now: float) -> list[Action]:
        return []
