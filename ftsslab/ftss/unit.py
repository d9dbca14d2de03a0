"""Packet conversion and transmission acknowledgment unit 122 (seed 000 Fig. 5), sans-IO.

It sits where a network adapter would be: frames from the server's protocol stack
116 (a TAP device on a real server) become FTSS PKTs to the FTSS over fabric A
(first embodiment, solid line) or packet files written to ``out/`` (alternative
embodiment, dotted line: ``mode="file"``); it waits for the FTSS's ACK and
retransmits, same msg id, on the other fabric link on timeout or link failure.
Packets from the FTSS go up to the stack once per (source node, msg id) and are
acknowledged DELIVERED (block 178, claims 3, 18, 27); in file mode it polls its
``in/`` directory, reads each packet file and deletes it (the receipt).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from ftsslab.fast import ftss as wire
from ftsslab.fast.fc import parse_fcoe_frame

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
    Transmit,
)

MEMORY = 65536  # msg ids remembered for de-duplication and outcomes


@dataclass
class Outgoing:
    msg_id: int
    frame: bytes
    tries: int = 0
    deadline: float = 0.0
    port: str = ""


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
        retry: float = 0.02,
        max_tries: int = 1000,
        hello_interval: float = 1.0,
        hold_time: int = 3,
        poll: float = 0.01,
        epoch: int = 0,
    ):
        """``fabric``: port -> own MAC, fabric A first; ``ftss_macs``: port -> the FTSS's
        MAC on that link; ``macs``: inner MACs the stack uses (announced in HELLO);
        ``epoch``: high 32 bits of msg ids, new after each restart so ids never repeat."""
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
        self.retry = retry
        self.max_tries = max_tries
        self.hello_interval = hello_interval
        self.hold_time = hold_time
        self.poll = poll
        self.port_up = dict.fromkeys(self.fabric, True)
        self.pending: dict[int, Outgoing] = {}
        self.outcome: OrderedDict[int, int] = OrderedDict()  # msg id -> ACK status
        self.seen: OrderedDict[tuple[int, int], None] = OrderedDict()
        self.stats: dict[str, int] = {}
        self._next_msg = (epoch << 32) | 1
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

    def _up_ports(self) -> list[str]:
        return [p for p in self.fabric if self.port_up.get(p)]

    def _frame(self, port: str, message: bytes, *, answer: dict | None = None) -> Transmit:
        if answer is not None:
            ox, f_ctl = answer["ox_id"], FC_FCTL_ANSWER
        else:
            ox, f_ctl = self._ox, wire.FC_FCTL_SINGLE
            self._ox = self._ox % 0xFFFE + 1
        return Transmit(port, wire.build_ftss_frame(
            self.ftss_macs[port], self.fabric[port], message, d_id=self.ftss_fc_id,
            s_id=self.fc_id, ox_id=ox, f_ctl=f_ctl))

    def set_port(self, port: str, up: bool) -> None:
        """A fabric link went down/up: what waits on a dead link goes out on the other now."""
        if port not in self.port_up:
            return
        self.port_up[port] = up
        if not up:
            for out in self.pending.values():
                if out.port == port:
                    out.deadline = 0.0

    # ---- from the stack -------------------------------------------------------------------

    def on_frame(self, port: str, frame: bytes, now: float) -> list[Transmit]:
        """A frame from the stack or the fabric; never raises."""
        try:
            if port == self.stack_port:
                return self._from_stack(bytes(frame), now)
            if port in self.fabric:
                return self._from_fabric(port, bytes(frame), now)
            self._count("unknown_port")
        except Exception:
            self._count("internal_error")
        return []

    def _from_stack(self, frame: bytes, now: float) -> list[Transmit]:
        if len(frame) < 14:
            self._count("stack_runt")
            return []
        msg_id = self._next_msg
        self._next_msg += 1
        out = self.pending[msg_id] = Outgoing(msg_id, frame)
        self._count("from_stack")
        return self._send(out, now)

    def _send(self, out: Outgoing, now: float) -> list[Transmit]:
        """Fabric A first; every retry (timeout, link down) on the other link, same msg id."""
        ports = self._up_ports() or list(self.fabric)
        port = ports[out.tries % len(ports)]
        out.port = port
        out.tries += 1
        out.deadline = now + self.retry
        hdr = FTSS_FLAG_ALTPATH if port != next(iter(self.fabric)) else 0
        if self.mode == "file":
            name = SPOOL_OUT + str(out.msg_id).encode()
            message = wire.build_write(out.msg_id & 0xFFFFFFFF, name, out.frame, flags=hdr)
        else:
            flags = FTSS_PKT_RETRANSMIT if out.tries > 1 else 0
            message = wire.build_pkt(out.msg_id, self.node_id, out.frame, pkt_flags=flags,
                                     flags=hdr)
        self._count("sent" if out.tries == 1 else "retransmit")
        return [self._frame(port, message)]

    # ---- from the fabric ------------------------------------------------------------------

    def _from_fabric(self, port: str, frame: bytes, now: float) -> list[Transmit]:
        fc = parse_fcoe_frame(frame)
        msg = wire.parse_ftss(fc["payload"]) if fc is not None and fc["crc_ok"] else None
        if msg is None or fc["type"] != wire.FTSS_FC_TYPE:
            self._count("malformed")
            if fc is None:
                return []
            return [self._frame(port, wire.build_ack(0, self.node_id, FTSS_ACK_REJECTED,
                                                     FTSS_REASON_MALFORMED), answer=fc)]
        op = msg["opcode"]
        if op == wire.FTSS_OP_PKT:
            return self._incoming(port, fc, msg["msg_id"], msg["src_node"], msg["pkt_flags"],
                                  bytes(msg["payload"]))
        if op == wire.FTSS_OP_ACK:
            self._acked(msg["msg_id"], msg["status"])
        elif op == wire.FTSS_OP_RESPONSE:
            return self._response(port, msg)
        elif op == wire.FTSS_OP_STATUS:
            self._count("status")
        else:
            self._count("unexpected")
        return []

    def _incoming(self, port, fc, msg_id, src, flags, inner, *, ack=True) -> list[Transmit]:
        """Blocks 176/178: up the stack once per (source, msg id), then ACK DELIVERED."""
        out: list[Transmit] = []
        key = (src, msg_id)
        if key in self.seen and not flags & FTSS_PKT_ROLLBACK:
            self._count("duplicate")
        else:
            self.seen[key] = None
            while len(self.seen) > MEMORY:
                self.seen.popitem(last=False)
            self._count("to_stack")
            out.append(Transmit(self.stack_port, inner))
        if ack:
            out.append(self._frame(port, wire.build_ack(msg_id, self.node_id, FTSS_ACK_DELIVERED),
                                   answer=fc))
        return out

    def _acked(self, msg_id: int, status: int) -> None:
        out = self.pending.pop(msg_id, None)
        if out is None:
            self._count("stale_ack")
            return
        self._count(f"ack_{status}")
        self.outcome[msg_id] = status
        while len(self.outcome) > MEMORY:
            self.outcome.popitem(last=False)

    # ---- file-I/O embodiment ------------------------------------------------------------

    def _request(self, port: str, op: int, name: bytes) -> Transmit:
        req = self._next_req
        self._next_req = req + 1 if req < 0xFFFFFFFF else 0x80000000
        self._reqs[req] = (op, name)
        build = {wire.FTSS_OP_LIST: wire.build_list, wire.FTSS_OP_READ: wire.build_read,
                 wire.FTSS_OP_DELETE: wire.build_delete}[op]
        return self._frame(port, build(req, name))

    def _response(self, port: str, msg: dict) -> list[Transmit]:
        req = self._reqs.pop(msg["req_id"], None)
        if req is None:  # a WRITE's answer: OK is followed by the ACK that settles it
            if msg["status"] != FTSS_FILE_OK:
                ids = [m for m in self.pending if m & 0xFFFFFFFF == msg["req_id"]]
                for msg_id in ids:
                    self._acked(msg_id, FTSS_ACK_REJECTED)
            return []
        op, name = req
        if msg["status"] != FTSS_FILE_OK:
            self._reading.discard(name)
            self._count(f"file_error_{msg['status']}")
            return []
        if op == wire.FTSS_OP_LIST:
            new = [n for n in msg["names"] if n.startswith(SPOOL_IN) and n not in self._reading]
            self._reading.update(new)
            return [self._request(port, wire.FTSS_OP_READ, n) for n in new]
        if op == wire.FTSS_OP_READ:
            src, _, msg_id = name[len(SPOOL_IN):].partition(b"-")
            key = (int(src), int(msg_id)) if src.isdigit() and msg_id.isdigit() else (0, 0)
            out = self._incoming(port, None, key[1], key[0], 0, msg["data"], ack=False)
            # deleting it is the receipt (block 178)
            return [*out, self._request(port, wire.FTSS_OP_DELETE, name)]
        self._reading.discard(name)
        return []

    # ---- timers ---------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        times = [self._next_hello]
        if self._next_poll is not None:
            times.append(self._next_poll)
        times += [o.deadline for o in self.pending.values()]
        return min(times)

    def on_timer(self, now: float) -> list[Transmit]:
        out: list[Transmit] = []
        due = now + TIME_EPS
        try:
            if due >= self._next_hello:  # HELLO on every link: routing table 146 learns us
                self._seq = (self._seq + 1) & 0xFFFF
                for i, port in enumerate(self._up_ports()):
                    out.append(self._frame(port, wire.build_hello(
                        self.node_id, self._seq, self.macs, state=FTSS_NODE_UP, port=i,
                        hold_time=self.hold_time)))
                self._next_hello = now + self.hello_interval
            if self._next_poll is not None and due >= self._next_poll:
                ports = self._up_ports()
                if ports:
                    self._reading.clear()  # lost answers are asked for again
                    out.append(self._request(ports[0], wire.FTSS_OP_LIST, SPOOL_IN.rstrip(b"/")))
                self._next_poll = now + self.poll
            for msg in [o for o in self.pending.values() if o.deadline <= due]:
                if msg.tries >= self.max_tries:
                    del self.pending[msg.msg_id]
                    self._count("gave_up")
                    continue
                out += self._send(msg, now)
        except Exception:
            self._count("internal_error")
        return out
