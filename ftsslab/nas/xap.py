# SPDX-License-Identifier: GPL-2.0-or-later
"""XAP control of the NAS switch's forwarding table, as sans-IO cores (seed 002's EAP).

:class:`XapSwitch` is the switch's side: XAP datagrams in, :class:`Program` actions out;
the caller changes the kernel table and then reports :meth:`XapSwitch.programmed`, and
only then is the ack sent (:class:`SendDatagram`), so an ack means "the table is
updated" (the seed: "acknowledge receipt and execution of directions").
:class:`XapClient` is a device's side: requests with retransmission (RTO 20 ms,
doubling, 5 tries), :class:`Acked` or :class:`TimedOut`.  Neither touches a socket or a
clock: ``now`` is passed in.

Meaning of the operations (D2.11) on the UDP carrier, where TLVs name the client
(CLIENT_IP, required) and the device a connection moves to (TARGET_IP, D2.10):

- ``change_connection``: move the flow (client_ip, proto, sport, VIP, dport) to the
  TARGET_IP's device.  Sent by the current owner with its nonce; a flow without an entry
  may be moved by any registered device.
- ``redirect``: the same move for a UDP flow (NAT alone, B2.8); refused for others.
- ``set``: create the entry for the sender's own device (none other may own it).
- ``query``: read the entry; the ack's TARGET_IP names the owner (none: no entry).

Every ack echoes nonce and xid in the request's form, CLIENT_IP, and TARGET_IP = the
flow's owner once the switch has acted.  Anything refused (unknown or wrong nonce,
unknown target, unknown op, malformed) gets no ack -- the format has no status field --
and a counter in ``stats``.  A retransmission (same nonce, xid and request) is acked
again from memory and applied once; the memory is bounded in size and age.

A switch pair (Fig. 12, D2.17): the active switch mirrors every table event to its hot
standby as ``change_connection`` requests with the active's own nonce, registered at the
standby as a *peer*.  A peer may move any flow, whoever owns it; TARGET_IP 0.0.0.0 (no
device) removes the entry.  A peer's ``set`` hands the flow, at its owner, to this switch
(claims 56-62: "the file session identification ... forwarded to the second switch").
A standby that takes over ``adopt``s the active's address as a second cluster id, so the
devices' requests to it keep working.

Cascades (B2.16): a datagram's messages are in path order; a switch acts on the
full-form messages whose cluster_id is its own address, or on the first message of a
short-form datagram (the implicit cluster is "whoever receives it first"), and acks
each in a datagram of its own.  Passing a datagram on to the next switch is not the
core's business.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

from ftsslab.fast import xap as wire
from ftsslab.lab.model import ForwardingEntry

__all__ = [
    "Acked", "Device", "FlowKey", "Program", "ProtocolError", "SendDatagram", "TimedOut",
    "XapClient", "XapError", "XapSwitch",
]

RTO_INITIAL = 0.020  # s: a switch on the same bridge answers within a few ms
MAX_TRIES = 5  # 20 + 40 + 80 + 160 + 320 ms: given up 620 ms after the first send
MEMORY_AGE = 2.0  # s an applied request is remembered: > a client's whole retry span
MEMORY_SIZE = 4096  # applied requests remembered at most (the oldest go first)
NO_DEVICE = "0.0.0.0"  # a peer's TARGET_IP that removes the entry
IPPROTO_UDP = 17

REQUEST_OPS = (wire.XAP_OP_QUERY, wire.XAP_OP_CHANGE_CONNECTION, wire.XAP_OP_SET,
               wire.XAP_OP_REDIRECT)
_MOVES = (wire.XAP_OP_CHANGE_CONNECTION, wire.XAP_OP_REDIRECT)


class ProtocolError(Exception):
    """An event the XAP state machines do not allow (a bug in the caller)."""


class XapError(ProtocolError):
    """Misuse of the XAP API: an unknown token, a bad request, a clashing registry."""


# -- records and actions ---------------------------------------------------------------------


@dataclass(frozen=True)
class Device:
    """A registered cluster device: its nonce (the switch assigned it), own address,
    MAC and the switch port toward it."""

    name: str
    nonce: int
    ip: str
    mac: str
    port: str


@dataclass(frozen=True)
class FlowKey:
    """A client connection as the forwarding table keys it."""

    client_ip: str
    proto: int
    client_port: int
    vip: str
    vport: int

    def entry(self, device: Device) -> ForwardingEntry:
        """The forwarding entry that steers this flow to ``device`` (L2 NAT to its MAC)."""
        return ForwardingEntry(vip=self.vip, out_port=device.port, client_ip=self.client_ip,
                               proto=self.proto, client_port=self.client_port,
                               vport=self.vport, dst_mac=device.mac)


@dataclass(frozen=True)
class Program:
    """Change the kernel table: ``key`` from ``old`` (None: no entry) to ``new``; then call
    ``programmed(token)`` or ``program_failed(token)``."""

    token: int
    key: FlowKey
    old: Device | None
    new: Device | None  # None: remove the entry (a peer's mirror, D2.17)
    mirror: bool = False  # asked by a peer: the active switch's table mirrored
    serve: bool = False  # a peer's set: this switch serves the flow from now on (claim 56)


@dataclass(frozen=True)
class SendDatagram:
    dst_ip: str
    dst_port: int
    payload: bytes


@dataclass(frozen=True)
class SendOnFlow:
    """Put ``option`` (TCP option 253) on a segment of flow ``key`` toward its client."""

    key: FlowKey
    option: bytes


@dataclass(frozen=True)
class Acked:
    """The switch acked request ``xid``; ``owner_ip`` is the flow's owner it named."""

    xid: int
    owner_ip: str | None


