# SPDX-License-Identifier: GPL-2.0-or-later
"""The sim twins of the NAS switch and the NAS devices (check 30): the same sans-IO cores as
the veth processes, driven by frames and the sim's virtual clock.

What runs the same code as veth: placement (``PLACEMENTS``), the forwarding table with L2 NAT
(the lab's ``SwitchCore``, as the veth switch uses the lab switch's nftables table), XAP
(``XapSwitch``/``XapClient``), TCH (``TchFirst``/``TchListener``; ``TchNode`` by messages,
predictive sessions included), HTTP (``HttpServer`` with export/resume), a switch pair
(Fig. 12: ``sim_pair.py``, the cores of ``pair.py``), the root directory
and the volume (``MemoryCatalog``), the switch's failover and balancing
(``failover_core.SwitchFailover``: heartbeats, shadows, a dead device's connections moved,
a failing or busy device asked to hand off) and a device's reports (``reports_core``: its
heartbeat, and balancing decided by the devices). A cascaded switch (``parent``) is one
device of its parent, as on veth. What the kernel does on veth is modelled: each client
connection is an ``ftsslab.lab.tcp.Tcb``, TCP_REPAIR is its snapshot carried as the veth
``TcpCheckpoint`` (``tcb.py``), the nftables hold of a frozen flow is a list of its frames; a
take-over restores a TCB from the same ``shadow.checkpoint`` (the sim's client answers the
probe byte with the dupACK a kernel sends). Both models log the events the veth processes
log (``kind``, the same fields), so ``logged`` expectations and the twin test read them alike.

Simplifications, all deterministic: nonces come from a hash of the scenario (``sim_nonces``),
not from a file; devices know the cluster's MACs from the scenario instead of asking ARP; a
frame of an unknown client flow is dropped (counted ``stray``), never answered with RST; a
cascaded switch leaves the VIP's ARP to its parent. Not modelled yet: a handoff in the
middle of an upload (refused, the connection stays), UDP flows, delayed binding's 10 s wait
for a first request, answers by proxy (``proxy_limit``), the ``tcp-option`` XAP carrier.
"""

from __future__ import annotations

import struct
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace

from ftsslab.fast.cluster import CLUSTER_UDP_PORT
from ftsslab.fast.tch import TCH_INITIATOR_OTHER, TCH_MAX_APP_STATE, TCH_UDP_PORT
from ftsslab.fast.xap import XAP_OP_CHANGE_CONNECTION, XAP_OP_QUERY, XAP_UDP_PORT
from ftsslab.lab import frames
from ftsslab.lab.backend import BackendError
from ftsslab.lab.builtin import GROUP_FWD_MASK
from ftsslab.lab.model import ForwardingEntry, Node, Scenario
from ftsslab.lab.sim import node_ifaces
from ftsslab.lab.switch import SwitchCore, Transmit
from ftsslab.lab.tcp import ACK, FIN, RST, SYN, Tcb, TcpState
from ftsslab.lab.tcp import decode as decode_tcp

from . import http, shadow, tch, xap
from . import tch_messages as tm
from .cluster import Cluster, Placement, bridge_mac, cluster_of, file_bytes
from .device import PREDICTIVE_KEEPALIVE
from .failover_core import Log, Program, SwitchFailover, asked_to
from .giver import DRAIN_LIMIT, MESSAGES_DRAIN_LIMIT, TCH_PORTS, TCH_RETRIES
from .half import ReceiveHalf, SendHalf
from .repair import TcpCheckpoint
from .reports_core import DeviceReports
from .segment import Segment, decode
from .sim_base import EventLog as _Log
from .sim_base import due as _due
from .sim_base import stable_hash as _hash
from .sim_half import HalfHandoffs
from .sim_pair import MIRROR_PORT, ActiveSim, StandbySim
from .taker import TAKEOVER_PROBES, TAKEOVER_WAIT
from .tcb import checkpoint, snapshot
from .volume import MemoryCatalog, RootDirectory, Upload

LINGER = 2.0  # seconds an ended connection's entry stays (as ``switchd.LINGER``)
XAP_PORT = 40500  # a device's own UDP port for XAP (an ephemeral port on veth)
IPPROTO_TCP = 6


def sim_nonces(cluster: Cluster) -> dict[str, int]:
    """The switch's registration in the sim: one distinct non-zero 24-bit nonce per device;
    of a pair (Fig. 12), the active's, which has one for itself too (its mirror's)."""
    pair = cluster.pair
    active = pair.partner if pair is not None and pair.standby else cluster.switch
    nonces: dict[str, int] = {}
    for name in [*sorted(cluster.devices), *([active] if pair is not None else [])]:
        n, salt = 0, 0
        while n in (0, *nonces.values()):
            n, salt = _hash(active, name, salt, bits=24), salt + 1
        nonces[name] = n
    return nonces


def _ports(packet: bytes, ihl: int) -> tuple[int, int, int] | None:
    """(sport, dport, TCP flags or 0) of the transport header at ``ihl``, if it has ports."""
    if len(packet) < ihl + 4:
        return None
    sport, dport = struct.unpack_from("!HH", packet, ihl)
    return sport, dport, packet[ihl + 13] if len(packet) >= ihl + 14 else 0


# ---- what both hand off -----------------------------------------------------------------------


@dataclass
class _Conn:
    """One client connection served here (``device.Client`` on veth)."""

    tcb: Tcb
    core: http.HttpServer
    client: tuple[str, int]
    out: bytearray = field(default_factory=bytearray)  # SendBytes not yet in the TCB
    chunk: tuple[str, int, bytes] | None = None  # SendFile: path, offset, bytes left
    closing: bool = False
    eof: bool = False  # the client's FIN was given to the core
    gift: _Gift | None = None
    since: float = 0.0  # here since (load balancing)
    # the switch's ``predictive``: a TCH session per other device from the start (check 16)
    predictive: dict[str, tm.FirstDevice] = field(default_factory=dict)
    # a connection split by direction (``sim_half.py``): the half held here, its session
    send: SendHalf | None = None
    recv: ReceiveHalf | None = None
    split: tm.Session | None = None
    mute: bool = False  # Fig. 8's first device: "cannot send acknowledgments to the client"
    hold: bool = False  # the second device: no writes yet (Fig. 7: till Done, 8: Complete)


@dataclass
class _Gift:
    """One connection being given away (``giver.Gift`` on veth)."""

    conn: _Conn
    to: str
    tch: tch.TchFirst | None  # None: by messages (``session``, from the freeze on)
    reason: str
    started: float
    drain_until: float | None = None
    frozen: bool = False
    cp: TcpCheckpoint | None = None
    exported: bytes = b""
    held: list[bytes] = field(default_factory=list)
    xid: int | None = None
    xid_op: str = ""
    session: tm.FirstDevice | None = None
    relay_asked: bool = False
    relaying: bool = False
    relayed: int = 0
    half: str = ""  # a half-handoff: "half-client" (Fig. 7) or "half-cluster" (Fig. 8)
    split_seq: int | None = None  # Fig. 8: our SND.NXT when the second device took over

    @property
    def name(self) -> str:
        return f"{self.conn.client[0]}:{self.conn.client[1]}"

    @property
    def pausing(self) -> bool:
        if self.half == "half-client":
            return False  # "the first device will continue to transfer data to the client"
        return self.tch is None or self.tch.state not in (tch.FirstState.IDLE,
                                                          tch.FirstState.SYN_SENT)


@dataclass
class _Incoming:
    """Second device: restored (REPAIR), not yet morphed."""

    tcb: Tcb
    exported: bytes
    client: tuple[str, int]
    held: int = 0  # client segments kept in repair mode (the veth device's held frames)
    replay: tuple[bytes, int] | None = None  # a take-over's: the client's bytes, skip


@dataclass
class _Taking:
    """Second device, take-over (``taker.Taking`` on veth): a dead device's connection from
    the switch's shadow, while the client is asked where its stream is."""

    sh: shadow.Shadow
    session: tm.SecondDevice
    tries: int = 0
    next_probe: float | None = None
    caught: list = field(default_factory=list)  # the client's segments meanwhile

    @property
    def client(self) -> tuple[str, int]:
        return self.sh.client_ip, self.sh.client_port


