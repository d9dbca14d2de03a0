# SPDX-License-Identifier: GPL-2.0-or-later
"""A NAS switch and its hot standby (Fig. 12, B2.47, D2.17, check 28).

Topology: the two switches share the client segment (a learning switch) and a link of
their own; every device has a link to each, with one address (on the standby's link at
a lower route preference, ``STANDBY_METRIC``: the device's kernel uses it only while the
link to the active is down -- ``ignore_routes_with_linkdown``).

* The active mirrors every table event to the standby (D2.17): an XAP change_connection
  with its own nonce, which the standby registers as a peer's (``xap.XapSwitch``);
  TARGET_IP 0.0.0.0 removes an entry. ``TableMirror`` keeps one request per flow in flight
  and sends the newest owner when the last one is acked, so a late retransmission never
  applies an older state.
* The active sends the standby ClusterStatus heartbeats (D2.12, sender kind "switch").
* The standby keeps its client ports out of its bridge (they would close a loop through
  the active). When the heartbeats stop (``health.HealthMonitor``: 350 ms) it takes over
  (the seed: "switch 1212 simply assumes switch 1210's L2 address"): it detaches its port
  to the old active (which may still forward), takes the active's bridge MAC, VIP and
  control address, bridges its client ports, answers the devices' XAP at the active's
  address and announces VIP and address by gratuitous ARP. The mirrored entries are in its
  kernel already: the sessions go on where they were.
* Link active -> device down, policy (c) (L408): the active reroutes that device's flows
  through the standby -- out of its port to the standby, to the device's MAC on the
  standby's link; the standby bridges them and does no NAS processing.
* Switch-to-switch handoff (claims 56-62, L412-L416; a ``handoff`` step from the active to
  its partner): the active hands one session's 5-tuple to the partner by a peer's XAP
  ``set``; the partner adds a rule sending the device's frames of that flow straight out of
  its client port, and acks; the active then points its entry at its port to the partner,
  at the device's MAC there. The device answers over the link its client's frames now come
  in on (``follow_paths``: conntrack marks the connection by its input interface), so "the
  data from the storage device then goes directly from the second switch to the client".
"""

from __future__ import annotations

import contextlib
import json
import secrets
import socket
import struct
import subprocess
import time
from dataclasses import dataclass

from ftsslab.fast.cluster import CLUSTER_SWITCH, CLUSTER_UDP_PORT
from ftsslab.fast.xap import XAP_OP_CHANGE_CONNECTION, XAP_OP_SET, XAP_UDP_PORT
from ftsslab.lab.veth.linkstate import LinkMonitor
from ftsslab.lab.veth.switchd import TABLE, SwitchdError

from . import xap
from .bpf import tcp_filter
from .cluster import nonce_path, read_nonces
from .health import HealthMonitor, Load, PeerDown, StatusReporter
from .process import iface_mac, packet_socket, read_datagrams

STANDBY_METRIC = 1024  # a device's route over its link to the standby: used when the other is down
MIRROR_RETRY = 1.0  # s before a mirror request that timed out is sent again
ANNOUNCEMENTS = (0.0, 0.1, 0.5)  # s after the takeover: gratuitous ARPs (as VRRP repeats them)
NONCE_WAIT = 30.0  # s the standby waits for the active's registration file
PATHS, ALT_MARK, ALT_TABLE = "ftsslab_paths", 2, 102  # a device's answers over its second link


