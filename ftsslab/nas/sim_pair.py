# SPDX-License-Identifier: GPL-2.0-or-later
"""The sim twins of the switch pair's two sides (Fig. 12, checks 26 and 28; ``pair.py`` on
veth), driven by ``sim.NasSwitchSim``: the same cores -- ``TableMirror`` and the peer logic
of ``XapSwitch``, ``Paths`` (policy (c)'s detours, the sessions handed to the partner),
``StatusReporter``/``HealthMonitor`` for the switch heartbeats.

What the kernel does on veth is modelled by its outcome: a link-down event (``on_link``) is
what netlink's carrier message is to ``ActiveSide``; the standby's bridge is its
``SwitchCore`` with the ports it has not bridged left out (``unbridged``: its client ports
until it takes over, then its port to the old active), and no table on its port to the
active (none of its nftables ingress chains is there); taking the active's MAC, VIP and
address is answering ARP and XAP as the active with its MAC; the gratuitous ARPs are sent as
on veth, so the learning switch moves the MAC; the served rule of a handed session is a frame
of the flow from the device's port sent out of the client port with the client port's MAC.
"""

from __future__ import annotations

from ftsslab.fast.cluster import CLUSTER_SWITCH, CLUSTER_UDP_PORT
from ftsslab.fast.xap import XAP_OP_SET, XAP_UDP_PORT
from ftsslab.lab import frames
from ftsslab.lab.model import Scenario
from ftsslab.lab.switch import Transmit

from . import xap
from .cluster import bridge_mac
from .health import HealthMonitor, Load, PeerDown, StatusReporter
from .pair import ANNOUNCEMENTS, Paths, TableMirror, gratuitous_arp, health_detail
from .sim_base import due, stable_hash

MIRROR_PORT = 40501  # the active's own UDP port for the mirror (an ephemeral port on veth)


class _Side:
    def __init__(self, sw, scenario: Scenario) -> None:
        self.sw, self.pair = sw, sw.cluster.pair
        self.partner_mac = frames.mac_bytes(bridge_mac(scenario, self.pair.partner))

    def _to_partner(self, sport: int, dport: int, payload: bytes) -> None:
        """A datagram to the partner over the pair's own link."""
        sw = self.sw
        udp = frames.udp_packet(frames.Datagram(sw.cluster.control_ip, self.pair.partner_ip,
                                                sport, dport, payload))
        sw._tx.append(Transmit(self.pair.port, frames.ether(self.partner_mac, sw.mac,
                                                            frames.ETH_P_IP, udp)))


class ActiveSim(_Side):
    """The active's part (``pair.ActiveSide``): heartbeats and the table mirror to the
    standby, policy (c)'s reroute of a device whose link is down, sessions handed to it."""

    def __init__(self, sw, scenario: Scenario, nonce: int) -> None:
        super().__init__(sw, scenario)
        c = sw.cluster
        self.paths = Paths(c)
        self.mirror = TableMirror(xap.XapClient(nonce, self.pair.partner_ip,
                                                first_xid=stable_hash(sw.node, "xid", bits=16)))
        self.reporter = StatusReporter(c.control_ip, stable_hash(sw.node, "boot"), 0.0,
                                       kind=CLUSTER_SWITCH)
        self.handing: dict[int, xap.FlowKey] = {}  # XAP set in flight -> the flow

    def table_ports(self) -> list[str] | None:
        return None  # its port to the partner is an out port of the table too

    def unbridged(self, port: str) -> bool:
        return False

    def route(self, key: xap.FlowKey, dev: xap.Device) -> tuple[str, str]:
        return self.paths.route(key, dev)

    def on_table(self, key: xap.FlowKey, device: xap.Device | None, now: float) -> None:
        if device is None:
            self.paths.handed.discard(key)
        ip = device.ip if device is not None else xap.NO_DEVICE
        self._send(self.mirror.changed(key, ip, now), now)

    def handoff(self, to: str, client_port: int | None, now: float, htype: str) -> str:
        """A ``handoff`` step (``ActiveSide._hand``)."""
        key = self.paths.pick({"to": to, "client_port": client_port, "type": htype},
                              self.sw.xap.entries(), self.mirror, self.sw.node)
        xid, acts = self.mirror.client.request(XAP_OP_SET, key, None, now)
        self.handing[xid] = key
        self._send(acts, now)
        return f"{key.client_ip}:{key.client_port}"

    def on_ack(self, src: str, payload: bytes, now: float) -> None:
        self._send(self.mirror.on_datagram(src, XAP_UDP_PORT, payload, now), now)

    def on_link(self, port: str, up: bool, now: float) -> None:
        """Carrier of a port changed (``ActiveSide._link_events``)."""
        sw = self.sw
        dev = next((d for d in sw.devices.values() if d.port == port), None)
        change = dev and self.paths.link(dev, up, sw.xap.entries())
        if change:
            flows, detail = change
            for key in flows:
                sw._program(key, dev, dev, "reroute", now)
            sw.log.event("reroute", **detail)

    def next_deadline(self) -> float | None:
        times = [self.mirror.next_deadline(), self.reporter.next_deadline()]
        return min((t for t in times if t is not None), default=None)

    def on_timer(self, now: float) -> None:
        self._send(self.mirror.on_timer(now), now)
        data = self.reporter.on_timer(now, Load(sessions=len(self.sw.xap.entries())))
        if data is not None:
            self._to_partner(CLUSTER_UDP_PORT, CLUSTER_UDP_PORT, data)

    def _send(self, actions: list[xap.Action], now: float) -> None:
        for a in actions:
            if isinstance(a, xap.SendDatagram):
                self._to_partner(MIRROR_PORT, a.dst_port, a.payload)
            elif isinstance(a, xap.Acked | xap.TimedOut) and a.xid in self.handing:
                self._handed(self.handing.pop(a.xid), isinstance(a, xap.Acked), now)

    def _handed(self, key: xap.FlowKey, acked: bool, now: float) -> None:
        sw = self.sw
        dev = sw.xap.owner(key)
        detail = self.paths.handed_to(key, acked, dev)
        if detail["outcome"] == "HANDED":
            sw._program(key, dev, dev, "handed", now)
        sw.log.event("hand", **detail)