@dataclass(frozen=True)
class TimedOut:
    """No ack for ``xid`` after the last try: the table may or may not have changed."""

    xid: int


Action = Program | SendDatagram | SendOnFlow | Acked | TimedOut


# -- the switch ------------------------------------------------------------------------------


class Txn(Enum):
    """A request (nonce, xid) at the switch; a request not remembered is NEW."""

    NEW = "new"
    PROGRAMMING = "programming"  # Program issued, the table not yet changed
    APPLIED = "applied"  # the table says what was asked; the ack is remembered


class TxnEvent(Enum):
    CHANGE = "change"  # a valid request that needs a table change
    NOOP = "noop"  # a valid request the table already satisfies
    PROGRAMMED = "programmed"
    FAILED = "failed"  # the table could not be changed: forgotten, a retry tries again
    RETRANSMIT = "retransmit"  # the same request again
    EXPIRE = "expire"  # out of the bounded memory


TXN_TRANSITIONS: dict[tuple[Txn, TxnEvent], Txn] = {
    (Txn.NEW, TxnEvent.CHANGE): Txn.PROGRAMMING,
    (Txn.NEW, TxnEvent.NOOP): Txn.APPLIED,
    (Txn.PROGRAMMING, TxnEvent.PROGRAMMED): Txn.APPLIED,
    (Txn.PROGRAMMING, TxnEvent.FAILED): Txn.NEW,
    (Txn.PROGRAMMING, TxnEvent.RETRANSMIT): Txn.PROGRAMMING,  # nothing new
    (Txn.APPLIED, TxnEvent.RETRANSMIT): Txn.APPLIED,  # acked again
    (Txn.APPLIED, TxnEvent.EXPIRE): Txn.NEW,
}

SWITCH_STATS = (
    "rx", "malformed", "other_cluster", "bad_version", "unknown_op", "bad_nonce",
    "unknown_target", "bad_proto", "busy", "duplicate", "applied", "noop", "program_failed",
    "acked",
)