class TableMirror:
    """The active's side of the mirror, sans-IO: table events in, XAP datagrams out.

    ``changed(key, ip)``: the flow's entry now points at the device with address ``ip``
    (``xap.NO_DEVICE``: it went). The standby acks each request only once its kernel table
    holds it; ``synced`` is what it acked.
    """

    def __init__(self, client: xap.XapClient) -> None:
        self.client = client
        self.want: dict[xap.FlowKey, str] = {}
        self.sent: dict[int, tuple[xap.FlowKey, str]] = {}  # xid in flight -> flow, target
        self.busy: set[xap.FlowKey] = set()
        self.retry: dict[xap.FlowKey, float] = {}  # timed out: when to send again
        self.synced: dict[xap.FlowKey, str] = {}
        self.stats = {"mirrored": 0, "acked": 0, "timed_out": 0, "coalesced": 0}

    def changed(self, key: xap.FlowKey, ip: str, now: float) -> list[xap.Action]:
        if key in self.busy:
            self.stats["coalesced"] += 1
        self.want[key] = ip
        return [] if key in self.busy or key in self.retry else self._send(key, now)

    def next_deadline(self) -> float | None:
        return min([d for d in (self.client.next_deadline(),) if d is not None]
                   + list(self.retry.values()), default=None)

    def on_timer(self, now: float) -> list[xap.Action]:
        out = self._settle(self.client.on_timer(now), now)
        for key in [k for k, t in self.retry.items() if t <= now]:
            del self.retry[key]
            out += self._send(key, now)
        return out

    def on_datagram(self, src_ip: str, src_port: int, payload: bytes,
                    now: float) -> list[xap.Action]:
        return self._settle(self.client.on_datagram(src_ip, src_port, payload, now), now)

    def _send(self, key: xap.FlowKey, now: float) -> list[xap.Action]:
        ip = self.want[key]
        xid, acts = self.client.request(XAP_OP_CHANGE_CONNECTION, key, ip, now)
        self.sent[xid] = (key, ip)
        self.busy.add(key)
        self.stats["mirrored"] += 1
        return acts

    def _settle(self, actions: list[xap.Action], now: float) -> list[xap.Action]:
        out: list[xap.Action] = []
        for a in actions:
            if isinstance(a, xap.Acked | xap.TimedOut) and a.xid in self.sent:
                key, ip = self.sent.pop(a.xid)
                self.busy.discard(key)
                if isinstance(a, xap.TimedOut):
                    self.stats["timed_out"] += 1
                    self.retry[key] = now + MIRROR_RETRY
                    continue
                self.stats["acked"] += 1
                self.synced[key] = ip
                if self.want[key] != ip:
                    out += self._send(key, now)
                elif ip == xap.NO_DEVICE:
                    del self.want[key], self.synced[key]
            else:  # a datagram to send, or the end of a request that is not the mirror's
                out.append(a)
        return out


def gratuitous_arp(mac: str, ip: str) -> bytes:
    """An ARP announcement (RFC 5227 2.3): a broadcast request for ``ip`` from ``ip``, so
    learning switches move ``mac`` to the sender's port and neighbours refresh it."""
    hw, addr = bytes.fromhex(mac.replace(":", "")), socket.inet_aton(ip)
    return (b"\xff" * 6 + hw + b"\x08\x06" + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1)
            + hw + addr + b"\0" * 6 + addr)


# ---- the processes' parts ------------------------------------------------------------------

def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@dataclass
class Route:
    """Where a device's flows leave the active switch other than by the device's own link:
    its port to the partner, at the device's MAC there (the link is down, or the partner
    serves the flow)."""
    port: str
    mac: str


