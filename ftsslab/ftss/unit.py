"""Packet conversion and transmission acknowledgment unit 122 (seed 000 Fig. 5), sans-IO.

It sits where a network adapter would be: frames from the server's protocol stack
116 (a TAP device on a real server) become FTSS PKTs to the FTSS over fabric A
(first embodiment, solid line) or packet files written to ``out/`` (alternative
embodiment, dotted line: ``mode="file"``); it waits for the FTSS's ACK and
retransmits, same msg id, on the other fabric link on timeout or link failure.
Like the FTSS's own lanes it sends in order, one link at a time, at most ``window``
unacknowledged (``delivery.Outbox``), so the FTSS stores a server's packets in the
order the stack sent them.

Packets from the FTSS go up to the stack once per (source node, msg id) and are
acknowledged DELIVERED (block 178, claims 3, 18, 27); in file mode it polls its
``in/`` directory, reads each packet file and deletes it (the receipt). The keys it
delivered are persisted (one ``REC_SEEN`` record per ``flush``, the end of a batch of
events; nothing waits for it): a unit restarted after its DELIVERED ack was lost still
refuses the FTSS's retransmission.

After a (re)start its HELLOs carry seq 1 and a fabric port takes no packets until the
FTSS's STATUS answered a HELLO on it: whatever the FTSS sent before it heard of the
restart is dropped, and re-sent from the oldest (``LaneEvent.RESTARTED``).
"""

from __future__ import annotations

import struct
from collections import OrderedDict

from ftsslab.fast import ftss as wire
from ftsslab.fast.fc import Fcoe, decode_fcoe

from .actions import (
    FC_FCTL_ANSWER,
    FTSS_ACK_DELIVERED,
    FTSS_ACK_REJECTED,
    FTSS_FC_ID,
    FTSS_FILE_OK,
    FTSS_FLAG_ALTPATH,
    FTSS_NODE_UP,
    FTSS_PKT_RETRANSMIT,
    FTSS_PKT_ROLLBACK,
    FTSS_REASON_MALFORMED,
    SPOOL_IN,
    SPOOL_OUT,
    TIME_EPS,
    Forget,
    Persist,
    Transmit,
)
from .delivery import RETRY, WINDOW, Delivery, Lane, LaneEvent, Outbox, Rto

MEMORY = 65536  # msg ids remembered for de-duplication and outcomes
BACKLOG = 4096  # stack frames waiting for the FTSS; more are dropped like a full NIC ring
REC_SEEN = 4  # record kind: (source node, msg id) keys this unit handed to its stack
SEEN_REC = struct.Struct("!IQ")
HELLO_RESTART_SEQ = 1
SYNC_RETRY = 0.02  # seconds between HELLOs before the first STATUS
FTSS_NODE = 0  # the unit's one lane goes to the FTSS