@dataclass
class _Request:
    """One request at the switch, from its first copy to its expiry."""

    nonce: int
    xid: int
    what: tuple  # (op, key, target): a retransmission asks the same
    key: FlowKey
    new: Device | None
    message: dict  # the request message as parsed (its form is the ack's)
    reply: tuple[str, int]
    state: Txn = Txn.NEW
    applied_at: float = 0.0
    ack: SendDatagram | None = None

    def fire(self, event: TxnEvent) -> Txn:
        new = TXN_TRANSITIONS.get((self.state, event))
        if new is None:
            raise ProtocolError(f"XAP request nonce={self.nonce:#x} xid={self.xid:#x}: "
                                f"{event.value} while {self.state.value}")
        self.state = new
        return new


def _ipv4(text: str) -> str:
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise XapError(f"not an IPv4 address: {text!r}") from None


def _tlv_addresses(tlvs: Sequence[Mapping]) -> tuple[str | None, str | None] | None:
    """(client_ip, target_ip) of a datagram's TLVs; None when a known type is malformed
    (another length than 4, or twice).  Unknown types are skipped."""
    found: dict[str, str] = {}
    for tlv in tlvs:
        name = wire.XAP_TLV_TYPES.get(tlv["type"])
        if name is None:
            continue
        if name not in tlv or name in found:
            return None
        found[name] = tlv[name]
    return found.get("client_ip"), found.get("target_ip")


def _own_messages(messages: list[dict], cluster_ip: set[str]) -> list[dict]:
    """The messages of a path-ordered list that are this switch's (see the module doc)."""
    if messages and "cluster_id" not in messages[0]:
        return messages[:1]
    return [m for m in messages if m.get("cluster_id") in cluster_ip]


def _ack_payload(request: Mapping, client_ip: str, owner: Device | None) -> bytes:
    tlvs = [{"type": wire.XAP_TLV_CLIENT_IP, "client_ip": client_ip}]
    if owner is not None:
        tlvs.append({"type": wire.XAP_TLV_TARGET_IP, "target_ip": owner.ip})
    ack = {**request, "operation": wire.XAP_OP_ACK}
    return wire.build_xap_udp([ack], tlvs)