class _FirstDevice(ABC):
    """The first device's half of a handoff (``giver.Giver`` on veth), shared by a device and
    the switch (delayed binding): open the TCH session while the connection runs, freeze it
    once the client acked what was written, send checkpoint + HTTP state and SET, reprogram
    the switch on the second's SET (``_switch_to``), END; then the owner's ``_given``."""

    cluster: Cluster
    node: str
    tch_ip: str  # this side's address on TCH sessions
    log: _Log
    conns: dict[tuple[str, int], _Conn]
    gifts: dict[tuple[str, int], _Gift]  # by (second's ip, our TCH port)
    holding: dict[tuple[str, int], _Gift]  # frozen client flows
    _port: int
    _tx: list[Transmit]

    @abstractmethod
    def _send_tch(self, seg: Segment) -> None:
        """Put a TCH segment on the wire toward its destination."""

    @abstractmethod
    def _switch_to(self, gift: _Gift, now: float) -> None:
        """The second device restored: point the switch at it, then ``switch_updated``."""

    @abstractmethod
    def _given(self, gift: _Gift, given: bool, now: float) -> None:
        """The handoff is over; ``given``: the second device serves the client."""

    def _give(self, cl: _Conn, to: str, reason: str, now: float) -> bool:
        if cl.gift is not None:
            return True
        if cl.tcb.state is not TcpState.ESTABLISHED:  # check 11: not in set-up or tear-down
            self.log.event("handoff-refused", client=f"{cl.client[0]}:{cl.client[1]}", to=to,
                           tcp_state=cl.tcb.state.name)
            return False
        dev = self.cluster.devices[to]
        port = self._next_port()
        if self.cluster.tch == "messages":  # freeze first, then Open (``udp_tch.py``)
            gift = cl.gift = _Gift(cl, to, None, reason, now,
                                   drain_until=now + MESSAGES_DRAIN_LIMIT)
            self.gifts[(dev.ip, port)] = gift
            self.log.event("handoff-start", client=gift.name, to=to, reason=reason,
                           tch="messages")
            self._try_freeze(gift, now)
            return True
        first = tch.TchFirst((self.tch_ip, port), (dev.ip, self.cluster.vport), cl.client,
                             _hash(self.node, cl.client, port, now), max_retries=TCH_RETRIES)
        gift = cl.gift = _Gift(cl, to, first, reason, now)
        self.gifts[(dev.ip, port)] = gift
        self.log.event("handoff-start", client=gift.name, to=to, reason=reason)
        self._first(gift, first.open(now), now)
        return True

    def _next_port(self) -> int:
        busy = {p for _, p in self.gifts}
        while True:
            lo, hi = TCH_PORTS
            self._port = lo + (self._port + 1 - lo) % (hi - lo + 1)
            if self._port not in busy:
                return self._port

    def _try_freeze(self, gift: _Gift, now: float) -> None:
        """Freeze once the client acked what was written (or after the drain limit)."""
        if gift.frozen or gift.tch is not None and gift.tch.state is not \
                tch.FirstState.ESTABLISHED:
            return
        cl = gift.conn
        late = gift.drain_until is None or now >= gift.drain_until
        if cl.out or (cl.tcb.unacked and not late):
            return
        if cl.tcb.state is not TcpState.ESTABLISHED or cl.core.uploading is not None:
            why = "a partial upload (not modelled in the sim)" if cl.core.uploading else \
                cl.tcb.state.name
            self.log.event("handoff-refused", client=gift.name, to=gift.to, why=why)
            self._resume(gift, now)
            return
        gift.cp = cp = checkpoint(cl.tcb.snapshot(), now)
        gift.exported = cl.core.export()
        cl.tcb.drop()
        self.conns.pop(cl.client, None)
        self.holding[cl.client] = gift
        gift.frozen = True
        state = cp.pack()
        self.log.event("freeze", client=gift.name, to=gift.to, snd_nxt=cp.snd_nxt,
                       rcv_nxt=cp.rcv_nxt, send_queue=len(cp.send_queue),
                       recv_queue=len(cp.recv_queue))
        carried = struct.pack(">I", len(state)) + state + gift.exported
        if gift.tch is not None:
            self._first(gift, gift.tch.handoff(carried, (cp.snd_nxt, cp.rcv_nxt), now), now)
        elif len(carried) > TCH_MAX_APP_STATE:
            self.log.event("handoff-refused", client=gift.name, to=gift.to,
                           why=f"{len(carried)} bytes of state, an Open carries "
                               f"{TCH_MAX_APP_STATE}")
            self._finish(gift, False, "KEPT", "state too large for an Open", now)
        else:  # (``udp_tch.MessageGiver._frozen``)
            block = tm.state_block(cp)
            ready = {n: s for n, s in cl.predictive.items()
                     if tm.Event.HANDOFF in s.expecting()}
            for name, s in ready.items():
                if name != gift.to:  # check 16: Fail(superseded) to the others
                    self._messages(s.release(now), now)
            if gift.to in ready:  # D2.8: the predictive session becomes the handoff
                gift.session = ready[gift.to]
                self._messages(gift.session.handoff(block, now, app_state=carried), now)
                return
            gift.session, acts = self.tch_node.open(
                self.cluster.devices[gift.to].ip, tm.Kind.FULL, block, now, app_state=carried)
            self._messages(acts, now)

    def _resume(self, gift: _Gift, now: float) -> None:
        """The handoff does not happen: the connection stays (never frozen)."""
        if gift.tch is not None:
            self._first(gift, gift.tch.resume(now), now)
        else:
            self._finish(gift, False, "KEPT", "not handed off", now)

    def _messages(self, actions: list, now: float) -> None:
        """The second embodiment's actions (``udp_tch.TchPort``): datagrams out, transitions
        logged, each session's requests to its role."""
        raise NotImplementedError  # devices only: the switch hands off by segments

    def _first(self, gift: _Gift, actions: list, now: float) -> None:
        for a in actions:
            if isinstance(a, tch.Send):
                self._send_tch(a.segment)
            elif isinstance(a, tch.StateChanged):
                self.log.event("tch", role=a.role, old=a.old.name, new=a.new.name, why=a.why)
                if a.new is tch.FirstState.ESTABLISHED and a.old is not a.new:
                    gift.drain_until = now + DRAIN_LIMIT
                    self._try_freeze(gift, now)
            elif isinstance(a, tch.Reprogram):
                self._switch_to(gift, now)
            elif isinstance(a, tch.Finished):
                self._finish(gift, a.outcome is tch.Outcome.HANDED_OFF, a.outcome.name,
                             a.reason, now)

    def _finish(self, gift: _Gift, given: bool, outcome: str, reason: str, now: float) -> None:
        self.gifts = {k: g for k, g in self.gifts.items() if g is not gift}
        self.holding.pop(gift.conn.client, None)
        cl = gift.conn
        cl.gift = None
        half = {"type": gift.half} if gift.half else {}
        self.log.event("handoff-end", client=gift.name, to=gift.to, outcome=outcome,
                       reason=reason, held=len(gift.held),
                       relayed=len(gift.held) if given else 0,
                       ms=round((now - gift.started) * 1000, 3), **half)
        self._given(gift, given, now)

    def _gift_deadlines(self) -> list[float | None]:
        return [*(g.tch.next_deadline() for g in self.gifts.values() if g.tch is not None),
                *(g.drain_until for g in self.gifts.values() if not g.frozen)]

    def _gift_timers(self, now: float) -> None:
        for gift in list(self.gifts.values()):
            if gift.tch is not None and (t := _due(gift.tch.next_deadline(), now)) is not None:
                self._first(gift, gift.tch.on_timer(t), t)
            elif not gift.frozen and (t := _due(gift.drain_until, now)) is not None:
                gift.drain_until = None  # drained or not, it freezes now
                self._try_freeze(gift, t)


# ---- the switch ------------------------------------------------------------------------------