class Paths:
    """The active's paths, sans-IO, the same on both backends: each device's detour through
    the partner while its link is down (policy (c)), the sessions handed to the partner, and
    which session a ``handoff`` step hands."""

    def __init__(self, cluster) -> None:
        self.cluster, self.pair = cluster, cluster.pair
        self.routes: dict[str, Route] = {}  # device -> its detour through the standby
        self.handed: set[xap.FlowKey] = set()  # flows the partner serves now

    def route(self, key: xap.FlowKey, dev: xap.Device) -> tuple[str, str]:
        """(port, MAC) the switch's entry for ``key`` at ``dev`` uses now."""
        r = self.routes.get(dev.name)
        if key in self.handed:
            r = Route(self.pair.port, self.cluster.devices[dev.name].alt_mac)
        return (r.port, r.mac) if r else (dev.port, dev.mac)

    def link(self, dev: xap.Device, up: bool,
             entries: dict[xap.FlowKey, xap.Device]) -> tuple[list[xap.FlowKey], dict] | None:
        """Device ``dev``'s link went down or up: the flows to reprogram (``why="reroute"``)
        and the ``reroute`` event's detail; None if nothing changes."""
        alt = self.cluster.devices[dev.name].alt_mac
        if alt is None or up != (dev.name in self.routes):
            return None
        if up:
            del self.routes[dev.name]
        else:
            self.routes[dev.name] = Route(self.pair.port, alt)
        flows = [k for k, o in entries.items() if o.name == dev.name and k not in self.handed]
        r = self.routes.get(dev.name)
        return flows, {"device": dev.name, "port": r.port if r else dev.port,
                       "mac": r.mac if r else dev.mac,
                       "via": self.pair.partner if not up else None, "flows": len(flows)}

    def pick(self, req: dict, entries: dict[xap.FlowKey, xap.Device], mirror: TableMirror,
             node: str) -> xap.FlowKey:
        """The session a ``handoff`` step hands: the given client port's, or the lowest, of
        those the partner knows already (the mirror acked them)."""
        if req.get("to") != self.pair.partner:
            raise ValueError(f"a switch hands sessions to its partner only ({self.pair.partner})")
        if req.get("type", "full") != "full":
            raise ValueError("a switch hands whole sessions: half-handoffs are the devices'")
        port = req.get("client_port")
        flows = sorted((k for k in entries if k.proto == socket.IPPROTO_TCP
                        and k not in self.handed and (port is None or k.client_port == port)),
                       key=lambda k: k.client_port)
        ready = [k for k in flows if k not in mirror.busy and k in mirror.synced]
        if not ready:
            raise LookupError(f"{node} has no session the partner knows already"
                              + (f" from port {port}" if port is not None else ""))
        return ready[0]

    def ends(self, key: xap.FlowKey, who: str) -> set[str]:
        """The ends of ``key`` a FIN or RST seen here stands for (``who``: client, device or
        rst). A handed session's device answers through the partner, never here: its
        client's FIN ends both (the entry goes ``LINGER`` later, as for any other)."""
        return {"client", "device"} if who == "client" and key in self.handed else {who}

    def handed_to(self, key: xap.FlowKey, acked: bool, owner: xap.Device | None) -> dict:
        """The partner acked the hand of ``key`` (or never did): the ``hand`` event's detail;
        an ``outcome`` of HANDED: the entry is to point at the partner now."""
        detail = {"client": f"{key.client_ip}:{key.client_port}", "to": self.pair.partner}
        if not acked or owner is None:
            return {**detail, "outcome": "FAILED",
                    "why": "no ack" if not acked else "the connection ended"}
        self.handed.add(key)
        return {**detail, "outcome": "HANDED"}


def health_detail(ev, partner: str) -> dict:
    """The ``health`` event a standby logs for a transition of its active (``ev``)."""
    detail = {"device": partner, "old": ev.old.name, "new": ev.new.name, "why": ev.event.name}
    if isinstance(ev, PeerDown):
        detail["detection_ms"] = round(ev.detection_time * 1000, 1)
    return detail


def follow_paths(nft, iface: str, alt_iface: str, own: str, net: str) -> None:
    """A device of a pair answers each connection over the link its peer's frames come in on:
    conntrack marks a connection by its input interface, its output takes the mark, and the
    mark's rule routes it over the second link (L412: data "directly from the second switch")."""
    nft(f"add table inet {PATHS}\n"
        f"add chain inet {PATHS} pre {{ type filter hook prerouting priority -150; }}\n"
        f"add chain inet {PATHS} out {{ type route hook output priority -150; }}\n"
        f'add rule inet {PATHS} pre iifname "{alt_iface}" ct mark set {ALT_MARK}\n'
        f'add rule inet {PATHS} pre iifname "{iface}" ct mark set 0\n'
        f"add rule inet {PATHS} out ct mark {ALT_MARK} meta mark set {ALT_MARK}")
    _ip("rule", "add", "fwmark", str(ALT_MARK), "lookup", str(ALT_TABLE), "priority", "100")
    _ip("route", "add", net, "dev", alt_iface, "src", own, "table", str(ALT_TABLE))