class XapSwitch:
    """The switch's XAP control: validates requests, asks for table changes, acks them."""

    def __init__(self, devices: Iterable[Device], vip: str, cluster_ip: str, *,
                 peers: Iterable[Device] = (), memory_age: float = MEMORY_AGE,
                 memory_size: int = MEMORY_SIZE) -> None:
        self.vip, self.cluster_ip = _ipv4(vip), _ipv4(cluster_ip)
        self._cluster_ips = {self.cluster_ip}
        self._by_nonce: dict[int, Device] = {}
        self._by_ip: dict[str, Device] = {}
        self._peers: dict[int, Device] = {}  # by nonce: they move any flow (the mirror)
        for d in devices:
            if not 0 <= d.nonce <= 0xFFFFFF:
                raise XapError(f"device {d.name}: nonce {d.nonce:#x} is not 24 bits")
            if d.nonce in self._by_nonce or _ipv4(d.ip) in self._by_ip:
                raise XapError(f"device {d.name}: nonce or address of another device")
            self._by_nonce[d.nonce] = d
            self._by_ip[_ipv4(d.ip)] = d
        for p in peers:
            if not 0 <= p.nonce <= 0xFFFFFF or p.nonce in self._by_nonce \
                    or p.nonce in self._peers:
                raise XapError(f"peer {p.name}: nonce {p.nonce:#x} not 24 bits or not unique")
            self._peers[p.nonce] = p
        self.memory_age, self.memory_size = memory_age, memory_size
        self._owners: dict[FlowKey, Device] = {}
        self._programming: dict[int, _Request] = {}  # by token
        self._busy: dict[FlowKey, int] = {}  # a flow with a Program in flight: its token
        self._requests: dict[tuple[int, int], _Request] = {}  # by (nonce, xid)
        self._applied: OrderedDict[tuple[int, int], _Request] = OrderedDict()  # oldest first
        self._tokens = 0
        self.stats: dict[str, int] = dict.fromkeys(SWITCH_STATS, 0)

    # -- the table ---------------------------------------------------------------------------

    def owner(self, key: FlowKey) -> Device | None:
        return self._owners.get(key)

    def entries(self) -> dict[FlowKey, Device]:
        return dict(self._owners)

    def placed(self, key: FlowKey, device: str) -> None:
        """An entry the switch made itself (placement of a new connection)."""
        d = next((d for d in self._by_nonce.values() if d.name == device), None)
        if d is None:
            raise XapError(f"no registered device {device!r}")
        self._owners[key] = d

    def forget(self, key: FlowKey) -> None:
        """The flow ended: its entry is gone (a Program in flight still completes)."""
        self._owners.pop(key, None)

    def adopt(self, cluster_ip: str) -> None:
        """Answer to ``cluster_ip`` too: a standby took over its active's address."""
        self._cluster_ips.add(_ipv4(cluster_ip))

    # -- events ------------------------------------------------------------------------------

    def on_datagram(self, src_ip: str, src_port: int, payload: bytes,
                    now: float) -> list[Action]:
        """An XAP datagram from ``src_ip:src_port`` (UDP 5016 at the cluster address)."""
        self.stats["rx"] += 1
        self._expire(now)
        parsed = wire.parse_xap_udp(payload)
        addresses = None if parsed is None else _tlv_addresses(parsed["tlvs"])
        if addresses is None or addresses[0] is None or not parsed["messages"]:
            self.stats["malformed"] += 1
            return []
        client_ip, target_ip = addresses
        return self._messages(parsed["messages"], client_ip, target_ip, (src_ip, src_port), now)

    def on_flow_options(self, client_ip: str, messages: Sequence[Mapping],
                        now: float) -> list[Action]:
        """XAP messages riding on a packet of the flow itself (TCP option 253, IP option
        158; parsed by ``ftsslab.fast.xap``, in path order).  No TLV fits there: the client
        is the packet's IP header's, and the target is the sender (the nonce's device)
        claiming the flow, whoever owns it now (so the caller passes only frames that
        came in on that device's port).  Acks go to the sender's own address, UDP 5016."""
        self.stats["rx"] += 1
        self._expire(now)
        return self._messages([dict(m) for m in messages], _ipv4(client_ip), None, None, now)

    def programmed(self, token: int, now: float) -> list[Action]:
        """The kernel table now holds the change of Program ``token``: ack it."""
        req = self._take(token)
        req.fire(TxnEvent.PROGRAMMED)
        if req.new is None:
            self._owners.pop(req.key, None)
        else:
            self._owners[req.key] = req.new
        self.stats["applied"] += 1
        return [self._settle(req, now)]

    def program_failed(self, token: int, why: str, now: float) -> list[Action]:
        """The table could not be changed (``why`` is for the caller's log): no ack, and
        the request is forgotten, so a retransmission tries again."""
        req = self._take(token)
        req.fire(TxnEvent.FAILED)
        del self._requests[req.nonce, req.xid]
        self.stats["program_failed"] += 1
        return []

    # -- internals ---------------------------------------------------------------------------

    def _take(self, token: int) -> _Request:
        req = self._programming.pop(token, None)
        if req is None:
            raise XapError(f"no Program with token {token} in flight")
        del self._busy[req.key]
        return req

    def _messages(self, messages: list[dict], client_ip: str, target_ip: str | None,
                  reply: tuple[str, int] | None, now: float) -> list[Action]:
        mine = _own_messages(messages, self._cluster_ips)
        self.stats["other_cluster"] += len(messages) - len(mine)
        out: list[Action] = []
        for msg in mine:
            out += self._request(msg, client_ip, target_ip, reply, now)
        return out

    def _request(self, msg: dict, client_ip: str, target_ip: str | None,
                 reply: tuple[str, int] | None, now: float) -> list[Action]:
        """One message for this switch; ``reply`` None: it rode on the flow's packets."""
        op = msg["operation"]
        if msg["version"] != wire.XAP_VERSION:
            return self._refuse("bad_version")
        if op not in REQUEST_OPS:
            return self._refuse("unknown_op")
        sender = self._by_nonce.get(msg["nonce"])
        peer = self._peers.get(msg["nonce"])
        if sender is None and (peer is None or reply is None or op == wire.XAP_OP_REDIRECT):
            return self._refuse("bad_nonce")  # (a peer mirrors, or hands a flow, by UDP)
        claim = reply is None
        if claim:  # on the flow's own packets: the sender claims the flow
            reply, target_ip = (sender.ip, wire.XAP_UDP_PORT), sender.ip
        key = FlowKey(client_ip, msg["proto"], msg["sport"], self.vip, msg["dport"])
        what = (op, key, target_ip)
        seen = self._requests.get((msg["nonce"], msg["xid"]))
        if seen is not None and seen.what == what:
            self.stats["duplicate"] += 1
            seen.fire(TxnEvent.RETRANSMIT)
            if seen.ack is None:  # still programming: its ack comes with programmed()
                return []
            self.stats["acked"] += 1
            return [seen.ack]
        if seen is not None and seen.state is Txn.PROGRAMMING:
            return self._refuse("busy")  # another request under a pending xid
        owner = self._owners.get(key)
        if op == wire.XAP_OP_QUERY:  # read only: answered now, not remembered
            self.stats["acked"] += 1
            return [SendDatagram(*reply, _ack_payload(msg, client_ip, owner))]
        if op == wire.XAP_OP_REDIRECT and key.proto != IPPROTO_UDP:
            return self._refuse("bad_proto")
        if owner is not None and owner != sender and not (claim and op in _MOVES) \
                and peer is None:
            return self._refuse("bad_nonce")  # only the owner moves (or sets) its flow
        if op == wire.XAP_OP_SET and peer is not None:
            if owner is None:
                return self._refuse("unknown_target")  # a flow the mirror never gave
            new = owner
        elif op == wire.XAP_OP_SET:
            new = sender
        elif peer is not None and target_ip == NO_DEVICE:
            new = None  # the mirror of an entry that went
        else:
            new = self._by_ip.get(target_ip or "")
            if new is None:
                return self._refuse("unknown_target")
        if key in self._busy:
            return self._refuse("busy")
        if seen is not None:  # an applied request's xid reused for another one
            self._drop(seen)
        req = _Request(msg["nonce"], msg["xid"], what, key, new, msg, reply)
        self._requests[req.nonce, req.xid] = req
        serve = peer is not None and op == wire.XAP_OP_SET
        if owner == new and not serve:
            req.fire(TxnEvent.NOOP)
            self.stats["noop"] += 1
            return [self._settle(req, now)]
        req.fire(TxnEvent.CHANGE)
        self._tokens += 1
        self._programming[self._tokens] = req
        self._busy[key] = self._tokens
        return [Program(self._tokens, key, owner, new, peer is not None, serve)]

    def _settle(self, req: _Request, now: float) -> SendDatagram:
        """Remember an applied request with its ack, and give the ack."""
        req.applied_at = now
        req.ack = SendDatagram(*req.reply, _ack_payload(req.message, req.key.client_ip,
                                                        req.new))
        self._applied[req.nonce, req.xid] = req
        while len(self._applied) > self.memory_size:
            self._drop(next(iter(self._applied.values())))
        self.stats["acked"] += 1
        return req.ack

    def _drop(self, req: _Request) -> None:
        req.fire(TxnEvent.EXPIRE)
        del self._applied[req.nonce, req.xid]
        del self._requests[req.nonce, req.xid]

    def _expire(self, now: float) -> None:
        while self._applied:
            oldest = next(iter(self._applied.values()))
            if now - oldest.applied_at <= self.memory_age:
                break
            self._drop(oldest)

    def _refuse(self, why: str) -> list[Action]:
        self.stats[why] += 1
        return []


