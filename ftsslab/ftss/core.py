"""The FTSS node (seed 000 Fig. 6) as a sans-IO core: flowcharts 150 (Figs. 7A/7B) and 180 (Fig. 8).

``FtssCore`` takes frames from its fabric ports (FCoE, one or more per server: fabric
A and B) and its external port (plain Ethernet), plus durability and timer events,
and returns ``Transmit``/``Persist``/``Forget`` actions. Its parts follow Fig. 6:

- link unit 136 (``_link_unit``): checks the FC/FTSS framing, answers bad input with
  ACK REJECTED, and splits the stream by opcode class: network packets to routing
  agent 144, file I/O to file operations unit 138;
- routing agent 144 with routing table 146 (``Route``): inner destination MAC ->
  node, its fabric ports, its state; filled by HELLO and by ``add_route``;
- write cache 140 / RAID 142 are the driver's store: the agent emits ``Persist`` at
  block 154 and decides nothing before ``on_durable``;
- file operations unit 138 with per-node spool "directories" (records keyed by
  (node, name)); writes to ``out/`` are packets the agent routes (claims 6, 13, 21, 30).

A stored packet (``Stored``) is committed, then routed to its destinations' lanes
(``delivery.Outbox``: in store order per node, one fabric port at a time, the other
after a timeout or a link failure, parked while the node cannot receive), and
retained after delivery (claims 5, 20, 29) by age and FIFO capacity.

Bad input is answered or counted; an exception out of this module is a bug.
"""

from __future__ import annotations

import heapq
import struct
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple

from ftsslab.fast import ftss as wire
from ftsslab.fast.fc import Fcoe, decode_fcoe

from .actions import (
    DELIVERED_REC,
    FC_FCTL_ANSWER,
    FILE_REC,
    FTSS_ACK_DELIVERED,
    FTSS_ACK_REJECTED,
    FTSS_ACK_STORED_BEST_EFFORT,
    FTSS_ACK_STORED_GUARANTEED,
    FTSS_ACK_UNDELIVERABLE,
    FTSS_FC_ID,
    FTSS_FILE_BAD_REQUEST,
    FTSS_FILE_DENIED,
    FTSS_FILE_EXISTS,
    FTSS_FILE_NO_SPACE,
    FTSS_FILE_NOT_FOUND,
    FTSS_FILE_OK,
    FTSS_FLAG_ALTPATH,
    FTSS_NODE_DOWN,
    FTSS_NODE_UP,
    FTSS_PKT_BROADCAST,
    FTSS_PKT_EXTERNAL,
    FTSS_PKT_RETRANSMIT,
    FTSS_PKT_ROLLBACK,
    FTSS_REASON_BAD_LENGTH,
    FTSS_REASON_BAD_VERSION,
    FTSS_REASON_DEST_DOWN,
    FTSS_REASON_DEST_UNKNOWN,
    FTSS_REASON_MALFORMED,
    FTSS_REASON_NONE,
    FTSS_REASON_OVERSIZE,
    FTSS_REASON_STORE_FULL,
    FTSS_REASON_UNKNOWN_OPCODE,
    FTSS_VERSION,
    FTSS_WRITE_TRUNCATE,
    ORIGIN_EXTERNAL,
    ORIGIN_FABRIC,
    PKT_REC,
    REC_DELIVERED,
    REC_FILE,
    REC_PKT,
    REPLAY_FILE,
    SPOOL_IN,
    SPOOL_OUT,
    TIME_EPS,
    Forget,
    Persist,
    Transmit,
    is_group,
)
from .delivery import RETRY, WINDOW, Delivery, Lane, LaneEvent, Outbox, Rto
from .packet import PacketEvent, PacketState, Stored

HELLO_RESTART_SEQ = 1  # a unit's HELLOs carry seq 1 until it is in sync after a (re)start
DEDUPE_MEMORY = 65536  # (source node, msg id) pairs remembered after their record is gone
MAX_FILE = 64 << 10  # bytes a spool file may hold (a packet file is one frame)
FILE_OPS = frozenset({wire.FTSS_OP_WRITE, wire.FTSS_OP_READ, wire.FTSS_OP_LIST,
                      wire.FTSS_OP_DELETE})


class Peer(NamedTuple):
    """Where a request came from, so its answer goes back there (the FC fields it needs)."""

    src: str  # its MAC
    s_id: int
    ox_id: int


class Timer(Enum):
    LANE = "lane"  # key: node id -- its oldest delivery in flight is due
    EXPIRE = "expire"  # key: node id -- its HELLO hold time ends
    RETAIN = "retain"  # key: record id -- a retained packet's time is up
    REROUTE = "reroute"  # after recovery: route what the store gave back


@dataclass
class Route:
    """One node in routing table 146 (block 156: "port number ..., status information")."""

    node_id: int
    macs: set[str]
    ports: dict[str, str]  # fabric port -> the node's FCoE MAC there; first = fabric A
    fc_id: int
    state: int = FTSS_NODE_UP
    expires: float | None = None  # None: static (configured), never expires
    files: bool = False  # reads its packets from in/ (file-I/O embodiment)


@dataclass
class SpoolFile:
    rid: int
    data: bytes
    durable: bool = False