class ActiveSide:
    """The active switch's part: heartbeats and the table mirror to the standby, the reroute
    of a device whose link is down (policy (c)) and sessions handed to the partner."""

    def __init__(self, switch) -> None:
        self.switch = sw = switch
        c, pair = sw.cluster, sw.cluster.pair
        self.pair = pair
        nonces = read_nonces(nonce_path(sw.lab_dir, c.switch))
        self.mirror = TableMirror(xap.XapClient(nonces[c.switch], pair.partner_ip,
                                                first_xid=secrets.randbits(16)))
        self.xap_sock = _udp(c.control_ip, 0)  # acks come back here, not to port 5016
        sw.watch(self.xap_sock, self._acks)
        sw.timed(self.mirror.next_deadline, lambda now: self._send(self.mirror.on_timer(now)))
        self.reporter = StatusReporter(c.control_ip, secrets.randbits(32), time.monotonic(),
                                       kind=CLUSTER_SWITCH)
        self.beats = _udp(c.control_ip, CLUSTER_UDP_PORT)
        sw.timed(self.reporter.next_deadline, self._beat)
        self.links = LinkMonitor([d.switch_port for d in c.devices.values()])  # policy (c)
        sw.watch(self.links, self._link_events)
        # a rerouted device's FIN comes back through the partner (policy (c))
        ends = packet_socket(pair.port, tcp_filter(src_ip=c.vip, sport=c.vport, any_flags=0x05),
                             stamps=True)
        sw.watch(ends, lambda: sw.on_end(ends, from_client=False))
        self.paths = Paths(c)
        self.handing: dict[int, xap.FlowKey] = {}  # XAP set in flight -> the flow
        sw.requests["handoff"] = self._hand

    def on_table(self, key: xap.FlowKey, device: xap.Device | None) -> None:
        if device is None:
            self.paths.handed.discard(key)
        ip = device.ip if device is not None else xap.NO_DEVICE
        self._send(self.mirror.changed(key, ip, time.monotonic()))

    def route(self, key: xap.FlowKey, dev: xap.Device) -> tuple[str, str]:
        return self.paths.route(key, dev)

    def _hand(self, req: dict) -> dict:
        """A ``handoff`` step to the partner: one session handed over (``Paths.pick``)."""
        key = self.paths.pick(req, self.switch.xap.entries(), self.mirror, self.switch.node)
        xid, acts = self.mirror.client.request(XAP_OP_SET, key, None, time.monotonic())
        self.handing[xid] = key
        self._send(acts)
        return {"client": f"{key.client_ip}:{key.client_port}", "to": self.pair.partner}

    def _send(self, actions: list[xap.Action]) -> None:
        for a in actions:
            if isinstance(a, xap.SendDatagram):
                with contextlib.suppress(OSError):  # the standby is gone: it times out
                    self.xap_sock.sendto(a.payload, (a.dst_ip, a.dst_port))
            elif isinstance(a, xap.Acked | xap.TimedOut) and a.xid in self.handing:
                self._handed(self.handing.pop(a.xid), isinstance(a, xap.Acked))
        self.switch.arm()

    def _handed(self, key: xap.FlowKey, acked: bool) -> None:
        """The partner serves ``key`` (or never said so): point the entry at it."""
        sw = self.switch
        dev = sw.xap.owner(key)
        detail = self.paths.handed_to(key, acked, dev)
        if detail["outcome"] == "HANDED":
            sw._program(key, dev, dev, why="handed")
        sw.event("hand", **detail)

    def _acks(self) -> None:
        for data, ip in read_datagrams(self.xap_sock):
            self._send(self.mirror.on_datagram(ip, XAP_UDP_PORT, data, time.monotonic()))

    def _beat(self, now: float) -> None:
        data = self.reporter.on_timer(now, Load(sessions=len(self.switch.xap.entries())))
        if data is not None:
            with contextlib.suppress(OSError):
                self.beats.sendto(data, (self.pair.partner_ip, CLUSTER_UDP_PORT))

    def _link_events(self) -> None:
        for iface, up in self.links.changes():
            dev = next(d for d in self.switch.devices.values() if d.port == iface)
            change = self.paths.link(dev, up, self.switch.xap.entries())
            if change:
                flows, detail = change
                for key in flows:
                    self.switch._program(key, dev, dev, why="reroute")
                self.switch.event("reroute", **detail)


