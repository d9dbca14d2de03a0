# SPDX-License-Identifier: GPL-2.0-or-later
"""The host driver module on the SAN: what the SAN NIC 328 delivers to the Remote Transport
and sends for it (L188 "through the SAN network interface card"), and the Connection
Manager's management channel (L198, D1.5). An application of the host's ``SanicCore``
(``san.node.App``), sans-IO like it.

**Messages.** A SEND on a service connection's message QP is an I2O frame: it goes to
``rt.receive_handler`` (Fig. 5) and every ``Send`` the RT returns (Fig. 6, 660) goes out the
same QP as a SEND.

**Data by RDMA (check 13; 003 L406).** A BlockWrite or BlockRead from the SAN must have one
remote SGL element (0x34: count, the remote's virtual address, its RKey) of at most
``MAX_TRANSFER`` bytes -- any other SGL would name host memory, and is refused
ERROR_NO_DATA_TRANSFER / BSA ACCESS_ERROR. Its data moves under that key on the
connection's data QP, through a bounce slot of host memory: the element becomes a
simple one naming the slot, so the IOP's DMA reaches it (``HostSanMemory``); the remote
element rides in the callback object (``Staged``) to the reply. A write's data is RDMA READ
into the slot before the frame is delivered -- the message is complete only with its data,
so the direct call runs from the READ's completion; a read's data is RDMA WRITTEN from the
slot when the IOP's reply comes out, and the reply follows once the WRITE is acknowledged
(the two QPs are not ordered with each other). A refused RDMA (a wrong or spent key) answers
the request ERROR_NO_DATA_TRANSFER / BSA ACCESS_ERROR without the IOP -- no device byte
changes -- and the data QP, in ERROR at both ends, is reset and connected again; the remote
resets its end when that reply reaches it.

**The management channel.** A remote's HELLO is answered with CM_ADVERTISE, sent again to
every remote that said HELLO whenever the set of available IOPs changes (check 12);
CM_CONNECT and CM_DISCONNECT are the CM's ``connect`` / ``disconnect``. A frame that is no
CM message gets the FAIL-flag reply.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from ftsslab.fast import i2o as fast
from ftsslab.san.node import APP_WR, SanicCore
from ftsslab.san.qp import QpState, Wc, WcStatus, WrOpcode
from ftsslab.san.verbs import SGE, SendWR

from .bus import HostMemory
from .connection_manager import Advertise, ConnectStatus
from .frames import BSA_DSC_ACCESS_ERROR, error_reply, failure_reply, parse_request
from .host import HostDriverModule
from .remote_transport import Send
from .san_layout import MAX_TRANSFER, Layout

CM_STATUS = {ConnectStatus.CONNECTED: fast.CM_OK, ConnectStatus.NO_SUCH_IOP: fast.CM_NO_SUCH_IOP,
             ConnectStatus.IOP_UNAVAILABLE: fast.CM_IOP_UNAVAILABLE,
             ConnectStatus.CONNECTION_IN_USE: fast.CM_CONNECTION_IN_USE,
             ConnectStatus.REFUSED: fast.CM_REFUSED,
             ConnectStatus.NOT_STARTED: fast.CM_NOT_STARTED}
_RW = (fast.I2O_BSA_BLOCK_READ, fast.I2O_BSA_BLOCK_WRITE)


class HostSanMemory(HostMemory):
    """The host memory IOPs DMA into: the bounce slots, in the SAN endnode's memory (the
    driver process's addresses), so RDMA and DMA meet in the same bytes."""

    def __init__(self, san: SanicCore, process: str, base: int, size: int) -> None:
        self.san, self.process = san, process
        self.base, self.size = base, size

    def load(self, address: int, n: int) -> bytes:
        return self.san.load(self.process, address, n)

    def store(self, address: int, data: bytes) -> None:
        self.san.store(self.process, address, data)


class Service(NamedTuple):
    """One service connection's QPs (``san_layout``)."""

    remote: str
    iop: str
    iop_id: int
    msg: str
    data: str
    conn_id: int  # the message QP's number


@dataclass(eq=False)
class Staged:
    """A request's data on the move: the remote buffer and the bounce slot it goes through."""

    service: Service
    slot: int
    ea: int
    va: int
    rkey: int
    length: int
    read: bool  # a BlockRead: the data goes out after the IOP
    frame: bytes = b""  # the frame as the remote sent it (for an error reply)


def remote_element(out: dict) -> dict | None:
    """The one remote SGL element of a BlockRead/BlockWrite, if that is its SGL."""
    sgl = [e for e in out.get("sgl", ()) if e["layer"] != "I2OSGEAttributes"]
    return sgl[0] if len(sgl) == 1 and sgl[0]["layer"] == "I2OSGERemote" else None


