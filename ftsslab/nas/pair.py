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
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import struct
import subprocess
import time
from dataclasses import dataclass

from ftsslab.fast.cluster import CLUSTER_SWITCH, CLUSTER_UDP_PORT
from ftsslab.fast.xap import XAP_OP_CHANGE_CONNECTION, XAP_UDP_PORT

from . import xap
from .cluster import nonce_path, read_nonces
from .health import HealthMonitor, Load, PeerDown, StatusReporter
from .process import packet_socket, read_datagrams

STANDBY_METRIC = 1024  # a device's route over its link to the standby: used when the other is down
MIRROR_RETRY = 1.0  # s before a mirror request that timed out is sent again
ANNOUNCEMENTS = (0.0, 0.1, 0.5)  # s after the takeover: gratuitous ARPs (as VRRP repeats them)
NONCE_WAIT = 30.0  # s the standby waits for the active's registration file


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
            elif not isinstance(a, xap.Acked | xap.TimedOut):
                out.append(a)
        return out


# ---- links (policy (c)) --------------------------------------------------------------------

RTM_NEWLINK, RTM_DELLINK = 16, 17
RTMGRP_LINK = 1
IFLA_IFNAME = 3
IFF_LOWER_UP = 0x10000
_NLMSG = struct.Struct("=IHHII")
_IFINFO = struct.Struct("=BxHiII")
_RTA = struct.Struct("=HH")


def parse_link_messages(data: bytes) -> list[tuple[str, bool]]:
    """(interface, carrier) of every RTM_NEWLINK/RTM_DELLINK in a netlink datagram; what does
    not parse is skipped, nothing raises."""
    out, off = [], 0
    while off + _NLMSG.size <= len(data):
        length, kind, _, _, _ = _NLMSG.unpack_from(data, off)
        if length < _NLMSG.size or off + length > len(data):
            break
        body = off + _NLMSG.size
        if kind in (RTM_NEWLINK, RTM_DELLINK) and body + _IFINFO.size <= off + length:
            flags = _IFINFO.unpack_from(data, body)[3]
            at, name = body + _IFINFO.size, None
            while at + _RTA.size <= off + length:
                rlen, rtype = _RTA.unpack_from(data, at)
                if rlen < _RTA.size or at + rlen > off + length:
                    break
                if rtype == IFLA_IFNAME:
                    name = data[at + _RTA.size:at + rlen].split(b"\0", 1)[0].decode(
                        "ascii", "replace")
                at += (rlen + 3) & ~3
            if name:
                out.append((name, kind == RTM_NEWLINK and bool(flags & IFF_LOWER_UP)))
        off += (length + 3) & ~3
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
    """Where a device's flows leave this switch while its own link is down."""
    port: str
    mac: str


class ActiveSide:
    """The active switch's part: heartbeats and the table mirror to the standby, and the
    reroute of a device whose link is down (policy (c))."""

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
        self.links = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self.links.bind((0, RTMGRP_LINK))
        self.links.setblocking(False)
        sw.watch(self.links, self._link_events)
        self.routes: dict[str, Route] = {}  # device -> its detour through the standby

    def on_table(self, key: xap.FlowKey, device: xap.Device | None) -> None:
        ip = device.ip if device is not None else xap.NO_DEVICE
        self._send(self.mirror.changed(key, ip, time.monotonic()))

    def route(self, dev: xap.Device) -> tuple[str, str]:
        """(port, MAC) the switch's entries for ``dev`` use now."""
        r = self.routes.get(dev.name)
        return (r.port, r.mac) if r else (dev.port, dev.mac)

    def _send(self, actions: list[xap.Action]) -> None:
        for a in actions:
            if isinstance(a, xap.SendDatagram):
                with contextlib.suppress(OSError):  # the standby is gone: it times out
                    self.xap_sock.sendto(a.payload, (a.dst_ip, a.dst_port))
        self.switch.arm()

    def _acks(self) -> None:
        for data, ip in read_datagrams(self.xap_sock):
            self._send(self.mirror.on_datagram(ip, XAP_UDP_PORT, data, time.monotonic()))

    def _beat(self, now: float) -> None:
        data = self.reporter.on_timer(now, Load(sessions=len(self.switch.xap.entries())))
        if data is not None:
            with contextlib.suppress(OSError):
                self.beats.sendto(data, (self.pair.partner_ip, CLUSTER_UDP_PORT))

    def _link_events(self) -> None:
        for _ in range(64):
            try:
                data = self.links.recv(65536)
            except OSError:
                return
            for iface, up in parse_link_messages(data):
                dev = next((d for d in self.switch.devices.values() if d.port == iface), None)
                alt = self.switch.cluster.devices[dev.name].alt_mac if dev else None
                if dev is None or alt is None or up != (dev.name in self.routes):
                    continue  # not a device port, or nothing changes
                if up:
                    del self.routes[dev.name]
                else:
                    self.routes[dev.name] = Route(self.pair.port, alt)
                port, mac = self.route(dev)
                flows = [k for k, o in self.switch.xap.entries().items() if o.name == dev.name]
                for key in flows:
                    self.switch._program(key, dev, dev, why="reroute")
                self.switch.event("reroute", device=dev.name, port=port, mac=mac,
                                  via=self.pair.partner if not up else None, flows=len(flows))


class StandbySide:
    """The standby's part: it bridges its device ports and its port to the active, applies
    the mirror (the switch's XAP core, the active as a peer), hears the active's heartbeats
    and takes over when they stop."""

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
            detail = {"device": self.pair.partner, "old": ev.old.name, "new": ev.new.name,
                      "why": ev.event.name}
            if isinstance(ev, PeerDown):
                detail["detection_ms"] = round(ev.detection_time * 1000, 1)
            self.switch.event("health", **detail)
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