# -- a device --------------------------------------------------------------------------------


class Req(Enum):
    """A device's request, from its first send."""

    SENT = "sent"
    ACKED = "acked"
    TIMED_OUT = "timed_out"


class ReqEvent(Enum):
    ACK = "ack"
    RETRANSMIT = "retransmit"
    GIVE_UP = "give_up"


REQ_TRANSITIONS: dict[tuple[Req, ReqEvent], Req] = {
    (Req.SENT, ReqEvent.RETRANSMIT): Req.SENT,
    (Req.SENT, ReqEvent.ACK): Req.ACKED,
    (Req.SENT, ReqEvent.GIVE_UP): Req.TIMED_OUT,
}

CLIENT_STATS = ("sent", "retransmitted", "acked", "timed_out", "malformed", "stray",
                "duplicate", "late")


@dataclass
class _Outstanding:
    xid: int
    key: FlowKey
    client_ip: str  # the key's, normalised: an ack's CLIENT_IP must equal it
    payload: bytes
    deadline: float
    rto: float
    tries: int = 1
    state: Req = Req.SENT
    on_flow: bool = False  # ``payload`` is a TCP option for the flow's packet (``claim``)

    def fire(self, event: ReqEvent) -> Req:
        new = REQ_TRANSITIONS.get((self.state, event))
        if new is None:
            raise ProtocolError(f"XAP xid {self.xid:#x}: {event.value} while {self.state.value}")
        self.state = new
        return new