class NasSwitchSim(_FirstDevice):
    """``nas-switch`` in the sim: the VIP's ARP, placement, XAP, the table and its expiry;
    with ``placement: delayed`` it accepts connections itself, reads the first request and
    hands each to the root directory's device as the first device (``switchd.py``)."""

    def __init__(self, node: Node, scenario: Scenario) -> None:
        c = self.cluster = cluster_of(scenario, node.name)
        self.node, self.tch_ip = node.name, c.control_ip
        self.parent = node.options.get("parent")
        self.delayed = c.placement == "delayed"
        self.root = RootDirectory(c.root) if c.root else None
        ifaces = node_ifaces(node.name, scenario)
        self.mac = bridge_mac(scenario, node.name)
        nonces = sim_nonces(c)
        self.devices = {d.name: xap.Device(d.name, nonces[d.name], d.ip, d.mac, d.switch_port)
                        for d in c.devices.values()}
        standby = c.pair is not None and c.pair.standby
        peers = [xap.Device(c.pair.partner, nonces[c.pair.partner], c.pair.partner_ip, "",
                            c.pair.port)] if standby else []
        self.xap = xap.XapSwitch(self.devices.values(), c.vip, c.control_ip, peers=peers)
        self.addresses = {c.control_ip}  # (a standby that took over: the active's too)
        self.device_ports = {d.switch_port for d in c.devices.values()}
        self.log = _Log(node.name)
        self.pair: ActiveSim | StandbySim | None = None  # Fig. 12
        if c.pair is not None:
            self.pair = StandbySim(self, scenario) if standby else \
                ActiveSim(self, scenario, nonces[c.switch])
        self.core = SwitchCore([i for i, _ in ifaces], local_macs=[m for _, m in ifaces],
                               group_fwd_mask=GROUP_FWD_MASK, name=node.name,
                               table_ports=self.pair and self.pair.table_ports())
        self.internal = {c.control_ip, *(d.ip for d in c.devices.values())}
        self.placement = Placement(self.cluster.placement)
        self.tch_node = tm.TchNode(c.control_ip, keepalive=None)  # failover's sessions
        self.failover = SwitchFailover(c, self.devices, self.xap, self.placement,
                                       self.tch_node, 0.0) if c.failover else None
        self.alive = True
        self.closing: dict[xap.FlowKey, set[str]] = {}
        self.expiry: list[tuple[float, xap.FlowKey]] = []
        self.programmed: dict[xap.FlowKey, ForwardingEntry] = {}
        self.counters = {"syn_placed": 0, "syn_seen_with_entry": 0, "xap_rx": 0,
                         "dropped_internal": 0, "dropped_place": 0, "bound": 0,
                         "bind_failed": 0}
        # delayed binding: the connections the switch accepted, by client
        self.conns: dict[tuple[str, int], _Conn] = {}
        self.gifts: dict[tuple[str, int], _Gift] = {}
        self.holding: dict[tuple[str, int], _Gift] = {}
        self.clients: dict[str, tuple[str, bytes]] = {}  # client ip -> (port, MAC)
        self._port = TCH_PORTS[0]
        self._tx: list[Transmit] = []

    # the lab's table interface (``table`` steps and expectations)
    def entries(self) -> list[ForwardingEntry]:
        return self.core.entries()

    def add(self, entry: ForwardingEntry, now: float):
        return self.core.add(entry, now)

    def remove(self, entry: ForwardingEntry, now: float):
        return self.core.remove(entry, now)

    def set_port(self, iface: str, up: bool) -> None:
        self.core.set_port(iface, up)

    def on_link(self, iface: str, up: bool, now: float) -> list[Transmit]:
        """A link's carrier changed: an active switch of a pair reroutes (policy (c))."""
        self.log.now = now
        if isinstance(self.pair, ActiveSim) and self.alive:
            self.pair.on_link(iface, up, now)
        return self._flush()

    @property
    def serving(self) -> bool:
        """Places and answers for the VIP: alive, and not a standby that has not taken over."""
        return self.alive and not (isinstance(self.pair, StandbySim) and not self.pair.active)

    def handoff(self, to: str, client_port: int | None, now: float,
                htype: str = "full") -> tuple[str, list[Transmit]]:
        """A ``handoff`` step: an active switch of a pair hands a session to its partner."""
        self.log.now = now
        if not isinstance(self.pair, ActiveSim):
            raise ValueError(f"{self.node} hands sessions only to a standby of its own (a "
                             f"nas-switch with standby: {self.node}), and has none")
        return self.pair.handoff(to, client_port, now, htype), self._flush()

    def on_kill(self, now: float) -> list[Transmit]:
        self.alive = False  # the kernel's bridge, table and ARP go on; placement and XAP stop
        return []

    def on_restart(self, now: float) -> list[Transmit]:
        if self.pair is not None:  # (nor on veth: it would learn its partner's table first)
            raise BackendError(f"{self.node}: a switch of a pair (Fig. 12) coming back is not "
                               "modelled")
        self.alive = True
        return []

    def node_events(self) -> list[dict]:
        return list(self.log.events)

    def report(self) -> dict:
        return {"events": self.node_events(),
                "entries": [{"client": f"{k.client_ip}:{k.client_port}", "proto": k.proto,
                             "vip": f"{k.vip}:{k.vport}", "device": d.name}
                            for k, d in self.xap.entries().items()],
                "stats": {**self.counters, **{f"xap_{k}": v for k, v in self.xap.stats.items()}}}

    # frames
    def on_frame(self, port: str, frame: bytes, now: float) -> list[Transmit]:
        self.log.now = now
        c = self.cluster
        out: list[Transmit] = []
        arp = frames.parse_arp(frame)
        # a cascaded switch leaves the VIP's ARP to its parent (on veth the parent's answer
        # comes first, and the kernel keeps it for its locktime)
        idle = isinstance(self.pair, StandbySim) and not self.pair.active  # (no VIP yet)
        vip = () if self.parent or idle else (c.vip,)
        unbridged = self.pair is not None and self.pair.unbridged(port)
        if arp is not None and arp.op == 1 and arp.target_ip in (*vip, *self.addresses) \
                and not unbridged:
            out.append(Transmit(port, frames.arp_reply(arp, self.mac)))
        packet = frames.ip_payload(frame)
        head = frames.ip_header(packet) if packet is not None else None
        if head is not None:
            verdict = self._inspect(port, frame, packet, head, now)
            if verdict is not None:
                return out + verdict
        if unbridged:  # (its packet sockets saw it; the bridge does not have the port)
            return out
        if isinstance(self.pair, StandbySim) and head is not None:
            ihl, proto = head[0], head[2]
            served = self.pair.served_frame(port, head, _ports(packet, ihl) if proto in (
                IPPROTO_TCP, frames.IPPROTO_UDP) else None, frame)
            if served is not None:
                return [*out, served]
        client_ports = set(c.client_ports)
        for tx in self.core.on_frame(port, frame, now):
            if tx.port in client_ports and head is not None and head[3] in self.internal \
                    and head[4] in self.internal:
                continue  # cluster-internal traffic never leaves by a client port
            if self.pair is None or not self.pair.unbridged(tx.port):
                out.append(tx)
        return out

    def _inspect(self, port: str, frame: bytes, packet: bytes, head: tuple,
                 now: float) -> list[Transmit] | None:
        """The control plane's look at an IPv4 frame: what it does instead of the bridge
        (a list), or None to let the table and bridge have it."""
        c = self.cluster
        ihl, _, proto, src, dst = head
        from_client = port in c.client_ports
        ports = _ports(packet, ihl) if proto in (IPPROTO_TCP, frames.IPPROTO_UDP) else None
        if from_client and (dst in self.internal or (
                dst == c.vip and proto == frames.IPPROTO_UDP and ports is not None
                and ports[1] in (XAP_UDP_PORT, 4494))):
            self.counters["dropped_internal"] += 1
            return []
        if proto == frames.IPPROTO_UDP and dst in self.addresses:
            d = frames.parse_udp(packet)
            if d is None or not self.alive:
                return []
            if d.dport == XAP_UDP_PORT:
                self.counters["xap_rx"] += 1
                self._xap(self.xap.on_datagram(d.src, d.sport, d.payload, now), now, dst)
            elif isinstance(self.pair, StandbySim) and d.dport == CLUSTER_UDP_PORT:
                self.pair.heard(d.src, d.payload, now)
            elif isinstance(self.pair, ActiveSim) and d.dport == MIRROR_PORT:
                self.pair.on_ack(d.src, d.payload, now)
            elif self.failover is not None and d.dport == CLUSTER_UDP_PORT:
                self._failover(self.failover.heard(d.payload, d.src, now), now)
            elif self.failover is not None and d.dport == TCH_UDP_PORT:
                self._sessions(self.tch_node.on_datagram(d.src, d.payload, now), now)
            return self._flush()
        if proto != IPPROTO_TCP or ports is None:
            return None
        sport, dport, flags = ports
        if self.failover is not None:
            self._shadow(packet, from_client, src, sport, dst, dport, flags)
        if dst == c.control_ip and c.vport in (sport, dport) and not from_client:
            seg = decode(packet)  # TCH from a device: delayed binding's sessions
            gift = self.gifts.get((seg.src, seg.dport)) if seg is not None else None
            if gift is not None:
                self._first(gift, gift.tch.on_segment(seg, now), now)
            return self._flush()
        if from_client and dst == c.vip and dport == c.vport:
            key = xap.FlowKey(src, IPPROTO_TCP, sport, c.vip, c.vport)
            if self.delayed and self.xap.owner(key) is None:
                self.clients[src] = (port, frame[6:12])
                seg = decode(packet)
                if seg is not None:
                    self._bind(seg, frame, now)
                return self._flush()
            if flags & (SYN | ACK) == SYN:
                self.closing.pop(key, None)  # a new connection on a lingering entry
                if self.xap.owner(key) is not None:
                    self.counters["syn_seen_with_entry"] += 1
                elif not self.serving:
                    self.counters["dropped_place"] += 1
                    return []
                else:
                    dev = self._choose()
                    self._program(key, None, dev, "placed", now)
                    self.xap.placed(key, dev.name)
                    self.counters["syn_placed"] += 1
            if flags & (FIN | RST):
                self._end(key, "rst" if flags & RST else "client", now)
        elif (port in self.device_ports or isinstance(self.pair, ActiveSim)
              and port == c.pair.port) and src == c.vip and sport == c.vport and \
                flags & (FIN | RST):  # (a device's; through the partner when rerouted)
            key = xap.FlowKey(dst, IPPROTO_TCP, dport, c.vip, c.vport)
            self._end(key, "rst" if flags & RST else "device", now)
        return None

    def _shadow(self, packet: bytes, from_client: bool, src: str, sport: int, dst: str,
                dport: int, flags: int) -> None:
        """What failover's shadows read (``failover.py``'s packet sockets on veth): client
        SYNs and client segments with data to the VIP, devices' SYN/ACKs from it."""
        c = self.cluster
        if from_client and dst == c.vip and dport == c.vport:
            seg = decode_tcp(packet)
            if seg is not None and (seg.payload or flags & (SYN | ACK) == SYN):
                self.failover.on_client(seg)
        elif not from_client and src == c.vip and sport == c.vport and flags & SYN:
            seg = decode_tcp(packet)
            if seg is not None:
                self.failover.on_device(seg)

    def _failover(self, actions: list, now: float) -> None:
        """The failover core's actions (``failover.Failover._apply`` on veth)."""
        for a in actions:
            if isinstance(a, Log):
                self.log.event(a.kind, **a.detail)
            elif isinstance(a, Program):
                self._program(a.key, a.old, a.new, a.why, now)
            else:
                self._sessions([a], now)

    def _sessions(self, actions: list, now: float) -> None:
        """The switch's TCH port (``udp_tch.TchPort`` on veth): datagrams out, transitions
        logged, each session's actions to the failover core."""
        for a in actions:
            if isinstance(a, tm.Send):
                self._udp(a.peer, TCH_UDP_PORT, a.data)
                continue
            if isinstance(a, tm.StateChanged):
                self.log.event("tch", role=a.role, old=a.old.name, new=a.new.name, why=a.why,
                               session=f"{a.session_id:#010x}", peer=a.peer)
            s = next((x for (_, sid), x in self.tch_node.sessions.items()
                      if sid == a.session_id), None)
            if s is not None:
                self._failover(self.failover.on_session(s, a, now), now)

    def _udp(self, dst_ip: str, port: int, payload: bytes) -> None:
        dev = self.cluster.by_ip(dst_ip)
        if dev is not None:
            udp = frames.udp_packet(frames.Datagram(self.cluster.control_ip, dst_ip, port, port,
                                                    payload))
            self._tx.append(Transmit(dev.switch_port, frames.ether(
                dev.mac, self.mac, frames.ETH_P_IP, udp)))

    def _end(self, key: xap.FlowKey, who: str, now: float) -> None:
        """FIN from both sides or a RST: the entry goes ``LINGER`` s later."""
        if self.xap.owner(key) is None:
            return
        seen = self.closing.setdefault(key, set())
        seen |= self.pair.paths.ends(key, who) if isinstance(self.pair, ActiveSim) else {who}
        if "rst" in seen or {"client", "device"} <= seen:
            self.expiry.append((now + LINGER, key))

    def next_deadline(self) -> float | None:
        times = [*(t for t, _ in self.expiry), *self._gift_deadlines(),
                 *(cl.tcb.next_deadline() for cl in self.conns.values()),
                 self.tch_node.next_deadline(),
                 self.pair.next_deadline() if self.pair is not None and self.alive else None,
                 self.failover.next_deadline() if self.failover is not None else None]
        return min((t for t in times if t is not None), default=None)

    def on_timer(self, now: float) -> list[Transmit]:
        self.log.now = now
        for cl in list(self.conns.values()):
            if (t := _due(cl.tcb.next_deadline(), now)) is not None:
                self._send_tcp(cl.tcb.on_timer(t))
                if cl.tcb.state is TcpState.CLOSED:
                    self.conns.pop(cl.client, None)
        self._gift_timers(now)
        if self.failover is not None and \
                (t := _due(self.failover.next_deadline(), now)) is not None:
            self._failover(self.failover.on_timer(t), t)
        if (t := _due(self.tch_node.next_deadline(), now)) is not None:
            self._sessions(self.tch_node.on_timer(t), t)
        if self.pair is not None and self.alive and \
                (t := _due(self.pair.next_deadline(), now)) is not None:
            self.pair.on_timer(t)
        due = [k for t, k in self.expiry if _due(t, now) is not None]
        self.expiry = [(t, k) for t, k in self.expiry if _due(t, now) is None]
        for key in due:
            dev = self.xap.owner(key)
            if self.closing.pop(key, None) is None or dev is None:
                continue
            entry = self.programmed.pop(key, None)
            if entry is not None and entry in self.core.entries():
                self.core.remove(entry, now)
            self.xap.forget(key)
            if self.failover is not None:
                self.failover.forget(key)
            if isinstance(self.pair, ActiveSim):
                self.pair.on_table(key, None, now)
            self.log.event("table", why="closed", client=f"{key.client_ip}:{key.client_port}",
                           old=dev.name, new=None)
        return self._flush()

    # ---- delayed binding (the switch as the first device, B2.3) -------------------------------

    def _bind(self, seg: Segment, frame: bytes, now: float) -> None:
        """A client segment of a connection without an entry: the switch's own TCB."""
        client = (seg.src, seg.sport)
        if (gift := self.holding.get(client)) is not None:
            gift.held.append(frame)
            return
        cl = self.conns.get(client)
        if cl is None:
            if seg.flags & (SYN | ACK | RST) != SYN or not self.alive:
                return
            tcb, segs = Tcb.accept(seg, _hash(self.node, client, now), now)
            self.conns[client] = _Conn(tcb, http.HttpServer(MemoryCatalog()), client)
            self._send_tcp(segs)
            return
        self._send_tcp(cl.tcb.on_segment(seg, now))
        if cl.tcb.state is TcpState.CLOSED:
            self.conns.pop(client, None)
        elif cl.gift is None and cl.tcb.received:
            self._peek(cl, now)

    def _peek(self, cl: _Conn, now: float) -> None:
        """The first request, read without taking it: its path picks the device; the bytes
        stay in the TCB and travel in the checkpoint's receive queue."""
        data = bytes(cl.tcb.received)
        req = http.peek_request(data)
        if req is None:
            if len(data) >= http.MAX_HEAD or b"\r\n\r\n" in data:  # not one we can place
                self.counters["bind_failed"] += 1
                self._send_tcp(cl.tcb.close(now))
            return
        owner = self.root.owner(req.path or "/") if self.root else None
        dev = self.devices.get(owner) or self._choose()
        self.log.event("bind", client=f"{cl.client[0]}:{cl.client[1]}", path=req.path,
                       device=dev.name)
        if not self._give(cl, dev.name, f"delayed binding {req.path}", now):
            self.counters["bind_failed"] += 1
            self._send_tcp(cl.tcb.close(now))

    def _switch_to(self, gift: _Gift, now: float) -> None:
        """The switch is the first device: it changes its own table, no XAP needed."""
        c, client = self.cluster, gift.conn.client
        key = xap.FlowKey(client[0], IPPROTO_TCP, client[1], c.vip, c.vport)
        dev = self.devices[gift.to]
        self._program(key, None, dev, "delayed", now)
        self.xap.placed(key, dev.name)
        self._first(gift, gift.tch.switch_updated(now), now)

    def _given(self, gift: _Gift, given: bool, now: float) -> None:
        self.counters["bound" if given else "bind_failed"] += 1
        cl = gift.conn
        if given:  # the held frames follow the new entry, in arrival order
            port = self.clients[cl.client[0]][0]
            for frame in gift.held:
                self._tx += self.core.on_frame(port, frame, now)
            return
        if gift.frozen:  # the device did not take it: the switch serves no files
            tcb = Tcb.restore(snapshot(gift.cp))
            cl = self.conns[cl.client] = _Conn(tcb, cl.core, cl.client)
            self._send_tcp(tcb.leave_repair(now))
        self._send_tcp(cl.tcb.close(now))

    def _send_tcp(self, segs: list) -> None:
        for seg in segs:
            port, mac = self.clients[seg.dst]
            self._tx.append(Transmit(port, frames.ether(mac, self.mac, frames.ETH_P_IP,
                                                        seg.encode())))

    def _send_tch(self, seg: Segment) -> None:
        dev = self.cluster.by_ip(seg.dst)
        if dev is not None:
            self._tx.append(Transmit(dev.switch_port, frames.ether(
                dev.mac, self.mac, frames.ETH_P_IP, seg.encode())))

    def _flush(self) -> list[Transmit]:
        out, self._tx = self._tx, []
        return out

    def _choose(self) -> xap.Device:
        devices = self.devices if self.failover is None else self.failover.live() or self.devices
        return self.placement.choose(devices, self.xap.entries().values())

    def _program(self, key: xap.FlowKey, old: xap.Device | None, new: xap.Device | None,
                 why: str, now: float) -> None:
        """Point the flow's entry at ``new`` (None: remove it; the new entry first: no frame
        sees none); an active switch of a pair takes the flow's path (``Paths.route``)."""
        entry = None
        if new is not None:
            entry = key.entry(new)
            if isinstance(self.pair, ActiveSim):
                port, mac = self.pair.route(key, new)
                entry = replace(entry, out_port=port, dst_mac=mac)
            self.core.add(entry, now)
        stale = self.programmed.pop(key, None)
        if stale is not None and stale in self.core.entries():
            self.core.remove(stale, now)
        if entry is not None:
            self.programmed[key] = entry
        elif isinstance(self.pair, StandbySim):
            self.pair.unserve(key)
        if self.failover is not None and new is not None:
            self.failover.on_table(key, new.name, now)
        if isinstance(self.pair, ActiveSim):
            self.pair.on_table(key, new, now)
        self.log.event("table", why=why, client=f"{key.client_ip}:{key.client_port}",
                       old=old.name if old else None, new=new.name if new else None)

    def _xap(self, actions: list, now: float, at: str) -> None:
        """The XAP core's actions; acks leave from ``at``, the address the request came to."""
        for a in actions:
            if isinstance(a, xap.Program):
                if a.serve:  # a session the active hands to this switch (claim 56)
                    self.pair.serve(a.key, a.new)
                else:
                    self._program(a.key, a.old, a.new, "mirror" if a.mirror else "xap", now)
                self._xap(self.xap.programmed(a.token, now), now, at)
            elif isinstance(a, xap.SendDatagram):
                udp = frames.udp_packet(frames.Datagram(at, a.dst_ip, XAP_UDP_PORT, a.dst_port,
                                                        a.payload))
                dev = next((d for d in self.devices.values() if d.ip == a.dst_ip), None)
                if dev is not None:
                    self._tx.append(Transmit(dev.port, frames.ether(
                        dev.mac, self.mac, frames.ETH_P_IP, udp)))
                elif self.pair is not None and a.dst_ip == self.cluster.pair.partner_ip:
                    self._tx.append(Transmit(self.cluster.pair.port, frames.ether(
                        self.pair.partner_mac, self.mac, frames.ETH_P_IP, udp)))