class HostSanPort:
    def __init__(self, san: SanicCore, module: HostDriverModule, layout: Layout,
                 services: list[Service], *, process: str,
                 service_bus: Callable[[], None]) -> None:
        self.san, self.module, self.layout, self.process = san, module, layout, process
        self._service_bus = service_bus  # the IOPs take what was posted (now, or later)
        self._by_msg = {s.msg: s for s in services}
        self._by_id = {s.conn_id: s for s in services}
        self._by_key = {(s.remote, s.iop_id): s for s in services}
        self._cm = {q: peer for q, (peer, remote, _) in layout.qps.items() if remote == "cm"}
        self.qps = frozenset([*self._by_msg, *self._cm])
        self._helloed: set[str] = set()
        self._free = deque(range(layout.slots))
        self._waiting: deque[tuple[Service, bytes, dict]] = deque()  # for a bounce slot
        self._moving: dict[int, Staged] = {}  # RDMA wr_id -> what it moves
        self._held: dict[int, bytes] = {}  # RDMA WRITE wr_id -> the reply waiting for it
        self._quarantine: list[Staged] = []
        self._wr = 0
        self.counters = {"requests": 0, "replies": 0, "rdma_read": 0, "rdma_write": 0,
                         "rdma_refused": 0, "data_qp_resets": 0, "cm_messages": 0,
                         "cm_malformed": 0, "refused_sgl": 0}

    # ---- san.node.App ------------------------------------------------------------------
    def received(self, qp: str, data: bytes) -> None:
        if qp in self._cm:
            self._management(self._cm[qp], qp, data)
            return
        service = self._by_msg[qp]
        self.counters["requests"] += 1
        out = fast.parse_i2o(data)
        rw = out is not None and out["function"] in _RW and "sgl" in out
        element = remote_element(out) if rw else None
        if not rw:
            self._deliver(service, data, None)
        elif element is None or element["count"] > MAX_TRANSFER or \
                element["count"] != out["byte_count"]:
            # from the SAN, data moves only by RDMA under the remote's key: an SGL naming host
            # memory (the bounce slots, other remotes' data) is refused, as one too long
            self.counters["refused_sgl"] += 1
            request = parse_request(data)
            self._send(service.msg, error_reply(request, BSA_DSC_ACCESS_ERROR)
                       if request is not None else failure_reply(data))
        else:
            self._waiting.append((service, data, out))
            self._stage()

    def completed(self, qp: str, wc: Wc) -> None:
        staged = self._moving.pop(wc.wr_id, None)
        if staged is None:
            return  # a SEND's completion
        ok = wc.status is WcStatus.SUCCESS
        if not ok:
            self.counters["rdma_refused"] += wc.status is not WcStatus.WR_FLUSH_ERR
            self._recover(staged.service)
        if staged.read:
            reply = self._held.pop(wc.wr_id)
            self._release(staged)
            self._send(staged.service.msg, reply if ok else self._refused(staged))
        elif ok:
            self._deliver(staged.service, self._to_slot(staged), staged)
        else:
            self._release(staged)
            self._send(staged.service.msg, self._refused(staged))

    # ---- the data path -----------------------------------------------------------------
    def _stage(self) -> None:
        """Give waiting requests their bounce slots: a write's data is fetched, a read goes
        straight to the RT."""
        while self._waiting and self._free:
            service, frame, out = self._waiting.popleft()
            element = remote_element(out)
            slot = self._free.popleft()
            staged = Staged(service, slot, self.layout.slot(slot), element["virtual_address"],
                            element["rkey"], element["count"],
                            out["function"] == fast.I2O_BSA_BLOCK_READ, frame)
            if staged.read:
                self._deliver(service, self._to_slot(staged), staged)
            else:
                self.counters["rdma_read"] += 1
                self._rdma(staged, WrOpcode.RDMA_READ)

    def _rdma(self, staged: Staged, opcode: WrOpcode) -> int:
        self._wr += 1
        wr_id = APP_WR << 32 | self._wr
        self._moving[wr_id] = staged
        self.san.post(staged.service.data, SendWR(
            wr_id, opcode, (SGE(staged.ea, staged.length),), remote_addr=staged.va,
            rkey=staged.rkey))
        return wr_id

    def _to_slot(self, staged: Staged) -> bytes:
        """The frame with its remote element replaced by a simple one naming the slot."""
        frame = staged.frame
        out = fast.parse_i2o(frame)
        return fast.build_block_rw(
            out["function"], [fast.sge_simple(staged.length, staged.ea)], out["byte_address"],
            byte_count=staged.length, control_flags=out["control_flags"],
            time_multiplier=out["time_multiplier"],
            fetch_ahead=out.get("fetch_ahead", out.get("reserved", 0)),
            target_tid=out["target_tid"], initiator_tid=out["initiator_tid"],
            initiator_context=out["initiator_context"],
            transaction_context=out["transaction_context"], msg_flags=out["msg_flags"])

    def _refused(self, staged: Staged) -> bytes:
        request = parse_request(staged.frame)
        assert request is not None  # it was parsed to be staged
        return error_reply(request, BSA_DSC_ACCESS_ERROR)

    def _release(self, staged: Staged) -> None:
        self._free.append(staged.slot)
        self._stage()

    def _recover(self, service: Service) -> None:
        if self.san.qps[service.data].state is QpState.ERROR:
            self.counters["data_qp_resets"] += 1
            self.san.reconnect(service.data)

    def _deliver(self, service: Service, frame: bytes, staged: Staged | None) -> None:
        """Fig. 5: the frame, complete, to the RT's receive handler (510)."""
        self.act(self.module.rt.receive_handler(service.conn_id, frame, staged))
        self._service_bus()

    def act(self, actions: list[Any]) -> None:
        """What the host driver module wants done: replies (Fig. 6, 660), advertisements."""
        for a in actions:
            if isinstance(a, Send):
                self._reply(a)
            elif isinstance(a, Advertise):
                for remote in sorted(self._helloed):
                    self._advertise(remote)

    def _reply(self, send: Send) -> None:
        staged: Staged | None = send.staged
        service = self._by_id.get(send.conn_id)
        if service is None:
            return
        self.counters["replies"] += 1
        if staged is None:
            self._send(service.msg, send.frame)
            return
        reply = fast.parse_i2o(send.frame)
        if staged.read and reply is not None and reply.get("req_status") == 0:
            self.counters["rdma_write"] += 1
            self._held[self._rdma(staged, WrOpcode.RDMA_WRITE)] = send.frame
            return
        self._release(staged)
        self._send(service.msg, send.frame)

    def aborted(self, callbacks: list) -> None:
        """Callback objects the RT freed with their connection: their slots come back once
        the IOPs have worked off what was posted (``serviced``) -- until then an IOP may
        still DMA into them for a request nobody waits for."""
        self._quarantine += [cb.staged for cb in callbacks if cb.staged is not None]

    def serviced(self) -> None:
        """The IOPs took everything posted so far: the quarantined slots are free."""
        done, self._quarantine = self._quarantine, []
        for staged in done:
            self._release(staged)

    def _send(self, qp: str, frame: bytes) -> None:
        self.san.store(self.process, self.layout.scratch, frame)
        self.san.post(qp, SendWR(APP_WR << 32, WrOpcode.SEND,
                                 (SGE(self.layout.scratch, len(frame)),)))

    # ---- the management channel (D1.5) -------------------------------------------------
    def _management(self, remote: str, qp: str, data: bytes) -> None:
        msg = fast.parse_cm(data)
        if msg is None or msg["reply"]:
            self.counters["cm_malformed"] += 1
            self._send(qp, failure_reply(data))
            return
        self.counters["cm_messages"] += 1
        contexts = {"initiator_context": msg["initiator_context"],
                    "transaction_context": msg["transaction_context"]}
        x = msg["xfunction"]
        if x == fast.CM_HELLO:
            self._helloed.add(remote)
            self._advertise(remote)
        elif x == fast.CM_CONNECT:
            service = self._by_key.get((remote, msg["iop_id"]))
            reply = self.module.cm.connect(remote, msg["iop_id"],
                                           service.conn_id if service else 0)
            if reply.status is ConnectStatus.CONNECTED and \
                    self.san.qps[service.data].state is QpState.ERROR:
                self._recover(service)
            ok = service is not None and reply.status is ConnectStatus.CONNECTED
            self._send(qp, fast.build_cm(fast.CM_CONNECT, {
                "status": CM_STATUS[reply.status], "conn_id": service.conn_id if ok else 0,
                "message_qpn": service.conn_id if ok else 0,
                "data_qpn": self.san.qps[service.data].qp_num if ok else 0},
                reply=True, **contexts))
        elif x == fast.CM_DISCONNECT:
            service = self._by_id.get(msg["conn_id"])
            known = service is not None and service.remote == remote and \
                self.module.rt.connection(service.conn_id) is not None
            if known:
                self.aborted(self.module.cm.disconnect(service.conn_id))
            self._send(qp, fast.build_cm(fast.CM_DISCONNECT, {
                "status": fast.CM_OK if known else fast.CM_UNKNOWN_CONNECTION},
                reply=True, **contexts))
        else:
            self.counters["cm_malformed"] += 1
            self._send(qp, failure_reply(data))

    def _advertise(self, remote: str) -> None:
        iops = [{"iop_id": a.iop_id, "devices": [
            {"tid": d.tid, "block_size": d.block_size, "capacity": d.capacity}
            for d in a.devices]} for a in self.module.cm.advertisement(remote)]
        qp = next(q for q, r in self._cm.items() if r == remote)
        self._send(qp, fast.build_cm(fast.CM_ADVERTISE, {"host": self.san.name, "iops": iops}))