class ServerUnit:
    """Unit 122 of one server: ``stack_port`` faces protocol stack 116, ``fabric`` the FTSS."""

    def __init__(
        self,
        node_id: int,
        fabric: dict[str, str],
        ftss_macs: dict[str, str],
        stack_port: str,
        macs: list[str],
        *,
        fc_id: int,
        ftss_fc_id: int = FTSS_FC_ID,
        mode: str = "packet",
        retry: float = RETRY,
        window: int = WINDOW,
        max_tries: int = 1000,
        hello_interval: float = 1.0,
        hold_time: int = 3,
        poll: float = 0.01,
        epoch: int = 0,
    ):
        """``fabric``: port -> own MAC, fabric A first; ``ftss_macs``: port -> the FTSS's
        MAC on that link; ``macs``: inner MACs the stack uses (announced in HELLO);
        ``retry``: the first retransmission timeout (it adapts to the measured round
        trip); ``epoch``: high 32 bits of msg ids, new after each restart so ids never
        repeat."""
        if mode not in ("packet", "file"):
            raise ValueError(f"mode must be 'packet' or 'file', not {mode!r}")
        self.node_id = node_id
        self.fabric = dict(fabric)
        self.ftss_macs = dict(ftss_macs)
        self.stack_port = stack_port
        self.macs = [m.lower() for m in macs]
        self.fc_id = fc_id
        self.ftss_fc_id = ftss_fc_id
        self.mode = mode
        self.window = window
        self.max_tries = max_tries
        self.hello_interval = hello_interval
        self.hold_time = hold_time
        self.poll = poll
        self.port_up = dict.fromkeys(self.fabric, True)
        self._heads = {p: wire.FrameHead(self.ftss_macs[p], mac) for p, mac in self.fabric.items()}
        self.synced: set[str] = set()  # ports a STATUS answered on since the start
        self.lane = Outbox(FTSS_NODE, Rto(retry))
        self.frames: dict[int, bytes] = {}  # msg id -> stack frame, until acknowledged
        self.outcome: OrderedDict[int, int] = OrderedDict()  # msg id -> ACK status
        self.seen: OrderedDict[tuple[int, int], int | None] = OrderedDict()  # -> its record
        self._fresh: list[tuple[int, int]] = []  # keys not in a record yet
        self._acks: list[tuple[str, int, int, int]] = []  # DELIVERED acks ``flush`` sends
        self._records: dict[int, int] = {}  # record id -> keys of it still remembered
        self.latest: dict[int, int] = {}  # source node -> highest msg id handed up
        self.stats: dict[str, int] = {}
        self._next_msg = (epoch << 32) | 1
        self._next_rid = 1
        self._next_req = 0x80000000  # LIST/READ/DELETE; WRITE req ids are msg ids
        self._reqs: dict[int, tuple[int, bytes]] = {}  # req id -> (opcode, name)
        self._reading: set[bytes] = set()
        self._ox = 1
        self._seq = 0
        self._next_hello = 0.0
        self._next_poll = 0.0 if mode == "file" else None

    # ---- helpers ------------------------------------------------------------------------

    def _count(self, what: str) -> None:
        self.stats[what] = self.stats.get(what, 0) + 1

    @property
    def pending(self) -> dict[int, bytes]:
        """Stack frames sent (or waiting) for the FTSS and not acknowledged yet."""
        return self.frames

    def _up_ports(self) -> list[str]:
        return [p for p in self.fabric if self.port_up.get(p)]

    def _frame(self, port: str, message: bytes, *, answer: Fcoe | None = None) -> Transmit:
        if answer is not None:
            ox, f_ctl = answer.ox_id, FC_FCTL_ANSWER
        else:
            ox, f_ctl = self._ox, wire.FC_FCTL_SINGLE
            self._ox = self._ox % 0xFFFE + 1
        return Transmit(port, self._heads[port].frame(message, self.ftss_fc_id, self.fc_id,
                                                      ox, f_ctl))

    def set_port(self, port: str, up: bool) -> None:
        self.port_up[port] = up

    def on_port(self, port: str, up: bool, now: float) -> list[Transmit]:
        """A fabric link went down/up: what was in flight on a dead link goes out on the
        other one at once, in order; a link back up ends parking."""
        if port not in self.port_up or self.port_up[port] == up:
            return []
        self.port_up[port] = up
        if not up:
            self.synced.discard(port)
            if self.lane.port == port:  # what was in flight there is lost: go back N
                self.lane.port = None
                self.lane.requeue()
        elif self.lane.state is not Lane.PARKED:
            return []
        return self._kick(now)

    # ---- from the stack: the lane to the FTSS ---------------------------------------------

    def on_frame(self, port: str, frame: bytes, now: float) -> list[Transmit]:
        """A frame from the stack or the fabric."""
        if port == self.stack_port:
            return self._from_stack(bytes(frame), now)
        if port in self.fabric:
            return self._from_fabric(port, bytes(frame), now)
        self._count("unknown_port")
        return []

    def _from_stack(self, frame: bytes, now: float) -> list[Transmit]:
        if len(frame) < 14:
            self._count("stack_runt")
            return []
        if len(self.frames) >= BACKLOG:
            self._count("dropped_backlog")
            return []
        msg_id = self._next_msg
        self._next_msg += 1
        self.frames[msg_id] = frame
        self.lane.queue[msg_id] = Delivery(msg_id)
        self._count("from_stack")
        return self._flow(now)

    def _kick(self, now: float) -> list[Transmit]:
        return self._probe(now) if self.lane.state is Lane.PROBING else self._flow(now)

    def _flow(self, now: float) -> list[Transmit]:
        lane = self.lane
        if lane.pick_port(self._up_ports()) is None:
            lane.park()
            return []
        out = [self._send(d, now) for d in lane.take(self.window)]
        lane.due()
        return out

    def _probe(self, now: float, *, switch: bool = False) -> list[Transmit]:
        lane = self.lane
        lane.requeue()
        while lane.queue and next(iter(lane.queue.values())).tries >= self.max_tries:
            msg_id, _ = lane.queue.popitem(last=False)
            del self.frames[msg_id]
            self._count("gave_up")
        if lane.pick_port(self._up_ports(), switch=switch) is None:
            return self._flow(now)
        head = lane.take_head()
        if head is None:  # every frame gave up: nothing left to probe with
            return []
        out = [self._send(head, now)]
        lane.due()
        return out

    def _send(self, delivery: Delivery, now: float) -> Transmit:
        port = self.lane.port
        msg_id = delivery.rid
        delivery.tries += 1
        delivery.sent_at = now
        hdr = FTSS_FLAG_ALTPATH if port != next(iter(self.fabric)) else 0
        if self.mode == "file":
            name = SPOOL_OUT + str(msg_id).encode()
            message = wire.build_write(msg_id & 0xFFFFFFFF, name, self.frames[msg_id], flags=hdr)
        else:
            flags = FTSS_PKT_RETRANSMIT if delivery.tries > 1 else 0
            message = wire.build_pkt(msg_id, self.node_id, self.frames[msg_id], pkt_flags=flags,
                                     flags=hdr)
        self._count("sent" if delivery.tries == 1 else "retransmit")
        return self._frame(port, message)

    # ---- from the fabric ------------------------------------------------------------------

    def _from_fabric(self, port: str, frame: bytes, now: float) -> list[Transmit]:
        fc = decode_fcoe(frame)
        msg = wire.decode(fc.payload) if fc is not None and fc.crc_ok else None
        if msg is None or fc.type != wire.FTSS_FC_TYPE:
            self._count("malformed")
            if fc is None:
                return []
            return [self._frame(port, wire.build_ack(0, self.node_id, FTSS_ACK_REJECTED,
                                                     FTSS_REASON_MALFORMED), answer=fc)]
        op, body = msg.opcode, msg.body
        if op == wire.FTSS_OP_PKT:
            if port not in self.synced:  # sent before the FTSS heard of our (re)start
                self._count("before_sync")
                return []
            return self._incoming(port, fc, body.msg_id, body.src_node, body.pkt_flags,
                                  bytes(body.payload))
        if op == wire.FTSS_OP_ACK:
            settled, ids = False, body.msg_ids()
            if len(ids) > len(self.frames):  # a long (or hostile) range: what is pending
                ids = [m for m in self.frames if m in ids]
            for msg_id in ids:  # one RTT sample per ACK frame
                settled = self._settle(msg_id, body.status, now,
                                       sample=msg_id == body.msg_id) or settled
            return self._flow(now) if settled else []
        if op == wire.FTSS_OP_RESPONSE:
            return self._response(port, body, now)
        if op == wire.FTSS_OP_STATUS:
            self._count("status")
            self.synced.add(port)
        else:
            self._count("unexpected")
        return []

    def _incoming(self, port, fc, msg_id, src, flags, inner, *, ack=True) -> list:
        """Blocks 176/178: up the stack once per (source, msg id), then ACK DELIVERED."""
        out: list = []
        key = (src, msg_id)
        if key in self.seen and not flags & FTSS_PKT_ROLLBACK:
            self._count("duplicate")
        else:
            self._count("to_stack")
            out.append(Transmit(self.stack_port, inner))
            if msg_id < self.latest.get(src, 0) and msg_id >> 32 == self.latest[src] >> 32:
                self._count("reordered")  # the FTSS promises order per source: never seen
            self.latest[src] = max(msg_id, self.latest.get(src, 0))
        if ack:  # sent by ``flush``, consecutive msg ids as one ACK
            self._acks.append((port, src, msg_id, fc.ox_id))
        if key not in self.seen:
            out += self._remember(key)
        return out

    def _remember(self, key: tuple[int, int]) -> list:
        """Remember the key; ``flush`` persists this turn's keys in one record (after the
        acks: the record only closes the window of a restart)."""
        self.seen[key] = None  # its record comes with the next flush
        self._fresh.append(key)
        return self._evict()

    def _evict(self) -> list:
        """Keep MEMORY keys; a record whose keys are all gone is forgotten."""
        out: list = []
        while len(self.seen) > MEMORY:
            _, rid = self.seen.popitem(last=False)
            if rid is not None:
                self._records[rid] -= 1
                if not self._records[rid]:
                    del self._records[rid]
                    out.append(Forget(rid))
        return out

    def flush(self, now: float) -> list:
        """The end of a batch of events: its DELIVERED acknowledgments, a run of consecutive
        msg ids from one source as one ACK (``more``), and the keys handed up since the last
        batch as one ``REC_SEEN`` record."""
        out = self._delivered_acks() if self._acks else []
        fresh = [k for k in self._fresh if k in self.seen]
        self._fresh = []
        if not fresh:
            return out
        rid = self._next_rid
        self._next_rid += 1
        for key in fresh:
            self.seen[key] = rid
        self._records[rid] = len(fresh)
        return [*out, Persist(rid, REC_SEEN, b"".join(SEEN_REC.pack(*k) for k in fresh),
                              awaited=False)]

    def _delivered_acks(self) -> list[Transmit]:
        """This batch's DELIVERED acknowledgments: (port, source, msg id, OX_ID) in order,
        a run of consecutive msg ids of one source on one port as one ACK (the first's
        exchange)."""
        acks, self._acks = self._acks, []
        runs = wire.ack_runs(acks, lambda a: a[:2], lambda a: a[2])
        return [self._delivered_ack(port, msg_id, more, ox) for (port, _, msg_id, ox), more in runs]

    def _delivered_ack(self, port: str, msg_id: int, more: int, ox_id: int) -> Transmit:
        message = wire.build_ack(msg_id, self.node_id, FTSS_ACK_DELIVERED, more=more)
        return Transmit(port, self._heads[port].frame(message, self.ftss_fc_id, self.fc_id,
                                                      ox_id, FC_FCTL_ANSWER))

    def _settle(self, msg_id: int, status: int, now: float, *, sample: bool = True) -> bool:
        """The FTSS's verdict on one msg id: the frame leaves the lane. False if stale."""
        if msg_id not in self.frames:
            self._count("stale_ack")
            return False
        del self.frames[msg_id]
        self._count(f"ack_{status}")
        self.outcome[msg_id] = status
        while len(self.outcome) > MEMORY:
            self.outcome.popitem(last=False)
        self.lane.acked(msg_id, now, sample=sample)
        return True

    def _acked(self, msg_id: int, status: int, now: float) -> list[Transmit]:
        return self._flow(now) if self._settle(msg_id, status, now) else []

    def report(self) -> dict:
        return {"stats": dict(self.stats), "lane": self.lane.report()}

    # ---- durability of the seen keys ----------------------------------------------------

    def on_durable(self, record_id: int, now: float) -> list:
        return []

    def on_persist_failed(self, record_id: int, now: float) -> list:
        self._count("seen_not_persisted")
        return []

    def recover(self, records, now: float, grace: float = 0.0) -> list:
        """The keys a previous life of this unit handed up (``REC_SEEN`` records)."""
        for rid, kind, payload in records:
            self._next_rid = max(self._next_rid, rid + 1)
            if kind == REC_SEEN and payload and len(payload) % SEEN_REC.size == 0:
                for key in SEEN_REC.iter_unpack(payload):
                    if key not in self.seen:
                        self._records[rid] = self._records.get(rid, 0) + 1
                    self.seen[key] = rid
        return self._evict()

    # ---- file-I/O embodiment ------------------------------------------------------------

    def _request(self, port: str, op: int, name: bytes) -> Transmit:
        req = self._next_req
        self._next_req = req + 1 if req < 0xFFFFFFFF else 0x80000000
        self._reqs[req] = (op, name)
        build = {wire.FTSS_OP_LIST: wire.build_list, wire.FTSS_OP_READ: wire.build_read,
                 wire.FTSS_OP_DELETE: wire.build_delete}[op]
        return self._frame(port, build(req, name))

    def _response(self, port: str, msg: wire.Response, now: float) -> list:
        req = self._reqs.pop(msg.req_id, None)
        if req is None:  # a WRITE's answer: OK is followed by the ACK that settles it
            out: list = []
            if msg.status != FTSS_FILE_OK:
                for msg_id in [m for m in self.frames if m & 0xFFFFFFFF == msg.req_id]:
                    out += self._acked(msg_id, FTSS_ACK_REJECTED, now)
            return out
        op, name = req
        if msg.status != FTSS_FILE_OK:
            self._reading.discard(name)
            self._count(f"file_error_{msg.status}")
            return []
        if op == wire.FTSS_OP_LIST:
            new = [n for n in msg.names or () if n.startswith(SPOOL_IN) and n not in self._reading]
            self._reading.update(new)
            return [self._request(port, wire.FTSS_OP_READ, n) for n in new]
        if op == wire.FTSS_OP_READ:
            src, _, msg_id = name[len(SPOOL_IN):].partition(b"-")
            ok = src.isdigit() and msg_id.isdigit() and len(src) < 11 and len(msg_id) < 21
            key = (int(src), int(msg_id)) if ok else (0, 0)
            out = self._incoming(port, None, key[1], key[0], 0, msg.data or b"", ack=False)
            # deleting it is the receipt (block 178)
            return [*out, self._request(port, wire.FTSS_OP_DELETE, name)]
        self._reading.discard(name)
        return []

    # ---- timers ---------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        times = [self._next_hello]
        if self._next_poll is not None:
            times.append(self._next_poll)
        if self.lane.deadline is not None:
            times.append(self.lane.deadline)
        return min(times)

    def on_timer(self, now: float) -> list:
        out: list = []
        due = now + TIME_EPS
        if due >= self._next_hello:  # HELLO on every link: routing table 146 learns us
            if not self.synced:  # seq 1 says "(re)started" until a STATUS answered
                self._seq = HELLO_RESTART_SEQ
            else:  # then 2 .. 0xFFFF, round and round
                self._seq = self._seq + 1 if HELLO_RESTART_SEQ < self._seq < 0xFFFF else 2
            for i, port in enumerate(self._up_ports()):
                out.append(self._frame(port, wire.build_hello(
                    self.node_id, self._seq, self.macs, state=FTSS_NODE_UP, port=i,
                    hold_time=self.hold_time)))
            # until a STATUS answers, HELLO often: the FTSS may be starting too
            self._next_hello = now + (self.hello_interval if self.synced else
                                      min(self.hello_interval, SYNC_RETRY))
        if self._next_poll is not None and due >= self._next_poll:
            ports = [p for p in self._up_ports() if p in self.synced] or self._up_ports()
            if ports:
                self._reading.clear()  # lost answers are asked for again
                out.append(self._request(ports[0], wire.FTSS_OP_LIST, SPOOL_IN.rstrip(b"/")))
            self._next_poll = now + self.poll
        if self.lane.deadline is not None and due >= self.lane.deadline:
            self._count("timeout")
            self.lane.rto.timed_out()
            if self._up_ports():
                self.lane.fire(LaneEvent.TIMEOUT)
            out += self._probe(now, switch=True)
        return out