class XapClient:
    """A device's XAP requests to its switch, retransmitted until acked or given up.

    ``first_xid`` should differ across restarts of the device (the switch remembers
    applied requests by nonce and xid for ``MEMORY_AGE``).  ``memory`` finished xids are
    remembered to tell a duplicate or late ack from a stray one.
    """

    def __init__(self, nonce: int, switch_ip: str, *, full_form: bool = True,
                 first_xid: int = 1, rto: float = RTO_INITIAL, tries: int = MAX_TRIES,
                 memory: int = 256) -> None:
        if not 0 <= nonce <= 0xFFFFFF:
            raise XapError(f"nonce {nonce:#x} is not 24 bits")
        self.nonce, self.switch_ip, self.full_form = nonce, _ipv4(switch_ip), full_form
        self.rto, self.tries, self.memory = rto, tries, memory
        self._next_xid = first_xid & 0xFFFF
        self._out: dict[int, _Outstanding] = {}
        self._done: OrderedDict[int, Req] = OrderedDict()
        self.stats: dict[str, int] = dict.fromkeys(CLIENT_STATS, 0)

    def request(self, op: int, key: FlowKey, target_ip: str | None,
                now: float) -> tuple[int, list[Action]]:
        """Send a request about ``key``; ``target_ip`` names the device a
        change_connection or redirect moves it to (None for query and set)."""
        if op not in REQUEST_OPS:
            raise XapError(f"not an XAP request operation: {op}")
        if (op in _MOVES) != (target_ip is not None):
            raise XapError(f"{wire.XAP_OPERATIONS[op]} {'needs' if op in _MOVES else 'takes no'}"
                           " target")
        if op == wire.XAP_OP_REDIRECT and key.proto != IPPROTO_UDP:
            raise XapError("redirect moves a UDP flow; change_connection moves others")
        xid, msg = self._message(op, key)
        tlvs = [{"type": wire.XAP_TLV_CLIENT_IP, "client_ip": _ipv4(key.client_ip)}]
        if target_ip is not None:
            tlvs.append({"type": wire.XAP_TLV_TARGET_IP, "target_ip": _ipv4(target_ip)})
        return xid, self._start(_Outstanding(xid, key, _ipv4(key.client_ip),
                                             wire.build_xap_udp([msg], tlvs),
                                             now + self.rto, self.rto))

    def claim(self, key: FlowKey, now: float) -> tuple[int, list[Action]]:
        """Claim ``key`` for this device on the flow's own packets (TCP option 253, check 20):
        a change_connection with no TLV -- the switch takes the client from the packet's IP
        header and makes the sender the owner. Acked by UDP, retransmitted like a request."""
        xid, msg = self._message(wire.XAP_OP_CHANGE_CONNECTION, key)
        return xid, self._start(_Outstanding(xid, key, _ipv4(key.client_ip),
                                             wire.build_xap_tcp_option([msg]),
                                             now + self.rto, self.rto, on_flow=True))

    def _message(self, op: int, key: FlowKey) -> tuple[int, dict]:
        """A fresh xid and the message about ``key``."""
        if not (0 <= key.proto <= 0xFF and 0 <= key.client_port <= 0xFFFF
                and 0 <= key.vport <= 0xFFFF):
            raise XapError(f"not a flow: {key}")
        if len(self._out) > 0xFFFF:
            raise XapError("every xid is in flight")
        _ipv4(key.client_ip)
        while self._next_xid in self._out:
            self._next_xid = (self._next_xid + 1) & 0xFFFF
        xid, self._next_xid = self._next_xid, (self._next_xid + 1) & 0xFFFF
        msg = {"operation": op, "nonce": self.nonce, "proto": key.proto,
               "sport": key.client_port, "dport": key.vport, "xid": xid}
        if self.full_form:
            msg["cluster_id"] = self.switch_ip
        return xid, msg

    def _start(self, out: _Outstanding) -> list[Action]:
        self._out[out.xid] = out
        self.stats["sent"] += 1
        return [self._send(out)]

    def pending(self) -> list[int]:
        """The xids awaiting an ack."""
        return list(self._out)

    def next_deadline(self) -> float | None:
        return min((o.deadline for o in self._out.values()), default=None)

    def on_timer(self, now: float) -> list[Action]:
        out: list[Action] = []
        for o in [o for o in self._out.values() if o.deadline <= now]:
            if o.tries < self.tries:
                o.fire(ReqEvent.RETRANSMIT)
                o.tries += 1
                o.rto *= 2
                o.deadline = now + o.rto
                self.stats["retransmitted"] += 1
                out.append(self._send(o))
            else:
                o.fire(ReqEvent.GIVE_UP)
                self._finish(o)
                self.stats["timed_out"] += 1
                out.append(TimedOut(o.xid))
        return out

    def on_datagram(self, src_ip: str, src_port: int, payload: bytes,
                    now: float) -> list[Action]:
        """A datagram from the switch: an ack of ours settles its request."""
        parsed = wire.parse_xap_udp(payload)
        addresses = None if parsed is None else _tlv_addresses(parsed["tlvs"])
        if addresses is None:
            self.stats["malformed"] += 1
            return []
        client_ip, owner_ip = addresses
        out: list[Action] = []
        for msg in parsed["messages"]:
            o = self._out.get(msg["xid"])
            ours = msg["operation"] == wire.XAP_OP_ACK and msg["nonce"] == self.nonce
            if ours and o is not None and self._matches(msg, client_ip, o):
                o.fire(ReqEvent.ACK)
                self._finish(o)
                self.stats["acked"] += 1
                out.append(Acked(o.xid, owner_ip))
            elif ours and o is None and msg["xid"] in self._done:
                self.stats["duplicate" if self._done[msg["xid"]] is Req.ACKED else "late"] += 1
            else:
                self.stats["stray"] += 1
        return out

    @staticmethod
    def _matches(msg: Mapping, client_ip: str | None, o: _Outstanding) -> bool:
        """An ack of ``o``'s request: its flow, as the switch echoes it."""
        return (msg["version"] == wire.XAP_VERSION and client_ip == o.client_ip
                and (msg["proto"], msg["sport"], msg["dport"])
                == (o.key.proto, o.key.client_port, o.key.vport))

    def _send(self, o: _Outstanding) -> SendDatagram | SendOnFlow:
        if o.on_flow:
            return SendOnFlow(o.key, o.payload)
        return SendDatagram(self.switch_ip, wire.XAP_UDP_PORT, o.payload)

    def _finish(self, o: _Outstanding) -> None:
        del self._out[o.xid]
        self._done[o.xid] = o.state
        self._done.move_to_end(o.xid)
        while len(self._done) > self.memory:
            self._done.popitem(last=False)