class FtssCore:
    """FTSS 92: routing agent 144, link unit 136 and file operations unit 138 (sans-IO)."""

    def __init__(
        self,
        node_id: int,
        fabric_ports: dict[str, str],
        *,
        external_port: str | None = None,
        external_macs: Iterable[str] = (),
        echo_external: bool = False,
        fc_id: int = FTSS_FC_ID,
        retry: float = RETRY,
        window: int = WINDOW,
        retain: float = 0.0,
        retain_max: int = 1024,
        capacity: int = 100_000,
        capacity_bytes: int = 1 << 30,
        max_file: int = MAX_FILE,
        max_frame: int = 9018,
    ):
        """``fabric_ports``: port name -> this node's MAC on it; ``external_port`` (148):
        where unknown and ``external_macs`` destinations go; ``retry``: the first
        retransmission timeout (it adapts to the measured round trip); ``window``:
        unacknowledged deliveries per node; ``retain``: seconds a delivered packet stays
        queued when its PKT asks for none; ``capacity``/``capacity_bytes``: records and
        payload bytes the store may hold (more are REJECTED STORE_FULL); ``max_file``: bytes
        one spool file may hold."""
        self.node_id = node_id
        self.ports = dict(fabric_ports)
        self.external_port = external_port
        self.external_macs = {m.lower() for m in external_macs}
        self.echo_external = echo_external
        self.fc_id = fc_id
        self.retry = retry
        self.window = window
        self.retain = retain
        self.retain_max = retain_max
        self.capacity = capacity
        self.capacity_bytes = capacity_bytes
        self.max_file = max_file
        self.max_frame = max_frame
        self.port_up = dict.fromkeys(self.ports, True)
        self.routes: dict[int, Route] = {}
        self.mac_node: dict[str, int] = {}  # inner MAC -> the node serving it (its index)
        self.port_node: dict[str, int] = {}
        self.lanes: dict[int, Outbox] = {}
        self._heads: dict[tuple[str, str], wire.FrameHead] = {}  # (port, peer MAC) ->
        self.stored: dict[int, Stored] = {}  # record id -> packet
        self.by_msg: dict[tuple[int, int], int] = {}  # (src node, msg id) -> record id
        self.done: OrderedDict[tuple[int, int], tuple[int, int]] = OrderedDict()  # -> last ack
        self.retained: deque[int] = deque()  # record ids, oldest delivery first
        self.files: dict[tuple[int, bytes], SpoolFile] = {}
        self.file_waiters: dict[int, tuple] = {}  # file record id -> the write to answer
        self.records = 0  # records the store holds (Persist minus Forget)
        self.bytes = 0  # their payload bytes
        self._sizes: dict[int, int] = {}  # record id -> payload bytes
        self.stats: dict[str, int] = {}
        self.decisions: OrderedDict[tuple[int, int], dict] = OrderedDict()  # see report()
        self._next_rid = 1
        self._next_ox = 1
        self._next_ext_msg = 1
        self._ox: dict[int, tuple[int, int]] = {}  # ox id -> (record id, node id)
        self._timers: list[tuple[float, int, Timer, int]] = []
        # (record id, fresh) waiting for routing table 146 after recovery, in store order
        self._unrouted: list[tuple[int, bool]] = []
        self._recovering = False  # from recover() until the grace for HELLOs is over
        self._seq = 0
        self._held: list[Stored] | None = None  # acks held for merging (on_durable_batch)
        self._dirty: dict[int, Outbox] | None = None  # lanes it flows once, at its end

    # ---- configuration and state --------------------------------------------------------

    def add_route(
        self, node_id: int, macs: Iterable[str], ports: dict[str, str], *, fc_id: int | None = None
    ) -> None:
        """A static routing table entry (never expires)."""
        route = self._route(node_id, (fc_id if fc_id is not None else node_id) & 0xFFFFFF)
        route.macs |= {m.lower() for m in macs}
        self.mac_node.update(dict.fromkeys(route.macs, node_id))
        route.ports.update(ports)
        for port in ports:
            self.port_node[port] = node_id

    def able(self, node_id: int) -> bool:
        """Decision blocks 168/186: the node is known, UP and reachable on a fabric port."""
        route = self.routes.get(node_id)
        if route is None or route.state != FTSS_NODE_UP:
            return False
        port_up = self.port_up
        for p in route.ports:  # a loop, not any(): this runs for every packet
            if port_up.get(p, False):
                return True
        return False

    def set_port(self, port: str, up: bool) -> None:
        if port in self.port_up:
            self.port_up[port] = up

    def on_port(self, port: str, up: bool, now: float) -> list:
        """A fabric link went down/up. Down: the lane that used it goes back N on the
        other port at once (or parks). Up: parked lanes resume."""
        if port not in self.port_up or self.port_up[port] == up:
            return []
        self.port_up[port] = up
        if up:
            return self._resume(now)
        out: list = []
        node = self.port_node.get(port)
        lane = self.lanes.get(node) if node is not None else None
        if lane is not None and lane.port == port and lane.state is not Lane.SPOOLED:
            lane.port = None  # what was in flight there is lost: go back N on the other port
            lane.requeue()
            out += self._kick(lane, now)
        return out

    def lookup(self, mac: str) -> int | None:
        """Block 156: the node serving inner destination ``mac``."""
        return self.mac_node.get(mac)

    def report(self) -> dict:
        """What the FTSS decided, per message (the backends compare these): for each
        (source node, msg id), the ACK status, and per destination node the fabric
        (A = 0, B = 1) its DELIVERED acknowledgment came back on, and whether it was
        retained afterwards."""
        return {
            "stats": dict(self.stats),
            "lanes": {str(n): lane.report() for n, lane in sorted(self.lanes.items())},
            "decisions": [{"src": k[0], "msg": k[1], **v} for k, v in self.decisions.items()],
        }

    def _decision(self, pkt: Stored) -> dict | None:
        """The ``report()`` entry of a packet from the fabric (None for an external one)."""
        if pkt.origin != ORIGIN_FABRIC:
            return None
        key = (pkt.src_node, pkt.msg_id)
        entry = self.decisions.get(key)
        if entry is None:
            entry = self.decisions[key] = {"ack": None, "delivered": {}, "retained": False}
            if len(self.decisions) > DEDUPE_MEMORY:
                self.decisions.popitem(last=False)
        return entry

    def _route(self, node_id: int, fc_id: int) -> Route:
        route = self.routes.get(node_id)
        if route is None:
            route = self.routes[node_id] = Route(node_id, set(), {}, fc_id)
        return route

    def _lane(self, node: int) -> Outbox:
        lane = self.lanes.get(node)
        if lane is None:
            lane = self.lanes[node] = Outbox(node, Rto(self.retry))
        return lane

    def _count(self, what: str) -> None:
        self.stats[what] = self.stats.get(what, 0) + 1

    def _rid(self) -> int:
        rid = self._next_rid
        self._next_rid += 1
        return rid

    def _room(self, size: int) -> bool:
        return self.records < self.capacity and self.bytes + size <= self.capacity_bytes

    def _persist(self, kind: int, payload: bytes) -> Persist:
        rec = Persist(self._rid(), kind, payload)
        self.records += 1
        self.bytes += len(payload)
        self._sizes[rec.record_id] = len(payload)
        return rec

    def _forget(self, rid: int | None, out: list) -> None:
        if rid is not None:
            self._release(rid)
            out.append(Forget(rid))

    def _release(self, rid: int) -> None:
        self.records -= 1
        self.bytes -= self._sizes.pop(rid, 0)

    def _timer(self, when: float, kind: Timer, key: int = 0) -> None:
        heapq.heappush(self._timers, (when, self._seq, kind, key))
        self._seq += 1

    # ---- frames -------------------------------------------------------------------------

    def on_frame(self, port: str, frame: bytes, now: float) -> list:
        """A frame arrived on a fabric port or the external port."""
        if port == self.external_port:
            return self._external(bytes(frame), now)
        if port in self.ports:
            return self._link_unit(port, bytes(frame), now)
        self._count("unknown_port")
        return []

    def _head(self, port: str, dst: str) -> wire.FrameHead:
        """The Ether/FCoE header of our frames to ``dst`` on ``port``, made once."""
        head = self._heads.get((port, dst))
        if head is None:
            head = self._heads[(port, dst)] = wire.FrameHead(dst, self.ports[port])
        return head

    def _answer(self, port: str, req: Peer | Fcoe, message: bytes) -> Transmit:
        """An FTSS message back to where ``req`` came from."""
        return Transmit(port, self._head(port, req.src).frame(
            message, req.s_id, self.fc_id, req.ox_id, FC_FCTL_ANSWER))

    def _reject(self, port: str, fc: Peer | Fcoe, msg_id: int, reason: int) -> list:
        self._count(f"rejected_{reason}")
        return [self._answer(port, fc, wire.build_ack(msg_id, self.node_id, FTSS_ACK_REJECTED,
                                                      reason))]

    def _link_unit(self, port: str, frame: bytes, now: float) -> list:
        """Link unit 136: framing checks, then split by opcode class (Fig. 6)."""
        fc = decode_fcoe(frame)
        if fc is None:
            self._count("malformed")
            if len(frame) < 14:
                return []
            fc = Peer(frame[6:12].hex(":"), 0, 0)
            return self._reject(port, fc, 0, FTSS_REASON_MALFORMED)
        payload = fc.payload
        if fc.type != wire.FTSS_FC_TYPE or not fc.crc_ok or len(payload) < 4:
            return self._reject(port, fc, 0, FTSS_REASON_MALFORMED)
        if payload[0] >> 4 != FTSS_VERSION:
            return self._reject(port, fc, 0, FTSS_REASON_BAD_VERSION)
        length = int.from_bytes(payload[2:4], "big")
        if length < 4 or length > len(payload) or len(payload) - length > 3:
            return self._reject(port, fc, 0, FTSS_REASON_BAD_LENGTH)
        msg = wire.decode(payload)
        if msg is None:
            return self._reject(port, fc, 0, FTSS_REASON_MALFORMED)
        op, body = msg.opcode, msg.body
        if op in FILE_OPS:
            return self._file_unit(port, fc, op, body, now)
        if op == wire.FTSS_OP_PKT:
            return self._fabric_pkt(port, fc, body, now)
        if op == wire.FTSS_OP_ACK:
            return self._ack(port, fc, body, now)
        if op == wire.FTSS_OP_HELLO:
            return self._hello(port, fc, body, now)
        return self._reject(port, fc, 0, FTSS_REASON_UNKNOWN_OPCODE)

    # ---- routing table 146 --------------------------------------------------------------

    def _hello(self, port: str, fc: Fcoe, msg: wire.Hello, now: float) -> list:
        """A node registers (node id, MACs, state) on a fabric port; STATUS answers it."""
        node_id = msg.node_id
        old = self.port_node.get(port)
        if old is not None and old != node_id and old in self.routes:
            self.routes[old].ports.pop(port, None)
        route = self._route(node_id, fc.s_id)
        route.fc_id = fc.s_id
        route.ports[port] = fc.src
        self.port_node[port] = node_id
        macs = {m.lower() for m in msg.macs}
        for other in self.routes.values():
            if other is not route:
                other.macs -= macs  # a MAC served by one node only: the newest HELLO wins
        route.macs |= macs
        self.mac_node.update(dict.fromkeys(macs, node_id))
        route.state = msg.state
        route.expires = now + msg.hold_time if msg.hold_time else None
        if route.expires is not None:
            self._timer(route.expires, Timer.EXPIRE, node_id)
        self._count("hello")
        status = wire.build_status(node_id, msg.seq, sorted(route.macs), state=route.state,
                                   port=msg.port, hold_time=msg.hold_time)
        out = [self._answer(port, fc, status)]
        lane = self.lanes.get(node_id)
        if lane is not None and self.able(node_id):
            if msg.seq == HELLO_RESTART_SEQ:  # a new unit: what was in flight is lost
                lane.fire(LaneEvent.RESTARTED)
                self._count("node_restarted")
            if lane.state is Lane.PROBING:  # the node speaks: probe it now, not after a back-off
                lane.rto.reset_backoff()
                out += self._probe(lane, now)
        return out + self._resume(now)

    def _expire(self, node_id: int, now: float) -> None:
        route = self.routes.get(node_id)
        if route is not None and route.expires is not None and route.expires <= now:
            route.state = FTSS_NODE_DOWN
            self._count("hold_expired")

    # ---- flowchart 150: packets from the fabric (Figs. 7A/7B) ----------------------------

    def _fabric_pkt(self, port: str, fc: Fcoe, msg: wire.Pkt, now: float) -> list:
        """Block 152: receive; block 154: commit (the ACK waits for ``on_durable``)."""
        key = (msg.src_node, msg.msg_id)
        frame = bytes(msg.payload)
        if len(frame) < 14:
            return self._reject(port, fc, key[1], FTSS_REASON_MALFORMED)
        if len(frame) > self.max_frame:
            return self._reject(port, fc, key[1], FTSS_REASON_OVERSIZE)
        reply = (port, fc.src, fc.s_id, fc.ox_id)
        again = self._again(key, reply)
        if again is not None:  # a retransmit of a packet we hold: exactly once, same answer
            return again
        if not self._room(PKT_REC.size + len(frame)):
            return self._reject(port, fc, key[1], FTSS_REASON_STORE_FULL)
        flags = msg.pkt_flags & ~(FTSS_PKT_RETRANSMIT | FTSS_PKT_ROLLBACK)
        return self._store(key, flags, msg.retention, ORIGIN_FABRIC, frame, now, reply)

    def _again(self, key: tuple[int, int], reply: tuple) -> list | None:
        """The answer to a packet seen before (held or settled), or None for a new one."""
        rid = self.by_msg.get(key)
        if rid is not None:
            self._count("duplicate")
            pkt = self.stored[rid]
            pkt.reply = reply
            return [self._ack_to(pkt)] if pkt.ack is not None else []
        if key in self.done:
            self._count("duplicate")
            status, reason = self.done[key]
            fc = Peer(reply[1], reply[2], reply[3])
            return [self._answer(reply[0], fc, wire.build_ack(key[1], self.node_id, status,
                                                              reason))]
        return None

    def _store(self, key, flags, retention, origin, frame, now, reply) -> list:
        rec = self._persist(REC_PKT, PKT_REC.pack(key[0], key[1], flags, retention, origin, now)
                            + frame)
        pkt = Stored(rec.record_id, key[0], key[1], flags, retention, origin, now, frame,
                     reply=reply)
        self.stored[pkt.rid] = pkt
        self.by_msg[key] = pkt.rid
        self._count("stored")
        return [rec]

    def on_durable(self, record_id: int, now: float) -> list:
        """The store's fsync covered ``record_id``: now the packet may be acknowledged."""
        pkt = self.stored.get(record_id)
        if pkt is not None and pkt.state is PacketState.COMMITTING:
            pkt.fire(PacketEvent.DURABLE)
            if self._recovering:  # routed after what the store gave back, in order
                self._unrouted.append((pkt.rid, True))
                return []
            return self._route_pkt(pkt, now, fresh=True)
        return self._file_durable(record_id, now)

    def on_durable_batch(self, record_ids: Iterable[int], now: float) -> list:
        """A group commit: ``on_durable`` of each record in order, with the acknowledgments
        it gives a unit for consecutive msg ids with one verdict as one ACK (``more``, FC's
        ACK_N), before the deliveries (block 174, then 176)."""
        out: list = []
        self._held, self._dirty = [], {}
        try:
            for rid in record_ids:
                out += self.on_durable(rid, now)
        finally:
            held, self._held = self._held, None
            dirty, self._dirty = self._dirty, None
        for lane in dirty.values():  # each lane flows once, with the whole commit queued
            out += self._flow(lane, now)
        return self._merged_acks(held) + out if held else out

    def _merged_acks(self, held: list[Stored]) -> list[Transmit]:
        runs = wire.ack_runs(held, lambda p: (p.reply[:3], p.ack, p.src_node), lambda p: p.msg_id)
        return [self._ack_to(pkt, more=more) for pkt, more in runs]

    def on_persist_failed(self, record_id: int, now: float) -> list:
        """The store could not take the record (full, I/O error): REJECTED STORE_FULL."""
        self._release(record_id)
        pkt = self.stored.pop(record_id, None)
        if pkt is not None:
            pkt.fire(PacketEvent.FAILED)
            self.by_msg.pop((pkt.src_node, pkt.msg_id), None)
            self._count(f"rejected_{FTSS_REASON_STORE_FULL}")
            if pkt.reply is not None:
                pkt.ack = (FTSS_ACK_REJECTED, FTSS_REASON_STORE_FULL)
                return [self._ack_to(pkt)]
            return []
        waiter = self.file_waiters.pop(record_id, None)
        if waiter is None:
            return []
        port, fc, req, key, _ = waiter
        if self.files.get(key) is not None and self.files[key].rid == record_id:
            del self.files[key]
        return self._respond(port, fc, req, FTSS_FILE_NO_SPACE)

    def _ack_to(self, pkt: Stored, more: int = 0) -> Transmit:
        port, mac, fc_id, ox_id = pkt.reply
        status, reason = pkt.ack
        msg = wire.build_ack(pkt.msg_id, self.node_id, status, reason, more=more)
        fc = Peer(mac, fc_id, ox_id)
        return self._answer(port, fc, msg)

    def _acknowledge(self, pkt: Stored, status: int, reason: int, out: list) -> None:
        pkt.ack = (status, reason)
        self._count(f"ack_{status}")
        entry = self._decision(pkt)
        if entry is not None:
            entry["ack"] = status
        if pkt.reply is not None and pkt.origin == ORIGIN_FABRIC and pkt.reply[0] in self.ports:
            if self._held is not None:  # a group commit's: merged by on_durable_batch
                self._held.append(pkt)
            else:
                out.append(self._ack_to(pkt))

    def _route_pkt(self, pkt: Stored, now: float, *, fresh: bool) -> list:
        """Blocks 156/158 (and 184/186 for external frames): where does it go?

        ``fresh``: just stored. A recovered packet (not fresh) may already be
        guaranteed, so it waits for its node instead of becoming undeliverable; its
        verdict is sent only to a source that asks again (reply is None until then).
        """
        out: list = []
        dst = pkt.frame[0:6].hex(":")
        external = False
        if pkt.origin == ORIGIN_EXTERNAL:
            dests = self._fabric_dests(pkt, dst, exclude=None)
            pkt.pkt_flags |= FTSS_PKT_EXTERNAL
            if not dests:  # block 186 NO -> block 188: delete
                self._count("external_dropped")
                self._finish(pkt, now, out)
                return out
        elif is_group(dst) or pkt.pkt_flags & FTSS_PKT_BROADCAST:
            # block 158: a broadcast takes both the FTSS and the EXTERNAL branch
            dests = self._fabric_dests(pkt, dst, exclude=pkt.src_node)
            external = self.external_port is not None
            status = (FTSS_ACK_STORED_GUARANTEED if dests else
                      FTSS_ACK_STORED_BEST_EFFORT if external else FTSS_ACK_UNDELIVERABLE)
            reason = FTSS_REASON_NONE if dests or external else FTSS_REASON_DEST_UNKNOWN
            self._acknowledge(pkt, status, reason, out)
        else:
            node = None if dst in self.external_macs else self.lookup(dst)
            if node is None:
                if self.external_port is None:  # nowhere to send it: block 170
                    self._acknowledge(pkt, FTSS_ACK_UNDELIVERABLE, FTSS_REASON_DEST_UNKNOWN, out)
                    self._finish(pkt, now, out)
                    return out
                external = True  # "EXTERNAL" branch: block 160 then 164
                dests = []
                self._acknowledge(pkt, FTSS_ACK_STORED_BEST_EFFORT, FTSS_REASON_NONE, out)
            elif fresh and not self.able(node):  # block 168 NO -> 170, 172
                self._acknowledge(pkt, FTSS_ACK_UNDELIVERABLE, FTSS_REASON_DEST_DOWN, out)
                self._finish(pkt, now, out)
                return out
            else:  # block 168 YES -> block 174
                dests = [node]
                self._acknowledge(pkt, FTSS_ACK_STORED_GUARANTEED, FTSS_REASON_NONE, out)
            external = external or (self.echo_external and self.external_port is not None)
        if external:  # block 164: transmit the stored copy on external port 148
            out.append(Transmit(self.external_port, pkt.frame))
            self._count("external_out")
        pkt.dests = tuple(dests)
        pkt.pending = set(dests)
        if dests:
            pkt.fire(PacketEvent.ROUTED)
        for node in dests:  # blocks 176 / 192: into the node's lane, in store order
            lane = self._lane(node)
            lane.queue[pkt.rid] = Delivery(pkt.rid)
            if self._dirty is not None:  # a group commit: the lane flows at its end
                self._dirty[node] = lane
            else:
                out += self._flow(lane, now)
        if not pkt.pending:
            self._finish(pkt, now, out)
        return out

    def _fabric_dests(self, pkt: Stored, dst: str, exclude: int | None) -> list[int]:
        if is_group(dst) or pkt.pkt_flags & FTSS_PKT_BROADCAST:
            return sorted(n for n in self.routes if n != exclude and self.able(n))
        node = self.lookup(dst)
        return [node] if node is not None and self.able(node) else []

    # ---- lanes: block 176, in order, one port at a time ----------------------------------

    def _up_ports(self, route: Route) -> list[str]:
        return [p for p in route.ports if self.port_up.get(p, False)]

    def _flow(self, lane: Outbox, now: float) -> list:
        """Send from the head of the lane while the window allows (state FLOWING)."""
        route = self.routes.get(lane.node)
        if route is not None and route.files:
            if lane.state is not Lane.SPOOLED:
                lane.requeue()
                lane.fire(LaneEvent.SPOOL)
            lane.deadline = None
            return []
        if lane.state is Lane.SPOOLED:
            return []
        if not self.able(lane.node) or lane.pick_port(self._up_ports(route)) is None:
            if lane.park():
                self._count("parked")
            return []
        out = [self._transmit(lane, route, d, now) for d in lane.take(self.window)]
        self._arm(lane)
        return out

    def _probe(self, lane: Outbox, now: float, *, switch: bool = False) -> list:
        """PROBING: only the oldest unacknowledged packet goes out (on the other port)."""
        route = self.routes.get(lane.node)
        if route is None or not self.able(lane.node) or \
                lane.pick_port(self._up_ports(route), switch=switch) is None:
            return self._flow(lane, now)
        head = lane.take_head()
        if head is None:
            return []
        out = [self._transmit(lane, route, head, now)]
        self._arm(lane)
        return out

    def _transmit(self, lane: Outbox, route: Route, delivery: Delivery, now: float) -> Transmit:
        pkt = self.stored[delivery.rid]
        port = lane.port
        flags = pkt.pkt_flags | (FTSS_PKT_RETRANSMIT if delivery.tries else 0)
        hdr = FTSS_FLAG_ALTPATH if port != next(iter(route.ports)) else 0
        if not delivery.ox_id:  # an exchange only for what is on the wire
            delivery.ox_id = self._new_ox(delivery.rid, lane.node)
        delivery.tries += 1
        delivery.sent_at = now
        self._count("transmit" if delivery.tries == 1 else "retransmit")
        return self._pkt_frame(pkt, port, route, flags, hdr, delivery.ox_id)

    def _arm(self, lane: Outbox) -> None:
        """The lane's deadline: its oldest delivery in flight plus the retransmission
        timeout. One wake-up is queued at a time; it re-queues itself if the deadline moved
        later meanwhile (acks move it on every delivery)."""
        if lane.due() is None:
            return
        if lane.timer_at is None or lane.deadline < lane.timer_at:
            lane.timer_at = lane.deadline
            self._timer(lane.deadline, Timer.LANE, lane.node)

    def _kick(self, lane: Outbox, now: float) -> list:
        """Send what the lane's state allows now (after its port or its node changed)."""
        return self._probe(lane, now) if lane.state is Lane.PROBING else self._flow(lane, now)

    def _lane_timeout(self, lane: Outbox, now: float) -> list:
        if lane.state is Lane.SPOOLED or not lane.flight:
            return []
        self._count("timeout")
        lane.rto.timed_out()
        if not self.able(lane.node):
            return self._flow(lane, now)  # parks it
        lane.fire(LaneEvent.TIMEOUT)
        return self._probe(lane, now, switch=True)

    def _pkt_frame(self, pkt, port, route, flags, hdr, ox_id) -> Transmit:
        message = wire.build_pkt(pkt.msg_id, pkt.src_node, pkt.frame, pkt_flags=flags,
                                 retention=pkt.retention, flags=hdr)
        return Transmit(port, self._head(port, route.ports[port]).frame(
            message, route.fc_id, self.fc_id, ox_id))

    def _free_ox(self) -> int:
        for _ in range(0xFFFE):
            ox = self._next_ox
            self._next_ox = ox % 0xFFFE + 1  # 1..0xFFFE; 0xFFFF means "unassigned"
            if ox not in self._ox:
                return ox
        raise OverflowError("more than 65534 deliveries in flight")

    def _new_ox(self, rid: int, node: int) -> int:
        ox = self._free_ox()
        self._ox[ox] = (rid, node)
        return ox

    def _ack(self, port: str, fc: Fcoe, msg: wire.Ack, now: float) -> list:
        """Block 178: the destination acknowledges receipt (its unit's ACK DELIVERED) of the
        PKT of the exchange, and of the ``more`` after it from the same source."""
        if msg.status != FTSS_ACK_DELIVERED:
            self._count("unexpected_ack")
            return []
        rid, node = self._ox.get(fc.ox_id, (None, None))
        pkt = self.stored.get(rid)
        if pkt is None or pkt.msg_id != msg.msg_id or node != msg.node_id or \
                node not in pkt.pending:
            self._count("stale_ack")
            return []
        route = self.routes.get(node)
        fabric = list(route.ports).index(port) if route and port in route.ports else None
        out: list = []
        lane = self.lanes.get(node)
        src, ids = pkt.src_node, msg.msg_ids()
        if lane is not None and len(ids) > lane.pending():  # a long (or hostile) range:
            waiting = (self.stored.get(rid) for rid in (*lane.flight, *lane.queue))
            ids = sorted({msg.msg_id} | {p.msg_id for p in waiting if p is not None and
                                         p.src_node == src and p.msg_id in ids})  # for node
        first = pkt
        for msg_id in ids:
            pkt = first if msg_id == first.msg_id else self.stored.get(
                self.by_msg.get((src, msg_id)))
            if pkt is None or node not in pkt.pending:
                self._count("stale_ack")
                continue
            entry = self._decision(pkt)
            if entry is not None:
                entry["delivered"][str(node)] = fabric
            self._delivered(pkt, node, now, out, flow=False, sample=pkt is first)
        if lane is not None:
            out += self._flow(lane, now)
        return out

    def _delivered(self, pkt: Stored, node: int, now: float, out: list, *,
                   flow: bool = True, sample: bool = True) -> None:
        pkt.pending.discard(node)
        self._count("delivered")
        lane = self.lanes.get(node)
        delivery = lane.acked(pkt.rid, now, sample=sample) if lane is not None else None
        if delivery is not None:
            self._ox.pop(delivery.ox_id, None)
            if flow:
                out += self._flow(lane, now)
        if not pkt.pending:  # a broadcast is deleted only once every node has it
            self._finish(pkt, now, out)

    def _finish(self, pkt: Stored, now: float, out: list) -> None:
        """Blocks 166/172/188: delete, or keep in the packet queue (claims 5, 20, 29)."""
        keep = pkt.retention or self.retain
        if keep and pkt.state is PacketState.DELIVERING:
            pkt.fire(PacketEvent.RETAIN)
            pkt.delivered_at = now
            rec = self._persist(REC_DELIVERED, DELIVERED_REC.pack(pkt.rid, now, len(pkt.dests))
                                + struct.pack(f"!{len(pkt.dests)}I", *pkt.dests))
            pkt.delivered_rid = rec.record_id
            out.append(rec)
            self.retained.append(pkt.rid)
            entry = self._decision(pkt)
            if entry is not None:
                entry["retained"] = True
            self._timer(now + keep, Timer.RETAIN, pkt.rid)
            while len(self.retained) > self.retain_max:  # FIFO capacity: oldest goes first
                self._drop(self.stored.get(self.retained.popleft()), out)
            return
        self._drop(pkt, out)

    def _drop(self, pkt: Stored | None, out: list) -> None:
        if pkt is None or pkt.rid not in self.stored:
            return
        pkt.fire(PacketEvent.DROP)
        del self.stored[pkt.rid]
        key = (pkt.src_node, pkt.msg_id)
        if self.by_msg.get(key) == pkt.rid:
            del self.by_msg[key]
        if pkt.ack is not None and pkt.origin == ORIGIN_FABRIC:
            self.done[key] = pkt.ack
            while len(self.done) > DEDUPE_MEMORY:
                self.done.popitem(last=False)
        for node in pkt.pending:
            lane = self.lanes.get(node)
            delivery = lane.drop(pkt.rid) if lane is not None else None
            if delivery is not None:
                self._ox.pop(delivery.ox_id, None)
        self._forget(pkt.delivered_rid, out)
        self._forget(pkt.rid, out)

    def _resume(self, now: float) -> list:
        """A node can receive again: its parked lane flows."""
        out: list = []
        for lane in self.lanes.values():
            if lane.state is Lane.PARKED and self.able(lane.node):
                out += self._flow(lane, now)
        return out

    # ---- flowchart 180: frames from external network 96 (Fig. 8) -------------------------

    def _external(self, frame: bytes, now: float) -> list:
        """Block 181: receive; block 182: commit; the rest after ``on_durable``."""
        if len(frame) < 14 or len(frame) > self.max_frame:
            self._count("external_malformed")
            return []
        if not self._room(PKT_REC.size + len(frame)):
            self._count("external_store_full")
            return []
        key = (self.node_id, self._next_ext_msg)
        self._next_ext_msg += 1
        return self._store(key, 0, 0, ORIGIN_EXTERNAL, frame, now, None)

    # ---- timers -------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        return self._timers[0][0] if self._timers else None

    def on_timer(self, now: float) -> list:
        out: list = []
        while self._timers and self._timers[0][0] <= now + TIME_EPS:
            when, _, kind, key = heapq.heappop(self._timers)
            if kind is Timer.LANE:
                lane = self.lanes.get(key)
                if lane is None or lane.timer_at != when:
                    continue  # superseded by an earlier wake-up
                lane.timer_at = None
                if lane.deadline is not None and lane.deadline > now + TIME_EPS:
                    lane.timer_at = lane.deadline  # acks moved it on: sleep again
                    self._timer(lane.deadline, Timer.LANE, lane.node)
                elif lane.deadline is not None:
                    out += self._lane_timeout(lane, now)
            elif kind is Timer.REROUTE:
                out += self._reroute(now)
            elif kind is Timer.EXPIRE:
                self._expire(key, now)
            elif kind is Timer.RETAIN:
                pkt = self.stored.get(key)
                if pkt is not None and pkt.state is PacketState.RETAINED:
                    self.retained.remove(pkt.rid)
                    self._drop(pkt, out)
        return out

    # ---- roll back (claims 5, 20, 29) ----------------------------------------------------

    def replay(self, node_id: int, since: float, now: float) -> list:
        """Re-send every stored packet for ``node_id`` received at or after ``since``.

        A redundant application "roll[s] back processing to a known valid point, and
        re-retrieve[s] the packets from FTSS to reconstruct the network dialog". Sent
        once, flagged ROLLBACK, so the node's unit hands them over again.
        """
        route = self.routes.get(node_id)
        ports = [p for p in (route.ports if route else ()) if self.port_up.get(p, False)]
        if not ports:
            return []
        out = []
        for pkt in sorted(self.stored.values(), key=lambda p: (p.stored_at, p.rid)):
            if pkt.durable and node_id in pkt.dests and pkt.stored_at >= since:
                out.append(self._pkt_frame(pkt, ports[0], route,
                                           pkt.pkt_flags | FTSS_PKT_ROLLBACK, 0,
                                           self._free_ox()))
        self.stats["replayed"] = self.stats.get("replayed", 0) + len(out)
        return out

    # ---- file operations unit 138 (claims 6, 13, 21, 30) --------------------------------

    def _respond(self, port, fc, req: tuple[int, int], status, *, data=b"", names=None) -> list:
        """The RESPONSE to request ``req`` = (req id, opcode)."""
        self._count(f"file_{req[1]:#x}_{status}")
        return [self._answer(port, fc, wire.build_response(req[0], req[1], status=status,
                                                           data=data, names=names))]

    def _file_unit(self, port: str, fc: Fcoe, op: int, msg, now: float) -> list:
        """``msg``: the typed body of a WRITE, READ, LIST or DELETE."""
        node = self.port_node.get(port)
        req = (msg.req_id, op)
        if node is None:  # no HELLO on this port: whose directories?
            return self._respond(port, fc, req, FTSS_FILE_DENIED)
        name = msg.filename
        if op == wire.FTSS_OP_LIST:
            if name.rstrip(b"/") + b"/" == SPOOL_IN:
                self.routes[node].files = True  # it watches in/: spool its packets there
                lane = self.lanes.get(node)
                if lane is not None:
                    self._flow(lane, now)  # nothing more is sent to it
            prefix = name.rstrip(b"/") + b"/" if name else b""
            names = sorted(n for n in self._listing(node) if n.startswith(prefix))
            return self._respond(port, fc, req, FTSS_FILE_OK, names=names)
        if not name:
            return self._respond(port, fc, req, FTSS_FILE_BAD_REQUEST)
        if op == wire.FTSS_OP_READ:
            if name == REPLAY_FILE:
                sent = self.replay(node, msg.offset / 1000, now)
                count = len(sent).to_bytes(4, "big")
                return [*sent, *self._respond(port, fc, req, FTSS_FILE_OK, data=count)]
            data = self._read(node, name)
            if data is None:
                return self._respond(port, fc, req, FTSS_FILE_NOT_FOUND)
            end = msg.offset + msg.count if msg.count else None
            return self._respond(port, fc, req, FTSS_FILE_OK, data=data[msg.offset : end])
        if op == wire.FTSS_OP_DELETE:
            return self._delete(port, fc, req, node, name, now)
        return self._write(port, fc, req, msg, node, name, now)

    def _listing(self, node: int) -> list[bytes]:
        """The node's durable files, plus in/<src>-<msg id> for each packet pending for it."""
        names = [n for (o, n), f in self.files.items() if o == node and f.durable]
        names += [self._in_name(p) for p in self.stored.values()
                  if p.durable and node in p.pending]
        return names

    @staticmethod
    def _in_name(pkt: Stored) -> bytes:
        return SPOOL_IN + f"{pkt.src_node}-{pkt.msg_id}".encode()

    def _spooled(self, node: int, name: bytes) -> Stored | None:
        if not name.startswith(SPOOL_IN):
            return None
        src, _, msg = name[len(SPOOL_IN):].partition(b"-")
        if not (src.isdigit() and msg.isdigit() and len(src) < 20 and len(msg) < 21):
            return None
        pkt = self.stored.get(self.by_msg.get((int(src), int(msg)), 0))
        return pkt if pkt is not None and pkt.durable and node in pkt.pending else None

    def _read(self, node: int, name: bytes) -> bytes | None:
        pkt = self._spooled(node, name)
        if pkt is not None:
            return pkt.frame
        f = self.files.get((node, name))
        return f.data if f is not None and f.durable else None

    def _delete(self, port, fc, req, node, name, now) -> list:
        pkt = self._spooled(node, name)
        if pkt is not None:  # deleting its copy is the node's receipt (block 178, claim 3)
            entry = self._decision(pkt)
            if entry is not None:
                entry["delivered"][str(node)] = None
            out: list = []
            self._delivered(pkt, node, now, out)
            return [*out, *self._respond(port, fc, req, FTSS_FILE_OK)]
        f = self.files.get((node, name))
        if f is None or not f.durable:
            return self._respond(port, fc, req, FTSS_FILE_NOT_FOUND)
        out: list = []
        del self.files[(node, name)]
        self._forget(f.rid, out)
        return [*out, *self._respond(port, fc, req, FTSS_FILE_OK)]

    def _write(self, port, fc, req, msg: wire.Write, node, name, now) -> list:
        """Incoming file I/O is committed first; the answer waits for ``on_durable``.

        A write may extend a file but not leave a hole (offset past its end: BAD_REQUEST),
        and no file grows past ``max_file`` (NO_SPACE): one frame never becomes a big record.
        """
        key = (node, name)
        if name.startswith(SPOOL_OUT):  # a retransmitted packet file: answer, store once
            if key in self.files:  # the first copy is being committed: its answer comes
                self._count("duplicate")
                return []
            dup = (node, _out_msg_id(name))
            again = self._again(dup, (port, fc.src, fc.s_id, fc.ox_id))
            if again is not None:
                return [*self._respond(port, fc, req, FTSS_FILE_OK), *again]
        old = self.files.get(key)
        if old is not None and not msg.wflags & FTSS_WRITE_TRUNCATE and msg.offset == 0:
            return self._respond(port, fc, req, FTSS_FILE_EXISTS)
        base = old.data if old is not None and msg.offset else b""
        off = msg.offset
        if off > len(base):
            return self._respond(port, fc, req, FTSS_FILE_BAD_REQUEST)
        data = base[:off] + msg.data + base[off + len(msg.data):]
        if len(data) > self.max_file:
            return self._respond(port, fc, req, FTSS_FILE_NO_SPACE)
        payload = FILE_REC.pack(node, len(name)) + name + data
        if not self._room(len(payload)):
            return self._respond(port, fc, req, FTSS_FILE_NO_SPACE)
        rec = self._persist(REC_FILE, payload)
        # the old version is forgotten once the new one is durable
        self.file_waiters[rec.record_id] = (port, _fc_copy(fc), req, key,
                                            old.rid if old is not None else None)
        self.files[key] = SpoolFile(rec.record_id, data)
        return [rec]

    def _file_durable(self, rid: int, now: float) -> list:
        waiter = self.file_waiters.pop(rid, None)
        if waiter is None:
            return []
        port, fc, req, key, old_rid = waiter
        out: list = []
        self._forget(old_rid, out)
        f = self.files.get(key)
        if f is None or f.rid != rid:  # overwritten again meanwhile: this version is stale
            self._forget(rid, out)
            return out
        f.durable = True
        out += self._respond(port, fc, req, FTSS_FILE_OK)
        if key[1].startswith(SPOOL_OUT):  # the agent watches out/: a packet arrived (claim 6)
            out += self._spool_pkt(key, f, (port, fc.src, fc.s_id, fc.ox_id), now)
        return out

    def _spool_pkt(self, key: tuple[int, bytes], f: SpoolFile, reply, now: float) -> list:
        """The agent picks a packet file up from out/ and routes it like a PKT."""
        pkt = self._file_pkt(key, f, reply, now)
        if len(f.data) < 14:
            out: list = []
            self._acknowledge(pkt, FTSS_ACK_REJECTED, FTSS_REASON_MALFORMED, out)
            self._drop(pkt, out)
            return out
        return self._route_pkt(pkt, now, fresh=True)

    def _file_pkt(self, key: tuple[int, bytes], f: SpoolFile, reply, now: float) -> Stored:
        """The out/ file becomes the stored packet (same record), keyed like a PKT."""
        del self.files[key]
        pkt = Stored(f.rid, key[0], _out_msg_id(key[1]), 0, 0, ORIGIN_FABRIC, now, f.data,
                     PacketState.HELD, reply=reply)
        self.stored[pkt.rid] = pkt
        self.by_msg[(pkt.src_node, pkt.msg_id)] = pkt.rid
        return pkt

    # ---- recovery -----------------------------------------------------------------------

    def recover(self, records: Iterable[tuple[int, int, bytes]], now: float,
                grace: float = 0.0) -> list:
        """Rebuild queues from the store's records after a crash, and resume delivery.

        ``records``: (record id, kind, payload) of every durable record, in order.
        Delivered packets go back into the retention queue. The others are routed
        again after ``grace`` seconds (time for the nodes' HELLOs to refill routing
        table 146) without a new ACK: their sources hold one already, or retransmit
        and get it from the dedupe state; destinations de-duplicate by msg id. Packets
        committed during the grace are routed (and acknowledged) right after them.
        """
        out: list = []
        delivered: dict[int, tuple[int, float, tuple[int, ...]]] = {}
        for rid, kind, payload in records:
            self._next_rid = max(self._next_rid, rid + 1)
            self.records += 1
            self.bytes += len(payload)
            self._sizes[rid] = len(payload)
            try:
                self._recover_one(rid, kind, bytes(payload), delivered, out)
            except struct.error:  # the store's CRC passed, but the bytes are not ours
                self._count("recover_bad")
        for (node, name), f in list(self.files.items()):
            if name.startswith(SPOOL_OUT):  # committed, not yet routed: route it now
                self._file_pkt((node, name), f, None, now)
        for pkt in self.stored.values():
            mark = delivered.pop(pkt.rid, None)
            if mark is None:
                self._unrouted.append((pkt.rid, False))
                continue
            pkt.delivered_rid, pkt.delivered_at, pkt.dests = mark
            pkt.state = PacketState.RETAINED  # as it was when the marker was written
            self.retained.append(pkt.rid)
            self._timer(pkt.delivered_at + (pkt.retention or self.retain), Timer.RETAIN,
                        pkt.rid)
        for rid, _, _ in delivered.values():  # a marker whose packet is gone
            self._forget(rid, out)
        self._recovering = bool(self._unrouted)  # nothing to keep the order of otherwise
        self._timer(now + grace, Timer.REROUTE)
        self._count("recovered")
        return out

    def _recover_one(self, rid: int, kind: int, payload: bytes, delivered: dict, out: list):
        if kind == REC_PKT:
            src, msg_id, flags, retention, origin, at = PKT_REC.unpack_from(payload)
            pkt = Stored(rid, src, msg_id, flags, retention, origin, at,
                         payload[PKT_REC.size:], PacketState.HELD)
            self.stored[rid] = pkt
            self.by_msg[(src, msg_id)] = rid
            if origin == ORIGIN_EXTERNAL:
                self._next_ext_msg = max(self._next_ext_msg, msg_id + 1)
        elif kind == REC_DELIVERED:
            prid, at, count = DELIVERED_REC.unpack_from(payload)
            dests = struct.unpack_from(f"!{count}I", payload, DELIVERED_REC.size)
            delivered[prid] = (rid, at, dests)
        elif kind == REC_FILE:
            node, nlen = FILE_REC.unpack_from(payload)
            name = payload[FILE_REC.size : FILE_REC.size + nlen]
            old = self.files.get((node, name))
            self._forget(old.rid if old is not None else None, out)
            self.files[(node, name)] = SpoolFile(rid, payload[FILE_REC.size + nlen :], True)
        else:
            self._count("recover_unknown")

    def _reroute(self, now: float) -> list:
        """The grace after recovery is over: route what the store gave back, then what
        arrived meanwhile (held so that nothing new overtakes an old packet)."""
        out: list = []
        held, self._unrouted, self._recovering = self._unrouted, [], False
        for rid, fresh in held:
            pkt = self.stored.get(rid)
            if pkt is not None:
                out += self._route_pkt(pkt, now, fresh=fresh)
        return out


def _fc_copy(fc: Peer | Fcoe) -> Peer:
    """The FC fields an answer needs (the parsed dict holds a view of the frame)."""
    return Peer(fc.src, fc.s_id, fc.ox_id)


def _out_msg_id(name: bytes) -> int:
    """``out/<msg id>``: the unit names a packet file by its msg id (else 0)."""
    tail = name[len(SPOOL_OUT):]
    return int(tail) if tail.isdigit() and len(tail) < 20 else 0