class StandbySide:
    """The standby's part: it bridges its device ports and its port to the active, applies
    the mirror (the switch's XAP core, the active as a peer), serves the sessions the active
    hands it, hears the active's heartbeats and takes over when they stop."""

    def __init__(self, switch) -> None:
        self.switch = sw = switch
        c, self.pair = sw.cluster, sw.cluster.pair
        for d in c.devices.values():
            _ip("link", "set", d.switch_port, "master", "br0")
        _ip("link", "set", self.pair.port, "master", "br0")
        self.active = False
        self.monitor = HealthMonitor()
        self.beats = _udp(c.control_ip, CLUSTER_UDP_PORT)
        sw.watch(self.beats, self._heard)
        sw.timed(self.monitor.next_deadline, lambda now: self._health(self.monitor.on_timer(now)))
        self.adopted: socket.socket | None = None
        # sessions handed here (claim 56): the device's frames leave by the client port
        self.front = c.client_ports[0]
        self.front_mac = iface_mac(self.front)
        self.served: dict[xap.FlowKey, int] = {}  # -> the rule's handle
        sw.table.nft("\n".join(
            f"add chain netdev {TABLE} served_{d.switch_port} {{ type filter hook ingress "
            f'device "{d.switch_port}" priority -10; policy accept; }}'
            for d in c.devices.values()))

    def serve(self, key: xap.FlowKey, dev: xap.Device) -> None:
        """Send the device's frames of ``key`` to the client straight from here."""
        c = self.switch.cluster
        rule = (f"ip saddr {key.vip} ip daddr {key.client_ip} ip protocol {key.proto} th sport "
                f'{key.vport} th dport {key.client_port} ether saddr set {self.front_mac} fwd to '
                f'"{self.front}"')
        echoed = json.loads(self.switch.table.nft(
            f"add rule netdev {TABLE} served_{c.devices[dev.name].switch_port} {rule}",
            echo=True) or "{}")
        self.served[key] = next(int(i["add"]["rule"]["handle"]) for i in
                                echoed.get("nftables", []) if "rule" in i.get("add", {}))
        self.switch.event("table", why="handed", client=f"{key.client_ip}:{key.client_port}",
                          old=dev.name, new=dev.name)

    def unserve(self, key: xap.FlowKey, dev: xap.Device) -> None:
        handle = self.served.pop(key, None)
        if handle is not None:
            port = self.switch.cluster.devices[dev.name].switch_port
            with contextlib.suppress(SwitchdError):
                self.switch.table.nft(f"delete rule netdev {TABLE} served_{port} handle {handle}")

    @staticmethod
    def registration(lab_dir: str, active: str) -> dict[str, int]:
        """The pair's nonces: the active's registration (its devices' and its own)."""
        path, deadline = nonce_path(lab_dir, active), time.monotonic() + NONCE_WAIT
        while not path.exists():
            if time.monotonic() > deadline:
                raise SystemExit(f"nas switchd: no {path} after {NONCE_WAIT:g}s")
            time.sleep(0.01)
        return read_nonces(path)

    def _heard(self) -> None:
        now = time.monotonic()
        for data, ip in read_datagrams(self.beats):
            if ip == self.pair.active_ip:
                self._health(self.monitor.on_datagram(data, ip, now))

    def _health(self, events: list) -> None:
        for ev in events:
            self.switch.event("health", **health_detail(ev, self.pair.partner))
            if isinstance(ev, PeerDown) and not self.active:
                self.take_over(ev.detection_time)
        self.switch.arm()

    def take_over(self, detection: float) -> None:
        sw, c, pair, t0 = self.switch, self.switch.cluster, self.pair, time.monotonic()
        _ip("link", "set", pair.port, "nomaster")  # the old active may forward still: no loop
        _ip("link", "set", "br0", "address", pair.active_mac)
        _ip("addr", "add", f"{c.vip}/32", "dev", "br0")
        _ip("addr", "add", f"{pair.active_ip}/{c.prefix_len}", "dev", "br0")
        for p in c.client_ports:
            _ip("link", "set", p, "master", "br0")
        sw.xap.adopt(pair.active_ip)
        self.adopted = _udp(pair.active_ip, XAP_UDP_PORT)
        sw.watch(self.adopted, lambda: sw.on_xap(self.adopted))
        self.active = True
        tx = packet_socket("br0")
        for delay in ANNOUNCEMENTS:
            sw.at(t0 + delay, lambda: self._announce(tx))
        sw.event("takeover", partner=pair.partner, mac=pair.active_mac,
                 detection_ms=round(detection * 1000, 1),
                 ms=round((time.monotonic() - t0) * 1000, 1))

    def _announce(self, tx: socket.socket) -> None:
        for ip in (self.switch.cluster.vip, self.pair.active_ip):
            with contextlib.suppress(OSError):
                tx.send(gratuitous_arp(self.pair.active_mac, ip))


def _udp(ip: str, port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((ip, port))
    s.setblocking(False)
    return s
