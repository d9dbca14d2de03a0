"""Management discovery over UD (B3.10, check 22): the unreliable datagram service "is employed
by management applications to discover and integrate new switches, routers, and endnodes"
(seed 003 L489). Sans-IO, above the verbs: completions and the clock in, datagrams out.

Every endnode runs a ``ManagementAgent`` on its general services QP -- IBA's GSI, QP1 under the
Q_Key 0x80010000, both well known, so a datagram reaches it with no exchange before. The agent
answers a SanMad GET of ENDNODE_INFO with a GET_RESP naming the endnode: its name, GUID (one
per SANIC, L505), port count and QP numbers. The agent of one endnode, the manager, also sweeps:
``discover`` sends a GET to every address not yet found, and after ``timeout`` sweeps again, at
most ``sweeps`` times in all. UD itself retries nothing (``ud.UdQp``): a lost GET or GET_RESP
is lost, counted by the manager as ``unanswered`` when its sweep ends, and asked again only by
the next sweep, under a new transaction ID. The fabric has no broadcast or multicast (it is a
delivery queue between named endnodes), so the manager is given the addresses to sweep -- as
an IBA subnet manager walks the ports it can reach -- and finds whatever answers at each.

What reaches QP1 and is not a SanMad is counted ``malformed``; a SanMad that is neither a GET
of ENDNODE_INFO nor a GET_RESP to a GET outstanding, from the address it was sent to, is
``unexpected``; both are dropped, and nothing raises.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from ftsslab.fast.roce import (
    GSI_QKEY,
    GSI_QPN,
    SAN_MAD_ATTRIBUTES,
    SAN_MAD_LEN,
    SAN_MAD_METHODS,
    SAN_MAD_QPN_SLOTS,
    build_san_mad,
    parse_san_mad,
)

from .packets import Packet
from .qp import WcOpcode, WcStatus
from .verbs import CQ, PD, SGE, RecvWR, UdSendWR

_METHOD = {name: value for value, name in SAN_MAD_METHODS.items()}
GET, GET_RESP = _METHOD["GET"], _METHOD["GET_RESP"]
ENDNODE_INFO = {name: value for value, name in SAN_MAD_ATTRIBUTES.items()}["ENDNODE_INFO"]


class Sweep(Enum):
    IDLE = "idle"
    SWEEPING = "sweeping"
    DONE = "done"


SWEEP_TRANSITIONS = {
    (Sweep.IDLE, Sweep.SWEEPING): "discover: a GET to every target",
    (Sweep.DONE, Sweep.SWEEPING): "discover again",
    (Sweep.SWEEPING, Sweep.SWEEPING): "timeout, targets not found, sweeps left: a GET to each",
    (Sweep.SWEEPING, Sweep.DONE): "every target found, or the last sweep timed out",
}


@dataclass(frozen=True)
class Found:
    """An endnode, as its GET_RESP describes it; ``address`` is where it answered from."""

    address: str
    name: str
    guid: int
    ports: int
    qpns: tuple[int, ...]


class ManagementAgent:
    """The GSI agent of one endnode (and, after ``discover``, its manager). ``buf`` is the
    effective address of ``depth + 1`` MADs of the process's memory: one receive buffer each
    for ``depth`` receives, kept posted, and one to send from (a UD send gathers at once)."""

    def __init__(self, pd: PD, buf: int, *, name: str, guid: int, ports: int = 1,
                 depth: int = 16) -> None:
        self.pd, self.buf, self.name, self.guid, self.ports = pd, buf, name, guid, ports
        self.depth = depth
        self.cq = CQ()
        self.qp = pd.open_ud_qp(self.cq, GSI_QKEY, qp_num=GSI_QPN, max_recv_wr=depth)
        self.counters = {"gets": 0, "answers": 0, "probes": 0, "unanswered": 0,
                         "malformed": 0, "unexpected": 0}
        self.state = Sweep.IDLE
        self.found: dict[str, Found] = {}
        self.sweeps = 0
        self._targets: tuple[str, ...] = ()
        self._max_sweeps, self._timeout = 0, 0.0
        self._deadline: float | None = None
        self._asked: dict[int, str] = {}  # the transaction IDs of this sweep: target
        self._tids = itertools.count(1)
        self._wr_ids = itertools.count(depth)  # sends; 0 .. depth-1 are the receive slots
        for slot in range(depth):
            self._post_recv(slot)

    # ---- the manager ---------------------------------------------------------------------
    def discover(self, targets: Iterable[str], now: float, *, sweeps: int = 4,
                 timeout: float = 0.01) -> list[tuple[str, Packet]]:
        """Sweep ``targets`` (endnode addresses) until each answered or ``sweeps`` ran."""
        self._move(Sweep.SWEEPING)
        self._targets, self._max_sweeps, self._timeout = tuple(targets), sweeps, timeout
        self.found, self.sweeps, self._asked = {}, 0, {}
        return self._sweep(now)

    def next_deadline(self) -> float | None:
        return self._deadline

    def poll(self, now: float) -> list[tuple[str, Packet]]:
        """Take every completion, answer the GETs, record the GET_RESPs; end or repeat the
        sweep when all are found or its time is up."""
        out: list[tuple[str, Packet]] = []
        while wcs := self.cq.poll(16):
            for wc in wcs:
                if wc.opcode is WcOpcode.RECV and wc.status is WcStatus.SUCCESS:
                    out += self._take(wc.wr_id, wc.byte_len, wc.src, wc.src_qp, now)
        if self.state is Sweep.SWEEPING:
            everyone = all(t in self.found for t in self._targets)
            if everyone or (self._deadline is not None and now >= self._deadline):
                self.counters["unanswered"] += len(self._asked)
                self._asked = {}
                if everyone or self.sweeps >= self._max_sweeps:
                    self._move(Sweep.DONE)
                    self._deadline = None
                else:
                    self._move(Sweep.SWEEPING)
                    out += self._sweep(now)
        return out

    def _sweep(self, now: float) -> list[tuple[str, Packet]]:
        self.sweeps += 1
        self._deadline = now + self._timeout
        out = []
        for target in self._targets:
            if target not in self.found:
                tid = next(self._tids)
                self._asked[tid] = target
                self.counters["probes"] += 1
                out += self._send(target, GSI_QPN, build_san_mad(method=GET, tid=tid), now)
        return out

    def _move(self, new: Sweep) -> None:
        assert (self.state, new) in SWEEP_TRANSITIONS, (self.state, new)
        self.state = new

    # ---- the agent -----------------------------------------------------------------------
    def _take(self, slot: int, length: int, src: str, src_qp: int, now: float
              ) -> list[tuple[str, Packet]]:
        data = self.pd.read(self.buf + slot * SAN_MAD_LEN, length)
        self._post_recv(slot)
        mad = parse_san_mad(data)
        if mad is None:
            self.counters["malformed"] += 1
            return []
        if mad["attrid"] != ENDNODE_INFO:
            self.counters["unexpected"] += 1
            return []
        if mad["method"] == GET:
            self.counters["gets"] += 1
            qpns = sorted(self.pd.context.qps)
            return self._send(src, src_qp, build_san_mad(
                method=GET_RESP, tid=mad["tid"], guid=self.guid, ports=self.ports,
                node_desc=self.name.encode(), qpns=qpns), now)
        if mad["method"] == GET_RESP and self._asked.get(mad["tid"]) == src:
            del self._asked[mad["tid"]]
            self.counters["answers"] += 1
            count = min(mad["qp_count"], SAN_MAD_QPN_SLOTS)
            self.found[src] = Found(src, mad["node_desc"].rstrip(b"\0").decode(errors="replace"),
                                    mad["guid"], mad["ports"], tuple(mad["qpns"][:count]))
            return []
        self.counters["unexpected"] += 1
        return []

    def _post_recv(self, slot: int) -> None:
        # (a UD QP's post_recv sends nothing)
        self.qp.post_recv(RecvWR(slot, (SGE(self.buf + slot * SAN_MAD_LEN, SAN_MAD_LEN),)))

    def _send(self, peer: str, qpn: int, mad: bytes, now: float) -> list[tuple[str, Packet]]:
        at = self.buf + self.depth * SAN_MAD_LEN
        self.pd.write(at, mad)
        return self.qp.post_datagram(UdSendWR(next(self._wr_ids), (SGE(at, len(mad)),), peer,
                                              qpn, GSI_QKEY), now)