class StandbySim(_Side):
    """The standby's part (``pair.StandbySide``): it bridges its device ports and its port
    to the active, applies the mirror (``XapSwitch``, the active as a peer), serves the
    sessions handed to it, hears the heartbeats and takes over when they stop."""

    def __init__(self, sw, scenario: Scenario) -> None:
        super().__init__(sw, scenario)
        c = sw.cluster
        self.active = False
        self.monitor = HealthMonitor()
        self.front = c.client_ports[0]
        self.front_mac = frames.mac_bytes(next(ep.mac for ln in scenario.links
                                               for ep in (ln.a, ln.b) if ep.node == sw.node
                                               and ep.iface == self.front))
        self.served: dict[xap.FlowKey, str] = {}  # -> the device's port
        self.announcements: list[float] = []

    def table_ports(self) -> list[str]:
        c = self.sw.cluster
        return [*c.client_ports, *(d.switch_port for d in c.devices.values())]

    def unbridged(self, port: str) -> bool:
        return port == self.pair.port if self.active else port in self.sw.cluster.client_ports

    def serve(self, key: xap.FlowKey, dev: xap.Device) -> None:
        """Send the device's frames of ``key`` to the client straight from here."""
        self.served[key] = dev.port
        self.sw.log.event("table", why="handed", client=f"{key.client_ip}:{key.client_port}",
                          old=dev.name, new=dev.name)

    def unserve(self, key: xap.FlowKey) -> None:
        self.served.pop(key, None)

    def served_frame(self, port: str, head: tuple, ports: tuple | None,
                     frame: bytes) -> Transmit | None:
        """A device's frame of a served flow: out of the client port, with its MAC."""
        ihl, _, proto, src, dst = head
        if ports is None or not self.served:
            return None
        key = xap.FlowKey(dst, proto, ports[1], src, ports[0])
        if self.served.get(key) != port:
            return None
        return Transmit(self.front, frame[:6] + self.front_mac + frame[12:])

    def heard(self, src: str, payload: bytes, now: float) -> None:
        if src == self.pair.active_ip:
            self._health(self.monitor.on_datagram(payload, src, now), now)

    def next_deadline(self) -> float | None:
        times = [self.monitor.next_deadline(), *self.announcements]
        return min((t for t in times if t is not None), default=None)

    def on_timer(self, now: float) -> None:
        self._health(self.monitor.on_timer(now), now)
        now_due = [t for t in self.announcements if due(t, now) is not None]
        self.announcements = [t for t in self.announcements if t not in now_due]
        for _ in now_due:
            self._announce()

    def _health(self, events: list, now: float) -> None:
        for ev in events:
            self.sw.log.event("health", **health_detail(ev, self.pair.partner))
            if isinstance(ev, PeerDown) and not self.active:
                self.take_over(ev.detection_time, now)

    def take_over(self, detection: float, now: float) -> None:
        """``StandbySide.take_over``: the active's MAC, VIP and address, the client ports
        bridged, the port to the old active not; said by gratuitous ARP."""
        sw, pair = self.sw, self.pair
        sw.mac = pair.active_mac
        sw.xap.adopt(pair.active_ip)
        sw.addresses.add(pair.active_ip)
        self.active = True
        self.announcements = [now + d for d in ANNOUNCEMENTS]
        sw.log.event("takeover", partner=pair.partner, mac=pair.active_mac,
                     detection_ms=round(detection * 1000, 1), ms=0.0)

    def _announce(self) -> None:
        sw, c = self.sw, self.sw.cluster
        ports = [*c.client_ports, *(d.switch_port for d in c.devices.values())]
        for ip in (c.vip, self.pair.active_ip):
            arp = gratuitous_arp(self.pair.active_mac, ip)
            sw._tx += [Transmit(p, arp) for p in ports if sw.core.port_up(p)]