# ---- a device --------------------------------------------------------------------------------


class NasDeviceSim(HalfHandoffs, _FirstDevice):
    """``nas`` in the sim: serves its volume over HTTP on modelled TCBs, hands connections off
    and takes them over by TCH, reprograms the switch by XAP.

    With ``tcp: user`` the same model is the veth device's (``userdevice.py``): there its TCBs
    are the device's real TCP, so ``tcb_options`` and ``decode_client`` are the veth driver's."""

    tcb_options: dict = {}  # noqa: RUF012 (the sim's: no TCP options, as the sim's clients)
    decode_client = staticmethod(decode)

    def __init__(self, node: Node, scenario: Scenario) -> None:
        c = self.cluster = cluster_of(scenario, node.name)
        self.node, self.me = node.name, c.devices[node.name]
        self.tch_ip = self.me.ip
        self.switch_mac = frames.mac_bytes(bridge_mac(scenario, c.switch))
        self.mac = frames.mac_bytes(self.me.mac)
        # its links: to the switch, and of a pair (Fig. 12) to the standby -- by its kernel's
        # routes, used only while the first is down, and each connection answered over the
        # link its client's frames come in on (``pair.follow_paths``)
        self.links = {self.me.iface: True, **({self.me.alt_iface: True} if self.me.alt_iface
                                              else {})}
        self.own_macs = {self.me.iface: self.mac, **({self.me.alt_iface: frames.mac_bytes(
            self.me.alt_mac)} if self.me.alt_iface else {})}
        self.paths: dict[tuple[str, int], str] = {}  # client -> the link it comes in on
        self.redirect = node.options["redirect"]
        self.user_tcp = node.options.get("tcp") == "user"
        self.user_peers = {n for n in c.devices if scenario.node(n).options.get("tcp") == "user"}
        if c.xap_carrier != "udp":
            raise BackendError(f"switch {c.switch}: xap: {c.xap_carrier} is not modelled in "
                               "the sim yet: run it with backend: veth")
        for opt in ("proxy_limit", "ask_above"):
            if node.options.get(opt) is not None:
                raise BackendError(f"node {node.name}: {opt} (answers by proxy) is not "
                                   "modelled in the sim yet: run it with backend: veth")
        self.storage = MemoryCatalog({p: file_bytes(s) for p, s in node.options["files"].items()})
        self.root = RootDirectory(c.root) if c.root else None
        self.xap = xap.XapClient(sim_nonces(c)[node.name], c.control_ip,
                                 first_xid=_hash(node.name, "xid", bits=16))
        self.listener = tch.TchListener(self.me.ip, c.vport)
        self.conns: dict[tuple[str, int], _Conn] = {}
        self.gifts: dict[tuple[str, int], _Gift] = {}
        self.holding: dict[tuple[str, int], _Gift] = {}
        self.incoming: dict[tuple[str, int], _Incoming] = {}  # by TCH peer (messages: + id)
        self.tch_node = tm.TchNode(  # the second embodiment
            self.me.ip, keepalive=PREDICTIVE_KEEPALIVE if c.predictive else None)
        self.taking: dict[tuple[str, int], _Taking] = {}  # by (switch, session id)
        # heartbeats to the switch's failover (and balancing by the devices)
        self.reports = DeviceReports(c, node.name, _hash(node.name, "boot"), 0.0) \
            if c.failover else None
        self.asking_back: dict[int, tuple[xap.FlowKey, str]] = {}  # (``device._give_back``)
        self.asked: dict[int, tuple[tuple[str, int], str, str]] = {}  # accepted requests
        # every address of the scenario -> its MAC (the kernel would ask ARP)
        self.macs = {ep.ipv4.split("/")[0]: frames.mac_bytes(ep.mac) for ln in scenario.links
                     for ep in (ln.a, ln.b) if ep.ipv4}
        self.log = _Log(node.name)
        self.counters = {"accepted": 0, "handoffs_in": 0, "tch_malformed": 0, "stray": 0}
        self._uploads: dict[tuple[int, str], Upload] = {}  # (id(conn), path) -> its upload
        self._port = TCH_PORTS[0]
        self._tx: list[Transmit] = []

    def node_events(self) -> list[dict]:
        return list(self.log.events)

    def report(self) -> dict:
        return {"events": self.node_events(),
                "sessions": [{"client": f"{k[0]}:{k[1]}", "state": cl.core.state.name,
                              "handoff": cl.gift.to if cl.gift else None}
                             for k, cl in self.conns.items()],
                "stats": {**self.counters, "tch_sessions": len(self.listener.sessions),
                          "xap": dict(self.xap.stats)}}

    # ---- the backend's calls -----------------------------------------------------------------

    def set_port(self, iface: str, up: bool) -> None:
        self.links[iface] = up

    def _out(self, client: tuple[str, int] | None = None) -> tuple[str, bytes]:
        """(interface, its MAC) a frame leaves by: a client's connection by the link it
        comes in on, all else by the first link while it is up."""
        first, alt = self.me.iface, self.me.alt_iface
        iface = self.paths.get(client, first) if client is not None else first
        if iface == first and not self.links[first] and alt is not None:
            iface = alt
        return iface, self.own_macs[iface]

    def on_frame(self, iface: str, frame: bytes, now: float) -> list[Transmit]:
        self.log.now = now
        if frame[:1] and not frame[0] & 1 and frame[:6] != self.own_macs.get(iface):
            return []  # another's unicast, flooded by a bridge: the kernel drops it
        packet = frames.ip_payload(frame)
        head = frames.ip_header(packet) if packet is not None else None
        if head is None:
            return self._flush()
        proto, dst = head[2], head[4]
        if proto == frames.IPPROTO_UDP:
            d = frames.parse_udp(packet)
            if d is not None and d.dst == self.me.ip and (d.src, d.sport) == (
                    self.cluster.control_ip, XAP_UDP_PORT):
                self._xap_actions(self.xap.on_datagram(d.src, d.sport, d.payload, now), now)
            elif d is not None and d.dst == self.me.ip and d.dport == TCH_UDP_PORT:
                self._messages(self.tch_node.on_datagram(d.src, d.payload, now), now)
            elif d is not None and d.dst == self.me.ip and d.dport == CLUSTER_UDP_PORT and \
                    self.reports is not None:
                self.reports.on_heartbeat(d.payload, d.src, now)
            return self._flush()
        if proto != IPPROTO_TCP:
            return self._flush()
        c = self.cluster
        seg = self.decode_client(packet) if dst == c.vip else decode(packet)
        if seg is None:
            self.counters["tch_malformed"] += 1
            return self._flush()
        if dst == self.me.ip and c.vport in (seg.dport, seg.sport):
            gift = self.gifts.get((seg.src, seg.dport))
            if gift is not None:
                self._first(gift, gift.tch.on_segment(seg, now), now)
            else:
                self._second(self.listener.on_segment(seg, now), now)
        elif dst == c.vip and seg.dport == c.vport:
            if self.me.alt_iface is not None:  # (conntrack's mark of the connection)
                self.paths[(seg.src, seg.sport)] = iface
            self._client_segment(seg, frame, now)
        return self._flush()

    def _held_frame(self, frame: bytes, now: float) -> None:
        """A frame held during a failed handoff, taken in after the own restore."""
        packet = frames.ip_payload(frame)
        seg = decode(packet) if packet is not None else None
        if seg is not None:
            self._client_segment(seg, frame, now)

    def handoff(self, to: str, client_port: int | None, now: float,
                htype: str = "full") -> tuple[str, list[Transmit]]:
        """A ``handoff`` step (``device._request_handoff`` on veth; with ``tcp: user``, this
        model on veth too)."""
        self.log.now = now
        if to not in self.cluster.devices or to == self.node:
            raise ValueError(f"no other device {to!r} (devices: "
                             f"{', '.join(sorted(self.cluster.devices))})")
        if htype != "full" and not (self.user_tcp and to in self.user_peers):
            raise ValueError("a half-handoff splits the connection by direction, which a "
                             "kernel socket cannot do (D2.6): give both devices tcp: user")
        busy = [cl for cl in self.conns.values() if cl.gift is None and not cl.closing
                and (client_port is None or cl.client[1] == client_port)]
        if not busy:
            raise LookupError(f"{self.node} serves no connection"
                              + (f" from port {client_port}" if client_port is not None else ""))
        cl = min(busy, key=lambda c: c.client[1])
        if htype != "full":
            self._give_half(cl, to, htype, now)
        elif not self._give(cl, to, "asked", now):
            raise LookupError(f"{cl.client[0]}:{cl.client[1]} is not ESTABLISHED")
        return f"{cl.client[0]}:{cl.client[1]}", self._flush()

    def set_health(self, health: str, now: float) -> list[Transmit]:
        """A ``health`` step (``device._set_health`` on veth): told the switch at once."""
        self.log.now = now
        if self.reports is None:
            raise ValueError("the switch has no failover: nobody hears the health reports")
        got = self.reports.set_health(health)
        self.log.event("health", health=got.name)
        self._beat(self.reports.beat(now, self._balanced(), at_once=True))
        return self._flush()

    def next_deadline(self) -> float | None:
        times = [self.listener.next_deadline(), self.xap.next_deadline(),
                 self.tch_node.next_deadline(),
                 self.reports.next_deadline() if self.reports is not None else None,
                 *(t.next_probe for t in self.taking.values()),
                 *(cl.tcb.next_deadline() for cl in self.conns.values()),
                 *(i.tcb.next_deadline() for i in self.incoming.values()),
                 *self._gift_deadlines()]
        return min((t for t in times if t is not None), default=None)

    def on_timer(self, now: float) -> list[Transmit]:
        self.log.now = now
        for cl in list(self.conns.values()):
            if (t := _due(cl.tcb.next_deadline(), now)) is not None:
                self._tcp_out(cl, cl.tcb.on_timer(t))
                self._after_tcp(cl, t)
        for inc in self.incoming.values():
            if (t := _due(inc.tcb.next_deadline(), now)) is not None:
                self._send_tcp(inc.tcb.on_timer(t))
        self._gift_timers(now)
        if (t := _due(self.listener.next_deadline(), now)) is not None:
            self._second(self.listener.on_timer(t), t)
        if (t := _due(self.xap.next_deadline(), now)) is not None:
            self._xap_actions(self.xap.on_timer(t), t)
        if (t := _due(self.tch_node.next_deadline(), now)) is not None:
            self._messages(self.tch_node.on_timer(t), t)
        for taking in list(self.taking.values()):
            if (t := _due(taking.next_probe, now)) is not None:
                self._probe(taking, t)
        if self.reports is not None and \
                (t := _due(self.reports.next_deadline(), now)) is not None:
            sent, moves = self.reports.on_timer(t, self._balanced())
            self._beat(sent)
            for m in moves:
                if not self._move(m.flow, m.dst, t):
                    self.reports.not_moved(m.flow, t)
        return self._flush()

    # ---- reports (``reports.py`` on veth) ----------------------------------------------------

    def _beat(self, datagrams: list[tuple[str, bytes]]) -> None:
        for ip, data in datagrams:
            self._send_udp(ip, CLUSTER_UDP_PORT, CLUSTER_UDP_PORT, data)

    def _balanced(self) -> dict[tuple[str, int], tuple[float, bool]]:
        """The client connections that count as this device's load: since, being given (a
        frozen one too: on veth its socket is this device's until the handoff ends)."""
        conns = {**self.conns, **{g.conn.client: g.conn for g in self.gifts.values()}}
        return {k: (cl.since, cl.gift is not None) for k, cl in conns.items() if not cl.closing}

    def _move(self, flow: tuple[str, int], to: str, now: float) -> bool:
        """Claim 48: this device's decider hands ``flow`` to ``to`` (False: it cannot now)."""
        cl = self.conns.get(flow)
        return cl is not None and cl.gift is None and self._give(cl, to, "balance", now)

    def _predict(self, cl: _Conn, now: float) -> None:
        """Check 16: a predictive session to every other device as the connection starts
        (``device._predict``)."""
        c = self.cluster
        state = {"client_ip": cl.client[0], "client_port": cl.client[1], "cluster_ip": c.vip,
                 "cluster_port": c.vport}
        for dev in c.devices.values():
            if dev.name != self.node:
                cl.predictive[dev.name], acts = self.tch_node.open(
                    dev.ip, tm.Kind.PREDICTIVE, state, now)
                self._messages(acts, now)

    # ---- serving -----------------------------------------------------------------------------

    def _client_segment(self, seg: Segment, frame: bytes, now: float) -> None:
        client = (seg.src, seg.sport)
        if (gift := self.holding.get(client)) is not None:
            gift.held.append(frame)  # frozen: kept for whoever serves it next (D2.5)
            if gift.relaying:
                self._relay(gift)
            return
        taking = next((t for t in self.taking.values() if t.client == client), None)
        if taking is not None:
            self._taking_segment(taking, frame, now)
            return
        inc = next((i for i in self.incoming.values() if i.client == client), None)
        if inc is not None:
            inc.tcb.on_segment(seg, now)  # in repair mode: kept until MORPH
            inc.held += 1
            return
        cl = self.conns.get(client)
        if cl is None:
            if seg.flags & (SYN | ACK | RST) != SYN:
                self.counters["stray"] += 1
                return
            iss = _hash(self.node, client, self.counters["accepted"])
            tcb, segs = Tcb.accept(seg, iss, now, **self.tcb_options)
            core = http.HttpServer(self.storage, name=self.node, root=self.root,
                                   redirect=self.redirect)
            cl = self.conns[client] = _Conn(tcb, core, client, since=now)
            self.counters["accepted"] += 1
            self._send_tcp(segs)
            if self.cluster.predictive:
                self._predict(cl, now)
            return
        if self._split_segment(cl, seg, frame, now):
            return
        self._tcp_out(cl, cl.tcb.on_segment(seg, now))
        self._after_tcp(cl, now)

    def _after_tcp(self, cl: _Conn, now: float) -> None:
        """What the TCB's news means to the HTTP core; then write what can be written."""
        if cl.tcb.state is TcpState.CLOSED:
            self._drop(cl, now)
            return
        if cl.tcb.received and not (cl.gift and cl.gift.pausing) and not cl.core.paused:
            self._apply(cl, cl.core.receive(cl.tcb.read(), now), now)
        if cl.tcb.peer_fin and not cl.eof and not cl.tcb.received and not cl.gift:
            cl.eof = True
            self._apply(cl, cl.core.receive(b"", now), now)
        self._write(cl, now)
        if cl.gift is not None and cl.gift.half == "half-cluster":
            self._drained_half(cl.gift, now)
        elif cl.gift is not None and not cl.gift.frozen and not cl.gift.half:
            self._try_freeze(cl.gift, now)

    def _apply(self, cl: _Conn, actions: list, now: float) -> None:
        """The HTTP core's actions, as ``device._apply`` carries them out on veth."""
        for a in actions:
            if isinstance(a, http.SendBytes):
                cl.out += a.data
            elif isinstance(a, http.SendFile):
                cl.chunk = (a.path, a.offset, self.storage.read(a.path, a.offset, a.length))
            elif isinstance(a, http.WriteUpload):
                self._upload(cl, a.path).write(a.offset, a.data)
            elif isinstance(a, http.CommitUpload):
                self._upload(cl, a.path).commit()
                self._uploads.pop((id(cl), a.path), None)
                self._apply(cl, cl.core.committed(True, now), now)
            elif isinstance(a, http.AbortUpload):
                up = self._uploads.pop((id(cl), a.path), None)
                if up is not None:
                    up.abort()
            elif isinstance(a, http.Close):
                cl.closing = True
            elif isinstance(a, http.RequestDone):
                self.log.event("request", **a.event(cl.client))
            elif isinstance(a, http.NotHere):
                if a.owner not in self.cluster.devices or a.owner == self.node or \
                        not self._give(cl, a.owner, f"redirect {a.path}", now):
                    self._apply(cl, cl.core.refuse_redirect(now), now)

    def _upload(self, cl: _Conn, path: str):
        key = (id(cl), path)
        if key not in self._uploads:
            self._uploads[key] = self.storage.open_upload(path)
        return self._uploads[key]

    def _write(self, cl: _Conn, now: float) -> None:
        """Into the TCB's send buffer what fits: headers, then body unless pausing."""
        while cl.client in self.conns and not cl.hold:
            if cl.out:
                n, segs = cl.tcb.write(bytes(cl.out), now)
                self._tcp_out(cl, segs)
                del cl.out[:n]
                if cl.out:
                    return
                continue
            if cl.chunk is not None and not (cl.gift and cl.gift.pausing):
                path, offset, data = cl.chunk
                n, segs = cl.tcb.write(data, now)
                self._tcp_out(cl, segs)
                if n == 0:
                    return
                cl.chunk = (path, offset + n, data[n:]) if n < len(data) else None
                self._apply(cl, cl.core.sent(n, now), now)
                continue
            if cl.closing and cl.chunk is None:
                self._tcp_out(cl, cl.tcb.close(now))
            return

    def _drop(self, cl: _Conn, now: float) -> None:
        self.conns.pop(cl.client, None)
        self.paths.pop(cl.client, None)
        for key in [k for k in self._uploads if k[0] == id(cl)]:
            self._uploads.pop(key).abort()
        for s in cl.predictive.values():  # (a given connection released its own)
            if tm.Event.RELEASE in s.expecting():
                self._messages(s.release(now), now)
        cl.predictive.clear()

    def _reprogram(self, gift: _Gift, op: int, target: str | None, now: float) -> None:
        """D2.3: XAP to the switch; END only on its ack (``device._reprogram``)."""
        c, client = self.cluster, gift.conn.client
        key = xap.FlowKey(client[0], IPPROTO_TCP, client[1], c.vip, c.vport)
        gift.xid, acts = self.xap.request(op, key, target, now)
        gift.xid_op = "change" if op == XAP_OP_CHANGE_CONNECTION else "query"
        self._xap_actions(acts, now)

    def _xap_actions(self, actions: list, now: float) -> None:
        for a in actions:
            if isinstance(a, xap.SendDatagram):
                self._send_udp(a.dst_ip, XAP_PORT, a.dst_port, a.payload)
            elif isinstance(a, xap.Acked | xap.TimedOut) and a.xid in self.asking_back:
                key, to_ip = self.asking_back.pop(a.xid)
                if isinstance(a, xap.Acked) and a.owner_ip == self.me.ip:
                    self._xap_actions(self.xap.request(XAP_OP_CHANGE_CONNECTION, key, to_ip,
                                                       now)[1], now)
            elif isinstance(a, xap.Acked | xap.TimedOut):
                gift = next((g for g in self.gifts.values() if g.xid == a.xid), None)
                if gift is None:
                    continue
                asked, to_ip = gift.xid_op, self.cluster.devices[gift.to].ip
                self.log.event("xap", xid=a.xid, op=asked, acked=isinstance(a, xap.Acked),
                               owner=getattr(a, "owner_ip", None))
                if isinstance(a, xap.Acked) and (asked == "change" or a.owner_ip == to_ip):
                    self._switched(gift, now)
                elif asked == "change":  # no ack: ask before taking the connection back
                    self._reprogram(gift, XAP_OP_QUERY, None, now)
                else:
                    self._switch_failed(gift, now)

    def _switched(self, gift: _Gift, now: float) -> None:
        """The switch acked: END (segments), or the relay and Complete (messages)."""
        if gift.tch is not None:
            self._first(gift, gift.tch.switch_updated(now), now)
            return
        s = gift.session
        if s is None or tm.Event.SWITCH_UPDATED not in s.expecting():
            return
        if gift.relay_asked:  # from the XAP ack on, as ``udp_tch.MessageGiver``
            gift.relaying = True
            self._relay(gift)
            self.log.event("relay", client=gift.name, to=gift.to, held=len(gift.held))
        self._messages(s.switch_updated(now), now)

    def _switch_failed(self, gift: _Gift, now: float) -> None:
        if gift.tch is not None:
            self._first(gift, gift.tch.resume(now), now)
        elif gift.session is not None and tm.Event.SWITCH_FAILED in gift.session.expecting():
            self._messages(gift.session.switch_failed(now), now)

    def _relay(self, gift: _Gift) -> None:
        """Held client frames not relayed yet, to the second device (D2.5)."""
        mac = frames.mac_bytes(self.cluster.devices[gift.to].mac)
        iface = self._out()[0]
        self._tx += [Transmit(iface, mac + f[6:]) for f in gift.held[gift.relayed:]]
        gift.relayed = len(gift.held)

    def _switch_to(self, gift: _Gift, now: float) -> None:
        self._reprogram(gift, XAP_OP_CHANGE_CONNECTION, self.cluster.devices[gift.to].ip, now)

    def _given(self, gift: _Gift, given: bool, now: float) -> None:
        cl = gift.conn
        if self.reports is not None:
            self.reports.moved(cl.client, gift.to, given, now)
        if gift.half:
            self._half_given(gift, given, now)
        elif given:  # the held frames go to the second device, in arrival order (D2.5)
            self._relay(gift)
            self._drop(cl, now)
        elif gift.frozen:  # back here: our own checkpoint again (the seed's setsockopt(0))
            self._drop(cl, now)  # (as on veth: the socket back is a new connection here)
            tcb = Tcb.restore(snapshot(gift.cp))
            core = http.HttpServer.resume(self.storage, gift.exported, name=self.node,
                                          root=self.root, redirect=False)
            back = self.conns[cl.client] = _Conn(tcb, core, cl.client, since=cl.since)
            self._send_tcp(tcb.leave_repair(now))
            self._apply(back, core.proceed(now), now)
            self._after_tcp(back, now)
            for frame in gift.held:
                self._held_frame(frame, now)
        elif cl.core.state is http.Conn.REDIRECTING:  # the redirect did not happen
            self._apply(cl, cl.core.refuse_redirect(now), now)
            self._after_tcp(cl, now)
        else:  # never frozen: go on serving
            self._after_tcp(cl, now)

    # ---- handoff, second device --------------------------------------------------------------

    def _second(self, actions: list, now: float) -> None:
        for a in actions:
            if isinstance(a, tch.Send):
                self._send_tch(a.segment)
            elif isinstance(a, tch.StateChanged):
                self.log.event("tch", role=a.role, old=a.old.name, new=a.new.name, why=a.why)
            elif isinstance(a, tch.Restore):
                self._restore(a, now)
            elif isinstance(a, tch.Morph):
                self._morph(a, now)
            elif isinstance(a, tch.Finished):
                self.incoming.pop(a.peer, None)  # restored, never morphed: stays silent
                self.log.event("tch-done", role="second", outcome=a.outcome.name,
                               reason=a.reason)

    def _restored(self, carried: bytes) -> _Incoming:
        """The duplicate TCB, in repair mode, from checkpoint + HTTP state (``device._restored``);
        ValueError, struct.error or http.ProtocolError if it cannot go on here."""
        n = struct.unpack_from(">I", carried)[0]
        cp = TcpCheckpoint.unpack(carried[4:4 + n])
        exported = carried[4 + n:]
        if cp is None:
            raise ValueError("not a checkpoint")
        http.HttpServer.resume(self.storage, exported)  # refuse what cannot go on here
        client = (cp.remote_ip, cp.remote_port)
        self.holding.pop(client, None)  # it left here once
        return _Incoming(Tcb.restore(snapshot(cp)), exported, client)

    def _restore(self, a: tch.Restore, now: float) -> None:
        """SET arrived (``device._restore``)."""
        try:
            self.incoming[a.peer] = self._restored(a.state)
        except (ValueError, struct.error, http.ProtocolError) as exc:
            self._second(self.listener.restore_failed(a.peer, str(exc), now), now)
            return
        self._second(self.listener.restored(a.peer, now), now)

    def _morph(self, a: tch.Morph, now: float) -> None:
        """END arrived: repair off, and the connection is served here."""
        inc = self.incoming.pop(a.peer, None)
        if inc is not None:
            self._serve_incoming(inc, a.peer[0], {}, now)

    def _serve_incoming(self, inc: _Incoming, from_ip: str, detail: dict, now: float) -> None:
        """Repair off, and the connection is served here: from the HTTP state that came
        with it, or a take-over's answer from the start, less what the client has."""
        if inc.replay is not None:
            core = http.HttpServer(self.storage, name=self.node, root=self.root,
                                   redirect=False)
            actions = shadow.replay(core, *inc.replay, now)
        else:
            core = http.HttpServer.resume(self.storage, inc.exported, name=self.node,
                                          root=self.root, redirect=self.redirect)
            actions = core.proceed(now)
        cl = self.conns[inc.client] = _Conn(inc.tcb, core, inc.client, since=now)
        self.counters["handoffs_in"] += 1
        self.log.event("morph", client=f"{inc.client[0]}:{inc.client[1]}", **detail)
        self._send_tcp(inc.tcb.leave_repair(now))
        self._apply(cl, actions, now)
        self._after_tcp(cl, now)
        if self.reports is not None:
            self.reports.arrived(inc.client, from_ip, now)
        if self.cluster.predictive and cl.client in self.conns:  # ready for the next one
            self._predict(cl, now)

    # ---- the second embodiment (``udp_tch.py`` and ``device.py`` on veth) ----------------

    def _messages(self, actions: list, now: float) -> None:
        for a in actions:
            if isinstance(a, tm.Send):
                self._send_udp(a.peer, TCH_UDP_PORT, TCH_UDP_PORT, a.data)
                continue
            s = next((x for (_, sid), x in self.tch_node.sessions.items()
                      if sid == a.session_id), None)
            if isinstance(a, tm.StateChanged) and a.event is not tm.Event.UPDATE:
                self.log.event("tch", role=a.role, old=a.old.name, new=a.new.name, why=a.why,
                               session=f"{a.session_id:#010x}", peer=a.peer)
            if isinstance(s, tm.FirstDevice):
                self._first_message(s, a, now)
            elif isinstance(s, tm.SecondDevice):
                self._second_message(s, a, now)

    def _first_message(self, s: tm.FirstDevice, a: tm.Action, now: float) -> None:
        if isinstance(a, tm.HandoffRequested) and a.initiator == TCH_INITIATOR_OTHER:
            self._asked_by_other(s, a, now)
            return
        if isinstance(a, tm.Finished) and s.session_id in self.asked:
            client, to, reason = self.asked.pop(s.session_id)
            cl = self.conns.get(client)
            if cl is not None and cl.gift is None:  # (gone, or moving already)
                self._give(cl, to, reason, now)
            return
        if isinstance(a, tm.Finished) and (dev := self.cluster.by_ip(s.peer)) is not None:
            for cl in [*self.conns.values(), *(g.conn for g in self.gifts.values())]:
                if cl.predictive.get(dev.name) is s:  # a predictive session is over
                    del cl.predictive[dev.name]
        gift = next((g for g in self.gifts.values() if g.session is s), None)
        if gift is None:  # given back already; the session still finishes its exchange
            return
        if isinstance(a, tm.ReprogramSwitch):
            self._switch_to(gift, now)
        elif isinstance(a, tm.RelayHeld):
            gift.relay_asked = True
        elif isinstance(a, tm.PeerUpdate | tm.StateChanged) and gift.half:
            self._half_first(gift, a, now)
        elif isinstance(a, tm.Recover):
            self._finish(gift, False, tm.Outcome.KEPT.name, a.why, now)
        elif isinstance(a, tm.Finished):
            self._finish(gift, a.outcome is tm.Outcome.HANDED_OFF, a.outcome.name, a.reason,
                         now)

    def _asked_by_other(self, s: tm.FirstDevice, a: tm.HandoffRequested, now: float) -> None:
        """The switch asks this device to hand the client's connection to the device its app
        state names (a predicted failure, balancing; ``device._asked_by_other``): once the
        request's session is over."""
        client = (a.state.get("client_ip"), a.state.get("client_port"))
        to = self.cluster.by_ip(asked_to(s.app_state))
        cl = self.conns.get(client)
        if cl is None or cl.gift is not None or to is None or to.name == self.node:
            self._messages(s.deny(now), now)
            return
        self.asked[s.session_id] = (client, to.name, f"asked by {a.peer}")
        self._messages(s.accept(now), now)

    def _take_over(self, s: tm.SecondDevice, a: tm.Restore, now: float) -> None:
        """The switch's Open for a dead device's connection (``taker._take_over``): ask the
        client where its stream is, then restore the connection there. On veth that is a
        kernel socket restored with TCP_REPAIR; here a modelled TCB from the same
        ``shadow.checkpoint``, and the sim's client answers the probe as the kernel does
        (``lab.tcp``: an out-of-window segment with data gets an ACK)."""
        sh = shadow.Shadow.unpack(a.app_state)
        if sh is None or not sh.usable:
            self._messages(s.restore_failed("not a usable shadow", now), now)
            return
        self._probe(self.taking.setdefault((s.peer, s.session_id), _Taking(sh, s)), now)

    def _probe(self, t: _Taking, now: float) -> None:
        if t.tries == TAKEOVER_PROBES:
            del self.taking[(t.session.peer, t.session.session_id)]
            self._messages(t.session.restore_failed(
                f"the client did not answer {t.tries} probes", now), now)
            return
        t.tries += 1
        t.next_probe = now + TAKEOVER_WAIT
        self._send_tcp([shadow.probe(t.sh)])

    def _taking_segment(self, t: _Taking, frame: bytes, now: float) -> None:
        """A client segment of a connection being taken over: the probe's answer restores
        it; any other is kept for the restored TCB (the veth hold)."""
        seg = decode_tcp(frames.ip_payload(frame))
        if seg is None:
            return
        if not shadow.answer(t.sh, seg):
            t.caught.append(seg)
            return
        cp = shadow.checkpoint(t.sh, seg)
        s = t.session
        del self.taking[(s.peer, s.session_id)]
        if cp is None:
            self._messages(s.restore_failed("the client sent bytes the switch did not see",
                                            now), now)
            return
        inc = _Incoming(Tcb.restore(snapshot(cp)), b"", t.client,
                        replay=(bytes(t.sh.data), shadow.sent_before(t.sh, seg)))
        for held in t.caught:
            inc.tcb.on_segment(held, now)  # in repair mode: kept
        inc.held = len(t.caught)
        self.incoming[(s.peer, s.session_id)] = inc
        self.log.event("take-over", client=f"{t.client[0]}:{t.client[1]}", snd_nxt=cp.snd_nxt,
                       rcv_nxt=cp.rcv_nxt, skip=inc.replay[1], probes=t.tries)
        self._messages(s.restored(now), now)

    def _second_message(self, s: tm.SecondDevice, a: tm.Action, now: float) -> None:
        key = (s.peer, s.session_id)
        half = next((c for c in self.conns.values() if c.split is s), None)
        if isinstance(a, tm.Restore) and shadow.is_shadow(a.app_state):
            self._take_over(s, a, now)
        elif isinstance(a, tm.Restore) and a.kind in (tm.Kind.HALF_CLIENT, tm.Kind.HALF_CLUSTER):
            self._restore_half(s, a, now)
        elif half is not None:
            self._half_second(half, s, a, now)
        elif isinstance(a, tm.Restore) and a.kind is tm.Kind.PREDICTIVE:
            self._messages(s.restored(now), now)  # nothing to restore before the Handoff
        elif isinstance(a, tm.Restore):
            try:
                self.incoming[key] = self._restored(a.app_state)
            except (ValueError, struct.error, http.ProtocolError) as exc:
                self._messages(s.restore_failed(str(exc), now), now)
                return
            self._messages(s.restored(now), now)
        elif isinstance(a, tm.Finished):
            inc = self.incoming.pop(key, None)
            self.taking.pop(key, None)
            if inc is not None and a.outcome is tm.Outcome.HANDED_OFF:
                self._serve_incoming(inc, s.peer, {"held": inc.held}, now)
            elif inc is not None:  # the first device took it back: the entry too, if ours
                self._give_back(inc.client, s.peer, now)
            self.log.event("tch-done", role="second", outcome=a.outcome.name, reason=a.reason,
                           held=inc.held if inc is not None else 0)

    def _give_back(self, client: tuple[str, int], to_ip: str, now: float) -> None:
        """A handoff here failed: if the switch moved the flow here, back to ``to_ip``
        (``device._give_back``: only the owner moves a flow, D2.10)."""
        c = self.cluster
        flow = xap.FlowKey(client[0], IPPROTO_TCP, client[1], c.vip, c.vport)
        xid, acts = self.xap.request(XAP_OP_QUERY, flow, None, now)
        self.asking_back[xid] = (flow, to_ip)
        self._xap_actions(acts, now)

    # ---- output ------------------------------------------------------------------------------

    def _send_tcp(self, segs: list) -> None:
        """Client segments (src = VIP) straight to the client's MAC (direct return, L394)."""
        for s in segs:
            mac = self.macs.get(s.dst)
            if mac is not None:
                iface, own = self._out((s.dst, s.dport))
                self._tx.append(Transmit(iface, frames.ether(mac, own, frames.ETH_P_IP,
                                                             s.encode())))

    def _send_udp(self, dst_ip: str, sport: int, dport: int, payload: bytes) -> None:
        dev = self.cluster.by_ip(dst_ip)
        mac = frames.mac_bytes(dev.mac) if dev is not None else self.switch_mac
        udp = frames.udp_packet(frames.Datagram(self.me.ip, dst_ip, sport, dport, payload))
        iface, own = self._out()
        self._tx.append(Transmit(iface, frames.ether(mac, own, frames.ETH_P_IP, udp)))

    def _send_tch(self, seg: Segment) -> None:
        dev = self.cluster.by_ip(seg.dst)
        mac = frames.mac_bytes(dev.mac) if dev is not None else self.switch_mac
        iface, own = self._out()
        self._tx.append(Transmit(iface, frames.ether(mac, own, frames.ETH_P_IP, seg.encode())))

    def _flush(self) -> list[Transmit]:
        out, self._tx = self._tx, []
        return out
